"""The VM pane as an operator uses it: move, sort, filter, watch rows change live.

A tiny host app mounts ``VmTable`` over a store and forwards every store
delta to it, as the real app does. Time is injected (a fixed clock for ages,
a fake monotonic clock for highlights) and ``flush()`` is called where a test
must not wait for the 8 Hz timer.
"""

from __future__ import annotations

import dataclasses
import random
import time
from datetime import timedelta

import pytest
from factories import NOW, small_cluster
from rich.segment import Segment
from textual.app import App, ComposeResult

from ventana.state.events import Event, Remove, TaskProgress, Upsert
from ventana.state.model import (
    GB,
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    Health,
    Kind,
    Lun,
    Node,
    Platform,
    PowerState,
    ReplicationState,
    Task,
    TaskState,
)
from ventana.state.store import Store, ref
from ventana.tui.vm_rows import (
    COLUMN_KEYS,
    build_row,
    column_index,
    compile_filter,
    match_texts,
    narrows,
    plain_needles,
)
from ventana.tui.vm_table import VmTable

SIZE = (170, 14)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Host(App[None]):
    def __init__(self, store: Store, **table_kwargs: object) -> None:
        super().__init__()
        self.store = store
        self.table_kwargs = table_kwargs
        self.moved: list[str | None] = []
        self.activated: list[str] = []
        self.counts: list[tuple[int, int]] = []

    def compose(self) -> ComposeResult:
        yield VmTable(self.store, clock=lambda: NOW, id="vms", **self.table_kwargs)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        table = self.query_one(VmTable)
        self.store.subscribe(table.apply_delta)
        table.focus()

    def on_vm_table_cursor_moved(self, message: VmTable.CursorMoved) -> None:
        self.moved.append(message.vm_id)

    def on_vm_table_activated(self, message: VmTable.Activated) -> None:
        self.activated.append(message.vm_id)

    def on_vm_table_count_changed(self, message: VmTable.CountChanged) -> None:
        self.counts.append((message.shown, message.total))


def lines(table: VmTable) -> list[str]:
    return [table.render_line(y).text for y in range(table.scrollable_content_region.height)]


def line_of(table: VmTable, vm_id: str) -> str:
    row = table.row_of(vm_id)
    assert row is not None
    return table.render_line(row + 1 - table.scroll_offset.y).text


def segment_for(table: VmTable, vm_id: str, text: str) -> Segment:
    row = table.row_of(vm_id)
    assert row is not None
    strip = table.render_line(row + 1 - table.scroll_offset.y)
    return next(s for s in strip if text in s.text)


def change_vm(store: Store, vm_id: str, **fields: object) -> None:
    vm = store.vm(vm_id)
    assert vm is not None
    store.apply(Upsert(dataclasses.replace(vm, **fields)))  # type: ignore[arg-type]


# -- what it shows -----------------------------------------------------------------------
async def test_header_and_rows_show_every_column() -> None:
    app = Host(small_cluster())
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        header, *rows = lines(table)
        for label in ("Name ▲", "Node", "Power", "Gen", "Ver", "vCPU", "RAM", "Ckpts", "Depth",
                      "Oldest", "Diff", "LUN", "Repl", "Task"):
            assert label in header
        assert table.visible_ids == ["a", "b", "c"]
        assert table.row_count == 3
        assert rows[0].split()[:14] == [
            "app-01", "running", "HV-NODE-01", "3", "3", "2y170d", "60.0", "GB", "CSV-DATA2",
            "-", "-", "2", "-", "1",
        ]
        assert "CSV-DATA2" in rows[0]
        assert table.cell_text("c", "oldest") == "3d"
        assert table.cell_text("c", "lun") == "CSV-DATA1"
        assert table.cell_text("b", "ckpts") == "0"
        assert table.cell_text("b", "diff") == "-"


async def test_replication_and_task_columns() -> None:
    store = small_cluster()
    change_vm(store, "b", replication=ReplicationState.REPLICATING,
              replication_health=Health.WARNING)
    store.apply(Upsert(Task("t1", "merge", ref(Kind.VM, "a"), "app-01", 42.0,
                            TaskState.RUNNING, NOW)))
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        assert table.cell_text("b", "repl") == "replicating (warning)"
        assert table.cell_text("a", "task") == "merge 42%"
        store.apply(TaskProgress("t1", 57.4))
        table.flush()
        assert table.cell_text("a", "task") == "merge 57%"
        assert not table.is_highlighted("a", "task")  # progress alone does not flash
        store.apply(TaskProgress("t1", 100.0, state=TaskState.OK))
        table.flush()
        assert table.cell_text("a", "task") == "-"
        assert table.is_highlighted("a", "task")  # the task ending does


