"""``python -m bench`` runs each suite and size in a process of its own (bench/__main__.py)
and still prints one table and writes one baseline with every size's figures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_each_size_runs_in_its_own_process_and_one_baseline_has_them_all(
    tmp_path: Path,
) -> None:
    results = REPO / "bench" / "results"
    before = set(results.glob("vmtable-*.json")) if results.is_dir() else set()
    baseline = tmp_path / "baseline.json"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench", "vmtable", "--vm-table-vms", "200,300",
             "--baseline", str(baseline), "--write-baseline", "test run"],
            cwd=REPO, capture_output=True, text=True, timeout=580, check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        for path in set(results.glob("vmtable-*.json")) - before:  # this test's files only
            path.unlink()
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    pids = [int(pid) for pid in re.findall(r"== vmtable: process (\d+) ended \(0\)", out)]
    assert len(pids) == 2 and len(set(pids)) == 2 and os.getpid() not in pids
    # One table: both sizes, after both processes ended.
    last_child = out.rindex("ended (0)")
    assert out.index("VM table, 200 VMs (simulator)", last_child) > last_child
    assert out.index("VM table, 300 VMs (simulator)", last_child) > last_child
    figures = json.loads(baseline.read_text())["figures"]
    assert {"vt_sort_ms@200", "vt_sort_ms@300"} <= set(figures)
    assert json.loads(baseline.read_text())["note"] == "test run"
