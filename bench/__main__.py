"""Run every benchmark, print a table against the targets, write JSON.

Each suite, and each size of a suite that takes several (``--vsphere-vms
1000,10000,45000``, ``--hyperv 4x10000,64x8000``, ``--vm-table-vms``), runs in a
process of its own (``--one-unit``): a size run after another in one process
inherited its heap, threads and GC generations (stop 11: 64x8000 after 4x10000
took 34.4 s, alone 22.2 s). Each child prints its own progress and writes its
bench/results file as before, and hands its figures back through a JSON file;
this process prints the one table against the targets and the baseline, and
``--write-baseline`` writes them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .console import run_console, run_store
from .findings import run_findings
from .table import (
    BASELINE,
    Regression,
    Row,
    load_baseline,
    print_regressions,
    print_rows,
    write_baseline,
)

CONSOLE_ROWS = (
    Row("populated_s", "start → fully populated screen (s)", 1.0, noise=0.1),
    Row("populated_cpu_s", "  process CPU in that time (s)", noise=0.1),
    Row("populated_loop_cpu_s", "    of which the UI loop's thread (s)", noise=0.1),
    Row("sim_world_cpu_s", "    of which the simulator's world build (s)", noise=0.1),
    Row("inventory_to_screen_s", "  of which: inventory in → on screen (s)", noise=0.1),
    Row("keys_during_load_p99_ms", "key → handled during the initial load, p99 (ms)", 50.0,
        noise=10),
    Row("keys_during_load_cpu_p99_ms", "  the UI loop's CPU time in that wait, p99 (ms)",
        noise=10),
    Row("settle_s", "populated → settled (findings, rows) (s)", noise=0.5),
    Row("idle_cpu_pct", "CPU at rest after settling, 10 s window (%)", 2.0, noise=1.0),
    Row("rss_mb_populated", "RSS when populated (MB)", noise=10),
    Row("rss_mb_under_load", "RSS under load (MB)", 300.0, noise=10),
    Row("redraw_median_ms", "event → row redrawn, median (ms)", noise=5),
    Row("redraw_p99_ms", "event → row redrawn, p99 (ms)", 100.0, noise=10),
    Row("load_cpu_pct", "CPU at the load rate (%)", noise=3),
    Row("load_events_per_s", "load: events/s sent", lower=False, noise=5),
    Row("events_per_s", "store: events/s applied", lower=False),
    Row("inventory_apply_s", "store: inventory applied (s)", noise=0.05),
    Row("findings_median_ms", "findings after one change, median (ms)", noise=0.2),
    Row("findings_p99_ms", "findings after one change, p99 (ms)", 20.0, noise=1),
    Row("findings_full_s", "findings: all computed once (s)", noise=0.05),
)
REPORT_ROWS = tuple(
    Row(key, label, noise=5) for key, label in (
        ("report_read_ms", "report: read 10k rows from SQLite (ms)"),
        ("report_build_ms", "report: build the tables (ms)"),
        ("report_total_md_ms", "report: total, Markdown (ms)"),
        ("report_total_csv_ms", "report: total, CSV (ms)"),
        ("report_total_xlsx_ms", "report: total, xlsx (ms)"),
    )
)


Suite = tuple[str, tuple[Row, ...], dict[str, Any], str]  # name, rows, results, suffix


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _write(name: str, args: argparse.Namespace, results: dict[str, Any]) -> Path:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = out / f"{name}-{stamp}.json"
    path.write_text(json.dumps({"when": stamp, "args": vars(args), "results": results},
                               indent=2, default=str) + "\n")
    return path


def run_vsphere_suite(args: argparse.Namespace) -> list[Suite]:
    """bench/vsphere.py: inventory readers and change → screen against one vcsim per size."""
    from . import vsphere

    if not vsphere.inventory_bench_path().is_file():
        print("\nvSphere benchmark skipped: vcsim / inventory-bench not built (make vcsim)")
        return []
    suites: list[Suite] = []
    for vms in args.vsphere_vms:
        load = _loadavg()
        results = asyncio.run(vsphere.run_vsphere(vms, rounds=args.vsphere_rounds,
                                                  changes=args.vsphere_changes))
        results["loadavg_start"], results["loadavg_end"] = load, _loadavg()
        vsphere.report(results)
        print(f"written: {_write(f'vsphere-{vms}', args, results)}")
        suffix = "" if vms == vsphere.DEFAULT_VMS else f"@{vms}"
        suites.append((f"vSphere on vcsim, {results['vms']:,} VMs", vsphere.ROWS, results,
                       suffix))
    return suites


def run_hyperv_suite(args: argparse.Namespace) -> list[Suite]:
    """bench/hyperv.py: WinRM/PSRP endpoints (4 x 2,500 VMs by default) behind the backend."""
    from . import hyperv

    suites: list[Suite] = []
    for nodes, vms in args.hyperv:
        load = _loadavg()
        results = hyperv.suite(vms=vms, nodes=nodes)
        results["loadavg_start"], results["loadavg_end"] = load, _loadavg()
        print(f"written: {_write(f'hyperv-{nodes}x{vms}', args, results)}")
        suffix = "" if (nodes, vms) == hyperv.DEFAULT_SIZE else f"@{nodes}x{vms}"
        suites.append((f"Hyper-V over WinRM/PSRP, {nodes} nodes, {results['hv_vms']:,} VMs",
                       hyperv.ROWS, results, suffix))
    return suites


def run_hyperv_changes_suite(args: argparse.Namespace) -> list[Suite]:
    """bench/hyperv_changes.py: checkpoint, CSV space and disk growth → store by CIM
    subscription (4 x 2,500 VMs), with the full poll on its normal interval."""
    from . import hyperv_changes

    load = _loadavg()
    nodes, vms = hyperv_changes.DEFAULT_SIZE
    results = hyperv_changes.suite(vms=vms, nodes=nodes)
    results["loadavg_start"], results["loadavg_end"] = load, _loadavg()
    print(f"written: {_write('hyperv-changes', args, results)}")
    return [(f"Hyper-V changes other than power, {nodes} nodes, {results['hvc_vms']:,} VMs",
             hyperv_changes.ROWS, results, "")]


def run_console_suite(args: argparse.Namespace) -> list[Suite]:
    load = _loadavg()
    results = asyncio.run(run_console(args.vms, args.rate, args.seconds))
    results.update({f"store_{k}" if k == "vms" else k: v
                    for k, v in run_store(args.vms).items()})
    results.update(run_findings(args.vms))

    from .report import run_report

    results.update(run_report())
    results["loadavg_start"], results["loadavg_end"] = load, _loadavg()
    print(f"\nredraw samples: {results['redraw_samples']}, max {results['redraw_max_ms']} ms; "
          f"keys during load: {results['keys_during_load']} over "
          f"{results['keys_during_load_loads']} loads at {results['keys_during_load_per_s']:g}/s "
          f"({results['keys_during_load_unanswered']} unanswered), p99 "
          f"{results['keys_during_load_p99_ms']} ms, max by load "
          f"{results['keys_during_load_max_ms_by_load']} ms; inventory of "
          f"{results['inventory_entities']:,} entities; findings: "
          f"{results['findings_count']:,} over {results['findings_changes']:,} single changes, "
          f"max {results['findings_max_ms']} ms")
    print(f"written: {_write('console', args, results)}")
    title = (f"Ventana console — {args.vms:,} VMs, {args.rate:g} events/s, "
             f"{platform.python_version()}, {platform.machine()}")
    suffix = "" if args.vms == 10_000 else f"@{args.vms}"
    return [(title, CONSOLE_ROWS + REPORT_ROWS, results, suffix)]


def run_vm_table_suite(args: argparse.Namespace) -> list[Suite]:
    """bench/vm_table.py: sort, filter and change → screen in the console at 45,000 VMs
    (``--vm-table-vms``) from the simulator, no vcsim."""
    from . import vm_table

    suites: list[Suite] = []
    for vms in args.vm_table_vms:
        load = _loadavg()
        results = asyncio.run(vm_table.run_vm_table(vms))
        results["loadavg_start"], results["loadavg_end"] = load, _loadavg()
        vm_table.report(results)
        print(f"written: {_write(f'vmtable-{vms}', args, results)}")
        suffix = "" if vms == vm_table.DEFAULT_VMS else f"@{vms}"
        suites.append((f"VM table, {vms:,} VMs (simulator)", vm_table.ROWS, results, suffix))
    return suites


SUITES = ("console", "hyperv", "hyperv-changes", "vsphere", "team", "vmtable")


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _hyperv_sizes(text: str) -> list[tuple[int, int]]:
    """``4x10000,64x8000``: nodes x VMs in all."""
    sizes = []
    for part in text.split(","):
        nodes, _, vms = part.strip().partition("x")
        sizes.append((int(nodes), int(vms)))
    return sizes


def _from_file(path: Path) -> tuple[tuple[Row, ...], dict[str, Any], str]:
    """A bench/results file's rows, figures and baseline suffix (by the suite that wrote it)."""
    results = json.loads(path.read_text())["results"]
    if path.name.startswith("console"):
        vms = results.get("vms", 10_000)
        return CONSOLE_ROWS + REPORT_ROWS, results, "" if vms == 10_000 else f"@{vms}"
    if path.name.startswith("vsphere"):
        from . import vsphere

        vms = results["vms"]
        return vsphere.ROWS, results, "" if vms == vsphere.DEFAULT_VMS else f"@{vms}"
    if path.name.startswith("vmtable"):
        from . import vm_table

        vms = results["vt_vms"]
        return vm_table.ROWS, results, "" if vms == vm_table.DEFAULT_VMS else f"@{vms}"
    if path.name.startswith("hyperv-changes"):
        from . import hyperv_changes

        return hyperv_changes.ROWS, results, ""
    if path.name.startswith("hyperv"):
        from . import hyperv

        size = (results["hv_nodes"], results["hv_vms"])
        return hyperv.ROWS, results, "" if size == hyperv.DEFAULT_SIZE else "@{}x{}".format(*size)
    raise SystemExit(f"{path}: not a console, vsphere, hyperv, hyperv-changes or vmtable "
                     "result file")


