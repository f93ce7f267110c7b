"""The VM rebuild workflow (the campaign's "reconstrucción"): model and storage.

A rebuild is six steps run in order, each with a state (pending, running,
done, failed, skipped), progress, timestamps and, on failure, what the VM's
state is known to be and what to do by hand:

1. ``capture``  — generation, firmware (boot order, Secure Boot template),
   vCPU, memory, NICs (switch, VLAN, MAC, guest IPv4), disks and their
   controllers, the checkpoint chain, the guest's running services;
2. ``merge``    — shut the VM down, merge its chain into a single disk, or
   only to the last parent when the VM replicates (the campaign's fix: the
   old VM keeps its replication identity; replication of the new VM is
   re-established by hand afterwards);
3. ``create``   — copy the consolidated disk to a new file and create a new
   VM from the capture (same name, generation, CPU/RAM, NICs with their MAC
   and VLAN, disks on the same controllers, boot device and Secure Boot
   template);
4. ``verify_boot`` — the new VM's boot device matches the capture, it starts
   and its guest answers (the "inaccessible boot device" incident);
5. ``services`` — the guest's running services compared to the capture:
   missing agents are flagged (the lost monitoring-agent incident);
6. ``keep_old`` — the old VM stays, off, renamed ``<name>-old-<date>``,
   until the operator removes it.

The workflow lives in two tables of the action log's database (a SQLite file
or a team's PostgreSQL; schema: state/schema.py), opened with the same
durability as the action log (WAL, ``synchronous=FULL``,
``busy_timeout``, every write in ``BEGIN IMMEDIATE``), so a rebuild paused
between steps — or interrupted by a console restart — can be resumed. The
tables are created if missing and do not touch the action log's schema
version.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .actionlog import _BOOT, _HOST, ActionLogError, _proc_start, redact, writer_alive
from .db import DEFAULT_BUSY_TIMEOUT
from .derived import PAUSE_CRITICAL_MARGIN, human_bytes, merge_space
from .model import IntegrationState, Kind, LunState, PowerState, ReplicationState, Severity
from .plans import Estimate, Plan, Preflight, chain_broken_message, cluster_max_version
from .sanitize import clean
from .schema import Db, Location, LocationError, is_url, location, open_db
from .store import Store, ref


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class RebuildState(StrEnum):
    READY = "ready"  # created, no step run yet
    RUNNING = "running"
    PAUSED = "paused"
    FAILED = "failed"
    DONE = "done"
    ABANDONED = "abandoned"

    @property
    def unfinished(self) -> bool:
        return self not in (RebuildState.DONE, RebuildState.ABANDONED)


#: (name, title) in the order they run.
STEPS: tuple[tuple[str, str], ...] = (
    ("capture", "Capture the VM's configuration"),
    ("merge", "Shut down and merge the checkpoint chain"),
    ("create", "Create the new VM from the capture"),
    ("verify_boot", "Verify the new VM boots"),
    ("services", "Compare guest services with the capture"),
    ("keep_old", "Keep the old VM (off, renamed) as fallback"),
)
STEP_NAMES = tuple(name for name, _ in STEPS)
STEP_TITLES = dict(STEPS)


def old_name(name: str, when: datetime) -> str:
    """What the old VM is renamed to: ``<name>-old-<YYYY-MM-DD>``."""
    return f"{name}-old-{when:%Y-%m-%d}"


def ps_quote(value: object) -> str:
    """A PowerShell single-quoted literal (embedded quotes doubled)."""
    return "'" + clean(str(value)).replace("'", "''") + "'"


# -- what to do by hand ------------------------------------------------------------

def manual_steps(step: str, wf: Rebuild, error: str = "") -> str:
    """The VM's known state after ``step`` failed, and what to do by hand."""
    name = wf.vm_name
    node = f" -ComputerName {ps_quote(wf.node)}" if wf.node else ""
    cap = wf.capture or {}
    new = f" (id {wf.new_vm_id})" if wf.new_vm_id else ""
    if step == "capture":
        return (f"Nothing was changed: {name} is as it was. Check that the host answers, then "
                "resume (the capture runs again), or abandon the rebuild.")
    if step == "merge":
        keep = (" The newest checkpoint was meant to stay (the VM replicates)."
                if wf.to_last_parent else "")
        return (f"{name} may be shut down and its checkpoint chain partly merged: what was "
                "merged stays merged, the remaining checkpoints and their .avhdx files are "
                f"intact.{keep} Check with: Get-VMSnapshot{node} -VMName {ps_quote(name)}. "
                f"To fall back, start it again: Start-VM{node} -Name {ps_quote(name)}. "
                "Resume retries the merge of what is left.")
    if step == "create":
        folder = cap.get("new_folder", "")
        return (f"The old VM {name} is off and intact (its disks are untouched). A copied disk "
                f"may have been left in {folder or 'the new VM folder'}; a half-created VM "
                f"named {name}{new} may exist. Remove them by hand (Remove-VM{node} -VM "
                "(Get-VM -Id <id>); Remove-Item <file>) before resuming, or fall back: "
                f"Start-VM{node} -Name {ps_quote(name)}.")
    if step == "verify_boot":
        first = _boot_hint(cap)
        return (f"The new VM {name}{new} exists and was turned off after failing to boot; the "
                f"old VM is off and intact. Set its boot device from the capture: "
                f"Set-VMFirmware{node} -VMName {ps_quote(name)} -FirstBootDevice {first}"
                + (f" -SecureBootTemplate {ps_quote(cap['firmware']['secure_boot_template'])}"
                   if cap.get("firmware", {}).get("secure_boot_template") else "")
                + "; then resume (verification runs again). To fall back, remove the new VM and "
                "start the old one.")
    if step == "services":
        return (f"The new VM {name}{new} is running; its guest services could not be compared. "
                f"Check them by hand: Invoke-Command -VMName {ps_quote(name)} {{ Get-Service | "
                "Where-Object Status -eq 'Running' }, against the capture in the action log. "
                "Resume retries the comparison.")
    if step == "keep_old":
        return (f"The new VM {name}{new} is running. The old VM (id {wf.vm_id}) is off but "
                f"still named {name}: rename it by hand — Rename-VM{node} -VM (Get-VM -Id "
                f"{ps_quote(wf.vm_id)}) -NewName {ps_quote(wf.old_vm_name)} — or resume.")
    return error or "Verify the VM on the host."


