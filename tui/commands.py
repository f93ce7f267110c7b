"""The one command table: it feeds the key bindings, the palette and help.

Each command names an app action, its key, a short help line and whether it
mutates the cluster. Mutating commands are unavailable in read-only sessions
(the app's ``check_action`` consults this table; the backend refuses again).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True, slots=True)
class Command:
    action: str
    key: str
    title: str
    help: str
    short: str = ""
    mutating: bool = False
    show: bool = True


COMMANDS: tuple[Command, ...] = (
    Command("merge", "m", "Merge checkpoints", "Plan and run a merge of the selected VM's "
            "checkpoints (plan → pre-flight → typed confirmation → log)", "Merge",
            mutating=True),
    Command("upgrade", "u", "Upgrade configuration version", "Plan and run the irreversible "
            "configuration-version upgrade of the selected VM (it must be off)", "Upgrade",
            mutating=True),
    Command("filter", "slash", "Filter VMs", "Filter the VM list (name, node, LUN, power, "
            "replication, task); Esc clears", "Filter"),
    Command("sort", "s", "Sort VMs", "Sort the VM list by the next column (S reverses)", "Sort"),
    Command("focus_next_pane", "tab", "Next pane", "Move focus to the next pane", "Pane",
            show=False),
    Command("findings", "f", "Findings", "What is wrong now, live: sort, filter, acknowledge "
            "or snooze (logged), Enter opens a finding's remedy", "Findings"),
    Command("action_log", "l", "Action log", "Show the latest rows of the action log", "Log"),
    Command("help", "question_mark", "Help", "Show keys and commands", "Help"),
    Command("quit", "q", "Quit", "Leave the console (running tasks continue on the cluster)",
            "Quit"),
)

MUTATING_ACTIONS = frozenset(c.action for c in COMMANDS if c.mutating)


def bindings() -> list[Binding]:
    return [
        Binding(c.key, c.action, c.short or c.title, show=c.show, tooltip=c.help)
        for c in COMMANDS
        if c.action != "focus_next_pane"
    ]


def key_label(key: str) -> str:
    return {"slash": "/", "question_mark": "?", "tab": "Tab"}.get(key, key)
