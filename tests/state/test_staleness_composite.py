"""Stop 14: staleness per target in a composite store (several targets, one console).

Two targets side by side, namespaced as ``MultiBackend`` does (its own ``wrap``
makes the events): ``lab``, whose one source names no nodes (a simulator, a
vCenter: it speaks for its whole target), and ``hv``, a Hyper-V cluster whose
cluster source names no nodes and whose per-node sources each name their node.
What a target owns is stale exactly when its own links are not live; one
target down never dims the other.
"""

from __future__ import annotations

from factories import NOW, small_cluster

from ventana.backends.multi import MultiBackend
from ventana.backends.sim import SimBackend, SimConfig
from ventana.state.codec import event_from_dict, event_to_dict
from ventana.state.events import ConnectionChanged, Event, LinkState, Upsert
from ventana.state.model import Kind, Severity, Task, TaskState
from ventana.state.plans import plan_merge
from ventana.state.plans_vsphere import plan_remove_all
from ventana.state.store import Store


def _composite() -> tuple[Store, MultiBackend]:
    """``lab`` (a source naming no nodes) next to ``hv`` (one source per node), both
    holding small_cluster's inventory (the same ids: the prefixes keep them apart)."""
    children = [SimBackend(SimConfig(seed=1, vms=2, rate=0.0, epoch=NOW)) for _ in range(2)]
    multi = MultiBackend([("lab", children[0]), ("hv", children[1])])
    lab, hv = multi.children
    inventory: list[Event] = [Upsert(e) for kind in Kind for e in small_cluster().all(kind)]
    store = Store()
    store.apply_many(multi.wrap(lab, e) for e in [
        ConnectionChanged(lab.backend.name, LinkState.CONNECTED), *inventory])
    store.apply_many(multi.wrap(hv, e) for e in [
        ConnectionChanged(hv.backend.name, LinkState.CONNECTED),
        ConnectionChanged("hyperv:n1", LinkState.CONNECTED, "", ("n1",)),
        ConnectionChanged("hyperv:n2", LinkState.CONNECTED, "", ("N2",)),
        *inventory,
        Upsert(Task("job-1", "backup", "vm:c", "dc-03", 40.0, TaskState.RUNNING)),
    ])
    return store, multi


def _stale(plan: object) -> list[str]:
    return [f.message for f in plan.findings  # type: ignore[attr-defined]
            if f.code == "STALE_DATA" and f.severity is Severity.BLOCKING]


def _owned(store: Store, label: str) -> dict[str, bool]:
    """Every node, VM and LUN of a target, and whether it shows stale."""
    view = store.staleness()
    out = {n.id: view.of(n.id, n.id) for n in store.nodes()}
    out.update((v.id, view.of(v.node_id, v.id)) for v in store.vms())
    out.update((lun.id, view.of(lun.owner_node_id, lun.id)) for lun in store.luns())
    return {k: v for k, v in out.items() if k.startswith(f"{label}/")}


def test_the_links_carry_their_targets_scope() -> None:
    store, _ = _composite()
    assert {link.source: link.scope for link in store.links.values()} == {
        "lab": "lab/", "hv": "hv/", "hv hyperv:n1": "hv/", "hv hyperv:n2": "hv/"}
    view = store.staleness()
    assert not view.any and [t.prefix for t in view.targets] == ["lab/", "hv/"]
    assert all(not stale for stale in _owned(store, "lab").values())


def test_a_hyperv_node_down_leaves_the_node_less_target_live() -> None:
    store, multi = _composite()
    hv = multi.children[1]
    store.apply(multi.wrap(hv, ConnectionChanged("hyperv:n2", LinkState.STALE, "no answer",
                                                 ("N2",))))
    view = store.staleness()
    assert view.partial and not view.everything
    assert not any(_owned(store, "lab").values())  # lab names no nodes: still live
    hv_owned = _owned(store, "hv")
    assert {k for k, stale in hv_owned.items() if stale} == {"hv/n2", "hv/c", "hv/l2"}
    assert store.stale_names() == ["hv/n2"]
    assert view.down_targets == ()
    assert store.stale_owner("vm:hv/c") == ("node", "hv/n2")
    assert store.stale_owner("vm:lab/c") is None
    assert store.stale_owner("lun:lab/l2") is None and store.stale_owner("node:lab/n2") is None
    assert store.stale_owner("checkpoint:hv/c-cp0") == ("node", "hv/n2")
    assert store.stale_owner(store.task("hv/job-1").target) == ("node", "hv/n2")
    # Pre-flight: the lab VM on its "n2" proceeds, hv's is refused naming the node.
    assert not _stale(plan_merge(store, "lab/c", NOW))
    messages = _stale(plan_merge(store, "hv/c", NOW))
    assert messages and "node hv/n2" in messages[0]