async def test_critical_cells_use_the_critical_style() -> None:
    store = small_cluster()
    change_vm(store, "c", power=PowerState.PAUSED_CRITICAL)
    change_vm(store, "b", replication=ReplicationState.ERROR, replication_health=Health.CRITICAL)
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        critical = table.get_component_rich_style("vm-table--critical", partial=True)
        power = segment_for(table, "c", "paused-critical")
        repl = segment_for(table, "b", "error (critical)")
        running = segment_for(table, "a", "running")
        assert power.style is not None and power.style.bold and critical.bold
        assert power.style.color == table.get_component_rich_style("vm-table--critical").color
        assert repl.style is not None and repl.style.color == power.style.color
        assert running.style is not None and running.style.color != power.style.color


# -- cursor ------------------------------------------------------------------------------
async def test_cursor_keys_move_and_post_messages() -> None:
    app = Host(small_cluster())
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        assert table.cursor_vm_id == "a"
        assert app.moved[-1] == "a"
        await pilot.press("down")
        await pilot.pause()
        assert table.cursor_vm_id == "b"
        assert app.moved[-1] == "b"
        await pilot.press("end")
        await pilot.pause()
        assert (table.cursor_vm_id, app.moved[-1]) == ("c", "c")
        await pilot.press("down")  # already at the end: no move, no message
        await pilot.pause()
        assert app.moved.count("c") == 1
        await pilot.press("home")
        await pilot.pause()
        assert table.cursor_vm_id == "a"
        await pilot.press("pagedown")
        await pilot.pause()
        assert table.cursor_vm_id == "c"
        await pilot.press("pageup", "enter")
        await pilot.pause()
        assert app.activated == ["a"]


async def test_cursor_keys_do_not_wait_behind_the_tables_own_queue() -> None:
    """The cursor keys are run as they reach the app (priority bindings), not after a
    second hop into the table's message queue, where its timers and callbacks come
    first (during a 10,000-VM load that hop was most of a key's wait)."""
    import asyncio

    from textual import events

    app = Host(small_cluster())
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        assert table.cursor_vm_id == "a"
        gate = asyncio.Event()

        async def busy() -> None:  # the table's queue is held by earlier work
            await gate.wait()

        table.call_later(busy)
        await asyncio.sleep(0.05)
        app.post_message(events.Key("down", None))
        try:
            for _ in range(100):
                if table.cursor_vm_id == "b":
                    break
                await asyncio.sleep(0.01)
            assert table.cursor_vm_id == "b"
        finally:
            gate.set()
        await pilot.pause()
        assert app.moved[-1] == "b"


async def test_click_selects_a_row_and_header_click_sorts() -> None:
    app = Host(small_cluster())
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        await pilot.click(VmTable, offset=(3, 3))  # line 3 = third row
        await pilot.pause()
        assert table.cursor_vm_id == "c"
        assert app.moved[-1] == "c"
        await pilot.click(VmTable, offset=(3, 0))  # the Name header: reverse the sort
        await pilot.pause()
        assert table.visible_ids == ["c", "b", "a"]
        assert table.cursor_vm_id == "c"
        assert "Name ▼" in table.render_line(0).text


async def test_name_column_stays_when_scrolling_sideways() -> None:
    store = small_cluster()
    store.apply(Upsert(Task("t1", "backup", ref(Kind.VM, "b"), "db-01", 10.0,
                            TaskState.RUNNING, NOW)))
    app = Host(store)
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        assert "backup 10%" not in line_of(table, "b")
        await pilot.press("right", "right")
        await pilot.pause()
        assert table.scroll_offset.x > 0
        table.scroll_to(x=table.max_scroll_x, animate=False)
        await pilot.pause()
        assert line_of(table, "b").startswith(" db-01 ")
        assert "backup 10%" in line_of(table, "b")
        assert line_of(table, "b").rstrip().endswith("1.0 GB")
        assert table.render_line(0).text.startswith(" Name ▲")


async def test_cursor_scrolls_into_view_in_a_long_list() -> None:
    store = many_vms(200)
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        page = table.scrollable_content_region.height - 1
        await pilot.press("end")
        await pilot.pause()
        last = table.visible_ids[-1]
        assert table.cursor_vm_id == last
        assert table.scroll_offset.y == 200 - page
        assert last in table.render_line(page).text
        await pilot.press("home")
        await pilot.pause()
        assert table.scroll_offset.y == 0
        assert table.select_vm("vm-00150")
        await pilot.pause()
        assert "vm-00150" in line_of(table, "vm-00150")
        assert not table.select_vm("nope")


# -- sorting -----------------------------------------------------------------------------
async def test_sort_is_numeric_and_keeps_the_cursor_on_its_vm() -> None:
    store = small_cluster()
    change_vm(store, "b", memory_mb=512)
    change_vm(store, "c", memory_mb=16384)
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        table.select_vm("c")
        table.sort_by("diff")  # b: none, c: 5 GB, a: 60 GB (numeric, not text)
        assert table.visible_ids == ["b", "c", "a"]
        assert table.cursor_vm_id == "c"
        table.sort_by("ram", reverse=True)
        assert table.visible_ids == ["c", "a", "b"]
        table.sort_by("oldest", reverse=True)  # oldest checkpoint first
        assert table.visible_ids == ["a", "c", "b"]
        table.sort_by("lun")  # ties (a, b on CSV-DATA2) broken by name
        assert table.visible_ids == ["c", "a", "b"]
        table.sort_by("lun", reverse=True)  # the column descends, ties still by name
        assert table.visible_ids == ["a", "b", "c"]
        assert table.cursor_vm_id == "c"
        await pilot.pause()
        assert "LUN ▼" in table.render_line(0).text
        assert app.moved.count("c") == 1  # re-sorting never posts a move for the same VM


