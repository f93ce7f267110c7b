"""Recordings through the whole console: record a session, replay it, and
replay the committed fixture to its final screen."""

from __future__ import annotations

from pathlib import Path

from apphelp import make_app, placed, populated, vm_where, wait_for
from factories import NOW
from textual.pilot import Pilot

from ventana.backends.replay import ReplayBackend
from ventana.state.actionlog import ActionLog
from ventana.state.events import LinkState
from ventana.state.model import Kind
from ventana.state.recording import Recorder, read_recording
from ventana.tui.app import VentanaApp
from ventana.tui.log_screen import RecordedActionsScreen
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

FIXTURE = Path(__file__).resolve().parents[1] / "recordings" / "small-cluster.jsonl"
SIZE = (180, 50)


def replay_app(tmp_path: Path, path: Path = FIXTURE) -> VentanaApp:
    return VentanaApp(
        ReplayBackend(path, speed=0),
        log=ActionLog.open(tmp_path / "actions.db"),
        clock=lambda: NOW,
        mode="replay",
        read_only_reason="replaying a recording",
    )


async def finished(pilot: Pilot) -> None:
    app = pilot.app
    assert isinstance(app, VentanaApp)
    await wait_for(pilot, lambda: app.store.link_state() is LinkState.DISCONNECTED
                   and placed(app))
    await pilot.pause(0.3)


async def test_committed_recording_replays_to_its_final_screen(tmp_path: Path) -> None:
    recording = read_recording(FIXTURE)
    app = replay_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await finished(pilot)
        assert app.read_only and app.query_one("#read-only-banner")
        # The final store equals the recording applied event by event.
        from ventana.state.store import Store

        expected = Store()
        expected.apply_many(e for _, e in recording.events)
        for kind in Kind:
            assert {e.id: e for e in app.store.all(kind)} == {
                e.id: e for e in expected.all(kind)
            }, kind
        table = app.query_one(VmTable)
        assert table.row_count == expected.count(Kind.VM)
        names = [table.cell_text(i, "name") for i in table.visible_ids]
        assert any(n.startswith("[bold red]evil\\x1b") for n in names)
        header = str(app.query_one("#header").render())
        assert "replay finished" in header and "REPLAY" in header
        assert table.stale  # historical data is shown as such
        await pilot.press("m")
        assert not isinstance(app.screen, PlanScreen)


def test_replay_final_screen(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(replay_app(tmp_path), terminal_size=SIZE, run_before=finished)


async def test_record_a_merge_then_replay_it(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    recorder = Recorder(path, "sim://HVCLUSTER01", meta={"backend": "sim"})
    app = make_app(tmp_path)
    app.core.recorder = recorder
    app.runner.recorder = recorder
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
        name = app.store.vm(vm_id).name
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        await pilot.pause(0.1)
        await pilot.press(*name, "enter")
        await wait_for(pilot, lambda: app.action_log.rows()
                       and app.action_log.rows()[0].outcome == "ok", timeout=20)
        await wait_for(pilot, lambda: not app.store.checkpoints_of(vm_id))
        await pilot.pause(0.3)
        live_vms = {v.id: v for v in app.store.vms()}
    recorder.close()

    recording = read_recording(path)
    assert recording.stopped is None
    phases = [a.data.get("phase") for a in recording.actions]
    assert phases == ["start", "end"]
    assert recording.actions[-1].outcome == "ok"
    replay = replay_app(tmp_path, path)
    async with replay.run_test(size=SIZE) as pilot:
        await finished(pilot)
        assert not replay.store.checkpoints_of(vm_id)
        assert {v.id: v for v in replay.store.vms()} == live_vms
        await pilot.press("l")  # what the operator did, as recorded
        await pilot.pause(0.1)
        screen = replay.screen
        assert isinstance(screen, RecordedActionsScreen)
        assert [a.data.get("phase") for a in screen.actions] == ["start", "end"]
        assert screen.query_one("#log-table").row_count == 2
