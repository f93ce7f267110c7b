"""Plans and pre-flight checks for vSphere snapshot actions.

Four actions, in vSphere's own words: remove one snapshot (optionally with
its children), remove all snapshots, consolidate disks, create a snapshot.
Each plan shows the equivalent govc and PowerCLI commands (quoted for a
POSIX shell and for PowerShell), the datastore's free space against what the
operation may need, and the pre-flight findings:

- STALE_DATA (blocking): the link is not live;
- VM_BUSY (blocking): another task runs on the VM (a second snapshot
  operation on the same VM fails or queues behind it on the host);
- BACKUP_IN_PROGRESS (blocking): a backup-created snapshot younger than the
  backup window (default 4 h) is affected — the backup job very likely still
  reads it;
- NO_SPACE (blocking) / LOW_SPACE (warning): the datastore's free space
  against the estimate (vCenter's ``EstimateStorageForConsolidateSnapshots``
  when the console could ask, else the snapshots' delta sizes);
- LONG_STUN (warning): the estimated stun (from the delta size) or the last
  stun seen on this VM is over the VM's stun budget;
- NOTHING_TO_REMOVE / NOTHING_TO_CONSOLIDATE (blocking);
- SNAPSHOT_UNSUPPORTED (blocking, create): vSphere's snapshot limitations
  the executor refuses too — a template, Fault Tolerance, a physical-mode
  RDM, SCSI bus sharing, DirectPath I/O on a running VM — read from the
  model (``VM.template`` ...), so the operator sees them before typing the
  name; the executor re-reads them on the server before sending;
- INDEPENDENT_DISKS (warning; blocking for a memory snapshot of a running
  VM, which vSphere refuses): independent disks and physical RDMs are not in
  any snapshot (create, remove-all): a snapshot-based backup skips them.

Planners are pure functions of the store and ``SETTINGS``; the server's
estimate reaches them through ``ESTIMATES`` (filled by the console, outside
the planner, before the plan is shown).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .derived import LUN_CRITICAL_PCT, chain_depth, human_age, human_bytes
from .model import (
    GB,
    VM,
    Checkpoint,
    CheckpointKind,
    IntegrationState,
    Kind,
    Platform,
    PowerState,
    Severity,
)
from .plans import Estimate, Plan, Preflight
from .store import Store

REMOVE_SNAPSHOT = "remove-snapshot"
REMOVE_ALL = "remove-all-snapshots"
CONSOLIDATE = "consolidate"
CREATE_SNAPSHOT = "create-snapshot"
VSPHERE_ACTIONS = (REMOVE_SNAPSHOT, REMOVE_ALL, CONSOLIDATE, CREATE_SNAPSHOT)

# Stun model: the final switch from the helper delta to the parent stops the
# VM; it grows with what the delta holds. Field numbers: a few hundred ms for
# small deltas, seconds for hundreds of GB on busy VMs.
_STUN_BASE_S = 0.2
_STUN_S_PER_GB = 0.02
# Consolidation throughput for the time estimate (a datastore under load).
_CONSOLIDATE_MB_S = 60.0


@dataclass
class VSphereSettings:
    """What the config can tune (``[vsphere]`` and ``[stun]`` tables)."""

    backup_window: timedelta = timedelta(hours=4)
    stun_budget_ms: float = 2000.0
    stun_budget_by_vm: dict[str, float] = field(default_factory=dict)  # VM name -> ms
    #: Guest hooks per VM name: {"pre_freeze": cmd, "post_thaw": cmd}.
    guest_hooks: dict[str, dict[str, str]] = field(default_factory=dict)

    def budget_ms(self, vm: VM) -> float:
        return float(self.stun_budget_by_vm.get(vm.name, self.stun_budget_ms))


SETTINGS = VSphereSettings()


@dataclass(frozen=True, slots=True)
class ServerEstimate:
    """vCenter's answer to EstimateStorageForConsolidateSnapshots_Task."""

    by_lun: dict[str, int]  # datastore id -> bytes required
    snapshots: frozenset[str]  # the snapshot ids it was computed for
    at: datetime


#: VM id -> the server's estimate; an estimate for another set of snapshots is ignored.
ESTIMATES: dict[str, ServerEstimate] = {}


