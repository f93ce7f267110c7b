"""``VSphereBackend``: a vCenter (or ESXi) as a live, read-only event stream.

The stream: ``ConnectionChanged(CONNECTING)`` → the whole inventory as
``Upsert`` events (the update filter's first ``WaitForUpdatesEx`` through the
session's PropertyCollector and ContainerView, plus the recent tasks, in pages
of ``max_object_updates``, mapped as they come) → ``CONNECTED`` → live
``Upsert`` / ``Remove`` events from the same filter's later answers (blocking
long-polls, no periodic re-reads) until ``close()``. The inventory is read
once: there is no separate ``RetrievePropertiesEx``.

Failures never end the stream except where retrying cannot help:

- a lost connection → ``STALE`` with the reason, then ``RECONNECTING``
  attempts with exponential backoff; after a new login the inventory is read
  again and diffed against what the client holds (``Remove`` for objects that
  vanished, ``Upsert`` only for what changed), then ``CONNECTED``;
- an expired session (``NotAuthenticated``) → log in again at once and
  re-read;
- refused credentials, an untrusted certificate or a missing password →
  ``DISCONNECTED`` with the reason (retrying a wrong password risks a
  lockout; an unknown certificate needs the operator).

The password never appears in an event: reasons are scrubbed of it. Every
login first reaches the host and verifies its certificate
(:mod:`ventana.backends.hostcheck`); an untrusted certificate ends the stream
with host, port, the problem and the fingerprint before any login is sent.

Read-only by default (``VSphereConfig.read_only``): ``executor()`` is then
refused by the base class before anything reaches the server. A writable
session gets a ``VSphereExecutor`` (executor.py): remove all snapshots and
consolidate (the ``merge`` action), remove one snapshot, consolidate; its
task rows and progress are queued onto this stream; each vSphere task it
starts is followed through a filter of its own (``Session.watch_task``), not
through ``recentTask``, which vCenter does not promise to push.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyVmomi import vim, vmodl

from ventana.state.events import ConnectionChanged, Event, LinkState, Remove, Upsert
from ventana.state.model import Entity, Key, Kind, Platform, Task, TaskState, key_of

from ..base import Backend, Executor
from ..hostcheck import Untrusted, check_host
from .credentials import DEFAULT_ENV, CredentialError, resolve_password
from .mapping import (
    Lookup,
    cluster_entity,
    frozen_files,
    lun_entity,
    moid,
    node_entity,
    task_entity,
    vm_entities,
)
from .session import (
    DATASTORE_PATHS,
    ObjectUpdate,
    ReadAheadMismatch,
    Session,
    Worker,
    ssl_context,
)

log = logging.getLogger("ventana.backends.vsphere")
# Pushed VM properties after whose change layoutEx (never reliably pushed) is
# refreshed: the snapshot tree, and the VM's datastores — a Storage vMotion
# moves its files (and the vmware.log the stun watcher reads) to another
# directory (VirtualMachine.datastore, pyvmomi docs/vim/VirtualMachine.rst).
STORAGE_TRIGGERS = ("snapshot", "datastore")

ObjKey = tuple[str, str]  # (category, moref value)
VM_T, HOST_T, DS_T, CR_T, TASK_T = "vm", "host", "datastore", "compute", "task"


def category(type_name: str) -> str | None:
    if type_name == "VirtualMachine":
        return VM_T
    if type_name == "HostSystem":
        return HOST_T
    if type_name == "Datastore":
        return DS_T
    if type_name.endswith("ComputeResource"):
        return CR_T
    if type_name == "Task":
        return TASK_T
    return None


class FatalError(Exception):
    """Retrying cannot help; the stream ends DISCONNECTED with this reason."""


#: VMs mapped again per turn of the event loop once the inventory is in (45,000 VMs
#: are ~1.5 s of mapping: in pieces, the console answers keys meanwhile).
REMAP_CHUNK = 2000


@dataclass(frozen=True)
class VSphereConfig:
    """Where and how to connect. Nothing here is secret."""

    host: str
    port: int = 443
    user: str = ""
    ca_file: Path | None = None  # PEM bundle; None: the system store
    insecure: bool = False  # verification off: explicit, shown in the link reason
    password_file: Path | None = None  # mode 0600 checked
    password_env: str = DEFAULT_ENV
    wait_s: int = 10  # WaitForUpdatesEx maxWaitSeconds (also bounds close())
    http_timeout_s: float = 30.0  # socket timeout (at least wait_s + 5 is used)
    # The socket timeout of the answers that hold the whole inventory (the update
    # filter's first answer and its pages): the server builds all of it before it
    # sends a byte. At 45,000 VMs on a busy vcsim that took over 30 s, and the
    # timeout looped into full re-reads (Session.post_raw's ``timeout``).
    inventory_timeout_s: float = 600.0
    keepalive_s: float = 300.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    read_only: bool = True  # a writable session must ask for it
    # How long an action waits for one vSphere task before its outcome is UNKNOWN
    # (the VM is then re-read; nothing is re-sent). Consolidating a large disk
    # takes hours.
    task_timeout_s: float = 6 * 3600.0
    # WaitOptions.maxObjectUpdates (0: no limit): the inventory's page size, and what
    # one answer costs the client to hold while it is read (the raw body, its parse
    # tree, the objects built).
    max_object_updates: int = 500


class VSphereBackend(Backend):
    """A vCenter/ESXi inventory streamed into the shared model.

    Read-only unless ``config.read_only`` is False; then ``executor()`` hands
    out a ``VSphereExecutor`` (remove snapshots, consolidate) whose progress
    and outcome travel on this backend's event stream.
    """

    name = "vsphere"
    platform = Platform.VSPHERE

    def __init__(self, config: VSphereConfig, *, password: str | None = None,
                 password_source: str = "the caller") -> None:
        """``password``: from a caller that prompted or asked a keyring (``password_source``
        says which, for the link reason and the log); else resolved from
        ``config.password_file`` or ``config.password_env`` when the stream starts."""
        super().__init__(f"vsphere://{config.host}:{config.port}", read_only=config.read_only)
        self.config = config
        self._password = password
        self._password_source = password_source
        self._secret = password or ""
        self._worker = Worker()  # the stream's calls (WaitForUpdatesEx blocks it)
        self.action_worker = Worker()  # the executor's calls
        self.refresh_worker = Worker()  # RefreshStorageInfo / RefreshDatastore and re-reads
        self._refreshing: set[str] = set()  # VMs with a storage refresh under way
        self._refresh_again: set[str] = set()  # ... and another asked for meanwhile
        self._background: set[asyncio.Task[None]] = set()
        self.busy_vms: dict[str, str] = {}  # VM id -> our action's task id, while it runs
        self._session: Session | None = None
        self._started = False
        self._closed = False
        self._connected = False
        self._wake = asyncio.Event()  # close()
        self._kick = asyncio.Event()  # something was queued by the executor
        self._out: deque[Event] = deque()
        self._cache: dict[ObjKey, dict[str, Any]] = {}
        self._emitted: dict[ObjKey, dict[Key, Entity]] = {}
        self._owned: set[str] = set()  # vSphere tasks an action of ours started
        self._frozen_of: dict[str, frozenset[str]] = {}  # VM id -> disk files its snapshots froze
        self._frozen_index: dict[str, set[str]] = {}  # disk file -> VMs whose snapshots froze it
        # Kept with the cache, so that a change does not walk every object (45,000 VMs):
        self._context: set[ObjKey] = set()  # clusters, hosts, datastores in the cache
        self._host_of: dict[str, str] = {}  # VM id -> its runtime.host
        self._vms_on: dict[str, set[str]] = {}  # host id -> the VMs on it
        # The SSH side channel (backends/ssh): stun watcher and guest shells.
        self._stun: dict[str, tuple[float, Any]] = {}  # VM id -> (ms, when)
        self.side_channels: list[Any] = []  # start() / close(), run beside the stream
        self.stun_probe: Callable[..., Any] | None = None  # (vm_id, since) -> outcome text
        self.guest_shell: Callable[[str], Any] | None = None  # VM name -> shell for its hooks
        self.reads = 0  # full inventory reads (first connect, re-logins, reconnects)
        self._read_ahead = True  # off for good once a page asked ahead did not match
        self.slow_waits = 0  # update waits that timed out on a server that still answered
        self._said_slow = False  # the link's reason says so (cleared by the next answer)

    def set_read_only(self, value: bool) -> None:
        """Flip the session's mode; executors already handed out re-check it."""
        self._read_only = value

    def _make_executor(self) -> Executor:
        from .executor import VSphereExecutor

        return VSphereExecutor(self)

    # -- what the executor uses -------------------------------------------------
    @property
    def session(self) -> Session | None:
        """The live session, or None while disconnected."""
        return self._session if self._connected and not self._closed else None

    def emit(self, event: Event) -> None:
        """Queue an event for the stream (executor progress, task rows)."""
        self._out.append(event)
        self._kick.set()

    def cached(self, category_: str, oid: str) -> dict[str, Any] | None:
        """The last properties seen for an object (``vm``, ``task``, ...)."""
        return self._cache.get((category_, oid))

    def cached_items(self) -> list[tuple[ObjKey, dict[str, Any]]]:
        return list(self._cache.items())

    def scrub(self, text: str) -> str:
        """``text`` with the password masked (for any message that leaves)."""
        return self._scrub(text)

    def note_stun(self, vm_id: str, ms: float, at: Any) -> None:
        """A stun the SSH side channel saw: kept on the VM across later updates."""
        self._stun[vm_id] = (ms, at)
        key = (VM_T, vm_id)
        for k, entity in list(self._emitted.get(key, {}).items()):
            if k[0] is Kind.VM:
                vm = dataclasses.replace(entity, last_stun_ms=ms, stun_at=at)  # type: ignore[type-var]
                self._emitted[key][k] = vm
                self.emit(Upsert(vm))

    def vm_locations(self) -> list[Any]:
        """Each VM's id, name, host and vmware.log directory (for the stun watcher)."""
        from ..ssh.watcher import VmLocation, vm_log_dir

        hosts = {k[1]: str(p.get("name") or k[1]) for k, p in self._cache.items() if k[0] == HOST_T}
        out = []
        for (cat, oid), props in list(self._cache.items()):
            if cat != VM_T:
                continue
            host_id = moid(props.get("runtime.host"))
            log_dir = vm_log_dir(props.get("layoutEx"))
            if log_dir:
                out.append(VmLocation(oid, str(props.get("name") or oid), host_id,
                                      hosts.get(host_id, host_id), log_dir))
        return out

    def apply_read(self, type_name: str, oid: str, props: dict[str, Any],
                   names: list[str]) -> None:
        """Fold properties read directly (not pushed) into the view, as an update."""
        if (category(type_name), oid) not in self._cache:
            return  # not (or no longer) in the view: a read never creates an object
        assigned = {n: props[n] for n in names if props.get(n) is not None}
        removed = tuple(n for n in names if props.get(n) is None)
        for event in self._apply([ObjectUpdate("modify", type_name, oid, assigned, removed)]):
            self.emit(event)

    async def refresh_vm_storage(self, vm_id: str) -> dict[str, Any] | None:
        """``RefreshStorageInfo`` then re-read the VM's storage properties into the
        view (layoutEx is not reliably pushed); None when not connected or refused."""
        session = self.session
        if session is None:
            return None
        try:
            props = await self.refresh_worker.call(session.refresh_storage, vm_id)
        except Exception as exc:
            log.info("vSphere %s: storage refresh of %s failed: %s", self.target, vm_id,
                     self._describe(exc))
            return None
        if self.session is session:
            # Only layoutEx: the other properties are pushed, and a read that
            # started before a push must not overwrite it.
            self.apply_read("VirtualMachine", vm_id, props, ["layoutEx"])
        return props

    async def refresh_datastores(self, ds_ids: list[str]) -> None:
        """``RefreshDatastore`` on each, then re-read capacity and free space."""
        session = self.session
        for ds_id in ds_ids:
            if session is None or self.session is not session:
                return
            try:
                props = await self.refresh_worker.call(session.refresh_datastore, ds_id)
            except Exception as exc:
                log.info("vSphere %s: RefreshDatastore %s failed: %s", self.target, ds_id,
                         self._describe(exc))
                continue
            self.apply_read("Datastore", ds_id, props, list(DATASTORE_PATHS))

    def _storage_changed(self, vm_id: str) -> None:
        """A VM's snapshot tree changed: its layoutEx may not be pushed, so refresh it
        (one refresh at a time per VM; a change meanwhile asks for one more)."""
        if vm_id in self._refreshing:
            self._refresh_again.add(vm_id)
            return
        self._refreshing.add(vm_id)

        async def run() -> None:
            try:
                while True:
                    self._refresh_again.discard(vm_id)
                    await self.refresh_vm_storage(vm_id)
                    if vm_id not in self._refresh_again or self._closed:
                        return
            finally:
                self._refreshing.discard(vm_id)

        self.spawn(run())

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` beside the stream (cancelled when the stream ends)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def own_task(self, oid: str) -> None:
        """A vSphere task an action of this console started: its progress goes to
        the action's own row, so the task itself is not shown twice."""
        self._owned.add(oid)
        if self.emitted_task(oid) is not None:
            self.emit(Remove(Kind.TASK, oid))

    def emitted_task(self, oid: str) -> Task | None:
        for entity in self._emitted.get((TASK_T, oid), {}).values():
            if isinstance(entity, Task):
                return entity
        return None

    def _drain(self) -> list[Event]:
        out = list(self._out)
        self._out.clear()
        return out

    # -- the stream ------------------------------------------------------------
    async def events(self) -> AsyncIterator[Event]:
        if self._started:
            raise RuntimeError("VSphereBackend.events() can be consumed once")
        self._started = True
        src = self.target
        try:
            source = self._resolve_password()
        except CredentialError as exc:
            yield ConnectionChanged(src, LinkState.DISCONNECTED, self._scrub(str(exc)))
            return
        cfg = self.config
        note = " — TLS verification OFF" if cfg.insecure else ""
        yield ConnectionChanged(
            src,
            LinkState.CONNECTING,
            f"connecting to {cfg.host}:{cfg.port} as {cfg.user} (password from {source}){note}",
        )
        delay = cfg.backoff_initial_s
        attempt = 0
        connected_once = False
        for side in self.side_channels:
            side.start()
        try:
            while not self._closed:
                reason = ""
                relogin = False
                try:
                    session = await self._worker.call(self._login)
                    self._session = session
                    self.reads += 1
                    async for event in self._inventory(session):
                        yield event
                    yield ConnectionChanged(src, LinkState.CONNECTED, note.lstrip(" —"))
                    self._connected = True
                    connected_once = True
                    delay, attempt = cfg.backoff_initial_s, 0
                    async for event in self._follow(session):
                        yield event
                except FatalError as exc:
                    yield ConnectionChanged(src, LinkState.DISCONNECTED, self._scrub(str(exc)))
                    return
                except vim.fault.NotAuthenticated:
                    reason = "session expired (NotAuthenticated); logging in again"
                    relogin = attempt == 0
                except Exception as exc:
                    if self._closed:
                        break
                    if isinstance(exc, ReadAheadMismatch):  # never again: no loop
                        self._read_ahead = False
                    reason = self._describe(exc)
                finally:
                    self._connected = False
                    self._drop_session()
                for event in self._drain():
                    yield event
                if self._closed:
                    break
                log.warning("vSphere %s: %s", src, reason)
                if relogin:
                    attempt += 1
                    yield ConnectionChanged(src, LinkState.RECONNECTING, reason)
                    continue
                if connected_once and attempt == 0:
                    yield ConnectionChanged(src, LinkState.STALE, f"connection lost: {reason}")
                attempt += 1
                yield ConnectionChanged(
                    src,
                    LinkState.RECONNECTING,
                    f"attempt {attempt} in {delay:.1f}s after: {reason}",
                )
                async for event in self._sleep(delay):
                    yield event
                delay = min(delay * 2, cfg.backoff_max_s)
        finally:
            self._closed = True
            self._connected = False
            for side in self.side_channels:
                with contextlib.suppress(Exception):
                    await side.close()
            self._drop_session()
            self._worker.shutdown()
            self.action_worker.shutdown()
            self.refresh_worker.shutdown()
            for task in list(self._background):
                task.cancel()
        for event in self._drain():
            yield event
        yield ConnectionChanged(src, LinkState.DISCONNECTED, "closed")

    async def _inventory(self, session: Session) -> AsyncIterator[Event]:
        """The update filter's first answer — every object, in pages of
        ``max_object_updates`` — mapped page by page as it comes (the console holds
        the table still until CONNECTED), then once more as a whole: what it did not
        bring is gone, and what a VM's entities take from other objects (its
        host's cluster, datastore names, the disks another VM's snapshot froze) is
        complete only once the last page is in. The inventory is read once: there
        is no separate ``RetrievePropertiesEx``."""
        seen: set[ObjKey] = set()
        while True:
            updates = await self._worker.call(session.wait, self.config.wait_s)
            # in order, as in _follow; the whole pass below maps every VM again
            self._out.extend(self._apply(updates or [], seen=seen, whole_pass_follows=True))
            for event in self._drain():
                yield event
            if session.caught_up:
                break
        self._out.extend(self._apply([], full=True, seen=seen))
        vms = [k for k in self._cache if k[0] == VM_T]
        for start in range(0, len(vms), REMAP_CHUNK):  # the loop turns between chunks
            self._out.extend(self._apply([], remap=vms[start:start + REMAP_CHUNK]))
            for event in self._drain():
                yield event
            await asyncio.sleep(0)

    async def _follow(self, session: Session) -> AsyncIterator[Event]:
        """Live changes from ``WaitForUpdatesEx`` (and queued executor events)
        until closed or an error."""
        cfg = self.config
        last_keepalive = time.monotonic()
        pending: asyncio.Future[list[ObjectUpdate] | None] | None = None
        try:
            while not self._closed:
                # Cleared before draining: an event queued while one is handed out
                # (the consumer may take its time) or during the keepalive sets the
                # kick again and is sent next, not after the pending wait (<= wait_s).
                self._kick.clear()
                for event in self._drain():
                    yield event
                if pending is None:
                    if time.monotonic() - last_keepalive >= cfg.keepalive_s:
                        await self._worker.call(session.keep_alive)
                        last_keepalive = time.monotonic()
                    pending = asyncio.ensure_future(self._worker.call(session.wait, cfg.wait_s))
                kick = asyncio.ensure_future(self._kick.wait())
                try:
                    await asyncio.wait({pending, kick}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    kick.cancel()
                if not pending.done():
                    continue
                done, pending = pending, None
                try:
                    updates = done.result()
                except TimeoutError:
                    # No answer within the socket timeout. A server that still answers
                    # a cheap call is slow, not lost: the same version is asked again
                    # (WaitForUpdatesEx returns every change since it: nothing is
                    # missed), the link stays up and says so. Mid-way through the first
                    # answer's pages (not ``caught_up``) the rest may be gone with the
                    # lost answer: that, and a server that does not answer, re-reads.
                    if self._closed or not session.caught_up or not await self._answers(
                            session):
                        raise
                    self.slow_waits += 1
                    self._said_slow = True
                    yield ConnectionChanged(
                        self.target, LinkState.CONNECTED,
                        f"vCenter slow: no update answer within {session.http_timeout:g} s "
                        f"({self.slow_waits} so far); still connected, asking again")
                    continue
                if self._closed:
                    return
                if self._said_slow:  # it answered again: the reason goes
                    self._said_slow = False
                    note = " — TLS verification OFF" if cfg.insecure else ""
                    yield ConnectionChanged(self.target, LinkState.CONNECTED, note.lstrip(" —"))
                if updates:
                    # Behind what is already queued, never ahead of it: a storage re-read
                    # (apply_read) mapped the view before these updates, and its events,
                    # sent after theirs, would bring back what they removed (a removed
                    # snapshot reappeared). One queue, in the order the view changed.
                    self._out.extend(self._apply(updates))
                    for event in self._drain():
                        yield event
                    for upd in updates:
                        if upd.type_name == "VirtualMachine" and upd.kind == "modify" and any(
                            p in upd.assigned or p in upd.removed for p in STORAGE_TRIGGERS
                        ):
                            self._storage_changed(upd.moid)
        finally:
            if pending is not None:
                pending.add_done_callback(_consume)

    async def _answers(self, session: Session) -> bool:
        """Whether the server answers a cheap call (``CurrentTime``) within the socket
        timeout, on the session's worker."""
        try:
            await self._worker.call(session.keep_alive)
        except Exception as exc:
            log.warning("vSphere %s: no answer after a timed-out wait: %s", self.target,
                        self._describe(exc))
            return False
        return True

    async def close(self) -> None:
        """End the stream (it finishes with DISCONNECTED) and log out."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._kick.set()
        session = self._session
        if session is not None:
            _detached(session.cancel_wait)
        if not self._started:
            self._worker.shutdown()
            self.action_worker.shutdown()
            self.refresh_worker.shutdown()

    # -- connecting ------------------------------------------------------------
    def _resolve_password(self) -> str:
        if self._password is not None:
            log.info("vSphere password supplied by %s", self._password_source)
            return self._password_source
        cfg = self.config
        value, source = resolve_password(secret_file=cfg.password_file, env_var=cfg.password_env)
        self._password = self._secret = value
        return source

    def _login(self) -> Session:
        """Runs in the worker thread. Classifies the faults retrying cannot fix."""
        cfg = self.config
        assert self._password is not None
        # Reach and certificate first (issue 12): an untrusted certificate ends
        # the stream before any login; an unreachable host is retried.
        try:
            trust = check_host(cfg.host, cfg.port, ssl_context(cfg.ca_file, insecure=cfg.insecure),
                               timeout=cfg.http_timeout_s)
        except Untrusted as exc:
            raise FatalError(str(exc)) from None
        if not trust.verified:
            log.warning("vSphere %s:%s: TLS verification OFF (explicit flag); certificate "
                        "SHA-256 %s", cfg.host, cfg.port, trust.fingerprint)
        try:
            return Session(
                cfg.host,
                cfg.port,
                cfg.user,
                self._password,
                ca_file=cfg.ca_file,
                insecure=cfg.insecure,
                http_timeout=max(cfg.http_timeout_s, cfg.wait_s + 5),
                max_object_updates=cfg.max_object_updates,
                inventory_timeout=cfg.inventory_timeout_s,
                read_ahead=self._read_ahead,
            )
        except vim.fault.InvalidLogin as exc:
            raise FatalError(f"login refused for {cfg.user}: {exc.msg or 'InvalidLogin'}") from None
        except ssl.SSLCertVerificationError as exc:
            raise FatalError(
                f"TLS certificate of {cfg.host}:{cfg.port} not trusted: {exc.verify_message or exc}"
            ) from None

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            _detached(session.close)

    async def _sleep(self, delay: float) -> AsyncIterator[Event]:
        """Back off for ``delay`` seconds, passing on queued events; ends on close()."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while not self._closed:
            self._kick.clear()  # before draining, as in _follow: no queued event waits
            for event in self._drain():
                yield event
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            waiters = {
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(self._kick.wait()),
            }
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _describe(self, exc: BaseException) -> str:
        msg = getattr(exc, "msg", None) if isinstance(exc, vmodl.MethodFault) else None
        text = f"{type(exc).__name__}: {msg or exc}".rstrip(": ")
        return self._scrub(text)

    # -- the client-side view --------------------------------------------------
    def _apply(self, updates: list[ObjectUpdate], *, full: bool = False,
               seen: set[ObjKey] | None = None, remap: Iterable[ObjKey] = (),
               whole_pass_follows: bool = False) -> list[Event]:
        """Fold updates into the cache, re-map what they touched, return the diff.

        ``seen`` collects the objects updates brought (across the pages of one
        complete read); ``full``: that read is complete — what it did not bring is
        gone. ``remap``: objects to map again though nothing of theirs changed.
        ``whole_pass_follows``: every VM will be mapped again (the inventory's
        pages), so a moved host's VMs are not mapped again now."""
        touched: set[ObjKey] = set(remap)
        seen = set() if seen is None else seen
        for upd in updates:
            cat = category(upd.type_name)
            if cat is None:
                continue
            key = (cat, upd.moid)
            if upd.kind == "leave":
                self._cache.pop(key, None)
            elif upd.kind == "enter" and self._cache.get(key) == upd.assigned:
                # The same properties again (the update filter's first answer repeats
                # the whole view): mapping them again would only give the same entities.
                seen.add(key)
                continue
            elif upd.kind == "enter" or key not in self._cache:
                self._cache[key] = dict(upd.assigned)
                seen.add(key)
            else:
                props = self._cache[key]
                props.update(upd.assigned)
                for name in upd.removed:
                    props.pop(name, None)
                seen.add(key)
            touched.add(key)
        if full:  # a complete read: what it did not return is gone
            for key in set(self._cache) - seen:
                del self._cache[key]
            touched |= set(self._emitted) - set(self._cache)
        self._index(touched)

        events: list[Event] = []
        new: list[Entity]
        gone = [k for k in touched if k not in self._cache and k in self._emitted]
        for key in gone:
            entities = self._emitted.pop(key)
            if key[0] == TASK_T:
                if key[1] not in self._owned:
                    events.extend(self._task_gone(entities))
                continue
            for entity in reversed(list(entities.values())):
                events.append(Remove(entity.KIND, entity.id))

        moved = {k[1] for k in touched if k[0] == HOST_T}  # their VMs' cluster may change
        cache = self._cache
        host_props = {k[1]: cache[k] for k in self._context if k[0] == HOST_T}

        def cluster_of_host(host_id: str) -> str:
            return moid((host_props.get(host_id) or {}).get("parent"))

        # Names are unique per datacenter only: a name two datastores share maps to
        # none of them here (a VM resolves it among its own datastores: mapping).
        ds_names = {k[1]: str(cache[k].get("name")) for k in self._context
                    if k[0] == DS_T and cache[k].get("name")}
        name_count = Counter(ds_names.values())
        ds_by_name = {n: oid for oid, n in ds_names.items() if name_count[n] == 1}
        frozen_by = self._index_frozen(touched)
        look = Lookup(datastore_by_name=lambda name: ds_by_name.get(name, ""),
                      datastore_name=lambda oid: ds_names.get(oid, ""),
                      frozen_elsewhere=lambda vm, name: next(
                          (o for o in frozen_by.get(name, ()) if o != vm), ""))

        order = {CR_T: 0, HOST_T: 1, DS_T: 2, VM_T: 3, TASK_T: 4}
        # Clusters, hosts and datastores always (a few); VMs and tasks where touched,
        # and the VMs of a host that changed (its cluster is theirs).
        mapped = set(self._context)
        mapped.update(k for k in touched if k[0] in (VM_T, TASK_T) and k in cache)
        for host in () if whole_pass_follows else moved:
            mapped.update((VM_T, vm) for vm in self._vms_on.get(host, ()))
        for key in sorted(mapped, key=lambda k: (order[k[0]], k[1])):
            cat, oid = key
            props = cache[key]
            if cat == TASK_T:
                task = task_entity(oid, props.get("info"))
                new = [task] if task is not None else []
                if task is not None:
                    diff = self._diff(key, new)
                    if oid not in self._owned:
                        events.extend(diff)
                    continue
            elif cat == CR_T:
                new = [cluster_entity(oid, props)]
            elif cat == HOST_T:
                new = [node_entity(oid, props, cluster_of_host(oid),
                                   len(self._vms_on.get(oid, ())))]
            elif cat == DS_T:
                mounts = props.get("host") or ()
                first = moid(getattr(mounts[0], "key", None)) if mounts else ""
                new = [lun_entity(oid, props, cluster_of_host(first))]
            else:
                host = moid(props.get("runtime.host"))
                new = vm_entities(oid, props, cluster_of_host(host), look)
                if oid in self._stun and new:
                    ms, at = self._stun[oid]
                    new[0] = dataclasses.replace(new[0], last_stun_ms=ms, stun_at=at)  # type: ignore[type-var]
            events.extend(self._diff(key, new))
        return events

    def _index(self, touched: set[ObjKey]) -> None:
        """Keep ``_context``, ``_host_of`` and ``_vms_on`` with the cache."""
        for key in touched:
            cat, oid = key
            props = self._cache.get(key)
            if cat == VM_T:
                host = moid(props.get("runtime.host")) if props is not None else None
                old = self._host_of.get(oid)
                if old == host:
                    continue
                if old is not None:
                    on = self._vms_on.get(old)
                    if on is not None:
                        on.discard(oid)
                        if not on:
                            del self._vms_on[old]
                if host is None:
                    self._host_of.pop(oid, None)
                else:
                    self._host_of[oid] = host
                    self._vms_on.setdefault(host, set()).add(oid)
            elif cat in (CR_T, HOST_T, DS_T):
                if props is None:
                    self._context.discard(key)
                else:
                    self._context.add(key)

    def _index_frozen(self, touched: set[ObjKey]) -> dict[str, set[str]]:
        """Disk file -> the VMs whose snapshots froze it (kept up to date for the VMs
        an update touched): a linked clone's source disks are the source's."""
        index = self._frozen_index
        for key in touched:
            if key[0] != VM_T:
                continue
            props = self._cache.get(key)
            new = frozen_files(props.get("layoutEx")) if props is not None else frozenset()
            old = self._frozen_of.pop(key[1], frozenset())
            for name in old - new:
                owners = index.get(name)
                if owners is not None:
                    owners.discard(key[1])
                    if not owners:
                        del index[name]
            for name in new - old:
                index.setdefault(name, set()).add(key[1])
            if new:
                self._frozen_of[key[1]] = new
        return index

    @staticmethod
    def _task_gone(entities: dict[Key, Entity]) -> list[Event]:
        """A task left ``recentTask`` (or the server forgot it after a restart).

        A finished task keeps its row (the operator's history); one that was
        still running has an unknown outcome, never a silent success.
        """
        out: list[Event] = []
        for entity in entities.values():
            if isinstance(entity, Task) and not entity.state.finished:
                out.append(
                    Upsert(
                        dataclasses.replace(
                            entity,
                            state=TaskState.UNKNOWN,
                            error="the server no longer reports this task — verify on the host",
                        )
                    )
                )
        return out

    def _diff(self, key: ObjKey, entities: list[Entity]) -> list[Event]:
        old = self._emitted.get(key, {})
        new = {key_of(e): e for e in entities}
        out: list[Event] = [Upsert(e) for k, e in new.items() if old.get(k) != e]
        out.extend(Remove(k[0], k[1]) for k in reversed(list(old)) if k not in new)
        self._emitted[key] = new
        return out


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned future's exception so asyncio does not log it."""
    if not fut.cancelled():
        fut.exception()


def _detached(fn: Any) -> None:
    """Fire-and-forget a blocking pyvmomi call (cancel a wait, log out)."""

    def run() -> None:
        with contextlib.suppress(Exception):
            fn()

    threading.Thread(target=run, daemon=True, name="ventana-vsphere-aux").start()
