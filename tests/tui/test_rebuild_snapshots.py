"""The rebuild checklist as the operator sees it (SVG in screenshots/).

A Gen2 VM whose rebuild stopped at the boot check: the checklist, the
failure with what to do by hand, and the capture summary. The workflow rows
are written with fixed times so the screen is the same on every run.
"""

from __future__ import annotations

from pathlib import Path

from apphelp import make_app, populated
from textual.pilot import Pilot

from ventana.state.model import PowerState
from ventana.state.rebuild import RebuildState, RebuildStore, StepState, manual_steps
from ventana.tui.rebuild_screen import RebuildScreen

SIZE = (180, 50)
T0 = "2024-10-14T21:00:00.000+00:00"


def _at(minute: int, second: int = 0) -> str:
    return T0.replace("21:00:00", f"21:{minute:02d}:{second:02d}")


def test_rebuild_checklist_after_a_boot_failure(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path)
    db = tmp_path / "actions.db"

    async def open_checklist(pilot: Pilot) -> None:
        await populated(pilot)
        sim = app.backend.rebuild  # type: ignore[attr-defined]
        vm = next(v for v in sorted(app.store.vms(), key=lambda v: v.name)
                  if v.generation == 2 and len(v.disk_ids) >= 2
                  and v.power is PowerState.RUNNING
                  and sim.guest(v.id).layout[0] != ("SCSI", 0, 0))
        capture = sim._capture(sim.sim.world.vms[vm.id])
        rs = RebuildStore.open(db)
        wf = rs.create(rebuild_id="rb-0a1b2c3d4e", vm_id=vm.id, vm_name=vm.name,
                       target_system=app.backend.target, node=capture["node"],
                       to_last_parent=True, old_vm_name=f"{vm.name}-old-2024-10-14")
        rs.update(wf.id, capture=capture, new_vm_id="5d2e9c1a-7f3b-4c1e-a9d0-3b8e4f6a2c71")
        times = {"capture": (0, 0, 0, 21), "merge": (0, 21, 47, 5),
                 "create": (47, 5, 58, 40)}
        for step, (m1, s1, m2, s2) in times.items():
            rs.step_update(wf.id, step, state=StepState.DONE, pct=100.0, started=_at(m1, s1),
                           ended=_at(m2, s2), message={
                               "capture": "configuration captured",
                               "merge": "shut down; merged to the last parent: the newest "
                               "checkpoint stays (replication)",
                               "create": "new VM created, version 9.0"}[step])
        wf = rs.get(wf.id)
        assert wf is not None
        rs.step_update(wf.id, "verify_boot", state=StepState.FAILED, pct=100.0,
                       started=_at(58, 40), ended=_at(59, 55),
                       error="The guest stopped at boot: INACCESSIBLE_BOOT_DEVICE (0x7B). The "
                       "first boot device is SCSI 0:0, but the system disk is at SCSI 0:1 (from "
                       "the capture). The new VM was turned off.",
                       manual=manual_steps("verify_boot", wf))
        rs.set_state(wf.id, RebuildState.FAILED)
        rs.close()
        await app.push_screen(RebuildScreen(db, vm.id, workflow="rb-0a1b2c3d4e"))
        await pilot.pause(0.8)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_checklist)