def is_vsphere(store: Store, vm: VM) -> bool:
    cluster = store.get(Kind.CLUSTER, vm.cluster_id)
    return getattr(cluster, "platform", None) is Platform.VSPHERE


def sh_quote(value: str) -> str:
    """A POSIX shell single-quoted word (govc)."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted string (PowerCLI)."""
    return "'" + value.replace("'", "''") + "'"


def estimated_stun_s(delta_bytes: int) -> float:
    return _STUN_BASE_S + _STUN_S_PER_GB * delta_bytes / GB


def _subtree(checkpoints: list[Checkpoint], root_id: str) -> list[Checkpoint]:
    children: dict[str | None, list[Checkpoint]] = {}
    for cp in checkpoints:
        children.setdefault(cp.parent_id, []).append(cp)
    out: list[Checkpoint] = []
    stack = [c for c in checkpoints if c.id == root_id]
    while stack:
        cp = stack.pop()
        out.append(cp)
        stack.extend(children.get(cp.id, ()))
    return out


def _vm(store: Store, vm_id: str) -> VM:
    vm = store.vm(vm_id)
    if vm is None:
        raise KeyError(f"no VM {vm_id!r} in the current view")
    return vm


def _generic(store: Store, pre: Preflight) -> None:
    pre.check_live(store)
    running = store.running_tasks_for(pre.target)
    if running:
        task = running[0]
        pre.add(
            Severity.BLOCKING,
            "VM_BUSY",
            f"Another task is running on this VM: {task.kind} {task.pct:.0f}%"
            f"{' (' + task.message + ')' if task.message else ''}. vSphere runs one snapshot "
            "operation per VM at a time; wait for it to finish.",
        )


def _backup_in_use(pre: Preflight, affected: Iterable[Checkpoint], now: datetime) -> None:
    window = SETTINGS.backup_window
    young = [
        c for c in affected if c.kind is CheckpointKind.BACKUP and now - c.created < window
    ]
    if young:
        c = min(young, key=lambda c: now - c.created)
        pre.add(
            Severity.BLOCKING,
            "BACKUP_IN_PROGRESS",
            f"Snapshot {c.name!r} was created by backup software {human_age(now - c.created)} "
            f"ago (backup window {human_age(window)}): the backup job very likely still reads "
            "it. Removing it now breaks that backup; the backup product removes it when done.",
        )
    old = [c for c in affected if c.kind is CheckpointKind.BACKUP and c not in young]
    if old:
        pre.add(
            Severity.WARNING,
            "BACKUP_SNAPSHOT",
            f"{len(old)} snapshot(s) were created by backup software and left behind "
            f"(e.g. {old[0].name!r}); the next backup may run a full instead of an incremental.",
        )


