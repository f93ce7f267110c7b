"""The plan screen: what an action will do, its pre-flight findings and the
typed confirmation.

The operator sees the target, the volume, free space now, the space needed,
free space expected afterwards, the estimate, each finding and the
equivalent command. Confirming needs the target's exact name; blocking
findings also need an explicit, logged override. Esc cancels.

The screen uses the terminal's whole height. The plan scrolls; beside the
name box a pinned summary (action, VM, node, overrides, space after,
estimate) stays in view at any size, and a confirmation is accepted only
once the operator has seen the whole plan (it fits, or was scrolled to its
end). The equivalent command wraps, never cut at the edge, and Ctrl+Y copies
it. Long names (VM, node, volume, snapshots) are cut in the middle wherever
the plan shows them — title, steps, findings, command, tables, pinned
summary — so a 10,000-character name cannot push the plan off screen; the
typed confirmation still needs the whole, real name. A
wrong name is reported to the app (``NameMismatch``), which logs it as
refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Static

from ventana.backends import actionspecs
from ventana.state.derived import human_bytes
from ventana.state.model import Severity
from ventana.state.plans import Plan

from .fit import cap_middle, shorten_names

_SEVERITY_STYLE = {
    Severity.BLOCKING: "bold white on red",
    Severity.CRITICAL: "bold red",
    Severity.WARNING: "bold black on yellow",
    Severity.INFO: "bold cyan",
}


@dataclass(frozen=True, slots=True)
class Confirmation:
    typed: str
    override: bool
    overridden: frozenset[str] = frozenset()  # the blocking codes the operator saw
    second: bool = False  # the second explicit confirmation (plan.double_confirm)
    plan: Plan | None = None  # the plan as last shown, when options re-planned it


#: What the operator types as the second confirmation of a double-confirmed plan.
SECOND_WORD = "DELETE"


#: Each action's plan heading, from its spec (backends/actionspecs).
ACTION_TITLES = {spec.name: spec.heading for spec in actionspecs.specs() if spec.heading}


def plan_names(plan: Plan) -> list[object]:
    """Every untrusted name a plan's text may carry (VM, node, volume, snapshots)."""
    facts = plan.facts
    return [plan.target_name, facts.get("node"), plan.lun_name, facts.get("snapshot_name"),
            *(item.get("name") for item in facts.get("checkpoint_list") or [])]


def shown(plan: Plan, text: str) -> str:
    """Plan text as the screen shows it: long names cut in the middle (fit.py)."""
    return shorten_names(text, plan_names(plan))


def plan_title(plan: Plan) -> Text:
    title = Text(ACTION_TITLES.get(plan.action, f"{plan.action} "), style="bold")
    title.append(cap_middle(plan.target_name), style="bold underline")
    if plan.irreversible:
        title.append("  IRREVERSIBLE", style="bold red")
    return title


