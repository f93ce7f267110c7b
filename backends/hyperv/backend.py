"""The Hyper-V failover cluster backend: PowerShell Remoting to every node, poll and diff.

Nodes: the configured addresses, or — with none configured — the nodes
``Get-ClusterNode`` lists through the cluster name (source
``hyperv:CLUSTER``; each node is then reached by its name, or by the
address ``resolve`` gives it). For each node the backend opens one
PowerShell session (``session.NodeSession``), emits
``ConnectionChanged(CONNECTING)``, reads everything (``commands``: one JSON
answer per cmdlet, a handful of round trips per node whatever its size),
maps it (``mapping``), emits the entities as ``Upsert``s, then
``CONNECTED``. From then on a poll starts every ``poll_interval`` seconds
and emits only what changed (``Upsert``/``Remove``); beside it, a second
session per node streams VM power changes (a CIM indication subscription,
``Wait-Event`` round trips) so they do not wait for the poll; a node that
refuses the subscription is polled only. The same session subscribes to
checkpoint changes (every node) and CSV free-space changes (the first node)
and answers them with a targeted re-read of that one VM, the new free space
the event carries, or the files written now on a CSV that lost space
(``subscriptions``), never a full poll; the poll stays the safety net.
Cluster-wide facts (nodes, CSVs, their space and backup state) are read from
the lowest-numbered node that answers. When a node stops answering its
source goes ``STALE`` with the reason (its entities stay, marked stale by
the store), then ``RECONNECTING`` with exponential backoff until it answers
again; a full re-read on reconnect emits only the differences. A refused
password is not retried (retries could lock the account): the source goes
``DISCONNECTED`` with the reason. An untrusted certificate is refused before
anything is sent (``session``: hostcheck's words — the problem, the SHA-256
fingerprint, what to do) and retried with backoff, each retry checking it
again; for the cluster name (discovery) it ends as ``DISCONNECTED``.

Actions: a writable backend (``read_only=False``) hands out a
``HyperVExecutor``; the workflows live in their own modules and see the
backend only through its ``context`` (``context.HyperVContext``: the one
node lookup, the inventory, emit and task rows, re-read, action sessions):
merge and upgrade in ``merge``, compact and delete in ``cleanup``, the
rebuild's six steps in ``rebuild``. A read-only backend refuses
``executor()``, every executor re-checks the mode, and the node sessions of
a read-only backend refuse to send a mutating command at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ventana.state.events import (
    ConnectionChanged,
    Event,
    LinkState,
    Remove,
    Upsert,
)
from ventana.state.model import (
    VM,
    Entity,
    IntegrationState,
    Key,
    Kind,
    Lun,
    Platform,
    PowerState,
    VirtualDisk,
    key_of,
)

from ..base import ActionResult, Backend, Executor, StepResult
from . import commands as cmd
from . import subscriptions as subs
from .backup import (
    CAMPAIGN_PORTS,
    CAMPAIGN_SERVICES,
    NEEDS_DELEGATION,
    AgentFacts,
    VmBackupFacts,
    is_unc,
    read_agent,
    read_vm_facts,
)
from .cleanup import Cleanup
from .context import HyperVContext, HyperVNode
from .credentials import Credential
from .mapping import (
    ClusterRead,
    Mount,
    NodeFacts,
    NodeRead,
    as_id,
    as_int,
    cluster_entities,
    cluster_name,
    node_entities,
    node_facts,
    node_name,
    path_key,
    power_state,
    props,
    text,
)
from .merge import run_merge, run_upgrade
from .rebuild import HyperVRebuild
from .session import (
    Answer,
    AuthFailed,
    CommandFailed,
    NodeSession,
    SessionError,
    TlsRefused,
)
from .subscriptions import CHECKPOINT_EVENTS, CSV_EVENTS, Source

log = logging.getLogger(__name__)

VHD_BATCH = 500
MAX_CHAIN_ROUNDS = 64


@dataclass(frozen=True, slots=True)
class HyperVConfig:
    """One Hyper-V failover cluster target (from the TOML config and the command line).

    - ``nodes``: node addresses, ``host`` or ``host:port`` (connect by the name
      in the node's certificate); empty: discover them — connect to
      ``cluster`` (the cluster name answers from its current owner), run
      ``Get-ClusterNode``, then open one session per node by its name. A
      target that is not a cluster (Get-ClusterNode refused) is read as a
      single host (its reads still need the FailoverClusters cmdlets: a
      standalone host is not supported yet). ``discover=False``: connect to
      ``cluster`` only.
    - ``stream``: beside the polls, one more session per node subscribes to
      VM state changes (``Register-CimIndicationEvent`` on
      ``Msvm_ComputerSystem``) and waits for them (``Wait-Event``, at most
      ``stream_wait_s`` per round trip): a power change reaches the screen
      in about a second instead of at the next poll. A node that refuses
      the subscription is polled only. The same session subscribes to
      checkpoint and CSV free-space changes (``subscriptions``).
    - ``resolve``: ``{name: "host[:port]"}`` — where to reach a node (or the
      cluster name) instead of its name, like ``curl --resolve``; for labs and
      the test endpoint, where every name is 127.0.0.1 on its own port. The
      TLS certificate is checked against the NAME (as curl does): it must carry the name.
    - ``ca_bundle``: the CA certificate(s) that signed the nodes' WinRM
      certificates; None: the certifi bundle pypsrp uses by default.
    - ``verify_tls``: False turns verification off — an explicit flag, logged
      as a warning at every connect.
    - Backup readiness (``backup``; docs/backup-readiness.md): ``backup_services``
      — the backup agent's service names or display names (default the source
      campaign's Avamar plug-in; ``backup_service`` adds one name), its
      ``backup_ports`` (default the campaign's), read with each VM's
      online-backup facts at most every ``backup_interval`` seconds;
      ``backup_checks=False`` reads none of it. ``backup_version_key``/
      ``backup_version_value``: a registry value holding the agent's version
      (e.g. ``HKLM:\\SOFTWARE\\Vendor\\Agent``, ``Version``) instead of its
      executable's file version.
    """

    cluster: str
    username: str
    nodes: tuple[str, ...] = ()
    port: int = 5986
    auth: str = "negotiate"
    ca_bundle: str | None = None
    verify_tls: bool = True
    read_only: bool = True
    poll_interval: float = 15.0
    command_timeout: float = 60.0
    connection_timeout: float = 10.0
    operation_timeout: int = 20
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    backup_service: str | None = None
    backup_version_key: str | None = None
    backup_version_value: str = "Version"
    backup_services: tuple[str, ...] = CAMPAIGN_SERVICES
    backup_ports: tuple[int, ...] = CAMPAIGN_PORTS
    backup_interval: float = 60.0
    backup_checks: bool = True
    discover: bool = True
    resolve: tuple[tuple[str, str], ...] = ()
    stream: bool = True
    stream_wait_s: int = 20

    @property
    def discovers(self) -> bool:
        return self.discover and not self.nodes

    def address_of(self, name: str) -> tuple[str, int]:
        """Where to connect to reach ``name`` (``resolve`` first, else the name itself)."""
        target = dict((k.casefold(), v) for k, v in self.resolve).get(name.casefold(), name)
        host, sep, port = target.rpartition(":")
        if sep and port.isdigit() and "]" not in port:
            return host.strip("[]"), int(port)
        return target, self.port

    def addresses(self) -> list[tuple[str, int]]:
        return [(host, port) for _, host, port in self.named_addresses()]

    def named_addresses(self) -> list[tuple[str, str, int]]:
        """(name, host, port) per configured node (or the cluster name alone); ``resolve``
        applies to a name given without a port."""
        out = []
        for item in self.nodes or (self.cluster,):
            host, sep, port = item.rpartition(":")
            if sep and port.isdigit() and "]" not in port:
                out.append((host.strip("[]"), host.strip("[]"), int(port)))
            else:
                out.append((item, *self.address_of(item)))
        return out


_END = object()


class HyperVBackend(Backend):
    """Live inventory of a Hyper-V failover cluster over PowerShell Remoting."""

    name = "hyperv"
    platform = Platform.HYPERV

    def __init__(self, config: HyperVConfig, credential: Credential) -> None:
        super().__init__(f"hyperv://{config.cluster}", read_only=config.read_only)
        self.config = config
        self._credential = credential
        if not config.verify_tls:
            cert: bool | str = False
        else:
            cert = config.ca_bundle or True
        self._cert: bool | str = cert
        self._names: dict[tuple[str, int], str] = {}  # address -> the node name it stands for
        self._nodes: list[HyperVNode] = []
        self._discovery: HyperVNode | None = None
        self._tasks: list[asyncio.Task[None]] = []
        if config.discovers:
            host, port = config.address_of(config.cluster)
            self._discovery = HyperVNode(
                -1, host, port, self._new_session(host, port, config.cluster),
                f"hyperv:{config.cluster}"
            )
        else:
            for index, (name, host, port) in enumerate(config.named_addresses()):
                session = self._new_session(host, port, name if name != host else None)
                self._nodes.append(
                    HyperVNode(index, host, port, session, f"hyperv:{host}:{port}")
                )
        self._actions: set[NodeSession] = set()  # sessions of running actions
        self._watchers: set[NodeSession] = set()  # streaming sessions
        #: Per node source: True while its VM event stream is up, False when refused/lost.
        self.streaming: dict[str, bool] = {}
        self._streamed: dict[str, tuple[float, PowerState]] = {}  # vm id -> (when, power)
        #: Per node source: the change subscriptions it holds beside the power stream
        #: (``subscriptions``: checkpoints on every node, CSV space on the first).
        self.changes: dict[str, tuple[str, ...]] = {}
        #: (source, vm id) -> (when its targeted re-read began, its entities): newer than
        #: a poll that began before it (the poll keeps them).
        self._reread: dict[tuple[str, str], tuple[float, list[Entity]]] = {}
        #: volume key -> (when, the streamed partition row): newer than an older cluster read.
        self._partition_changes: dict[str, tuple[float, dict[str, Any]]] = {}
        self._growth = subs.Growth()
        self._replication: dict[str, list[object]] = {}  # source -> last Get-VMReplication rows
        #: source -> (what its last mapping was made from, the entities it gave): a poll
        #: whose answers are the same text maps to the same entities (``_mapped_from``).
        self._mapped: dict[str, tuple[tuple[object, ...], tuple[Entity, ...]]] = {}
        #: What the targeted updates did, newest last (tests, the bench): (kind, monotonic s).
        self.targeted: list[tuple[str, float]] = []
        #: Seconds each targeted VM re-read took (sent → published), newest last (the bench).
        self.reread_s: list[float] = []
        self._queue: asyncio.Queue[object] | None = None
        self._started = False
        self._closed = False
        self._known: dict[Key, Entity] = {}
        self._owner: dict[Key, str] = {}
        self._scopes: dict[str, set[Key]] = {}
        self._cluster_read: ClusterRead | None = None
        #: When the last cluster-wide read finished (loop time); the node making the first
        #: one and its end: the other nodes' first polls wait for it, not read it again.
        self._cluster_read_at = float("-inf")
        self._cluster_reader: tuple[HyperVNode, asyncio.Future[None]] | None = None
        #: Sources whose first poll is over (answered or failed): the streams and the
        #: deferred reads wait for all of them (``_after_inventory``).
        self._first_polled: set[str] = set()
        self._inventory_in = asyncio.Event()  # bound to the loop at its first wait
        #: Sources past that wait (``_after_inventory``): their backup facts may be read.
        self._released: set[str] = set()
        self._cluster_id = config.cluster
        self._mounts: list[Mount] = []
        self._facts: dict[str, NodeFacts] = {}  # node name (casefolded) -> backup agent
        self._vm_counts: dict[str, Counter[str]] = {}  # source -> VMs per host node
        #: Per node source: when backup readiness was last read, and what it said.
        self._backup_read: dict[str, tuple[float, AgentFacts, dict[str, VmBackupFacts]]] = {}
        self._backup_spread: set[str] = set()  # node sources given their backup slot
        #: The cluster groups last read, by the digest of their text (``read_vm_facts``).
        self._groups_seen: dict[bytes, dict[str, str]] = {}
        self._phased: set[str] = set()  # node sources whose polls were given their turn
        #: What the workflows (merge, upgrade, clean-up, rebuild) may use of this backend.
        self.context = HyperVContext(
            target=self.target,
            is_read_only=lambda: self.read_only,
            inventory=MappingProxyType(self._known),
            owners=MappingProxyType(self._owner),
            nodes=lambda: self._nodes,
            emit=self._emit,
            reread=self._poll,
            reread_vm=self.reread_vm,
            new_session=self._new_session,
            actions=self._actions,
            command_timeout=config.command_timeout,
            poll_interval=config.poll_interval,
        )

    def _new_session(self, host: str, port: int, name: str | None = None) -> NodeSession:
        """A session to a node; ``name``: the node's name (remembered per address), which
        its errors say and its certificate must carry (checked even when ``resolve``
        reaches it at another address)."""
        config = self.config
        if name:
            self._names[(host, port)] = name
        name = name or self._names.get((host, port))
        session = NodeSession(
            host,
            port=port,
            username=self._credential.username,
            password=self._credential.password,
            auth=config.auth,
            cert_validation=self._cert,
            connection_timeout=config.connection_timeout,
            operation_timeout=config.operation_timeout,
            command_timeout=config.command_timeout,
            name=name,
        )
        session.allow_mutating = not config.read_only
        return session

    def __repr__(self) -> str:
        return f"HyperVBackend({self.target!r}, user={self._credential.username!r})"

    @property
    def sources(self) -> list[str]:
        """The ConnectionChanged source names: the cluster name while discovering, each node."""
        first = [self._discovery.source] if self._discovery is not None else []
        return first + [n.source for n in self._nodes]

    def sessions(self) -> Sequence[NodeSession]:
        """The read sessions: the cluster name's while discovering, then each node's."""
        first = [self._discovery.session] if self._discovery is not None else []
        return first + [n.session for n in self._nodes]

    def _make_executor(self) -> Executor:
        return HyperVExecutor(self)

    # -- the stream ---------------------------------------------------------------------
    async def events(self) -> AsyncIterator[Event]:
        """Per node: CONNECTING, the inventory as upserts, CONNECTED, then changes.

        Runs until ``close()`` (then each node ends with DISCONNECTED). Can be
        consumed once.
        """
        if self._started:
            raise RuntimeError("HyperVBackend.events() can be consumed once")
        self._started = True
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._queue = queue
        if self._closed:
            for source in self.sources:
                yield ConnectionChanged(source, LinkState.DISCONNECTED, "closed")
            return
        tasks = self._tasks
        if self._discovery is not None:
            tasks.append(
                asyncio.create_task(self._discover(self._discovery), name="hyperv-discover")
            )
        for node in self._nodes:
            self._start_node(node)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                yield item  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            discovery = [self._discovery] if self._discovery is not None else []
            await asyncio.gather(
                *(node.session.close() for node in [*discovery, *self._nodes]),
                *(action.close() for action in list(self._actions)),
                *(watch.close() for watch in list(self._watchers)),
                return_exceptions=True,
            )
        for source in self.sources:
            yield ConnectionChanged(source, LinkState.DISCONNECTED, "closed")

    def _start_node(self, node: HyperVNode) -> None:
        """The node's poll loop; its event stream starts once its first inventory is in
        (``_start_watch``): 64 streams opening and subscribing beside 64 first reads
        only slow the inventory down, and a change before the stream is up is in the
        next poll."""
        self._tasks.append(
            asyncio.create_task(self._node_loop(node), name=f"hyperv-{node.source}")
        )

    def _start_watch(self, node: HyperVNode) -> None:
        if self.config.stream and not self._closed:
            self._tasks.append(
                asyncio.create_task(self._watch_loop(node), name=f"hyperv-watch-{node.source}")
            )

    async def _watch_loop(self, node: HyperVNode) -> None:
        """Stream VM state changes from one node on its own session, beside the polls.

        Subscribe, then wait-and-drain round trips; a lost session
        re-subscribes with backoff. A node that refuses the subscription (a
        terminating error) is left to the polls. Stopped by cancellation: the
        waiting pipeline is stopped and the session closed.
        """
        cfg = self.config
        where = f"{node.host}:{node.port}"
        session = self._new_session(node.host, node.port)
        self._watchers.add(session)
        failures = 0
        try:
            while not self._closed:
                try:
                    await session.run(cmd.subscribe_vm_events())
                except (AuthFailed, TlsRefused):
                    return  # the poll loop reports it
                except CommandFailed as exc:
                    log.info("%s refused the VM event subscription; polling only: %s",
                             where, exc)
                    self.streaming[node.source] = False
                    return
                except SessionError:
                    failures += 1
                    delay = min(cfg.backoff_max, cfg.backoff_initial * 2 ** (failures - 1))
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    continue
                self.streaming[node.source] = True
                failures = 0
                sources = await self._subscribe_changes(session, node)
                while not self._closed:
                    try:
                        answers = await session.run_many(
                            subs.wait_changes(sources, cfg.stream_wait_s),
                            timeout=cfg.stream_wait_s + cfg.command_timeout,
                        )
                        rows = {s.name: answers[1 + 2 * i].output
                                for i, s in enumerate(sources)}
                        self._apply_vm_events(rows[cmd.VM_EVENTS])
                        await self._apply_changes(session, node, rows)
                    except SessionError as exc:
                        log.debug("%s: VM event wait ended: %s", where, exc)
                        self.streaming[node.source] = False
                        # A dropped stream is the first sign of a dead node: stale at once,
                        # not after the next poll's timeouts (the poll reconnects it).
                        if node.healthy:
                            node.healthy = False
                            self._emit(self._link(
                                node, LinkState.STALE,
                                f"{node.session.where}: the VM event stream dropped: {exc}"))
                        break  # a new session: subscribe again
        finally:
            self._watchers.discard(session)
            await session.close()

    def _apply_vm_events(self, rows: list[object]) -> None:
        """A streamed power change: the VM as last read, with its new power state."""
        now = asyncio.get_running_loop().time()
        for row in rows:
            p = props(row)
            vm_id = as_id(p.get("Name"))
            name = cmd.event_state(as_int(p.get("EnabledState")),
                                   text(p.get("OtherEnabledState")), as_int(p.get("HealthState")))
            if not vm_id or name is None:
                continue
            power = power_state(name)
            self._streamed[vm_id] = (now, power)
            vm = self._known.get((Kind.VM, vm_id))
            if not isinstance(vm, VM) or vm.power is power:
                continue
            integration = vm.integration
            if power in (PowerState.OFF, PowerState.SAVED):
                integration = IntegrationState.OFF
            fresh = dataclasses.replace(vm, power=power, integration=integration)
            self._known[(Kind.VM, vm_id)] = fresh
            self._emit(Upsert(fresh))

    # -- changes other than power (subscriptions.py) ----------------------------------------
    async def _subscribe_changes(self, session: NodeSession, node: HyperVNode) -> list[Source]:
        """Subscribe the watch session to checkpoint changes (every node) and CSV free-space
        changes (the first node: ``root/MSCluster`` answers the same from every node).
        A refused subscription leaves that change to the polls."""
        wanted = [subs.CHECKPOINTS] + ([subs.CSV_SPACE] if node.index == 0 else [])
        sources = [subs.VM_STATE]
        for source in wanted:
            try:
                await session.run(subs.subscribe(source))
            except SessionError as exc:
                log.info("%s refused the %s; polled only: %s", session.where,
                         source.label.replace("changes", "subscription"), exc)
                continue
            sources.append(source)
        self.changes[node.source] = tuple(s.name for s in sources[1:])
        return sources

    async def _apply_changes(self, session: NodeSession, node: HyperVNode,
                             rows: dict[str, list[object]]) -> None:
        """CSV events: the new free space (published first: it needs no round trip);
        checkpoint events: re-read each VM they name; then the files written now on a
        CSV that lost :data:`subs.GROWTH_STEP`."""
        partitions = rows.get(CSV_EVENTS, ())
        grown = self._apply_partitions(partitions) if partitions else []
        for vm_id in subs.vm_ids(rows.get(CHECKPOINT_EVENTS, ())):
            try:
                await self._reread_vm(session, node, vm_id)
            except CommandFailed as exc:  # gone, moved: the next poll tells
                log.debug("%s: re-reading VM %s failed: %s", session.where, vm_id, exc)
        for lun_id in grown:
            try:
                await self._reread_growth(session, lun_id)
            except CommandFailed as exc:
                log.debug("%s: re-reading the files on %s failed: %s", session.where,
                          lun_id, exc)

    async def _reread_vm(self, session: NodeSession, node: HyperVNode, vm_id: str, *,
                         gone: bool = False, space: bool = False) -> None:
        """One VM's settings, checkpoints, drives and chains (one round trip, plus a
        round per parent file neither named), published in place of what was shown.

        ``space``: the CSVs' free space in the same round trip (after an action of
        ours freed or took some). ``gone``: a VM the node no longer answers for was
        removed (our delete), not moved: what was shown of it goes."""
        began = asyncio.get_running_loop().time()
        batch = subs.vm_reread(vm_id)
        if space:
            batch.append(cmd.get_disk_partitions())
        if gone:  # "unable to find a virtual machine with the given id" is the answer
            batch = [dataclasses.replace(c, tolerate_errors=True) for c in batch]
        answers = await session.run_many(batch)
        vms, snapshots, drives = (a.output for a in answers[:3])
        if space:
            self._apply_partitions(answers[-1].output, streamed=False)
        if not node.computer:
            return
        if not vms:
            if gone:  # removed by us: nothing of it stays (a poll begun before keeps none)
                self._reread[(node.source, vm_id)] = (began, [])
                self._forget_vm(node.source, vm_id)
                self._publish_vm(node.source, vm_id, [])
                self._publish_cluster()
            return  # not on this node (any more): the polls tell
        vhds: dict[str, object] = {}
        for obj in [*answers[3].output, *answers[4].output]:
            vhds[path_key(text(props(obj).get("Path")))] = obj
        for _ in range(MAX_CHAIN_ROUNDS):  # parents neither read named (a chain left behind)
            missing = [text(props(o).get("ParentPath")).strip() for o in vhds.values()]
            missing = list(dict.fromkeys(p for p in missing if p and path_key(p) not in vhds))
            if not missing:
                break
            for answer in await session.run_many(subs.get_vhds(missing)):
                for obj in answer.output:
                    vhds[path_key(text(props(obj).get("Path")))] = obj
            for path in missing:  # gone: asked once
                vhds.setdefault(path_key(path), {"Path": path})
        vhds = {k: v for k, v in vhds.items() if props(v).get("FileSize") is not None}
        replication = [r for r in self._replication.get(node.source, [])
                       if as_id(props(r).get("VMId")) == vm_id]
        nread = NodeRead(vms=vms, snapshots=snapshots, drives=drives, vhds=vhds,
                         replication=replication)
        entities = node_entities(nread, self._cluster_id, node.computer, self._mounts)
        last = self._backup_read.get(node.source)  # the poll's backup facts still stand
        entities = with_backup_facts(entities, last[2] if last is not None else {})
        self._reread[(node.source, vm_id)] = (began, entities)
        self._publish_vm(node.source, vm_id, entities)
        done = asyncio.get_running_loop().time()
        self.targeted.append(("vm", done))
        del self.targeted[:-1000]
        self.reread_s.append(done - began)
        del self.reread_s[:-1000]

    def _forget_vm(self, scope: str, vm_id: str) -> None:
        """A removed VM no longer counts on its host (the nodes' VM counts)."""
        vm = self._known.get((Kind.VM, vm_id))
        counts = self._vm_counts.get(scope)
        if isinstance(vm, VM) and counts is not None and counts[vm.node_id.casefold()] > 0:
            counts[vm.node_id.casefold()] -= 1

    async def reread_vm(self, node: HyperVNode, vm_id: str, *,
                        session: NodeSession | None = None, gone: bool = False) -> None:
        """After an action of ours on ``vm_id`` (compact, delete, merge): that VM and the
        CSVs' free space re-read at once, in one round trip on ``session`` (the action's
        own pool; else the node's), instead of waiting for — or running — a full poll."""
        await self._reread_vm(session or node.session, node, vm_id, gone=gone, space=True)

    def _publish_vm(self, scope: str, vm_id: str, entities: list[Entity]) -> None:
        """Emit what differs for one VM (its disks, checkpoints and findings) in ``scope``."""
        owned = self._scopes.setdefault(scope, set())
        old = {k for k in owned if (e := self._known.get(k)) is not None
               and subs.belongs_to(e, vm_id)}
        fresh: set[Key] = set()
        for entity in entities:
            key = key_of(entity)
            fresh.add(key)
            self._owner[key] = scope
            if self._known.get(key) != entity:
                self._known[key] = entity
                self._emit(Upsert(entity))
        for key in sorted(old - fresh):
            if self._owner.get(key) == scope:
                del self._owner[key]
                self._known.pop(key, None)
                self._emit(Remove(key[0], key[1]))
        owned.difference_update(old)
        owned.update(fresh)

    def _overlay(self, source: str, entities: list[Entity], began: float) -> list[Entity]:
        """A poll's entities with the VMs re-read after it began taking their re-read."""
        newer: dict[str, list[Entity]] = {}
        for (where, vm_id), (when, fresh) in list(self._reread.items()):
            if where != source:
                continue
            if when > began:
                newer[vm_id] = fresh
            else:
                del self._reread[(where, vm_id)]
        if not newer:
            return entities
        kept = [e for e in entities if not any(subs.belongs_to(e, v) for v in newer)]
        return kept + [e for fresh in newer.values() for e in fresh]

    def _apply_partitions(self, rows: Iterable[object], *, streamed: bool = True) -> list[str]:
        """Streamed (or re-read) partition rows: the CSVs' new free space, published at
        once. Returns the LUNs that lost enough space for their files to be re-read."""
        now = asyncio.get_running_loop().time()
        changes = {}
        for row in rows:
            p = props(row)
            changes[subs.volume_key(p)] = p
            self._partition_changes[subs.volume_key(p)] = (now, p)
        if self._cluster_read is None:
            return []
        before = self._luns()
        self._cluster_read.partitions = subs.merge_partitions(self._cluster_read.partitions,
                                                              changes)
        self._publish_cluster()
        self.targeted.append(("csv" if streamed else "space", now))
        grown = self._growth.grown(before, self._luns())
        return grown if streamed else []

    def _luns(self) -> dict[str, Lun]:
        return {k[1]: e for k, e in self._known.items() if isinstance(e, Lun)}

    async def _reread_growth(self, session: NodeSession, lun_id: str) -> None:
        """Get-VHD of the files written now on one CSV (any node's VMs: a CSV path reads
        the same from every node); the sizes that changed are published."""
        paths = subs.leaf_paths(self._known.values(), lun_id,
                                {k[1] for k in self._known if k[0] is Kind.VM})
        if not paths:
            return
        by_path = {path_key(e.path): e for e in self._known.values()
                   if isinstance(e, VirtualDisk)}
        answers = await session.run_many(subs.get_vhds(paths))
        for disk in subs.resized(by_path, (o for a in answers for o in a.output)):
            key = key_of(disk)
            self._known[key] = disk
            self._emit(Upsert(disk))
        self.targeted.append(("disks", asyncio.get_running_loop().time()))

    async def _discover(self, entry: HyperVNode) -> None:
        """Get-ClusterNode through the cluster name, then one session per node by name.

        Retried with backoff while the name does not answer; a refused
        password or certificate ends it (DISCONNECTED). A target that refuses
        Get-ClusterNode (not a cluster) is read as the only node.
        """
        cfg = self.config
        where = f"{entry.host}:{entry.port}"
        self._emit(ConnectionChanged(
            entry.source, LinkState.CONNECTING,
            f"discovering the nodes of {cfg.cluster} through {where} as {cfg.username}",
        ))
        failures = 0
        while not self._closed:
            try:
                answer = await entry.session.run(cmd.get_cluster_nodes())
                names = [text(props(o).get("Name")).strip() for o in answer.output]
                names = sorted({n.casefold(): n for n in names if n}.values(), key=str.casefold)
            except (AuthFailed, TlsRefused) as exc:
                self._emit(ConnectionChanged(entry.source, LinkState.DISCONNECTED, str(exc)))
                return
            except CommandFailed as exc:
                log.info("%s: no cluster here (%s); reading it as one host", where, exc)
                names = []
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                reason = str(exc) if isinstance(exc, SessionError) else type(exc).__name__
                delay = min(cfg.backoff_max, cfg.backoff_initial * 2 ** (failures - 1))
                self._emit(ConnectionChanged(
                    entry.source, LinkState.RECONNECTING,
                    f"retry {failures} in {delay:.1f} s: {reason}",
                ))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                continue
            break
        else:
            return
        await entry.session.close()
        if names:
            targets = [(name, *cfg.address_of(name)) for name in names]
        else:  # its source is told apart from the cluster name's by the port
            targets = [(f"{entry.host}:{entry.port}", entry.host, entry.port)]
        for index, (name, host, port) in enumerate(targets):
            session = self._new_session(host, port, name if names else None)
            node = HyperVNode(index, host, port, session, f"hyperv:{name}")
            self._nodes.append(node)
            self._start_node(node)
        found = ", ".join(n for n, _, _ in targets)
        log.info("%s: %d node(s): %s", cfg.cluster, len(targets), found)
        self._emit(ConnectionChanged(entry.source, LinkState.CONNECTED))

    def _link(self, node: HyperVNode, state: LinkState, reason: str = "") -> ConnectionChanged:
        """A node source's link change, naming the nodes it reads (its computer, the
        hosts of the VMs it reported, or the name it was discovered by): a stale node
        makes stale only what it owns (``Store.stale_for``)."""
        names = set(self._vm_counts.get(node.source, {}))
        if node.computer:
            names.add(node.computer.casefold())
        elif node.session.name != node.host:
            names.add(node_name(node.session.name).casefold())
        return ConnectionChanged(node.source, state, reason, tuple(sorted(names)))

    def _emit(self, event: object) -> None:
        if self._queue is not None and not self._closed:
            self._queue.put_nowait(event)

    async def close(self) -> None:
        if self._closed:
            return
        if self._queue is not None:
            self._queue.put_nowait(_END)
        self._closed = True
        if self._queue is None:
            for node in self._nodes:
                await node.session.close()

    # -- one node ---------------------------------------------------------------------------
    async def _node_loop(self, node: HyperVNode) -> None:
        cfg = self.config
        where = node.session.where  # the node's name when known: what every text says
        self._emit(
            self._link(node, LinkState.CONNECTING, f"connecting to {where} as {cfg.username}")
        )
        if not cfg.verify_tls:
            log.warning("%s: TLS certificate verification is OFF (explicit flag)", where)
        failures = 0
        loop = asyncio.get_running_loop()
        watching = False
        while not self._closed:
            began = loop.time()
            try:
                await self._poll(node)
            except AuthFailed as exc:  # not retried: it could lock the account
                log.error("%s", exc)
                node.healthy = False
                self._emit(self._link(node, LinkState.DISCONNECTED, str(exc)))
                return
            except TlsRefused as exc:
                # Retried with backoff: a certificate gets fixed (renewed, the CA added)
                # while the console runs; nothing is sent over an untrusted connection.
                log.error("%s", exc)
                failures += 1
                if node.healthy:
                    node.healthy = False
                    self._emit(self._link(node, LinkState.STALE, str(exc)))
                delay = min(cfg.backoff_max, cfg.backoff_initial * 2 ** (failures - 1))
                self._emit(self._link(node, LinkState.RECONNECTING,
                                             f"retry {failures} in {delay:.1f} s: {exc}"))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = (
                    str(exc)
                    if isinstance(exc, SessionError)
                    else (f"{where}: {type(exc).__name__}: {exc}")
                )
                failures += 1
                if node.healthy:
                    node.healthy = False
                    log.warning("%s stopped answering: %s", where, reason)
                    self._emit(self._link(node, LinkState.STALE, reason))
                delay = min(cfg.backoff_max, cfg.backoff_initial * 2 ** (failures - 1))
                delay *= random.uniform(0.8, 1.2)
                self._emit(
                    self._link(
                        node,
                        LinkState.RECONNECTING,
                        f"retry {failures} in {delay:.1f} s: {reason}",
                    )
                )
                await asyncio.sleep(delay)
                continue
            finally:
                self._end_cluster_read(node)
                self._note_first_poll(node)
            if not node.healthy:
                node.healthy = True
                failures = 0
                log.info("%s: connected (%s)", where, node.computer or "?")
                self._emit(self._link(node, LinkState.CONNECTED))
            if not watching:
                watching = True
                self._tasks.append(asyncio.create_task(
                    self._after_inventory(node), name=f"hyperv-after-{node.source}"))
            if node.source not in self._phased:
                # The second poll's interval starts when every node's first read is in
                # (at most one interval more): at 64 nodes an inventory that outlasted
                # the interval had the first nodes' second polls take the CPU from the
                # last nodes' first reads, here and on the hosts — the longer it took,
                # the more polls fell inside it (9 s in one run, 28 s in another).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._inventory_in.wait(), cfg.poll_interval)
                began = loop.time()
            # Polls start every poll_interval (not interval + read time): a change
            # waits at most one interval plus one read.
            await asyncio.sleep(
                max(0.1 * cfg.poll_interval, cfg.poll_interval - (loop.time() - began))
                + self._poll_phase(node)
            )

    def _poll_phase(self, node: HyperVNode) -> float:
        """Once per node, after its first read: its share of the interval, so the nodes'
        polls take turns instead of all running at once (they compete with the streamed
        changes' targeted re-reads for CPU, here and on the hosts)."""
        if node.source in self._phased:
            return 0.0
        self._phased.add(node.source)
        count = max(1, len(self._nodes))
        return (node.index % count) / count * self.config.poll_interval

    def _reads_cluster(self, node: HyperVNode, began: float) -> bool:
        if self._cluster_read is None:
            return True
        if self._cluster_read_at >= began:  # another node read it while this poll ran
            return False
        lower = [n.index for n in self._nodes if n.healthy and n.index < node.index]
        return not lower

    async def _await_cluster_read(self) -> None:
        """Wait while another node makes the first cluster-wide read (64 first polls
        would otherwise each read the whole cluster); if it fails, the next one tries."""
        while self._cluster_read is None and self._cluster_reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._cluster_reader[1])

    def _begin_cluster_read(self, node: HyperVNode) -> None:
        if self._cluster_read is None and self._cluster_reader is None:
            self._cluster_reader = (node, asyncio.get_running_loop().create_future())

    def _end_cluster_read(self, node: HyperVNode) -> None:
        """The cluster read ``node`` was making is over (read, failed or cancelled)."""
        if self._cluster_reader is not None and self._cluster_reader[0] is node:
            _, done = self._cluster_reader
            self._cluster_reader = None
            if not done.done():
                done.set_result(None)

    def _note_first_poll(self, node: HyperVNode) -> None:
        self._first_polled.add(node.source)
        if all(n.source in self._first_polled for n in self._nodes):
            self._inventory_in.set()

    async def _after_inventory(self, node: HyperVNode) -> None:
        """Once every node's first poll is over (at most one poll interval after this
        node's): this node's event stream, then its deferred reads. At 64 nodes the
        first nodes' streams and reads would otherwise take the CPU from the last
        nodes' inventory."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._inventory_in.wait(), self.config.poll_interval)
        self._released.add(node.source)
        self._start_watch(node)
        # The stream first (changes reach the screen by it), then the deferred reads.
        loop = asyncio.get_running_loop()
        until = loop.time() + self.config.poll_interval
        while (self.config.stream and node.source not in self.streaming
               and loop.time() < until and not self._closed):
            await asyncio.sleep(0.1)
        await self._read_deferred(node)

    async def _read_deferred(self, node: HyperVNode) -> None:
        """What the first picture does not need, read right after it is on screen: the
        host's default configuration version and the backup agent (until then both
        are "not checked": no default known, agent state unknown, never a guess). A
        node that stops answering here leaves them to its next poll."""
        agent_due = self.config.backup_checks and node.source not in self._backup_read
        if node.default_version is not None and not agent_due:
            return
        try:
            await self._read_default_version(node)
            agent, _ = await self._read_backup(node, [], [])
        except SessionError as exc:
            log.info("%s: default version / backup agent not read yet: %s",
                     node.computer or node.session.where, exc)
            return
        key = node.computer.casefold()
        self._facts[key] = _with_agent(self._facts.get(key, NodeFacts()), agent)
        self._note_default(node)
        self._publish_cluster()

    async def _read_default_version(self, node: HyperVNode) -> None:
        if node.default_version is not None:
            return
        try:  # what Update-VMVersion raises a VM to on this node
            answer = await node.session.run(cmd.get_default_version())
            rows = [props(o) for o in answer.output]
            node.default_version = next(
                (text(r.get("Version")).strip() for r in rows if text(r.get("Version"))), "")
        except CommandFailed as exc:  # e.g. 2012 R2 has no such cmdlet: unknown
            log.warning("%s: default configuration version not readable: %s",
                        node.computer, exc)
            node.default_version = ""

    def _note_default(self, node: HyperVNode) -> None:
        """The node's default version in its facts and — the host that answered for other
        nodes' VMs (one endpoint for several) being where their Update-VMVersion runs —
        in theirs until they answer."""
        default = node.default_version or ""
        key = node.computer.casefold()
        self._facts[key] = dataclasses.replace(self._facts.get(key, NodeFacts()),
                                               default_version=default)
        for name in self._vm_counts.get(node.source, ()):
            facts = self._facts.get(name, NodeFacts())
            if default and not facts.default_version:
                self._facts[name] = dataclasses.replace(facts, default_version=default)

    async def _poll(self, node: HyperVNode) -> None:
        began = asyncio.get_running_loop().time()
        session = node.session
        # A node's first inventory waits for nothing it does not show: the default version
        # and the backup agent are read right after it (``_read_deferred``).
        settled = node.source in self._scopes
        if settled:
            await self._read_default_version(node)
        # While another node makes the first cluster-wide read, this node's own reads go
        # out meanwhile: they need nothing of it (the mapping does, and waits for it).
        waiting = (self._cluster_read is None and self._cluster_reader is not None
                   and self._cluster_reader[0] is not node)
        if not waiting:
            await self._read_cluster_if_due(node, session, began)

        # The computer name (once per connection) and the disk files of the chains ride
        # with the VM reads: one round trip.
        first = not node.computer
        reads = [
            *([cmd.get_computer_system()] if first else []),
            cmd.get_vms(),  # with each VM's Heartbeat
            cmd.get_snapshots(),
            cmd.get_hard_disk_drives(),
            cmd.get_replication(),
        ]
        answers, chains, chain_answers = await self._read_vms(session, reads)
        if waiting:
            await self._read_cluster_if_due(node, session, began)
        if first:
            names = [node_name(props(o).get("Name")) for o in answers[0].output]
            node.computer = next((n for n in names if n), node_name(node.host))
            if session.where == f"{node.host}:{node.port}":  # errors name the node from now on
                session.where = node.computer
        vms, snapshots, drives, replication = answers[-4:]
        # A pass-through drive (DiskNumber set) has no file: not part of any chain.
        files = [d for d in drives.output if props(d).get("DiskNumber") is None]
        nread = NodeRead(
            vms=vms.output,
            snapshots=snapshots.output,
            drives=files,
            replication=replication.output,
        )
        nread.vhds, rounds = await self._read_chains(node, nread.drives, chains)
        agent, vm_backup = (await self._read_backup(node, vms.output, drives.output)
                            if settled else (None, {}))

        self._replication[node.source] = list(nread.replication)
        # What the mapping is made from: when every answer is the same text as the last
        # poll's (and the cluster's mounts the same), its entities are the same too.
        made_of = _mapped_from([*answers[-4:], *chain_answers], rounds, self._cluster_id,
                               node.computer, self._mounts)
        last = self._mapped.get(node.source)
        if made_of is not None and last is not None and last[0] == made_of:
            entities = list(last[1])
        else:
            # Mapped in a worker thread: at 2,500 VMs it takes long enough to hold up the
            # event streams (a checkpoint re-read waiting behind it).
            entities = await asyncio.to_thread(node_entities, nread, self._cluster_id,
                                               node.computer, self._mounts)
            if made_of is not None:
                self._mapped[node.source] = (made_of, tuple(entities))
            else:
                self._mapped.pop(node.source, None)
        entities = with_backup_facts(entities, vm_backup)
        if self._reread:  # a VM re-read (a checkpoint event) while this read ran
            entities = self._overlay(node.source, entities, began)
        if self._streamed:  # a change streamed while this read ran is newer than it
            for i, entity in enumerate(entities):
                if isinstance(entity, VM) and entity.id in self._streamed:
                    when, power = self._streamed[entity.id]
                    if when > began and entity.power is not power:
                        entities[i] = dataclasses.replace(entity, power=power)
                    elif when <= began:
                        del self._streamed[entity.id]
        # Counted by each VM's host: one endpoint may answer for several nodes.
        self._vm_counts[node.source] = Counter(
            e.node_id.casefold() for e in entities if isinstance(e, VM)
        )
        facts = node_facts(nread, 0)
        self._facts[node.computer.casefold()] = _with_agent(facts, agent)
        self._note_default(node)
        self._publish_cluster()
        self._publish(node.source, entities)

    async def _read_cluster_if_due(self, node: HyperVNode, session: NodeSession,
                                   began: float) -> None:
        """The cluster-wide reads, when this node's poll is the one to make them (after
        waiting for another node's first read, which may make them unnecessary)."""
        await self._await_cluster_read()
        if self._reads_cluster(node, began):
            self._begin_cluster_read(node)
            nodes, csvs, states, partitions = await session.run_many(
                [
                    cmd.get_cluster_nodes(),
                    cmd.get_csvs(),
                    cmd.get_csv_states(),
                    cmd.get_disk_partitions(),
                ]
            )
            # Apart: a cluster that cannot answer it still shows its CSVs (backup unknown).
            try:
                backups = (await session.run(cmd.get_csv_backup_states())).output
            except CommandFailed as exc:
                log.warning("CSV backup state not readable (shown as not in backup): %s", exc)
                backups = []
            read = ClusterRead(
                nodes.output, csvs.output, states.output, partitions.output, backups
            )
            streamed = {k: row for k, (when, row) in self._partition_changes.items()
                        if when > began}
            self._partition_changes = {k: v for k, v in self._partition_changes.items()
                                       if v[0] > began}
            if streamed:  # free space streamed while this read ran is newer than it
                read.partitions = subs.merge_partitions(read.partitions, streamed)
            self._cluster_read = read
            self._cluster_id = cluster_name(read, self.config.cluster)
            # Mount points first: VMs are placed on LUNs by their disks' paths.
            _, self._mounts = cluster_entities(read, self._cluster_id, self._facts)
            self._cluster_read_at = asyncio.get_running_loop().time()
            self._end_cluster_read(node)

    async def _read_backup(self, node: HyperVNode, vms: list[object], drives: list[object]
                           ) -> tuple[AgentFacts | None, dict[str, VmBackupFacts]]:
        """The backup agent and each VM's online-backup facts (``backup``), read again
        at most every ``backup_interval`` seconds (they change rarely; the cost is in
        COMMANDS.md); between reads the last answer stands. Nothing of it is read before
        every node's first inventory is in (``_after_inventory``); then the agent first
        (``_read_deferred``) and the VMs' facts (rows per VM) with the next poll, so they
        never delay the first inventory of any node."""
        cfg = self.config
        if not cfg.backup_checks:
            return None, {}
        now = asyncio.get_running_loop().time()
        last = self._backup_read.get(node.source)
        if node.source not in self._released:
            # Not before every node's first inventory is in (or one interval after this
            # node's): the second polls of the first nodes would read the VMs' facts —
            # rows per VM, here and on the hosts — while the last nodes' first polls run.
            return (last[1], last[2]) if last is not None else (None, {})
        if last is not None and now - last[0] < cfg.backup_interval:
            return last[1], last[2]
        services = tuple(dict.fromkeys(
            [*([cfg.backup_service] if cfg.backup_service else []), *cfg.backup_services]))
        agent = (await read_agent(node.session, services, cfg.backup_ports,
                                  cfg.backup_version_key, cfg.backup_version_value)
                 if services else AgentFacts())
        if last is None:  # the first poll: the agent now, the VMs' facts next time
            self._backup_read[node.source] = (now - cfg.backup_interval, agent, {})
            return agent, {}
        powers = {as_id(props(o).get("Id")): power_state(props(o).get("State")) for o in vms}
        names = {as_id(props(o).get("Id")): text(props(o).get("Name")) for o in vms}
        vm_facts = await read_vm_facts(node.session, powers, drives, names, self._groups_seen)
        # The first VM-facts read of every node falls on the same poll (the nodes' polls
        # start together); from then on each node reads on its own poll of the interval,
        # so the heavy reads (integration services, KVP, locations) come one slot at a
        # time instead of all nodes at once (the changes' tail: bench/hyperv_changes.py).
        shift = 0.0
        if node.source not in self._backup_spread:
            self._backup_spread.add(node.source)
            shift = self._backup_slot(node)
        self._backup_read[node.source] = (now - shift, agent, vm_facts)
        return agent, vm_facts

    def _backup_slot(self, node: HyperVNode) -> float:
        """How much earlier than the others this node reads its backup facts again: the
        polls within one ``backup_interval`` are slots, the nodes take them in turn."""
        cfg = self.config
        slots = max(1, int(cfg.backup_interval // max(cfg.poll_interval, 0.001)))
        return (node.index % slots) * cfg.poll_interval

    @staticmethod
    async def _read_vms(session: NodeSession, reads: list[cmd.Command]
                        ) -> tuple[list[Answer], list[object], list[Answer]]:
        """The node's VM reads and, in the same round trip, the disk files of the chains
        (the two piped Get-VHD reads of :meth:`_read_chains`).

        A missing file is a normal non-terminating error of Get-VHD, but the errors
        of one round trip are not told apart by statement: when any came back, the
        VM reads are sent again on their own, where an error of theirs fails the
        poll exactly as before (rare: a chain left behind)."""
        chains = [cmd.get_attached_vhds(), cmd.get_checkpoint_vhds()]
        lenient = [dataclasses.replace(c, tolerate_errors=True) for c in reads]
        answers = await session.run_many([*lenient, *chains])
        # Both Get-VHD statements answer the same shape: their rows land in one of
        # them (which one a file came from is not needed: they are merged).
        files = [o for a in answers[len(reads):] for o in a.output]
        if any(a.errors for a in answers):
            return await session.run_many(reads), files, answers[len(reads):]
        return answers[:len(reads)], files, answers[len(reads):]

    async def _read_chains(self, node: HyperVNode, drives: list[object],
                           files: list[object]) -> tuple[dict[str, object], int]:
        """Every drive's file and, following ParentPath, the whole chain.

        ``files``: the answers of the two piped reads that cover the usual
        chain, sent with the VM reads (:meth:`_read_vms`): the files the VMs'
        drives use now (``Get-VMHardDiskDrive | Get-VHD``) and the files their
        checkpoints froze (``Get-VMSnapshot | Get-VMHardDiskDrive |
        Get-VHD``), with no paths sent. A parent neither names (a chain left
        behind by a deleted checkpoint) is then asked for by path, round by
        round; files that vanished answer "not found" (ignored). Returns the
        files by path key and how many such rounds it took.
        """
        vhds: dict[str, object] = {}
        for obj in files:
            vhds[path_key(text(props(obj).get("Path")))] = obj
        asked = set(vhds)
        leaves = [text(props(d).get("Path")).strip() for d in drives]
        batch = [p for p in dict.fromkeys(leaves) if p and path_key(p) not in asked]
        rounds = 0
        found: list[object] = list(vhds.values())
        while True:
            for obj in found:
                parent = text(props(obj).get("ParentPath")).strip()
                if parent and path_key(parent) not in asked:
                    batch.append(parent)
            batch = list(dict.fromkeys(batch))
            if not batch or rounds >= MAX_CHAIN_ROUNDS:
                break
            rounds += 1
            asked.update(path_key(p) for p in batch)
            found = []
            for start in range(0, len(batch), VHD_BATCH):
                answer = await node.session.run(cmd.get_vhds(batch[start : start + VHD_BATCH]))
                found.extend(answer.output)
            for obj in found:
                vhds[path_key(text(props(obj).get("Path")))] = obj
            batch = []
        return vhds, rounds

    # -- diffing -----------------------------------------------------------------------------
    def _publish_cluster(self) -> None:
        if self._cluster_read is None:
            return
        totals: Counter[str] = Counter()
        for counts in self._vm_counts.values():
            totals.update(counts)
        facts = {
            name: dataclasses.replace(self._facts.get(name, NodeFacts()), vm_count=totals[name])
            for name in set(self._facts) | set(totals)
        }
        entities, self._mounts = cluster_entities(self._cluster_read, self._cluster_id, facts)
        self._publish("cluster", entities)

    def _publish(self, scope: str, entities: list[Entity]) -> None:
        """Emit what differs from what the client was last told for this scope."""
        fresh: set[Key] = set()
        for entity in entities:
            key = key_of(entity)
            if key in fresh:
                continue
            fresh.add(key)
            self._owner[key] = scope
            if self._known.get(key) != entity:
                self._known[key] = entity
                self._emit(Upsert(entity))
        for key in sorted(self._scopes.get(scope, set()) - fresh):
            if self._owner.get(key) == scope:  # no other node reports it now
                del self._owner[key]
                self._known.pop(key, None)
                self._emit(Remove(key[0], key[1]))
        self._scopes[scope] = fresh

    # -- actions --------------------------------------------------------------------------
    def _vm_disks(self, vm_id: str) -> list[VirtualDisk]:
        return self.context.vm_disks(vm_id)

    async def run_upgrade(self, vm_id: str, task_id: str, version: str) -> ActionResult:
        """Update-VMVersion on the VM's node (``merge.run_upgrade``)."""
        return await run_upgrade(self.context, vm_id, task_id, version)

    async def run_merge(self, vm_id: str, task_id: str) -> ActionResult:
        """Remove every checkpoint of a VM on its node (``merge.run_merge``)."""
        return await run_merge(self.context, vm_id, task_id)


class HyperVExecutor(Executor):
    """The mutating handle of a writable Hyper-V session."""

    def __init__(self, backend: HyperVBackend) -> None:
        super().__init__(backend)
        self._hv = backend

    async def merge(self, vm_id: str, task_id: str) -> ActionResult:
        """Remove every checkpoint of the VM (Hyper-V merges the chain into the base disks).

        OK: merged; FAILED: the host refused or failed part-way (what is left
        is re-read; PARTIAL when some checkpoints went); UNKNOWN: the
        connection dropped after the request was sent.
        """
        self._guard("merge")
        return await self._hv.run_merge(vm_id, task_id)

    async def upgrade_version(self, vm_id: str, task_id: str, version: str) -> ActionResult:
        """Update-VMVersion -Force on the VM's node (irreversible; the host refuses a VM
        that is not off). The version reached is read back from the host."""
        self._guard("upgrade")
        return await self._hv.run_upgrade(vm_id, task_id, version)

    async def compact_vhdx(self, vm_id: str, task_id: str, paths: tuple[str, ...]
                           ) -> ActionResult:
        """Optimize-VHD -Mode Full per file, after the host confirms the VM is Off;
        sizes before/after are read back with Get-VHD (``cleanup.Cleanup.compact``)."""
        self._guard("compact")
        return await Cleanup(self._hv.context).compact(vm_id, task_id, paths)

    async def delete_vm(self, vm_id: str, task_id: str, paths: tuple[str, ...]) -> ActionResult:
        """Remove-ClusterGroup (if clustered), Remove-VM, then Remove-Item of exactly the
        listed files, each checked to be the VM's own (``cleanup.Cleanup.delete``)."""
        self._guard("delete")
        return await Cleanup(self._hv.context).delete(vm_id, task_id, paths)

    # -- the rebuild workflow's steps (rebuild.HyperVRebuild) -----------------------

    def _rebuild(self) -> HyperVRebuild:
        return HyperVRebuild(self._hv.context)

    async def capture(self, vm_id: str, task_id: str) -> StepResult:
        """Read the VM's configuration from the host (guest services: not readable)."""
        self._guard("rebuild")
        return await self._rebuild().capture(vm_id, task_id)

    async def rebuild_merge(self, vm_id: str, task_id: str, *, to_last_parent: bool,
                            turn_off: bool = False) -> StepResult:
        """Stop-VM (a guest shutdown, or -TurnOff when the operator chose it), then
        Remove-VMSnapshot (all, or all but the newest)."""
        self._guard("rebuild")
        return await self._rebuild().merge(vm_id, task_id, to_last_parent, turn_off)

    async def create_from_capture(self, capture: dict[str, Any], task_id: str) -> StepResult:
        """Convert-VHD into a new folder, New-VM and its settings from the capture."""
        self._guard("rebuild")
        return await self._rebuild().create(capture, task_id)

    async def verify_boot(self, vm_id: str, capture: dict[str, Any], task_id: str
                          ) -> StepResult:
        """Boot order checked against the capture, Start-VM, heartbeat Ok."""
        self._guard("rebuild")
        return await self._rebuild().verify_boot(vm_id, capture, task_id)

    async def guest_services(self, vm_id: str, task_id: str) -> StepResult:
        """Integration services as the host sees them; guest services unknown."""
        self._guard("rebuild")
        return await self._rebuild().services(vm_id, task_id)

    async def retire_old(self, vm_id: str, new_name: str, task_id: str) -> StepResult:
        """Stop-VM if running, Rename-VM, Set-VM -AutomaticStartAction Nothing."""
        self._guard("rebuild")
        return await self._rebuild().retire(vm_id, new_name, task_id)

    async def cancel(self, task_id: str) -> bool:
        """Always False: Hyper-V cannot cancel a merge in progress; it runs to its end."""
        self._guard("cancel")
        return False


def _mapped_from(answers: list[Answer], rounds: int, cluster_id: str, computer: str,
                 mounts: list[Mount]) -> tuple[object, ...] | None:
    """Everything ``node_entities`` reads for a poll, as a comparable value: the digests
    of the JSON texts its answers were decoded from, the cluster, the node and the CSV
    mount points. None when something is not covered by a digest (an answer not
    decoded from JSON text, a chain that needed a read by path): mapped afresh."""
    if rounds:
        return None
    digests = []
    for answer in answers:
        if answer.output and not answer.digest:
            return None
        digests.append(answer.digest)
    return (tuple(digests), cluster_id, computer, tuple(mounts))


def _with_agent(facts: NodeFacts, agent: AgentFacts | None) -> NodeFacts:
    """``facts`` with what the backup agent read said (unchanged when not read)."""
    if agent is None:
        return facts
    return dataclasses.replace(
        facts, agent_state=agent.state, agent_version=agent.version,
        agent_name=agent.name, agent_start_mode=agent.start_mode,
        agent_ports_closed=agent.ports_closed, agent_unchecked=agent.unchecked)


def with_backup_facts(entities: list[Entity], vm_backup: dict[str, VmBackupFacts]
                      ) -> list[Entity]:
    """The VMs among ``entities`` with their online-backup facts (``backup.read_vm_facts``)
    and every file they keep (locations plus each disk file of their chains)."""
    if not vm_backup:
        return entities
    entities = list(entities)
    files: dict[str, list[str]] = {}  # each VM's disk files (the whole chains)
    for entity in entities:
        if isinstance(entity, VirtualDisk):
            files.setdefault(entity.vm_id, []).append(entity.path)
    for i, entity in enumerate(entities):
        facts = vm_backup.get(entity.id) if isinstance(entity, VM) else None
        if isinstance(entity, VM) and facts is not None:
            paths = (tuple(dict.fromkeys([*facts.locations, *files.get(entity.id, [])]))
                     if facts.locations is not None else ())
            entities[i] = dataclasses.replace(
                entity, vss_service=facts.vss_service, guest_os=facts.guest_os,
                guest_windows=facts.guest_windows,
                passthrough_disks=facts.passthrough,
                backup_unchecked=facts.unchecked, storage_paths=paths,
                cluster_group_state=facts.cluster_group,
                smb_link_check=(NEEDS_DELEGATION if any(is_unc(p) for p in paths)
                                else None))
    return entities
