"""The live store: applies events to the in-memory model and notifies.

The store is the one owner of mutation. It sanitizes every text field on the
way in (the data boundary for all backends), keeps per-VM indexes for
checkpoints, disks and tasks, tracks each source's connection state, and
tells subscribers exactly which keys changed (old and new value) so panes can
update only those rows.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from .events import (
    ConnectionChanged,
    Event,
    FindingRaised,
    LinkState,
    Remove,
    TaskProgress,
    Upsert,
)
from .model import (
    VM,
    Checkpoint,
    Entity,
    Kind,
    Lun,
    Node,
    Task,
    TaskState,
    VirtualDisk,
)
from .sanitize import clean, clean_entity


def ref(kind: Kind, id_: str) -> str:
    """The string form of a key, used as a task's or finding's target."""
    return f"{kind.value}:{id_}"


class Change(NamedTuple):
    """One entity's change in a delta (a named tuple: the store makes one per event, and
    a tuple is made in a fifth of a frozen dataclass's time)."""

    kind: Kind
    id: str
    old: Entity | None
    new: Entity | None  # None: removed


@dataclass(frozen=True, slots=True)
class Link:
    source: str
    state: LinkState
    reason: str
    since: datetime
    nodes: tuple[str, ...] = ()  # the nodes this source reads (ConnectionChanged.nodes)
    scope: str = ""  # the id prefix this source speaks for (ConnectionChanged.scope)


@dataclass(slots=True)
class Delta:
    changes: list[Change] = field(default_factory=list)
    links_changed: bool = False

    def __bool__(self) -> bool:
        return bool(self.changes) or self.links_changed

    def kinds(self) -> set[Kind]:
        return {c.kind for c in self.changes}


Subscriber = Callable[[Delta], None]

_PARENT_FIELD = {Kind.CHECKPOINT: "vm_id", Kind.DISK: "vm_id", Kind.TASK: "target"}


_NOT_LIVE = (LinkState.STALE, LinkState.RECONNECTING, LinkState.DISCONNECTED)


class Target(NamedTuple):
    """One target's link as staleness sees it (a composite has one per child; a single
    target one, with the empty prefix)."""

    prefix: str  # the id prefix of what it owns (``ConnectionChanged.scope``)
    stale: bool  # one of its links (or an enclosing scope's) is not live
    down: bool  # stale, and so is every node its sources name: nothing of it is live
    name: str  # as the header shows it: its own link's source


@dataclass(frozen=True, slots=True)
class Staleness:
    """Which nodes' and targets' data is stale (issue 14: one node down is not the
    cluster down; stop 14: one target down is not the console down).

    - ``nodes``: names (case-folded) of the nodes every source naming them is not
      live for — what they own (their VMs, the CSVs they coordinate) is stale;
    - ``named``: every node some source names (``ConnectionChanged.nodes``);
    - ``targets``: per target (``ConnectionChanged.scope``, longest prefix first),
      whether what it owns that no source names by node is stale: one of *its own*
      links is not live. A source that names no nodes (a simulator, a vCenter)
      speaks for its whole target, and only for it: a vCenter that answers is not
      dimmed because a Hyper-V node next to it dropped;
    - ``rest``: an id under no known target — the worst link is not live.

    Costs nothing per entity: a few prefixes and the named nodes, made once per
    link change (``Store.staleness`` caches it); a lookup is one set probe and a
    ``startswith`` per target.
    """

    nodes: frozenset[str] = frozenset()
    named: frozenset[str] = frozenset()
    rest: bool = False
    targets: tuple[Target, ...] = ()

    def of(self, node_id: str, owner_id: str = "") -> bool:
        """Whether what ``node_id`` owns is stale (``owner_id``: the entity's own id,
        which tells its target when it has no node)."""
        key = node_id.casefold()
        if key in self.named:
            return key in self.nodes
        target = self.target_of(node_id or owner_id)
        return self.rest if target is None else target.stale

    def target_of(self, id_: str) -> Target | None:
        """The target an id belongs to (None: no link speaks for it)."""
        for target in self.targets:
            if id_.startswith(target.prefix):
                return target
        return None

    def who(self, node_id: str, owner_id: str = "") -> tuple[str, str] | None:
        """What is not live for ``of(node_id, owner_id)``: None when it is live;
        ``("node", node_id)`` — its node's link; ``("target", name)`` — its target's
        link, the rest of the console live; ``("", "")`` — the link (everything, or a
        target partly down and the entity under none of its named nodes)."""
        if not self.of(node_id, owner_id):
            return None
        if node_id.casefold() in self.named:
            return "node", node_id
        target = self.target_of(node_id or owner_id)
        if target is not None and target.down and not self.everything and target.prefix:
            return "target", target.name
        return "", ""

    @property
    def any(self) -> bool:
        """Something is stale."""
        return self.rest or bool(self.nodes)

    @property
    def everything(self) -> bool:
        """Everything is stale: no node and no target is live (or no source names its
        nodes and the link is not live)."""
        return (self.rest and self.nodes == self.named
                and all(target.stale for target in self.targets))

    @property
    def partial(self) -> bool:
        """Some nodes or targets are stale, others live: mark each, not the whole console."""
        return self.any and not self.everything

    @property
    def down_targets(self) -> tuple[Target, ...]:
        """The targets of which nothing is live while something else is (by name)."""
        if self.everything:
            return ()
        return tuple(sorted((t for t in self.targets if t.down and t.prefix),
                            key=lambda t: t.name))


