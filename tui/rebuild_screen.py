"""The rebuild checklist: one VM's rebuild, step by step.

Shows each step's state, progress (live from the host task while it runs),
start and duration; the capture summary (generation, firmware boot device and
Secure Boot template, CPU/RAM, NICs with switch/VLAN/MAC/IPv4, disks with
their controllers, checkpoints, guest services); and, when a step failed,
the VM's known state and what to do by hand. ``p`` asks the rebuild to pause
after the running step; ``r`` resumes a paused or failed one through a new
plan and typed confirmation; ``x`` abandons one the operator finished or
rolled back by hand (nothing is sent; the action log keeps a row). The
screen reads the rebuild tables of the action-log file twice a second, so it
follows a rebuild whichever worker runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from ventana.state.actionlog import ActionLog, ActionLogError
from ventana.state.derived import human_bytes
from ventana.state.model import Task
from ventana.state.rebuild import Rebuild, RebuildState, RebuildStore, StepState
from ventana.state.sanitize import clean
from ventana.state.store import Store

from .confirm_screen import ConfirmScreen

_MARK = {
    StepState.PENDING: ("[ ]", "dim"),
    StepState.RUNNING: ("[>]", "bold cyan"),
    StepState.DONE: ("[x]", "green"),
    StepState.FAILED: ("[!]", "bold red"),
    StepState.SKIPPED: ("[-]", "yellow"),
}
_STATE_STYLE = {
    RebuildState.READY: "cyan", RebuildState.RUNNING: "bold cyan",
    RebuildState.PAUSED: "bold yellow", RebuildState.FAILED: "bold red",
    RebuildState.DONE: "bold green", RebuildState.ABANDONED: "dim",
}


def _hms(iso: str | None) -> str:
    return iso[11:19] if iso else ""


def _took(start: str | None, end: str | None, now: datetime | None = None) -> str:
    if not start:
        return ""
    try:
        a = datetime.fromisoformat(start)
        b = datetime.fromisoformat(end) if end else now
    except ValueError:
        return ""
    if b is None:
        return ""
    secs = max(0, int((b - a).total_seconds()))
    m, s = divmod(secs, 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def checklist(wf: Rebuild, task_of: Callable[[str], Task | None] | None = None) -> Table:
    table = Table(box=None, padding=(0, 1), header_style="dim", expand=True)
    table.add_column("Step", ratio=3, no_wrap=True)
    table.add_column("State")
    table.add_column("Progress", justify="right")
    table.add_column("Started")
    table.add_column("Took", justify="right")
    table.add_column("Result", ratio=4, no_wrap=True, overflow="ellipsis")
    for i, step in enumerate(wf.steps, start=1):
        mark, style = _MARK[step.state]
        pct = step.pct
        message = ("see below: " + step.error) if step.state is StepState.FAILED \
            else step.message
        if step.state is StepState.RUNNING and task_of and step.task_id:
            task = task_of(step.task_id)
            if task is not None:
                pct = task.pct
                message = task.message or message
        progress = f"{pct:.0f}%" if step.state is not StepState.PENDING else ""
        state = step.state.value
        if step.state is StepState.RUNNING and wf.interrupted:
            # Nobody is running it any more: not "running 0 %" (issue 12).
            state, progress, style = "interrupted", "?", "bold magenta"
            message = "interrupted — verify on the host"
        label = Text(mark, style=style)
        label.append(f" {i}. {step.title}", style="" if step.state is not StepState.PENDING
                     else "dim")
        table.add_row(label,
                      Text(state, style=style), Text(progress),
                      Text(_hms(step.started)), Text(_took(step.started, step.ended)),
                      Text(clean(message or "")))
    return table


def capture_summary(cap: dict[str, Any] | None) -> Group | Text:
    if not cap:
        return Text("No capture yet: it is the first step.", style="dim")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("VM", Text(f"Gen{cap.get('generation')} · version {cap.get('config_version')} "
                            f"· {cap.get('vcpus')} vCPU · {cap.get('memory_mb')} MB · "
                            f"{cap.get('os', '?')} · on {cap.get('node') or '?'} / "
                            f"{cap.get('lun') or '?'} · captured {cap.get('power', '?')}"))
    fw = cap.get("firmware") or {}
    if fw.get("boot_order"):
        first = fw["boot_order"][0]
        device = (f"{first.get('controller_type')} {first.get('controller_number')}:"
                  f"{first.get('controller_location')} ({Path(str(first.get('path', ''))).name})"
                  if first.get("type") == "HardDiskDrive" else str(first.get("type")))
        grid.add_row("Firmware", Text(f"first boot device {device} · Secure Boot "
                                      f"{'on' if fw.get('secure_boot') else 'off'}, template "
                                      f"{fw.get('secure_boot_template', '?')}"))
    elif fw.get("bios_startup_order"):
        grid.add_row("BIOS", Text("startup order " + ", ".join(fw["bios_startup_order"])))
    for nic in cap.get("nics") or []:
        ips = nic.get("ipv4")
        addr = ", ".join(f"{x['address']}/{x['prefix']} gw {x['gateway']}" for x in ips) \
            if ips else "IPv4 not reported (guest not reachable)"
        grid.add_row("NIC", Text(f"{nic.get('name')}: {nic.get('switch')} VLAN "
                                 f"{nic.get('vlan') or '-'} MAC {nic.get('mac')} · {addr}"))
    for d in cap.get("disks") or []:
        grid.add_row("Disk", Text(f"{d.get('controller_type')} {d.get('controller_number')}:"
                                  f"{d.get('controller_location')} {Path(str(d.get('path'))).name}"
                                  f" · {human_bytes(d.get('size'))} of {human_bytes(d.get('max'))}"
                                  + (" · system" if d.get("system") else "")))
    cps = cap.get("checkpoints") or []
    grid.add_row("Checkpoints", Text(f"{len(cps)} in the chain at capture"))
    services = cap.get("services")
    why = str(cap.get("services_note") or "the guest was not reachable")
    grid.add_row("Services", Text(", ".join(services) if services else
                                  f"not captured ({why})"))
    rep = cap.get("replication") or {}
    if rep.get("state") not in (None, "disabled"):
        grid.add_row("Replication", Text(f"{rep.get('state')} to {rep.get('target')} — merged "
                                         "to the last parent; re-establish it for the new VM",
                                         style="yellow"))
    return Group(Text("Capture", style="bold"), grid)


def failure_text(wf: Rebuild) -> Text:
    failed = next((s for s in wf.steps if s.state is StepState.FAILED), None)
    text = Text()
    if wf.interrupted:
        text.append("Interrupted: the console that ran this rebuild stopped during a step. "
                    "Verify on the host before resuming.\n", style="bold magenta")
    if failed is not None:
        text.append(f"{failed.title} failed: ", style="bold red")
        text.append(clean(failed.error) + "\n")
        text.append("What to do by hand: ", style="bold")
        text.append(clean(failed.manual) + "\n")
    flags = (wf.result or {}).get("flags") or []
    for flag in flags:
        text.append("Pending: ", style="bold yellow")
        text.append(clean(str(flag)) + "\n")
    return text


class RebuildScreen(ModalScreen[None]):
    """The checklist of one rebuild (or, before it starts, of a VM's rebuild)."""

    CSS_PATH = "rebuild_screen.tcss"
    BINDINGS = [
        Binding("escape,q", "dismiss", "Close"),
        Binding("question_mark", "app.help", "Help", show=False),
        Binding("p", "pause", "Pause after this step"),
        Binding("r", "resume", "Resume"),
        Binding("x", "abandon", "Abandon (stop tracking)"),
    ]

    def __init__(self, db: Path, vm_id: str, *, workflow: str | None = None,
                 read_only: bool = False, now: Callable[[], datetime] | None = None,
                 store: Store | None = None, log: ActionLog | None = None,
                 resume: Callable[..., None] | None = None) -> None:
        """``store``: live task progress for the running step; ``log``: where an
        abandonment is recorded; ``resume(vm_id, workflow=, show_checklist=)``:
        the front end plans the resumption."""
        super().__init__()
        self._store = store
        self._log = log
        self._resume = resume
        self.db = db
        self.vm_id = vm_id
        self.workflow = workflow
        self.read_only = read_only
        self._now = now
        self._rs: RebuildStore | None = None
        self.wf: Rebuild | None = None
        self._reading = False  # a read is out (the half-second tick skips while it is)
        self._gone = False  # unmounted: a read that opens the store closes it itself

    def compose(self) -> ComposeResult:
        with Vertical(id="rebuild-dialog"):
            yield Static(Text("Rebuild", style="bold"), id="rebuild-title")
            with VerticalScroll(id="rebuild-body"):
                yield Static("", id="rebuild-steps")
                yield Static("", id="rebuild-failure")
                yield Static("", id="rebuild-capture")
            yield Footer()

    def on_mount(self) -> None:
        self.refresh_state()
        self.set_interval(0.5, self.refresh_state)

    def on_unmount(self) -> None:
        self._gone = True
        if self._rs is not None:
            self._rs.close()

    def _load(self) -> Rebuild | None:
        rs = self._rs
        if rs is None:
            return None
        if self.workflow:
            return rs.get(self.workflow)
        waiting = rs.unfinished(self.vm_id)
        if waiting:  # follow this one from now on, whatever state it reaches
            self.workflow = waiting[-1].id
            return waiting[-1]
        return rs.latest(self.vm_id)

    def _open_and_load(self) -> Rebuild | None:
        if self._rs is None:
            rs = RebuildStore.open(self.db)
            if self._gone:  # closed while it opened: nobody else would close it
                rs.close()
                return None
            self._rs = rs
        return self._load()

    def refresh_state(self) -> None:
        """Read the rebuild again, in a worker thread: the store is the action log's
        database, and a team database's round trip (or one that does not answer, up to
        its connect timeout) must never stall the screen. One read at a time."""
        if self._reading:
            return
        self._reading = True
        self.run_worker(self._refresh(), group="rebuild-read", exit_on_error=False)

    async def _refresh(self) -> None:
        try:
            wf = await asyncio.to_thread(self._open_and_load)
        except ActionLogError as exc:
            self.query_one("#rebuild-title", Static).update(
                Text(f"The rebuild state cannot be read: {clean(str(exc))}", style="bold red"))
            return
        finally:
            self._reading = False
        self._show(wf)

    def _show(self, wf: Rebuild | None) -> None:
        self.wf = wf
        title = self.query_one("#rebuild-title", Static)
        if wf is None:
            title.update(Text("Waiting for the rebuild to start…", style="dim"))
            return
        head = Text("Rebuild of ", style="bold")
        head.append(clean(wf.vm_name), style="bold underline")
        head.append("  ")
        head.append(f" {wf.status.upper()} ", style=_STATE_STYLE.get(wf.state, "bold"))
        head.append(f"  {wf.done_count}/{len(wf.steps)} steps · {wf.id}", style="dim")
        if wf.pause_requested and wf.state is RebuildState.RUNNING:
            head.append("  pausing after this step", style="yellow")
        if wf.to_last_parent:
            head.append("  merge to last parent (replicates)", style="yellow")
        title.update(head)
        task_of = self._store.task if self._store is not None else None
        self.query_one("#rebuild-steps", Static).update(checklist(wf, task_of))
        self.query_one("#rebuild-failure", Static).update(failure_text(wf))
        self.query_one("#rebuild-capture", Static).update(capture_summary(wf.capture))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("pause", "resume", "abandon") and self.read_only:
            return None
        return True

    def action_pause(self) -> None:
        wf = self.wf
        if wf is None or self._rs is None:
            return
        if wf.state is not RebuildState.RUNNING:
            self.notify(f"The rebuild is {wf.state.value}; nothing to pause.", markup=False)
            return
        self.run_worker(self._write(lambda rs: rs.request_pause(wf.id), "Could not pause",
                                    "The rebuild pauses after the running step."),
                        group="rebuild-write", exit_on_error=False)

    def action_resume(self) -> None:
        wf = self.wf
        if wf is None:
            return
        if wf.state not in (RebuildState.PAUSED, RebuildState.FAILED, RebuildState.READY) \
                and not wf.interrupted:
            self.notify(f"The rebuild is {wf.status}; nothing to resume.", markup=False)
            return
        if self._resume is not None:
            self._resume(wf.vm_id, workflow=wf.id, show_checklist=False)

    def action_abandon(self) -> None:
        wf = self.wf
        if wf is None or self._rs is None:
            return
        if not wf.state.unfinished or (wf.state is RebuildState.RUNNING and not wf.interrupted):
            self.notify(f"The rebuild is {wf.status}; only a paused, failed or interrupted "
                        "rebuild can be abandoned.", markup=False)
            return
        question = (f"Abandon the rebuild of {clean(wf.vm_name)}? Nothing is sent to the "
                    "cluster: the VMs stay as they are now (see the checklist for what was "
                    "done); the console stops offering to resume it. The action log keeps a row.")
        self.app.push_screen(ConfirmScreen(question, "Abandon", "Keep"), callback=self._abandon)

    def _abandon(self, yes: bool | None) -> None:
        wf = self.wf
        if not yes or wf is None or self._rs is None:
            return
        log = self._log

        def abandon(rs: RebuildStore) -> None:
            if log is not None:
                log.record(action="rebuild.abandon", target_system=wf.target_system,
                           mode="read-write", target_object=f"vm:{wf.vm_id}",
                           target_name=wf.vm_name,
                           plan={"workflow": wf.id, "steps": {s.name: s.state.value
                                                              for s in wf.steps}},
                           findings=[], override=False, confirmed=True, outcome="cancelled",
                           error="abandoned by the operator")
            rs.set_state(wf.id, RebuildState.ABANDONED)

        self.run_worker(self._write(abandon, "Could not abandon",
                                    f"Rebuild of {clean(wf.vm_name)} abandoned."),
                        group="rebuild-write", exit_on_error=False)

    async def _write(self, change: Callable[[RebuildStore], None], failed: str,
                     done: str) -> None:
        """One change to the rebuild's state, in a worker thread (as the reads), then
        say so and read it back."""
        rs = self._rs
        if rs is None:
            return
        try:
            await asyncio.to_thread(change, rs)
        except ActionLogError as exc:
            self.notify(f"{failed}: {clean(str(exc))}", severity="error", markup=False)
            return
        self.notify(done, markup=False)
        self.refresh_state()
