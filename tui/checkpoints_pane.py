"""The checkpoints pane: the selected VM's checkpoint tree.

Each node shows the checkpoint's name, kind, age and the size of its
differencing disk; the root line sums the chain (depth, oldest, total). The
pane is dimmed when the VM's own node's link is not live (per node: a healthy
node's VM stays bright while another node is down). The
tree is small (one VM), so it is rebuilt only when that VM's checkpoints or
the selection change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from rich.text import Text
from textual.widgets import Tree

from ventana.state.derived import (
    chain_depth,
    human_age,
    human_bytes,
    oldest_checkpoint_age,
    vm_differencing_bytes,
)
from ventana.state.model import VM, Checkpoint, CheckpointKind
from ventana.state.store import Store

from .backup_facts import backup_lines, backup_signature, backup_title, has_backup_facts

_KIND_STYLE = {
    CheckpointKind.BACKUP: "yellow",
    CheckpointKind.RECOVERY: "cyan",
    CheckpointKind.PRODUCTION: "",
    CheckpointKind.STANDARD: "",
}


def checkpoint_label(cp: Checkpoint, now: datetime) -> Text:
    """Age and size first: the pane is narrow and names are long."""
    text = Text(f"{human_age(now - cp.created):>7} ", style="dim")
    text.append(f"{human_bytes(cp.size_bytes):>8} ")
    if cp.kind is not CheckpointKind.STANDARD:
        text.append(f"[{cp.kind.value}] ", style=_KIND_STYLE.get(cp.kind, ""))
    flags = [f for f, on in (("quiesced", cp.quiesced), ("memory", cp.memory)) if on]
    if flags:
        text.append(f"[{', '.join(flags)}] ", style="cyan")
    text.append(cp.name, style="bold")
    return text


def stun_text(vm: VM) -> Text:
    """' · last stun 1.2 s (14:03)' — from the SSH side channel, when it saw one."""
    if vm.last_stun_ms is None:
        return Text("")
    when = f" ({vm.stun_at:%H:%M} UTC)" if vm.stun_at else ""
    return Text(f" · last stun {vm.last_stun_ms / 1000:.2f} s{when}", style="dim")


class CheckpointsPane(Tree[str]):
    DEFAULT_CSS = """
    CheckpointsPane { height: 1fr; }
    """

    def __init__(self, clock: Callable[[], datetime], **kwargs: object) -> None:
        super().__init__(Text("no VM selected", style="dim"), **kwargs)  # type: ignore[arg-type]
        self.clock = clock
        self.vm_id: str | None = None
        self._signature: tuple[object, ...] | None = None
        self.show_root = True
        self.guide_depth = 2

    def show_vm(self, store: Store, vm_id: str | None, *, force: bool = False) -> None:
        vm = store.vm(vm_id) if vm_id else None
        checkpoints = store.checkpoints_of(vm_id) if vm_id else []
        # Dimmed when what it shows is stale: the VM's own node's link (issue 14), or the
        # whole link when no VM is shown.
        view = store.staleness()
        stale = view.of(vm.node_id, vm.id) if vm is not None else view.everything
        self.set_class(stale, "stale")
        signature = (vm_id, vm.name if vm else None, vm.last_stun_ms if vm else None,
                     stale, tuple(sorted(checkpoints, key=lambda c: c.id)), backup_signature(vm))
        if not force and signature == self._signature:
            return
        self._signature = signature
        self.vm_id = vm_id
        self.clear()
        if vm is None:
            self.root.set_label(Text("no VM selected", style="dim"))
            return
        now = self.clock()
        root = Text(vm.name, style="bold")
        if checkpoints:
            plural = "s" if len(checkpoints) != 1 else ""
            root.append(
                f" · {len(checkpoints)} checkpoint{plural} · depth {chain_depth(checkpoints)} · "
                f"oldest {human_age(oldest_checkpoint_age(checkpoints, now))} · "
                f"{human_bytes(vm_differencing_bytes(store, vm.id))} differencing",
                style="dim",
            )
        else:
            root.append(" · no checkpoints", style="dim")
        root.append_text(stun_text(vm))
        if stale and not view.everything:  # the header names the node too; here: this VM's
            kind, name = view.who(vm.node_id, vm.id) or ("", "")
            whose = {"node": f"node {name}'s", "target": f"{name}'s"}.get(kind, "its")
            root.append(f" · stale: {whose} link is down", style="bold red")
        self.root.set_label(root)
        children: dict[str | None, list[Checkpoint]] = {}
        ids = {c.id for c in checkpoints}
        for cp in checkpoints:
            parent = cp.parent_id if cp.parent_id in ids else None
            children.setdefault(parent, []).append(cp)
        for group in children.values():
            group.sort(key=lambda c: (c.created, c.id))

        def add(parent_node, parent_id: str | None) -> None:  # type: ignore[no-untyped-def]
            for cp in children.get(parent_id, []):
                node = parent_node.add(checkpoint_label(cp, now), data=cp.id, expand=True)
                if children.get(cp.id):
                    add(node, cp.id)
                else:
                    node.allow_expand = False

        add(self.root, None)
        if has_backup_facts(vm):  # the VM's backup facts (tui/backup_facts.py), below the tree
            branch = self.root.add(backup_title(vm), data=None, expand=True)
            for line in backup_lines(vm):
                branch.add_leaf(line, data=None)
        self.root.expand()

    def selected_checkpoint_id(self, vm_id: str) -> str | None:
        """The checkpoint under the cursor, when the pane shows ``vm_id``."""
        node = self.cursor_node
        if self.vm_id != vm_id or node is None or node is self.root:
            return None
        return node.data
