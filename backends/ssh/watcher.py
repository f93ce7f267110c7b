"""The stun watcher: vmware.log over SSH, beside the vSphere stream.

For every VM on an ESXi host named in the config, the watcher reads the
stun lines of the VM's ``vmware.log`` and its rotated ``vmware-N.log`` over
SSH (``EsxiShell``: host keys checked against an explicit known_hosts;
one ``grep -H`` per host for up to ``BATCH`` VMs, so only the matching
lines travel) every ``interval_s`` seconds and on demand after a snapshot action, and for each new
``Checkpoint_Unstun`` line:

- sets the VM's ``last_stun_ms`` / ``stun_at`` (through the backend, so the
  vSphere stream's later updates of the VM keep them);
- writes one action-log row (action ``stun``, outcome ``ok`` or ``warning``
  when over the VM's budget);
- raises a ``LONG_STUN`` finding when the stun is over the VM's budget
  (which the planners also read: a pre-flight warning for the next snapshot
  operation on that VM).

Stuns already in the log when the watcher starts set the VM's last stun
(and its finding) but write no rows: a restart does not log them twice.

The watcher never blocks the stream: it runs as its own task and hands its
events to the backend's queue (``backend.emit``). An SSH failure becomes an
``SSH_UNAVAILABLE`` finding on the host with the reason (cleared when the
host answers again), never an exception in the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from ventana.state.actionlog import ActionLog, ActionLogError
from ventana.state.events import Event, FindingRaised, Remove
from ventana.state.model import Finding, Kind, Severity
from ventana.state.plans import findings_to_log
from ventana.state.sanitize import clean

from ..credentials import CredentialError, find_password
from .client import CommandFailed, EsxiShell, SshError, datastore_path
from .stun import StunEvent, parse_stun_lines, stun_findings

log = logging.getLogger("ventana.backends.ssh.watcher")

DEFAULT_PASSWORD_ENV = "VENTANA_SSH_PASSWORD"
RECENT = 50  # stuns kept per VM for the outcome of an action
BATCH = 100  # VM logs per grep (one round trip per host and batch)
STUN_PATTERN = "Checkpoint_?Unstun"
CLOCK_SLACK = timedelta(seconds=5)  # the host's clock against ours
KEYRING_SERVICE = "ventana-ssh"
ROTATED_GLOB = "vmware-*.log"  # ESXi's rotated logs: vmware-1.log, vmware-2.log, ...
_LOG_NAME = re.compile(r"vmware(?:-[0-9]+)?\.log:")  # grep -H's file name prefix


@dataclass(frozen=True, slots=True)
class SshTarget:
    """How to reach one ESXi host (or guest) over SSH. Nothing here is secret."""

    host: str  # address to connect to
    known_hosts: Path
    port: int = 22
    user: str = "root"
    key: Path | None = None  # private key file; else a password (env, keyring, secret file)
    password_file: Path | None = None
    password_env: str = DEFAULT_PASSWORD_ENV

    def shell(self) -> EsxiShell:
        """A verified shell; the password (when no key) from the credentials module."""
        password = None
        if self.key is None:
            cred = find_password(
                self.user, label="SSH", env_var=self.password_env,
                keyring_service=f"{KEYRING_SERVICE}:{self.host}",
                password_file=self.password_file,
            )
            if cred is None:
                raise SshError(
                    f"no SSH password for {self.user}@{self.host}: set {self.password_env}, "
                    "store it in the OS keyring or name a key file"
                )
            password = cred.password
        return EsxiShell(
            self.host, self.port, self.user, known_hosts=self.known_hosts,
            client_keys=[str(self.key)] if self.key is not None else None, password=password,
        )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SshTarget:
        if not options.get("known_hosts"):
            raise ValueError(f"SSH target {options.get('host')!r} needs known_hosts")
        return cls(
            host=str(options["host"]),
            known_hosts=Path(str(options["known_hosts"])).expanduser(),
            port=int(options.get("port", 22)),
            user=str(options.get("user", "root")),
            key=Path(str(options["key"])).expanduser() if options.get("key") else None,
        )


@dataclass(frozen=True, slots=True)
class VmLocation:
    vm_id: str
    vm_name: str
    host_id: str
    host_name: str
    log_dir: str  # "[datastore] dir" or an absolute path


class StunSource(Protocol):
    """What the watcher needs from a backend (``VSphereBackend`` has it)."""

    target: str

    @property
    def read_only(self) -> bool: ...

    def emit(self, event: Event) -> None: ...

    def note_stun(self, vm_id: str, ms: float, at: datetime) -> None: ...

    def vm_locations(self) -> list[VmLocation]: ...


class StunWatcher:
    def __init__(
        self,
        source: StunSource,
        hosts: Mapping[str, SshTarget],  # ESXi host name (as vSphere names it) -> how to reach it
        *,
        budget_ms: Callable[[str], float],  # VM name -> stun budget
        log: ActionLog | None = None,
        interval_s: float = 60.0,
        started: datetime | None = None,
    ) -> None:
        self.source = source
        self.hosts = dict(hosts)
        self.budget_ms = budget_ms
        self.log = log
        self.interval_s = interval_s
        self.started = started
        self._seen: dict[str, datetime] = {}  # VM id -> newest stun handled
        self._recent: dict[str, list[StunEvent]] = {}  # VM id -> its latest stuns
        self._failing: set[str] = set()  # host ids with an SSH_UNAVAILABLE finding
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- life -----------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never take the console down
                log.warning("stun watcher: %s", exc)
            await asyncio.sleep(self.interval_s)

    # -- reading --------------------------------------------------------------
    async def poll(self, only_vm: str | None = None) -> list[StunEvent]:
        """Read the logs once (of one VM, or of every VM on a configured host)."""
        async with self._lock:
            by_host: dict[str, list[VmLocation]] = {}
            for loc in self.source.vm_locations():
                if loc.host_name in self.hosts and (only_vm is None or loc.vm_id == only_vm):
                    by_host.setdefault(loc.host_name, []).append(loc)
            new: list[StunEvent] = []
            for host_name, locs in by_host.items():
                new.extend(await self._read_host(host_name, locs))
            return new

    async def _read_host(self, host_name: str, locs: list[VmLocation]) -> list[StunEvent]:
        target = self.hosts[host_name]
        host_id = locs[0].host_id
        new: list[StunEvent] = []
        try:
            shell = target.shell()
            async with shell:
                for i in range(0, len(locs), BATCH):
                    texts = await _stun_lines(shell, locs[i : i + BATCH])
                    for loc in locs[i : i + BATCH]:
                        new.extend(self._handle(loc, parse_stun_lines(texts.get(loc.vm_id, ""))))
        except (SshError, CredentialError, OSError, ValueError) as exc:
            self._ssh_failed(host_id, host_name, target, exc)
            return new
        if host_id in self._failing:
            self._failing.discard(host_id)
            self.source.emit(Remove(Kind.FINDING, f"ssh:{host_id}"))
        return new

    def _ssh_failed(self, host_id: str, host_name: str, target: SshTarget, exc: Exception) -> None:
        reason = clean(str(exc)) or type(exc).__name__
        log.warning("SSH to %s failed: %s", host_name, reason)
        self._failing.add(host_id)
        self.source.emit(FindingRaised(Finding(
            f"ssh:{host_id}", Severity.WARNING, f"{Kind.NODE.value}:{host_id}", "SSH_UNAVAILABLE",
            f"Stun times of the VMs on {clean(host_name)} cannot be read over SSH "
            f"({clean(target.user)}@{clean(target.host)}:{target.port}): {reason}",
        )))

    def _handle(self, loc: VmLocation, events: list[StunEvent]) -> list[StunEvent]:
        if not events:
            return []
        events = sorted(events, key=lambda e: e.timestamp)
        seen = self._seen.get(loc.vm_id)
        first_read = seen is None
        new = [e for e in events if seen is None or e.timestamp > seen]
        if not new:
            return []
        self._seen[loc.vm_id] = new[-1].timestamp
        self._recent[loc.vm_id] = (self._recent.get(loc.vm_id, []) + new)[-RECENT:]
        last = new[-1]
        self.source.note_stun(loc.vm_id, last.duration_us / 1000, last.timestamp)
        budget_s = self.budget_ms(loc.vm_name) / 1000
        if first_read:  # history: the latest stun only, and no rows
            report = [last]
            logged = [e for e in new if self.started is not None and e.timestamp >= self.started]
        else:
            report = logged = new
        for finding in stun_findings(loc.vm_id, loc.vm_name, report, budget_s):
            self.source.emit(FindingRaised(finding))
        for event in logged:
            self._log_row(loc, event, budget_s)
        return new

    def _log_row(self, loc: VmLocation, event: StunEvent, budget_s: float) -> None:
        if self.log is None:
            return
        over = event.duration_s > budget_s
        findings = stun_findings(loc.vm_id, loc.vm_name, [event], budget_s)
        try:
            self.log.record(
                action="stun",
                target_system=self.source.target,
                mode="read-only" if self.source.read_only else "read-write",
                target_object=f"{Kind.VM.value}:{loc.vm_id}",
                target_name=loc.vm_name,
                plan={
                    "stun_ms": round(event.duration_us / 1000, 3),
                    "at": event.timestamp.isoformat(),
                    "budget_ms": budget_s * 1000,
                    "source": f"{loc.host_name}:{loc.log_dir}/vmware.log",
                },
                findings=findings_to_log(tuple(findings)),
                override=False,
                confirmed=False,
                outcome="warning" if over else "ok",
                error=findings[0].message if findings else "",
            )
        except ActionLogError as exc:
            log.warning("stun row not logged: %s", exc)

    # -- after an action ---------------------------------------------------------
    async def probe(self, vm_id: str, since: datetime, *, tries: int = 3,
                    wait_s: float = 1.0) -> str:
        """The stun(s) the VM's log shows since ``since`` (for an action's outcome).

        ESXi writes the line when the VM is released, so the log is read
        again a few times; a few seconds of clock skew are allowed for.
        """
        loc = next((v for v in self.source.vm_locations() if v.vm_id == vm_id), None)
        if loc is None or loc.host_name not in self.hosts:
            return ""
        since = since - CLOCK_SLACK
        for attempt in range(tries):
            await self.poll(only_vm=vm_id)
            if loc.host_id in self._failing:
                return f"stun not read: SSH to {clean(loc.host_name)} failed (see findings)"
            if self._since(vm_id, since):
                break
            if attempt + 1 < tries:
                await asyncio.sleep(wait_s)
        stuns = self._since(vm_id, since)
        if not stuns:
            return f"no stun line in {clean(loc.vm_name)}'s vmware.log since the action started"
        budget = self.budget_ms(loc.vm_name)
        longest = max(stuns, key=lambda e: e.duration_us)
        ms = longest.duration_us / 1000
        count = f"{len(stuns)} stuns, longest " if len(stuns) > 1 else "stun "
        text = f"{count}{ms:.0f} ms at {longest.timestamp:%H:%M:%S} UTC (budget {budget:.0f} ms)"
        return text + (" — OVER BUDGET" if ms > budget else "")

    def _since(self, vm_id: str, since: datetime) -> list[StunEvent]:
        return [e for e in self._recent.get(vm_id, ()) if e.timestamp >= since]


async def _stun_lines(shell: EsxiShell, locs: list[VmLocation]) -> dict[str, str]:
    """The stun lines of several VMs' logs in one round trip (``grep -H``).

    Each VM's ``vmware.log`` and its rotated ``vmware-N.log`` files: ESXi
    rotates the log (``vmx.log.rotateSize`` / ``vmx.log.keepOld``, and at each
    power-on), so a stun from before a rotation is in a ``vmware-N.log``. The
    rotated names are matched by the ESXi shell's pathname expansion; a VM
    with none leaves the pattern as is (POSIX sh), which grep reports as a
    missing file. Only the matching lines travel (a vmware.log runs to
    megabytes). grep's exit status 1 is "no stun line yet"; a missing log (2,
    with the others still read) skips that VM; no exit status at all raises
    ``OutcomeUnknown``.
    """
    dirs = {str(PurePosixPath(datastore_path(loc.log_dir))): loc.vm_id for loc in locs}
    words = []
    for d in dirs:
        words += [shlex.quote(f"{d}/vmware.log"), shlex.quote(d) + "/" + ROTATED_GLOB]
    command = "grep -H -E " + shlex.quote(STUN_PATTERN) + " -- " + " ".join(words)
    result = await shell.run_unchecked(command)
    if result.exit_status not in (0, 1, 2):
        raise CommandFailed(result)
    if result.exit_status == 2 and result.stderr:
        missing = [e for e in result.stderr.splitlines() if ROTATED_GLOB not in e]
        if missing:  # (no rotated log yet is not worth a line)
            log.info("vmware.log not read: %s", clean("\n".join(missing)[-300:]))
    by_len = sorted(dirs, key=len, reverse=True)  # "a/b/…" must not match directory "a"
    out: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        for d in by_len:
            if not line.startswith(d + "/"):
                continue
            name = _LOG_NAME.match(line, len(d) + 1)
            if name is not None:
                out.setdefault(dirs[d], []).append(line[name.end() :])
                break
    return {vm_id: "\n".join(lines) for vm_id, lines in out.items()}


def vm_log_dir(layout: Any) -> str:
    """The directory of a VM's vmware.log from its ``layoutEx`` ('' if unknown)."""
    files = list(getattr(layout, "file", None) or ())
    for f in files:
        name = str(getattr(f, "name", "") or "")
        # (a log at the datastore's root, as vcsim reports it, is not in the VM's home)
        if str(getattr(f, "type", "")) == "log" and name.endswith("/vmware.log"):
            return str(PurePosixPath(name).parent)
    for f in files:  # the VM's home: where its configuration (or first disk) lives
        name = str(getattr(f, "name", "") or "")
        if str(getattr(f, "type", "")) in ("config", "diskDescriptor") and "/" in name:
            return name.rsplit("/", 1)[0]
    return ""
