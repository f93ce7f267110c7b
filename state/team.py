"""What an action claims from the shared log: its VM and its worst-case LUN space.

``claim_for(store, plan, backend, ttl)`` builds the ``Claim`` that
``ActionLog.begin`` turns into a lease (state/leases.py) in the intent row's
transaction. The runner calls it at one place (backends/actions.py, where
the intent row is written); everything else about team mode lives in
state/: the schema (schema.py), leases (leases.py), the live feed (live.py)
and moving a log over (logmigrate.py).

``shared_preflight(plan, store, log)`` shows the same decision before the
operator confirms: blocking findings ``VM_LEASED`` (another console holds the
VM, and who) and ``NO_SPACE_SHARED`` (other consoles' reservations on the LUN
break the 200 MB rule). The lease decision at the intent row stays the one
that counts (atomic; two consoles confirming at once). On a team's database the
leases are the latest reading (``ActionLog.recent_leases``: the console's watch
reads them in a worker every few seconds, and the runner reads them afresh in
a worker before it re-checks a confirmed plan), so planning never waits for the
database on the UI loop; a reading older than ``LEASES_STALE_S`` (or none yet)
adds the warning ``TEAM_VIEW_OLD``.

Space: a merge may need, on each LUN its chains end on, up to the chains'
differencing data (``merge_needed_by_lun``, the pre-flight's own figure);
other actions with a plan-level ``space_needed`` reserve it on the plan's
LUN. ``counted`` is what this console's own view already reserves for merges
running on those LUNs (the pre-flight subtracted it), so a merge another
console started, which a real cluster also shows here as a running task, is
not counted twice.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .actionlog import ActionLog, ActionLogError
from .derived import merge_needed_by_lun, merge_space
from .leases import DEFAULT_TTL_S, Claim, conflicts
from .model import Finding, Kind, Severity
from .plans import Plan
from .sanitize import clean
from .store import Store


def account_of(backend: Any) -> str:
    """The cluster account a backend acts as (``config.user``), or ''."""
    config = getattr(backend, "config", None)
    user = getattr(config, "user", "") if config is not None else ""
    return clean(user) if isinstance(user, str) else ""


def _merge_space(store: Store, vm_id: str) -> dict[str, int]:
    by_lun = merge_needed_by_lun(store, vm_id)
    if by_lun:
        return by_lun
    vm = store.vm(vm_id)
    if vm is None or not vm.lun_id:
        return {}
    return {vm.lun_id: merge_space(store, vm_id).needed}


def claim_for(store: Store, plan: Plan, backend: Any = None,
              ttl: float = DEFAULT_TTL_S) -> Claim:
    """The claim of a confirmed plan: its target's lease and its worst-case space."""
    kind, _, vm_id = plan.target.partition(":")
    space: dict[str, int] = {}
    if kind == Kind.VM.value and plan.action == "merge":
        space = _merge_space(store, vm_id)
    elif plan.lun_id and plan.space_needed:
        space = {plan.lun_id: int(plan.space_needed)}
    space = {lun: n for lun, n in space.items() if n > 0}
    free: dict[str, int] = {}
    names: dict[str, str] = {}
    for lun_id in space:
        lun = store.lun(lun_id)
        if lun is not None:
            free[lun_id] = lun.free_bytes
            names[lun_id] = lun.name
    counted: dict[str, int] = {}
    counted_targets: set[str] = set()
    for task in store.tasks():
        if task.kind != "merge" or task.state.finished:
            continue
        other_kind, _, other = task.target.partition(":")
        if other_kind != Kind.VM.value or other == vm_id or store.vm(other) is None:
            continue
        counted_targets.add(task.target)
        for lun_id, n in _merge_space(store, other).items():
            if lun_id in space:
                counted[lun_id] = counted.get(lun_id, 0) + n
    return Claim(ttl=ttl, cluster_account=account_of(backend), space=space, free=free,
                 counted=counted, counted_targets=frozenset(counted_targets), lun_names=names)


#: A team's lease reading older than this is said on the plan (``TEAM_VIEW_OLD``):
#: the console's watch reads them every ``core.console.LOG_CHECK_S`` (2 s).
LEASES_STALE_S = 10.0


def shared_preflight(plan: Plan, store: Store, log: ActionLog | None) -> Plan:
    """The plan with what other consoles hold added to its pre-flight (blocking).

    Unchanged when nobody else holds anything, on a log without leases, or when
    the log cannot be read (the intent row will refuse then: fail closed). Never
    waits for a team's database (see the module's docstring).
    """
    if log is None or not plan.target:
        return plan
    _, _, obj = plan.target.partition(":")
    extra: list[Finding] = []
    if log.shared:
        live, age = log.recent_leases()
        if age is None or age > LEASES_STALE_S:
            when = "has not been read yet" if age is None else f"was last read {age:.0f} s ago"
            extra.append(Finding(
                f"preflight:TEAM_VIEW_OLD:{obj}", Severity.WARNING, plan.target,
                "TEAM_VIEW_OLD", f"What other consoles hold {when} (the team's database "
                "is slow or out of reach): a VM or LUN space they hold may not show here. "
                "The lease check when the action is confirmed still decides."))
    else:
        try:
            live = log.leases()
        except ActionLogError:
            return plan
    found = conflicts(live, plan.target, plan.target_name, claim_for(store, plan),
                      mine=log.console) if live else []
    extra.extend(
        Finding(f"preflight:{code}:{obj}", Severity.BLOCKING, plan.target,
                "NO_SPACE_SHARED" if code == "NO_SPACE" else code, message)
        for code, message in found)
    if not extra:
        return plan
    findings = tuple(sorted((*plan.findings, *extra), key=lambda f: -f.severity.rank))
    return dataclasses.replace(plan, findings=findings)