def _rows_by_kind() -> dict[str, tuple[Row, ...]]:
    """Each suite's rows, by the name a child's result carries (imported lazily)."""
    from . import hyperv, hyperv_changes, vm_table, vsphere

    return {"console": CONSOLE_ROWS + REPORT_ROWS, "vsphere": vsphere.ROWS,
            "hyperv": hyperv.ROWS, "hyperv-changes": hyperv_changes.ROWS,
            "vmtable": vm_table.ROWS}


def _units(args: argparse.Namespace, suites: set[str]) -> list[tuple[str, list[str]]]:
    """One (suite, its size's arguments) per process, in the order the suites ran
    before they were split."""
    common = ["--vsphere-changes", str(args.vsphere_changes),
              "--vsphere-rounds", str(args.vsphere_rounds),
              "--vms", str(args.vms), "--rate", str(args.rate), "--seconds", str(args.seconds)]
    units: list[tuple[str, list[str]]] = []
    if "console" in suites:
        units.append(("console", common))
    for nodes, vms in args.hyperv if "hyperv" in suites else ():
        units.append(("hyperv", [*common, "--hyperv", f"{nodes}x{vms}"]))
    if "hyperv-changes" in suites:
        units.append(("hyperv-changes", common))
    for vms in args.vsphere_vms if "vsphere" in suites else ():
        units.append(("vsphere", [*common, "--vsphere-vms", str(vms)]))
    for vms in args.vm_table_vms if "vmtable" in suites else ():
        units.append(("vmtable", [*common, "--vm-table-vms", str(vms)]))
    if "team" in suites:
        units.append(("team", common))
    return units