def snapshot_limitations(vm: VM, *, memory: bool) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for a new snapshot of ``vm``, from its facts: vSphere's
    "Snapshot Limitations" — no snapshot of a template, of a fault-tolerant VM, of
    physical-mode RDMs, with SCSI bus sharing, with DirectPath I/O on a running VM;
    independent disks are left out, and a memory snapshot of a running VM with one
    is refused. A fact not reported (None) adds nothing. The create plan shows
    these from the model; the executor applies this same function to the facts it
    reads from the server just before sending (``Session.snapshot_limits``)."""
    running = vm.power is PowerState.RUNNING
    refuse: list[str] = []
    if vm.template:
        refuse.append("the VM is a template")
    if vm.fault_tolerance not in (None, "notConfigured"):
        refuse.append(f"Fault Tolerance is configured ({vm.fault_tolerance})")
    refuse += [f"{d} is a physical-mode RDM" for d in vm.physical_rdms or ()]
    refuse += [f"{c} shares its SCSI bus" for c in vm.shared_buses or ()]
    if running:
        refuse += [f"{d} is a DirectPath I/O device on a running VM"
                   for d in vm.passthrough_devices or ()]
    warn: list[str] = []
    independent = ", ".join(vm.independent_disks or ())
    if independent and memory and running:
        refuse.append(f"a memory snapshot of a running VM with independent disks ({independent})")
    elif independent:
        warn.append(f"independent disks are not in the snapshot: {independent}")
    return refuse, warn


def _snapshot_limits(pre: Preflight, vm: VM, *, create: bool, memory: bool = False) -> None:
    """The snapshot limitations known from the model as pre-flight findings."""
    if not create:
        skipped = [*(vm.independent_disks or ()),
                   *(f"{d} (physical RDM)" for d in vm.physical_rdms or ())]
        if skipped:
            pre.add(Severity.WARNING, "INDEPENDENT_DISKS",
                    "Not in any snapshot: " + ", ".join(skipped) + ". Removing snapshots does "
                    "not touch them, and a snapshot-based backup skipped them.")
        return
    refuse, warn = snapshot_limitations(vm, memory=memory)
    independent = [r for r in refuse if "independent disks" in r]
    refuse = [r for r in refuse if r not in independent]
    if refuse:
        pre.add(Severity.BLOCKING, "SNAPSHOT_UNSUPPORTED",
                "vSphere cannot snapshot this VM: " + "; ".join(refuse) + ".")
    if independent:
        pre.add(Severity.BLOCKING, "INDEPENDENT_DISKS",
                f"vSphere refuses {independent[0]}: take it without memory.")
    elif warn:
        pre.add(Severity.WARNING, "INDEPENDENT_DISKS",
                warn[0][:1].upper() + warn[0][1:] + ". A snapshot-based backup skips them.")


def _stun(pre: Preflight, vm: VM, delta_bytes: int) -> float | None:
    budget_ms = SETTINGS.budget_ms(vm)
    if vm.power is not PowerState.RUNNING:
        return None
    stun_s = estimated_stun_s(delta_bytes)
    if stun_s * 1000 > budget_ms:
        pre.add(
            Severity.WARNING,
            "LONG_STUN",
            f"Estimated stun {stun_s:.1f} s (from {human_bytes(delta_bytes)} of delta) is over "
            f"this VM's stun budget of {budget_ms / 1000:.1f} s: applications with a short "
            "timeout (a database mirror, a cluster heartbeat) may fail over.",
        )
    if vm.last_stun_ms is not None and vm.last_stun_ms > budget_ms:
        when = f" at {vm.stun_at:%Y-%m-%d %H:%M} UTC" if vm.stun_at else ""
        pre.add(
            Severity.WARNING,
            "LAST_STUN_LONG",
            f"The last stun seen on this VM{when} lasted {vm.last_stun_ms / 1000:.1f} s, over "
            f"its budget of {budget_ms / 1000:.1f} s; expect the next one to be as long.",
        )
    return stun_s


def _merge_bytes(c: Checkpoint) -> int:
    """What removing the snapshot consolidates or deletes (its ``merge_bytes``;
    ``size_bytes`` is the count the vSphere Client shows)."""
    return c.size_bytes if c.merge_bytes is None else c.merge_bytes


def _delta_luns(store: Store, vm: VM, snapshots: Iterable[Checkpoint]) -> dict[str, int]:
    """Bytes of the snapshots' delta files per datastore id, from their file paths
    (a delta lives where its path says — not necessarily on the VM's home)."""
    snapshots = list(snapshots)
    disks = store.disks_of(vm.id)
    by_path = {d.path: d.lun_id for d in disks if d.lun_id}
    out: dict[str, int] = {}
    if {c.id for c in snapshots} == {c.id for c in store.checkpoints_of(vm.id)}:
        # Every snapshot goes: every delta disk is merged, each into its parent on the
        # datastore its own path names (a VM's disks may live on several datastores;
        # a snapshot's ``disk_path`` names only its first disk's delta).
        for d in disks:
            if d.parent_path and d.lun_id:
                out[d.lun_id] = out.get(d.lun_id, 0) + d.size_bytes
        if sum(out.values()):
            return out
        out.clear()
    for c in snapshots:
        lun_id = by_path.get(c.disk_path) or vm.lun_id
        out[lun_id] = out.get(lun_id, 0) + _merge_bytes(c)
    return out


def _space(
    store: Store, pre: Preflight, vm: VM, delta_bytes: int, snapshots: Iterable[Checkpoint],
    *, use_server: bool,
) -> tuple[Any, int, str]:
    """(the tightest datastore, bytes needed there, basis) and the space findings.

    Every datastore holding delta files being merged is checked. The server's
    ``EstimateStorageForConsolidateSnapshots`` is the temporary space the
    consolidation needs, a lower bound for a running VM (docs/vim/
    VirtualMachine.rst): the larger of it and the delta bytes is used.
    """
    snapshots = list(snapshots)
    needs = _delta_luns(store, vm, snapshots) if snapshots else {vm.lun_id: delta_bytes}
    basis = "from the snapshots' delta files in layoutEx"
    server = ESTIMATES.get(vm.id)
    if use_server and server is not None and server.snapshots == frozenset(
        c.id for c in snapshots
    ):
        for lun_id, est in server.by_lun.items():
            needs[lun_id] = max(needs.get(lun_id, 0), est)
        basis = ("the larger of the delta files and vCenter's estimate "
                 f"(EstimateStorageForConsolidateSnapshots at {server.at:%H:%M:%S} UTC)")
    worst: tuple[Any, int] | None = None
    for lun_id, needed in sorted(needs.items()):
        lun = store.lun(lun_id) if lun_id else None
        if lun is None:
            pre.add(Severity.BLOCKING, "DATASTORE_UNKNOWN",
                    "The datastore holding this VM's files is not known."
                    if not lun_id else f"Datastore {lun_id} of the delta files is not known.")
            continue
        if needed > lun.free_bytes:
            pre.add(
                Severity.BLOCKING,
                "NO_SPACE",
                f"Datastore {lun.name} has {human_bytes(lun.free_bytes)} free; the operation "
                f"may need {human_bytes(needed)} there ({basis}). A full datastore stops every "
                "VM writing to it. Free space or move the VM first.",
            )
        elif (lun.total_bytes
              and 100.0 * (lun.free_bytes - needed) / lun.total_bytes < LUN_CRITICAL_PCT):
            pre.add(
                Severity.WARNING,
                "LOW_SPACE",
                f"At the worst point datastore {lun.name} would have "
                f"{human_bytes(lun.free_bytes - needed)} free (under {LUN_CRITICAL_PCT:g} %).",
            )
        if lun.state.value != "online":
            pre.add(Severity.BLOCKING, "DATASTORE_STATE",
                    f"Datastore {lun.name} is {lun.state.value}.")
        if worst is None or lun.free_bytes - needed < worst[0].free_bytes - worst[1]:
            worst = (lun, needed)
    if worst is None:
        return None, sum(needs.values()), basis
    return worst[0], worst[1], basis


def _estimate(delta_bytes: int, count: int) -> Estimate:
    likely = 30 + count * 20 + delta_bytes / (_CONSOLIDATE_MB_S * 1024**2)
    return Estimate(likely * 0.5, likely, likely * 4,
                    f"{count} snapshot(s), {human_bytes(delta_bytes)} of delta at "
                    f"~{_CONSOLIDATE_MB_S:g} MB/s")


def _facts(store: Store, vm: VM, snapshots: list[Checkpoint], **extra: Any) -> dict[str, Any]:
    node = store.node(vm.node_id)
    return {
        "platform": Platform.VSPHERE.value,
        "node": node.name if node else "",
        "power": vm.power.value,
        "checkpoints": len(store.checkpoints_of(vm.id)),
        "consolidation_needed": vm.consolidation_needed,
        "stun_budget_ms": SETTINGS.budget_ms(vm),
        "last_stun_ms": vm.last_stun_ms,
        "checkpoint_list": [
            {"name": c.name, "kind": c.kind.value, "created": c.created.isoformat(),
             "size": c.size_bytes}
            for c in sorted(snapshots, key=lambda c: (c.created, c.id))
        ],
        **extra,
    }


def _plan(
    action: str, store: Store, vm: VM, pre: Preflight, now: datetime, *, steps: tuple[str, ...],
    command: str, snapshots: list[Checkpoint], use_server: bool, params: dict[str, Any],
    **extra: Any,
) -> Plan:
    delta = sum(_merge_bytes(c) for c in snapshots)
    lun, needed, basis = _space(store, pre, vm, delta, snapshots, use_server=use_server)
    here = (_delta_luns(store, vm, snapshots).get(lun.id, 0) if snapshots else delta
            ) if lun else 0  # the delta bytes freed on that datastore
    stun_s = _stun(pre, vm, delta)
    size_before = sum(d.size_bytes for d in store.disks_of(vm.id))
    return Plan(
        action=action,
        target=pre.target,
        target_name=vm.name,
        steps=steps,
        findings=pre.sorted(),
        command=command,
        lun_id=lun.id if lun else "",
        lun_name=lun.name if lun else "",
        free_now=lun.free_bytes if lun else None,
        space_needed=needed,
        free_after_worst=(lun.free_bytes - needed + here) if lun else None,
        free_after_best=(lun.free_bytes + here) if lun else None,
        size_before=size_before,
        estimate=_estimate(delta, len(snapshots)),
        created=now,
        facts=_facts(store, vm, snapshots, space_basis=basis, delta_bytes=delta,
                     estimated_stun_s=round(stun_s, 2) if stun_s is not None else None,
                     **extra),
        params=params,
    )


def plan_remove_snapshot(
    store: Store, vm_id: str, now: datetime, *, snapshot: str = "", children: bool = False,
) -> Plan:
    """Remove one snapshot (its delta merges into its parent), optionally its subtree."""
    vm = _vm(store, vm_id)
    all_cps = store.checkpoints_of(vm_id)
    chosen = next((c for c in all_cps if c.id == snapshot), None)
    if chosen is None:
        raise KeyError(f"snapshot {snapshot!r} of {vm.name} is not in the current view")
    affected = _subtree(all_cps, chosen.id) if children else [chosen]
    pre = Preflight(vm.id)
    _generic(store, pre)
    _backup_in_use(pre, affected, now)
    kids = [c for c in all_cps if c.parent_id == chosen.id]
    what = f"snapshot {chosen.name!r}" + (f" and its {len(affected) - 1} descendant(s)"
                                          if children and len(affected) > 1 else "")
    steps = (
        f"Remove {what} of {vm.name} ({human_bytes(sum(_merge_bytes(c) for c in affected))} of "
        "delta)",
        "Its delta disk is consolidated into the parent disk; the VM keeps running and is "
        "stunned briefly at the end" if vm.power is PowerState.RUNNING
        else f"The VM is {vm.power.value}: the delta merges without a stun",
        (f"Its {len(kids)} child snapshot(s) stay and are re-parented"
         if kids and not children else "No other snapshot changes"),
    )
    # By moref, as PowerCLI's -Id below: govc resolves a snapshot by its moref as well as
    # by name or tree path (govmomi object.VirtualMachine.FindSnapshot); names need not
    # be unique, may hold "/" (a tree path to govc), and may be reported escaped.
    govc = (f"govc snapshot.remove{' -r' if children else ''} -vm {sh_quote(vm.name)} "
            f"{sh_quote(chosen.id)}")
    powercli = (f"Get-Snapshot -VM (Get-VM -Name {ps_quote(vm.name)}) -Id "
                f"{ps_quote('VirtualMachineSnapshot-' + chosen.id)} | Remove-Snapshot"
                f"{' -RemoveChildren' if children else ''} -Confirm:$false")
    return _plan(
        REMOVE_SNAPSHOT, store, vm, pre, now, steps=steps,
        command=f"govc: {govc}\nPowerCLI: {powercli}", snapshots=affected, use_server=False,
        params={"snapshot": chosen.id, "children": bool(children)},
        snapshot_name=chosen.name, snapshot_id=chosen.id, children=bool(children),
        toggles={"children": "Also remove its child snapshots"},
    )


def plan_remove_all(store: Store, vm_id: str, now: datetime) -> Plan:
    """Remove every snapshot of the VM (``RemoveAllSnapshots_Task``), then
    consolidate if the server still reports it needed."""
    vm = _vm(store, vm_id)
    cps = store.checkpoints_of(vm_id)
    pre = Preflight(vm.id)
    _generic(store, pre)
    if not cps:
        pre.add(Severity.BLOCKING, "NOTHING_TO_REMOVE", "The VM has no snapshots.")
    _backup_in_use(pre, cps, now)
    _snapshot_limits(pre, vm, create=False)
    steps = (
        f"Remove all {len(cps)} snapshot(s) of {vm.name} (tree depth {chain_depth(cps)}, "
        f"{human_bytes(sum(c.size_bytes for c in cps))} of delta)",
        "Every delta disk is consolidated into the base disks; "
        + ("the VM keeps running and is stunned briefly at the end"
           if vm.power is PowerState.RUNNING else f"the VM is {vm.power.value}: no stun"),
        "If the server still reports 'consolidation needed' afterwards, consolidate disks",
    )
    govc = f"govc snapshot.remove -vm {sh_quote(vm.name)} '*'"
    powercli = (f"Get-Snapshot -VM (Get-VM -Name {ps_quote(vm.name)}) | "
                "Remove-Snapshot -Confirm:$false")
    return _plan(
        REMOVE_ALL, store, vm, pre, now, steps=steps,
        command=f"govc: {govc}\nPowerCLI: {powercli}", snapshots=cps, use_server=True,
        params={},
    )


def plan_consolidate(store: Store, vm_id: str, now: datetime) -> Plan:
    """Consolidate the VM's disks (``ConsolidateVMDisks_Task``)."""
    vm = _vm(store, vm_id)
    cps = store.checkpoints_of(vm_id)
    pre = Preflight(vm.id)
    _generic(store, pre)
    if not vm.consolidation_needed:
        pre.add(Severity.BLOCKING, "NOTHING_TO_CONSOLIDATE",
                "vSphere does not report 'consolidation needed' for this VM.")
    young = [c for c in cps if c.kind is CheckpointKind.BACKUP
             and now - c.created < SETTINGS.backup_window]
    if young:
        pre.add(Severity.WARNING, "BACKUP_MAY_HOLD_DISK",
                f"A backup-created snapshot ({young[0].name!r}) is recent: a backup proxy may "
                "still hold a disk, and consolidation would fail until it lets go.")
    delta = sum(d.size_bytes for d in store.disks_of(vm_id) if d.parent_path)
    steps = (
        f"Consolidate the disks of {vm.name}: merge the redundant delta disks left by a "
        "snapshot removal into the base disks",
        "Snapshots in the snapshot manager are not touched",
    )
    govc = (f"govc object.method -name ConsolidateVMDisks_Task -enable=true "
            f"{sh_quote('vm/' + vm.name)}  # or the vSphere Client: Snapshots > Consolidate")
    powercli = f"(Get-VM -Name {ps_quote(vm.name)}).ExtensionData.ConsolidateVMDisks_Task()"
    plan = _plan(
        CONSOLIDATE, store, vm, pre, now, steps=steps,
        command=f"govc: {govc}\nPowerCLI: {powercli}", snapshots=cps, use_server=True,
        params={},
    )
    return plan if delta == 0 else _with_delta(plan, delta)


def _with_delta(plan: Plan, delta: int) -> Plan:
    from dataclasses import replace

    return replace(plan, facts={**plan.facts, "redundant_delta_bytes": delta})


def plan_create_snapshot(
    store: Store, vm_id: str, now: datetime, *, name: str = "", quiesce: bool = False,
    memory: bool = False,
) -> Plan:
    """Create a snapshot, optionally quiesced or with memory, with the VM's guest
    hooks (freeze before, thaw after) when the config names them."""
    vm = _vm(store, vm_id)
    cps = store.checkpoints_of(vm_id)
    pre = Preflight(vm.id)
    _generic(store, pre)
    name = name or f"ventana-{now:%Y%m%d-%H%M%S}"
    if quiesce and memory:
        pre.add(Severity.BLOCKING, "QUIESCE_AND_MEMORY",
                "vSphere cannot take a quiesced snapshot with memory; choose one.")
    if chain_depth(cps) >= 31:  # the limit is per chain (root to leaf), not per tree
        pre.add(Severity.BLOCKING, "TOO_MANY_SNAPSHOTS",
                "vSphere supports at most 32 snapshots in a chain; this VM's longest chain "
                f"has {chain_depth(cps)}.")
    elif len(cps) >= 3:
        pre.add(Severity.WARNING, "MANY_SNAPSHOTS",
                f"The VM already has {len(cps)} snapshots; every one slows its disk I/O.")
    _snapshot_limits(pre, vm, create=True, memory=memory)
    if quiesce and vm.tools_version_status is not None and (
            vm.tools_version_status == "guestToolsNotInstalled"
            or (vm.power is PowerState.RUNNING and vm.integration is IntegrationState.OFF)):
        pre.add(Severity.WARNING, "QUIESCE_NEEDS_TOOLS",
                "A quiesced snapshot needs VMware Tools running in the guest; they are not "
                "(the snapshot fails, or is taken without quiescing).")
    hooks = SETTINGS.guest_hooks.get(vm.name, {})
    steps = [f"Create snapshot {name!r} of {vm.name}"
             + (" (quiesced through VMware Tools)" if quiesce else "")
             + (" with the VM's memory" if memory else "")]
    if hooks.get("pre_freeze"):
        steps.insert(0, f"Guest pre-freeze over SSH: {hooks['pre_freeze']}")
    if hooks.get("post_thaw"):
        steps.append(f"Guest post-thaw over SSH (runs even if the snapshot fails): "
                     f"{hooks['post_thaw']}")
    govc = (f"govc snapshot.create -vm {sh_quote(vm.name)} -m={str(memory).lower()} "
            f"-q={str(quiesce).lower()} {sh_quote(name)}")
    powercli = (f"New-Snapshot -VM (Get-VM -Name {ps_quote(vm.name)}) -Name {ps_quote(name)}"
                f"{' -Quiesce' if quiesce else ''}{' -Memory' if memory else ''}")
    if memory:
        pre.add(Severity.INFO, "MEMORY_STUN",
                f"A memory snapshot stuns the VM while its {vm.memory_mb / 1024:g} GB of memory "
                "are written: seconds, not the usual fraction of a second.")
    delta_now = sum(c.size_bytes for c in cps)
    plan = _plan(
        CREATE_SNAPSHOT, store, vm, pre, now, steps=tuple(steps),
        command=f"govc: {govc}\nPowerCLI: {powercli}", snapshots=[], use_server=False,
        params={"name": name, "quiesce": bool(quiesce), "memory": bool(memory)},
        snapshot_name=name, quiesce=bool(quiesce), memory=bool(memory),
        pre_freeze=hooks.get("pre_freeze", ""), post_thaw=hooks.get("post_thaw", ""),
        existing_delta_bytes=delta_now,
        toggles={"quiesce": "Quiesce the guest (VMware Tools)",
                 "memory": "Include the VM's memory"},
    )
    from dataclasses import replace

    return replace(
        plan, destructive=False, space_needed=None,
        estimate=Estimate(5, 15, 120, "a snapshot takes seconds; quiesce adds the guest's "
                          "flush, memory the time to write it"),
        facts={**plan.facts, "space_basis": "the new delta grows with the VM's writes until "
               "the snapshot is removed"},
    )


def configure(sections: dict[str, Any]) -> VSphereSettings:
    """Apply the config's ``[stun]``, ``[vsphere]`` and ``[guest]`` tables to SETTINGS."""
    stun = sections.get("stun") or {}
    vsphere = sections.get("vsphere") or {}
    guests = sections.get("guest") or {}
    if "budget_ms" in stun:
        SETTINGS.stun_budget_ms = _positive(stun["budget_ms"], "[stun] budget_ms")
    for name, ms in (stun.get("vm") or {}).items():
        SETTINGS.stun_budget_by_vm[str(name)] = _positive(ms, f"[stun.vm] {name!r}")
    if "backup_window_h" in vsphere:
        hours = _positive(vsphere["backup_window_h"], "[vsphere] backup_window_h")
        SETTINGS.backup_window = timedelta(hours=hours)
    for name, table in guests.items():
        if not isinstance(table, dict):
            raise ValueError(f"[guest.{name!r}] must be a table")
        hooks = {k: str(table[k]) for k in ("pre_freeze", "post_thaw") if table.get(k)}
        if hooks:
            SETTINGS.guest_hooks[str(name)] = hooks
    return SETTINGS


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{what} must be a positive number, not {value!r}")
    return float(value)
