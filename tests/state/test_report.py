"""The campaign report: a hand-checked table, formats, hostile names, the CLI."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook

from ventana.state.actionlog import ActionLog
from ventana.state.recording import read_recording
from ventana.state.report import (
    CampaignReport,
    ReportError,
    build_report,
    lun_chart,
    lun_sightings,
    md_escape,
    parse_time,
    to_csv,
    to_markdown,
    write_xlsx,
)
from ventana.tui.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "report"
LOG = FIXTURES / "campaign-log.jsonl"
RECORDING = FIXTURES / "campaign-recording.jsonl"
GB = 1024**3


def load_log(path: Path) -> Path:
    """The committed action-log fixture loaded into a fresh SQLite action log."""
    rows = [json.loads(line) for line in LOG.read_text().splitlines()]
    with ActionLog.open(path) as log:
        log.db.table("actions").insert_all(rows)
    return path


def campaign(tmp_path: Path, **kw: object) -> CampaignReport:
    db = tmp_path / f"campaign-{len(list(tmp_path.glob('campaign-*.db')))}.db"
    with ActionLog.open(load_log(db)) as log:
        rows = log.rows()
    return build_report(rows, luns=lun_sightings(read_recording(RECORDING)), **kw)  # type: ignore[arg-type]


def test_report_reproduces_the_hand_checked_tables(tmp_path: Path) -> None:
    # expected.md was checked line by line against make_fixture.py's figures:
    # e.g. app-02 merged twice (30 + 50 min = 1 h 20 min), disks 101 → 43.1 and
    # 50 → 52 GB; db-03's merge said Operational, the operator's later edit
    # says Under monitoring; CSV-EXCHANGE1's last sighting is the recording's
    # 384.46 GB, later than the merge's 0.122 GB; 547.47 - 478.45 = 69.02 GB.
    assert to_markdown(campaign(tmp_path)) == (FIXTURES / "expected.md").read_text()


def test_time_range_keeps_the_state_as_of_until(tmp_path: Path) -> None:
    report = campaign(tmp_path, until=parse_time("2024-11-16T00:00"))
    vms = {d.vm: d for d in report.disks if d.first_of_vm}
    assert sorted(vms) == ["app-01", "app-02", "db-03"]
    assert vms["db-03"].final_state == "Operational"  # the edit came later
    luns = {u.lun_id: u for u in report.luns}
    assert luns["lun-03"].free_after == round(449.04 * GB)  # the last merge, not Dec's figure
    # A row is in the range by its start; its outcome counts with it.
    assert luns["lun-ex1"].free_after == round(0.122 * GB)
    assert report.totals.outcomes["ok"] == 4 and report.totals.outcomes["failed"] == 1
    assert not report.pending
    late = campaign(tmp_path, since=parse_time("2024-11-17"))
    assert {d.vm for d in late.disks} == {"app-06", "dc-03", "=1+1|[b]x[/b]"}
    with pytest.raises(ReportError):
        build_report([], since=parse_time("2024-12-01"), until=parse_time("2024-11-01"))
    with pytest.raises(ReportError):
        parse_time("last tuesday")
    assert parse_time("2024-11-16") == datetime(2024, 11, 16, tzinfo=UTC)
    assert parse_time("2024-11-16T01:00Z") == datetime(2024, 11, 16, 1, tzinfo=UTC)


def test_csv_round_trip(tmp_path: Path) -> None:
    report = campaign(tmp_path)
    tables: dict[str, list[dict[str, str]]] = {}
    header: list[str] = []
    for row in csv.reader(io.StringIO(to_csv(report))):
        if not row:
            continue
        if row[0] == "table":
            header = row[1:]
            continue
        tables.setdefault(row[0], []).append(dict(zip(header, row[1:], strict=True)))
    assert len(tables["vm_disks"]) == len(report.disks) == 8
    app02 = [r for r in tables["vm_disks"] if r["vm"] == "app-02"]
    assert [(r["disk"], r["size_before_gb"], r["size_after_gb"]) for r in app02] == [
        ("app-02.vhdx", "101.0", "43.1"), ("app-02_data.vhdx", "50.0", "52.0")]
    assert app02[0]["merge_minutes"] == "80.0" and app02[0]["merges"] == "2"
    assert app02[1]["merge_minutes"] == ""  # VM-level times on the first disk line only
    hostile = next(r for r in tables["vm_disks"] if r["disk"] == "evil.vhdx")
    assert hostile["vm"] == "'=1+1|[b]x[/b]"  # not a formula in a spreadsheet
    assert [r["lun_id"] for r in tables["luns"]] == [
        "lun-03", "lun-ex1", "lun-nv10", "lun-nv13", "lun-q"]
    totals = {r["item"]: r["value"] for r in tables["totals"]}
    assert totals["recovered_gb"] == "69.02" and totals["final_state: Under monitoring"] == "1"
    assert len(tables["pending"]) == 4


def test_xlsx_round_trip(tmp_path: Path) -> None:
    report = campaign(tmp_path)
    out = tmp_path / "report.xlsx"
    write_xlsx(report, out)
    book = load_workbook(out)
    assert book.sheetnames == ["VMs and disks", "LUNs", "Totals", "Pending"]
    sheet = book["VMs and disks"]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:5] == ("vm", "disk", "lun", "size_before_gb", "size_after_gb")
    assert len(rows) == 1 + 8
    app01 = next(r for r in rows if r[0] == "app-01")
    assert app01[3:6] == (150.0, 137.0, 13.0) and app01[7] == 240.0 and app01[9] == 10.0
    hostile = next(r for r in rows if r[1] == "evil.vhdx")
    assert hostile[0] == "'=1+1|[b]x[/b]"
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            assert cell.data_type != "f"  # no cell is a formula
    luns = book["LUNs"]
    assert luns.cell(2, 1).value == "CSV-03-DATA3" and luns.cell(2, 4).value == 380.14
    assert len(luns._charts) == 1


def test_hostile_names_stay_literal(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    names = ["a|b", "[bold red]x[/]", "x\x1b[2Jy", "@SUM(A1)", "-2+3", "`code`", "<b>&amp;"]
    with ActionLog.open(db) as log:
        for i, name in enumerate(names):
            log.record(action="final-state", target_system="sim", mode="read-only",
                       target_object=f"vm:{i}", target_name=name,
                       plan={"final_state": "Degraded", "note": name}, findings=[],
                       override=False, confirmed=True, outcome="ok", final_state="Degraded")
        # A log written by something else may hold raw control bytes: still literal.
        raw = json.loads(LOG.read_text().splitlines()[0])
        raw.update(id=100, target_name="raw\x1b]52;c;eA==\x07", target_object="vm:raw",
                   error="\x9b2J")
        log.db.table("actions").insert(raw)
        report = build_report(log.rows())
    assert any(d.vm.startswith("raw\\x1b") for d in report.disks)
    assert "\x1b" not in to_csv(report) and "\x07" not in to_csv(report)
    md = to_markdown(report)
    assert "\x1b" not in md and "\\x1b" in md  # the escape made visible, never sent
    table = [line for line in md.splitlines() if line.startswith("| ")]
    vm_lines = [line for line in table if "Degraded" in line and "(all disks)" in line]
    assert len(vm_lines) == len(names)  # the raw row's VM ended Operational
    for line in vm_lines:  # a name never adds a column
        assert line.count(" | ") == 9
    assert md_escape("a|b") == "a\\|b" and md_escape("[x]") == "\\[x\\]"
    assert md_escape("`c` <b>&") == "\\`c\\` \\<b\\>\\&"
    rows = [r for r in csv.reader(io.StringIO(to_csv(report))) if r and r[0] == "vm_disks"]
    cells = {r[1] for r in rows}
    assert {"'@SUM(A1)", "'-2+3", "a|b", "[bold red]x[/]"} <= cells
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    write_xlsx(report, tmp_path / "h.xlsx")
    values = [r[0] for r in load_workbook(tmp_path / "h.xlsx")["VMs and disks"].iter_rows(
        min_row=2, values_only=True)]
    assert "'@SUM(A1)" in values and "'-2+3" in values


def test_chart_bars_share_one_scale() -> None:
    report = build_report([])
    assert report.disks == () and report.luns == ()
    assert "No VM work" in to_markdown(report) and "Nothing pending" in to_markdown(report)
    from ventana.state.report import LunLine

    lines = lun_chart([LunLine("a", "BIG", 100 * GB, 10 * GB, 100 * GB, None, None),
                       LunLine("b", "x" * 40, 50 * GB, None, 0, None, None)], width=10)
    assert lines[1].startswith("BIG") and "|█         |" in lines[1]
    assert "|██████████|" in lines[2]
    assert lines[3].startswith("xxxxxxxxxxxxxxx…")  # long names cut, columns kept
    assert "|          |" in lines[3] and lines[3].rstrip().endswith("-")


# -- the CLI ------------------------------------------------------------------------

def test_cli_report_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = load_log(tmp_path / "actions.db")
    assert main(["report", "--db", str(db), "--recording", str(RECORDING)]) == 0
    assert capsys.readouterr().out == (FIXTURES / "expected.md").read_text()
    assert main(["report", "--db", str(db), "--format", "csv", "--until", "2024-11-16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("table,vm,disk") and "db-03" in out and "dc-03" not in out
    xlsx = tmp_path / "r.xlsx"
    assert main(["report", "--db", str(db), "--format", "xlsx", "--out", str(xlsx)]) == 0
    assert load_workbook(xlsx).sheetnames[0] == "VMs and disks"
    assert main(["report", "--db", str(db), "--format", "chart", "--recording", str(RECORDING)]
                ) == 0
    chart = capsys.readouterr().out
    assert chart.splitlines()[1].startswith("CSV-03-DATA3     before |██████")
    assert "722.09 GB" in chart
    md = tmp_path / "r.md"
    assert main(["report", "--log", str(db), "--out", str(md)]) == 0
    assert md.read_text().startswith("# Campaign report")


def test_cli_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = load_log(tmp_path / "actions.db")
    missing = tmp_path / "nope.db"
    assert main(["report", "--db", str(missing)]) == 1
    assert "no action log" in capsys.readouterr().err and not missing.exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    assert main(["report", "--db", str(junk)]) == 1
    assert "not a usable action log" in capsys.readouterr().err
    assert main(["report", "--db", str(db), "--format", "xlsx"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["report", "--db", str(db), "--since", "yesterday"]) == 2
    assert main(["report", "--db", str(db), "--since", "2025-01-01", "--until", "2024-01-01"]) == 2
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "no" / "dir" / "r.md")]) == 3
    assert "cannot write" in capsys.readouterr().err
    assert main(["report", "--db", str(db), "--format", "xlsx",
                 "--out", str(tmp_path / "no" / "r.xlsx")]) == 3
    assert main(["report", "--db", str(db), "--recording", str(tmp_path / "none.jsonl")]) == 1
    # Another process holds the write lock: a clear error after --wait, not a hang.
    holder = sqlite3.connect(str(db), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert main(["report", "--db", str(db), "--wait", "0.2"]) == 1
        assert "locked" in capsys.readouterr().err
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# -- what the runner writes for the report ----------------------------------------

async def test_runner_settle_is_bounded_and_never_loses_the_outcome(tmp_path: Path) -> None:
    import asyncio
    import dataclasses
    import time

    from factories import small_cluster
    from test_runner import runner

    from ventana.state.events import Upsert

    r = runner(tmp_path, store=small_cluster())
    lun = r.store.lun(r.store.vm("a").lun_id)
    calls: list[str] = []

    async def settle() -> None:  # the backend's last events reach the store
        calls.append("settle")
        r.store.apply(Upsert(dataclasses.replace(lun, free_bytes=lun.free_bytes + 5 * GB)))

    r.settle = settle
    await r.execute(r.plan("merge", "a"), "app-01")
    (row,) = r.log.rows()
    assert calls == ["settle"] and row.outcome == "ok"
    assert row.plan_data()["lun_before"]["free"] == lun.free_bytes
    assert row.detail_data()["lun_after"]["free"] == lun.free_bytes + 5 * GB
    assert row.plan_data()["disks_before"] and row.detail_data()["disks_after"]

    async def hangs() -> None:
        await asyncio.sleep(3600)

    async def breaks() -> None:
        raise RuntimeError("store gone")

    for bad in (hangs, breaks):
        r.settle = bad
        t0 = time.monotonic()
        await r.execute(r.plan("merge", "a"), "app-01")
        assert time.monotonic() - t0 < 3
        assert r.log.rows()[0].outcome == "ok"  # a stale "after", never a lost outcome


async def test_a_later_ok_run_takes_an_unknown_one_off_the_pending_list(tmp_path: Path) -> None:
    """The link drops mid-merge (outcome unknown); the operator checks, takes a
    new checkpoint's worth of work and merges again, ok: the unknown merge is
    no longer pending. Another VM's unknown merge stays on the list."""
    import asyncio

    from test_sim_actions import Session, quiet

    from ventana.backends.actions import ActionRunner
    from ventana.state.events import TaskProgress
    from ventana.state.model import CheckpointKind, ReplicationState, TaskState

    db = tmp_path / "actions.db"
    async with Session(quiet(speed=60.0)) as s:
        r = ActionRunner(s.store, s.backend, ActionLog.open(db), clock=s.backend.now)
        mergeable = [v for v in sorted(s.store.vms(), key=lambda v: v.name)
                     if v.replication is ReplicationState.DISABLED
                     and s.store.checkpoints_of(v.id) and not r.plan("merge", v.id).blocking]
        first, other = mergeable[0], mergeable[1]

        async def lost(vm_id: str) -> None:
            def drop(event: object) -> None:
                if isinstance(event, TaskProgress):
                    s.hook = None
                    s.backend.drop_connection(reason="WinRM read timeout")

            s.hook = drop
            vm = s.store.vm(vm_id)
            result = await r.execute(r.plan("merge", vm_id), vm.name)  # type: ignore[union-attr]
            assert result.state is TaskState.UNKNOWN
            while s.backend.world.running_task(vm_id, "merge"):
                await asyncio.sleep(0)
            s.backend.restore_connection()
            for _ in range(10_000):
                if not s.store.stale:
                    break
                await asyncio.sleep(0)

        await lost(first.id)
        await lost(other.id)
        pending = build_report(ActionLog.open(db).rows()).pending
        assert {(p.vm, p.what) for p in pending} == {(first.name, "merge"), (other.name, "merge")}

        s.backend.world.add_checkpoint("cp-again", [f"f-again-{j}" for j in first.disk_ids],
                                       first.id, "again", CheckpointKind.STANDARD,
                                       [GB for _ in first.disk_ids])
        s.backend._wake.set()  # a change made behind the backend's back: let it stream
        for _ in range(10_000):
            if s.store.checkpoints_of(first.id):
                break
            await asyncio.sleep(0)
        again = await r.execute(r.plan("merge", first.id), first.name)
        assert again.state is TaskState.OK, again.error
        report = build_report(ActionLog.open(db).rows())
        assert [(p.vm, p.what) for p in report.pending] == [(other.name, "merge")]
        assert report.totals.outcomes["unknown"] == 2  # the log and the counts keep it
        # Within a range that ends before the ok run, it is still pending.
        ok_row = ActionLog.open(db).rows()[0]
        until = parse_time(ok_row.started) - timedelta(microseconds=1)
        early = build_report(ActionLog.open(db).rows(), until=until)
        assert {p.vm for p in early.pending} == {first.name, other.name}


