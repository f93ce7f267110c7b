"""``HyperVContext``: the one node lookup and the action sessions, on the context alone.

The lookup's order (the VM's host by name, then the node whose last read
reported the VM, then a name the caller gives) decides where a mutating
command goes; the end-to-end tests against the WinRM endpoint exercise it
through actions (test_hyperv_node_lookup.py), these pin each rule.
"""

from __future__ import annotations

from typing import Any

from ventana.backends.hyperv.context import HyperVContext, HyperVNode
from ventana.backends.hyperv.session import NodeSession
from ventana.state.events import Event, TaskProgress, Upsert
from ventana.state.model import VM, Entity, Key, Kind, Task, TaskState


def node(index: int, computer: str, healthy: bool = True) -> HyperVNode:
    session = NodeSession("127.0.0.1", port=5986 + index, username="u", password="p")
    return HyperVNode(index, "127.0.0.1", 5986 + index, session, f"hyperv:n{index}",
                      computer=computer, healthy=healthy)


def context(nodes: list[HyperVNode], inventory: dict[Key, Entity], owners: dict[Key, str],
            events: list[Event] | None = None, actions: set[Any] | None = None
            ) -> HyperVContext:
    async def reread(_: HyperVNode) -> None:
        return None

    return HyperVContext(
        target="hyperv://T", is_read_only=lambda: False, inventory=inventory, owners=owners,
        nodes=lambda: nodes, emit=(events if events is not None else []).append,
        reread=reread,
        new_session=lambda host, port: NodeSession(host, port=port, username="u",
                                                   password="p"),
        actions=actions if actions is not None else set(), command_timeout=5.0,
    )


VM_A = VM("vm-a", "A", "c", "HV-NODE-02")


def test_by_host_name_first_then_the_owner_then_the_given_name() -> None:
    one, two = node(0, "HV-NODE-01"), node(1, "hv-node-02")
    inventory: dict[Key, Entity] = {(Kind.VM, VM_A.id): VM_A}
    owners = {(Kind.VM, VM_A.id): one.source}
    ctx = context([one, two], inventory, owners)
    assert ctx.node_for(VM_A) is two  # by name (case-insensitive), though node 1 read it
    two.healthy = False
    assert ctx.node_for(VM_A) is one  # the endpoint that reported it answers for node 2
    one.healthy = False
    assert ctx.node_for(VM_A) is None  # nobody healthy: nothing will be sent
    one.healthy = True
    assert ctx.node_for(None, "HV-NODE-01") is one  # a VM not read yet: the given name
    assert ctx.node_for(None, "") is None
    owners.clear()
    assert ctx.node_for(VM_A, "hv-node-01") is one  # no owner either: the given name


async def test_task_rows_and_action_sessions_go_through_the_context() -> None:
    events: list[Event] = []
    actions: set[Any] = set()
    one = node(0, "HV-NODE-02")
    ctx = context([one], {(Kind.VM, VM_A.id): VM_A}, {}, events, actions)
    task = ctx.tasks.start("t-1", "merge", VM_A, "merging")
    ctx.tasks.progress("t-1", 50.0, "half")
    ended = ctx.tasks.end(task, TaskState.WARNING, error="some files left")
    assert [type(e) for e in events] == [Upsert, TaskProgress, Upsert]
    assert isinstance(ended, Task) and (ended.pct, ended.message) == (100.0, "merging")
    assert ended.started == task.started and ended.ended is not None
    async with ctx.action_session(one) as session:
        assert session in actions and session is not one.session
    assert not actions  # closed and forgotten on the way out
