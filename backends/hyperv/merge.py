"""The checkpoint merge and the configuration-version upgrade on a Hyper-V cluster node.

- **merge**: ``Get-VM -Id … | Remove-VMSnapshot -Name *`` on the node hosting
  the VM, on a pool of its own (a merge can run for hours while the node's
  polls go on), its PSRP progress records as task progress; the VM (and the
  CSVs' free space) is re-read on that pool the moment it ends
  (``HyperVContext.reread_vm``): sizes after, checkpoints left (PARTIAL when
  a failure left fewer than there were), on screen without waiting for a poll.
- **upgrade**: ``Update-VMVersion -Force``; the version reached is read back
  from the host by re-reading that VM (WARNING when it did not move).

Outcomes: the host's refusal is FAILED with its message; a connection lost
after the command was sent is UNKNOWN (never resent). Both run through the
backend's ``HyperVContext`` only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ventana.state.model import FinalState, TaskState

from ..base import ActionResult
from . import commands as cmd
from .context import HyperVContext, lost
from .mapping import is_replica_snapshot, props, text
from .session import CommandFailed, NodeSession, SessionError

log = logging.getLogger(__name__)


async def run_upgrade(ctx: HyperVContext, vm_id: str, task_id: str, version: str
                      ) -> ActionResult:
    """Update-VMVersion on the VM's node; the outcome is read back from the host."""
    if ctx.read_only:  # the executor checked too; this is below it
        return ActionResult(TaskState.FAILED, error=f"{ctx.target} is read-only")
    vm = ctx.vm(vm_id)
    if vm is None:
        return ActionResult(TaskState.FAILED,
                            error="the VM is not in the inventory; nothing sent")
    node = ctx.node_for(vm)
    if node is None:
        return ActionResult(TaskState.FAILED,
                            error=f"node {vm.node_id} is not connected; nothing was sent")
    before = vm.config_version
    task = ctx.tasks.start(task_id, "upgrade", vm, f"Update-VMVersion {before} → {version}")
    state, error, final = TaskState.OK, "", FinalState.OPERATIONAL
    try:
        await node.session.run(cmd.update_vm_version(vm_id))
    except CommandFailed as exc:
        state, error, final = TaskState.FAILED, str(exc), FinalState.PENDING
    except Exception as exc:
        reason = str(exc) if isinstance(exc, SessionError) else type(exc).__name__
        state, final = TaskState.UNKNOWN, FinalState.PENDING
        error = f"{reason} — outcome unknown, verify on the host"
    detail = ""
    if state is not TaskState.UNKNOWN:
        try:  # what the host now says is the truth: that VM re-read at once, not the node
            await ctx.reread_vm(node, vm_id)
            now = ctx.vm(vm_id)
            reached = now.config_version if now is not None else "?"
            detail = f"configuration version {before} → {reached}"
            if state is TaskState.OK and reached == before:
                state, final = TaskState.WARNING, FinalState.PENDING
                error = f"the host still reports version {reached}"
        except Exception as exc:
            log.warning("re-read after the upgrade failed: %s", exc)
    ctx.tasks.end(task, state, message=detail, error=error,
                  pct=100.0 if state is TaskState.OK else 0.0)
    return ActionResult(state, error, final_state=final, detail=detail)


