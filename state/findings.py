"""Findings: what is wrong with the cluster right now, computed live.

The engine subscribes to the store and keeps one set of findings per target
(``vm:ID``, ``lun:ID``, ``node:ID``). Each store delta marks only the targets
it touches as dirty and recomputes their rules:

- a VM change → that VM's rules;
- a checkpoint or disk change → its VM's rules (and, when a merge is running
  on that VM, the rules of the LUNs its disks are on);
- a LUN change → that LUN's rules;
- a task change → its VM's rules (a running backup job excuses its own
  checkpoint) and, for merges, the LUNs the merging VM's disks are on;
- a node change → that node's rules;
- a finding a backend raised (``FindingRaised``) → carried through as is.

Rules that depend on the passing of time (checkpoint age) schedule the moment
their outcome changes; ``tick()`` recomputes only the VMs whose moment came.

A rule never raises a finding from a fact the backend did not report
(``None``/``()``/``unknown`` in the model): unknown is not bad.

Decisions an operator should know (thresholds are in ``[findings]`` of the
config file, see ``FindingsConfig``):

- *Differencing disks larger than X % of the parent*: per base disk, the sum
  of the .avhdx/delta files chained on it against the base disk's file size;
  default 50 %. At that point merging rewrites at least half the parent in
  place (the merge takes about as long as copying the disk and the CSV must
  hold that much more), and the checkpoint no longer is a cheap rollback.
  Comparing each differencing file with its immediate parent would flag
  every small child of a small .avhdx.
- *2 TB backup policy*: the used size (every disk file of the VM, what a full
  backup reads) over the limit is a warning; when only the provisioned size
  (the base disks' maximum) is over, it is info — the VM can grow past the
  policy without anyone touching it.
- *Backup checkpoints left behind*: a backup-created checkpoint with no
  backup task running on the VM, older than ``backup_leftover_after``.
- *Not eligible for online backup*: integration services off, no VSS in the
  guest, dynamic disks in the guest (warning); merely not running (info —
  it is backed up offline). On Hyper-V also (the conditions of the "Child VM
  Snapshot" method, MicrosoftDocs win32 ``HyperV_v2/backing-up-and-restoring-
  virtual-machines.md``): the Backup (volume shadow copy) integration service
  disabled or not answering, a guest KVP does not report as Windows, and
  pass-through disks (invisible to the host: guest-level backup only). The
  message names the conditions checked and those the host cannot see (dynamic
  disks, non-NTFS volumes); a read that failed is ``BACKUP_NOT_CHECKED`` (info).
- *Backup agent*: missing/stopped (critical), older than the floor (warning:
  ``backup_agent_min_version``, else the floor of the product found —
  ``AGENT_FLOORS`` — else 12.0), start mode not Auto (warning), its ports not
  listening (warning); a fact the node could not answer is
  ``BACKUP_AGENT_NOT_CHECKED`` (info, with the reason), never guessed.
- *Disks a snapshot-based backup skips* (``SNAPSHOT_SKIPS_DISKS``, warning):
  independent disks and physical-mode RDMs are not in a VM snapshot, so an
  image backup taken through one silently leaves them out.
- *VMware Tools* (``TOOLS_NOT_READY``): a quiesced (application-consistent)
  snapshot needs Tools running in the guest — not running on a running VM or
  not installed is a warning; a version vSphere does not call current is info.
- *Changed-block tracking off* (``CBT_OFF``, info) on a VM a backup policy
  covers (``backup_policy_vms``, name patterns, default every VM): each
  incremental backup then reads the whole disk.
- *Files spread across SMB shares*: a VM with a file on an SMB share
  (``\\\\server\\share``) whose files are in more than one location. A location more
  than ``smb_max_depth`` folders under its share is ``SMB_PATH_DEEP``; junctions and
  links under a share the backend could not look at are ``SMB_LINKS_NOT_CHECKED``
  (info, with the reason: on Hyper-V "needs delegation").
- *Broken chain*: ``derived.broken_chain``, the rule the merge pre-flight
  blocks on too, so the finding and the plan never disagree.
- *Remedies* follow the VM's platform (its cluster's, as in
  ``plans_vsphere.is_vsphere``): Hyper-V's merge/upgrade, vSphere's
  remove-all-snapshots/consolidate. A pending merge with no checkpoint left
  has none: no guarded action fixes it; its message says what to do by hand.
"""

from __future__ import annotations

import contextlib
import fnmatch
import heapq
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .derived import (
    INVALID_CHAINS,
    PAUSE_CRITICAL_MARGIN,
    broken_chain,
    chain_depth,
    human_age,
    human_bytes,
    merge_needed_by_lun,
    path_key,
    pct_free,
    version_key,
)
from .model import (
    GB,
    VM,
    CheckpointKind,
    Finding,
    Health,
    IntegrationState,
    Kind,
    Lun,
    LunRole,
    Node,
    Platform,
    PowerState,
    ReplicationState,
    ServiceState,
    Severity,
    Task,
)
from .plans_vsphere import is_vsphere
from .store import Delta, Store, ref

TB = 1024 * GB
BACKUP_AGENT_PORTS: tuple[int, ...] = (28001, 28002, 29000, 30001, 30002, 30003)

