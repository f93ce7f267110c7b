"""Plans and pre-flight checks for guarded actions.

A plan says what an action will do to which object, the space it needs and
frees, how long it may take and the equivalent command an operator could run
by hand; pre-flight findings say why it may be unwise or unsafe. Both are
computed from the live store, shown on the confirmation screen and written to
the action log. Blocking findings refuse the action unless overridden.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .derived import (
    INVALID_CHAINS,
    LUN_CRITICAL_PCT,
    PAUSE_CRITICAL_MARGIN,
    broken_chain,
    chain_depth,
    human_bytes,
    merge_needed_by_lun,
    merge_space,
    oldest_checkpoint_age,
    store_paths,
    version_key,
)
from .model import (
    CheckpointKind,
    Finding,
    Kind,
    LunState,
    Platform,
    PowerState,
    ReplicationState,
    Severity,
    TaskState,
)
from .store import Store, ref
from .vsphere_names import typed_matches

# The source campaign measured merges from 40 min to 13 h 30 min; time
# followed the chain (number and history of checkpoints), not disk size.
_MERGE_BASE_MIN = 30.0
_MERGE_PER_CHECKPOINT_MIN = 35.0
_MERGE_PER_GB_MIN = 0.6


def _quote_ps(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class Estimate:
    low_s: float
    likely_s: float
    high_s: float
    basis: str

    def text(self) -> str:
        return f"{_hm(self.likely_s)} (range {_hm(self.low_s)} – {_hm(self.high_s)}; {self.basis})"


def _hm(seconds: float) -> str:
    minutes = round(seconds / 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


@dataclass(frozen=True, slots=True)
class Plan:
    action: str
    target: str  # ref string, e.g. "vm:abc"
    target_name: str  # what the operator must type to confirm
    steps: tuple[str, ...]
    findings: tuple[Finding, ...]
    command: str  # the equivalent command an operator could run by hand
    lun_id: str = ""
    lun_name: str = ""
    free_now: int | None = None
    space_needed: int | None = None
    free_after_worst: int | None = None
    free_after_best: int | None = None
    size_before: int | None = None
    estimate: Estimate | None = None
    irreversible: bool = False
    destructive: bool = True
    created: datetime | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    #: What the operator chose beyond the VM (e.g. a snapshot id): the runner
    #: plans again with the same params at confirmation.
    params: dict[str, Any] = field(default_factory=dict)
    #: Needs a second, explicit confirmation after the typed name (deleting a VM).
    double_confirm: bool = False

    def confirmed_by(self, typed: str) -> bool:
        """Whether a typed confirmation names this plan's target: exactly as
        shown, or (on vSphere only) in the escaped form vCenter reports
        (``vsphere_names.typed_matches``). Nothing looser."""
        if self.facts.get("platform") == Platform.VSPHERE.value:
            return typed_matches(typed, self.target_name)
        return typed == self.target_name

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.BLOCKING)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is not Severity.BLOCKING)

    def to_log(self) -> dict[str, Any]:
        """The plan as written to the action log (no findings: logged apart)."""
        data = {
            "action": self.action,
            "target": self.target,
            "target_name": self.target_name,
            "steps": list(self.steps),
            "command": self.command,
            "lun": self.lun_name,
            "free_now": self.free_now,
            "space_needed": self.space_needed,
            "free_after_worst": self.free_after_worst,
            "free_after_best": self.free_after_best,
            "size_before": self.size_before,
            "irreversible": self.irreversible,
            "facts": self.facts,
        }
        if self.params:
            data["params"] = self.params
        if self.estimate:
            data["estimate"] = asdict(self.estimate)
        return data


def merge_units(checkpoints: int, chain_bytes: int) -> float:
    """The size/chain-based merge time in minutes (the fallback estimate's model)."""
    return (_MERGE_BASE_MIN + _MERGE_PER_CHECKPOINT_MIN * checkpoints
            + _MERGE_PER_GB_MIN * chain_bytes / 1024**3)


def heuristic_merge_estimate(checkpoints: int, chain_bytes: int) -> Estimate:
    """The estimate when this cluster has no merge history to learn from."""
    likely = 60 * merge_units(checkpoints, chain_bytes)
    return Estimate(
        low_s=likely * 0.4,
        likely_s=likely,
        high_s=likely * 3.0,
        basis=f"{checkpoints} checkpoints, {human_bytes(chain_bytes)} of "
        "differencing disks; merge time follows the chain more than the size",
    )


def findings_to_log(findings: tuple[Finding, ...]) -> list[dict[str, str]]:
    return [
        {"severity": f.severity.value, "code": f.code, "target": f.target, "message": f.message}
        for f in findings
    ]



class Preflight:
    """The pre-flight findings of one plan on one VM, as they are collected."""

    def __init__(self, vm_id: str) -> None:
        self.vm_id = vm_id
        self.target = ref(Kind.VM, vm_id)
        self.findings: list[Finding] = []

    def add(self, severity: Severity, code: str, message: str) -> None:
        self.findings.append(
            Finding(f"preflight:{code}:{self.vm_id}", severity, self.target, code, message)
        )

    def check_live(self, store: Store, node_id: str | None = None) -> None:
        """STALE_DATA (blocking) when the link is not live: every plan starts with it.
        With ``node_id``: only that node's link counts (a healthy node's VMs proceed
        while another node is down); without, the VM's own target's link (in a
        composite, a vCenter's VM proceeds while a Hyper-V node next to it is down)."""
        view = store.staleness()
        who = view.who(node_id or "", self.vm_id)
        if who is not None:
            what = "The connection is not live"
            kind, name = who
            if kind == "node" and view.partial:  # the others are fine: say which one
                what = f"The link to node {name} is not live (other nodes are)"
            elif kind == "target":
                what = f"The link to {name} is not live (other targets are)"
            why = store.link_reason_of(node_id or "", self.vm_id)
            self.add(
                Severity.BLOCKING,
                "STALE_DATA",
                f"{what}; these figures may be out of date. Wait for the link to recover. "
                f"({why})",
            )

    def sorted(self) -> tuple[Finding, ...]:
        return tuple(sorted(self.findings, key=lambda f: -f.severity.rank))


def chain_broken_message(store: Store, vm_id: str) -> str | None:
    """The CHAIN_BROKEN pre-flight text for a VM whose disk chain is broken, else None.

    Every plan that merges a chain (merge, rebuild) blocks on it: the host
    fails such a merge, and backups already fail on the VM.
    """
    broken = broken_chain(store.disks_of(vm_id), store.checkpoints_of(vm_id), store_paths(store))
    if not broken:
        return None
    more = f" (and {len(broken) - 2} more)" if len(broken) > 2 else ""
    return ("The disk chain is broken: " + "; ".join(broken[:2]) + more + ". Backups fail "
            f"with 'Virtual machine {INVALID_CHAINS}' and the merge fails the same way on "
            "the host. Repair the chain by hand first (Set-VHD -Path <child> -ParentPath "
            "<parent>, then Test-VHD), and plan again.")


def plan_merge(store: Store, vm_id: str, now: datetime) -> Plan:
    """Plan merging every checkpoint of a VM into its base disks."""
    vm = store.vm(vm_id)
    if vm is None:
        raise KeyError(f"no VM {vm_id!r} in the current view")
    target = ref(Kind.VM, vm_id)
    checkpoints = store.checkpoints_of(vm_id)
    lun = store.lun(vm.lun_id) if vm.lun_id else None
    space = merge_space(store, vm_id)
    depth = chain_depth(checkpoints)
    pre = Preflight(vm_id)
    findings, add = pre.findings, pre.add

    reserved = _reserved_by_running_merges(store, vm.lun_id, vm_id)
    pre.check_live(store, vm.node_id)
    if not checkpoints:
        add(Severity.BLOCKING, "NOTHING_TO_MERGE", "The VM has no checkpoints to merge.")
    broken = chain_broken_message(store, vm_id)
    if broken:
        add(Severity.BLOCKING, "CHAIN_BROKEN", broken)
    if lun is None:
        add(Severity.BLOCKING, "LUN_UNKNOWN", "The volume under this VM's disks is not known.")
    else:
        free_after_peak = lun.free_bytes - reserved - space.needed
        if free_after_peak < PAUSE_CRITICAL_MARGIN:
            also = (f" ({human_bytes(reserved)} is already reserved by merges running on it)"
                    if reserved else "")
            add(
                Severity.BLOCKING,
                "NO_SPACE",
                f"{lun.name} has {human_bytes(lun.free_bytes)} free{also}; the merge may need "
                f"{human_bytes(space.needed)} and must leave at least "
                f"{human_bytes(PAUSE_CRITICAL_MARGIN)} or Hyper-V pauses every VM on the "
                "volume (Paused-Critical). Free space on the CSV or move the VM first.",
            )
        elif lun.total_bytes and 100.0 * free_after_peak / lun.total_bytes < LUN_CRITICAL_PCT:
            add(
                Severity.WARNING,
                "LOW_SPACE_DURING_MERGE",
                f"At the worst point of the merge {lun.name} would have "
                f"{human_bytes(free_after_peak)} free (under {LUN_CRITICAL_PCT:g} %). Every VM "
                "on the volume keeps writing during a merge that may take hours.",
            )
        for other_id, other_needed in merge_needed_by_lun(store, vm_id).items():
            other = store.lun(other_id)
            if other_id == lun.id or other is None:
                continue
            other_reserved = _reserved_by_running_merges(store, other_id, vm_id)
            if other.free_bytes - other_reserved - other_needed < PAUSE_CRITICAL_MARGIN:
                add(
                    Severity.BLOCKING,
                    "NO_SPACE",
                    f"Some of this VM's disks are on {other.name}, which has "
                    f"{human_bytes(other.free_bytes)} free; merging them may need "
                    f"{human_bytes(other_needed)} there and must leave "
                    f"{human_bytes(PAUSE_CRITICAL_MARGIN)}.",
                )
        if lun.state is not LunState.ONLINE:
            add(
                Severity.BLOCKING if lun.state is not LunState.REDIRECTED else Severity.WARNING,
                "LUN_STATE",
                f"{lun.name} is {lun.state.value}.",
            )
        if lun.in_backup:
            add(
                Severity.WARNING,
                "CSV_IN_BACKUP",
                f"{lun.name} is in a backup (redirected I/O); the merge will be slow "
                "and may fail. Prefer waiting for the backup to end.",
            )
    if vm.replication is not ReplicationState.DISABLED:
        add(
            Severity.BLOCKING,
            "REPLICATING",
            f"The VM replicates to {vm.replica_target or 'a replica site'} "
            f"({vm.replication.value}). Merging a replicating VM broke its replication "
            "identity in the source campaign. Merge only to the last parent, then rebuild "
            "the VM and keep the old one as a fallback.",
        )
    backup_tasks = [
        t
        for t in store.running_tasks_for(target)
        if t.kind == "backup" and t.state in (TaskState.RUNNING, TaskState.QUEUED)
    ]
    other_tasks = [t for t in store.running_tasks_for(target) if t not in backup_tasks]
    if backup_tasks:
        add(
            Severity.BLOCKING,
            "BACKUP_RUNNING",
            f"A backup job is running on this VM ({backup_tasks[0].pct:.0f}%). "
            "Its checkpoint and disk files are in use; wait for it to finish.",
        )
    if other_tasks:
        add(
            Severity.BLOCKING,
            "VM_BUSY",
            f"Another task is running on this VM: {other_tasks[0].kind} "
            f"{other_tasks[0].pct:.0f}%.",
        )
    backup_cps = [c for c in checkpoints if c.kind is CheckpointKind.BACKUP]
    if backup_cps:
        add(
            Severity.WARNING,
            "BACKUP_CHECKPOINT",
            f"{len(backup_cps)} checkpoint(s) were created by backup software "
            f"(e.g. {backup_cps[0].name!r}). Confirm no backup job still owns them; "
            "the next backup may run a full instead of an incremental.",
        )
    if vm.power is PowerState.PAUSED_CRITICAL:
        add(
            Severity.WARNING,
            "PAUSED_CRITICAL",
            "The VM is Paused-Critical (its volume ran out of space). "
            "Free space before resuming or merging.",
        )
    for known in store.all(Kind.FINDING):
        assert isinstance(known, Finding)
        if known.target in (target, ref(Kind.LUN, vm.lun_id)) and known.severity.rank >= 2:
            # A backend-reported blocking finding (e.g. a Hyper-V Replica checkpoint) blocks.
            add(Severity.BLOCKING if known.severity is Severity.BLOCKING else Severity.WARNING,
                f"REPORTED_{known.code}", f"Reported by the cluster: {known.message}")
    node = store.node(vm.node_id)
    if node is not None and node.state.value in ("draining", "down"):
        add(Severity.WARNING, "NODE_STATE", f"The VM's node {node.name} is {node.state.value}.")
    if depth > 3:
        add(
            Severity.INFO,
            "DEEP_CHAIN",
            f"Chain depth {depth}: long chains merge slowly (hours), whatever their size.",
        )

    estimate = heuristic_merge_estimate(len(checkpoints), space.chain_bytes)
    oldest = oldest_checkpoint_age(checkpoints, now)
    disks = store.disks_of(vm_id)
    size_before = sum(d.size_bytes for d in disks)
    online = vm.power in (PowerState.RUNNING, PowerState.PAUSED, PowerState.PAUSED_CRITICAL)
    steps = (
        f"Merge {len(checkpoints)} checkpoint(s), chain depth {depth}, "
        f"{human_bytes(space.chain_bytes)} of differencing disks",
        "The differencing disks (.avhdx) merge down the chain into the base disk, oldest "
        "first; each file is deleted once merged",
        f"Base disks stay on {lun.name if lun else '?'}; "
        + ("the VM keeps running during this online merge" if online
           else f"the VM is {vm.power.value}: an offline merge, usually faster"),
    )
    node_name = node.name if node else ""
    return Plan(
        action="merge",
        target=target,
        target_name=vm.name,
        steps=steps,
        findings=tuple(sorted(findings, key=lambda f: -f.severity.rank)),
        # Exactly what the Hyper-V backend sends (commands.remove_all_snapshots), run on
        # the VM's node: by the VM's id (names need not be unique).
        command=f"Get-VM -Id {_quote_ps(vm.id)} | Remove-VMSnapshot -Name '*'",
        lun_id=lun.id if lun else "",
        lun_name=lun.name if lun else "",
        free_now=lun.free_bytes if lun else None,
        space_needed=space.needed,
        free_after_worst=(lun.free_bytes + space.freed_worst) if lun else None,
        free_after_best=(lun.free_bytes + space.freed_best) if lun else None,
        size_before=size_before,
        estimate=estimate,
        created=now,
        facts={
            "checkpoints": len(checkpoints),
            "chain_depth": depth,
            "oldest_checkpoint_days": round(oldest / timedelta(days=1), 1) if oldest else None,
            "chain_bytes": space.chain_bytes,
            "node": node_name,
            "power": vm.power.value,
            "generation": vm.generation,
            "config_version": vm.config_version,
            "replication": vm.replication.value,
            "reserved_by_running_merges": reserved,
            "checkpoint_list": [
                {"name": c.name, "kind": c.kind.value, "created": c.created.isoformat(),
                 "size": c.size_bytes}
                for c in sorted(checkpoints, key=lambda c: (c.created, c.id))
            ],
        },
    )


def _reserved_by_running_merges(store: Store, lun_id: str, except_vm: str) -> int:
    """Worst-case space still needed by merges already running on the same LUN."""
    total = 0
    for task in store.tasks():
        if task.kind != "merge" or task.state.finished:
            continue
        kind, _, other = task.target.partition(":")
        vm = store.vm(other) if kind == Kind.VM.value else None
        if vm is None or vm.id == except_vm:
            continue
        by_lun = merge_needed_by_lun(store, vm.id)
        if by_lun:
            total += by_lun.get(lun_id, 0)
        elif vm.lun_id == lun_id:
            total += merge_space(store, vm.id).needed
    return total


def cluster_max_version(store: Store, cluster_id: str) -> str:
    """The highest configuration version already running on the cluster: its
    hosts support it, so it is the safe target for an upgrade."""
    versions = [v.config_version for v in store.vms() if v.cluster_id == cluster_id]
    return max(versions, key=version_key, default="")


def plan_upgrade(store: Store, vm_id: str, now: datetime) -> Plan:
    """Plan an irreversible configuration-version upgrade (Update-VMVersion)."""
    vm = store.vm(vm_id)
    if vm is None:
        raise KeyError(f"no VM {vm_id!r} in the current view")
    target = ref(Kind.VM, vm_id)
    node = store.node(vm.node_id)
    # Update-VMVersion has no target parameter: it raises the VM to its host's default
    # version (Get-VMHostSupportedVersion -Default, read per node). Only when that was not
    # read: the highest version already running on the cluster, said so (a warning).
    host_default = node.default_config_version if node is not None else ""
    to_version = host_default or cluster_max_version(store, vm.cluster_id)
    basis = (f"the default of host {node.name}" if host_default and node is not None else
             "assumed: the highest version running on this cluster")
    pre = Preflight(vm_id)
    findings, add = pre.findings, pre.add
    pre.check_live(store, vm.node_id)
    if not host_default:
        add(Severity.WARNING, "TARGET_VERSION_ASSUMED",
            f"The default configuration version of host {vm.node_id or '?'} was not read "
            f"(Get-VMHostSupportedVersion -Default). Update-VMVersion raises the VM to that "
            f"default, which may differ from {to_version or '?'}, the highest version "
            "running on this cluster; the version reached is read back afterwards.")
    if version_key(vm.config_version) >= version_key(to_version):
        add(Severity.BLOCKING, "ALREADY_CURRENT",
            f"The VM is already at version {vm.config_version or '?'}, which is not below "
            f"{to_version or '?'} ({basis}).")
    if vm.power is not PowerState.OFF:
        add(Severity.BLOCKING, "VM_NOT_OFF",
            f"The VM is {vm.power.value}; Update-VMVersion needs it shut down (not saved). "
            "Shut it down inside the window first.")
    saved = [c for c in store.checkpoints_of(vm_id) if c.kind is CheckpointKind.STANDARD]
    if saved:
        add(Severity.BLOCKING, "SAVED_STATE_CHECKPOINT",
            f"{len(saved)} standard checkpoint(s) (e.g. {saved[0].name!r}) may hold the "
            "VM's saved state, which Update-VMVersion refuses. Merge the checkpoints first.")
    if store.running_tasks_for(target):
        task = store.running_tasks_for(target)[0]
        add(Severity.BLOCKING, "VM_BUSY", f"A task is running on this VM: {task.kind}.")
    if vm.replication is not ReplicationState.DISABLED:
        add(Severity.WARNING, "REPLICA_VERSION",
            f"The VM replicates to {vm.replica_target or 'a replica site'}: the replica "
            f"host must run version {to_version} too, or replication stops.")
    add(Severity.INFO, "IRREVERSIBLE",
        f"Version {to_version} cannot be downgraded: the VM will no longer start on hosts "
        "that do not support it, and older backups of its configuration cannot be restored "
        "as-is.")
    return Plan(
        action="upgrade",
        target=target,
        target_name=vm.name,
        steps=(
            f"Raise the configuration version from {vm.config_version or '?'} to {to_version} "
            f"({basis}; Update-VMVersion has no target parameter)",
            "The VM stays off; nothing else about it changes",
            "This cannot be undone",
        ),
        findings=tuple(sorted(findings, key=lambda f: -f.severity.rank)),
        # Exactly what the Hyper-V backend sends (commands.update_vm_version).
        command=f"Get-VM -Id {_quote_ps(vm.id)} | Update-VMVersion -Force",
        irreversible=True,
        created=now,
        facts={
            "node": node.name if node else "",
            "power": vm.power.value,
            "generation": vm.generation,
            "config_version": vm.config_version,
            "target_version": to_version,
            "target_basis": "host default" if host_default else "cluster maximum",
            "replication": vm.replication.value,
        },
    )


#: A planner: ``planner(store, vm_id, now, **params) -> Plan``. Raises KeyError
#: when the target is not in the inventory.
Planner = Callable[..., Plan]
