"""Run every benchmark, print a table against the targets, write JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path

from .console import run_console, run_store
from .findings import run_findings

# (key, label, target, lower is better)
TARGETS = (
    ("populated_s", "start to fully populated screen (s)", 1.0, True),
    ("inventory_to_screen_s", "  of which: inventory in → on screen (s)", None, True),
    ("rss_mb_under_load", "RSS under load (MB)", 300.0, True),
    ("redraw_median_ms", "event → row redrawn, median (ms)", None, True),
    ("redraw_p99_ms", "event → row redrawn, p99 (ms)", 100.0, True),
    ("idle_cpu_pct", "CPU idle (%)", 5.0, True),
    ("load_cpu_pct", "CPU at the load rate (%)", None, True),
    ("load_events_per_s", "load: events/s sent", None, False),
    ("events_per_s", "store: events/s applied", None, False),
    ("findings_median_ms", "findings after one change, median (ms)", None, True),
    ("findings_p99_ms", "findings after one change, p99 (ms)", 20.0, True),
    ("findings_full_s", "findings: all computed once (s)", None, True),
)


def run_vsphere_suite(args: argparse.Namespace) -> None:
    """bench/vsphere.py: inventory readers and change → screen against one vcsim."""
    from . import vsphere

    if not vsphere.inventory_bench_path().is_file():
        print("\nvSphere benchmark skipped: vcsim / inventory-bench not built (make vcsim)")
        return
    results = asyncio.run(vsphere.run_vsphere(args.vsphere_vms, changes=args.vsphere_changes))
    vsphere.report(results)
    print(f"written: {vsphere.write(results, vars(args))}")


def run_hyperv_suite(args: argparse.Namespace) -> None:
    """bench/hyperv.py: 4 WinRM/PSRP endpoints x 2,500 VMs behind the real backend."""
    from .hyperv import suite

    results = suite(vms=args.hyperv_vms)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = out / f"hyperv-{stamp}.json"
    path.write_text(json.dumps({"when": stamp, "results": results}, indent=2) + "\n")
    print(f"written: {path}")


SUITES = ("console", "hyperv", "vsphere", "team")  # team: bench/team.py


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("suites", nargs="*", choices=[[], *SUITES], default=[],
                        metavar="SUITE", help=f"which to run: {', '.join(SUITES)} (default all)")
    parser.add_argument("--hyperv-vms", type=int, default=10_000)
    parser.add_argument("--vsphere-vms", type=int, default=1000)
    parser.add_argument("--vsphere-changes", type=int, default=20)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s under load")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the load phase")
    args = parser.parse_args()
    suites = set(args.suites or SUITES)
    if "console" in suites:
        run_console_suite(args)
    if "hyperv" in suites:
        run_hyperv_suite(args)
    if "vsphere" in suites:
        run_vsphere_suite(args)
    if "team" in suites:
        __import__("bench.team").team.run_team_suite(args)
    return 0


def run_console_suite(args: argparse.Namespace) -> None:
    results = asyncio.run(run_console(args.vms, args.rate, args.seconds))
    results.update({f"store_{k}" if k == "vms" else k: v
                    for k, v in run_store(args.vms).items()})
    results.update(run_findings(args.vms))
    print(f"\nVentana console benchmark — {args.vms:,} VMs, {args.rate:g} events/s, "
          f"{platform.python_version()}, {platform.machine()}")
    print(f"{'measure':<40} {'value':>10} {'target':>10}  ok")
    for key, label, target, lower in TARGETS:
        value = results.get(key)
        ok = ""
        if target is not None and value is not None:
            ok = "yes" if (value < target if lower else value > target) else "NO"
        shown = "-" if value is None else f"{value:,}"
        goal = "" if target is None else (f"< {target:g}" if lower else f"> {target:g}")
        print(f"{label:<40} {shown:>10} {goal:>10}  {ok}")
    print(f"redraw samples: {results['redraw_samples']}, max {results['redraw_max_ms']} ms; "
          f"inventory of {results['inventory_entities']:,} entities applied in "
          f"{results['inventory_apply_s']} s")
    print(f"findings: {results['findings_count']:,} over {results['findings_changes']:,} single "
          f"changes, max {results['findings_max_ms']} ms; store.apply with findings p99 "
          f"{results['findings_apply_p99_ms']} ms")

    from .report import print_report, run_report

    report = run_report()
    print_report(report)
    results.update(report)

    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = out / f"console-{stamp}.json"
    path.write_text(json.dumps({"when": stamp, "args": vars(args), "results": results},
                               indent=2) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
