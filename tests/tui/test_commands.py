"""Keys, palette and help come from the action specs; one opener decides per VM.

An operator's key opens the action of the selected VM's platform (``m`` is the
merge on Hyper-V, the removal of all snapshots on vSphere); a key whose action
is not for that platform says why in one line and opens nothing.
"""

from __future__ import annotations

from pathlib import Path

from apphelp import make_app, populated, wait_for

from ventana.backends import actionspecs
from ventana.state.events import Upsert
from ventana.state.model import Cluster, Kind, Platform
from ventana.state.plans_vsphere import REMOVE_ALL
from ventana.tui import commands
from ventana.tui.app import VentanaApp
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

SIZE = (180, 50)


def test_every_action_command_has_a_binding_or_a_palette_entry() -> None:
    bound = {b.action for b in commands.bindings()}
    for cmd in actionspecs.commands():
        assert cmd in commands.COMMANDS
        assert cmd.name in bound or not cmd.key
        assert callable(getattr(VentanaApp, f"action_{cmd.name}", None))  # run_command


async def test_a_key_opens_the_action_of_the_vms_platform(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm = sorted(app.store.vms(), key=lambda v: v.name)[0]
        app.query_one(VmTable).select_vm(vm.id)
        await pilot.pause(0.1)
        app.clear_notifications()
        await pilot.press("x")  # a vSphere key on a Hyper-V VM
        await pilot.pause(0.1)
        assert not isinstance(app.screen, PlanScreen)
        assert [n.message for n in app._notifications] == ["This action is for vSphere VMs."]

        cluster = app.store.get(Kind.CLUSTER, vm.cluster_id)
        assert isinstance(cluster, Cluster)
        app.store.apply(Upsert(Cluster(cluster.id, cluster.name, Platform.VSPHERE,
                                       cluster.nodes)))
        app.clear_notifications()
        await pilot.press("u")  # a Hyper-V workflow on a vSphere VM
        await pilot.pause(0.1)
        assert not isinstance(app.screen, PlanScreen)
        (note,) = [n.message for n in app._notifications]
        assert note == (f"A configuration-version upgrade is for Hyper-V VMs; {vm.name} is a "
                        "vSphere VM (m removes all its snapshots, c consolidates, n takes a "
                        "snapshot).")
        app.run_command("merge", vm.id)
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        assert app.screen.plan.action == REMOVE_ALL  # type: ignore[attr-defined]