def _boot_hint(cap: Mapping[str, Any]) -> str:
    boot = (cap.get("firmware") or {}).get("boot_order") or []
    disk = next((b for b in boot if b.get("type") == "HardDiskDrive"), None)
    if disk is None:
        return "(Get-VMHardDiskDrive -VMName <name> | Select-Object -First 1)"
    return (f"(Get-VMHardDiskDrive -VMName {ps_quote(cap.get('name', ''))} -ControllerNumber "
            f"{disk.get('controller_number', 0)} -ControllerLocation "
            f"{disk.get('controller_location', 0)})")


# -- the equivalent PowerShell --------------------------------------------------------

def step_commands(info: Mapping[str, Any], capture: Mapping[str, Any] | None,
                  to_last_parent: bool, *, turn_off: bool = False) -> dict[str, str]:
    """The command an operator could run by hand for each step.

    ``info`` has the VM's name, node, generation, vcpus, memory_mb, id and the
    old VM's new name; ``capture`` (when taken) fills in NICs, disks and the
    boot device. Every value is a single-quoted PowerShell literal.
    """
    name = ps_quote(info.get("name", ""))
    node = f" -ComputerName {ps_quote(info['node'])}" if info.get("node") else ""
    cap = capture or {}
    gen = cap.get("generation", info.get("generation", 2))
    memory = int(cap.get("memory_mb", info.get("memory_mb", 1024)))
    vcpus = int(cap.get("vcpus", info.get("vcpus", 1)))
    out: dict[str, str] = {}
    out["capture"] = "; ".join((
        f"Get-VM{node} -Name {name} | Select-Object Generation, ProcessorCount, MemoryStartup",
        f"Get-VMFirmware{node} -VMName {name}" if gen == 2 else f"Get-VMBios{node} -VMName {name}",
        f"Get-VMNetworkAdapter{node} -VMName {name} | Select-Object SwitchName, MacAddress, "
        "IPAddresses",
        f"Get-VMNetworkAdapterVlan{node} -VMName {name}",
        f"Get-VMHardDiskDrive{node} -VMName {name}",
        f"Get-VMSnapshot{node} -VMName {name}",
        f"Invoke-Command -VMName {name} {{ Get-Service | Where-Object Status -eq 'Running' }}",
    ))
    merge = (f"Get-VMSnapshot{node} -VMName {name} | Sort-Object CreationTime | "
             "Select-Object -SkipLast 1 | Remove-VMSnapshot"
             if to_last_parent else f"Get-VMSnapshot{node} -VMName {name} | Remove-VMSnapshot")
    stop = "-TurnOff -Force" if turn_off else "-Force"  # the operator's choice on the plan
    out["merge"] = f"Stop-VM{node} -Name {name} {stop}; {merge}"
    disks = cap.get("disks") or []
    folder = cap.get("new_folder") or "<new folder>"
    parts: list[str] = []
    for d in disks:
        parts.append(f"Convert-VHD -Path {ps_quote(d.get('leaf_path') or d.get('path'))} "
                     f"-DestinationPath {ps_quote(d.get('new_path', folder))} -VHDType Dynamic")
    first_disk = ps_quote(disks[0]["new_path"]) if disks and disks[0].get("new_path") else \
        "<new disk>"
    parts.append(f"New-VM{node} -Name {name} -Generation {int(gen)} -MemoryStartupBytes "
                 f"{memory}MB -VHDPath {first_disk} -Path {ps_quote(folder)} -NoVHD:$false")
    parts.append(f"Set-VM{node} -Name {name} -ProcessorCount {vcpus}")
    for d in disks[1:]:
        parts.append(f"Add-VMHardDiskDrive{node} -VMName {name} -ControllerType "
                     f"{d.get('controller_type', 'SCSI')} -ControllerNumber "
                     f"{int(d.get('controller_number', 0))} -ControllerLocation "
                     f"{int(d.get('controller_location', 0))} -Path {ps_quote(d.get('new_path'))}")
    nics = cap.get("nics") or []
    for i, nic in enumerate(nics):
        if i == 0:
            parts.append(f"Get-VMNetworkAdapter{node} -VMName {name} | Connect-VMNetworkAdapter "
                         f"-SwitchName {ps_quote(nic.get('switch', ''))}")
        else:
            parts.append(f"Add-VMNetworkAdapter{node} -VMName {name} -Name "
                         f"{ps_quote(nic.get('name', f'nic{i}'))} -SwitchName "
                         f"{ps_quote(nic.get('switch', ''))} -StaticMacAddress "
                         f"{ps_quote(nic.get('mac', ''))}")
        if nic.get("vlan"):
            parts.append(f"Set-VMNetworkAdapterVlan{node} -VMName {name} -VMNetworkAdapterName "
                         f"{ps_quote(nic.get('name', ''))} -Access -VlanId {int(nic['vlan'])}")
    if nics:
        parts.append(f"Set-VMNetworkAdapter{node} -VMName {name} -Name "
                     f"{ps_quote(nics[0].get('name', ''))} -StaticMacAddress "
                     f"{ps_quote(nics[0].get('mac', ''))}")
    if int(gen) == 2:
        fw = cap.get("firmware") or {}
        template = fw.get("secure_boot_template")
        parts.append(f"Set-VMFirmware{node} -VMName {name} -FirstBootDevice "
                     f"{_boot_hint(cap) if cap else '<boot disk from the capture>'}"
                     + (f" -SecureBootTemplate {ps_quote(template)}" if template else ""))
    out["create"] = "; ".join(parts)
    out["verify_boot"] = (f"Start-VM{node} -Name {name}; Get-VMIntegrationService{node} "
                          f"-VMName {name} -Name Heartbeat")
    out["services"] = (f"Invoke-Command -VMName {name} {{ Get-Service | Where-Object Status "
                       "-eq 'Running' }")
    old = ps_quote(info.get("old_name", ""))
    vm_id = ps_quote(info.get("vm_id", ""))
    out["keep_old"] = (f"Rename-VM{node} -VM (Get-VM{node} -Id {vm_id}) -NewName {old}; "
                       f"Set-VM{node} -VM (Get-VM{node} -Id {vm_id}) -AutomaticStartAction "
                       "Nothing")
    return out