# Codes, one per rule.
CHECKPOINT_OLD = "CHECKPOINT_OLD"
CHAIN_DEEP = "CHAIN_DEEP"
DIFF_LARGE = "DIFF_LARGE"
CHAIN_BROKEN = "CHAIN_BROKEN"
MERGE_PENDING = "MERGE_PENDING"
BACKUP_LEFTOVER = "BACKUP_LEFTOVER"
BACKUP_OVER_POLICY = "BACKUP_OVER_POLICY"
BACKUP_OFFLINE_ONLY = "BACKUP_OFFLINE_ONLY"
SMB_SPREAD = "SMB_SPREAD"
REPLICATION_UNHEALTHY = "REPLICATION_UNHEALTHY"
CONFIG_VERSION_OLD = "CONFIG_VERSION_OLD"
LUN_LOW_SPACE = "LUN_LOW_SPACE"
LUN_MERGE_RUNOUT = "LUN_MERGE_RUNOUT"
AGENT_MISSING = "BACKUP_AGENT_MISSING"
AGENT_STOPPED = "BACKUP_AGENT_STOPPED"
AGENT_OLD = "BACKUP_AGENT_OLD"
AGENT_PORTS_CLOSED = "BACKUP_AGENT_PORTS_CLOSED"
SNAPSHOT_SKIPS_DISKS = "SNAPSHOT_SKIPS_DISKS"
TOOLS_NOT_READY = "TOOLS_NOT_READY"
CBT_OFF = "CBT_OFF"
AGENT_START_MODE = "BACKUP_AGENT_START_MODE"
AGENT_NOT_CHECKED = "BACKUP_AGENT_NOT_CHECKED"
BACKUP_NOT_CHECKED = "BACKUP_NOT_CHECKED"
SMB_PATH_DEEP = "SMB_PATH_DEEP"
SMB_LINKS_NOT_CHECKED = "SMB_LINKS_NOT_CHECKED"
#: A VM's files, by their extension (the last component of such a path is no folder).
_VM_FILE_EXT = (".vhdx", ".vhd", ".avhdx", ".avhd", ".vmcx", ".vmrs", ".vmgs", ".xml",
                ".bin", ".vsv", ".slp")

#: The version floor of a backup agent product, by its service's display name (casefolded),
#: used when ``[findings] backup_agent_min_version`` is not set: the source campaign's
#: Avamar plug-in at least 19.10. A product not listed (or a simulated agent) gets
#: ``DEFAULT_AGENT_FLOOR``.
AGENT_FLOORS: dict[str, str] = {"dell avamar plug-in service for windows": "19.10"}
DEFAULT_AGENT_FLOOR = "12.0"
#: What a host cannot see of a guest (the finding says so rather than claim it).
HOST_INVISIBLE = "dynamic disks and non-NTFS volumes (not visible from the host)"

# guest.toolsVersionStatus2 values (pyvmomi docs/vim/vm/GuestInfo/ToolsVersionStatus.rst):
# never installed → no quiesce at all; a version the host does not call current → info.
TOOLS_MISSING = frozenset({"guestToolsNotInstalled"})
TOOLS_OLD = frozenset({"guestToolsNeedUpgrade", "guestToolsTooOld", "guestToolsSupportedOld",
                       "guestToolsBlacklisted", "guestToolsTooNew"})

# Which console command fixes what (the findings screen offers it on Enter). The
# command opens the action of the VM's platform: the console core resolves it
# through the action registry (``actions=`` of the engine) — "merge" on a vSphere
# VM is the removal of all its snapshots — and a command with no action on the
# platform (an upgrade on vSphere) offers none.
REMEDIES: dict[str, str] = {
    CHECKPOINT_OLD: "merge",
    CHAIN_DEEP: "merge",
    DIFF_LARGE: "merge",
    MERGE_PENDING: "merge",
    BACKUP_LEFTOVER: "merge",
    CONFIG_VERSION_OLD: "upgrade",
}
# On a vSphere VM a pending merge is the consolidation vSphere asks for
# (``consolidationNeeded``).
VSPHERE_REMEDIES: dict[str, str] = {**REMEDIES, MERGE_PENDING: "consolidate"}

#: ``actions(command, platform)``: the action a command opens on a platform (None: none).
ActionResolver = Callable[[str, Platform], str | None]


def platform_of(store: Store, vm: VM) -> Platform:
    """The VM's platform (its cluster's; Hyper-V while the cluster is unknown)."""
    return Platform.VSPHERE if is_vsphere(store, vm) else Platform.HYPERV


def remedies_for(store: Store, vm: VM, actions: ActionResolver | None = None
                 ) -> dict[str, str]:
    """The remedies for a VM's platform: commands, or with ``actions`` the action
    names they open there (codes whose command opens nothing are left out)."""
    platform = platform_of(store, vm)
    table = VSPHERE_REMEDIES if platform is Platform.VSPHERE else REMEDIES
    if actions is None:
        return table
    return {code: name for code, command in table.items()
            if (name := actions(command, platform)) is not None}


def _delta(value: Any, default: timedelta) -> timedelta:
    if value is None:
        return default
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(hours=float(value))
    raise ValueError(f"expected hours as a number, got {value!r}")