async def run_merge(ctx: HyperVContext, vm_id: str, task_id: str) -> ActionResult:
    """Remove every checkpoint of a VM on its node; progress goes out on the stream."""
    if ctx.read_only:  # the executor checked too; this is below it
        return ActionResult(TaskState.FAILED, error=f"{ctx.target} is read-only")
    vm = ctx.vm(vm_id)
    if vm is None:
        return ActionResult(TaskState.FAILED, error="the VM is not in the inventory; nothing sent")
    node = ctx.node_for(vm)
    if node is None:
        return ActionResult(TaskState.FAILED,
                            error=f"node {vm.node_id} is not connected; the merge was not sent")
    before = sum(d.size_bytes for d in ctx.vm_disks(vm_id))
    checkpoints = ctx.checkpoint_count(vm_id)
    task = ctx.tasks.start(task_id, "merge", vm,
                           f"merging {checkpoints} checkpoint(s) on {vm.node_id}")

    last = [0.0]

    def progress(pct: float, message: str) -> None:
        last[0] = pct
        ctx.tasks.progress(task_id, pct, message)

    state, error, final = TaskState.OK, "", FinalState.OPERATIONAL
    after: int | None = None
    async with ctx.action_session(node) as action:
        try:
            refusal = await replica_refusal(action, vm_id)
            if refusal:  # below the plan's REPORTED_REPLICA_CHECKPOINT: nothing is sent
                ctx.tasks.end(task, TaskState.FAILED, error=refusal)
                return ActionResult(TaskState.FAILED, refusal, before, before)
            await action.run_long(cmd.remove_all_snapshots(vm_id), progress)
            await wait_background_merge(ctx, action, vm_id, lambda m: progress(last[0], m))
        except CommandFailed as exc:
            state, error, final = TaskState.FAILED, str(exc), FinalState.FAILED
        except Exception as exc:
            state, final = TaskState.UNKNOWN, FinalState.PENDING
            error = lost(exc, "the merge may still be running")
        if state is not TaskState.UNKNOWN:
            try:  # re-read the VM at once, on this pool: sizes after, checkpoints left
                await ctx.reread_vm(node, vm_id, session=action)
                after = sum(d.size_bytes for d in ctx.vm_disks(vm_id))
            except Exception as exc:
                log.warning("re-read after the merge failed: %s", exc)
            left = ctx.checkpoint_count(vm_id)
            if state is TaskState.FAILED and left < checkpoints:
                final = FinalState.PARTIAL
    # A row that ends without the work done keeps the last progress seen (TaskReporter).
    ctx.tasks.end(task, state, message="merged" if state is TaskState.OK else "", error=error)
    return ActionResult(state, error, before, after, final)


async def replica_refusal(action: NodeSession, vm_id: str) -> str:
    """Why the merge must not be sent ("" = it may): the host, read now, reports a Hyper-V
    Replica checkpoint on the VM (SnapshotType Replica, AppConsistentReplica or
    SyncedReplica — Microsoft.HyperV.PowerShell.SnapshotType), which belongs to
    replication; ``Remove-VMSnapshot -Name *`` would remove it with the others. Defence in
    depth: the plan blocks on the finding too, but a stale plan or a caller that skips
    it must not reach the host. Names only, never numbers (COMMANDS.md)."""
    rows = (await action.run(cmd.get_vm_snapshots(vm_id))).output
    replicas = [p for p in map(props, rows) if is_replica_snapshot(p.get("SnapshotType"))]
    if not replicas:
        return ""
    first = replicas[0]
    return (f"refused: the host reports {len(replicas)} Hyper-V Replica checkpoint(s) "
            f"(e.g. {text(first.get('Name'))!r}, {text(first.get('SnapshotType'))}); "
            "they belong to replication and a merge would remove them. Nothing was sent.")


async def wait_background_merge(ctx: HyperVContext, action: NodeSession, vm_id: str,
                                say: Callable[[str], None]) -> None:
    """Remove-VMSnapshot returns when the checkpoints left the tree; the .avhdx files
    may go on merging in the background (``Msvm_ComputerSystem`` OperationalStatus
    "Merging disks"). Return only once that has ended; progress says so meanwhile."""
    while True:
        rows = (await action.run(cmd.get_merge_status(vm_id))).output
        row = props(rows[0]) if rows else {}
        if text(row.get("SecondaryOperationalStatus")).strip() != "MergingDisks":
            return
        say(text(row.get("Status")).strip() or "Merging disks")
        await asyncio.sleep(min(5.0, max(0.2, ctx.poll_interval)))