# -- the model -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Step:
    name: str
    state: StepState = StepState.PENDING
    pct: float = 0.0
    message: str = ""
    started: str | None = None
    ended: str | None = None
    error: str = ""
    manual: str = ""  # on failure: the VM's known state and what to do by hand
    log_row: int | None = None
    task_id: str = ""  # the host task of the latest attempt (its progress is live)

    @property
    def title(self) -> str:
        return STEP_TITLES.get(self.name, self.name)


@dataclass(frozen=True, slots=True)
class Rebuild:
    id: str
    vm_id: str
    vm_name: str
    target_system: str
    state: RebuildState
    created: str
    updated: str
    node: str = ""
    to_last_parent: bool = False
    old_vm_name: str = ""
    new_vm_id: str = ""
    pause_requested: bool = False
    capture: dict[str, Any] | None = None
    result: dict[str, Any] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()
    host: str = ""
    boot_id: str | None = None
    pid: int = 0
    proc_start: int | None = None

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    @property
    def next_step(self) -> Step | None:
        """The first step not done or skipped (None: the rebuild is complete)."""
        return next((s for s in self.steps
                     if s.state not in (StepState.DONE, StepState.SKIPPED)), None)

    @property
    def interrupted(self) -> bool:
        """It reads "running" but the console that ran it is gone."""
        running = self.state is RebuildState.RUNNING or any(
            s.state is StepState.RUNNING for s in self.steps)
        if not running:
            return False
        return not writer_alive(self.host, self.boot_id, self.pid, self.proc_start)

    @property
    def status(self) -> str:
        """What the operator reads."""
        if self.interrupted:
            return "interrupted — verify on the host"
        return self.state.value

    @property
    def done_count(self) -> int:
        return sum(s.state in (StepState.DONE, StepState.SKIPPED) for s in self.steps)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RebuildStore:
    """The rebuild tables in the action log's database. ``open()`` it; thread-safe."""

    def __init__(self, path: Location, db: Db, timeout: float) -> None:
        self.path = path
        self._db = db
        self._conn = db.conn if not db.pg else None
        self._timeout = timeout
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._proc_start = _proc_start(self._pid)

    @classmethod
    def open(cls, path: Location, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
             ) -> RebuildStore:
        """Open the action log's rebuild tables (a file or a postgresql:// URL).

        Raises ``ActionLogError`` when the database cannot be opened or written.
        """
        try:
            loc = location(str(path) if is_url(path) else Path(path))
        except LocationError as exc:
            raise ActionLogError(str(exc)) from None
        assert loc is not None
        db = open_db(loc, error=ActionLogError, busy_timeout=busy_timeout)
        return cls(loc, db, busy_timeout)

    def _write(self) -> AbstractContextManager[Db]:
        return self._db.write()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------
    def create(self, *, rebuild_id: str, vm_id: str, vm_name: str, target_system: str,
               node: str, to_last_parent: bool, old_vm_name: str) -> Rebuild:
        now = _now()
        with self._write() as conn:
            conn.execute(
                "insert into rebuilds (id, vm_id, vm_name, target_system, state, created, "
                "updated, node, to_last_parent, old_vm_name) values (?,?,?,?,?,?,?,?,?,?)",
                (rebuild_id, vm_id, clean(vm_name), clean(target_system),
                 RebuildState.READY.value, now, now, clean(node), int(to_last_parent),
                 clean(old_vm_name)),
            )
            conn.executemany(
                "insert into rebuild_steps (rebuild_id, idx, name, state) values (?,?,?,?)",
                [(rebuild_id, i, name, StepState.PENDING.value)
                 for i, name in enumerate(STEP_NAMES)],
            )
        wf = self.get(rebuild_id)
        assert wf is not None
        return wf

    def claim(self, rebuild_id: str) -> None:
        """This process runs the rebuild now (a restart can tell it is gone)."""
        with self._write() as conn:
            conn.execute(
                "update rebuilds set state=?, pause_requested=0, host=?, boot_id=?, pid=?, "
                "proc_start=?, updated=? where id=?",
                (RebuildState.RUNNING.value, _HOST, _BOOT, self._pid, self._proc_start, _now(),
                 rebuild_id),
            )

    def set_state(self, rebuild_id: str, state: RebuildState, **fields: Any) -> None:
        sets = ["state=?", "updated=?"]
        values: list[Any] = [state.value, _now()]
        for key, value in fields.items():
            if key not in ("new_vm_id", "capture", "result", "pause_requested"):
                raise ValueError(f"not a rebuild field: {key}")
            sets.append(f"{key}=?")
            if key in ("capture", "result"):
                value = json.dumps(redact(value), ensure_ascii=False, sort_keys=True)
            elif key == "pause_requested":
                value = int(bool(value))
            values.append(value)
        values.append(rebuild_id)
        with self._write() as conn:
            conn.execute(f"update rebuilds set {', '.join(sets)} where id=?", values)

    def update(self, rebuild_id: str, **fields: Any) -> None:
        """Set ``new_vm_id``/``capture``/``result`` without changing the state."""
        wf = self.get(rebuild_id)
        if wf is None:
            raise ActionLogError(f"no rebuild {rebuild_id!r}")
        self.set_state(rebuild_id, wf.state, **fields)

    def request_pause(self, rebuild_id: str, value: bool = True) -> None:
        """Stop after the running step (takes effect between steps)."""
        with self._write() as conn:
            conn.execute("update rebuilds set pause_requested=?, updated=? where id=?",
                         (int(value), _now(), rebuild_id))

    def step_update(self, rebuild_id: str, name: str, **fields: Any) -> None:
        allowed = {"state", "pct", "message", "started", "ended", "error", "manual", "log_row",
                   "task_id"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"bad step fields: {sorted(fields)}")
        values = [
            (v.value if isinstance(v, StrEnum) else clean(v) if isinstance(v, str) else v)
            for v in fields.values()
        ]
        sets = ", ".join(f"{k}=?" for k in fields)
        with self._write() as conn:
            conn.execute(f"update rebuild_steps set {sets} where rebuild_id=? and name=?",
                         (*values, rebuild_id, name))
            conn.execute("update rebuilds set updated=? where id=?", (_now(), rebuild_id))

    # -- reading -------------------------------------------------------------------
    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return self._db.query(sql, params)

    def get(self, rebuild_id: str) -> Rebuild | None:
        rows = self._query("select * from rebuilds where id=?", (rebuild_id,))
        return self._build(rows[0]) if rows else None

    def unfinished(self, vm_id: str | None = None) -> list[Rebuild]:
        """Rebuilds not done nor abandoned (oldest first), for one VM or all."""
        done = (RebuildState.DONE.value, RebuildState.ABANDONED.value)
        if vm_id is None:
            rows = self._query("select * from rebuilds where state not in (?,?) order by created",
                               done)
        else:
            rows = self._query("select * from rebuilds where vm_id=? and state not in (?,?) "
                               "order by created", (vm_id, *done))
        return [self._build(r) for r in rows]

    def latest(self, vm_id: str) -> Rebuild | None:
        rows = self._query("select * from rebuilds where vm_id=? or new_vm_id=? "
                           "order by created desc limit 1", (vm_id, vm_id))
        return self._build(rows[0]) if rows else None

    def _build(self, r: Mapping[str, Any]) -> Rebuild:
        steps = tuple(
            Step(name=s["name"], state=StepState(s["state"]), pct=s["pct"], message=s["message"],
                 started=s["started"], ended=s["ended"], error=s["error"], manual=s["manual"],
                 log_row=s["log_row"], task_id=s["task_id"])
            for s in self._query("select * from rebuild_steps where rebuild_id=? order by idx",
                                 (r["id"],))
        )
        return Rebuild(
            id=r["id"], vm_id=r["vm_id"], vm_name=r["vm_name"], target_system=r["target_system"],
            state=RebuildState(r["state"]), created=r["created"], updated=r["updated"],
            node=r["node"], to_last_parent=bool(r["to_last_parent"]),
            old_vm_name=r["old_vm_name"], new_vm_id=r["new_vm_id"],
            pause_requested=bool(r["pause_requested"]),
            capture=json.loads(r["capture"]) if r["capture"] else None,
            result=json.loads(r["result"] or "{}"), steps=steps, host=r["host"],
            boot_id=r["boot_id"], pid=r["pid"], proc_start=r["proc_start"],
        )


