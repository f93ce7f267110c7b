"""A batch sent before goes out as the CLIXML bytes kept from its first serialization.

Against the WinRM/PSRP test peer (psrpcore parses what the client sends): the
kept bytes are exactly what pypsrp's own serializer gives for the same
pipeline (so the node receives the same message), a batch re-sent answers
the same as the first time, and batches that differ in a value's type or
shape never share bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from peers.winrm.fixture import PeerHandle, start_winrm_peer
from peers.winrm.hyperv import ClusterModel, build_hyperv_registry

from ventana.backends.hyperv import commands as cmd
from ventana.backends.hyperv import session as sess
from ventana.backends.hyperv import subscriptions as subs
from ventana.backends.hyperv.commands import SWITCH, Cmdlet, Command
from ventana.backends.hyperv.session import NodeSession, fill, pipeline_key
from ventana.backends.sim import SimConfig


@pytest.fixture
def peer() -> Iterator[tuple[ClusterModel, PeerHandle]]:
    model = ClusterModel(SimConfig(vms=12, nodes=2, rate=0))
    handle = start_winrm_peer(registry=build_hyperv_registry(model))
    try:
        yield model, handle
    finally:
        handle.stop()


def session_for(handle: PeerHandle) -> NodeSession:
    return NodeSession("127.0.0.1", port=handle.port, username=handle.user,
                       password=handle.password, auth="ntlm", cert_validation=handle.ca_path)


class _Captured(Exception):
    pass


def pypsrp_bytes(pool: Any, commands: list[Command]) -> bytes:
    """The CREATE_PIPELINE CLIXML pypsrp itself packs for ``commands`` (nothing sent)."""
    from pypsrp.powershell import PowerShell

    ps = PowerShell(pool)
    fill(ps, commands)
    captured: list[bytes] = []
    fragmenter = pool._fragmenter
    original = fragmenter.fragment

    def capture(msg: Any, rpid: str, pid: str | None = None, *_: Any) -> Any:
        inner = getattr(fragmenter.serializer, "_inner", fragmenter.serializer)
        from pypsrp.messages import Destination, Message

        # The PSRP header is 40 bytes (destination, type, pool id, pipeline id).
        captured.append(Message(Destination.SERVER, rpid, pid, msg, inner).pack()[40:])
        raise _Captured

    fragmenter.fragment = capture
    try:
        with pytest.raises(_Captured):
            ps.begin_invoke()
    finally:
        fragmenter.fragment = original
    return captured[0]


def kept_bytes(commands: list[Command]) -> bytes:
    key = pipeline_key(commands)
    found = [xml for full, xml in sess._prepared.items() if full[0] == key]
    assert len(found) == 1
    return found[0]


BATCHES: list[list[Command]] = [
    [cmd.get_vms()],
    [cmd.get_computer_system(), cmd.get_vms(), cmd.get_snapshots(),
     cmd.get_hard_disk_drives(), cmd.get_replication()],
    [cmd.get_attached_vhds(), cmd.get_checkpoint_vhds()],
    subs.wait_changes([subs.VM_STATE, subs.CHECKPOINTS, subs.CSV_SPACE], 3),
    [cmd.get_vhds(["C:\\ClusterStorage\\Volume1\\a.vhdx", "C:\\x\\b'c.avhdx"])],
]


@pytest.mark.timeout(60)
async def test_kept_bytes_are_what_pypsrp_serializes_and_answer_the_same(
    peer: tuple[ClusterModel, PeerHandle],
) -> None:
    model, handle = peer
    vm_id = sorted(model.vms)[0]
    batches = [*BATCHES, subs.vm_reread(vm_id)]
    session = session_for(handle)
    try:
        for batch in batches:
            first = await session.run_many(batch, timeout=20)
            before = dict(sess.prepared_counts)
            second = await session.run_many(batch, timeout=20)
            assert sess.prepared_counts["reused"] == before["reused"] + 1
            assert sess.prepared_counts["serialized"] == before["serialized"]
            if batch[0].label != "wait for a change":  # events are consumed by the first
                assert [a.output for a in second] == [a.output for a in first]
            pool = await session._ensure_pool()
            assert kept_bytes(batch) == pypsrp_bytes(pool, batch)
    finally:
        await session.close()


def test_values_that_serialize_differently_never_share_a_key() -> None:
    def one(value: Any) -> Command:
        return Command("x", (Cmdlet("Get-VM", (("Id", value),)),), quiet=True)

    guid = uuid.UUID("6f0c0a52-7f4e-4d8b-9a51-3c1a2f0e9b11")
    values: list[Any] = [1, True, "1", 1.0, [1], [1, 2], ["1"], SWITCH, guid, str(guid), None]
    keys = [pipeline_key([one(v)]) for v in values]
    assert None not in keys
    assert len(set(keys)) == len(values)
    # One statement of two commands is not two statements of one each.
    two = Command("x", (Cmdlet("Get-VM"), Cmdlet("Get-VMSnapshot")), quiet=True)
    split = [Command("x", (Cmdlet("Get-VM"),), quiet=True),
             Command("x", (Cmdlet("Get-VMSnapshot"),), quiet=True)]
    assert pipeline_key([two]) != pipeline_key(split)
    # A value with no key (an object we do not know) is serialized every time.
    assert pipeline_key([one(object())]) is None


def test_the_kept_messages_are_bounded() -> None:
    for i in range(sess.PREPARED_MAX + 10):
        sess._prepared_message(("bound", i), lambda: b"<Obj/>")
    assert len(sess._prepared) <= sess.PREPARED_MAX


# -- a poll whose answers are the same text is not mapped again ------------------------------


@pytest.mark.timeout(60)
async def test_an_unchanged_poll_reuses_its_mapping_and_a_change_is_mapped(
    peer: tuple[ClusterModel, PeerHandle], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from test_hyperv_backend import Feed, backend_for

    from ventana.backends.hyperv import backend as hv
    from ventana.state.events import LinkState
    from ventana.state.model import CheckpointKind, Kind, PowerState

    calls: list[str] = []
    original = hv.node_entities

    def counting(read: Any, *args: Any) -> Any:
        calls.append(args[1])
        return original(read, *args)

    monkeypatch.setattr(hv, "node_entities", counting)
    model, handle = peer
    backend = backend_for(handle, stream=False, backup_checks=False)
    feed = Feed(backend)
    source = backend.sources[0]
    try:
        await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 20,
                         "connected")
        [session] = backend.sessions()

        def polls() -> int:
            return session.sent.count("Get-VMReplication")

        # The first poll maps; the next ones (nothing changed on the host) reuse it.
        mapped, seen = len(calls), polls()
        await feed.until(lambda: polls() >= seen + 3, 20, "three more polls")
        assert len(calls) == mapped
        assert mapped >= 1

        # A change on the host is a different answer: mapped again, and it arrives.
        vm = next(v for v in model.vms.values() if v.power is PowerState.RUNNING)
        cp_id = model.add_checkpoint(vm.id, "before patching", CheckpointKind.STANDARD)
        await feed.until(lambda: (Kind.CHECKPOINT, cp_id) in feed.state, 10,
                         "the new checkpoint, by the poll")
        assert len(calls) > mapped
        model.set_power(vm.id, PowerState.OFF)
        await feed.until(lambda: feed.state[(Kind.VM, vm.id)].power is PowerState.OFF, 10,
                         "the power change, by the poll")
        await asyncio.sleep(0)
    finally:
        await feed.close()


@pytest.mark.timeout(60)
async def test_the_cluster_groups_are_decoded_once_per_text(
    peer: tuple[ClusterModel, PeerHandle], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every node answers Get-ClusterGroup with every role of the cluster: the same
    text is turned into the VM roles' states once, a different text again."""
    from ventana.backends.hyperv import backup
    from ventana.backends.hyperv.mapping import as_id, power_state, props, text

    decoded: list[int] = []
    original = backup.vm_group_states

    def counting(rows: Any) -> dict[str, str]:
        out = original(rows)
        decoded.append(len(out))
        return out

    monkeypatch.setattr(backup, "vm_group_states", counting)
    model, handle = peer
    session = session_for(handle)
    try:
        [vms, drives] = await session.run_many([cmd.get_vms(), cmd.get_hard_disk_drives()])
        powers = {as_id(props(o).get("Id")): power_state(props(o).get("State"))
                  for o in vms.output}
        names = {as_id(props(o).get("Id")): text(props(o).get("Name")) for o in vms.output}
        seen: dict[bytes, dict[str, str]] = {}
        first = await backup.read_vm_facts(session, powers, drives.output, names, seen)
        second = await backup.read_vm_facts(session, powers, drives.output, names, seen)
        assert first == second
        assert any(f.cluster_group for f in first.values())  # the roles were matched
        assert len(decoded) == 1 and decoded[0] > 0
        # A role changes state on the host: a different text, decoded again.
        vm_id = next(v for v, f in first.items() if f.cluster_group)
        model.backup.group_state[vm_id] = "Failed"
        third = await backup.read_vm_facts(session, powers, drives.output, names, seen)
        assert len(decoded) == 2
        assert third[vm_id].cluster_group == "Failed"
        assert len(seen) == 1  # only the latest text is kept
    finally:
        await session.close()
