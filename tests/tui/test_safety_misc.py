"""Issue 12, small parts: the task strip separates kind and name and caps long
names; a console that never connected exits non-zero; names are capped."""

from __future__ import annotations

import pytest

from ventana.state.events import ConnectionChanged, LinkState
from ventana.state.model import Task, TaskState
from ventana.state.store import Store
from ventana.tui.fit import cap
from ventana.tui.logcheck import NEVER_CONNECTED, ConnectionWatch, exit_code
from ventana.tui.task_strip import task_line


def test_task_strip_separates_kind_and_name_and_caps_long_names() -> None:
    task = Task("remove-all-snapshots-1", "remove-all-snapshots", "vm:1", "n" * 10_000,
                pct=50.0, state=TaskState.RUNNING)
    line = task_line(task).plain
    kind, sep, rest = line.partition(" │ ")
    assert sep and kind.strip() == "remove-all-snapshots"
    assert rest.startswith("n" * 23 + "…")
    assert len(line) < 200


def test_cap_sanitizes_and_ends_long_text_with_an_ellipsis() -> None:
    assert cap("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert cap("x" * 100, 10) == "x" * 9 + "…"
    assert cap("short") == "short"


class _App:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.connection_watch = ConnectionWatch(store)


def test_a_console_that_never_connected_exits_non_zero(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    store = Store()
    app = _App(store)
    store.apply(ConnectionChanged("vc", LinkState.CONNECTING))
    store.apply(ConnectionChanged("vc", LinkState.DISCONNECTED, "cannot resolve vc01"))
    assert exit_code(app) == NEVER_CONNECTED
    assert "never connected" in capsys.readouterr().err
    store.apply(ConnectionChanged("vc", LinkState.CONNECTED))
    store.apply(ConnectionChanged("vc", LinkState.DISCONNECTED, "reset"))
    assert exit_code(app) == 0  # it did connect once: quitting later is normal


def test_help_marks_keys_by_platform() -> None:
    from rich.console import Console

    from ventana.tui.help_screen import help_table

    console = Console(width=200, record=True)
    console.print(help_table(read_only=False))
    lines = console.export_text().splitlines()
    row = next(line for line in lines if "Remove snapshot " in line)
    assert "vSphere" in row
    row = next(line for line in lines if "Upgrade configuration version" in line)
    assert "Hyper-V" in row


def test_plan_times_name_their_clock() -> None:
    from types import SimpleNamespace

    from ventana.tui.safety import clock_label

    sim = SimpleNamespace(runner=SimpleNamespace(mode="read-write"),
                          backend=SimpleNamespace(clock_rate=60.0))
    assert clock_label(sim) == "simulated clock, 60× wall time"
    real = SimpleNamespace(runner=SimpleNamespace(mode="read-only"),
                           backend=SimpleNamespace(clock_rate=1.0))
    assert clock_label(real) == "wall clock"
    replay = SimpleNamespace(runner=SimpleNamespace(mode="replay"),
                             backend=SimpleNamespace(clock_rate=60.0))
    assert clock_label(replay) == "the recording's clock"
