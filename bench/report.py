"""Campaign report generation time for 10,000 action-log rows (each format).

A synthetic campaign in a real SQLite action log: 2,500 VMs on 18 LUNs, each
with a merge (two disks, LUN before/after), a rebuild, an operator's
final-state edit and a refused attempt. Times are the median of a few runs:
reading the rows, building the tables, and writing Markdown, CSV and xlsx.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ventana.state.actionlog import ActionLog
from ventana.state.report import build_report, to_csv, to_markdown, write_xlsx

GB = 1024**3
START = datetime(2024, 10, 1, tzinfo=UTC)
STATES = ("Operational", "Degraded", "With pending tasks", "Optimized", "Under monitoring")


def _rows(n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    vms = max(1, n // 4)
    for v in range(vms):
        lun = f"lun-{v % 18:02d}"
        at = START + timedelta(minutes=7 * v)
        disks = [{"id": f"d{v}-{j}", "path": f"C:\\ClusterStorage\\{lun}\\vm{v}_{j}.vhdx",
                  "size": (40 + v % 200 + 10 * j) * GB, "files": 3} for j in range(2)]
        after = [{**d, "size": d["size"] - (v % 7) * GB, "files": 1} for d in disks]
        free = (100 + v % 900) * GB
        base = {"operator": "ops", "host": "bench", "pid": 1, "boot_id": "b", "proc_start": 1,
                "target_system": "sim://bench", "mode": "read-write", "findings": "[]",
                "override": 0, "target_object": f"vm:{v}", "target_name": f"vm-{v:05d}",
                "error": "", "task_id": ""}

        def add(action: str, minutes: float, outcome: str, plan: dict[str, Any],
                detail: dict[str, Any] | None = None, final: str | None = None,
                at: datetime = at, base: dict[str, Any] = base,
                disks: list[dict[str, Any]] = disks, after: list[dict[str, Any]] = after
                ) -> None:
            rows.append({**base, "action": action, "started": at.isoformat(),
                         "ended": (at + timedelta(minutes=minutes)).isoformat(),
                         "duration_s": minutes * 60, "outcome": outcome,
                         "confirmed": int(outcome != "refused"), "plan": json.dumps(plan),
                         "detail": json.dumps(detail) if detail else None,
                         "final_state": final,
                         "size_before": sum(d["size"] for d in disks),
                         "size_after": sum(d["size"] for d in after) if detail else None})

        lun_before = {"id": lun, "name": f"CSV-{lun}", "total": 2048 * GB, "free": free}
        add("merge", 40 + v % 700, "ok",
            {"disks_before": disks, "lun_before": lun_before},
            {"disks_after": after, "lun_after": {**lun_before, "free": free + (v % 7) * GB}},
            "Operational")
        add("rebuild", 20, "ok", {"disks_before": after}, {"disks_after": after}, "Operational",
            at=at + timedelta(hours=14))
        add("final-state", 0, "ok", {"final_state": STATES[v % 5], "note": "bench"},
            final=STATES[v % 5], at=at + timedelta(hours=15))
        add("upgrade", 0, "refused", {"lun": f"CSV-{lun}", "free_now": free},
            at=at + timedelta(hours=16))
    return rows[:n]


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 1)


def run_report(n: int = 10_000, runs: int = 3) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "actions.db"
        with ActionLog.open(db) as log:
            log.db.table("actions").insert_all(_rows(n), batch_size=1000)
            rows = log.rows(newest_first=False)
            results: dict[str, Any] = {"report_rows": len(rows)}
            results["report_read_ms"] = _median_ms(lambda: log.rows(newest_first=False), runs)
        report = build_report(rows)
        results["report_build_ms"] = _median_ms(lambda: build_report(rows), runs)
        results["report_md_ms"] = _median_ms(lambda: to_markdown(report), runs)
        results["report_csv_ms"] = _median_ms(lambda: to_csv(report), runs)
        xlsx = Path(tmp) / "report.xlsx"
        results["report_xlsx_ms"] = _median_ms(lambda: write_xlsx(report, xlsx), runs)
        results["report_disk_lines"] = len(report.disks)
    for fmt in ("md", "csv", "xlsx"):
        results[f"report_total_{fmt}_ms"] = round(
            results["report_read_ms"] + results["report_build_ms"] + results[f"report_{fmt}_ms"],
            1)
    return results


def print_report(results: dict[str, Any]) -> None:
    print(f"\nCampaign report — {results['report_rows']:,} action-log rows "
          f"({results['report_disk_lines']:,} VM/disk lines)")
    for key, label in (("report_read_ms", "read the rows from SQLite (ms)"),
                       ("report_build_ms", "build the tables (ms)"),
                       ("report_md_ms", "write Markdown (ms)"),
                       ("report_csv_ms", "write CSV (ms)"),
                       ("report_xlsx_ms", "write xlsx (ms)"),
                       ("report_total_md_ms", "total, Markdown (ms)"),
                       ("report_total_csv_ms", "total, CSV (ms)"),
                       ("report_total_xlsx_ms", "total, xlsx (ms)")):
        print(f"{label:<40} {results[key]:>10,}")


if __name__ == "__main__":
    print_report(run_report())
