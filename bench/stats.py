"""Latency figures the bench's suites share: the median, p99 and max of a list of samples.

``latency_stats(values, "name")`` gives ``name_median_ms``, ``name_p99_ms`` and
``name_max_ms`` (milliseconds, one decimal; all None without a sample). The p99
is ``statistics.quantiles(..., method="inclusive")``: interpolated between the
two samples around it, so below about 100 samples it lies between the two
slowest and says little more than the max — report the sample count beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def latency_stats(values: Sequence[float], name: str) -> dict[str, float | None]:
    """Median, p99 and max of ``values`` (seconds), in ms under ``name``'s keys."""
    ordered = sorted(values)
    if not ordered:
        return {f"{name}_median_ms": None, f"{name}_p99_ms": None, f"{name}_max_ms": None}
    p99 = (statistics.quantiles(ordered, n=100, method="inclusive")[98]
           if len(ordered) >= 2 else ordered[0])
    return {f"{name}_median_ms": round(1000 * statistics.median(ordered), 1),
            f"{name}_p99_ms": round(1000 * p99, 1),
            f"{name}_max_ms": round(1000 * ordered[-1], 1)}