async def test_s_cycles_sort_and_shift_s_reverses() -> None:
    app = Host(small_cluster())
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        await pilot.press("s", "s")  # name -> power -> node
        await pilot.pause()
        assert (table.sort_column, table.sort_reverse) == ("node", False)
        assert "Node ▲" in table.render_line(0).text
        await pilot.press("S")
        await pilot.pause()
        assert (table.sort_column, table.sort_reverse) == ("node", True)
        assert table.visible_ids == ["c", "a", "b"]
        assert "Node ▼" in table.render_line(0).text


async def test_live_change_of_the_sort_value_moves_the_row_and_the_cursor_follows() -> None:
    store = small_cluster()
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        table.sort_by("ckpts", reverse=True)
        table.select_vm("b")
        assert table.visible_ids == ["a", "c", "b"]
        await pilot.pause()
        moves = len(app.moved)
        for i in range(5):
            store.apply(Upsert(Checkpoint(f"b-cp{i}", "b", f"cp {i}", f"b-cp{i - 1}" if i else None,
                                          CheckpointKind.STANDARD, NOW - timedelta(days=1))))
        assert table.visible_ids == ["a", "c", "b"]  # nothing moves before the flush
        table.flush()
        assert table.visible_ids == ["b", "a", "c"]
        assert table.cursor_vm_id == "b"
        await pilot.pause()
        assert len(app.moved) == moves
        assert table.cell_text("b", "depth") == "5"


# -- filtering ---------------------------------------------------------------------------
async def test_filter_by_substring_and_tokens() -> None:
    store = small_cluster()
    change_vm(store, "b", power=PowerState.OFF, generation=1)
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        table.set_filter("csv-data1")
        assert table.visible_ids == ["c"]
        assert table.cursor_vm_id == "c"
        await pilot.pause()
        assert app.moved[-1] == "c"
        table.set_filter("NODE-01")
        assert table.visible_ids == ["a", "b"]
        table.set_filter("power:off")
        assert table.visible_ids == ["b"]
        table.set_filter("gen:1")
        assert table.visible_ids == ["b"]
        table.set_filter("lun:CSV-DATA2 ckpt>2")
        assert table.visible_ids == ["a"]
        table.set_filter("diff>=5GB")
        assert table.visible_ids == ["a", "c"]
        table.set_filter("oldest>30d")
        assert table.visible_ids == ["a"]
        table.set_filter("nothing-like-this")
        assert (table.visible_ids, table.row_count, table.cursor_vm_id) == ([], 0, None)
        assert table.render_line(1).text.strip() == ""
        table.set_filter("")
        assert table.row_count == 3


def expected_order(store: Store, column: str, reverse: bool, text: str) -> list[str]:
    """The order computed the slow, obvious way: by name and id, then stably by the column."""
    flt = compile_filter(text)
    rows = [build_row(store, vm) for vm in store.vms()]
    rows = [r for r in rows if flt is None or flt(r, NOW)]
    rows.sort(key=lambda r: (r.sort[0], r.vm_id))
    index = column_index(column)
    rows.sort(key=lambda r: r.sort[index], reverse=reverse)
    return [r.vm_id for r in rows]


@pytest.mark.parametrize(("column", "reverse", "text"), [
    ("name", True, ""), ("lun", True, "node-0"), ("power", False, "power:running"),
    ("ram", True, "ram>=8GB"), ("task", True, ""), ("ver", False, "vm-001"),
])
async def test_live_churn_keeps_the_same_order_as_a_full_sort(
    column: str, reverse: bool, text: str
) -> None:
    rng = random.Random(f"{column}{reverse}{text}")
    store = many_vms(300)
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        table.sort_by(column, reverse)
        table.set_filter(text)
        for step in range(60):
            events: list[Event] = []
            for _ in range(rng.choice((1, 2, 5, 40))):
                vm = rng.choice(list(store.vms()))
                roll = rng.random()
                if roll < 0.05:
                    events.append(Remove(Kind.VM, vm.id))
                elif roll < 0.1:
                    events.append(Upsert(dataclasses.replace(vm, id=f"new-{step}-{roll}",
                                                             name=f"vm-{rng.randint(0, 999):03d}")))
                elif roll < 0.4:
                    events.append(Upsert(dataclasses.replace(
                        vm, power=rng.choice(list(PowerState)), memory_mb=rng.choice((512, 8192)),
                        lun_id=f"l{rng.randint(0, 31)}", node_id=f"n{rng.randint(0, 7)}",
                        config_version=rng.choice(("5.0", "8.0", "9.0", "10.0", "")))))
                elif roll < 0.7:
                    events.append(Upsert(Task(f"t-{vm.id}", rng.choice(("merge", "backup", "m")),
                                              ref(Kind.VM, vm.id), vm.name, rng.random() * 100,
                                              TaskState.RUNNING, NOW)))
                else:
                    events.append(Upsert(dataclasses.replace(vm, name=f"{vm.name[:5]}{step}")))
            store.apply_many(events)
            if rng.random() < 0.3:
                table.select_vm(rng.choice(table.visible_ids or ["none"]))
            cursor = table.cursor_vm_id
            table.flush()
            assert table.visible_ids == expected_order(store, column, reverse, text)
            if cursor is not None and table.row_of(cursor) is not None:
                assert table.cursor_vm_id == cursor