def test_the_node_less_target_down_makes_all_it_owns_stale_and_nothing_else() -> None:
    store, multi = _composite()
    lab = multi.children[0]
    store.apply(multi.wrap(lab, ConnectionChanged(lab.backend.name, LinkState.STALE,
                                                  "no answer for 30 s")))
    view = store.staleness()
    assert view.partial and not view.everything
    lab_owned = _owned(store, "lab")
    assert lab_owned and all(lab_owned.values())  # every node, VM and LUN of it
    assert view.of("", "lab/c1")  # what has no node (its cluster) too
    assert not any(_owned(store, "hv").values())  # hv answers: nothing of it dimmed
    assert [t.name for t in view.down_targets] == ["lab"]
    assert store.stale_names() == ["lab"]
    assert store.stale_owner("vm:lab/a") == ("target", "lab")
    assert view.of("", "elsewhere")  # an id under no target: the worst link counts
    assert store.stale_owner("vm:hv/a") is None
    messages = _stale(plan_merge(store, "lab/a", NOW))
    assert messages and messages[0].startswith("The link to lab is not live")
    assert not _stale(plan_merge(store, "hv/a", NOW))
    # A plan without a node (vSphere's) counts its VM's own target, not the worst link.
    assert _stale(plan_remove_all(store, "lab/a", NOW))
    assert not _stale(plan_remove_all(store, "hv/a", NOW))


def test_each_target_down_in_turn_then_both_then_the_console_itself() -> None:
    store, multi = _composite()
    lab, hv = multi.children
    down = ConnectionChanged(hv.backend.name, LinkState.STALE, "cluster name not answering")
    store.apply(multi.wrap(hv, down))
    # hv's cluster source down, its node sources live: the nodes' VMs stay live, what
    # no node source names (the cluster) is stale; lab is untouched.
    view = store.staleness()
    assert not any(_owned(store, "lab").values()) and not any(_owned(store, "hv").values())
    assert view.of("", "hv/c1") and not view.of("", "lab/c1")
    assert view.down_targets == ()  # its nodes answer: the target is not down
    for node in ("hyperv:n1", "hyperv:n2"):
        store.apply(multi.wrap(hv, ConnectionChanged(node, LinkState.STALE, "gone")))
    assert [t.name for t in store.staleness().down_targets] == ["hv"]
    assert store.stale_names() == ["hv"]  # the target, not each of its nodes again
    assert all(_owned(store, "hv").values()) and not any(_owned(store, "lab").values())
    store.apply(multi.wrap(lab, ConnectionChanged(lab.backend.name, LinkState.DISCONNECTED)))
    view = store.staleness()
    assert view.everything and not view.partial and view.down_targets == ()
    assert store.stale_owner("vm:lab/a") == ("", "")  # everything: no one to single out
    # Both back; then the console's own link (no scope: the whole session) goes.
    for child, source in ((lab, lab.backend.name), (hv, hv.backend.name), (hv, "hyperv:n1"),
                          (hv, "hyperv:n2")):
        store.apply(multi.wrap(child, ConnectionChanged(source, LinkState.CONNECTED)))
    assert not store.staleness().any
    store.apply(ConnectionChanged("multi", LinkState.DISCONNECTED, "backend stopped"))
    view = store.staleness()
    assert view.of("hv/n1", "hv/n1") is False  # its own source answers (as in one target)
    assert view.of("", "hv/c1") and view.of("lab/n1", "lab/n1") and view.of("", "elsewhere")


def test_a_stale_plan_gives_its_own_links_reason_not_every_links() -> None:
    """Both targets have trouble at once: each VM's STALE_DATA gives the reason of its
    own node's or target's link, not the other target's."""
    store, multi = _composite()
    lab, hv = multi.children
    store.apply(multi.wrap(lab, ConnectionChanged(lab.backend.name, LinkState.STALE,
                                                  "lab: no answer for 30 s")))
    store.apply(multi.wrap(hv, ConnectionChanged("hyperv:n2", LinkState.STALE,
                                                 "TLS certificate of n2 not trusted",
                                                 ("N2",))))
    (lab_says,) = _stale(plan_merge(store, "lab/a", NOW))
    assert "lab: no answer for 30 s" in lab_says and "TLS certificate" not in lab_says
    (hv_says,) = _stale(plan_merge(store, "hv/c", NOW))  # hv/c lives on n2
    assert "TLS certificate of n2 not trusted" in hv_says and "no answer for 30 s" not in hv_says
    assert not _stale(plan_merge(store, "hv/a", NOW))  # on n1: live


def test_staleness_is_made_once_per_link_change() -> None:
    store, multi = _composite()
    view = store.staleness()
    store.apply_many(Upsert(e) for e in list(store.vms()))  # entities: the same view
    assert store.staleness() is view
    store.apply(multi.wrap(multi.children[0], ConnectionChanged("sim", LinkState.STALE)))
    assert store.staleness() is not view and store.staleness() is store.staleness()


def test_a_recording_keeps_each_links_scope() -> None:
    event = ConnectionChanged("lab", LinkState.STALE, "no answer", ("lab/n1",), "lab/")
    assert event_from_dict(event_to_dict(event)) == event
    old = {"ev": "link", "source": "sim", "state": "connected", "reason": ""}  # no scope
    assert event_from_dict(old) == ConnectionChanged("sim", LinkState.CONNECTED)
    assert "scope" not in event_to_dict(ConnectionChanged("sim", LinkState.CONNECTED))