# -- the plan ------------------------------------------------------------------------

#: Copying a consolidated disk to the new VM's file (Convert-VHD), MB/s on a CSV.
COPY_MB_PER_S = 150.0
_FIXED_MIN = 15.0  # create, first boot and checks


#: What each way of stopping the VM at the merge step does, as Microsoft documents
#: Stop-VM (MicrosoftDocs windows-powershell-docs, hyper-v/Stop-VM.md, examples 2 and 3):
#: the plan says it beside the operator's choice.
STOP_CONSEQUENCES = {
    "shutdown": ("Stop-VM -Force shuts it down through the guest operating system (its "
                 "Shutdown integration service) regardless of unsaved application data: "
                 "Hyper-V gives the guest five minutes to save data, then forces the "
                 "shutdown, which can lose unsaved data. If that service does not answer, "
                 "Ventana sends nothing and the step fails."),
    "turn_off": ("Stop-VM -TurnOff is equivalent to disconnecting the power: the guest is "
                 "not asked, unsaved data is lost, and its file systems and applications "
                 "recover as after a power failure."),
}


def plan_rebuild(store: Store, vm_id: str, now: datetime, *, db: str = "",
                 workflow: str | None = None, turn_off: bool = False) -> Plan:
    """Plan a rebuild of a VM, or the resumption of an unfinished one.

    ``db`` is the action-log file (it holds the rebuild tables); ``workflow``
    names the rebuild to resume. Pre-flight: stale data; an unfinished
    rebuild of the same VM (resume it instead); another task on the VM; a
    saved or paused VM (its state would be lost); a running VM is shut down
    at the merge step (said as a warning: downtime starts there); an off VM
    cannot have its guest services and IPv4 settings captured; the CSV must
    hold the merge's peak *and* the copy of the consolidated disk, leaving
    200 MB; a replicating VM is merged only to its last parent; a Gen2 VM's
    boot device comes from the capture (blocking on resume if the capture
    has none).

    How a running VM is stopped at the merge step is the operator's explicit
    choice (the plan's "turn off" toggle, ``turn_off``): a guest shutdown
    (``Stop-VM -Force``) by default, or a power-off (``Stop-VM -TurnOff``); the
    plan states what each does (:data:`STOP_CONSEQUENCES`). The choice is this
    run's only: a resumed rebuild asks again.
    """
    vm = store.vm(vm_id)
    if vm is None:
        raise KeyError(f"no VM {vm_id!r} in the current view")
    target = ref(Kind.VM, vm_id)
    wf: Rebuild | None = None
    others: list[Rebuild] = []
    if db:
        rs = RebuildStore.open(db)
        try:
            wf = rs.get(workflow) if workflow else None
            others = [r for r in rs.unfinished(vm_id) if wf is None or r.id != wf.id]
        finally:
            rs.close()
    if workflow and wf is None:
        raise KeyError(f"no rebuild {workflow!r} in the action log")
    pre = Preflight(vm_id)
    findings, add = pre.findings, pre.add

    checkpoints = store.checkpoints_of(vm_id)
    disks = store.disks_of(vm_id)
    lun = store.lun(vm.lun_id) if vm.lun_id else None
    node = store.node(vm.node_id)
    to_last_parent = wf.to_last_parent if wf else vm.replication is not ReplicationState.DISABLED
    done = {s.name for s in wf.steps if s.state in (StepState.DONE, StepState.SKIPPED)} \
        if wf else set()
    resuming = wf is not None and wf.state is not RebuildState.READY
    started = "capture" in done

    pre.check_live(store, vm.node_id)  # only the VM's own node counts
    if not db:
        add(Severity.BLOCKING, "NO_ACTION_LOG",
            "A rebuild keeps its state in the action log, which is not open.")
    if others:
        add(Severity.BLOCKING, "REBUILD_IN_PROGRESS",
            f"An unfinished rebuild of this VM exists ({others[0].status}, "
            f"{others[0].done_count} of {len(STEPS)} steps done): resume it (b) instead.")
    if wf is not None and not wf.state.unfinished:
        add(Severity.BLOCKING, "REBUILD_FINISHED", f"This rebuild is {wf.state.value}.")
    if wf is not None and wf.state is RebuildState.RUNNING and not wf.interrupted:
        add(Severity.BLOCKING, "REBUILD_RUNNING", "This rebuild is running in a console now.")
    busy = list(store.running_tasks_for(target))
    if busy:
        add(Severity.BLOCKING, "VM_BUSY",
            f"A task is running on this VM: {busy[0].kind} {busy[0].pct:.0f}%. Wait for it.")
    broken = chain_broken_message(store, vm.id)
    if broken:
        add(Severity.BLOCKING, "CHAIN_BROKEN", broken)
    stops = "merge" not in done and vm.power is PowerState.RUNNING  # the merge step stops it
    if not started and vm.power in (PowerState.SAVED, PowerState.PAUSED,
                                    PowerState.PAUSED_CRITICAL):
        add(Severity.BLOCKING, "VM_SAVED",
            f"The VM is {vm.power.value}: shutting it down for the rebuild would discard its "
            "memory state. Resume it and let it run, or shut it down from the guest, first.")
    elif stops and turn_off:
        add(Severity.WARNING, "WILL_TURN_OFF",
            f"The VM is {vm.power.value} and you chose to TURN IT OFF at the merge step: "
            f"{STOP_CONSEQUENCES['turn_off']} It stays down until the new VM boots.")
    elif stops:
        add(Severity.WARNING, "WILL_SHUT_DOWN",
            f"The VM is {vm.power.value}: it is captured running (guest services, IPv4 "
            f"settings), then shut down at the merge step. {STOP_CONSEQUENCES['shutdown']} "
            "It stays down until the new VM boots.")
        if vm.integration is not IntegrationState.OK:
            add(Severity.WARNING, "GUEST_SHUTDOWN_UNLIKELY",
                f"The guest's integration services report {vm.integration.value}: the "
                "guest shutdown will probably be refused at the merge step (nothing is sent "
                "then, and the step fails). Shut the guest down from inside first, or tick "
                "'Turn off … instead of a guest shutdown' below if a power-off is "
                "acceptable.")
    elif not started and vm.power is PowerState.OFF:
        add(Severity.WARNING, "GUEST_NOT_REACHABLE",
            "The VM is off: its guest services and IPv4 settings cannot be captured, so the "
            "services comparison will be skipped. Start it first to capture them.")
    if lun is None:
        add(Severity.BLOCKING, "LUN_UNKNOWN", "The volume under this VM's disks is not known.")
    total = sum(d.size_bytes for d in disks)
    space = merge_space(store, vm_id)
    merge_needed = space.needed if "merge" not in done else 0
    freed_worst = space.freed_worst if "merge" not in done else 0
    freed_best = space.freed_best if "merge" not in done else 0
    copy_needed = total if "create" not in done else 0
    needed = merge_needed + copy_needed
    if lun is not None:
        if lun.free_bytes - needed < PAUSE_CRITICAL_MARGIN and needed:
            add(Severity.BLOCKING, "NO_SPACE",
                f"{lun.name} has {human_bytes(lun.free_bytes)} free; the rebuild needs "
                f"{human_bytes(merge_needed)} for the merge and {human_bytes(copy_needed)} for "
                "the new VM's copy of the consolidated disk, and must leave "
                f"{human_bytes(PAUSE_CRITICAL_MARGIN)}. Free space or move the VM first.")
        if lun.state is not LunState.ONLINE:
            add(Severity.BLOCKING if lun.state is not LunState.REDIRECTED else Severity.WARNING,
                "LUN_STATE", f"{lun.name} is {lun.state.value}.")
    if to_last_parent:
        add(Severity.WARNING, "MERGE_TO_LAST_PARENT",
            f"The VM replicates to {vm.replica_target or 'a replica site'}: its chain is merged "
            "only to the last parent (the newest checkpoint stays), so the old VM keeps its "
            "replication identity as fallback. Replication is NOT carried to the new VM: "
            "re-establish it afterwards (Enable-VMReplication, then an initial copy).")
    if vm.generation == 2:
        cap = wf.capture if wf else None
        if cap is not None and not (cap.get("firmware") or {}).get("boot_order"):
            add(Severity.BLOCKING, "NO_BOOT_ORDER",
                "The capture holds no boot order for this Gen2 VM; the new VM would boot from "
                "the wrong device (\"inaccessible boot device\"). Capture again.")
        else:
            add(Severity.INFO, "GEN2_BOOT_FROM_CAPTURE",
                "Gen2: the new VM's first boot device and Secure Boot template are set from "
                "the capture, and checked before it starts; the rebuild stops after the "
                "capture if it holds no boot order.")
    if wf is not None and resuming:
        nxt = wf.next_step
        add(Severity.INFO, "RESUME",
            f"Resuming ({wf.status}): {wf.done_count} of {len(STEPS)} steps are done; it "
            f"continues with '{nxt.title if nxt else '-'}'"
            + (", which was interrupted: verify on the host first (what to do is in the "
               "checklist)" if wf.interrupted else "") + ".")

    when = now
    old = wf.old_vm_name if wf else old_name(vm.name, when)
    info = {"name": vm.name, "node": node.name if node else "", "generation": vm.generation,
            "vcpus": vm.vcpus, "memory_mb": vm.memory_mb, "vm_id": vm.id, "old_name": old}
    commands = step_commands(info, wf.capture if wf else None, to_last_parent,
                             turn_off=turn_off and stops)
    steps_text: list[str] = []
    for name, title in STEPS:
        state = wf.step(name).state.value if wf else "pending"
        extra = ""
        if name == "merge":
            if stops:
                extra = (": stop the VM with Stop-VM -TurnOff (power disconnected), then"
                         if turn_off else ": stop the VM with a guest shutdown (Stop-VM "
                         "-Force), then")
            extra = (f"{extra or ':'} {len(checkpoints)} checkpoint(s); " +
                     ("to the last parent — the newest checkpoint stays (replication)"
                      if to_last_parent else "into a single disk"))
        elif name == "create":
            version = cluster_max_version(store, vm.cluster_id)
            extra = (f": same name, Gen{vm.generation}, {vm.vcpus} vCPU, {vm.memory_mb} MB, NICs "
                     f"and disks from the capture; version {version}")
        elif name == "keep_old":
            extra = f": renamed {old}, off, until you remove it"
        steps_text.append(f"[{state}] {title}{extra}")
    chain_gb = sum(c.size_bytes for c in checkpoints) / 1024**3
    merge_s = 0.0 if "merge" in done or not checkpoints else 60 * (30 + 35 * len(checkpoints)
                                                                    + 0.6 * chain_gb)
    copy_s = copy_needed / (COPY_MB_PER_S * 1024**2)
    likely = merge_s + copy_s + 60 * _FIXED_MIN
    command = "\n".join(f"# {i}. {name}\n{commands[name]}" for i, name in
                        enumerate(STEP_NAMES, start=1) if name not in done)
    return Plan(
        action="rebuild",
        target=target,
        target_name=wf.vm_name if wf else vm.name,
        steps=tuple(steps_text),
        findings=tuple(sorted(findings, key=lambda f: -f.severity.rank)),
        command=command,
        lun_id=lun.id if lun else "",
        lun_name=lun.name if lun else "",
        free_now=lun.free_bytes if lun else None,
        space_needed=needed,
        free_after_worst=(lun.free_bytes + freed_worst - copy_needed) if lun else None,
        free_after_best=(lun.free_bytes + freed_best - copy_needed) if lun else None,
        size_before=total,
        estimate=Estimate(likely * 0.5, likely, likely * 3.0,
                          f"merge of {len(checkpoints)} checkpoint(s), copy of "
                          f"{human_bytes(copy_needed)} at ~{COPY_MB_PER_S:g} MB/s, "
                          f"{_FIXED_MIN:g} min to create and boot"),
        created=now,
        facts={
            "node": info["node"],
            "power": vm.power.value,
            "generation": vm.generation,
            "config_version": vm.config_version,
            "replication": vm.replication.value,
            "checkpoints": len(checkpoints),
            "to_last_parent": to_last_parent,
            "old_name": old,
            "workflow": wf.id if wf else None,
            "resuming": resuming,
            "step_commands": commands,
            "stop": ("turn off" if turn_off else "guest shutdown") if stops else "",
            # The plan screen's option: re-plans with params["turn_off"] flipped.
            **({"toggles": {"turn_off": "Turn off (Stop-VM -TurnOff, pulls the plug) "
                                        "instead of a guest shutdown"}}
               if stops else {}),
        },
        params={"db": db, **({"workflow": workflow} if workflow else {}),
                **({"turn_off": True} if turn_off and stops else {})},
    )
