"""Issue 14: staleness per node (``Store.staleness``) and the plans that use it.

A source that names its nodes (``ConnectionChanged.nodes``) makes stale only
what those nodes own; a node no source names follows the worst link; every
plan's STALE_DATA counts only its VM's own node.
"""

from __future__ import annotations

from factories import NOW, small_cluster

from ventana.state.cleanup_plans import plan_compact, plan_delete
from ventana.state.events import ConnectionChanged, LinkState
from ventana.state.model import Severity
from ventana.state.plans import plan_merge, plan_upgrade
from ventana.state.rebuild import plan_rebuild
from ventana.state.store import Staleness, Store


def _stale(plan: object) -> list[str]:
    return [f.message for f in plan.findings  # type: ignore[attr-defined]
            if f.code == "STALE_DATA" and f.severity is Severity.BLOCKING]


def _two_sources(store: Store, n2: LinkState) -> Store:
    store.apply(ConnectionChanged("test", LinkState.CONNECTED, "", ("n1",)))
    store.apply(ConnectionChanged("test n2", n2, "no answer for 30 s", ("N2",)))
    return store


def test_a_source_naming_no_nodes_speaks_for_the_whole_target() -> None:
    store = small_cluster()
    assert not store.staleness().any and Staleness() == Staleness(rest=False)
    store.apply(ConnectionChanged("test", LinkState.STALE, "no answer"))
    view = store.staleness()
    assert view.everything and not view.partial and view.of("n1") and view.of("anything")


def test_one_node_down_is_stale_alone_and_case_blind() -> None:
    store = _two_sources(small_cluster(), LinkState.STALE)
    view = store.staleness()
    assert view.partial and not view.everything
    assert view.of("n2") and view.of("N2") and not view.of("n1")
    assert view.of("n9")  # a node no source names: the worst link (not live) — careful
    assert store.nodes_live() == (1, 2)
    assert store.stale_node_names() == ["n2"]  # spelled as the inventory has it, not "N2"
    assert store.link_reason().startswith("1/2 nodes; ")
    assert not store.link_reasons().startswith("1/2")
    store.apply(ConnectionChanged("test n2", LinkState.CONNECTED))
    assert not store.staleness().any and store.nodes_live() == (2, 2)


def test_every_plan_blocks_only_on_its_own_nodes_link(tmp_path: object) -> None:
    store = _two_sources(small_cluster(), LinkState.STALE)
    db = str(tmp_path / "actions.db")  # type: ignore[operator]
    from ventana.state.actionlog import ActionLog
    ActionLog.open(db).close()
    for plan in (plan_merge, plan_upgrade, plan_compact, plan_delete):
        assert not _stale(plan(store, "a", NOW)), plan  # vm a is on n1
        messages = _stale(plan(store, "c", NOW))  # vm c is on n2
        assert messages and "node n2" in messages[0], plan
    assert not _stale(plan_rebuild(store, "a", NOW, db=db))
    assert _stale(plan_rebuild(store, "c", NOW, db=db))
    # The whole link down: every VM, and the message does not single out a node.
    store.apply(ConnectionChanged("test", LinkState.STALE, "no answer"))
    messages = _stale(plan_compact(store, "a", NOW))
    assert messages and messages[0].startswith("The connection is not live")