def test_times_say_their_time_base(tmp_path: Path) -> None:
    """A simulator's merge (clock 60 times wall time) is labelled and also given in the simulator's
    clock — the "merged in 12 h 16 min" its outcome said — beside a real one."""
    raw = next(json.loads(line) for line in LOG.read_text().splitlines()
               if json.loads(line)["action"] == "merge")
    plan = json.loads(raw["plan"])
    with ActionLog.open(load_log(tmp_path / "a.db")) as log:
        log.db.table("actions").insert({
            **raw, "id": 300, "target_object": "vm:sim", "target_name": "sim-vm",
            "task_id": "merge-sim", "duration_s": 736.3,
            "plan": json.dumps({**plan, "clock_rate": 60.0})})
        report = build_report(log.rows())
    [sim] = [d for d in report.disks if d.vm == "sim-vm"]
    [real] = [d for d in report.disks if d.vm == "app-01"]
    assert real.time_base == "wall clock" and sim.time_base == (
        "wall clock of a simulator run (×60)")
    assert sim.simulated_s[0] == pytest.approx(736.3 * 60)
    md = to_markdown(report)
    assert "| 12 min wall (simulated ×60: 12 h 16 min) |" in md
    assert "| 4 h 00 min | 10 min |" in md  # a real cluster's times stay as they were
    assert "wall-clock durations measured by the console that ran each action" in md
    rows = {r[1]: r for r in csv.reader(io.StringIO(to_csv(report))) if r and r[0] == "vm_disks"}
    assert rows["sim-vm"][-1] == "wall clock of a simulator run (×60)"
    assert rows["app-01"][-1] == "wall clock"


def test_time_base_words() -> None:
    from ventana.state.report import time_base

    assert time_base([1.0]) == time_base([]) == "wall clock"
    assert time_base([60.0]) == "wall clock of a simulator run (×60)"
    assert time_base([1.0, 60.0]) == "wall clock; some runs on a simulator (×60)"