async def test_a_live_change_can_bring_a_row_into_the_filter() -> None:
    store = small_cluster()
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        table.set_filter("power:off")
        assert table.row_count == 0
        change_vm(store, "a", power=PowerState.OFF)
        table.flush()
        assert table.visible_ids == ["a"]
        assert table.cursor_vm_id == "a"


async def test_counts_are_posted_when_rows_come_and_go() -> None:
    store = small_cluster()
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        assert app.counts[-1] == (3, 3)
        table.set_filter("node-02")
        await pilot.pause()
        assert app.counts[-1] == (1, 3)
        store.apply(Upsert(VM("d", "new-01", "c1", "n1", PowerState.RUNNING)))
        table.flush()
        await pilot.pause()
        assert app.counts[-1] == (1, 4)


async def test_sorts_and_filters_typed_key_by_key_in_any_succession_match_a_full_sort() -> None:
    """A sort or a filter is answered from what the table keeps (the previous order, the rows
    the previous filter left while a word grows): every succession, with live changes and VMs
    of the same name between them, shows what sorting and filtering everything again shows."""
    rng = random.Random(16)
    store = many_vms(300)
    store.apply_many([Upsert(dataclasses.replace(vm, name="twin"))  # ties: by id
                      for vm in list(store.vms())[::37]])
    app = Host(store)
    words = ("vm-00", "VM-1", "twin", "node-0", "csv-01 vm-2", "ram>=8gb", "power:running",
             "ckpt>1 vm", "")
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        for step in range(30):
            column, reverse = rng.choice(COLUMN_KEYS), rng.random() < 0.5
            table.sort_by(column, reverse)
            assert table.visible_ids == expected_order(store, column, reverse, table.filter_text)
            word = rng.choice(words)
            for end in [*range(len(word) + 1), *range(len(word), -1, -1)][rng.randint(0, 3):]:
                table.set_filter(word[:end])  # typed, then erased
                assert table.visible_ids == expected_order(store, column, reverse, word[:end])
            table.set_filter(word)
            vm, gone = rng.sample(list(store.vms()), 2)
            change_vm(store, vm.id, power=rng.choice(list(PowerState)), name=f"vm-{step:03d}")
            if step % 3 == 0:  # rows come and go between sorts (other steps: renames only)
                store.apply_many([Remove(Kind.VM, gone.id),
                                  Upsert(dataclasses.replace(gone, id=f"new-{step}"))])
            table.flush()
            assert table.visible_ids == expected_order(store, column, reverse, word)


def test_a_filter_narrows_only_when_every_row_it_keeps_matched_before() -> None:
    def narrows_(old: str, new: str) -> bool:
        after = compile_filter(new)
        assert after is not None
        return narrows(compile_filter(old), after)

    assert narrows_("", "vm")
    assert narrows_("vm", "vm-0") and narrows_("VM", "vm-01") and narrows_("a", "a b")
    assert narrows_("a b", "a bc") and narrows_("a", "a ") and narrows_("-0", "vm-01")
    assert not narrows_("vm-0", "vm") and not narrows_("a b", "a") and not narrows_("a", "b")
    assert not narrows_("a b", "ab b")
    assert not narrows_("power:of", "power:off")  # a whole word, not a substring
    assert not narrows_("ckpt>3", "ckpt>30")  # 30 is not narrower than 3 (> 3)
    assert not narrows_("vm", "ckpt>3")  # what a plain word grew into is no longer one
    assert not narrows_("oldest>30d", "oldest>30d x")  # matched at another time


async def test_a_reverse_sort_by_version_orders_versions_descending() -> None:
    store = small_cluster()
    change_vm(store, "a", config_version="8.0")
    change_vm(store, "b", config_version="10.0")
    change_vm(store, "c", config_version="9.0")
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        table.sort_by("ver", reverse=True)  # version_key is a tuple: it used to raise here
        assert table.visible_ids == ["b", "c", "a"]
        change_vm(store, "a", config_version="11.0")
        table.flush()
        assert table.visible_ids == ["a", "b", "c"]


def test_filter_language_falls_back_to_substrings() -> None:
    flt = compile_filter("foo:bar x>y")
    assert flt is not None and len(flt.terms) == 2
    assert compile_filter("   ") is None


