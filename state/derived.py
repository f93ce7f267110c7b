"""Derived facts operators need at a glance, computed from the store.

Checkpoint chain depth, age of the oldest checkpoint, total size of the
differencing disks per VM, whether a VM's disk chain is broken, the free
space a merge of the chain needs and the free space expected afterwards, and
% free per LUN with its threshold level.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .model import MB, Checkpoint, CheckpointKind, Kind, Lun, Severity, VirtualDisk
from .store import Store

# Hyper-V pauses VMs (Paused-Critical) when the volume under their disks falls
# below about 200 MB free; a merge must never take a CSV below this.
PAUSE_CRITICAL_MARGIN = 200 * MB
LUN_WARN_PCT = 10.0
LUN_CRITICAL_PCT = 5.0
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?")


def chain_depth(checkpoints: list[Checkpoint]) -> int:
    """Length of the longest root-to-leaf path in a VM's checkpoint tree."""
    by_id = {c.id: c for c in checkpoints}
    depth_cache: dict[str, int] = {}

    def depth(c: Checkpoint) -> int:
        if c.id in depth_cache:
            return depth_cache[c.id]
        seen: list[Checkpoint] = []
        node: Checkpoint | None = c
        while node is not None and node.id not in depth_cache and node not in seen:
            seen.append(node)
            node = by_id.get(node.parent_id) if node.parent_id else None
        base = depth_cache.get(node.id, 0) if node is not None else 0
        for i, item in enumerate(reversed(seen), start=1):
            depth_cache[item.id] = base + i
        return depth_cache[c.id]

    return max((depth(c) for c in checkpoints), default=0)


def oldest_checkpoint_age(checkpoints: list[Checkpoint], now: datetime) -> timedelta | None:
    if not checkpoints:
        return None
    return now - min(c.created for c in checkpoints)


def differencing_bytes(checkpoints: list[Checkpoint]) -> int:
    return sum(c.size_bytes for c in checkpoints)


def vm_differencing_bytes(store: Store, vm_id: str) -> int:
    """Bytes in a VM's differencing disks (.avhdx / delta .vmdk: disks with a parent).

    The live disk sizes are the truth; a backend that reports no differencing
    disks falls back to the checkpoints' own sizes. Every pane and plan uses
    this one figure so they agree.
    """
    diffs = [d.size_bytes for d in store.disks_of(vm_id) if d.parent_path]
    return sum(diffs) if diffs else differencing_bytes(store.checkpoints_of(vm_id))


def path_key(path: str) -> str:
    """A disk path as Windows compares it (case-insensitive)."""
    return path.casefold()


def _file_name(path: str) -> str:
    return path.replace("/", "\\").rpartition("\\")[2] or path


#: What backup software says of a VM with a broken chain (the campaign's words).
INVALID_CHAINS = "does not have valid vhd chains"


def broken_chain(
    disks: Iterable[VirtualDisk],
    checkpoints: Iterable[Checkpoint],
    known: Callable[[str], bool],
) -> list[str]:
    """Why a VM's disk chain is broken, one phrase per fault (empty: not broken).

    A differencing disk is broken when the parent it names is neither one of
    the VM's disks nor any other known disk (``known(path_key(path))``: a
    parent shared with another VM counts); a checkpoint is broken when the
    file it refers to is not a known disk — checked only when the VM reports
    differencing disks at all (a source that lists checkpoints but not their
    files has not said the files are missing: unknown is not bad). Backups
    then fail with "does not have valid vhd chains" and so does a merge. The
    findings rule and the merge pre-flight both use this.
    """
    disks = list(disks)
    own = {path_key(d.path) for d in disks}
    out: list[str] = []
    diffs = False
    for d in disks:
        if not d.parent_path:
            continue
        diffs = True
        key = path_key(d.parent_path)
        if key not in own and not known(key):
            out.append(f"{_file_name(d.path)} names its parent {d.parent_path}, "
                       "which is not there")
    for c in checkpoints if diffs else ():
        if c.disk_path:
            key = path_key(c.disk_path)
            if key not in own and not known(key):
                out.append(f"checkpoint '{c.name}' refers to {c.disk_path}, "
                           "which is not among the VM's disks")
    return out


