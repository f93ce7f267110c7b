"""Plans for the campaign's clean-up actions: compact a VHDX, delete a VM.

Both are offline and act on files: the plan lists every file, its size and
what the volume gains, and the PowerShell an operator would run by hand.

- **compact** (``Optimize-VHD -Mode Full``) returns to the volume the blocks
  the guest no longer uses. How much is known only after it runs: the plan
  shows 0 (worst) to ``COMPACT_MAY_FREE_PCT`` % of the dynamic files (best).
  It needs the VM off and no checkpoints (compacting the parent of a
  differencing chain breaks the chain); fixed-size disks cannot shrink.
- **delete** removes the VM's cluster role and configuration
  (``Remove-ClusterGroup``, ``Remove-VM``) and then its disk files, which
  Hyper-V itself leaves behind. It is refused while the VM is not off, while
  it replicates (the replica partner still points at it) or while a task runs
  on it, and needs a second explicit confirmation after the typed name
  (``Plan.double_confirm``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from .derived import human_bytes
from .model import VM, DiskFormat, Finding, Kind, PowerState, ReplicationState, Severity
from .plans import Estimate, Plan, Preflight, _quote_ps
from .store import Store, ref

COMPACT_MAY_FREE_PCT = 25
_COMPACT_S_PER_GB = 20.0  # Optimize-VHD reads the whole file
_DELETE_S = 60.0

_Add = Callable[[Severity, str, str], None]


def _vm_common(store: Store, vm_id: str) -> tuple[VM, list[Finding], _Add]:
    vm = store.vm(vm_id)
    if vm is None:
        raise KeyError(f"no VM {vm_id!r} in the current view")
    pre = Preflight(vm_id)
    findings, add, target = pre.findings, pre.add, pre.target
    pre.check_live(store, vm.node_id)  # only the VM's own node counts
    tasks = store.running_tasks_for(target)
    if tasks:
        add(Severity.BLOCKING, "VM_BUSY", f"A task is running on this VM: {tasks[0].kind}.")
    return vm, findings, add


def plan_compact(store: Store, vm_id: str, now: datetime) -> Plan:
    """Plan Optimize-VHD -Mode Full on each dynamic base disk of a VM (VM off)."""
    vm, findings, add = _vm_common(store, vm_id)
    disks = store.disks_of(vm_id)
    base = sorted((d for d in disks if not d.parent_path), key=lambda d: d.path)
    compactable = [d for d in base if d.format in (DiskFormat.VHDX, DiskFormat.VHD)
                   and d.size_bytes < d.max_bytes]
    if vm.power is not PowerState.OFF:
        add(Severity.BLOCKING, "VM_NOT_OFF",
            f"The VM is {vm.power.value}; Optimize-VHD -Mode Full needs its disks "
            "detached: shut the VM down inside the window first.")
    checkpoints = store.checkpoints_of(vm_id)
    if checkpoints:
        add(Severity.BLOCKING, "HAS_CHECKPOINTS",
            f"The VM has {len(checkpoints)} checkpoint(s): its base disks are parents of "
            "differencing disks and must not be compacted. Merge the checkpoints first.")
    if not compactable:
        add(Severity.BLOCKING, "NOTHING_TO_COMPACT",
            "No dynamic disk that could shrink (fixed-size or already at full size).")
    lun = store.lun(vm.lun_id) if vm.lun_id else None
    if lun is None:
        add(Severity.WARNING, "LUN_UNKNOWN", "The volume under this VM's disks is not known.")
    total = sum(d.size_bytes for d in compactable)
    may_free = total * COMPACT_MAY_FREE_PCT // 100
    node = store.node(vm.node_id)
    seconds = max(60.0, _COMPACT_S_PER_GB * total / 1024**3)
    commands = [f"Optimize-VHD -Path {_quote_ps(d.path)} -Mode Full" for d in compactable]
    return Plan(
        action="compact",
        target=ref(Kind.VM, vm_id),
        target_name=vm.name,
        steps=(
            f"Compact {len(compactable)} dynamic disk(s), {human_bytes(total)} on "
            f"{lun.name if lun else '?'}",
            "Optimize-VHD -Mode Full returns the blocks the guest no longer uses; the VM "
            "stays off throughout",
            f"It may free 0 – {human_bytes(may_free)} (up to {COMPACT_MAY_FREE_PCT} % of the "
            "files); the real figure is known only when it ends",
        ),
        findings=tuple(sorted(findings, key=lambda f: -f.severity.rank)),
        command="; ".join(commands) or "Optimize-VHD (no compactable disk)",
        lun_id=lun.id if lun else "",
        lun_name=lun.name if lun else "",
        free_now=lun.free_bytes if lun else None,
        space_needed=0,
        free_after_worst=lun.free_bytes if lun else None,
        free_after_best=(lun.free_bytes + may_free) if lun else None,
        size_before=sum(d.size_bytes for d in base),
        estimate=Estimate(seconds * 0.5, seconds, seconds * 3,
                          f"Optimize-VHD reads the whole file: ~{_COMPACT_S_PER_GB:g} s/GB"),
        destructive=False,
        created=now,
        facts={
            "node": node.name if node else "",
            "power": vm.power.value,
            "generation": vm.generation,
            "config_version": vm.config_version,
            "replication": vm.replication.value,
            "disks": [{"path": d.path, "size": d.size_bytes, "max": d.max_bytes}
                      for d in compactable],
            "may_free": may_free,
        },
    )


def plan_delete(store: Store, vm_id: str, now: datetime) -> Plan:
    """Plan removing an obsolete VM and every one of its disk files."""
    vm, findings, add = _vm_common(store, vm_id)
    if vm.power is not PowerState.OFF:
        add(Severity.BLOCKING, "VM_NOT_OFF",
            f"The VM is {vm.power.value}. Only a VM that is off can be deleted: shut it "
            "down and make sure nobody still needs it.")
    if vm.replication is not ReplicationState.DISABLED:
        add(Severity.BLOCKING, "REPLICATING",
            f"The VM replicates to {vm.replica_target or 'a replica site'} "
            f"({vm.replication.value}); remove replication on both sides first.")
    disks = sorted(store.disks_of(vm_id), key=lambda d: (d.parent_path is not None, d.path))
    checkpoints = store.checkpoints_of(vm_id)
    if checkpoints:
        add(Severity.WARNING, "HAS_CHECKPOINTS",
            f"The VM still has {len(checkpoints)} checkpoint(s); their .avhdx files are "
            "deleted with it.")
    if not disks:
        add(Severity.WARNING, "NO_DISKS", "No disk file of this VM is known; only its "
            "configuration would be removed.")
    by_lun: dict[str, int] = {}
    for d in disks:
        by_lun[d.lun_id] = by_lun.get(d.lun_id, 0) + d.size_bytes
    total = sum(by_lun.values())
    lun = store.lun(vm.lun_id) if vm.lun_id else None
    freed_here = by_lun.get(lun.id, 0) if lun else 0
    node = store.node(vm.node_id)
    name = _quote_ps(vm.name)
    where = f"-ComputerName {_quote_ps(node.name)} " if node else ""
    files = ", ".join(_quote_ps(d.path) for d in disks)
    command = f"Remove-ClusterGroup -Name {name} -RemoveResources -Force; " \
              f"Remove-VM {where}-Name {name} -Force"
    if files:
        command += f"; Remove-Item -LiteralPath {files}"
    others = {k: v for k, v in by_lun.items() if lun is None or k != lun.id}
    steps = [
        "Remove the VM's cluster role and its configuration (Remove-ClusterGroup, Remove-VM)",
        f"Delete {len(disks)} disk file(s), {human_bytes(total)} "
        "(Remove-VM leaves them; this cannot be undone)",
    ]
    for lun_id, size in others.items():
        other = store.lun(lun_id)
        steps.append(f"{human_bytes(size)} of them are on {other.name if other else lun_id}")
    return Plan(
        action="delete",
        target=ref(Kind.VM, vm_id),
        target_name=vm.name,
        steps=tuple(steps),
        findings=tuple(sorted(findings, key=lambda f: -f.severity.rank)),
        command=command,
        lun_id=lun.id if lun else "",
        lun_name=lun.name if lun else "",
        free_now=lun.free_bytes if lun else None,
        space_needed=0,
        free_after_worst=(lun.free_bytes + freed_here) if lun else None,
        free_after_best=(lun.free_bytes + freed_here) if lun else None,
        size_before=total,
        estimate=Estimate(_DELETE_S * 0.5, _DELETE_S, _DELETE_S * 5, "removing files: minutes"),
        irreversible=True,
        created=now,
        double_confirm=True,
        facts={
            "node": node.name if node else "",
            "power": vm.power.value,
            "generation": vm.generation,
            "config_version": vm.config_version,
            "replication": vm.replication.value,
            "checkpoints": len(checkpoints),
            "files": [{"path": d.path, "size": d.size_bytes, "lun": d.lun_id,
                       "kind": d.format.value} for d in disks],
            "freed_bytes": total,
        },
    )
