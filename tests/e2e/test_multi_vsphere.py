"""Several targets and vSphere actions: a simulator next to a writable vCenter (vcsim).

The platform is decided per VM, not per session: ``m`` on a vSphere VM plans
remove-all-snapshots, on a simulated one a checkpoint merge; vCenter's storage
estimate is asked of the vSphere target and keyed like the store (namespaced
datastore ids); ``x``/``c``/``n`` on a Hyper-V/sim VM say so and open nothing;
the SSH side channel attaches to a composite's vSphere target.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apphelp import placed, wait_for
from factories import NOW
from peers.vcsim import BUILD_HINT, is_built, start_vcsim
from test_multi_backend import sim
from test_vsphere_actions import confirm, on_server, open_plan, snapshot

from ventana.backends.multi import MultiBackend
from ventana.backends.vsphere import VSphereBackend, VSphereConfig
from ventana.state.actionlog import ActionLog
from ventana.state.config import Config
from ventana.state.model import Kind
from ventana.state.plans_vsphere import ESTIMATES, REMOVE_ALL
from ventana.state.rebuild import RebuildStore
from ventana.tui.app import VentanaApp
from ventana.tui.cli import attach_side_channels
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

SIZE = (200, 60)


def test_the_ssh_side_channel_attaches_to_a_composites_vsphere_target() -> None:
    vc = VSphereBackend(VSphereConfig("vc01", user="ops"), password="x")
    multi = MultiBackend([("lab", sim()), ("vc", vc)])
    sections = {"ssh": {"host": {"esx01": {"known_hosts": "/k"}}},
                "guest": {"sql-01": {"address": "sql-01.corp", "known_hosts": "/k"}}}
    said = attach_side_channels(multi, Config(sections=sections), None)
    assert "1 host" in said and "1 VM" in said
    assert len(vc.side_channels) == 1 and vc.stun_probe is not None
    assert vc.guest_shell is not None
    assert attach_side_channels(sim(), Config(sections=sections), None) == ""


@pytest.mark.skipif(not is_built(), reason=BUILD_HINT)
@pytest.mark.timeout(120)
async def test_sim_next_to_a_writable_vcenter(tmp_path: Path) -> None:
    handle = start_vcsim(tmp_path / "vcsim", hosts=2, vms=3, datastores=1, quiet=True)
    try:
        vc = VSphereBackend(VSphereConfig(host=handle.host, port=handle.port, user=handle.user,
                                          ca_file=handle.ca_path, wait_s=30, read_only=False),
                            password=handle.password)
        multi = MultiBackend([("lab", sim(vms=8)), ("vc", vc)])
        app = VentanaApp(multi, log=ActionLog.open(tmp_path / "a.db"), clock=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 14 and placed(app),
                           timeout=40)
            table = app.query_one(VmTable)
            vm = next(v for v in app.store.vms() if v.id.startswith("vc/")
                      and v.name == "DC0_C0_H1_VM0")
            await on_server(handle, snapshot(vm.id.split("/", 1)[1], "before-patch"))
            await wait_for(pilot, lambda: bool(app.store.checkpoints_of(vm.id)), timeout=20)
            ESTIMATES.clear()

            # m on the vSphere VM: remove all snapshots, with vCenter's own estimate.
            table.select_vm(vm.id)
            await pilot.pause(0.2)
            screen = await open_plan(pilot, app, "m")
            assert screen.plan.action == REMOVE_ALL
            estimate = ESTIMATES.get(vm.id)
            assert estimate is not None and vm.lun_id in estimate.by_lun, estimate
            assert "EstimateStorageForConsolidateSnapshots" in screen.plan.facts["space_basis"]
            await confirm(pilot, app, vm.name)
            row = app.action_log.rows()[0]
            assert (row.action, row.outcome) == (REMOVE_ALL, "ok"), row.error
            await wait_for(pilot, lambda: not app.store.checkpoints_of(vm.id), timeout=20)

            # p queues the same per-VM action: remove-all-snapshots, not a Hyper-V merge.
            await pilot.press("p")
            await pilot.pause(0.1)
            assert app._window is not None
            assert app._window.window.items[-1].action == REMOVE_ALL

            # Hyper-V workflows say so on a vSphere VM, and leave nothing behind.
            for key in ("u", "b"):
                await pilot.press(key)
                await pilot.pause(0.2)
                assert not isinstance(app.screen, PlanScreen), key
                assert "for Hyper-V VMs" in str(list(app._notifications)[-1].message)
            assert RebuildStore.open(app.action_log.path).latest(vm.id) is None

            # A finding's "merge" remedy on a vSphere VM opens its own plan too.
            await on_server(handle, snapshot(vm.id.split("/", 1)[1], "left-by-backup"))
            await wait_for(pilot, lambda: bool(app.store.checkpoints_of(vm.id)), timeout=20)
            app.open_remedy("merge", vm.id)
            await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), 15)
            assert app.screen.plan.action == REMOVE_ALL  # type: ignore[attr-defined]
            await pilot.press("escape")
            await pilot.pause(0.1)

            # m on a simulated VM: a checkpoint merge; x/c/n are vSphere's only.
            lab = next(v for v in app.store.vms() if v.id.startswith("lab/")
                       and app.store.checkpoints_of(v.id))
            table.select_vm(lab.id)
            await pilot.pause(0.2)
            for key in ("x", "c", "n"):
                await pilot.press(key)
                await pilot.pause(0.2)
                assert not isinstance(app.screen, PlanScreen), key
                assert "for vSphere VMs" in str(list(app._notifications)[-1].message)
            screen = await open_plan(pilot, app, "m")
            assert screen.plan.action == "merge"
            await pilot.press("escape")
            await pilot.pause(0.1)
            await pilot.press("p")
            await pilot.pause(0.1)
            assert app._window.window.items[-1].action == "merge"
        app.action_log.close()
    finally:
        handle.stop()


async def test_a_snapshot_removal_task_stays_the_consoles_own() -> None:
    """remove_snapshot_of takes the task id third: the composite still keeps it un-namespaced
    (so k can cancel it and the strip ranks it first) and strips the snapshot's namespace."""
    vc = VSphereBackend(VSphereConfig("vc01", user="ops", read_only=False), password="x")
    multi = MultiBackend([("lab", sim()), ("vc", vc)])
    result = await multi.executor().remove_snapshot_of("vc/vm-1", "vc/snapshot-2",
                                                       "remove-snapshot-ab12", False)
    assert multi.owner("remove-snapshot-ab12") is multi.children[1]
    assert "snapshot-2 is not a snapshot of this VM" in result.error  # the child's own check
    assert "vc/" not in result.error
    await multi.close()