def store_paths(store: Store) -> Callable[[str], bool]:
    """``known`` for ``broken_chain`` over every disk in the store, built on first use."""
    paths: set[str] | None = None

    def known(key: str) -> bool:
        nonlocal paths
        if paths is None:
            paths = {path_key(d.path) for d in store.all(Kind.DISK)}  # type: ignore[union-attr]
        return key in paths

    return known


def has_backup_checkpoint(checkpoints: list[Checkpoint]) -> bool:
    return any(c.kind is CheckpointKind.BACKUP for c in checkpoints)


@dataclass(frozen=True, slots=True)
class MergeSpace:
    """Space figures for merging every checkpoint of a VM into its base disks."""

    chain_bytes: int  # sum of differencing disks being merged
    parent_headroom: int  # how much the base disks may still grow (max - size)
    needed: int  # worst-case peak extra space during the merge
    freed_best: int  # free space gained if the parents do not grow at all
    freed_worst: int  # free space gained if the parents grow by all they can


def merge_space(store: Store, vm_id: str) -> MergeSpace:
    chain = vm_differencing_bytes(store, vm_id)
    base_disks = [d for d in store.disks_of(vm_id) if d.parent_path is None]
    headroom = sum(max(0, d.max_bytes - d.size_bytes) for d in base_disks)
    # Merged blocks land in the parent: in the worst case every block of the
    # chain is new to the parent, bounded by how far the parent can grow.
    needed = min(chain, headroom) if base_disks else chain
    return MergeSpace(
        chain_bytes=chain,
        parent_headroom=headroom,
        needed=needed,
        freed_best=chain,
        freed_worst=chain - needed,
    )


def merge_needed_by_lun(store: Store, vm_id: str) -> dict[str, int]:
    """Worst-case extra space a merge needs on each LUN the VM's disks use.

    A VM's disks can sit on several CSVs; the merged blocks land in each
    chain's base disk, so each LUN needs up to the differencing data of the
    chains that end there (bounded by how far its base disks can grow).
    """
    chain: dict[str, int] = {}
    headroom: dict[str, int] = {}
    for disk in store.disks_of(vm_id):
        if disk.parent_path:
            chain[disk.lun_id] = chain.get(disk.lun_id, 0) + disk.size_bytes
        else:
            headroom[disk.lun_id] = headroom.get(disk.lun_id, 0) + max(
                0, disk.max_bytes - disk.size_bytes
            )
    return {
        lun_id: min(size, headroom[lun_id]) if lun_id in headroom else size
        for lun_id, size in chain.items()
        if lun_id
    }


def pct_free(lun: Lun) -> float:
    if lun.total_bytes <= 0:
        return 0.0
    return 100.0 * lun.free_bytes / lun.total_bytes


def lun_level(
    lun: Lun, warn_pct: float = LUN_WARN_PCT, critical_pct: float = LUN_CRITICAL_PCT
) -> Severity:
    pct = pct_free(lun)
    if pct < critical_pct or lun.free_bytes < PAUSE_CRITICAL_MARGIN:
        return Severity.CRITICAL
    if pct < warn_pct:
        return Severity.WARNING
    return Severity.INFO


def version_key(version: str) -> tuple[int, int]:
    """``"9.0"`` → (9, 0); ``"vmx-19"`` → (19, 0); no number → (-1, -1)."""
    found = _VERSION.search(version or "")
    if found is None:
        return (-1, -1)
    return (int(found.group(1)), int(found.group(2) or 0))


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "?"
    sign = "-" if n < 0 else ""
    n = abs(float(n))
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            if unit == "B":
                return f"{sign}{int(n)} B"
            return f"{sign}{n:.1f} {unit}" if n < 100 else f"{sign}{n:.0f} {unit}"
        n /= 1024
    return f"{sign}{n:.1f} PB"


def human_age(delta: timedelta | None) -> str:
    if delta is None:
        return "-"
    s = int(delta.total_seconds())
    if s < 0:
        return "future"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400 * 2:
        return f"{s // 3600}h"
    if s < 86400 * 365:
        return f"{s // 86400}d"
    years, rest = divmod(s, 86400 * 365)
    return f"{years}y{rest // 86400}d"


def human_duration(seconds: float | None) -> str:
    """``12.3 s``, ``4 min 05 s``, ``12 h 16 min``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
