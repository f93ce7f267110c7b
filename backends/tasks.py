"""The task rows a backend's workflows report on its stream: one way to build them.

A workflow (a merge, a compact, a rebuild step) shows on the console as a
``Task`` entity under the task id the console gave it: RUNNING when it
starts, ``TaskProgress`` events while it runs, then the same row ended
(state, message, error, end time). ``running_task``/``ended_task`` build
the rows (the simulator's world keeps them in its own table with its own
clock); ``TaskReporter`` builds and emits them on a live backend's stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

from ventana.state.events import Event, TaskProgress, Upsert
from ventana.state.model import VM, Kind, Task, TaskState
from ventana.state.store import ref

#: Outcomes that mean the work was done (the row's bar ends full).
DONE = (TaskState.OK, TaskState.WARNING)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def running_task(task_id: str, kind: str, vm: VM, message: str, started: datetime) -> Task:
    """A workflow's row as it starts on ``vm``: RUNNING at 0 %."""
    return Task(task_id, kind, ref(Kind.VM, vm.id), vm.name, 0.0, TaskState.RUNNING,
                started=started, message=message)


def ended_task(task: Task, state: TaskState, ended: datetime, *, message: str = "",
               error: str = "", pct: float | None = None) -> Task:
    """``task`` ended in ``state``; ``message`` empty keeps the running one; ``pct``
    None: 100 when the work was done (OK, WARNING), else where it stopped."""
    if pct is None:
        pct = 100.0 if state in DONE else task.pct
    return dataclasses.replace(task, state=state, pct=pct, ended=ended,
                               message=message or task.message, error=error)


class TaskReporter:
    """Starts, advances and ends task rows on one event stream (``emit``).

    It remembers each running task's last progress, so a row that ends
    without the work done (failed, unknown) keeps the last percentage and
    message seen, never the 0 % it started with.
    """

    def __init__(self, emit: Callable[[Event], None],
                 now: Callable[[], datetime] = _utcnow) -> None:
        self._emit = emit
        self._now = now
        self._last: dict[str, tuple[float, str]] = {}

    def start(self, task_id: str, kind: str, vm: VM, message: str) -> Task:
        task = running_task(task_id, kind, vm, message, self._now())
        self._emit(Upsert(task))
        return task

    def progress(self, task_id: str, pct: float, message: str) -> None:
        seen = self._last.get(task_id)
        self._last[task_id] = (pct, message or (seen[1] if seen else ""))
        self._emit(TaskProgress(task_id, pct, message))

    def end(self, task: Task, state: TaskState, *, message: str = "", error: str = "",
            pct: float | None = None) -> Task:
        seen = self._last.pop(task.id, None)
        if seen is not None and state not in DONE:  # where it stopped, as last seen
            task = dataclasses.replace(task, pct=seen[0], message=seen[1] or task.message)
        done = ended_task(task, state, self._now(), message=message, error=error, pct=pct)
        self._emit(Upsert(done))
        return done