# -- live updates ------------------------------------------------------------------------
async def test_a_live_change_redraws_only_that_row_and_flashes_the_cell() -> None:
    clock = FakeMonotonic()
    store = small_cluster()
    app = Host(store, monotonic=clock)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        before = lines(table)
        rendered = table.rows_rendered
        change_vm(store, "b", power=PowerState.OFF)
        assert line_of(table, "b") == before[2]  # buffered: nothing drawn yet
        table.flush()
        await pilot.pause()
        assert table.rows_rendered == rendered + 1  # only b's row was rebuilt
        after = lines(table)
        assert after[1] == before[1] and after[3] == before[3]
        assert "off" in after[2].split()
        assert table.is_highlighted("b", "power")
        assert not table.is_highlighted("b", "name")
        changed = table.get_component_rich_style("vm-table--changed")
        lit = segment_for(table, "b", "off")
        assert lit.style is not None and lit.style.bgcolor == changed.bgcolor
        clock.now += 2.5
        table.flush()
        await pilot.pause()
        assert not table.is_highlighted("b", "power")
        plain = segment_for(table, "b", "off")
        assert plain.style is not None and plain.style.bgcolor != changed.bgcolor


async def test_highlight_expires_on_the_timer() -> None:
    store = small_cluster()
    app = Host(store, highlight_seconds=0.3)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        change_vm(store, "a", vcpus=8)
        await pilot.pause(0.2)  # the 8 Hz flush picks it up
        assert table.cell_text("a", "vcpu") == "8"
        assert table.is_highlighted("a", "vcpu")
        await pilot.pause(0.6)
        assert not table.is_highlighted("a", "vcpu")


async def test_first_load_highlights_nothing_and_new_vms_appear() -> None:
    store = small_cluster()
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        assert not table._lit
        store.apply(Upsert(VM("d", "aa-new", "c1", "n2", PowerState.RUNNING, lun_id="l2")))
        table.flush()
        assert table.visible_ids == ["d", "a", "b", "c"]
        assert table.cursor_vm_id == "a"  # the cursor stays on its VM
        assert not table._lit


async def test_removing_the_cursor_vm_moves_the_cursor_to_its_neighbour() -> None:
    store = small_cluster()
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        table.select_vm("b")
        store.apply(Remove(Kind.VM, "b"))
        table.flush()
        await pilot.pause()
        assert table.visible_ids == ["a", "c"]
        assert table.cursor_vm_id == "c"
        assert app.moved[-1] == "c"


async def test_node_rename_updates_rows_but_lun_free_space_does_not_touch_them() -> None:
    store = small_cluster()
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        lun = store.lun("l1")
        assert lun is not None
        store.apply(Upsert(dataclasses.replace(lun, free_bytes=lun.free_bytes - GB)))
        assert not table._dirty
        node = store.node("n2")
        assert node is not None
        store.apply(Upsert(dataclasses.replace(node, name="HV-NODE-02-RENAMED")))
        assert table._dirty == {"c"}
        table.flush()
        assert table.cell_text("c", "node") == "HV-NODE-02-RENAMED"
        store.apply(Upsert(dataclasses.replace(lun, name="CSV-RENAMED")))
        assert table._dirty == {"a", "b"}


# -- hostile text and stale data ---------------------------------------------------------
HOSTILE = {
    "h1": "[bold red]x[/]",
    "h2": "[@click=app.quit]x",
    "h3": "a[/]b",
    "h4": "[/",
    "h5": "[b",
    "h6": "\x1b[2Jclear\x1b]52;c;aGk=\x07",
    "h7": "tab\there\u202eevil",
    "h8": "[仮想マシン]" * 10,  # wide characters, longer than the column
}


async def test_hostile_names_show_literally_and_do_nothing() -> None:
    store = small_cluster()
    for vm_id, name in HOSTILE.items():
        store.apply(Upsert(VM(vm_id, name, "c1", "n1", PowerState.RUNNING, lun_id="l1")))
    store.apply(Upsert(Node("n1", "[@click=app.quit]node", "c1")))
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        table.set_filter("[")
        shown = lines(table)
        text = "\n".join(shown)
        for literal in ("[bold red]x[/]", "[@click=app.quit]x", "a[/]b", "[/", "[b",
                        "\\x1b[2Jclear", "tab\\x09here\\u202eevil"):
            assert literal in text
        for y in range(len(shown)):
            assert table.render_line(y).cell_length == table.size.width
            for segment in table.render_line(y):
                assert "\x1b" not in segment.text and "\t" not in segment.text
                assert segment.style is None or not segment.style.meta
                assert segment.style is None or segment.style.link is None
        for y in range(1, table.row_count + 1):
            await pilot.click(VmTable, offset=(4, y))
            await pilot.click(VmTable, offset=(20, y))
        await pilot.press("enter")
        await pilot.pause()
        assert app.is_running
        assert set(HOSTILE) <= set(table.visible_ids)  # with a and b, on the hostile node