@dataclass(frozen=True, slots=True)
class FindingsConfig:
    """Thresholds; ``[findings]`` in the config file (hours, %, GB)."""

    checkpoint_warn_age: timedelta = timedelta(hours=72)
    checkpoint_critical_age: timedelta = timedelta(days=30)
    chain_depth_max: int = 3
    differencing_pct: float = 50.0
    lun_warn_pct: float = 10.0
    lun_critical_pct: float = 5.0
    backup_max_bytes: int = 2 * TB
    #: The agent's version floor; None: per product (``AGENT_FLOORS``, else 12.0).
    backup_agent_min_version: str | None = None
    backup_agent_ports: tuple[int, ...] = BACKUP_AGENT_PORTS
    backup_leftover_after: timedelta = timedelta(hours=1)
    config_version_min: str = "8.0"
    ack_grace: timedelta = timedelta(minutes=15)
    #: VM name patterns (fnmatch, case-insensitive) a backup policy covers (CBT_OFF).
    backup_policy_vms: tuple[str, ...] = ("*",)
    #: Folder levels under an SMB share a VM's files may sit at (SMB_PATH_DEEP): remote
    #: VSS copies only down to the file server's shadow-copy directory depth (NetApp
    #: ONTAP: ``-shadowcopy-dir-depth``, 5 by default — set it to your server's).
    smb_max_depth: int = 5

    @classmethod
    def from_toml(cls, raw: dict[str, Any]) -> FindingsConfig:
        """From a ``[findings]`` table: ages in hours, sizes in GB, shares in %."""
        d = cls()
        known = {
            "checkpoint_warn_hours", "checkpoint_critical_hours", "chain_depth_max",
            "differencing_pct", "lun_warn_pct", "lun_critical_pct", "backup_max_gb",
            "backup_agent_min_version", "backup_agent_ports", "backup_leftover_hours",
            "config_version_min", "ack_grace_minutes", "backup_policy_vms", "smb_max_depth",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown [findings] keys: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")

        def num(key: str, default: float) -> float:
            value = raw.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"[findings] {key} must be a non-negative number")
            return float(value)

        ports = raw.get("backup_agent_ports", list(d.backup_agent_ports))
        if not isinstance(ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in ports
        ):
            raise ValueError("[findings] backup_agent_ports must be a list of port numbers")
        policy = raw.get("backup_policy_vms", list(d.backup_policy_vms))
        if not isinstance(policy, list) or not all(isinstance(p, str) for p in policy):
            raise ValueError("[findings] backup_policy_vms must be a list of VM name patterns")
        cfg = cls(
            checkpoint_warn_age=timedelta(hours=num("checkpoint_warn_hours", 72)),
            checkpoint_critical_age=timedelta(hours=num("checkpoint_critical_hours", 720)),
            chain_depth_max=int(num("chain_depth_max", d.chain_depth_max)),
            differencing_pct=num("differencing_pct", d.differencing_pct),
            lun_warn_pct=num("lun_warn_pct", d.lun_warn_pct),
            lun_critical_pct=num("lun_critical_pct", d.lun_critical_pct),
            backup_max_bytes=int(num("backup_max_gb", d.backup_max_bytes / GB) * GB),
            backup_agent_min_version=(
                str(raw["backup_agent_min_version"]) if "backup_agent_min_version" in raw
                else None),
            backup_agent_ports=tuple(ports),
            backup_leftover_after=timedelta(hours=num("backup_leftover_hours", 1)),
            config_version_min=str(raw.get("config_version_min", d.config_version_min)),
            ack_grace=timedelta(minutes=num("ack_grace_minutes", 15)),
            backup_policy_vms=tuple(policy),
            smb_max_depth=int(num("smb_max_depth", d.smb_max_depth)),
        )
        if cfg.checkpoint_critical_age < cfg.checkpoint_warn_age:
            raise ValueError("[findings] checkpoint_critical_hours is below checkpoint_warn_hours")
        if cfg.lun_critical_pct > cfg.lun_warn_pct:
            raise ValueError("[findings] lun_critical_pct is above lun_warn_pct")
        return cfg


@dataclass(frozen=True, slots=True)
class LiveFinding:
    """One finding: what, where, how bad, and the action that fixes it (if any)."""

    target: str  # "vm:ID", "lun:ID", "node:ID"
    code: str
    severity: Severity
    message: str
    target_name: str = ""
    remedy: str | None = None  # a registered action name ("merge", "upgrade")
    vm_id: str | None = None  # the VM the remedy acts on
    source: str = "rules"  # "rules" or the backend's finding id
    # Since when the problem exists: from the model where it tells (a checkpoint's
    # age), else when this engine first saw it.
    since: datetime | None = None

    @property
    def key(self) -> str:
        if self.source == "rules":
            return f"{self.target}|{self.code}"
        return f"{self.target}|{self.code}|{self.source}"

    def same(self, other: LiveFinding) -> bool:
        """Equal but for ``since``."""
        return (self.severity, self.message, self.remedy, self.target_name) == (
            other.severity, other.message, other.remedy, other.target_name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "target_name": self.target_name, "code": self.code,
            "severity": self.severity.value, "message": self.message, "remedy": self.remedy,
            "source": self.source,
        }


@dataclass(slots=True)
class FindingsChange:
    added: list[LiveFinding] = field(default_factory=list)
    removed: list[LiveFinding] = field(default_factory=list)
    changed: list[LiveFinding] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


Listener = Callable[[FindingsChange], None]


_path_key = path_key


def _share(path: str) -> str | None:
    """``\\\\server\\share`` of a UNC path, else None."""
    p = path.replace("/", "\\")
    if not p.startswith("\\\\"):
        return None
    parts = [x for x in p[2:].split("\\") if x]
    if len(parts) < 2:
        return None
    return f"\\\\{parts[0]}\\{parts[1]}".casefold()


def _smb_depth(path: str) -> int:
    """Folder levels of a location under its SMB share (0: not on a share); a VM file's
    own name is not a level."""
    if _share(path) is None:
        return 0
    parts = [x for x in path.replace("/", "\\")[2:].split("\\") if x][2:]
    if parts and parts[-1].casefold().endswith(_VM_FILE_EXT):
        parts = parts[:-1]
    return len(parts)


def _location(path: str) -> str:
    share = _share(path)
    if share is not None:
        return share
    p = path.replace("/", "\\").casefold()
    parts = [x for x in p.split("\\") if x]
    if len(parts) >= 3 and parts[1] == "clusterstorage":
        return "\\".join(parts[:3])  # c:\clusterstorage\volumeN
    return parts[0] if parts else p


