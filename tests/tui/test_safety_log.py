"""Issue 12 in the console: the action log read back is untrusted; interrupted
actions are announced at start with what to verify."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from apphelp import make_app, populated, screen_lines, wait_for
from textual.widgets import DataTable

from ventana.state.actionlog import ActionLog
from ventana.tui.log_screen import LogScreen

HOSTILE = "\x1b]0;owned\x07vm\x1b[2J\x1b]52;c;cm0gLXJmIC8=\x07\x9b31m\u202e" + "n" * 5000


def _tamper(db: Path, **changes: object) -> None:
    """Write straight into the SQLite file, as another writer could."""
    con = sqlite3.connect(db)
    sets = ", ".join(f"{k} = ?" for k in changes)
    con.execute(f"UPDATE actions SET {sets}", tuple(changes.values()))
    con.commit()
    con.close()


def _record(db: Path, outcome: str = "ok") -> None:
    with ActionLog.open(db) as log:
        log.record(action="merge", target_system="sim://HVCLUSTER01", mode="read-write",
                   target_object="vm:x", target_name="web-01", plan={}, findings=[],
                   override=False, confirmed=True, outcome=outcome)


async def test_the_log_screen_sanitizes_and_caps_what_it_reads(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    _record(db)
    _tamper(db, target_name=HOSTILE, error=HOSTILE, operator=HOSTILE, final_state=HOSTILE,
            target_system=HOSTILE, duration_s=44160.0)
    app = make_app(tmp_path)
    async with app.run_test(size=(200, 55)) as pilot:
        await populated(pilot)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen))
        await pilot.pause(0.2)
        table = app.screen.query_one(DataTable)
        cells = [str(cell) for cell in table.get_row_at(0)]
        for cell in cells:
            for byte in ("\x1b", "\x07", "\x9b", "\u202e"):
                assert byte not in cell
            assert len(cell) <= 130  # capped with an ellipsis
        assert any("\\x1b" in cell and cell.endswith("…") for cell in cells)
        assert "12 h 16 min" in cells
        text = "\n".join(screen_lines(app))
        assert "\x1b" not in text and "wall clock" in text


async def test_interrupted_actions_are_announced_at_start(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    _record(db)
    # An intent row whose console is gone (another host): it never got an outcome.
    _tamper(db, outcome="running", ended=None, host="another-host", target_name="sql-01")
    app = make_app(tmp_path)
    async with app.run_test(size=(200, 55)) as pilot:
        await populated(pilot)
        await wait_for(pilot, lambda: any("Interrupted" in (n.title or "")
                                          for n in app._notifications))
        (note,) = [n for n in app._notifications if "Interrupted" in (n.title or "")]
        assert "merge of sql-01" in note.message and "verify" in note.message
        assert "Get-VMSnapshot" in note.message  # what to check on the host


async def test_a_replay_never_writes_to_the_log_it_is_given(tmp_path: Path) -> None:
    from factories import NOW

    from ventana.backends.replay import ReplayBackend
    from ventana.tui.app import VentanaApp
    from ventana.tui.plan_screen import PlanScreen

    fixture = Path(__file__).resolve().parents[1] / "recordings" / "small-cluster.jsonl"
    db = tmp_path / "actions.db"
    real = ActionLog.open(db)
    app = VentanaApp(ReplayBackend(fixture, speed=0), log=real, clock=lambda: NOW,
                     mode="replay", read_only_reason="replaying a recording")
    async with app.run_test(size=(200, 55)) as pilot:
        # The inventory is applied in slices: a VM is in the table once the last one is.
        await wait_for(pilot, lambda: any(app.store.checkpoints_of(v.id)
                                          for v in app.store.vms())
                       and not app.core.inventory_applying)
        vm = next(v for v in app.store.vms() if app.store.checkpoints_of(v.id))
        assert app.query_one("#vms").select_vm(vm.id)  # type: ignore[attr-defined]
        app.action_merge()  # the palette path: the plan opens read-only
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        await pilot.press("escape")
        await pilot.pause(0.3)
    assert real.rows() == []  # no "cancelled (mode=replay)" row in the operator's log
    real.close()