async def test_stale_dims_every_row_and_says_so() -> None:
    app = Host(small_cluster())
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        assert "STALE" not in table.render_line(0).text
        table.stale = True
        await pilot.pause()
        assert table.render_line(0).text.rstrip().endswith("STALE")
        for y in (1, 2, 3):
            assert all(s.style is not None and s.style.dim for s in table.render_line(y) if s.text)
        table.stale = False
        await pilot.pause()
        assert not any(s.style is not None and s.style.dim for s in table.render_line(2))


# -- scale -------------------------------------------------------------------------------
def many_vms(count: int, *, checkpoints: int = 2) -> Store:
    store = Store()
    events: list[object] = [Upsert(Cluster("c1", "BIG", Platform.HYPERV, nodes=8))]
    events += [Upsert(Node(f"n{i}", f"NODE-{i:02d}", "c1")) for i in range(8)]
    events += [Upsert(Lun(f"l{i}", f"CSV-{i:02d}", "c1", 4096 * GB, 1024 * GB)) for i in range(32)]
    for i in range(count):
        vm_id = f"vm-{i:05d}"
        events.append(Upsert(VM(vm_id, vm_id, "c1", f"n{i % 8}", PowerState.RUNNING,
                                config_version="9.0", vcpus=2 + i % 6,
                                memory_mb=1024 * (1 + i % 16), lun_id=f"l{i % 32}")))
        parent = None
        for j in range(checkpoints if i % 3 else 0):
            cp_id = f"{vm_id}-cp{j}"
            events.append(Upsert(Checkpoint(cp_id, vm_id, f"cp{j}", parent, CheckpointKind.STANDARD,
                                            NOW - timedelta(days=10 + i % 300 + j),
                                            size_bytes=(i % 50 + 1) * GB)))
            parent = cp_id
    store.apply_many(events)  # type: ignore[arg-type]
    return store


@pytest.mark.slow
async def test_ten_thousand_vms_load_fast_and_one_change_redraws_one_row() -> None:
    store = many_vms(10_000)
    started = time.perf_counter()
    app = Host(store)
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        loaded = time.perf_counter() - started
        assert table.row_count == 10_000
        assert loaded < 3.0, f"10k VMs took {loaded:.2f} s to load and draw"
        await pilot.press("pagedown", "pagedown")
        await pilot.pause()
        rendered = table.rows_rendered
        vm_id = table.visible_ids[table.scroll_offset.y + 3]
        started = time.perf_counter()
        change_vm(store, vm_id, vcpus=64)
        table.flush()
        await pilot.pause()
        took = time.perf_counter() - started
        assert table.rows_rendered == rendered + 1
        assert "64" in line_of(table, vm_id).split()
        assert took < 0.5, f"one visible change took {took * 1000:.0f} ms"


async def test_a_big_batch_is_placed_by_name_and_its_rows_built_later() -> None:
    """The first inventory (hundreds of VMs in one flush) is placed by name only; every row
    still reads as a fully built one, churn keeps the order, and a filter builds them all."""
    full = many_vms(600)
    store = Store()
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        store.apply_many(Upsert(e) for kind in (Kind.CLUSTER, Kind.NODE, Kind.LUN, Kind.VM)
                         for e in full.all(kind))
        table.flush()
        assert table.row_count == 600
        assert table.rows_pending > 500  # only what was drawn is built
        # Checkpoints arrive after their VMs (as an inventory sends them): unbuilt rows
        # are placed again, drawn rows are rebuilt.
        store.apply_many(Upsert(cp) for cp in full.all(Kind.CHECKPOINT))
        rng = random.Random(16)
        for step in range(30):
            vm = rng.choice(list(store.vms()))
            roll = rng.random()
            if roll < 0.2:
                store.apply(Remove(Kind.VM, vm.id))
            elif roll < 0.6:
                change_vm(store, vm.id, name=f"vm-{rng.randint(0, 999):03d}x{step}")
            else:
                change_vm(store, vm.id, power=PowerState.OFF, vcpus=63)
            table.flush()
            assert table.visible_ids == expected_order(store, "name", False, "")
        for vm_id in rng.sample(table.visible_ids, 20):
            row = build_row(store, store.vm(vm_id))  # type: ignore[arg-type]
            for column in ("ckpts", "depth", "power", "vcpu", "name", "lun"):
                assert table.cell_text(vm_id, column) == row.cell(column_index(column), NOW)
        for _ in range(200):  # the background builds the rest at each flush
            if not table.rows_pending:
                break
            table.flush()
        assert table.rows_pending == 0
        widths = list(table._widths)
        rebuilt = VmTable(store)
        rebuilt._grow_widths(build_row(store, vm).cells for vm in store.vms())
        assert widths == rebuilt._widths
        table.set_filter("ckpt>1")
        assert table.visible_ids == expected_order(store, "name", False, "ckpt>1")
        table.set_filter("")
        table.sort_by("ckpts", reverse=True)
        assert table.visible_ids == expected_order(store, "ckpts", True, "")


