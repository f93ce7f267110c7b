"""Several targets side by side (backends/multi.py, `ventana --target A --target B`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from apphelp import placed, vm_where, wait_for
from factories import NOW
from peers.vcsim import BUILD_HINT, is_built, start_vcsim

from ventana.backends.base import ReadOnlyError
from ventana.backends.multi import MultiBackend, namespace_entity
from ventana.backends.sim import SimBackend, SimConfig
from ventana.backends.vsphere import VSphereBackend, VSphereConfig
from ventana.state.actionlog import ActionLog
from ventana.state.config import load_config
from ventana.state.events import ConnectionChanged, LinkState, Remove, TaskProgress, Upsert
from ventana.state.model import (
    VM,
    Checkpoint,
    CheckpointKind,
    DiskFormat,
    Kind,
    Node,
    Task,
    TaskState,
    VirtualDisk,
)
from ventana.state.store import Store
from ventana.tui.app import VentanaApp
from ventana.tui.cli import _several, _several_backends, build_parser
from ventana.tui.header import StatusHeader
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

SIZE = (200, 60)


def sim(read_only: bool = False, vms: int = 8, seed: int = 7) -> SimBackend:
    return SimBackend(SimConfig(seed=seed, vms=vms, rate=0.0, speed=1e6, epoch=NOW,
                                read_only=read_only, merge_failure_rate=0.0))


def test_every_reference_field_is_namespaced() -> None:
    vm = VM("vm-1", "web", "c1", "host-9", disk_ids=("vm-1:[ds] a.vmdk",), lun_id="ds-3")
    got = namespace_entity(vm, "vc/")
    assert (got.id, got.cluster_id, got.node_id, got.lun_id, got.disk_ids) == (
        "vc/vm-1", "vc/c1", "vc/host-9", "vc/ds-3", ("vc/vm-1:[ds] a.vmdk",))
    assert got.name == "web"
    std = CheckpointKind.STANDARD
    cp = namespace_entity(Checkpoint("s2", "vm-1", "n", "s1", std, NOW), "vc/")
    assert (cp.id, cp.vm_id, cp.parent_id) == ("vc/s2", "vc/vm-1", "vc/s1")
    root = namespace_entity(Checkpoint("s1", "vm-1", "n", None, std, NOW), "vc/")
    assert root.parent_id is None
    disk = VirtualDisk("d", "vm-1", "[ds] a.vmdk", DiskFormat.VMDK, 1, 2, lun_id="ds-3")
    disk = namespace_entity(disk, "vc/")
    assert (disk.vm_id, disk.lun_id, disk.path) == ("vc/vm-1", "vc/ds-3", "[ds] a.vmdk")
    node = namespace_entity(Node("n1", "HV01", "c1", csv_owned=("l1", "l2")), "hv/")
    assert node.csv_owned == ("hv/l1", "hv/l2") and node.cluster_id == "hv/c1"
    task = namespace_entity(Task("task-7", "remove", "vm:vm-1"), "vc/")
    assert (task.id, task.target) == ("vc/task-7", "vm:vc/vm-1")
    mine = namespace_entity(Task("merge-ab12", "merge", "vm:vm-1"), "vc/",
                            keep={"merge-ab12"})
    assert (mine.id, mine.target) == ("merge-ab12", "vm:vc/vm-1")


async def test_two_sims_with_the_same_ids_do_not_collide() -> None:
    a, b = sim(vms=5), sim(vms=5)  # the same seed: the very same ids
    multi = MultiBackend([("a", a), ("b", b)])
    store = Store()
    links = 0
    stream = multi.events()
    async for event in stream:
        store.apply(event)
        if isinstance(event, ConnectionChanged) and event.state is LinkState.CONNECTED:
            links += 1
            if links == 2:
                break
    await multi.close()
    async for _ in stream:
        pass
    assert store.count(Kind.VM) == 10
    assert {link for link in store.links} == {"a", "b"}
    for vm in store.vms():
        label = vm.id.split("/", 1)[0]
        assert vm.cluster_id.startswith(label + "/") and vm.node_id.startswith(label + "/")
        assert all(d.startswith(label + "/") for d in vm.disk_ids)
        assert store.node(vm.node_id) is not None  # references resolve within the store
        for cp in store.checkpoints_of(vm.id):
            assert cp.parent_id is None or store.get(Kind.CHECKPOINT, cp.parent_id)
    assert all(store.get(Kind.DISK, d) for vm in store.vms() for d in vm.disk_ids)


def test_remove_and_progress_are_namespaced_but_own_tasks_are_not() -> None:
    multi = MultiBackend([("a", sim()), ("b", sim())])
    child = multi.children[1]
    assert multi.wrap(child, Remove(Kind.VM, "x")) == Remove(Kind.VM, "b/x")
    multi._own_tasks["merge-1"] = child
    assert multi.wrap(child, TaskProgress("merge-1", 5.0)).task_id == "merge-1"
    assert multi.wrap(child, TaskProgress("t9", 5.0)).task_id == "b/t9"
    upsert = multi.wrap(child, Upsert(Task("merge-1", "merge", "vm:v1", state=TaskState.RUNNING)))
    assert upsert.entity.id == "merge-1" and upsert.entity.target == "vm:b/v1"
    assert multi.wrap(child, ConnectionChanged("sim://HVCLUSTER01", LinkState.CONNECTED)) == (
        ConnectionChanged("b", LinkState.CONNECTED, scope="b/"))  # it speaks for b's ids only


async def test_read_only_is_per_target_below_the_ui() -> None:
    writable, locked = sim(), sim(read_only=True)
    multi = MultiBackend([("lab", writable), ("prod", locked)])
    assert not multi.read_only  # one writable target: an executor exists
    executor = multi.executor()
    with pytest.raises(ReadOnlyError, match="read-only"):
        await executor.merge("prod/VM-001", "merge-x")  # the read-only child refuses
    with pytest.raises(ReadOnlyError):
        await executor.merge("nowhere/VM-001", "merge-y")
    assert multi.read_only_for("prod/x") and not multi.read_only_for("lab/x")
    assert not await executor.cancel("prod/t1")
    both_locked = MultiBackend([("p1", sim(read_only=True)), ("p2", sim(read_only=True))])
    assert both_locked.read_only
    with pytest.raises(ReadOnlyError):
        both_locked.executor()


def test_cli_builds_a_composite_from_targets_and_flags(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[target]]\nname = "lab"\nkind = "sim"\nvms = 4\n'
                   '[[target]]\nname = "lab2"\nkind = "sim"\nvms = 3\nread_only = true\n'
                   '[[target]]\nname = "vc"\nkind = "vsphere"\nhost = "vc01"\nuser = "u"\n')
    config = load_config(cfg)
    args = build_parser().parse_args(["--target", "lab", "--target", "lab2"])
    assert args.targets == ["lab", "lab2"] and _several(args)
    backend, reason = _several_backends(args, config)
    assert isinstance(backend, MultiBackend) and reason == ""
    assert [(c.label, c.backend.read_only) for c in backend.children] == [
        ("lab", False), ("lab2", True)]
    monkeypatch.setenv("VENTANA_VSPHERE_PASSWORD", "x")
    args = build_parser().parse_args(["--target", "vc", "--sim"])
    backend, _ = _several_backends(args, config)
    assert [type(c.backend).__name__ for c in backend.children] == ["VSphereBackend",
                                                                    "SimBackend"]
    args = build_parser().parse_args(["--vsphere", "vc02:8443", "--user", "u", "--sim"])
    backend, _ = _several_backends(args, config)
    assert [c.label for c in backend.children] == ["vc02", "sim"]
    assert not _several(build_parser().parse_args(["--target", "lab"]))


@pytest.mark.skipif(not is_built(), reason=BUILD_HINT)
@pytest.mark.timeout(90)
async def test_sim_and_vcsim_side_by_side(tmp_path: Path) -> None:
    handle = start_vcsim(tmp_path / "vcsim", hosts=2, vms=3, datastores=2, quiet=True)
    try:
        vsphere = VSphereBackend(VSphereConfig(host=handle.host, port=handle.port,
                                               user=handle.user, ca_file=handle.ca_path),
                                 password=handle.password)
        assert vsphere.read_only
        lab = sim(vms=12)
        multi = MultiBackend([("lab", lab), ("vc", vsphere)])
        log = ActionLog.open(tmp_path / "a.db")
        app = VentanaApp(multi, log=log, clock=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 18 and placed(app),
                           timeout=40)
            await pilot.pause(0.3)
            table = app.query_one(VmTable)
            assert table.row_count == 18
            labels = {vm.id.split("/", 1)[0] for vm in app.store.vms()}
            assert labels == {"lab", "vc"}
            assert app.store.count(Kind.NODE) == 2 + len({v.node_id for v in app.store.vms()
                                                          if v.id.startswith("lab/")})
            header = str(app.query_one(StatusHeader).render())
            assert "lab ● connected" in header and "vc ● connected" in header
            assert " RO " in header and " RW " in header
            assert not app.read_only  # the simulator is writable

            # A merge on a simulated VM goes through.
            vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
            assert vm_id.startswith("lab/")
            name = app.store.vm(vm_id).name
            table.select_vm(vm_id)
            await pilot.press("m")
            await pilot.pause(0.1)
            assert isinstance(app.screen, PlanScreen)
            await pilot.press(*name, "enter")
            await wait_for(pilot, lambda: bool(app.action_log.rows())
                           and app.action_log.rows()[0].outcome != "running", timeout=20)
            (row,) = app.action_log.rows()
            assert row.outcome == "ok", row.error
            assert row.target_object == f"vm:{vm_id}"
            await wait_for(pilot, lambda: not app.store.checkpoints_of(vm_id))

            # The vSphere target stays read-only, whatever the sim allows.
            vc_vm = next(v for v in app.store.vms() if v.id.startswith("vc/"))
            table.select_vm(vc_vm.id)
            await pilot.press("m")
            await pilot.pause(0.1)
            assert isinstance(app.screen, PlanScreen)  # the plan shows, confirming cannot
            assert app.screen.query_one("#confirm-name").disabled
            await pilot.press("escape")
            await pilot.pause(0.1)
            plan = app.runner.plan("merge", vc_vm.id)
            plan = dataclasses.replace(plan)
            with pytest.raises(ReadOnlyError, match="read-only"):
                await app.runner.execute(plan, vc_vm.name, override=True)
            with pytest.raises(ReadOnlyError):
                await multi.executor().merge(vc_vm.id, "merge-bypass")
            assert [r.outcome for r in app.action_log.rows()[:2]] == ["refused", "cancelled"]
        log.close()
        assert multi._closed
    finally:
        handle.stop()