def plan_summary(plan: Plan, clock: str = "") -> Group:
    """The plan's body; ``clock`` names the time base of "Planned at" (e.g. simulated)."""
    steps = Text()
    for step in plan.steps:
        steps.append(f" • {shown(plan, step)}\n")
    facts = plan.facts
    space = Table.grid(padding=(0, 2))
    space.add_column(style="dim")
    space.add_column()
    vm_line = Text(f"on {facts.get('node') or '?'} · {facts.get('power', '?')} · "
                   f"Gen{facts.get('generation', '?')} · version "
                   f"{facts.get('config_version') or '?'} · replication "
                   f"{facts.get('replication', '?')}")
    vsphere = facts.get("platform") == "vsphere"
    if vsphere:
        vm_line = Text(f"on host {facts.get('node') or '?'} · {facts.get('power', '?')} · "
                       f"{facts.get('checkpoints', 0)} snapshot(s) · stun budget "
                       f"{float(facts.get('stun_budget_ms') or 0) / 1000:.1f} s")
        if facts.get("last_stun_ms") is not None:
            vm_line.append(f" · last stun {float(facts['last_stun_ms']) / 1000:.2f} s")
    space.add_row("VM", vm_line)
    if vsphere and facts.get("snapshot_name"):
        space.add_row("Snapshot", Text(cap_middle(facts["snapshot_name"]), style="bold"))
    if vsphere and plan.action == "remove-snapshot":
        space.add_row("Children", Text("removed too" if facts.get("children")
                                       else "kept, re-parented to its parent"))
    if vsphere and plan.action == "create-snapshot":
        space.add_row("Options", Text(f"quiesce {'yes' if facts.get('quiesce') else 'no'} · "
                                      f"memory {'yes' if facts.get('memory') else 'no'}"))
        for key, label in (("pre_freeze", "Guest pre-freeze"), ("post_thaw", "Guest post-thaw")):
            if facts.get(key):
                space.add_row(label, Text(shown(plan, str(facts[key])), style="italic"))
    if plan.action == "upgrade":
        space.add_row("Configuration version", Text(
            f"{facts.get('config_version') or '?'} → {facts.get('target_version') or '?'} "
            + ("(the host's default: Get-VMHostSupportedVersion -Default)"
               if facts.get("target_basis") == "host default"
               else "(assumed: the highest version already running on this cluster)"),
            style="bold"))
    else:
        _space_rows(space, plan)
    if plan.created is not None:
        space.add_row("Planned at", Text(plan.created.strftime("%Y-%m-%d %H:%M:%S UTC")
                                         + (f", {clock}" if clock else "")
                                         + " (re-checked when you confirm)"))
    groups: list[object] = [steps, space, Text(""), command_text(plan)]
    listed = facts.get("checkpoint_list", [])
    if listed:
        groups += [Text(""), _chain_table(listed)]
    files = facts.get("files") or facts.get("disks")
    if files and plan.action in ("delete", "compact"):
        groups += [Text(""), _files_table(plan, files)]
    return Group(*groups)  # type: ignore[arg-type]


def command_text(plan: Plan) -> Text:
    """The equivalent command: it wraps (long tokens fold), never cut at the edge; long
    names in it are shortened like everywhere on the plan, and Ctrl+Y copies it whole."""
    text = Text("Equivalent command", style="dim")
    command = shown(plan, plan.command)
    if command != plan.command:
        text.append("  (long names shortened with …; Ctrl+Y copies it whole)\n",
                    style="dim italic")
    else:
        text.append("  (Ctrl+Y copies it)\n", style="dim italic")
    text.append(command, style="italic")
    text.overflow = "fold"
    return text


def _hm(seconds: float) -> str:
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def pinned_summary(plan: Plan, override: bool) -> Text:
    """What is being confirmed, in three short lines kept beside the name box."""
    facts = plan.facts
    text = Text(overflow="fold")
    action = ACTION_TITLES.get(plan.action, f"{plan.action} ").strip().removesuffix(" of")
    text.append(action.removesuffix(" the VM"), style="bold")
    text.append(" · VM ")
    text.append(cap_middle(plan.target_name, 40), style="bold reverse")
    text.append(f" · {'host' if facts.get('platform') == 'vsphere' else 'node'} ")
    text.append(cap_middle(facts.get("node") or "?", 30))
    if plan.irreversible:
        text.append("  IRREVERSIBLE", style="bold red")
    text.append("\nOverrides: ")
    if not plan.blocking:
        text.append("none (nothing blocking)")
    elif override:
        text.append(", ".join(f.code for f in plan.blocking) + " — overridden, logged",
                    style="bold red")
    else:
        text.append(", ".join(f.code for f in plan.blocking) + " — blocking, not overridden",
                    style="bold red")
    text.append("\nSpace after: ")
    if plan.free_after_worst is None:
        text.append("n/a")
    else:
        text.append(human_bytes(plan.free_after_worst))
        if plan.free_after_best not in (None, plan.free_after_worst):
            text.append(f" – {human_bytes(plan.free_after_best)}")
        text.append(f" free on {cap_middle(plan.lun_name or '?', 30)}")
    text.append(" · Estimate: ")
    if plan.estimate is None:
        text.append("n/a")
    else:
        est = plan.estimate
        text.append(f"{_hm(est.likely_s)} ({_hm(est.low_s)} – {_hm(est.high_s)})")
    return text


