"""Operator safety in the app: any terminal size, k9s habits, the log as evidence
(issue 12).

``SafetyMixin`` is mixed into the app (``class VentanaApp(SafetyMixin, App)``)
and owns:

- the narrow layout: below ``NARROW_COLUMNS`` columns one pane at a time, the
  VM list first (as k9s does); ``1`` to ``4`` (or Tab) switch panes, Enter on a
  VM shows its checkpoints, Esc goes back to the VM list; a one-line key bar
  that always keeps Help and Quit replaces the footer;
- ``:`` command mode (``:vms``, ``:nodes``, ``:luns``, ``:checkpoints``,
  ``:findings``, ``:log``, ``:window``, ``:report``, ``:help``, ``:q``);
- one-line reasons for keys that do nothing (read-only, replay);
- the log as evidence: interrupted actions announced at start, a wrong typed
  name logged as refused (``PlanScreen.NameMismatch``);
- toasts with very long names capped (``fit.cap_runs``).

Textual calls each class's handlers along the MRO, so the mixin's
``on_mount``/``on_resize``/``on_key`` run beside the app's own.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Footer, Input, Static

from . import commands

#: Below this many columns the console shows one pane at a time.
NARROW_COLUMNS = 120

#: The panes, by the key that shows them in the narrow layout.
PANES = {"1": "vms", "2": "nodes", "3": "luns", "4": "checkpoints"}
_PANE_TITLES = {"vms": "VMs", "nodes": "Nodes", "luns": "LUNs", "checkpoints": "Checkpoints"}

#: ``:`` commands → the app action they run.
COLON_COMMANDS = {
    "vms": "show_pane('vms')", "vm": "show_pane('vms')",
    "nodes": "show_pane('nodes')", "node": "show_pane('nodes')",
    "luns": "show_pane('luns')", "lun": "show_pane('luns')",
    "checkpoints": "show_pane('checkpoints')", "cp": "show_pane('checkpoints')",
    "snapshots": "show_pane('checkpoints')",
    "findings": "findings", "log": "action_log", "window": "window", "report": "report",
    "help": "help", "q": "quit", "quit": "quit", "q!": "quit",
}


def bindings() -> list[Binding]:
    return [
        # Priority: in the narrow layout Tab moves between panes (hidden ones
        # cannot take focus); elsewhere it moves focus as usual.
        Binding("tab", "next_pane(1)", "Next pane", show=False, priority=True),
        Binding("shift+tab", "next_pane(-1)", "Previous pane", show=False, priority=True),
        # Priority, so that it works over the view screens (findings, log, window);
        # typed into a text box it is just a ":".
        Binding("colon", "command_mode", ":cmd", show=False, priority=True,
                tooltip="k9s-style command: :vms :findings :log :window :report :q"),
        *(Binding(key, f"show_pane('{pane}')", f"{_PANE_TITLES[pane]}", show=False)
          for key, pane in PANES.items()),
    ]


def key_bar(read_only: bool) -> Text:
    """The narrow layout's one-line keys: Help and Quit always fit."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for key, label in (("?", "Help"), ("q", "Quit"), (":", "Cmd"), ("1-4", "Panes")):
        text.append(f" {key} ", style="bold reverse")
        text.append(f" {label} ")
    actions = (("f", "Findings"), ("l", "Log"), ("w", "Window"), ("/", "Filter"))
    if not read_only:
        actions = (("m", "Merge"), *actions)
    for key, label in actions:
        text.append(f" {key} ", style="bold reverse")
        text.append(f" {label} ")
    return text


