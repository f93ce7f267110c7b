"""The one command table: it feeds the key bindings, the palette and help.

The action commands come from the action registry (``backends/actionspecs``:
each spec names the command that opens it, with its key, title and help); the
console's own commands (filter, sort, findings, log, window, …) are listed
here. Mutating commands are unavailable in read-only sessions (the app's
``check_action`` consults this table; the runner and the backend refuse again).

Order (footer, palette, help): the action commands with a key, the console's
commands, then the palette-only action commands (no key).
"""

from __future__ import annotations

from textual.binding import Binding

from ventana.backends import actionspecs
from ventana.backends.actionspecs import Command
from ventana.state.model import Platform

#: The console's commands that are not guarded actions.
CONSOLE_COMMANDS: tuple[Command, ...] = (
    Command("cancel_task", "k", "Cancel running action", "Ask the cluster to cancel this "
            "console's running action on the selected VM (where the task can be cancelled)",
            mutating=True, show=False),
    Command("filter", "slash", "Filter VMs", "Filter the VM list (name, node, LUN, power, "
            "replication, task); Esc clears", "Filter", mutating=False),
    Command("sort", "s", "Sort VMs", "Sort the VM list by the next column (S reverses)", "Sort",
            mutating=False),
    Command("focus_next_pane", "tab", "Next pane", "Move focus to the next pane", "Pane",
            mutating=False, show=False),
    Command("findings", "f", "Findings", "What is wrong now, live: sort, filter, acknowledge "
            "or snooze (logged), Enter opens a finding's remedy", "Findings", mutating=False),
    Command("action_log", "l", "Action log", "Show the latest rows of the action log", "Log",
            mutating=False),
    Command("help", "question_mark", "Help", "Show keys and commands", "Help", mutating=False),
    Command("quit", "q", "Quit", "Leave the console (running tasks continue on the cluster)",
            "Quit", mutating=False),
    Command("report", "r", "Campaign report", "The campaign report from the action log: VMs "
            "and disks before/after, LUN free space with a bar chart, totals, pending tasks",
            "Report", mutating=False, show=False),
    Command("final_state", "e", "Set final state", "Set the selected VM's final state "
            "(Operational, Degraded, …) with a note; written to the action log, nothing is "
            "sent to the cluster", "State", mutating=False, show=False),
    Command("window", "w", "Maintenance window", "The window's plan queue: order, estimates, "
            "projected LUN space, fits before the end; run it (N in parallel), pause, skip",
            "Window", mutating=False),
    # Adding to the queue changes nothing on the cluster (read-only sessions can
    # plan a window); running the queue is guarded on the window screen.
    Command("queue_merge", "p", "Queue merge", "Add the selected VM's merge to the "
            "maintenance window's queue", "Queue", mutating=False),
)

#: The action commands (each opens the action of the selected VM's platform).
ACTION_COMMANDS: tuple[Command, ...] = actionspecs.commands()

COMMANDS: tuple[Command, ...] = (
    tuple(c for c in ACTION_COMMANDS if c.key)
    + CONSOLE_COMMANDS
    + tuple(c for c in ACTION_COMMANDS if not c.key)  # palette only
)

ACTION_COMMAND_NAMES = frozenset(c.name for c in ACTION_COMMANDS)
MUTATING_ACTIONS = frozenset(c.name for c in COMMANDS if c.mutating)
#: Commands that act on the main screen's selection (not help and quit).
CONSOLE_ACTIONS = frozenset(c.name for c in COMMANDS if c.name not in ("help", "quit"))


def bindings() -> list[Binding]:
    return [
        Binding(c.key, c.name, c.short or c.title, show=c.show, tooltip=c.help)
        for c in COMMANDS
        if c.name != "focus_next_pane" and c.key  # no key: palette only
    ]


def key_label(key: str) -> str:
    return {"slash": "/", "question_mark": "?", "tab": "Tab"}.get(key, key)


def platforms_label(name: str) -> str:
    """Where a command works, for help: "both", "Hyper-V", "vSphere" ("" for
    console commands that act on any VM or none), from the action specs' routes."""
    on = [label for platform, label in ((Platform.HYPERV, "Hyper-V"),
                                        (Platform.VSPHERE, "vSphere"))
          if actionspecs.resolve(name, platform) is not None]
    return "both" if len(on) == 2 else (on[0] if on else "")