def _space_rows(space: Table, plan: Plan) -> None:
    facts = plan.facts
    vsphere = facts.get("platform") == "vsphere"
    space.add_row("Datastore" if vsphere else "Volume",
                  Text(cap_middle(plan.lun_name or "?"), style="bold"))
    space.add_row("Free now", Text(human_bytes(plan.free_now)))
    needed = Text(human_bytes(plan.space_needed))
    if facts.get("reserved_by_running_merges"):
        needed.append(f"  + {human_bytes(facts['reserved_by_running_merges'])} reserved by "
                      "merges already running on this volume", style="yellow")
    if facts.get("space_basis"):
        needed.append(f"  ({facts['space_basis']})", style="dim")
    space.add_row("Space needed (peak)", needed)
    after = Text(human_bytes(plan.free_after_worst))
    if plan.free_after_best != plan.free_after_worst:
        after.append(f" – {human_bytes(plan.free_after_best)}")
        after.append("  (depends on how much the parent disks grow)", style="dim")
    space.add_row("Free after", after)
    space.add_row("Disks now", Text(human_bytes(plan.size_before)))
    if plan.estimate:
        space.add_row("Estimated time", Text(plan.estimate.text()))
    if facts.get("estimated_stun_s") is not None:
        space.add_row("Estimated stun", Text(f"{facts['estimated_stun_s']:.1f} s (from the "
                                             "delta size)"))


def _chain_table(listed: list[dict[str, object]]) -> Table:
    chain = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
    for label, justify in (("Checkpoint", "left"), ("Kind", "left"), ("Created", "left"),
                           ("Size", "right")):
        # fold, never crop: a cell shows all of its (already shortened) text
        chain.add_column(label, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for item in listed:  # every one: the operator reads the whole plan before confirming
        chain.add_row(Text(cap_middle(item["name"])), Text(str(item["kind"])),
                      Text(str(item["created"])[:16].replace("T", " ")),
                      Text(human_bytes(item["size"])))  # type: ignore[arg-type]
    return chain


def _files_table(plan: Plan, files: list[dict[str, object]]) -> Table:
    """Every file the action deletes or compacts, with its size (each listed; a long
    name inside a path is cut in the middle like the rest of the plan)."""
    deleting = plan.action == "delete"
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim",
                  title=Text("Files deleted" if deleting else "Disks compacted", style="bold"),
                  title_justify="left")
    table.add_column("File", overflow="fold")
    table.add_column("Size", justify="right")
    for item in files:  # every file; a long VM name inside a path shortened as elsewhere
        table.add_row(Text(shown(plan, str(item["path"]))),
                      Text(human_bytes(item["size"])))  # type: ignore[arg-type]
    total = sum(int(item["size"]) for item in files)  # type: ignore[call-overload]
    table.add_row(Text(f"{len(files)} file(s)", style="bold"),
                  Text(human_bytes(total), style="bold"))
    return table


def findings_text(plan: Plan) -> Text:
    if not plan.findings:
        return Text("\nPre-flight: no findings.\n", style="green")
    text = Text("\nPre-flight findings\n", style="bold")
    for f in plan.findings:
        text.append(f" {f.severity.value.upper()} ", style=_SEVERITY_STYLE[f.severity])
        text.append(f" {f.code}  ", style="bold")
        text.append(f"{shown(plan, f.message)}\n")
    return text


class PlanBody(VerticalScroll):
    """The scrolling plan; tells its screen when its size or position changes."""

    def on_resize(self, event: Resize) -> None:
        check = getattr(self.screen, "check_seen", None)
        if callable(check):
            check()


#: Keys of a screen that must be read to its end before it confirms anything.
SEEN_BINDINGS = [
    Binding("pagedown", "page(1)", "Page down", show=False),
    Binding("pageup", "page(-1)", "Page up", show=False),
    Binding("ctrl+end", "plan_end", "End of plan", show=False),
    Binding("ctrl+home", "plan_home", "Top of plan", show=False),
]