class SafetyMixin:
    """Layout switching, ``:`` commands and key feedback for the Ventana app."""

    narrow: bool = False
    pane: str = "vms"

    # -- the layout -------------------------------------------------------------
    def on_mount(self) -> None:
        app: Any = self
        keys = Static(key_bar(app.read_only), id="compact-keys")
        box = Input(placeholder=":vms :nodes :luns :checkpoints :findings :log :window "
                    ":report :help :q (Esc closes)", id="command", compact=True)
        footer = app.query_one(Footer)
        app.mount(keys, before=footer)
        app.mount(box, before=footer)
        self._apply_layout(app.size.width)
        app.run_worker(self._announce_interrupted(), group="final-states", exit_on_error=False)

    # -- the log is evidence --------------------------------------------------------------
    async def _announce_interrupted(self) -> None:
        """Every interrupted or unknown action in the log, with what to verify on the host."""
        import asyncio

        from ventana.state.actionlog import ActionLogError

        from .safety import interrupted_notice

        app: Any = self
        if app.action_log is None:
            return
        try:
            notice = interrupted_notice(await asyncio.to_thread(app.action_log.rows))
        except ActionLogError as exc:
            notice = f"The action log cannot be read: {exc}"
        if notice:
            app.notify(notice, title="Interrupted actions — verify on the host",
                       severity="error", markup=False, timeout=60)

    def on_plan_screen_name_mismatch(self, message: Any) -> None:
        """A confirmation typed with the wrong name: logged as refused (name mismatch),
        the typed text sanitized — not "cancelled by the operator"."""
        from ventana.backends.actions import ActionRefused
        from ventana.state.sanitize import clean

        from .safety import mismatch_reason

        app: Any = self

        async def log_it() -> None:  # the row is written in a worker
            try:
                await app.runner.refused(message.plan, mismatch_reason(message.typed))
            except ActionRefused as exc:
                app.notify(clean(str(exc)), severity="error", markup=False)

        app.run_worker(log_it(), group="log-rows", exit_on_error=False)

    def on_resize(self, event: events.Resize) -> None:
        self._apply_layout(event.size.width)

    def _apply_layout(self, width: int) -> None:
        app: Any = self
        narrow = width < NARROW_COLUMNS
        self.narrow = narrow
        try:
            main = app.query_one("#main")
        except NoMatches:
            return
        main.set_class(narrow, "narrow")
        app.screen_stack[0].set_class(narrow, "narrow")
        self._show_classes()

    def _show_classes(self) -> None:
        app: Any = self
        main = app.query_one("#main")
        for pane in _PANE_TITLES:
            main.set_class(self.narrow and pane == self.pane, f"show-{pane}")

    def _back_to_console(self) -> bool:
        """Close the view screens on top (findings, log, window, report, help); False,
        with a notice, when a dialog is open (its answer must not be skipped)."""
        from .findings_screen import FindingsScreen
        from .help_screen import HelpScreen
        from .log_screen import LogScreen, RecordedActionsScreen
        from .report_screen import ReportScreen
        from .window_screen import WindowScreen

        views = (FindingsScreen, HelpScreen, LogScreen, RecordedActionsScreen, ReportScreen,
                 WindowScreen)
        app: Any = self
        above = app.screen_stack[1:]
        if not all(isinstance(screen, views) for screen in above):
            app.notify("Answer or cancel this dialog first (Esc).", severity="warning",
                       markup=False, timeout=4)
            return False
        for _ in above:
            app.pop_screen()
        return True

    def action_show_pane(self, pane: str) -> None:
        app: Any = self
        if not self._back_to_console():
            return
        self.pane = pane
        self._show_classes()
        target = app.query_one(f"#{pane}")
        focus = target if target.can_focus else next(
            (w for w in target.query("*") if w.can_focus), target)
        app.call_after_refresh(focus.focus)

    def action_next_pane(self, step: int) -> None:
        app: Any = self
        if not self.narrow or len(app.screen_stack) > 1 or isinstance(app.focused, Input):
            if step > 0:
                app.screen.focus_next()
            else:
                app.screen.focus_previous()
            return
        order = list(_PANE_TITLES)
        self.action_show_pane(order[(order.index(self.pane) + step) % len(order)])

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """In the narrow layout, focus moving into a pane (Tab, Enter) shows that pane."""
        if not self.narrow:
            return
        widget: Widget | None = event.widget
        while widget is not None:
            if widget.id in _PANE_TITLES:
                if widget.id != self.pane:
                    self.pane = widget.id
                    self._show_classes()
                return
            widget = widget.parent  # type: ignore[assignment]

    # -- : command mode ---------------------------------------------------------------
    def action_command_mode(self) -> None:
        app: Any = self
        if isinstance(app.focused, Input):
            app.focused.insert_text_at_cursor(":")
            return
        if not self._back_to_console():
            return
        box = app.query_one("#command", Input)
        box.value = ""
        box.add_class("shown")
        box.focus()

    # (A plain method, not @on: Textual collects @on handlers only from classes
    # built by its metaclass; named handlers are found along the MRO.)
    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "command":
            return
        app: Any = self
        word = event.value.strip().removeprefix(":").strip().lower()
        self._close_command()
        if not word:
            return
        action = COLON_COMMANDS.get(word)
        if action is None:
            known = " ".join(f":{k}" for k in ("vms", "nodes", "luns", "checkpoints",
                                                "findings", "log", "window", "report",
                                                "help", "q"))
            app.notify(f"Unknown command :{word[:40]} — known: {known}", severity="warning",
                       markup=False)
            return
        app.call_after_refresh(app.run_action, action)

    def _close_command(self) -> None:
        app: Any = self
        box = app.query_one("#command", Input)
        box.value = ""
        box.remove_class("shown")
        if self.narrow:
            self.action_show_pane(self.pane)
        else:
            app.query_one("#vms").focus()

    # -- toasts: a 10,000-character name never floods one ------------------------------
    def notify(self, message: str, *args: Any, **kwargs: Any) -> None:
        from .fit import cap_runs

        super().notify(cap_runs(message), *args, **kwargs)  # type: ignore[misc]

    # -- a filter that does not parse says so ------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "filter":
            return
        from .safety import filter_problem

        problem = filter_problem(event.value)
        event.input.border_title = problem or None
        event.input.set_class(bool(problem), "-bad-filter")

    # -- keys that do nothing say why --------------------------------------------------
    def on_key(self, event: events.Key) -> None:
        app: Any = self
        if event.key == "escape" and app.focused is not None and \
                getattr(app.focused, "id", None) == "command":
            self._close_command()
            event.stop()
            return
        if event.key == "escape" and self.narrow and len(app.screen_stack) == 1 \
                and self.pane != "vms" and not isinstance(app.focused, Input):
            self.action_show_pane("vms")  # back to the VM list, as k9s
            event.stop()
            return
        if isinstance(app.focused, Input):
            return
        if len(app.screen_stack) > 1:
            command = next((c for c in commands.COMMANDS if c.key == event.key
                            and c.name in commands.CONSOLE_ACTIONS), None)
            if command is not None:  # nobody on this screen took the key
                app.notify(f"{commands.key_label(command.key)}: {command.title} works on the "
                           "console's main screen — close this one first (Esc, or : then a "
                           "pane name).", severity="warning",
                           markup=False, timeout=5)
            return
        why = self.why_not(event.key)
        if why:
            app.notify(why, severity="warning", markup=False, timeout=5)

    def why_not(self, key: str) -> str:
        """One line saying why this console key does nothing now ("" if it does)."""
        app: Any = self
        command = next((c for c in commands.COMMANDS if c.key == key), None)
        if command is None or not command.mutating or not app.read_only:
            return ""
        if getattr(getattr(app, "runner", None), "mode", "") == "replay":
            return (f"{command.title}: not in a replay — it shows a recorded session; "
                    "nothing can be changed.")
        return (f"{command.title}: this session is read-only "
                f"({app.read_only_reason}); nothing can be changed.")
