"""Merge durations learned from this cluster's own past merges.

Owns the learned estimate. The source campaign saw merges from 40 min to
13 h 30 min, "not proportional to size": a generic formula is a guess, the
cluster's own history is evidence. The model stays simple and robust:

- a sample is a merge that finished **ok** on the same target system, read
  from the action log: its duration (in the source's time: a simulator's
  faster clock is undone with the ``clock_rate`` the runner logs) and the
  checkpoint count and differencing-disk bytes its plan recorded;
- merges of similar chains (checkpoint count within half of this one's) are
  used when there are enough of them, else all of the cluster's merges;
- each sample gives a *ratio*: its real duration over what the size/chain
  heuristic (``plans.merge_units``) predicted for it. The ratio calibrates
  the heuristic to this cluster's storage, whatever the mix of chain length
  and size; the median ratio is robust to one pathological merge;
- the range is the spread of the ratios (10th to 90th percentile, the extremes
  while there are fewer than 10 samples), and the uncertainty shown is the
  larger side of that range in per cent of the likely value;
- with fewer than ``MIN_SAMPLES`` samples the heuristic stands, and says so.

``LearnedEstimator`` reads the log once per new row (it caches on the
newest row id), so re-planning a queue every second costs one tiny query.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Any

from .actionlog import ActionLog, ActionLogError
from .derived import human_bytes
from .plans import Estimate, Plan, heuristic_merge_estimate, merge_units

MIN_SAMPLES = 3
MAX_SAMPLES = 200  # the most recent ones: storage and load change over a campaign


@dataclass(frozen=True, slots=True)
class MergeSample:
    seconds: float  # in the source's time
    checkpoints: int
    chain_bytes: int

    @property
    def ratio(self) -> float:
        """Actual duration over the heuristic's prediction for this merge."""
        return self.seconds / (60.0 * merge_units(self.checkpoints, self.chain_bytes))


def sample_from_row(plan: dict[str, Any], duration_s: float | None) -> MergeSample | None:
    """A sample from one finished row's plan JSON, or None if it lacks the facts."""
    if duration_s is None or duration_s <= 0:
        return None
    facts = plan.get("facts") or {}
    try:
        checkpoints = int(facts["checkpoints"])
        chain = int(facts.get("chain_bytes") or 0)
        rate = float(plan.get("clock_rate") or 1.0)
    except (KeyError, TypeError, ValueError):
        return None
    if checkpoints <= 0 or rate <= 0:
        return None
    return MergeSample(duration_s * rate, checkpoints, chain)


def _quantile(ordered: list[float], q: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def learned_estimate(
    samples: list[MergeSample], checkpoints: int, chain_bytes: int,
    *, min_samples: int = MIN_SAMPLES,
) -> Estimate:
    """The estimate for a merge of ``checkpoints`` / ``chain_bytes``.

    From the samples when there are at least ``min_samples``, else the
    heuristic (its basis says why).
    """
    fallback = heuristic_merge_estimate(checkpoints, chain_bytes)
    if len(samples) < min_samples:
        why = ("no past merges on this cluster yet" if not samples else
               f"only {len(samples)} past merge(s) on this cluster, {min_samples} needed")
        return dataclasses.replace(fallback, basis=f"heuristic, {why}: {fallback.basis}")
    # Prefer merges of similar chains (checkpoint count within half of this
    # one's): chain length is what drove merge time in the source campaign.
    similar = [s for s in samples
               if abs(s.checkpoints - checkpoints) <= max(1, checkpoints // 2)]
    which = "past merges"
    if len(similar) >= min_samples:
        lo, hi = min(s.checkpoints for s in similar), max(s.checkpoints for s in similar)
        span = f"{lo}" if lo == hi else f"{lo}–{hi}"
        which = f"similar past merges ({span} checkpoints)"
        samples = similar
    ratios = sorted(s.ratio for s in samples)
    median = statistics.median(ratios)
    if len(ratios) >= 10:
        low_r, high_r = _quantile(ratios, 0.1), _quantile(ratios, 0.9)
    else:
        low_r, high_r = ratios[0], ratios[-1]
    base = 60.0 * merge_units(checkpoints, chain_bytes)
    likely = base * median
    low, high = min(base * low_r, likely), max(base * high_r, likely)
    pct = round(100.0 * max(high - likely, likely - low) / likely) if likely else 0
    return Estimate(
        low_s=low,
        likely_s=likely,
        high_s=high,
        basis=f"from {len(samples)} {which} on this cluster, ±{pct} % "
        f"({checkpoints} checkpoints, {human_bytes(chain_bytes)} of differencing disks)",
    )


class LearnedEstimator:
    """Learned merge estimates for one target system, from one action log."""

    def __init__(self, log: ActionLog, target_system: str, *,
                 min_samples: int = MIN_SAMPLES) -> None:
        self.log = log
        self.target_system = target_system
        self.min_samples = min_samples
        self._seen = -1
        self._samples: list[MergeSample] = []

    def samples(self) -> list[MergeSample]:
        """This cluster's finished-ok merges (cached until a new row is written). On a
        team's database, the latest ``refresh`` (the console's watch runs it in a worker):
        planning never waits for the database."""
        if self.log.shared:
            return self._samples
        return self.refresh()

    def refresh(self) -> list[MergeSample]:
        """Read the samples again if a row was written since (blocking: a worker's job on a
        team's database)."""
        try:
            newest = self.log.newest_id()
            if newest != self._seen:
                found = []
                for row in self.log.finished_ok("merge", self.target_system, MAX_SAMPLES):
                    try:
                        plan = row.plan_data()
                    except (TypeError, ValueError):
                        continue
                    if not isinstance(plan, dict):
                        continue
                    sample = sample_from_row(plan, row.duration_s)
                    if sample is not None:
                        found.append(sample)
                self._samples, self._seen = found, newest
        except ActionLogError:
            return []  # the log is unreadable: the heuristic stands (and says so)
        return self._samples

    def refine(self, plan: Plan) -> Plan:
        """The plan with its merge estimate from this cluster's history."""
        if plan.action != "merge" or plan.estimate is None:
            return plan
        checkpoints = int(plan.facts.get("checkpoints") or 0)
        if checkpoints <= 0:
            return plan
        estimate = learned_estimate(self.samples(), checkpoints,
                                    int(plan.facts.get("chain_bytes") or 0),
                                    min_samples=self.min_samples)
        return dataclasses.replace(plan, estimate=estimate)
