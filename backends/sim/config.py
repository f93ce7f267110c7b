"""The simulated cluster's settings.

Owns ``SimConfig``: the seed (same seed and epoch, same run), the size of the
cluster, how lively it is (``rate``, or an exact ``events_per_s`` for
benchmarks), how fast simulated time passes for long operations (``speed``)
and the failure odds of actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How the built-in simulated Hyper-V failover cluster looks and behaves.

    - ``seed``: every random choice (inventory, churn and its timing, action
      outcomes) comes from it; the same seed and ``epoch`` give the same events.
    - ``vms``/``nodes``: cluster size. The first 74 VMs follow the source
      campaign; more VMs (scale tests) get generated names and extra LUNs.
    - ``rate``: multiplier of live churn; 0 is a static cluster.
    - ``speed``: simulated seconds per real second. The whole simulated clock
      runs at this pace, so a 40-minute merge takes 40 s at 60.
    - ``epoch``: the simulated "now" at start (default: the real now, UTC).
    - ``events_per_s``: replaces the normal churn with a steady stream of VM
      changes at this many events per real second (benchmarks).
    - ``merge_failure_rate``: odds that a merge hits a random Hyper-V error.
    - ``task_retention_s``: real seconds a finished task stays visible (None:
      finished tasks are never removed).
    - ``hostile_names``: rename a few VMs to strings with control sequences
      and markup (for UI safety tests).
    - ``rebuild_failures``: ``(step, vm name or id)`` pairs: that rebuild step
      fails on that VM (failure injection for tests; see sim/rebuild.py).
    """

    seed: int = 7
    vms: int = 74
    nodes: int = 4
    rate: float = 1.0
    speed: float = 60.0
    epoch: datetime | None = None
    read_only: bool = False
    cluster_name: str = "HVCLUSTER01"
    events_per_s: float | None = None
    merge_failure_rate: float = 0.04
    task_retention_s: float | None = 30.0
    hostile_names: bool = False
    rebuild_failures: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.vms < 0:
            raise ValueError("vms must be >= 0")
        if self.nodes < 1:
            raise ValueError("nodes must be >= 1")
        if self.rate < 0:
            raise ValueError("rate must be >= 0")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        if self.events_per_s is not None and self.events_per_s <= 0:
            raise ValueError("events_per_s must be > 0 (or None)")
        if not 0.0 <= self.merge_failure_rate <= 1.0:
            raise ValueError("merge_failure_rate must be within 0..1")
        if self.task_retention_s is not None and self.task_retention_s < 0:
            raise ValueError("task_retention_s must be >= 0")

    def start_time(self) -> datetime:
        """The epoch as an aware UTC datetime (naive epochs are taken as UTC)."""
        if self.epoch is None:
            return datetime.now(UTC)
        if self.epoch.tzinfo is None:
            return self.epoch.replace(tzinfo=UTC)
        return self.epoch.astimezone(UTC)
