"""The task strip: running and recently finished tasks with progress.

Shows operator actions first — every registered action kind
(backends/actionspecs), and any task this console started (its id is
``<action>-<hex>``, e.g. a rebuild's shutdown step) — then the cluster's own
jobs (backups), each with a progress bar, its message and, when finished,
its outcome.

A task whose target is not live — its VM's node, or (several targets) its own
target's link — is dimmed and says so in words: its bar becomes a "STALE: …"
stamp naming the node or target (just "STALE" when every link is down), and its
detail starts with "(… not answering)";
the other tasks are shown as they are (``Store.stale_owner``). Another console's
task (from the team's log, ``team-…``) still running is stale the same way while
the team's log does not answer ("STALE: team log"): its end cannot reach us.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ventana.backends.actionspecs import names as action_names
from ventana.state.model import Task, TaskState
from ventana.state.store import Store

from .fit import cap, cap_middle

_STATE_STYLE = {
    TaskState.QUEUED: "dim",
    TaskState.RUNNING: "bold cyan",
    TaskState.OK: "bold green",
    TaskState.WARNING: "bold yellow",
    TaskState.FAILED: "bold red",
    TaskState.CANCELLED: "yellow",
    TaskState.UNKNOWN: "bold magenta",
}


def operator_kinds() -> frozenset[str]:
    """Every action an operator can start from the console."""
    return action_names()


def is_operator_task(task: Task, kinds: frozenset[str]) -> bool:
    own = task.id.rpartition("/")[2]  # a composite's sub-task ("lab/rebuild-…-stop")
    return task.kind in kinds or any(own.startswith(f"{k}-") for k in kinds)
BAR = 16
#: What is not live for another console's running task while the team's log is down.
_TEAM_LOG = ("target", "team log")


def _from_the_team(task: Task) -> bool:
    """Another console's task still running, as this console last heard of it (its id is
    ``team-<row>``, core/console.py ``team_rows``)."""
    return task.id.startswith("team-") and not task.state.finished


def task_line(task: Task, stale: tuple[str, str] | None = None) -> Text:
    """One task's line; ``stale`` (``Store.stale_owner``: what is not live for its
    target) dims it and puts a stamp where the bar was."""
    filled = round(task.pct / 100 * BAR)
    line = Text(no_wrap=True, overflow="ellipsis")
    # Kind and name in their own columns, a separator between (a long kind such
    # as remove-all-snapshots never runs into the name); long names end in "…".
    line.append(f"{cap(task.kind, 20):<10}", style="bold")
    line.append(" │ ", style="dim")
    line.append(f"{cap_middle(task.target_name or task.target, 24):<24} ")
    stamp = (0, 0)
    if stale is None:
        line.append("━" * filled, style=_STATE_STYLE[task.state])
        line.append("━" * (BAR - filled), style="dim")
    else:  # in the bar's place, so it shows at 80 columns too
        start = len(line)
        line.append(f"{cap('STALE: ' + stale[1] if stale[1] else 'STALE', BAR):<{BAR}}",
                    style="bold red")
        stamp = (start, len(line))
    line.append(f" {task.pct:5.1f}% ")
    line.append(f"{task.state.value:<9}", style=_STATE_STYLE[task.state])
    if stale is not None:
        kind, name = stale
        if name:  # which one (the whole link down: the stamp says it all)
            line.append(f" ({kind} {name} not answering)" if kind == "node" else
                        f" ({name} not answering)", style="bold red")
    detail = task.error if task.state in (TaskState.FAILED, TaskState.UNKNOWN) else task.message
    if detail:
        line.append(f" {detail}", style="red" if task.error else "dim")
    if stale is not None:  # all but the stamp dimmed: the last known figures
        line.stylize("dim", 0, stamp[0])
        line.stylize("dim", stamp[1], len(line))
    return line


class TaskStrip(Static):
    DEFAULT_CSS = """
    TaskStrip { height: auto; max-height: 5; text-wrap: nowrap; text-overflow: ellipsis; }
    """
    MAX_LINES = 4
    # One line per task (text-wrap: nowrap; a long detail ends in "…"): a wrapped one
    # would push the next task, and its stale stamp, out of the strip's few lines.

    def __init__(self, **kwargs: object) -> None:
        super().__init__(Text("no tasks", style="dim"), **kwargs)  # type: ignore[arg-type]

    def sync(self, store: Store, team_log_down: bool = False) -> None:
        """The most relevant tasks; ``team_log_down``: the team's log does not answer, so
        other consoles' running tasks are shown stale."""
        tasks = list(store.tasks())
        kinds = operator_kinds()

        def rank(t: Task) -> tuple[int, int, float, str]:
            # Running operator actions, then running jobs, then the most recent
            # finished ones (a failed merge must not hide under old backups).
            started = t.started.timestamp() if t.started else 0.0
            return (
                0 if not t.state.finished else 1,
                0 if is_operator_task(t, kinds) else 1,
                -started,
                t.id,
            )

        tasks.sort(key=rank)
        running = sum(1 for t in tasks if not t.state.finished)
        if not tasks:
            self.update(Text("no tasks", style="dim"))
            return
        shown = tasks[: self.MAX_LINES]
        lines = [task_line(t, _TEAM_LOG if team_log_down and _from_the_team(t)
                           else store.stale_owner(t.target or f"task:{t.id}")) for t in shown]
        more = len(tasks) - len(lines)
        out = Text("\n").join(lines)
        if more > 0:
            out.append(f"\n… {more} more ({running} running)", style="dim")
        self.update(out)
