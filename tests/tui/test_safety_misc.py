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
    task = Task("remove-all-snapshots-1", "remove-all-snapshots", "vm:1",
                "n" * 10_000 + "-site-02", pct=50.0, state=TaskState.RUNNING)
    line = task_line(task).plain
    kind, sep, rest = line.partition(" │ ")
    assert sep and kind.strip() == "remove-all-snapshots"
    # Cut in the middle: the end that tells two such VMs apart stays.
    assert rest.startswith("n" * 12 + "…" + "n" * 3 + "-site-02 ")
    assert len(line) < 200


def test_cap_sanitizes_and_ends_long_text_with_an_ellipsis() -> None:
    assert cap("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert cap("x" * 100, 10) == "x" * 9 + "…"
    assert cap("short") == "short"


def test_the_vm_tables_name_is_cut_in_the_middle_other_columns_at_the_end() -> None:
    """Two long names that differ only at their end stay apart in the VM table's Name
    column (wide characters counted as two cells); other columns still end in "…"."""
    from rich.cells import cell_len

    from ventana.tui.vm_rows import fit

    a, b = (f"web-prod-frontend-cluster-site-{n}" for n in ("01", "02"))
    assert fit(a, 20, middle=True) == "web-prod-f…r-site-01"
    assert fit(a, 20, middle=True) != fit(b, 20, middle=True)
    assert fit(a, 20) == "web-prod-frontend-c…"
    wide = fit("ウェブ本番フロントエンドクラスタ-01", 20, middle=True)
    assert wide.endswith("…ラスタ-01") and cell_len(wide) == 20
    assert fit("short", 10, middle=True) == "short     "


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
    row = next(line for line in lines if "Upgrade configuration" in line)
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


def test_an_interrupted_rebuild_step_reads_interrupted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from rich.console import Console

    from ventana.state.rebuild import STEP_NAMES, RebuildStore, StepState
    from ventana.tui.rebuild_screen import checklist

    db = tmp_path / "a.db"
    rs = RebuildStore.open(db)
    rs.create(rebuild_id="rb-1", vm_id="vm-1", vm_name="web-01", target_system="sim",
              node="HV-NODE-01", to_last_parent=False, old_vm_name="web-01-old")
    rs.claim("rb-1")
    rs.step_update("rb-1", STEP_NAMES[0], state=StepState.RUNNING, pct=0.0)
    rs.close()
    con = sqlite3.connect(db)  # the console that ran it is gone (another host)
    con.execute("update rebuilds set host = 'another-host'")
    con.commit()
    con.close()
    rs = RebuildStore.open(db)
    wf = rs.get("rb-1")
    rs.close()
    assert wf is not None and wf.interrupted
    console = Console(width=200, record=True)
    console.print(checklist(wf))
    first = next(line for line in console.export_text().splitlines() if "1." in line)
    assert "interrupted" in first and "running" not in first and "0%" not in first