async def test_a_filter_during_the_load_builds_every_row_first() -> None:
    store = many_vms(400)
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        assert table.rows_pending > 0
        table.set_filter("depth>=2")
        assert table.rows_pending == 0
        assert table.visible_ids == expected_order(store, "name", False, "depth>=2")


# -- the first inventory: held while its slices are applied, placed once ------------------
def slices(store: Store, size: int) -> list[list[Upsert]]:
    """A store's entities as an inventory sends them (VMs, then their checkpoints), cut
    into slices as the console applies them."""
    events = [Upsert(e) for kind in (Kind.CLUSTER, Kind.NODE, Kind.LUN, Kind.VM, Kind.CHECKPOINT)
              for e in store.all(kind)]
    return [events[i : i + size] for i in range(0, len(events), size)]


async def test_a_held_inventory_is_staged_slice_by_slice_and_placed_once() -> None:
    """While held, the table shows nothing new and draws nothing of it; released, it
    shows every VM in the order and with the widths a row-by-row build gives, the
    cursor on the first VM, and every later change as usual."""
    full = many_vms(900)
    hostile = VM("vm-hostile", "[@click=app.quit]zz[/] \x1b[2J 名前", "c1", "n1",
                 PowerState.OFF, config_version="9.0", lun_id="l1")
    store = Store()
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        table.hold()
        for events in [*slices(full, 250), [Upsert(hostile)]]:
            store.apply_many(events)
            table.flush()  # stages the new VMs: not shown yet
            assert table.row_count == 0 and table.held
        rendered = table.rows_rendered
        await pilot.pause()
        assert table.rows_rendered == rendered  # nothing of it was drawn
        table.release()
        assert not table.held
        assert table.visible_ids == expected_order(store, "name", False, "")
        assert table.cursor_vm_id == table.visible_ids[0]
        await pilot.pause()
        assert app.counts[-1] == (901, 901)
        assert app.moved[-1] == table.visible_ids[0]
        widths = list(table._widths)
        rebuilt = VmTable(store)
        rebuilt._grow_widths(build_row(store, vm).cells for vm in store.vms())
        assert widths == rebuilt._widths
        assert table.select_vm("vm-hostile")
        await pilot.pause()
        text = line_of(table, "vm-hostile")
        assert "[@click=app.quit]zz[/]" in text and "\x1b" not in text
        for vm_id in ("vm-00001", "vm-00450", "vm-00899"):
            row = build_row(store, store.vm(vm_id))  # type: ignore[arg-type]
            for column in ("ckpts", "depth", "oldest", "name", "node", "lun"):
                assert table.cell_text(vm_id, column) == row.cell(column_index(column), NOW)
        change_vm(store, "vm-00450", name="0-first")
        store.apply(Remove(Kind.VM, "vm-00001"))
        table.flush()
        assert table.visible_ids == expected_order(store, "name", False, "")
        assert table.visible_ids[0] == "vm-00450"


async def test_changes_to_staged_vms_and_a_sort_while_held_are_kept() -> None:
    """A staged VM renamed or removed before the release, and a sort by another column
    asked for during the hold: the released table is the one a full sort gives."""
    full = many_vms(400)
    store = Store()
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        table.hold()
        parts = slices(full, 200)
        for events in parts[:2]:
            store.apply_many(events)
            table.flush()
        change_vm(store, "vm-00007", name="zzz-last")
        store.apply(Remove(Kind.VM, "vm-00008"))
        table.flush()
        for events in parts[2:]:
            store.apply_many(events)
            table.flush()
        table.release()
        assert table.visible_ids == expected_order(store, "name", False, "")
        assert table.visible_ids[-1] == "vm-00007" and table.row_of("vm-00008") is None
        table.hold()
        change_vm(store, "vm-00010", vcpus=64)
        store.apply(Upsert(VM("vm-new", "new", "c1", "n1", PowerState.OFF, lun_id="l1")))
        table.flush()  # staged
        table.sort_by("vcpu", reverse=True)  # during a hold: sorted with what is known
        table.release()
        assert table.visible_ids == expected_order(store, "vcpu", True, "")
        assert table.visible_ids[0] == "vm-00010"


def test_wide_widths_measure_what_wide_cells_show() -> None:
    """The widths of a bulk placement are those of each VM's wide cells: wide (CJK) and
    zero-width (combining) characters, tabs, escaped controls, tasks and replication."""
    store = many_vms(50)
    names = ["名前のとても長い仮想マシン", "e\u0301\u0301\u0301\u0301\u0301\u0301\u0301x" * 3,
             "tab\there", "esc \x1b[2J", "[b]markup[/b]" * 4]
    for i, name in enumerate(names):
        change_vm(store, f"vm-{i:05d}", name=name, replication=ReplicationState.REPLICATING,
                  replication_health=Health.WARNING, config_version="10.0 preview")
    store.apply(Upsert(Task("t1", "merge-checkpoints-and-more", ref(Kind.VM, "vm-00020"),
                            TaskState.RUNNING, 42.0, started=NOW)))
    from rich.cells import cell_len

    from ventana.tui.vm_rows import WIDE, wide_cells, wide_widths

    vms = list(store.vms())
    expected = [max(cell_len(wide_cells(store, vm)[i]) for vm in vms) for i in range(len(WIDE))]
    assert list(wide_widths(store, vms)) == expected
    assert wide_widths(store, []) == (0,) * len(WIDE)


