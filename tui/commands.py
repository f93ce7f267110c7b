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
    Command("merge", "m", "Merge checkpoints / remove all snapshots", "Plan and run a merge "
            "of the selected VM's checkpoints (Hyper-V) or the removal of all its snapshots "
            "(vSphere) (plan → pre-flight → typed confirmation → log)", "Merge",
            mutating=True),
    Command("upgrade", "u", "Upgrade configuration version", "Plan and run the irreversible "
            "configuration-version upgrade of the selected VM (it must be off)", "Upgrade",
            mutating=True),
    Command("rebuild", "b", "Rebuild VM", "Rebuild the selected VM on a fresh consolidated "
            "disk (capture → merge → new VM → boot check → services check → keep the old "
            "one), or open its unfinished rebuild: pause, resume, what to do by hand",
            "Rebuild", mutating=True),
    Command("remove_snapshot", "x", "Remove snapshot", "vSphere: plan and run the removal "
            "of the snapshot selected in the Checkpoints pane", "Rm snap", mutating=True,
            show=False),
    Command("remove_snapshot_tree", "X", "Remove snapshot and children", "vSphere: plan and "
            "run the removal of the selected snapshot with all its children", mutating=True,
            show=False),
    Command("consolidate", "c", "Consolidate disks", "vSphere: plan and run disk "
            "consolidation of the selected VM (when vSphere says it is needed)", "Consolidate",
            mutating=True, show=False),
    Command("create_snapshot", "n", "Create snapshot", "vSphere: plan and take a snapshot of "
            "the selected VM, with the guest's freeze/thaw hooks when configured", "Snap",
            mutating=True, show=False),
    Command("cancel_task", "k", "Cancel running action", "Ask the cluster to cancel this "
            "console's running action on the selected VM (where the task can be cancelled)",
            mutating=True, show=False),
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
    Command("report", "r", "Campaign report", "The campaign report from the action log: VMs "
            "and disks before/after, LUN free space with a bar chart, totals, pending tasks",
            "Report", show=False),
    Command("final_state", "e", "Set final state", "Set the selected VM's final state "
            "(Operational, Degraded, …) with a note; written to the action log, nothing is "
            "sent to the cluster", "State", show=False),
    Command("window", "w", "Maintenance window", "The window's plan queue: order, estimates, "
            "projected LUN space, fits before the end; run it (N in parallel), pause, skip",
            "Window"),
    # Adding to the queue changes nothing on the cluster (read-only sessions can
    # plan a window); running the queue is guarded on the window screen.
    Command("queue_merge", "p", "Queue merge", "Add the selected VM's merge to the "
            "maintenance window's queue", "Queue"),
    # Palette-only (no key): offline clean-up actions.
    Command("compact", "", "Compact VHDX (offline)", "Plan and run Optimize-VHD -Mode Full on "
            "the selected VM's dynamic disks (VM off, no checkpoints)", mutating=True,
            show=False),
    Command("delete_vm", "", "Delete obsolete VM", "Plan and run the removal of the selected "
            "VM and its disk files (VM off, not replicating; typed name and a second "
            "confirmation)", mutating=True, show=False),
)

MUTATING_ACTIONS = frozenset(c.action for c in COMMANDS if c.mutating)
#: Commands that act on the main screen's selection (not help and quit).
CONSOLE_ACTIONS = frozenset(c.action for c in COMMANDS if c.action not in ("help", "quit"))


def bindings() -> list[Binding]:
    return [
        Binding(c.key, c.action, c.short or c.title, show=c.show, tooltip=c.help)
        for c in COMMANDS
        if c.action != "focus_next_pane" and c.key  # no key: palette only
    ]


def key_label(key: str) -> str:
    return {"slash": "/", "question_mark": "?", "tab": "Tab"}.get(key, key)
