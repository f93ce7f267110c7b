"""The bench's rows: one stable JSON key per figure, its target, met or not, and the baseline.

Every suite (console, vSphere, Hyper-V) declares its figures as ``Row``s and
prints them with ``print_rows``: the key (what the JSON under bench/results
and bench/baseline.json call it — never renamed, so runs compare over time),
what it measures, the value, the target, whether it is met, the committed
baseline's value and the change against it. A row more than 20 % worse than
the baseline (and worse by more than its ``noise``, the run-to-run spread
of small figures) is printed again, loudly, at the end of the run.

``python -m bench --write-baseline`` replaces the baseline's figures for the
suites that ran; commit bench/baseline.json with a note of the load the
machine was under.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASELINE = Path(__file__).with_name("baseline.json")
WORSE = 1.20  # a row this much worse than its baseline is a regression


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    target: float | None = None
    lower: bool = True  # lower is better
    noise: float = 0.0  # an absolute change this small is never a regression

    def met(self, value: float | None) -> bool | None:
        if self.target is None or value is None:
            return None
        return value < self.target if self.lower else value > self.target

    def goal(self) -> str:
        if self.target is None:
            return ""
        return f"{'<' if self.lower else '>'} {self.target:g}"

    def worse_by(self, value: float | None, base: float | None) -> float | None:
        """How much worse than the baseline, as a ratio (1.3 = 30 % worse); None if unknown."""
        if value is None or base is None or abs(value - base) <= self.noise:
            return None
        if self.lower:
            return value / base if base > 0 else (None if value <= 0 else float("inf"))
        return base / value if value > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class Regression:
    row: Row
    value: float
    base: float
    ratio: float

    def __str__(self) -> str:
        return (f"!!! REGRESSION {self.row.key}: {self.value:,} vs baseline {self.base:,} "
                f"({100 * (self.ratio - 1):.0f} % worse) — {self.row.label.strip()}")


def load_baseline(path: Path = BASELINE) -> dict[str, float]:
    """The committed figures by key ({} when there is no baseline yet)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    figures = data.get("figures", {}) if isinstance(data, dict) else {}
    return {k: v for k, v in figures.items() if isinstance(v, int | float)}


def write_baseline(figures: Mapping[str, Any], rows: Iterable[Row], note: str,
                   path: Path = BASELINE, suffix: str = "") -> Path:
    """Merge this run's row figures into the baseline (other suites' figures are kept).

    ``suffix`` (e.g. ``@5000``) keeps a figure measured at another size apart.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    keep = dict(data.get("figures", {}))
    for row in rows:
        value = figures.get(row.key)
        if isinstance(value, int | float):
            keep[row.key + suffix] = value
    data = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "note": note,
            "figures": dict(sorted(keep.items()))}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_rows(title: str, rows: Iterable[Row], results: Mapping[str, Any],
               baseline: Mapping[str, float], suffix: str = "") -> list[Regression]:
    """Print one suite's table; return its regressions against the baseline.

    ``suffix`` names the baseline figures of another size (``write_baseline``).
    """
    print(f"\n{title}")
    print(f"{'key':<34} {'measure':<50} {'value':>9} {'target':>9} {'met':>7} "
          f"{'baseline':>9} {'change':>7}")
    regressions: list[Regression] = []
    for row in rows:
        value = results.get(row.key)
        ok = row.met(value)
        met = "" if ok is None else ("met" if ok else "NOT MET")
        base = baseline.get(row.key + suffix)
        change = ""
        if isinstance(value, int | float) and base is not None and base != 0:
            change = f"{100 * (value - base) / abs(base):+.0f}%"
        ratio = row.worse_by(value, base) if isinstance(value, int | float) else None
        flag = ""
        if ratio is not None and ratio > WORSE:
            regressions.append(Regression(row, value, base, ratio))  # type: ignore[arg-type]
            flag = "  <<< WORSE"
        print(f"{row.key:<34} {row.label:<50} {_shown(value):>9} {row.goal():>9} {met:>7} "
              f"{_shown(base):>9} {change:>7}{flag}")
    return regressions


def print_regressions(regressions: list[Regression]) -> None:
    if not regressions:
        print("\nNo row is more than 20 % worse than bench/baseline.json.")
        return
    bar = "!" * 78
    print(f"\n{bar}\n{len(regressions)} ROW(S) MORE THAN 20 % WORSE THAN bench/baseline.json")
    for regression in regressions:
        print(regression)
    print(bar)