async def test_rows_placed_by_name_are_built_in_the_background_between_flushes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After one flush starts it, the background build carries on by itself (a slice at
    a time, keys answered between slices) until every row is built: nothing waits for
    the 8 Hz flush (here the timer is all but stopped)."""
    monkeypatch.setattr("ventana.tui.vm_table.FLUSH_HZ", 0.01)
    store = Store()
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        full = many_vms(3000)
        store.apply_many(Upsert(e) for kind in (Kind.CLUSTER, Kind.NODE, Kind.LUN, Kind.VM,
                                                Kind.CHECKPOINT) for e in full.all(kind))
        table.flush()  # places them by name
        assert table.rows_pending > 2500
        table.flush()  # starts the background build
        for _ in range(400):
            if not table.rows_pending:
                break
            await pilot.press("down")  # answered between slices
        assert table.rows_pending == 0
        assert (table.row_of(table.cursor_vm_id) or 0) > 0  # the keys moved the cursor


# -- a filter typed key by key at scale (docs/vm-table-scale.md) ---------------------------
def test_search_texts_match_as_each_rows_filter_does() -> None:
    """``match_texts`` (one pass over the kept search texts) keeps exactly the rows, in
    their order, that the filter itself keeps, for one word or several."""
    store = many_vms(400)
    rows = {vm.id: build_row(store, vm) for vm in store.vms()}
    ids = sorted(rows, reverse=True)
    texts = [rows[vm_id].search for vm_id in ids]
    for text in ("v", "VM-00", "vm-0012", "node-03 csv-1", "running vm-03", "nothing", "9"):
        flt = compile_filter(text)
        needles = plain_needles(flt)
        assert needles is not None
        shown, kept = match_texts(ids, texts, needles)
        assert shown == [vm_id for vm_id in ids if flt(rows[vm_id], NOW)]  # type: ignore[misc]
        assert kept == [rows[vm_id].search for vm_id in shown]
    assert plain_needles(compile_filter("vm-0 power:off")) is None
    assert plain_needles(compile_filter("ckpt>1")) is None
    assert plain_needles(None) is None


async def test_a_row_changed_between_two_keys_is_matched_as_it_is_now() -> None:
    """The search texts kept from the last key are not reused once a row changed: a task
    started on a shown VM (its row does not move) is found by the next word typed, a VM
    renamed out of the filter leaves, and one renamed into it comes back when erased."""
    store = many_vms(300)
    app = Host(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        await pilot.pause()
        for end in range(1, len("vm-001") + 1):
            table.set_filter("vm-001"[:end])
        assert table.row_count == 100
        store.apply(Upsert(Task("t1", "merge", ref(Kind.VM, "vm-00142"), "vm-00142", 5.0,
                                TaskState.RUNNING, NOW)))
        table.flush()
        assert table.visible_ids == expected_order(store, "name", False, "vm-001")
        table.set_filter("vm-001 m")  # a word added: narrows from the rows shown
        table.set_filter("vm-001 me")
        assert table.visible_ids == ["vm-00142"]
        change_vm(store, "vm-00142", name="renamed")
        change_vm(store, "vm-00250", name="vm-00199x")
        table.flush()
        table.set_filter("vm-001 mer")
        assert table.visible_ids == []
        for text in ("vm-001 me", "vm-001", "vm-00", "vm-0019", "vm-00199"):
            table.set_filter(text)
            assert table.visible_ids == expected_order(store, "name", False, text)
        assert table.visible_ids == ["vm-00199", "vm-00250"]


async def test_rows_built_in_bulk_leave_the_cyclic_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the rows placed by name are all built, they are frozen (``gc.freeze``): a full
    collection while a filter is typed no longer walks 45,000 rows. Also when the last
    background slice ends on its deadline (here every slice does)."""
    import gc

    monkeypatch.setattr("ventana.tui.vm_table.BUILD_SLICE_S", 0.0)
    frozen_before = gc.get_freeze_count()
    store = many_vms(1000)
    app = Host(store)
    try:
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one(VmTable)
            await pilot.pause()
            for _ in range(500):  # built in the background, 64 rows a slice
                if not table.rows_pending:
                    break
                await pilot.pause(0.01)
            assert table.rows_pending == 0
            assert gc.get_freeze_count() >= frozen_before + 1000
            table.set_filter("vm-0")
            assert table.visible_ids == expected_order(store, "name", False, "vm-0")
            change_vm(store, "vm-00001", memory_mb=99 * 1024)  # frozen rows still change
            table.flush()
            assert table.cell_text("vm-00001", "ram") == "99.0 GB"
    finally:
        gc.unfreeze()
