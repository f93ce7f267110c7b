"""The replay backend: same final store, speed, damage, read-only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ventana.backends.base import ReadOnlyError
from ventana.backends.replay import ReplayBackend
from ventana.state.events import ConnectionChanged, Event, LinkState
from ventana.state.model import Kind, Platform
from ventana.state.recording import ActionRecord, RecordingVersionError, read_recording
from ventana.state.store import Store

FIXTURE = Path(__file__).resolve().parents[2] / "recordings" / "small-cluster.jsonl"


class Sleeps:
    """An injected sleep that records what was asked and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def _drain(backend: ReplayBackend) -> list[Event]:
    return [event async for event in backend.events()]


def _snapshot(store: Store) -> dict[str, object]:
    tables = {kind.value: {e.id: e for e in store.all(kind)} for kind in Kind}
    links = {s: (link.state, link.reason) for s, link in store.links.items() if s != "replay"}
    return {"tables": tables, "links": links}


async def test_replay_gives_the_same_store_as_the_events() -> None:
    rec = read_recording(FIXTURE)
    direct = Store()
    direct.apply_many(event for _, event in rec.events)

    backend = ReplayBackend(FIXTURE, speed=0)
    replayed = Store()
    async for event in backend.events():
        replayed.apply(event)

    assert _snapshot(replayed) == _snapshot(direct)
    assert replayed.count(Kind.VM) == 5 and replayed.count(Kind.LUN) == 3
    # The hostile name arrives intact from the file and the store made it harmless.
    names = {vm.name for vm in replayed.vms()}
    assert "[bold red]evil\\x1b[2J" in names
    link = replayed.links["replay"]
    assert link.state is LinkState.DISCONNECTED
    assert link.reason.startswith("replay finished at 5.0 s")
    assert replayed.stale  # historical data is shown as such
    assert backend.finished and backend.stopped is None


async def test_stream_shape_and_target() -> None:
    backend = ReplayBackend(FIXTURE, speed=0)
    assert backend.target == "replay://small-cluster.jsonl"
    assert backend.name == "replay"
    assert backend.platform is Platform.HYPERV
    events = await _drain(backend)
    first, second, last = events[0], events[1], events[-1]
    assert first == ConnectionChanged("replay", LinkState.CONNECTING, "opening small-cluster.jsonl")
    assert isinstance(second, ConnectionChanged) and second.state is LinkState.CONNECTED
    assert "sim://HVCLUSTER01" in second.reason and "as fast as possible" in second.reason
    assert isinstance(last, ConnectionChanged) and last.source == "replay"
    assert last.state is LinkState.DISCONNECTED
    # Recorded link events pass through untouched, in order.
    recorded = [e for e in events[2:-1] if isinstance(e, ConnectionChanged)]
    assert [e.state for e in recorded] == [
        LinkState.CONNECTING, LinkState.CONNECTED, LinkState.STALE,
        LinkState.RECONNECTING, LinkState.CONNECTED,
    ]
    assert all(e.source == "sim" for e in recorded)
    # Operator actions are exposed, not streamed.
    assert not any(isinstance(e, ActionRecord) for e in events)
    assert [(a.action, a.target, a.data.get("phase")) for a in backend.actions] == [
        ("merge", "vm:vm-app01", "start"), ("merge", "vm:vm-app01", "end"),
    ]
    assert backend.actions[1].outcome == "ok"
    assert backend.actions_so_far() == backend.actions


@pytest.mark.parametrize("speed", [1.0, 2.0, 0.5])
async def test_speed_scales_the_delays(speed: float) -> None:
    rec = read_recording(FIXTURE)
    sleeps = Sleeps()
    backend = ReplayBackend(FIXTURE, speed=speed, sleep=sleeps)
    await _drain(backend)
    offsets = sorted({t for t, _ in rec.items})
    expected = [b / speed - a / speed for a, b in zip([0.0, *offsets], offsets, strict=False)]
    expected = [d for d in expected if d > 0]
    assert sleeps.delays == pytest.approx(expected)
    assert sum(sleeps.delays) == pytest.approx(rec.duration / speed)


@pytest.mark.parametrize("speed", [0, math.inf])
async def test_instant_replay_does_not_sleep(speed: float) -> None:
    sleeps = Sleeps()
    await _drain(ReplayBackend(FIXTURE, speed=speed, sleep=sleeps))
    assert sleeps.delays == []


def test_bad_speed_refused() -> None:
    with pytest.raises(ValueError):
        ReplayBackend(FIXTURE, speed=-1)
    with pytest.raises(ValueError):
        ReplayBackend(FIXTURE, speed=math.nan)


async def test_damaged_file_replays_up_to_the_damage(tmp_path: Path) -> None:
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    cut = 30
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b"".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])

    backend = ReplayBackend(torn, speed=0)
    assert backend.stopped == f"line {cut + 1}: truncated line"
    store = Store()
    events = await _drain(backend)
    store.apply_many(events)

    intact = read_recording(FIXTURE)
    expected_items = [item for _, item in intact.items[: cut - 1]]
    played = [e for e in events[2:-1]]
    assert played == [i for i in expected_items if not isinstance(i, ActionRecord)]
    last = events[-1]
    assert isinstance(last, ConnectionChanged) and last.state is LinkState.DISCONNECTED
    assert last.reason.startswith(f"replay stopped at line {cut + 1}: truncated line")
    assert store.links["replay"].reason == last.reason


async def test_garbage_in_the_middle_stops_there(tmp_path: Path) -> None:
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join([*lines[:10], b"#!garbage\n", *lines[10:]]))
    backend = ReplayBackend(bad, speed=0)
    events = await _drain(backend)
    assert backend.stopped == "line 11: not JSON"
    assert len(events) == 2 + 9 + 1


def test_read_only_always() -> None:
    backend = ReplayBackend(FIXTURE)
    assert backend.read_only
    with pytest.raises(ReadOnlyError):
        backend.executor()
    with pytest.raises(ReadOnlyError):
        backend._make_executor()


def test_version_error_before_the_ui(tmp_path: Path) -> None:
    future = tmp_path / "future.jsonl"
    future.write_text('{"format":"ventana-recording","version":2,"started":"","target":"x"}\n')
    with pytest.raises(RecordingVersionError, match="upgrade Ventana"):
        ReplayBackend(future)
    with pytest.raises(OSError):
        ReplayBackend(tmp_path / "missing.jsonl")


async def test_close_stops_the_stream() -> None:
    sleeps = Sleeps()
    backend = ReplayBackend(FIXTURE, speed=1.0, sleep=sleeps)
    seen: list[Event] = []
    async for event in backend.events():
        seen.append(event)
        if len(seen) == 5:
            await backend.close()
    last = seen[-1]
    assert isinstance(last, ConnectionChanged) and last.state is LinkState.DISCONNECTED
    assert last.reason.startswith("replay closed at")
    assert len(seen) < 20


def test_replay_clock_follows_the_recorded_source_clock(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from ventana.backends.replay import ReplayBackend
    from ventana.state.recording import Recorder

    start = datetime(2026, 1, 1, tzinfo=UTC)
    path = tmp_path / "sim.jsonl"
    Recorder(path, "sim://X", meta={"clock_start": start.isoformat(), "clock_rate": 60.0}).close()
    replay = ReplayBackend(path, speed=0)
    replay.position = 10.0  # ten wall seconds into a sim session at speed 60
    assert replay.now() == start + timedelta(minutes=10)