class SeenTracker:
    """For a screen with a ``PlanBody`` and a ``#plan-seen`` line: has the operator
    seen all of it (it fits, or was scrolled to its end)? Call ``watch_seen`` on
    mount; confirm only when ``unseen_lines()`` is 0."""

    #: The whole body has been on screen.
    seen_all: bool = False

    def watch_seen(self) -> None:
        screen: Any = self
        body = screen.query_one(PlanBody)
        screen.watch(body, "scroll_y", lambda _value: self.check_seen(), init=False)

    def unseen_lines(self) -> int:
        """Lines below what is (or was) on screen; 0 once all was seen."""
        if self.seen_all:
            return 0
        body = self.query_one(PlanBody)  # type: ignore[attr-defined]
        return max(round(body.max_scroll_y - body.scroll_y), 0)

    def check_seen(self) -> None:
        body = self.query_one(PlanBody)  # type: ignore[attr-defined]
        if body.size.height <= 0:
            return  # not laid out yet: nothing is on screen
        if not self.seen_all and body.scroll_y >= body.max_scroll_y:
            self.seen_all = True
        below = self.unseen_lines()
        status = self.query_one("#plan-seen", Static)  # type: ignore[attr-defined]
        if below:
            status.update(Text(f" ▼ {below} more line(s) of the plan below — read them "
                               "(PgDn) before confirming ", style="bold black on yellow"))
        else:
            status.update(Text(" ✓ whole plan seen ", style="dim"))

    def action_page(self, step: int) -> None:
        body = self.query_one(PlanBody)  # type: ignore[attr-defined]
        if step > 0:
            body.scroll_page_down(animate=False)
        else:
            body.scroll_page_up(animate=False)

    def action_plan_end(self) -> None:
        self.query_one(PlanBody).scroll_end(animate=False)  # type: ignore[attr-defined]

    def action_plan_home(self) -> None:
        self.query_one(PlanBody).scroll_home(animate=False)  # type: ignore[attr-defined]


