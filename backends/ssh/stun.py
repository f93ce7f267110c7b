"""Stun times from a VM's ``vmware.log`` and the findings they raise.

ESXi (5.0 and later) writes one line per stun when a snapshot is created,
removed or consolidated::

    2017-01-04T21:30:19.662Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 1091706 us

ESXi 8 also writes ``CPT: vm was stunned for N us`` beside it (Broadcom KB
417644): such a line counts on its own only when no ``Checkpoint_Unstun``
line is within a second of it. Both spellings occur in the field
(``Checkpoint_Unstun`` and ``CheckpointUnstun``) and the separator may be
``| ``, `` | `` or, on newer builds, plain spaces. The duration is in
microseconds. Every other line, and any line that does not parse, is ignored.

A stun longer than the VM's budget becomes a ``LONG_STUN`` finding. The
budget of a VM in a database mirror is half its QoS timeout: a mirror with an
8 s timeout can fail over once a stun lasts a little more than ~4 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from ventana.state.model import Finding, Kind, Severity
from ventana.state.sanitize import clean

__all__ = [
    "DEFAULT_STUN_BUDGET_S",
    "LONG_STUN",
    "StunBudget",
    "StunEvent",
    "budget_for_mirror",
    "parse_stun_lines",
    "stun_findings",
]

LONG_STUN = "LONG_STUN"
DEFAULT_STUN_BUDGET_S = 2.0
"""Normal stun is a few hundred ms; two seconds is already noticeable."""

_LINE = re.compile(
    r"^\s*(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}:\d{2})(?:[.,](?P<frac>\d+))?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?"
    r"(?:\s*\||\s).*?(?:\b(?P<cp>Checkpoint_?Unstun):\s*vm stopped for"
    r"|\bCPT:\s*vm was stunned for)\s+(?P<us>\d+)\s*us\b"
)
# ESXi 8 also logs "CPT: vm was stunned for N us" beside Checkpoint_Unstun (Broadcom
# KB 417644): one stun, two lines. A CPT line within this much of a Checkpoint_Unstun
# line is the same stun.
_SAME_STUN = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class StunEvent:
    """One stun: when the VM was released (aware UTC) and how long it was stopped."""

    timestamp: datetime
    duration_us: int

    @property
    def duration_s(self) -> float:
        return self.duration_us / 1_000_000


def _timestamp(match: re.Match[str]) -> datetime | None:
    frac = (match["frac"] or "0")[:6].ljust(6, "0")
    try:
        naive = datetime.strptime(f"{match['date']} {match['time']}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    tz = match["tz"]
    offset = timedelta(0)
    if tz and tz != "Z":
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        if tz[0] == "-":
            offset = -offset
        if offset >= timedelta(hours=24):
            return None
    # ESXi logs in UTC; a line without a zone is taken as UTC.
    local = naive.replace(microsecond=int(frac), tzinfo=timezone(offset))
    return local.astimezone(UTC)


def parse_stun_lines(text: str) -> list[StunEvent]:
    """Every stun line of ``text`` (a whole ``vmware.log``), in file order."""
    found: list[tuple[StunEvent, bool]] = []  # (event, from a Checkpoint_Unstun line)
    for line in text.splitlines():
        if "nstun" not in line and "stunned" not in line:  # fast path
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        when = _timestamp(match)
        if when is None:
            continue
        found.append((StunEvent(when, int(match["us"])), match["cp"] is not None))
    checkpoints = [e.timestamp for e, cp in found if cp]
    return [e for e, cp in found
            if cp or not any(abs(e.timestamp - t) <= _SAME_STUN for t in checkpoints)]


def budget_for_mirror(qos_timeout_s: float) -> float:
    """The stun budget of a VM in a database mirror: half the mirror's QoS timeout."""
    if qos_timeout_s <= 0:
        raise ValueError(f"QoS timeout must be positive, got {qos_timeout_s!r}")
    return qos_timeout_s / 2


@dataclass(frozen=True, slots=True)
class StunBudget:
    """Per-VM stun budgets in seconds, with a default for every other VM."""

    default_s: float = DEFAULT_STUN_BUDGET_S
    per_vm: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in [("default", self.default_s), *self.per_vm.items()]:
            if value <= 0:
                raise ValueError(f"stun budget for {name!r} must be positive, got {value!r}")

    def budget_for(self, vm_id: str) -> float:
        return self.per_vm.get(vm_id, self.default_s)

    def with_mirror(self, vm_id: str, qos_timeout_s: float) -> StunBudget:
        """A copy in which ``vm_id`` gets the budget of a mirror with this QoS timeout."""
        return StunBudget(self.default_s, {**self.per_vm, vm_id: budget_for_mirror(qos_timeout_s)})


def stun_findings(
    vm_id: str, vm_name: str, events: Iterable[StunEvent], budget_s: float
) -> list[Finding]:
    """A ``LONG_STUN`` finding for every stun longer than ``budget_s``.

    Over the budget is a WARNING; over twice the budget (for a mirror: over
    the QoS timeout itself) is CRITICAL.
    """
    if budget_s <= 0:
        raise ValueError(f"stun budget must be positive, got {budget_s!r}")
    name = clean(vm_name)
    target = f"{Kind.VM.value}:{vm_id}"
    findings: list[Finding] = []
    for event in events:
        seconds = event.duration_s
        if seconds <= budget_s:
            continue
        severity = Severity.CRITICAL if seconds > 2 * budget_s else Severity.WARNING
        when = event.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        findings.append(
            Finding(
                f"stun:{vm_id}:{event.timestamp.isoformat()}",
                severity,
                target,
                LONG_STUN,
                f"{name} was stunned for {seconds:.3f} s ({event.duration_us} µs) at "
                f"{when} UTC, over its stun budget of {budget_s:g} s; the next snapshot "
                "operation may stun it as long.",
            )
        )
    return findings
