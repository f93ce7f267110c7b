"""The offline clean-up actions on a Hyper-V cluster: compact a VHDX, delete an obsolete VM.

Both act on files, so both re-check on the host just before sending
anything (the plan was made from data up to one poll old):

- **compact**: ``Get-VM -Id`` says the VM is Off and ``Get-VMSnapshot`` none
  (a parent of a differencing disk must not shrink); each path is one of the
  VM's disk files as the inventory knows them; sizes are read with
  ``Get-VHD`` before and after; then ``Optimize-VHD -Path P -Mode Full``
  per file, on a pool of its own (a compact reads the whole file), its
  progress records as task progress.
- **delete**: ``Get-VM -Id`` says Off and not replicating; every path must
  be a plain absolute disk file name (no wildcard, no ``..``), one of the
  VM's files as the inventory knows them and inside a folder that holds the
  VM's storage (the folders of its drives on the host and its configuration
  folder; a volume root never counts) — never a folder, never a recursion.
  A file another VM uses (attached to it, or the parent of one of its
  files: a shared base disk) is refused, by compact too. Then ``Remove-ClusterGroup
  -VMId … -RemoveResources -Force`` when the VM is clustered, ``Get-VM -Id
  … | Remove-VM -Force``, and ``Remove-Item -LiteralPath`` one file at a
  time; ``Test-Path`` afterwards says which files are really gone. Files that
  could not be removed are listed in the result (WARNING), never dropped.

Outcomes follow the merge: a refusal or a terminating error is FAILED with
the host's message; a connection lost after a mutating command was sent is
UNKNOWN (never resent); what the host reports afterwards is the result. The
VM and the CSVs' free space are re-read the moment the action ends (one
round trip, ``HyperVContext.reread_vm``; a deleted VM's rows go), so the
new sizes show at once instead of with the next poll.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

from ventana.state.derived import human_bytes
from ventana.state.model import VM, FinalState, TaskState, VirtualDisk

from ..base import ActionResult
from . import commands as cmd
from .context import HyperVContext, HyperVNode, lost
from .mapping import as_int, path_key, props, text
from .session import CommandFailed, NodeSession, SessionError

log = logging.getLogger(__name__)

_DISK_FILE = re.compile(r"\.(a?vhdx?)$", re.IGNORECASE)
_WILDCARD = re.compile(r"[*?\[\]]")


class Refused(Exception):
    """A pre-check on the host failed: nothing mutating was sent."""


def folder_of(path: str) -> str:
    return path_key(path).rpartition("\\")[0]


def is_volume_root(folder: str) -> bool:
    """``c:``, ``c:\\``, ``c:\\clusterstorage`` or a CSV's ``c:\\clusterstorage\\volume1``
    (casefolded, no trailing backslash): never "a VM's storage folder"."""
    parts = [p for p in folder.rstrip("\\").split("\\") if p]
    if len(parts) <= 1:
        return True
    if parts[1] == "clusterstorage":
        return len(parts) <= 3
    return False


def check_path(path: str, roots: set[str]) -> str:
    """Why ``path`` must not be deleted ('' when it may): plain, absolute, a disk file,
    inside one of ``roots`` (casefolded folders)."""
    p = path.strip()
    if not p or p != path:
        return "empty or padded path"
    if _WILDCARD.search(p):
        return "wildcard characters in the path"
    if not re.match(r"^[A-Za-z]:\\", p) and not p.startswith("\\\\"):
        return "not an absolute path"
    parts = p.replace("/", "\\").split("\\")
    if any(part in (".", "..") for part in parts[1:]):
        return "relative segment in the path"
    if not _DISK_FILE.search(p):
        return "not a virtual disk file (.vhd, .vhdx, .avhd, .avhdx)"
    key = path_key(p)
    if not any(root and key.startswith(root + "\\") for root in roots):
        return "outside the VM's storage folders"
    return ""


class Cleanup:
    """Runs compact and delete through one backend's ``HyperVContext``."""

    def __init__(self, ctx: HyperVContext) -> None:
        self.ctx = ctx

    # -- shared ------------------------------------------------------------------
    def _vm_and_node(self, vm_id: str) -> tuple[VM, HyperVNode]:
        vm = self.ctx.vm(vm_id)
        if vm is None:
            raise Refused("the VM is not in the inventory; nothing was sent")
        node = self.ctx.node_for(vm)
        if node is None:
            raise Refused(f"node {vm.node_id} is not connected; nothing was sent")
        return vm, node

    def _known_files(self, vm_id: str) -> dict[str, VirtualDisk]:
        return {path_key(d.path): d for d in self.ctx.vm_disks(vm_id)}

    def _used_elsewhere(self, vm_id: str, paths: tuple[str, ...]) -> list[str]:
        """Paths another VM uses: attached to it, or the parent of one of its files
        (a shared base disk: changing or deleting it breaks that VM's chain)."""
        others: dict[str, str] = {}
        for e in self.ctx.disks():
            if e.vm_id != vm_id:
                others[path_key(e.path)] = e.vm_id
                if e.parent_path:
                    others[path_key(e.parent_path)] = e.vm_id
        out = []
        for p in paths:
            owner = others.get(path_key(p))
            if owner is not None:
                vm = self.ctx.vm(owner)
                out.append(f"{p} (used by {vm.name if vm is not None else owner})")
        return out

    async def _host_vm(self, session: NodeSession, vm_id: str) -> dict[str, Any]:
        answer = await session.run(cmd.get_vm_check(vm_id))
        rows = [props(o) for o in answer.output]
        if not rows:
            raise Refused("the host does not know this VM any more; nothing was sent")
        return rows[0]

    async def _sizes(self, session: NodeSession, paths: list[str]) -> dict[str, int]:
        if not paths:
            return {}
        answer = await session.run(cmd.get_vhds(paths))
        return {path_key(text(props(o).get("Path"))): as_int(props(o).get("FileSize"))
                for o in answer.output}

    # -- compact -------------------------------------------------------------------
    async def compact(self, vm_id: str, task_id: str, paths: tuple[str, ...]) -> ActionResult:
        ctx = self.ctx
        if ctx.read_only:  # the executor checked too; this is below it
            return ActionResult(TaskState.FAILED, error=f"{ctx.target} is read-only")
        try:
            vm, node = self._vm_and_node(vm_id)
            known = self._known_files(vm_id)
            shared = self._used_elsewhere(vm_id, paths)
            if shared:
                raise Refused("another VM depends on " + "; ".join(shared)
                              + " — nothing was sent")
            strange = [p for p in paths if path_key(p) not in known or _WILDCARD.search(p)]
            if strange or not paths:
                raise Refused("not one of this VM's disk files: " + ", ".join(strange)
                              + "; nothing was sent" if strange
                              else "no disk file to compact; nothing was sent")
            on_host = await self._host_vm(node.session, vm_id)
            state = text(on_host.get("State"))
            if state != "Off":
                raise Refused(f"the host reports the VM {state or 'in an unknown state'}; "
                              "Optimize-VHD needs it Off — nothing was sent")
            checkpoints = (await node.session.run(cmd.get_vm_checkpoints(vm_id))).output
            if checkpoints:
                raise Refused(f"the host reports {len(checkpoints)} checkpoint(s): the base "
                              "disks are parents of differencing disks and must not be "
                              "compacted — merge first; nothing was sent")
            before = await self._sizes(node.session, list(paths))
            gone = [p for p in paths if path_key(p) not in before]
            if gone:
                raise Refused("the host cannot find " + ", ".join(gone) + "; nothing was sent")
        except Refused as exc:
            return ActionResult(TaskState.FAILED, error=str(exc))
        except CommandFailed as exc:
            return ActionResult(TaskState.FAILED, error=f"pre-check failed: {exc}; "
                                "nothing was sent")
        except SessionError as exc:
            return ActionResult(TaskState.FAILED, error=f"pre-check failed: {exc}; "
                                "nothing was sent")
        size_before = sum(before.values())
        task = ctx.tasks.start(task_id, "compact", vm,
                               f"Optimize-VHD -Mode Full on {len(paths)} file(s), "
                               f"{human_bytes(size_before)}")
        state, error, done = TaskState.OK, "", 0
        after_sizes: dict[str, int] = {}
        async with ctx.action_session(node) as action:
            try:
                for i, path in enumerate(paths):
                    def progress(pct: float, message: str, i: int = i) -> None:
                        overall = 100.0 * (i + pct / 100.0) / len(paths)
                        ctx.tasks.progress(task_id, overall, message or f"file {i + 1}")

                    ctx.tasks.progress(task_id, 100.0 * i / len(paths),
                                       f"Optimize-VHD {i + 1} of {len(paths)}")
                    # Full mode needs the file attached read-only; always detached again.
                    await action.run(cmd.mount_vhd_read_only(path))
                    try:
                        await action.run_long(cmd.optimize_vhd(path), progress)
                    finally:
                        with contextlib.suppress(Exception):
                            await action.run(cmd.dismount_vhd(path))
                    done += 1
            except CommandFailed as exc:
                state, error = TaskState.FAILED, str(exc)
            except Exception as exc:
                state = TaskState.UNKNOWN
                error = lost(exc, f"Optimize-VHD may still be running on file {done + 1}")
            if state is not TaskState.UNKNOWN:
                try:  # what the host now says is the truth, on screen at once (this pool)
                    after_sizes = await self._sizes(action, list(paths))
                    await ctx.reread_vm(node, vm_id, session=action)
                except Exception as exc:
                    log.warning("re-read after the compact failed: %s", exc)
        size_after = sum(after_sizes.values()) if after_sizes else None
        freed = size_before - size_after if size_after is not None else None
        detail = (f"{done} of {len(paths)} file(s) compacted; "
                  + (f"{human_bytes(size_before)} → {human_bytes(size_after)} "
                     f"({human_bytes(max(0, freed or 0))} freed)" if size_after is not None
                     else "sizes after not read"))
        final = {TaskState.OK: FinalState.OPTIMIZED, TaskState.FAILED: FinalState.PENDING,
                 TaskState.UNKNOWN: FinalState.PENDING}[state]
        if state is TaskState.FAILED and done:
            error = f"{error} ({done} file(s) were compacted before it failed)"
        ctx.tasks.end(task, state, message=detail, error=error)
        return ActionResult(state, error, size_before, size_after, final, detail)

    # -- delete ---------------------------------------------------------------------
    async def delete(self, vm_id: str, task_id: str, paths: tuple[str, ...]) -> ActionResult:
        ctx = self.ctx
        if ctx.read_only:  # the executor checked too; this is below it
            return ActionResult(TaskState.FAILED, error=f"{ctx.target} is read-only")
        try:
            vm, node = self._vm_and_node(vm_id)
            known = self._known_files(vm_id)
            on_host = await self._host_vm(node.session, vm_id)
            state = text(on_host.get("State"))
            if state != "Off":
                raise Refused(f"the host reports the VM {state or 'in an unknown state'}; only "
                              "a VM that is Off can be deleted — nothing was sent")
            replication = text(on_host.get("ReplicationState")) or "Disabled"
            if replication != "Disabled":
                raise Refused(f"the host reports replication {replication}; remove replication "
                              "on both sides first — nothing was sent")
            drives = (await node.session.run(cmd.get_vm_drives(vm_id))).output
            roots = {folder_of(text(props(d).get("Path"))) for d in drives}
            roots |= {folder_of(d.path) for d in known.values()}
            config = text(on_host.get("Path")).rstrip("\\")
            if config:
                roots.add(path_key(config))
            # A drive at a volume's root would make the whole volume "the VM's storage".
            roots = {r for r in roots if not is_volume_root(r)}
            bad = []
            for p in paths:
                why = check_path(p, roots) or ("" if path_key(p) in known
                                                else "not one of this VM's known files")
                if why:
                    bad.append(f"{p} ({why})")
            bad += self._used_elsewhere(vm_id, paths)
            if bad:
                raise Refused("refused to delete " + "; ".join(bad) + " — nothing was sent")
            clustered = bool(on_host.get("IsClustered"))
        except Refused as exc:
            return ActionResult(TaskState.FAILED, error=str(exc))
        except (CommandFailed, SessionError) as exc:
            return ActionResult(TaskState.FAILED, error=f"pre-check failed: {exc}; "
                                "nothing was sent")
        size_before = sum(known[path_key(p)].size_bytes for p in paths)
        task = ctx.tasks.start(task_id, "delete", vm,
                               f"removing {vm.name} and {len(paths)} file(s), "
                               f"{human_bytes(size_before)}")
        session = node.session
        steps: list[tuple[str, Callable[[], Any]]] = []
        if clustered:
            steps.append(("Remove-ClusterGroup", lambda: session.run(
                cmd.remove_cluster_group(vm_id))))
        steps.append(("Remove-VM", lambda: session.run(cmd.remove_vm(vm_id))))
        sent = 0
        try:
            for i, (label, call) in enumerate(steps):
                ctx.tasks.progress(task_id, 10.0 * (i + 1), label)
                await call()
                sent += 1
        except CommandFailed as exc:
            error = str(exc)
            if sent:
                error += " (the cluster role was already removed: the VM is no longer " \
                         "highly available — add it back with Add-ClusterVirtualMachineRole " \
                         "or remove it by hand)"
            ctx.tasks.end(task, TaskState.FAILED, error=error)
            await self._reread(node, vm_id)
            return ActionResult(TaskState.FAILED, error, size_before, None,
                                FinalState.FAILED if sent else FinalState.PENDING)
        except Exception as exc:
            error = lost(exc, f"{steps[sent][0]} was sent")
            ctx.tasks.end(task, TaskState.UNKNOWN, error=error)
            return ActionResult(TaskState.UNKNOWN, error, size_before, None, FinalState.PENDING)
        not_removed: list[str] = []
        unknown = ""
        for i, path in enumerate(paths):
            ctx.tasks.progress(task_id, 30.0 + 60.0 * i / max(1, len(paths)),
                               f"Remove-Item {i + 1} of {len(paths)}")
            try:
                await session.run(cmd.remove_file(path))
            except CommandFailed as exc:
                not_removed.append(f"{path}: {exc}")
            except Exception as exc:
                unknown = lost(exc, f"Remove-Item of {path} was sent")
                break
        if unknown:
            ctx.tasks.end(task, TaskState.UNKNOWN, error=unknown)
            return ActionResult(TaskState.UNKNOWN, unknown, size_before, None,
                                FinalState.PENDING,
                                detail="the VM was removed; some files may remain")
        try:  # which files are really gone
            present = (await session.run(cmd.paths_present(list(paths)))).output
            still = [p for p, there in zip(paths, present, strict=False) if there is True]
        except Exception as exc:
            log.warning("Test-Path after the delete failed: %s", exc)
            still = []
            not_removed.append(f"could not check which files remain: {exc}")
        listed = {n.split(": ", 1)[0] for n in not_removed}
        not_removed += [f"{p}: still present" for p in still if p not in listed]
        await self._reread(node, vm_id)
        freed = size_before - sum(known[path_key(p)].size_bytes for p in still)
        detail = f"{vm.name} removed; {len(paths) - len(still)} of {len(paths)} file(s) " \
                 f"deleted, {human_bytes(freed)} freed"
        if not_removed:
            error = "files not removed: " + "; ".join(not_removed)
            ctx.tasks.end(task, TaskState.WARNING, message=detail, error=error)
            return ActionResult(TaskState.WARNING, error, size_before, size_before - freed,
                                FinalState.PENDING, detail)
        ctx.tasks.end(task, TaskState.OK, message=detail)
        return ActionResult(TaskState.OK, "", size_before, 0, None, detail)

    async def _reread(self, node: HyperVNode, vm_id: str) -> None:
        """The deleted VM re-read at once (gone: its rows go) with the CSVs' free space,
        not the whole node: on screen without waiting for a poll."""
        try:
            await self.ctx.reread_vm(node, vm_id, gone=True)
        except Exception as exc:
            log.warning("re-read after the delete failed: %s", exc)