class PlanScreen(SeenTracker, ModalScreen[Confirmation | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), *SEEN_BINDINGS,
                Binding("ctrl+y", "copy_command", "Copy command", show=False),
                Binding("question_mark", "app.help", "Help", show=False)]

    class NameMismatch(Message):
        """The operator confirmed with a name that is not the target's (to be logged)."""

        def __init__(self, plan: Plan, typed: str) -> None:
            super().__init__()
            self.plan = plan
            self.typed = typed

    def __init__(self, plan: Plan, *, read_only: bool = False,
                 replan: Callable[..., Plan] | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.read_only = read_only
        self.replan = replan  # params -> a fresh plan (options such as quiesce/children)
        self._replanned = False
        self.seen_all = False  # the whole plan has been on screen

    def compose(self) -> ComposeResult:
        plan = self.plan
        with Vertical(id="plan-dialog"):
            with PlanBody(id="plan-body"):
                # Findings first: what can go wrong must not hide below the fold.
                yield Static(plan_title(plan), id="plan-title")
                yield Static(findings_text(plan), id="plan-findings")
                yield Static(plan_summary(plan, self._clock()), id="plan-summary")
            yield Static("", id="plan-seen")
            with Vertical(id="plan-pinned"):
                yield Static(pinned_summary(plan, False), id="plan-pinned-summary")
                if plan.blocking:
                    yield Static(
                        Text(f"Blocked by {len(plan.blocking)} pre-flight check(s): refused "
                             "unless you override.", style="bold red"),
                        id="plan-blocked",
                    )
                    yield Checkbox("Override blocking findings (logged)", id="override",
                                   compact=True)
                toggles = plan.facts.get("toggles") or {}
                if toggles and self.replan is not None:
                    with Horizontal(id="plan-toggles"):
                        for name, label in toggles.items():
                            yield Checkbox(label, value=bool(plan.params.get(name)),
                                           id=f"toggle-{name}", compact=True)
                with Horizontal(id="plan-name-row"):
                    yield Static(Text("Type the VM name to confirm ▸ ", style="bold"),
                                 id="plan-prompt")
                    yield Input(placeholder=cap_middle(plan.target_name, 40), id="confirm-name",
                                disabled=self.read_only, compact=True)
                if plan.double_confirm:
                    files = plan.facts.get("files") or []
                    second = Text("Second confirmation — this cannot be undone. Type ",
                                  style="bold red")
                    second.append(SECOND_WORD, style="bold reverse")
                    second.append(f" to {plan.action} {cap_middle(plan.target_name, 40)} and its "
                                  f"{len(files)} file(s), {human_bytes(plan.size_before)}:",
                                  style="bold red")
                    yield Static(second, id="plan-second-prompt")
                    yield Input(placeholder=SECOND_WORD, id="confirm-second",
                                disabled=self.read_only, compact=True)
                error = Static("", id="plan-error")
                error.display = False
                yield error
                with Horizontal(id="plan-buttons"):
                    yield Static(Text("PgDn read on · ^Y copy command",
                                      style="dim"), id="plan-keys")
                    yield Button(f"Run {plan.action}", variant="error", id="run",
                                 disabled=self.read_only, compact=True)
                    yield Button("Cancel (Esc)", id="cancel", compact=True)

    def _clock(self) -> str:
        from .safety import clock_label

        return clock_label(self.app)

    def on_mount(self) -> None:
        self.query_one("#confirm-name", Input).focus()
        self.watch_seen()

    def action_copy_command(self) -> None:
        self.app.copy_to_clipboard(self.plan.command)
        self.notify("The equivalent command was copied to the clipboard.", markup=False,
                    timeout=4)

    # ---------------------------------------------------------------------------
    def _error(self, message: str) -> None:
        error = self.query_one("#plan-error", Static)
        error.update(Text(message, style="bold red"))
        error.display = bool(message)

    def _override_ticked(self) -> bool:
        boxes = self.query("#override")
        return bool(self.plan.blocking) and bool(boxes) and boxes.first(Checkbox).value

    @on(Checkbox.Changed)
    def _toggled(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "override":
            self.query_one("#plan-pinned-summary", Static).update(
                pinned_summary(self.plan, event.value))
            return
        name = (event.checkbox.id or "").removeprefix("toggle-")
        if name == event.checkbox.id or self.replan is None:
            return
        try:
            plan = self.replan(**{**self.plan.params, name: event.value})
        except (KeyError, ValueError) as exc:
            self._error(str(exc))
            return
        self.plan, self._replanned = plan, True
        self.query_one("#plan-title", Static).update(plan_title(plan))
        self.query_one("#plan-findings", Static).update(findings_text(plan))
        self.query_one("#plan-summary", Static).update(plan_summary(plan, self._clock()))
        self.query_one("#plan-pinned-summary", Static).update(
            pinned_summary(plan, self._override_ticked()))
        self.seen_all = False  # a changed plan must be read again
        self.call_after_refresh(self.check_seen)

    def _try_confirm(self) -> None:
        typed = self.query_one("#confirm-name", Input).value
        override = self._override_ticked()
        boxes = self.query("#override")
        if not self.plan.confirmed_by(typed):  # or vCenter's escaped form
            self._error("The name does not match. Type it exactly as shown to confirm "
                        "(refusal logged).")
            if typed:
                self.post_message(self.NameMismatch(self.plan, typed))
            return
        if below := self.unseen_lines():
            self._error(f"Not confirmed: {below} line(s) of the plan are not yet seen. "
                        "Scroll to its end (PgDn) first.")
            return
        if self.plan.blocking and not override:
            self._error("Blocked by pre-flight. Tick the override to run anyway (logged)."
                        if boxes else "Blocked by pre-flight: change the options above.")
            return
        second = False
        if self.plan.double_confirm:
            box = self.query_one("#confirm-second", Input)
            if box.value != SECOND_WORD:
                self._error(f"Type {SECOND_WORD} in the second box as well: this "
                            f"{self.plan.action} cannot be undone.")
                box.focus()
                return
            second = True
        seen = frozenset(f.code for f in self.plan.blocking) if override else frozenset()
        self.dismiss(Confirmation(typed, override, seen, second=second,
                                  plan=self.plan if self._replanned else None))

    @on(Input.Submitted, "#confirm-second")
    def _second_submitted(self) -> None:
        self._try_confirm()

    @on(Input.Submitted, "#confirm-name")
    def _submitted(self) -> None:
        self._try_confirm()

    @on(Button.Pressed, "#run")
    def _run(self) -> None:
        self._try_confirm()

    @on(Button.Pressed, "#cancel")
    def _cancel_button(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