class Store:
    def __init__(self) -> None:
        self._tables: dict[Kind, dict[str, Entity]] = {k: {} for k in Kind}
        self._children: dict[Kind, defaultdict[str, set[str]]] = {
            k: defaultdict(set) for k in _PARENT_FIELD
        }
        self.links: dict[str, Link] = {}
        self._staleness: Staleness | None = None  # derived from links; dropped when they change
        self._subscribers: list[Subscriber] = []
        self.events_applied = 0

    # -- reading ---------------------------------------------------------
    def get(self, kind: Kind, id_: str) -> Entity | None:
        return self._tables[kind].get(id_)

    def all(self, kind: Kind) -> Iterable[Entity]:
        return self._tables[kind].values()

    def count(self, kind: Kind) -> int:
        return len(self._tables[kind])

    def vm(self, id_: str) -> VM | None:
        return self._tables[Kind.VM].get(id_)  # type: ignore[return-value]

    def lun(self, id_: str) -> Lun | None:
        return self._tables[Kind.LUN].get(id_)  # type: ignore[return-value]

    def node(self, id_: str) -> Node | None:
        return self._tables[Kind.NODE].get(id_)  # type: ignore[return-value]

    def task(self, id_: str) -> Task | None:
        return self._tables[Kind.TASK].get(id_)  # type: ignore[return-value]

    def vms(self) -> Iterable[VM]:
        return self._tables[Kind.VM].values()  # type: ignore[return-value]

    def luns(self) -> Iterable[Lun]:
        return self._tables[Kind.LUN].values()  # type: ignore[return-value]

    def nodes(self) -> Iterable[Node]:
        return self._tables[Kind.NODE].values()  # type: ignore[return-value]

    def tasks(self) -> Iterable[Task]:
        return self._tables[Kind.TASK].values()  # type: ignore[return-value]

    def _children_of(self, kind: Kind, parent: str) -> list[Entity]:
        table = self._tables[kind]
        return [table[i] for i in self._children[kind].get(parent, ())]

    def checkpoints_of(self, vm_id: str) -> list[Checkpoint]:
        return self._children_of(Kind.CHECKPOINT, vm_id)  # type: ignore[return-value]

    def disks_of(self, vm_id: str) -> list[VirtualDisk]:
        return self._children_of(Kind.DISK, vm_id)  # type: ignore[return-value]

    def tasks_for(self, target: str) -> list[Task]:
        return self._children_of(Kind.TASK, target)  # type: ignore[return-value]

    def running_tasks_for(self, target: str) -> list[Task]:
        return [t for t in self.tasks_for(target) if not t.state.finished]

    def link_state(self) -> LinkState:
        """The worst state over all sources (no source yet: connecting)."""
        if not self.links:
            return LinkState.CONNECTING
        order = [
            LinkState.CONNECTED,
            LinkState.CONNECTING,
            LinkState.RECONNECTING,
            LinkState.STALE,
            LinkState.DISCONNECTED,
        ]
        return max((link.state for link in self.links.values()), key=order.index)

    @property
    def stale(self) -> bool:
        """Whether *any* source is not live (the worst link): a node no source names
        counts as stale then. Per node: :meth:`stale_for` / :meth:`staleness`."""
        return self.link_state() in _NOT_LIVE

    def staleness(self) -> Staleness:
        """Which nodes' and targets' data is stale now, from the sources' links (see
        :class:`Staleness`); made once per link change."""
        if self._staleness is None:
            named: set[str] = set()
            live: set[str] = set()
            own: dict[str, bool] = {}  # scope -> one of its own links is not live
            names: dict[str, str] = {}  # scope -> the source of its node-less link
            for link in self.links.values():
                down = link.state in _NOT_LIVE
                own[link.scope] = own.get(link.scope, False) or down
                if not link.nodes and (link.scope not in names
                                       or len(link.source) < len(names[link.scope])):
                    names[link.scope] = link.source
                for n in link.nodes:
                    key = n.casefold()
                    named.add(key)
                    if not down:
                        live.add(key)
            stale_nodes = named - live
            targets = []
            for scope in sorted(own, key=len, reverse=True):
                # An enclosing scope's link (the console's own, "") counts for it too.
                stale = any(not_live for s, not_live in own.items() if scope.startswith(s))
                folded = scope.casefold()
                down = stale and all(n in stale_nodes for n in named if n.startswith(folded))
                targets.append(Target(scope, stale, down, names.get(scope, scope)))
            self._staleness = Staleness(frozenset(stale_nodes), frozenset(named), self.stale,
                                        tuple(targets))
        return self._staleness

    def stale_for(self, node_id: str) -> bool:
        """Whether what ``node_id`` owns is stale: its own source(s) are not live (a
        node no source names: the worst link, as :attr:`stale`)."""
        return self.staleness().of(node_id)

    def stale_owner(self, target: str) -> tuple[str, str] | None:
        """What is not live for a task's or finding's ``kind:id`` target
        (:meth:`Staleness.who`): its VM's node, a node itself, a LUN's coordinator, a
        checkpoint's or disk's VM's node, else its own target's link."""
        kind, _, obj = target.partition(":")
        node_id = ""
        owner = obj or target
        match kind:
            case Kind.VM.value:
                node_id = self._node_of_vm(obj)
            case Kind.NODE.value:
                node_id = obj
            case Kind.LUN.value:
                lun = self.lun(obj)
                node_id = lun.owner_node_id if lun is not None else ""
            case Kind.CHECKPOINT.value | Kind.DISK.value:
                child = self.get(Kind(kind), obj)
                node_id = self._node_of_vm(getattr(child, "vm_id", ""))
        return self.staleness().who(node_id, owner)

    def _node_of_vm(self, vm_id: str) -> str:
        vm = self.vm(vm_id)
        return vm.node_id if vm is not None else ""

    def stale_names(self) -> list[str]:
        """What is stale while something else is live, by name: each target of which
        nothing is live (by its link's name), then the stale nodes of the others."""
        view = self.staleness()
        down = view.down_targets
        prefixes = tuple(t.prefix.casefold() for t in down)
        nodes = [n for n in self.stale_node_names()
                 if not (prefixes and n.casefold().startswith(prefixes))]
        return [t.name for t in down] + nodes

    def nodes_live(self) -> tuple[int, int]:
        """(live, known) nodes over the sources that name their nodes."""
        view = self.staleness()
        return len(view.named) - len(view.nodes), len(view.named)

    def stale_node_names(self) -> list[str]:
        """The stale nodes (sorted) for the header and texts, spelled as the inventory
        names them (a source may name them case-folded), else as the source does."""
        view = self.staleness()
        if not view.nodes:
            return []
        names = {n.casefold(): n for link in self.links.values() for n in link.nodes}
        names.update((node.id.casefold(), node.id) for node in self.nodes()
                     if node.id.casefold() in view.nodes)
        return sorted(names[k] for k in view.nodes)

    def link_reasons(self) -> str:
        """Each source's reason, without the node count (the header shows that apart)."""
        return "; ".join(f"{k.source}: {k.reason}" for k in self.links.values() if k.reason)

    def link_reason(self) -> str:
        reasons = [f"{k.source}: {k.reason}" for k in self.links.values() if k.reason]
        live, known = self.nodes_live()
        if known and live < known:  # e.g. "3/4 nodes": one node down is not the cluster down
            reasons.insert(0, f"{live}/{known} nodes")
        return "; ".join(reasons)

    def link_reason_of(self, node_id: str, owner_id: str = "") -> str:
        """Why what ``node_id`` (or the entity ``owner_id``) belongs to is not live: the
        reasons of its node's sources, or of its target's links — not every link's (in a
        composite, another target's outage says nothing about this one). Falls back to
        :meth:`link_reason`, then the link state."""
        view = self.staleness()
        who = view.who(node_id, owner_id)
        links = list(self.links.values())
        if who is not None and who[0] == "node":
            key = who[1].casefold()
            links = [k for k in links if any(n.casefold() == key for n in k.nodes)]
        elif who is not None and who[0] == "target":
            target = view.target_of(node_id or owner_id)
            links = [k for k in links if target is not None and k.scope == target.prefix]
        reasons = [f"{k.source}: {k.reason}" for k in links if k.reason]
        return "; ".join(reasons) or self.link_reason() or str(self.link_state())

    # -- subscribing -----------------------------------------------------
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # -- applying --------------------------------------------------------
    def apply(self, event: Event) -> Delta:
        return self.apply_many((event,))

    def apply_many(self, events: Iterable[Event]) -> Delta:
        delta = Delta()
        put, applied = self._put, 0
        try:
            for event in events:
                if type(event) is Upsert:  # the common case, without the match below
                    put(clean_entity(event.entity), delta)
                else:
                    self._apply_one(event, delta)
                applied += 1
        finally:
            self.events_applied += applied
        if delta:
            for callback in list(self._subscribers):
                callback(delta)
        return delta

    def _apply_one(self, event: Event, delta: Delta) -> None:
        match event:
            case Upsert(entity):
                self._put(clean_entity(entity), delta)
            case FindingRaised(finding):
                self._put(clean_entity(finding), delta)
            case Remove(kind, id_):
                self._drop(kind, id_, delta)
            case TaskProgress(task_id, pct, message, state):
                task = self.task(task_id)
                if task is None:
                    return
                new_state = state or task.state
                if new_state is TaskState.QUEUED:
                    new_state = TaskState.RUNNING
                updated = dataclasses.replace(
                    task,
                    pct=max(0.0, min(100.0, pct)),
                    message=clean(message) if message else task.message,
                    state=new_state,
                )
                self._put(updated, delta)
            case ConnectionChanged(source, state, reason, nodes, scope):
                old = self.links.get(source)
                nodes = nodes or (old.nodes if old is not None else ())
                if (old is None or old.state != state or old.reason != reason
                        or old.nodes != nodes or old.scope != scope):
                    self.links[source] = Link(
                        clean(source), state, clean(reason), datetime.now(UTC),
                        tuple(clean(n) for n in nodes), clean(scope),
                    )
                    delta.links_changed = True
                    self._staleness = None

    def _put(self, entity: Entity, delta: Delta) -> None:
        kind = entity.KIND
        table = self._tables[kind]
        id_ = entity.id
        old = table.get(id_)
        if old is not None and old == entity:
            return
        table[id_] = entity
        parent_field = _PARENT_FIELD.get(kind)
        if parent_field:
            if old is not None:
                old_parent = getattr(old, parent_field)
                if old_parent != getattr(entity, parent_field):
                    self._children[kind][old_parent].discard(id_)
            self._children[kind][getattr(entity, parent_field)].add(id_)
        delta.changes.append(Change(kind, id_, old, entity))

    def _drop(self, kind: Kind, id_: str, delta: Delta) -> None:
        old = self._tables[kind].pop(id_, None)
        if old is None:
            return
        parent_field = _PARENT_FIELD.get(kind)
        if parent_field:
            siblings = self._children[kind].get(getattr(old, parent_field))
            if siblings is not None:
                siblings.discard(id_)
        delta.changes.append(Change(kind, id_, old, None))