def _run_unit(suite: str, extra: list[str]) -> tuple[list[Suite], str]:
    """Run one suite at one size in a fresh Python process; its suites back (and why
    not, '' when it ran)."""
    with tempfile.TemporaryDirectory(prefix="ventana-bench-unit-") as tmp:
        out = Path(tmp) / "unit.json"
        cmd = [sys.executable, "-m", "bench", suite, *extra, "--one-unit", str(out)]
        print(f"\n== {suite}, in its own process: {' '.join(cmd[1:-2])}", flush=True)
        child = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1])
        code = child.wait()
        print(f"== {suite}: process {child.pid} ended ({code})", flush=True)
        if code != 0:
            return [], f"{suite} {' '.join(extra)}: exit status {code}"
        if not out.is_file():  # a suite that reports nothing (team) or was skipped
            return [], ""
        rows = _rows_by_kind()
        units = json.loads(out.read_text())["suites"]
        return [(title, rows[kind], results, suffix)
                for title, kind, results, suffix in units], ""


def _write_unit(path: Path, ran: list[Suite]) -> None:
    """A child's suites, for the parent (``_run_unit``): rows travel by their kind."""
    kinds = {rows: kind for kind, rows in _rows_by_kind().items()}  # by value: the console's
    # rows are a tuple made afresh on each call
    for _, _, results, _ in ran:
        results["bench_pid"] = os.getpid()  # which process measured it
    path.write_text(json.dumps({"suites": [
        [title, kinds[rows], results, suffix] for title, rows, results, suffix in ran
    ]}, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("suites", nargs="*", choices=[[], *SUITES], default=[],
                        metavar="SUITE", help=f"which to run: {', '.join(SUITES)} (default all)")
    parser.add_argument("--hyperv", type=_hyperv_sizes, default=[(4, 10_000)],
                        help="NODESxVMS[,...], e.g. 4x10000,64x8000 (VMs in all)")
    parser.add_argument("--vsphere-vms", type=_sizes, default=[1000],
                        help="VMs on vcsim; several sizes: 1000,5000,10000 (growth curves)")
    parser.add_argument("--vsphere-changes", type=int, default=20)
    parser.add_argument("--vsphere-rounds", type=int, default=3,
                        help="inventory reads per reader (the median is kept)")
    parser.add_argument("--vm-table-vms", type=_sizes, default=[45_000],
                        help="VMs in the vmtable suite; several sizes: 10000,45000")
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s under load")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the load phase")
    parser.add_argument("--write-baseline", metavar="NOTE",
                        help="replace bench/baseline.json's figures of the suites that ran; "
                        "NOTE says what the machine was doing")
    parser.add_argument("--baseline-from", nargs="+", type=Path, metavar="RESULT_JSON",
                        help="with --write-baseline: take the figures from these "
                        "bench/results files instead of running anything")
    parser.add_argument("--baseline", type=Path, default=BASELINE, metavar="JSON",
                        help="the baseline file compared with and written (default "
                        "bench/baseline.json)")
    parser.add_argument("--one-unit", type=Path, metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--same-process", action="store_true",
                        help="run every suite and size in this process (as before stop 12)")
    args = parser.parse_args()
    if args.baseline_from:
        if not args.write_baseline:
            parser.error("--baseline-from needs --write-baseline NOTE")
        for path in args.baseline_from:
            rows, results, suffix = _from_file(path)
            written = write_baseline(results, rows, args.write_baseline, args.baseline,
                                     suffix=suffix)
        print(f"baseline written: {written}")
        return 0
    suites = set(args.suites or SUITES)
    if args.one_unit is None and not args.same_process:
        return _report(args, *_run_units(args, suites))
    ran = _run_here(args, suites)
    if args.one_unit is not None:  # a child: the parent prints the table
        _write_unit(args.one_unit, ran)
        return 0
    return _report(args, ran, [])


def _run_units(args: argparse.Namespace, suites: set[str]) -> tuple[list[Suite], list[str]]:
    ran: list[Suite] = []
    failed: list[str] = []
    for suite, extra in _units(args, suites):
        got, why = _run_unit(suite, extra)
        ran += got
        if why:
            failed.append(why)
    return ran, failed


def _run_here(args: argparse.Namespace, suites: set[str]) -> list[Suite]:
    ran: list[Suite] = []
    if "console" in suites:
        ran += run_console_suite(args)
    if "hyperv" in suites:
        ran += run_hyperv_suite(args)
    if "hyperv-changes" in suites:
        ran += run_hyperv_changes_suite(args)
    if "vsphere" in suites:
        ran += run_vsphere_suite(args)
    if "vmtable" in suites:
        ran += run_vm_table_suite(args)
    if "team" in suites:
        __import__("bench.team").team.run_team_suite(args)
    return ran


def _report(args: argparse.Namespace, ran: list[Suite], failed: list[str]) -> int:
    """The one table (every suite and size), regressions, and the baseline if asked."""
    baseline = load_baseline(args.baseline)
    regressions: list[Regression] = []
    for title, rows, results, suffix in ran:
        load = f"load average {results.get('loadavg_start')} → {results.get('loadavg_end')}"
        regressions += print_rows(f"{title} ({load})", rows, results, baseline, suffix)
    print_regressions(regressions)
    for why in failed:
        print(f"!! NOT MEASURED: {why}")
    if args.write_baseline and ran:
        for _, rows, results, suffix in ran:
            path = write_baseline(results, rows, args.write_baseline, args.baseline,
                                  suffix=suffix)
        print(f"baseline written: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