class FindingsEngine:
    """Live findings over a store; incremental. ``attach()`` to start."""

    def __init__(
        self,
        store: Store,
        config: FindingsConfig | None = None,
        clock: Callable[[], datetime] | None = None,
        *,
        actions: ActionResolver | None = None,
    ) -> None:
        self.store = store
        self.config = config or FindingsConfig()
        self._actions = actions
        self._remedies: dict[Platform, dict[str, str]] = {}  # resolved once per platform
        self.clock = clock or (lambda: datetime.now(UTC))
        self._rules: dict[str, dict[str, LiveFinding]] = {}  # target -> code -> finding
        self._backend: dict[str, LiveFinding] = {}  # backend finding id -> finding
        self._listeners: list[Listener] = []
        self._due: dict[str, datetime] = {}  # VM id -> next moment its outcome may change
        self._heap: list[tuple[datetime, str]] = []
        self._paths: Counter[str] = Counter()  # every known disk path (case-folded)
        self._merging: dict[str, set[str]] = {}  # VM id -> running merge task ids
        self._lun_merges: dict[str, set[str]] = {}  # LUN id -> VMs merging onto it
        self._unsubscribe: Callable[[], None] | None = None
        self.version = 0  # bumped on every change of the finding set
        self.counts: dict[Severity, int] = dict.fromkeys(Severity, 0)  # kept incrementally
        self.last_recompute_s = 0.0
        # Targets waiting to be computed: a delta touching more than
        # ``backlog_after`` VMs (the first inventory) is not computed inside
        # the store's callback but in slices by ``drain()``.
        self._backlog: dict[str, None] = {}
        self.backlog_after = 256
        self._min_config_version = version_key(self.config.config_version_min)
        self._versions: dict[str, tuple[int, int]] = {}
        self._min_agent_version = (_dotted(self.config.backup_agent_min_version)
                                   if self.config.backup_agent_min_version else None)
        self._policy_re = _patterns(self.config.backup_policy_vms)

    # -- life ------------------------------------------------------------------
    def attach(self, *, eager: bool = True) -> FindingsEngine:
        """Compute everything now (``eager``) or queue it for ``drain()``; then follow."""
        if eager:
            self.recompute_all()
        else:
            self._queue_all()
        if self._unsubscribe is None:
            self._unsubscribe = self.store.subscribe(self.on_delta)
        return self

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    @property
    def pending(self) -> int:
        """Targets not computed yet (0: the findings are complete)."""
        return len(self._backlog)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Meanwhile, every VM a delta touches is queued for ``drain()``, however few.

        For a bulk load applied in slices (the console's first inventory): a
        slice of disks or checkpoints may touch fewer than ``backlog_after``
        VMs, and computing those inside the store's callback made each slice
        (and a key waiting behind it) several times longer.
        """
        saved, self.backlog_after = self.backlog_after, -1
        try:
            yield
        finally:
            self.backlog_after = saved

    def drain(self, budget_s: float = 0.02) -> FindingsChange:
        """Compute queued targets for about ``budget_s`` seconds."""
        change = FindingsChange()
        if not self._backlog:
            return change
        deadline = time.perf_counter() + budget_s
        backlog = self._backlog
        n = 0
        while backlog:
            target = next(iter(backlog))
            del backlog[target]
            self._recompute_target(target, change)
            n += 1
            if n % 64 == 0 and time.perf_counter() >= deadline:
                break
        self._emit(change)
        return change

    def _queue_all(self) -> None:
        store = self.store
        self._paths = Counter(_path_key(d.path) for d in store.all(Kind.DISK))  # type: ignore[union-attr]
        for task in store.tasks():
            self._track_task(None, task)
        for kind, items in ((Kind.NODE, store.nodes()), (Kind.LUN, store.luns()),
                            (Kind.VM, store.vms())):
            for item in items:
                self._backlog[ref(kind, item.id)] = None

    # -- reading -----------------------------------------------------------------
    def findings(self) -> list[LiveFinding]:
        out = [f for group in self._rules.values() for f in group.values()]
        out.extend(self._backend.values())
        return out

    def __len__(self) -> int:
        return sum(len(g) for g in self._rules.values()) + len(self._backend)

    def for_target(self, target: str) -> list[LiveFinding]:
        out = list(self._rules.get(target, {}).values())
        out.extend(f for f in self._backend.values() if f.target == target)
        return out

    def get(self, key: str) -> LiveFinding | None:
        target, _, rest = key.partition("|")
        code, _, source = rest.partition("|")
        if source:
            found = self._backend.get(source)
            return found if found is not None and found.key == key else None
        return self._rules.get(target, {}).get(code)

    # -- computing -----------------------------------------------------------------
    def recompute_all(self) -> FindingsChange:
        started = time.perf_counter()
        store = self.store
        self._paths = Counter(_path_key(d.path) for d in store.all(Kind.DISK))  # type: ignore[union-attr]
        self._merging.clear()
        self._lun_merges.clear()
        for task in store.tasks():
            self._track_task(None, task)
        change = FindingsChange()
        targets = set(self._rules)
        targets.update(ref(Kind.VM, v.id) for v in store.vms())
        targets.update(ref(Kind.LUN, x.id) for x in store.luns())
        targets.update(ref(Kind.NODE, n.id) for n in store.nodes())
        self._heap.clear()
        self._due.clear()
        self._backlog.clear()
        for target in targets:
            self._recompute_target(target, change)
        backend_ids = {f.id for f in store.all(Kind.FINDING)}
        for fid in list(self._backend):
            if fid not in backend_ids:
                gone = self._backend.pop(fid)
                change.removed.append(gone)
                self.counts[gone.severity] -= 1
        for entity in store.all(Kind.FINDING):
            self._put_backend(entity, change)  # type: ignore[arg-type]
        self._emit(change)
        self.last_recompute_s = time.perf_counter() - started
        return change

    def on_delta(self, delta: Delta) -> FindingsChange:
        started = time.perf_counter()
        vms: set[str] = set()
        luns: set[str] = set()
        nodes: set[str] = set()
        change = FindingsChange()
        for c in delta.changes:
            kind = c.kind
            if kind is Kind.VM:
                vms.add(c.id)
            elif kind is Kind.CHECKPOINT:
                vms.add((c.new or c.old).vm_id)  # type: ignore[union-attr]
            elif kind is Kind.DISK:
                old, new = c.old, c.new
                if old is not None:
                    key = _path_key(old.path)  # type: ignore[union-attr]
                    self._paths[key] -= 1
                    if self._paths[key] <= 0:
                        del self._paths[key]
                    luns.update(self._merging_luns(old.vm_id, old))  # type: ignore[union-attr]
                if new is not None:
                    self._paths[_path_key(new.path)] += 1  # type: ignore[union-attr]
                    luns.update(self._merging_luns(new.vm_id, new))  # type: ignore[union-attr]
                # A path appearing or vanishing can mend or break another VM's chain;
                # only VMs whose disks name it as a parent care (rare: shared parents).
                vms.add((new or old).vm_id)  # type: ignore[union-attr]
            elif kind is Kind.LUN:
                luns.add(c.id)
            elif kind is Kind.TASK:
                task = c.new or c.old
                luns.update(self._track_task(c.old, c.new))  # type: ignore[arg-type]
                target = task.target  # type: ignore[union-attr]
                if target.startswith("vm:"):
                    vms.add(target[3:])
            elif kind is Kind.NODE:
                nodes.add(c.id)
            elif kind is Kind.CLUSTER:
                # The platform decides the VMs' remedies (rare: clusters arrive first).
                old_platform = getattr(c.old, "platform", None)
                if c.new is None or old_platform is not getattr(c.new, "platform", None):
                    vms.update(v.id for v in self.store.vms() if v.cluster_id == c.id)
            elif kind is Kind.FINDING:
                if c.new is None:
                    gone = self._backend.pop(c.id, None)
                    if gone is not None:
                        change.removed.append(gone)
                        self.counts[gone.severity] -= 1
                else:
                    self._put_backend(c.new, change)  # type: ignore[arg-type]
        if len(vms) > self.backlog_after:
            for vm_id in vms:
                self._backlog[ref(Kind.VM, vm_id)] = None
            vms = set()
        for vm_id in vms:
            self._recompute_target(ref(Kind.VM, vm_id), change)
        for lun_id in luns:
            self._recompute_target(ref(Kind.LUN, lun_id), change)
        for node_id in nodes:
            self._recompute_target(ref(Kind.NODE, node_id), change)
        self._emit(change)
        self.last_recompute_s = time.perf_counter() - started
        return change

    def tick(self, now: datetime | None = None) -> FindingsChange:
        """Recompute the VMs whose age thresholds were crossed since the last call."""
        now = now or self.clock()
        change = FindingsChange()
        due: set[str] = set()
        while self._heap and self._heap[0][0] <= now:
            when, vm_id = heapq.heappop(self._heap)
            if self._due.get(vm_id) == when:
                del self._due[vm_id]
                due.add(vm_id)
        for vm_id in due:
            self._recompute_target(ref(Kind.VM, vm_id), change, now)
        self._emit(change)
        return change

    # -- internals ------------------------------------------------------------------
    def _emit(self, change: FindingsChange) -> None:
        if not change:
            return
        self.version += 1
        for listener in list(self._listeners):
            listener(change)

    def _put_backend(self, finding: Finding, change: FindingsChange) -> None:
        target = finding.target
        kind, _, id_ = target.partition(":")
        vm = self.store.vm(id_) if kind == Kind.VM.value else None
        lun = self.store.lun(id_) if kind == Kind.LUN.value else None
        node = self.store.node(id_) if kind == Kind.NODE.value else None
        name = (vm or lun or node).name if (vm or lun or node) else id_  # type: ignore[union-attr]
        new = LiveFinding(target, finding.code, finding.severity, finding.message, name,
                          None, vm.id if vm else None, finding.id)
        old = self._backend.get(finding.id)
        if old is None:
            self._backend[finding.id] = replace(new, since=self.clock())
            change.added.append(self._backend[finding.id])
            self.counts[new.severity] += 1
        elif not old.same(new):
            self._backend[finding.id] = replace(new, since=old.since)
            change.changed.append(self._backend[finding.id])
            self.counts[old.severity] -= 1
            self.counts[new.severity] += 1

    def _track_task(self, old: Task | None, new: Task | None) -> set[str]:
        """Keep the running-merge maps; return the LUNs whose projection may change."""
        touched: set[str] = set()
        for task, running in ((old, False), (new, True)):
            if task is None or task.kind != "merge" or not task.target.startswith("vm:"):
                continue
            vm_id = task.target[3:]
            if running and not task.state.finished:
                self._merging.setdefault(vm_id, set()).add(task.id)
            else:
                ids = self._merging.get(vm_id)
                if ids is not None:
                    ids.discard(task.id)
                    if not ids:
                        del self._merging[vm_id]
            luns = {d.lun_id for d in self.store.disks_of(vm_id) if d.lun_id}
            touched |= luns
            for lun_id in luns:
                holders = self._lun_merges.setdefault(lun_id, set())
                if vm_id in self._merging:
                    holders.add(vm_id)
                else:
                    holders.discard(vm_id)
        return touched

    def _merging_luns(self, vm_id: str, disk: Any) -> set[str]:
        if vm_id not in self._merging or not disk.lun_id:
            return set()
        self._lun_merges.setdefault(disk.lun_id, set()).add(vm_id)
        return {disk.lun_id}

    def _recompute_target(
        self, target: str, change: FindingsChange, now: datetime | None = None
    ) -> None:
        kind, _, id_ = target.partition(":")
        store = self.store
        new: list[LiveFinding] = []
        if kind == "vm":
            vm = store.vm(id_)
            if vm is not None:
                new = self._vm_rules(vm, now or self.clock())
        elif kind == "lun":
            lun = store.lun(id_)
            if lun is not None:
                new = self._lun_rules(lun)
        elif kind == "node":
            node = store.node(id_)
            if node is not None:
                new = self._node_rules(node)
        old = self._rules.get(target, {})
        fresh: dict[str, LiveFinding] = {}
        stamp: datetime | None = None
        for f in new:
            before = old.get(f.code)
            if before is None:
                if f.since is None:
                    stamp = stamp or self.clock()
                    object.__setattr__(f, "since", stamp)  # built just above, not shared yet
                fresh[f.code] = f
                change.added.append(f)
                self.counts[f.severity] += 1
            elif not before.same(f):
                fresh[f.code] = f if f.since is not None else replace(f, since=before.since)
                change.changed.append(fresh[f.code])
                self.counts[before.severity] -= 1
                self.counts[f.severity] += 1
            else:
                fresh[f.code] = before
        for code, before in old.items():
            if code not in fresh:
                change.removed.append(before)
                self.counts[before.severity] -= 1
        if fresh:
            self._rules[target] = fresh
        else:
            self._rules.pop(target, None)

    def _schedule(self, vm_id: str, when: datetime | None) -> None:
        if when is None:
            self._due.pop(vm_id, None)
            return
        if self._due.get(vm_id) == when:
            return
        self._due[vm_id] = when
        heapq.heappush(self._heap, (when, vm_id))

    # -- the rules ---------------------------------------------------------------------
    def _vm_rules(self, vm: VM, now: datetime) -> list[LiveFinding]:
        cfg = self.config
        store = self.store
        target = ref(Kind.VM, vm.id)
        name = vm.name
        out: list[LiveFinding] = []
        next_due: list[datetime] = []
        platform = platform_of(store, vm)
        remedies = self._remedies.get(platform)
        if remedies is None:
            remedies = self._remedies[platform] = remedies_for(store, vm, self._actions)

        def add(code: str, severity: Severity, message: str,
                since: datetime | None = None, *, remedy: bool = True) -> None:
            out.append(LiveFinding(target, code, severity, message, name,
                                   remedies.get(code) if remedy else None, vm.id, since=since))

        cps = store.checkpoints_of(vm.id)
        disks = store.disks_of(vm.id)
        merging = vm.id in self._merging

        # Old checkpoints (not the backup-created ones: their own rule below).
        manual = [c for c in cps if c.kind is not CheckpointKind.BACKUP] if cps else cps
        if manual:
            oldest = min(manual, key=lambda c: c.created)
            age = now - oldest.created
            over = sum(1 for c in manual if now - c.created >= cfg.checkpoint_warn_age)
            if age >= cfg.checkpoint_critical_age:
                sev: Severity | None = Severity.CRITICAL
            elif age >= cfg.checkpoint_warn_age:
                sev = Severity.WARNING
                next_due.append(oldest.created + cfg.checkpoint_critical_age)
            else:
                sev = None
                next_due.append(oldest.created + cfg.checkpoint_warn_age)
            if sev is not None:
                add(CHECKPOINT_OLD, sev,
                    f"{over} checkpoint(s) older than {human_age(cfg.checkpoint_warn_age)}; the "
                    f"oldest, '{oldest.name}', is {human_age(age)} old "
                    f"({oldest.created:%Y-%m-%d}). Merge them in a window.",
                    oldest.created + cfg.checkpoint_warn_age)

        depth = chain_depth(cps) if cps else 0
        if depth > cfg.chain_depth_max:
            add(CHAIN_DEEP, Severity.WARNING,
                f"Checkpoint chain {depth} deep (over {cfg.chain_depth_max}): every read "
                "walks the chain and the merge time grows with each link.")

        if disks:
            diffs = [d for d in disks if d.parent_path]
            by_path = {_path_key(d.path): d for d in disks} if diffs else {}
            # Differencing data per base disk (a chain whose parent is missing
            # stops at once and counts nowhere).
            chained: dict[str, int] = {}
            for d in diffs:
                root = d
                seen = 0
                while root.parent_path and seen < 1000:
                    nxt = by_path.get(_path_key(root.parent_path))
                    if nxt is None:
                        break
                    root, seen = nxt, seen + 1
                if root.parent_path is None and root is not d:
                    chained[root.id] = chained.get(root.id, 0) + d.size_bytes
            broken = broken_chain(disks, cps, self._paths.__contains__) if diffs else []
            if broken:
                more = f" (and {len(broken) - 2} more)" if len(broken) > 2 else ""
                add(CHAIN_BROKEN, Severity.CRITICAL,
                    "The disk chain is broken: " + "; ".join(broken[:2]) + more +
                    f". Backups fail with '{INVALID_CHAINS}' and a merge would "
                    "fail too: repair the chain by hand (Set-VHD -ParentPath) first.")
            worst: tuple[float, str] | None = None
            base_by_id = {d.id: d for d in disks if not d.parent_path} if chained else {}
            for base_id, size in chained.items():
                base = base_by_id[base_id]
                if base.size_bytes <= 0:
                    continue
                pct = 100.0 * size / base.size_bytes
                if pct > cfg.differencing_pct and (worst is None or pct > worst[0]):
                    worst = (pct, f"{human_bytes(size)} of differencing data on "
                                  f"{_file(base.path)} ({human_bytes(base.size_bytes)})")
            if worst is not None:
                add(DIFF_LARGE, Severity.WARNING,
                    f"{worst[1]}: {worst[0]:.0f} % of the parent (over "
                    f"{cfg.differencing_pct:g} %). Merging rewrites that much of the parent "
                    "and needs as much free space.")

            if not merging:
                if vm.consolidation_needed:
                    add(MERGE_PENDING, Severity.WARNING,
                        "Disk consolidation is needed: a snapshot was removed but its delta "
                        "disks were not merged.")
                elif not cps and diffs:
                    # No checkpoint left to remove: no guarded action fixes it.
                    n = len(diffs)
                    if is_vsphere(store, vm):  # no Hyper-V advice on a vSphere VM
                        add(MERGE_PENDING, Severity.WARNING,
                            f"{n} delta disk(s) but no snapshot: the VM runs on delta disks "
                            "— a consolidation vSphere has not flagged yet, or the shared "
                            "base of a linked clone (then nothing is wrong). If it is not a "
                            "linked clone, consolidate the VM's disks.", remedy=False)
                    else:
                        add(MERGE_PENDING, Severity.WARNING,
                            f"{n} differencing disk(s) but no checkpoint: a merge is pending "
                            "or failed; the VM runs on the differencing disks. With the VM "
                            "off, merge them into their parent by hand (Merge-VHD) and "
                            "attach the parent (Set-VMHardDiskDrive).", remedy=False)

            used = sum(d.size_bytes for d in disks)
            provisioned = sum(d.max_bytes for d in disks if not d.parent_path)
            limit = cfg.backup_max_bytes
            if used > limit:
                add(BACKUP_OVER_POLICY, Severity.WARNING,
                    f"{human_bytes(used)} on disk, over the {human_bytes(limit)} backup policy: "
                    "the backup job will not take it whole.")
            elif provisioned > limit:
                add(BACKUP_OVER_POLICY, Severity.INFO,
                    f"{human_bytes(used)} used but {human_bytes(provisioned)} provisioned: it can "
                    f"grow past the {human_bytes(limit)} backup policy.")
        elif vm.consolidation_needed and not merging:
            add(MERGE_PENDING, Severity.WARNING,
                "Disk consolidation is needed: a snapshot was removed but its delta disks "
                "were not merged.")

        leftovers = [c for c in cps if c.kind is CheckpointKind.BACKUP] if cps else cps
        if leftovers:
            backup_running = any(t.kind == "backup" and not t.state.finished
                                 for t in store.tasks_for(target))
            if not backup_running:
                oldest = min(leftovers, key=lambda c: c.created)
                age = now - oldest.created
                if age >= cfg.backup_leftover_after:
                    sev = (Severity.CRITICAL if age >= cfg.checkpoint_critical_age
                           else Severity.WARNING)
                    if sev is Severity.WARNING:
                        next_due.append(oldest.created + cfg.checkpoint_critical_age)
                    add(BACKUP_LEFTOVER, sev,
                        f"{len(leftovers)} checkpoint(s) left behind by backup software "
                        f"('{oldest.name}', {human_age(age)} old) with no backup running; the "
                        "next backup may fail or chain onto it.",
                        oldest.created + cfg.backup_leftover_after)
                else:
                    next_due.append(oldest.created + cfg.backup_leftover_after)

        # Online (host-level, application-consistent) backup eligibility.
        reasons: list[str] = []
        guest = False
        if vm.power is PowerState.RUNNING:
            if vm.integration is IntegrationState.OFF:
                reasons.append("integration services are off")
                guest = True
            if vm.vss_capable is False:
                reasons.append("the guest has no working VSS")
                guest = True
            if vm.dynamic_disks is True:
                reasons.append("the guest uses dynamic disks")
                guest = True
        elif vm.power is not PowerState.UNKNOWN:
            reasons.append(f"it is not running ({vm.power.value})")
        hyperv_facts = vm.vss_service is not None or vm.guest_windows is not None
        if vm.power is PowerState.RUNNING:
            if vm.vss_service is not None and vm.vss_service != "ok":
                reasons.append("the Backup (volume shadow copy) integration service is "
                               + ("disabled" if vm.vss_service == "disabled"
                                  else f"not answering ({vm.vss_service})"))
                guest = True
            if vm.cluster_group_state and vm.cluster_group_state.casefold() != "online":
                reasons.append(f"its cluster group is {vm.cluster_group_state}, not Online")
                guest = True
            if vm.guest_windows is False:
                reasons.append("the guest is not Windows (it reports "
                               f"{vm.guest_os or 'another OS'!r}): no VSS writer in it")
                guest = True
        if vm.passthrough_disks:
            reasons.append("pass-through disk(s) " + ", ".join(vm.passthrough_disks)
                           + " are not visible to the host and are left out (back them up "
                           "from inside the guest)")
            guest = True
        if reasons:
            text = ("Not eligible for an online host-level backup: " + ", ".join(reasons) +
                    ("; it is backed up crash-consistent or in saved state." if guest
                     else "; it is backed up offline."))
            if hyperv_facts:
                unknown = [*vm.backup_unchecked, HOST_INVISIBLE]
                text += (" Checked: power state, integration services, the Backup service, "
                         "guest OS (KVP), cluster group, pass-through disks. Not checked: "
                         + "; ".join(unknown) + ".")
            add(BACKUP_OFFLINE_ONLY, Severity.WARNING if guest else Severity.INFO, text)
        elif vm.backup_unchecked:
            add(BACKUP_NOT_CHECKED, Severity.INFO,
                "Online-backup eligibility not fully checked: " + "; ".join(vm.backup_unchecked)
                + f". Never visible from the host: {HOST_INVISIBLE}.")

        # Snapshot-based (image) backup facts; each silent while not reported (None).
        skipped = [*(vm.independent_disks or ()), *(f"{d} (physical RDM)"
                                                    for d in vm.physical_rdms or ())]
        if skipped:
            add(SNAPSHOT_SKIPS_DISKS, Severity.WARNING,
                "Not in a snapshot, so a snapshot-based image backup silently leaves out: "
                + ", ".join(skipped) + ". Back them up from the guest, or make them "
                "dependent (virtual RDM) disks.")
        if vm.tools_version_status is not None:  # VMware Tools reported (vSphere)
            tools: list[str] = []
            tools_sev = Severity.INFO
            if vm.tools_version_status in TOOLS_MISSING:
                tools.append("VMware Tools are not installed")
                tools_sev = Severity.WARNING
            elif (vm.power is PowerState.RUNNING and vm.tools_version_status is not None
                  and vm.integration is IntegrationState.OFF):
                tools.append("VMware Tools are not running")
                tools_sev = Severity.WARNING
            if vm.tools_version_status in TOOLS_OLD:
                tools.append(f"the Tools version is not current ({vm.tools_version_status})")
            if tools:
                text = "; ".join(tools)
                add(TOOLS_NOT_READY, tools_sev,
                    text[:1].upper() + text[1:] + ": a quiesced (application-consistent) "
                    "snapshot needs VMware Tools running and current in the guest.")
        if vm.cbt_enabled is False and self._policy_re.match(vm.name.casefold()):
            add(CBT_OFF, Severity.INFO,
                "Changed-block tracking is off: a backup policy covers this VM, and every "
                "incremental backup reads its whole disks (enable it while no snapshot exists).")

        if vm.storage_paths and any(p[:2] in ("\\\\", "//") for p in vm.storage_paths):
            shares = {s for s in (_share(p) for p in vm.storage_paths) if s}
            if shares:
                places = {_location(p) for p in vm.storage_paths}
                if len(places) > 1:
                    add(SMB_SPREAD, Severity.WARNING,
                        f"Files on SMB shares spread across {len(places)} locations ("
                        + ", ".join(sorted(places)) + "): every share must be up and "
                        "reachable from every node, and host-level backup of such VMs fails.")

        if vm.storage_paths and cfg.smb_max_depth:
            deep = [p for p in vm.storage_paths if _smb_depth(p) > cfg.smb_max_depth]
            if deep:
                add(SMB_PATH_DEEP, Severity.WARNING,
                    f"{len(deep)} file location(s) more than {cfg.smb_max_depth} folder levels "
                    f"under their SMB share (e.g. {deep[0]}): remote VSS copies only down to "
                    "the file server's shadow-copy directory depth, so a backup misses them.")
        if vm.smb_link_check:
            shares = sorted({s for s in (_share(p) for p in vm.storage_paths) if s})
            add(SMB_LINKS_NOT_CHECKED, Severity.INFO,
                "Junctions, links and non-regular files in the VM's folders on "
                + (", ".join(shares) or "its SMB share") + f": {vm.smb_link_check}. Remote "
                "VSS refuses a share that holds any; check them on the file server.")

        if vm.replication is not ReplicationState.DISABLED:
            rep_sev: Severity | None = None
            if vm.replication is ReplicationState.ERROR or vm.replication_health is Health.CRITICAL:
                rep_sev = Severity.CRITICAL
            elif (vm.replication is ReplicationState.SUSPENDED
                  or vm.replication_health is Health.WARNING):
                rep_sev = Severity.WARNING
            if rep_sev is not None:
                add(REPLICATION_UNHEALTHY, rep_sev,
                    f"Replication to {vm.replica_target or 'the replica'} is "
                    f"{vm.replication.value}, health {vm.replication_health.value}.")

        if vm.config_version and cfg.config_version_min:
            have = self._versions.get(vm.config_version)
            if have is None:
                have = self._versions[vm.config_version] = version_key(vm.config_version)
            if vm.config_version[:1].isdigit() and have < self._min_config_version:
                add(CONFIG_VERSION_OLD, Severity.INFO,
                    f"Configuration version {vm.config_version} (below "
                    f"{cfg.config_version_min}): no production checkpoints; upgrade while "
                    "the VM is off.")

        self._schedule(vm.id, min(next_due) if next_due else None)
        return out

    def _lun_rules(self, lun: Lun) -> list[LiveFinding]:
        cfg = self.config
        target = ref(Kind.LUN, lun.id)
        out: list[LiveFinding] = []
        if lun.total_bytes > 0 and lun.role is not LunRole.QUORUM:
            pct = pct_free(lun)
            sev: Severity | None = None
            if pct < cfg.lun_critical_pct or lun.free_bytes < PAUSE_CRITICAL_MARGIN:
                sev = Severity.CRITICAL
            elif pct < cfg.lun_warn_pct:
                sev = Severity.WARNING
            if sev is not None:
                out.append(LiveFinding(
                    target, LUN_LOW_SPACE, sev,
                    f"{human_bytes(lun.free_bytes)} free of {human_bytes(lun.total_bytes)} "
                    f"({pct:.1f} %; warning under {cfg.lun_warn_pct:g} %, critical under "
                    f"{cfg.lun_critical_pct:g} % or {human_bytes(PAUSE_CRITICAL_MARGIN)}).",
                    lun.name))
        merging = sorted(self._lun_merges.get(lun.id, ()))
        if merging:
            need = 0
            names = []
            for vm_id in merging:
                if vm_id not in self._merging:
                    continue
                n = merge_needed_by_lun(self.store, vm_id).get(lun.id, 0)
                if n:
                    need += n
                    vm = self.store.vm(vm_id)
                    names.append(vm.name if vm else vm_id)
            after = lun.free_bytes - need
            if names and after < PAUSE_CRITICAL_MARGIN:
                out.append(LiveFinding(
                    target, LUN_MERGE_RUNOUT, Severity.CRITICAL,
                    f"The running merge of {', '.join(names)} may need up to "
                    f"{human_bytes(need)} more; {human_bytes(lun.free_bytes)} free would leave "
                    f"{human_bytes(after)}, under the {human_bytes(PAUSE_CRITICAL_MARGIN)} at "
                    "which Hyper-V pauses every VM on it.", lun.name))
        return out

    def _node_rules(self, node: Node) -> list[LiveFinding]:
        cfg = self.config
        target = ref(Kind.NODE, node.id)
        out: list[LiveFinding] = []
        state = node.backup_agent_state
        if state is ServiceState.MISSING:
            out.append(LiveFinding(target, AGENT_MISSING, Severity.CRITICAL,
                                   "The backup agent is not installed: VMs on this node are "
                                   "not backed up.", node.name))
        elif state is ServiceState.STOPPED:
            out.append(LiveFinding(target, AGENT_STOPPED, Severity.CRITICAL,
                                   "The backup agent service is stopped: backups of VMs on "
                                   "this node fail.", node.name))
        version = node.backup_agent_version
        floor = (cfg.backup_agent_min_version
                 or AGENT_FLOORS.get((node.backup_agent_name or "").casefold())
                 or DEFAULT_AGENT_FLOOR)
        floor_key = (self._min_agent_version if cfg.backup_agent_min_version
                     else _dotted(floor))
        if (state is not ServiceState.MISSING and version and floor_key
                and _dotted(version) < floor_key):
            out.append(LiveFinding(target, AGENT_OLD, Severity.WARNING,
                                   f"Backup agent {version} is older than {floor}.", node.name))
        mode = node.backup_agent_start_mode
        if state is not ServiceState.MISSING and mode and mode.casefold() != "auto":
            out.append(LiveFinding(target, AGENT_START_MODE, Severity.WARNING,
                                   f"The backup agent service starts {mode!r}, not "
                                   "automatically: after the next reboot of this node it "
                                   "stays stopped and its backups fail.", node.name))
        if node.backup_unchecked:
            out.append(LiveFinding(target, AGENT_NOT_CHECKED, Severity.INFO,
                                   "Backup agent not checked: "
                                   + "; ".join(node.backup_unchecked) + ".", node.name))
        closed = node.backup_ports_closed
        if state is ServiceState.RUNNING and closed:
            wanted = [p for p in closed if p in cfg.backup_agent_ports] or list(closed)
            out.append(LiveFinding(target, AGENT_PORTS_CLOSED, Severity.WARNING,
                                   "Backup agent port(s) closed: "
                                   + ", ".join(str(p) for p in sorted(wanted))
                                   + " (a firewall rule?); jobs through this node fail.",
                                   node.name))
        return out


def _patterns(globs: Iterable[str]) -> re.Pattern[str]:
    """One regex for fnmatch-style name patterns (case-insensitive: match casefolded)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(g.casefold())})" for g in globs)
                      or r"(?!)")


def _file(path: str) -> str:
    return path.replace("/", "\\").rpartition("\\")[2] or path


def _dotted(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.strip().split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


SEVERITY_ORDER = (Severity.BLOCKING, Severity.CRITICAL, Severity.WARNING, Severity.INFO)


def count_by_severity(findings: Iterable[LiveFinding]) -> dict[Severity, int]:
    counts = dict.fromkeys(SEVERITY_ORDER, 0)
    for f in findings:
        counts[f.severity] += 1
    return counts

