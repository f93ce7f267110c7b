"""The plan screen: what an action will do, its pre-flight findings and the
typed confirmation.

The operator sees the target, the volume, free space now, the space needed,
free space expected afterwards, the estimate, each finding and the
equivalent command. Confirming needs the target's exact name; blocking
findings also need an explicit, logged override. Esc cancels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Static

from ventana.backends import actionspecs
from ventana.state.derived import human_bytes
from ventana.state.model import Severity
from ventana.state.plans import Plan

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


def plan_title(plan: Plan) -> Text:
    title = Text(ACTION_TITLES.get(plan.action, f"{plan.action} "), style="bold")
    title.append(plan.target_name, style="bold underline")
    if plan.irreversible:
        title.append("  IRREVERSIBLE", style="bold red")
    return title


def plan_summary(plan: Plan) -> Group:
    steps = Text()
    for step in plan.steps:
        steps.append(f" • {step}\n")
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
        space.add_row("Snapshot", Text(str(facts["snapshot_name"]), style="bold"))
    if vsphere and plan.action == "remove-snapshot":
        space.add_row("Children", Text("removed too" if facts.get("children")
                                       else "kept, re-parented to its parent"))
    if vsphere and plan.action == "create-snapshot":
        space.add_row("Options", Text(f"quiesce {'yes' if facts.get('quiesce') else 'no'} · "
                                      f"memory {'yes' if facts.get('memory') else 'no'}"))
        for key, label in (("pre_freeze", "Guest pre-freeze"), ("post_thaw", "Guest post-thaw")):
            if facts.get(key):
                space.add_row(label, Text(str(facts[key]), style="italic"))
    if plan.action == "upgrade":
        space.add_row("Configuration version", Text(
            f"{facts.get('config_version') or '?'} → {facts.get('target_version') or '?'} "
            "(the highest version already running on this cluster)", style="bold"))
    else:
        _space_rows(space, plan)
    space.add_row("Equivalent command", Text(plan.command, style="italic"))
    if plan.created is not None:
        space.add_row("Planned at", Text(plan.created.strftime("%Y-%m-%d %H:%M:%S UTC")
                                         + " (re-checked when you confirm)"))
    groups: list[object] = [steps, space]
    listed = facts.get("checkpoint_list", [])
    if listed:
        groups += [Text(""), _chain_table(listed)]
    files = facts.get("files") or facts.get("disks")
    if files and plan.action in ("delete", "compact"):
        groups += [Text(""), _files_table(plan, files)]
    return Group(*groups)  # type: ignore[arg-type]


def _space_rows(space: Table, plan: Plan) -> None:
    facts = plan.facts
    vsphere = facts.get("platform") == "vsphere"
    space.add_row("Datastore" if vsphere else "Volume", Text(plan.lun_name or "?", style="bold"))
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
        chain.add_column(label, justify=justify)  # type: ignore[arg-type]
    for item in listed[:12]:
        chain.add_row(Text(str(item["name"])), Text(str(item["kind"])),
                      Text(str(item["created"])[:16].replace("T", " ")),
                      Text(human_bytes(item["size"])))  # type: ignore[arg-type]
    if len(listed) > 12:
        chain.add_row(Text(f"… {len(listed) - 12} more"), Text(""), Text(""), Text(""))
    return chain


def _files_table(plan: Plan, files: list[dict[str, object]]) -> Table:
    """Every file the action deletes or compacts, with its size (never truncated)."""
    deleting = plan.action == "delete"
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim",
                  title=Text("Files deleted" if deleting else "Disks compacted", style="bold"),
                  title_justify="left")
    table.add_column("File")
    table.add_column("Size", justify="right")
    for item in files:
        table.add_row(Text(str(item["path"])), Text(human_bytes(item["size"])))  # type: ignore[arg-type]
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
        text.append(f"{f.message}\n")
    return text


class PlanScreen(ModalScreen[Confirmation | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("question_mark", "app.help", "Help", show=False)]

    def __init__(self, plan: Plan, *, read_only: bool = False,
                 replan: Callable[..., Plan] | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.read_only = read_only
        self.replan = replan  # params -> a fresh plan (options such as quiesce/children)
        self._replanned = False

    def compose(self) -> ComposeResult:
        plan = self.plan
        with Vertical(id="plan-dialog"):
            with VerticalScroll(id="plan-body"):
                # Findings first: what can go wrong must not hide below the fold.
                yield Static(plan_title(plan), id="plan-title")
                yield Static(findings_text(plan), id="plan-findings")
                yield Static(plan_summary(plan), id="plan-summary")
            if plan.blocking:
                yield Static(
                    Text(
                        f"Blocked by {len(plan.blocking)} pre-flight check(s). The {plan.action} "
                        "is refused unless you override; the override is logged.",
                        style="bold red",
                    ),
                    id="plan-blocked",
                )
                yield Checkbox("Override blocking findings (logged)", id="override")
            toggles = plan.facts.get("toggles") or {}
            if toggles and self.replan is not None:
                with Horizontal(id="plan-toggles") as row:
                    row.styles.height = "auto"
                    for name, label in toggles.items():
                        yield Checkbox(label, value=bool(plan.params.get(name)),
                                       id=f"toggle-{name}")
            prompt = Text("Type the VM name to confirm: ")
            prompt.append(plan.target_name, style="bold")
            yield Static(prompt, id="plan-prompt")
            yield Input(placeholder=plan.target_name, id="confirm-name", disabled=self.read_only)
            if plan.double_confirm:
                files = plan.facts.get("files") or []
                second = Text("Second confirmation — this cannot be undone. Type ",
                              style="bold red")
                second.append(SECOND_WORD, style="bold reverse")
                second.append(f" to {plan.action} {plan.target_name} and its {len(files)} "
                              f"file(s), {human_bytes(plan.size_before)}:", style="bold red")
                yield Static(second, id="plan-second-prompt")
                yield Input(placeholder=SECOND_WORD, id="confirm-second", disabled=self.read_only)
            yield Static("", id="plan-error")
            with Horizontal(id="plan-buttons"):
                yield Button(f"Run {plan.action}", variant="error", id="run",
                             disabled=self.read_only)
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#confirm-name", Input).focus()

    def _error(self, message: str) -> None:
        self.query_one("#plan-error", Static).update(Text(message, style="bold red"))

    @on(Checkbox.Changed)
    def _toggled(self, event: Checkbox.Changed) -> None:
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
        self.query_one("#plan-summary", Static).update(plan_summary(plan))

    def _try_confirm(self) -> None:
        typed = self.query_one("#confirm-name", Input).value
        boxes = self.query("#override")
        override = bool(self.plan.blocking) and bool(boxes) and boxes.first(Checkbox).value
        if typed != self.plan.target_name:
            self._error("The name does not match. Type it exactly as shown to confirm.")
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
