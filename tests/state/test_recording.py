"""Recordings: round trip of every event type, torn and corrupt files, versions."""

from __future__ import annotations

import importlib.util
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ventana.state.events import (
    ConnectionChanged,
    Event,
    FindingRaised,
    LinkState,
    Remove,
    TaskProgress,
    Upsert,
)
from ventana.state.model import (
    GB,
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    DiskFormat,
    Finding,
    Kind,
    Lun,
    Node,
    Platform,
    PowerState,
    Severity,
    Task,
    TaskState,
    VirtualDisk,
)
from ventana.state.recording import (
    ActionRecord,
    Recorder,
    RecordingError,
    RecordingVersionError,
    read_recording,
)

RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"
T0 = datetime(2024, 11, 14, 22, 0, tzinfo=UTC)
HOSTILE = "[bold red]evil\x1b[2J"

EVENTS: list[Event] = [
    ConnectionChanged("sim", LinkState.CONNECTING, "connecting to HVCLUSTER01"),
    Upsert(Cluster("c1", "HVCLUSTER01", Platform.HYPERV, nodes=2)),
    Upsert(Node("n1", "HV-NODE-01", "c1", csv_owned=("l1", "l2"), vm_count=1)),
    Upsert(VM("v1", HOSTILE, "c1", "n1", PowerState.RUNNING, disk_ids=("d1",), lun_id="l1")),
    Upsert(Checkpoint("cp1", "v1", "before patch", None, CheckpointKind.STANDARD, T0,
                      "C:\\CS\\v1_1.avhdx", 10 * GB)),
    Upsert(VirtualDisk("d1", "v1", "C:\\CS\\v1.vhdx", DiskFormat.VHDX, 100 * GB, 200 * GB,
                       None, "l1")),
    Upsert(Lun("l1", "CSV-DATA1", "c1", 2367 * GB, 26 * 1024**2, "n1")),
    Upsert(Task("t1", "merge", "vm:v1", "evil", 0.0, TaskState.RUNNING, T0, None, "", "")),
    Upsert(Finding("f0", Severity.INFO, "vm:v1", "OLD_CHECKPOINT", "checkpoint is 700 days old")),
    TaskProgress("t1", 42.5, "merging \u202eexe.txt", None),
    TaskProgress("t1", 100.0, "done", TaskState.OK),
    FindingRaised(Finding("f1", Severity.BLOCKING, "lun:l1", "LOW_SPACE", "26 MB free")),
    Remove(Kind.CHECKPOINT, "cp1"),
    ConnectionChanged("sim", LinkState.STALE, "no answer for 30 s"),
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _record(path: Path, events: list[Event] = EVENTS, *, step: float = 0.25) -> FakeClock:
    clock = FakeClock()
    with Recorder(path, "sim://HVCLUSTER01", meta={"backend": "sim"}, clock=clock,
                  started=T0) as rec:
        for i, event in enumerate(events):
            clock.now = 100.0 + i * step
            rec.write_event(event)
            if i == 3:
                rec.write_action({"action": "merge", "target": "vm:v1", "outcome": "ok",
                                  "password": "hunter2", "error": "x\x1b[2J"})
    return clock


def test_round_trip_every_event_type(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    _record(path)
    rec = read_recording(path)
    assert rec.stopped is None
    assert rec.header.version == 1
    assert rec.header.target == "sim://HVCLUSTER01"
    assert rec.header.started == "2024-11-14T22:00:00.000+00:00"
    assert rec.header.meta == {"backend": "sim"}
    events = [item for _, item in rec.items if not isinstance(item, ActionRecord)]
    assert events == EVENTS  # every type, every field, raw (the store sanitizes)
    assert [t for t, _ in rec.events] == [i * 0.25 for i in range(len(EVENTS))]
    (action,) = rec.actions
    assert action.t == 0.75 and action.action == "merge" and action.outcome == "ok"
    assert action.data == {"action": "merge", "target": "vm:v1", "outcome": "ok",
                           "error": "x\\x1b[2J"}
    assert rec.duration == pytest.approx(0.25 * (len(EVENTS) - 1))
    raw = path.read_bytes()
    assert b"hunter2" not in raw
    assert b"\x1b" not in raw and raw.isascii()  # ESC is written as \u001b
    assert b"evil\\u001b[2J" in raw
    assert all(json.loads(line) for line in raw.splitlines())


def test_lines_are_whole_and_offsets_rounded(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    clock = FakeClock()
    with Recorder(path, "x", clock=clock) as rec:
        clock.now = 100.123456
        rec.write_event(EVENTS[0])
        assert path.read_bytes().endswith(b"\n")  # written through, not buffered
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[1])["t"] == 0.123


def test_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text("keep me\n")
    with pytest.raises(FileExistsError):
        Recorder(path, "x")
    assert path.read_text() == "keep me\n"


def test_write_error_is_kept_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    rec = Recorder(path, "x")
    assert rec._fd is not None
    os.close(rec._fd)  # the disk "goes away"
    rec.write_event(EVENTS[0])  # must not raise into the console
    rec.write_action({"action": "merge"})
    assert rec.error is not None and "stopped" in rec.error
    rec._fd = None
    rec.close()


def test_no_secret_reaches_the_file(tmp_path: Path) -> None:
    password = "Tr0ub4dor&3-secret-value"
    path = tmp_path / "rec.jsonl"
    with Recorder(path, "sim://X", meta={"backend": "sim", "password": password}) as rec:
        rec.write_event(ConnectionChanged(
            "hyperv", LinkState.DISCONNECTED, f"401: Authorization: Negotiate {password}"))
        rec.write_event(Upsert(Task("t1", "merge", "vm:v1", error=f"login password={password}")))
        rec.write_action({"action": "merge", "credentials": {"password": password},
                          "error": f"token: {password}"})
    assert password.encode() not in path.read_bytes()
    items = read_recording(path).items
    assert items[0][1] == ConnectionChanged(
        "hyperv", LinkState.DISCONNECTED, "401: Authorization: [redacted]")


def test_unencodable_event_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    with Recorder(path, "x") as rec:
        rec.write_event(TaskProgress("t1", float("nan")))
        rec.write_event(EVENTS[0])
    assert rec.skipped == 1
    assert len(read_recording(path).items) == 1


def test_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    _record(path)
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # a kill in the middle of the last write
    rec = read_recording(path)
    n_lines = data.count(b"\n")
    assert rec.stopped == f"line {n_lines}: truncated line"
    events = [i for _, i in rec.items if not isinstance(i, ActionRecord)]
    assert events == EVENTS[:-1]


def test_missing_final_newline_only_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    _record(path)
    path.write_bytes(path.read_bytes()[:-1])
    rec = read_recording(path)
    assert rec.stopped is None
    assert len(rec.events) == len(EVENTS)


def test_garbage_line_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    _record(path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(4, b"\x00\x00\x00\x00garbage\n")
    path.write_bytes(b"".join(lines))
    rec = read_recording(path)
    assert rec.stopped == "line 5: not JSON"
    assert [i for _, i in rec.items] == EVENTS[:3]  # up to the damage, nothing after


def test_bad_event_line_is_described(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    _record(path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(3, b'{"t":0.5,"ev":"upsert","kind":"vm","data":{"id":"v9"}}\n')
    lines.insert(5, b'{"t":0.6,"ev":"remove","kind":"vm","id":"v9"}\n')
    path.write_bytes(b"".join(lines))
    rec = read_recording(path)
    assert rec.stopped is not None
    assert rec.stopped.startswith("line 4: bad 'upsert' event: ")
    assert "missing field" in rec.stopped
    assert len(rec.items) == 2


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"ev":"link","source":"s","state":"connected"}', "bad time offset None"),
        (b'{"t":NaN,"ev":"link","source":"s","state":"connected"}', "not JSON"),
        (b'{"t":1,"ev":"teleport"}', "unknown event type 'teleport'"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"t":1,"ev":"action","data":"merge"}', "bad 'action' line"),
    ],
)
def test_each_kind_of_damage(tmp_path: Path, line: bytes, why: str) -> None:
    path = tmp_path / "rec.jsonl"
    _record(path, EVENTS[:2])
    with path.open("ab") as fh:
        fh.write(line + b"\n")
        fh.write(b'{"t":9,"ev":"link","source":"s","state":"connected"}\n')
    rec = read_recording(path)
    assert rec.stopped is not None and rec.stopped.startswith("line 4: " + why)
    assert len(rec.items) == 2


def test_newer_version_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.jsonl"
    path.write_text('{"format":"ventana-recording","version":2,"started":"","target":"x"}\n')
    with pytest.raises(RecordingVersionError) as err:
        read_recording(path)
    assert "recording format version 2 is newer than this Ventana supports (1); " \
           "upgrade Ventana" in str(err.value)
    assert isinstance(err.value, RecordingError)


@pytest.mark.parametrize(
    "content",
    [
        b"hello, world\n",
        b'{"format":"something-else","version":1}\n',
        b'{"format":"ventana-recording","version":"one"}\n',
        b"\x89PNG\r\n\x1a\n\x00\x00",
        b'{"format":"ventana-rec',  # torn header
    ],
)
def test_not_a_recording(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(RecordingError) as err:
        read_recording(path)
    assert not isinstance(err.value, RecordingVersionError)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(RecordingError, match="is empty"):
        read_recording(path)


def test_header_only(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    Recorder(path, "sim://X").close()
    rec = read_recording(path)
    assert rec.items == [] and rec.stopped is None and rec.duration == 0.0


def _make_small_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("make_small", RECORDINGS / "make_small.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixture_is_reproducible_and_small(tmp_path: Path) -> None:
    fixture = RECORDINGS / "small-cluster.jsonl"
    rebuilt = _make_small_module().build(tmp_path / "small.jsonl")
    assert rebuilt.read_bytes() == fixture.read_bytes()
    assert fixture.stat().st_size < 30_000
    raw = fixture.read_bytes()
    assert b"[bold red]evil\\u001b[2J" in raw and b"\x1b" not in raw
    rec = read_recording(fixture)
    assert rec.stopped is None
    kinds = {type(i).__name__ for _, i in rec.items}
    assert kinds == {"ConnectionChanged", "Upsert", "TaskProgress", "FindingRaised", "Remove",
                     "ActionRecord"}
    assert 4.5 <= rec.duration <= 6
