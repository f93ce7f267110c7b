"""The VM pane: a virtualized, live table of every VM on Textual's Line API.

This module owns how the VM list is drawn and driven: a ``ScrollView`` that
renders only the visible lines (a fixed header on line 0, the Name column
frozen when scrolling sideways), keeps one rendered ``Strip`` per row, and
takes store deltas without repainting on each one. ``apply_delta`` only
notes which VMs are dirty (O(changed)); eight times a second the dirty rows
are rebuilt from the store (``vm_rows.build_row``), re-sorted/re-filtered
only when a sort value, the filter outcome or the set of VMs changed, and
only their visible lines are refreshed. Cells whose text changed are
highlighted for a couple of seconds. The cursor follows its VM, not its
line. All data is drawn as plain ``Segment`` text, never parsed as markup.

Big batches (the first inventory, ``BULK_ROWS`` new VMs or more) are placed
without building their rows while the table is sorted by name and not
filtered: a VM's place needs only its name and the column widths only the
text of the wide columns (``vm_rows.wide_widths``). Those rows are built when
first drawn, a few milliseconds' worth at a time in the background (half
the loop at most), or all at once when a sort by another column or a filter
needs them.

What is shown, sorted and matched lives in ``vm_rows`` (no Textual there).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import re
import time
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from itertools import zip_longest
from typing import Any, ClassVar, NamedTuple

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ventana.state.model import VM, Kind, Lun, Node
from ventana.state.store import Change, Delta, Store

from .vm_rows import (
    COLUMNS,
    CRITICAL,
    NORMAL,
    OLDEST,
    TASK,
    WIDE,
    Filter,
    Row,
    SortKey,
    build_row,
    column_index,
    compile_filter,
    descending,
    fit,
    match_texts,
    matching,
    name_sort_value,
    narrows,
    plain_needles,
    sort_key,
    vm_id_of_target,
    wide_widths,
)

HIGHLIGHT_SECONDS = 2.0
FLUSH_HZ = 8.0
AGE_TICK_SECONDS = 60.0
INCREMENTAL_MOVES = 32  # up to this many (or 1 % of rows) moved rows are placed by bisect
BULK_ROWS = 256  # this many new VMs in one flush are placed by name, their rows built later
BUILD_SLICE_S = 0.008  # rows built in the background per flush, at most this long
_GAP = 1  # blank cells before each column
_PERCENT = re.compile(r"\d+%")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _position(ids: list[str], vm_id: str, keys: dict[str, SortKey]) -> int | None:
    """Where ``vm_id`` sits in ``ids`` (sorted by ``keys``), or None."""
    key = keys.get(vm_id)
    if key is None:
        return None
    index = bisect_left(ids, key, key=keys.__getitem__)
    return index if index < len(ids) and ids[index] == vm_id else None


def _remove(ids: list[str], vm_id: str, keys: dict[str, SortKey]) -> None:
    index = _position(ids, vm_id, keys)
    if index is not None:
        del ids[index]


class _LazyKeys(dict[str, SortKey]):
    """Every row's sort key, each made from its row when first read (``make``).

    A new sort reads a few dozen keys (bisect, the cursor) before the next one;
    making all of them up front took longer than the sort at 45,000 rows. A key
    stored (``keys[vm_id] = ...``) is kept as it is; reads through ``[]`` and
    ``get`` both make a missing one.
    """

    __slots__ = ("_make",)

    def __init__(self, ids: Iterable[str], make: Callable[[str], SortKey]) -> None:
        super().__init__(dict.fromkeys(ids))  # type: ignore[arg-type]
        self._make = make

    def __getitem__(self, vm_id: str) -> SortKey:
        key = dict.__getitem__(self, vm_id)
        if key is None:
            key = self._make(vm_id)
            dict.__setitem__(self, vm_id, key)
        return key

    def get(self, vm_id: str, default: SortKey | None = None) -> SortKey | None:  # type: ignore[override]
        try:
            return self[vm_id]
        except KeyError:
            return default


class _RowMap(dict[str, Row]):
    """The built rows (a plain dict to read), and what a new sort would otherwise read
    from every row, kept up to date as rows are written: the sort values of the columns
    sorted by lately (``column``) and the order by name (``name_order``)."""

    __slots__ = ("_values", "name_order", "version")
    KEEP = 3  # columns whose values are kept: Name and the last two sorted by

    def __init__(self) -> None:
        super().__init__()
        self._values: dict[int, dict[str, Any]] = {}
        self.name_order: list[str] | None = None  # by name, then id; None: to be sorted
        self.version = 0  # counts writes and removals (what was read from rows may be stale)

    def __setitem__(self, vm_id: str, row: Row) -> None:
        old = dict.get(self, vm_id)
        dict.__setitem__(self, vm_id, row)
        self.version += 1
        for column, values in self._values.items():
            values[vm_id] = row.sort[column]
        if old is None or old.sort[0] != row.sort[0]:
            self.name_order = None

    def pop(self, vm_id: str, default: Row | None = None) -> Row | None:  # type: ignore[override]
        row = dict.pop(self, vm_id, default)
        if row is not None:
            self.version += 1
            for values in self._values.values():
                values.pop(vm_id, None)
            self.name_order = None
        return row

    def column(self, index: int) -> dict[str, Any]:
        """Each row's sort value in this column (kept from now on)."""
        values = self._values.get(index)
        if values is None:
            if len(self._values) >= self.KEEP:  # forget the oldest column but Name
                del self._values[next(c for c in self._values if c != 0)]
            values = self._values[index] = {v: row.sort[index] for v, row in self.items()}
        return values


class _Styles(NamedTuple):
    base: Style
    header: Style
    cursor: Style
    stale: Style
    changed: Style
    critical: Style
    warning: Style


class VmTable(ScrollView, can_focus=True, inherit_bindings=False):
    """Every VM of the store, one line each, live; see the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # priority: run by the app as the key arrives (the table has the focus), not
        # after a second queue hop to the table behind its timers — during a 10,000-VM
        # load that hop was most of a key's wait (p99 ~48 of ~72 ms).
        Binding("up", "cursor_up", "Up", show=False, priority=True),
        Binding("down", "cursor_down", "Down", show=False, priority=True),
        Binding("pageup", "cursor_page_up", "Page up", show=False, priority=True),
        Binding("pagedown", "cursor_page_down", "Page down", show=False, priority=True),
        Binding("home", "cursor_home", "First VM", show=False, priority=True),
        Binding("end", "cursor_end", "Last VM", show=False, priority=True),
        Binding("left", "scroll_left", "Scroll left", show=False),
        Binding("right", "scroll_right", "Scroll right", show=False),
        Binding("enter", "activate", "Open VM", show=False),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "vm-table--header",
        "vm-table--cursor",
        "vm-table--stale",
        "vm-table--changed",
        "vm-table--critical",
        "vm-table--warning",
    }

    DEFAULT_CSS = """
    VmTable {
        background: $surface;
        color: $foreground;
        height: 1fr;
        & > .vm-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        & > .vm-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .vm-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .vm-table--stale {
            text-style: dim;
        }
        & > .vm-table--changed {
            background: $warning 40%;
            text-style: bold;
        }
        & > .vm-table--critical {
            color: $error;
            text-style: bold;
        }
        & > .vm-table--warning {
            color: $warning;
        }
    }
    """

    stale: reactive[bool] = reactive(False)
    #: Some nodes' or targets' links are down, others live: only their VMs' rows are
    #: dimmed (``Store.staleness``: a VM's node, else its own target — in a composite a
    #: target's link down dims only its rows); the header stamp names these
    #: (``Store.stale_names``: down targets, then stale nodes).
    stale_nodes: reactive[tuple[str, ...]] = reactive(())

    class CursorMoved(Message):
        """The highlighted VM changed (None: the table is empty)."""

        def __init__(self, table: VmTable, vm_id: str | None) -> None:
            super().__init__()
            self.table = table
            self.vm_id = vm_id

        @property
        def control(self) -> VmTable:
            return self.table

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, VmTable.CursorMoved) and message.table is self.table

    class CountChanged(Message):
        """How many rows are shown (after the filter) and how many VMs there are changed."""

        def __init__(self, table: VmTable, shown: int, total: int) -> None:
            super().__init__()
            self.table = table
            self.shown = shown
            self.total = total

        @property
        def control(self) -> VmTable:
            return self.table

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, VmTable.CountChanged) and message.table is self.table

    class Activated(Message):
        """Enter (or a double click) on a VM."""

        def __init__(self, table: VmTable, vm_id: str) -> None:
            super().__init__()
            self.table = table
            self.vm_id = vm_id

        @property
        def control(self) -> VmTable:
            return self.table

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] = _utcnow,
        highlight_seconds: float = HIGHLIGHT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.store = store
        self._clock = clock
        self._monotonic = monotonic
        self._highlight_seconds = highlight_seconds
        self._now = clock()
        self._rows = _RowMap()  # built rows (see _unbuilt)
        self._keys: dict[str, SortKey] = {}  # every VM shown; one total order: bisect works
        # VMs placed by name whose row is not (re)built yet -> the VM as it was placed
        self._unbuilt: dict[str, VM] = {}
        self._order: list[str] = []  # every VM, sorted by _keys
        self._visible: list[str] = self._order  # the filtered rows (_order itself if no filter)
        self._by_node: dict[str, set[str]] = {}
        self._by_lun: dict[str, set[str]] = {}
        self._dirty: set[str] = set()
        self._lit: dict[str, dict[int, float]] = {}  # VM id -> column -> highlight ends
        self._lit_queue: deque[tuple[float, str]] = deque()
        self._strips: LRUCache[str, tuple[tuple[object, ...], Strip]] = LRUCache(2048)
        self._styles: _Styles | None = None
        self._widths = [max(c.min_width, len(c.label)) for c in COLUMNS]
        self._offsets: list[int] = []
        self._table_width = 0
        self._layout_gen = 0
        self._age_epoch = 0
        self._sort_column = 0
        self._sort_reverse = False
        self._filter: Filter | None = None
        self._cursor_id: str | None = None
        self._cursor_row = 0
        self._counts = (0, 0)
        self._loaded = False
        self._held = False  # changes noted, not placed: the first inventory (see hold())
        self._staged: dict[str, None] = {}  # keyed while held, not in _order yet (_stage_new)
        self._build_queued = False  # a background slice of row builds is queued
        self._built_unfrozen = 0  # rows built since the last gc.freeze (_freeze_rows)
        # Search texts aligned with a list of ids (_order, _visible): (ids, rows.version,
        # texts), at most two; see _texts_of.
        self._texts: list[tuple[list[str], int, list[str]]] = []
        self.rows_rendered = 0  # row strips built (cache misses): for tests and benchmarks
        self._relayout()

    # -- public API ------------------------------------------------------------------------
    @property
    def cursor_vm_id(self) -> str | None:
        return self._cursor_id

    @property
    def row_count(self) -> int:
        """Rows shown (after the filter)."""
        return len(self._visible)

    @property
    def visible_ids(self) -> list[str]:
        """VM ids in display order (after sort and filter)."""
        return list(self._visible)

    @property
    def sort_column(self) -> str:
        return COLUMNS[self._sort_column].key

    @property
    def sort_reverse(self) -> bool:
        return self._sort_reverse

    @property
    def filter_text(self) -> str:
        return self._filter.text if self._filter else ""

    def row_of(self, vm_id: str) -> int | None:
        """Display position of a VM (None if filtered out or unknown); O(log n)."""
        return _position(self._visible, vm_id, self._keys)

    def cell_text(self, vm_id: str, column_key: str) -> str:
        """The text a cell shows (unpadded)."""
        return self._row(vm_id).cell(column_index(column_key), self._now)

    def is_highlighted(self, vm_id: str, column_key: str) -> bool:
        return column_index(column_key) in self._lit.get(vm_id, {})

    def apply_delta(self, delta: Delta) -> None:
        """Note the VMs a store delta touches; they are redrawn at the next flush."""
        dirty = self._dirty
        for change in delta.changes:
            kind = change.kind
            if kind is Kind.VM:
                dirty.add(change.id)
            elif kind is Kind.CHECKPOINT or kind is Kind.DISK:  # their VM (inlined: many)
                old, new = change.old, change.new
                if old is not None:
                    dirty.add(old.vm_id)  # type: ignore[union-attr]
                if new is not None:
                    dirty.add(new.vm_id)  # type: ignore[union-attr]
            elif kind is Kind.TASK:
                self._mark_task(change)
            elif kind is Kind.NODE or kind is Kind.LUN:
                self._mark_renamed(change)

    def flush(self) -> None:
        """Redraw what changed since the last flush (runs FLUSH_HZ times a second)."""
        if not self._loaded:
            return
        if self._held:
            self._stage_new()
            return
        now = self._monotonic()
        expired = self._expire_highlights(now) if self._lit_queue else ()
        if self._dirty:
            self._apply_dirty(now)
        elif self._unbuilt:
            self._build_in_background()
        for vm_id in expired:
            self._refresh_row(vm_id)

    # -- the first inventory: noted while it is applied, placed once (scale) ----------------
    def hold(self) -> None:
        """Note changes without placing them until ``release``.

        While the first inventory is applied slice by slice, every slice would
        otherwise place its VMs and then place them again as their disks and
        checkpoints arrive; held, the table places each VM once, at ``release``.
        """
        self._held = True

    def release(self) -> None:
        """Place what was noted while held (a no-op if not held)."""
        if self._held:
            self._held = False
            self._stage_new()
            self._place_staged()
            if self._dirty:  # what staging left (changes to rows already shown)
                self._apply_dirty(self._monotonic())

    @property
    def held(self) -> bool:
        return self._held

    @property
    def rows_pending(self) -> int:
        """Rows placed by name whose full row is still to be built (in the background)."""
        return len(self._unbuilt)

    def select_vm(self, vm_id: str) -> bool:
        """Put the cursor on a VM and scroll to it; False if it is not shown."""
        self.flush()
        row = self.row_of(vm_id)
        if row is None:
            return False
        self._move_cursor(row)
        return True

    def sort_by(self, column_key: str, reverse: bool = False) -> None:
        """Sort by a column (key or alias, e.g. "name", "diff", "oldest")."""
        column = column_index(column_key)
        self.flush()
        if column != 0:
            self._build_all()
        previous = (self._sort_column, self._sort_reverse)
        self._sort_column = column
        self._sort_reverse = reverse
        if self._unbuilt or self._staged or len(self._rows) != len(self._keys):
            self._rekey()  # rows placed by name are keyed from their VM
            self._reorder(follow=True)
        else:
            self._resort(previous)

    def cycle_sort(self) -> None:
        """Sort by the next column, ascending."""
        self.sort_by(COLUMNS[(self._sort_column + 1) % len(COLUMNS)].key)

    def set_filter(self, text: str) -> None:
        """Show only rows matching ``text`` (see ``vm_rows`` for the language)."""
        new = compile_filter(text)
        if (new.text if new else "") == self.filter_text:
            return
        self.flush()
        if new is not None:
            self._build_all()
        narrow = new is not None and narrows(self._filter, new)
        self._filter = new
        self._refilter(narrow)

    # -- actions ---------------------------------------------------------------------------
    def action_cursor_up(self) -> None:
        self._move_cursor(self._cursor_row - 1)

    def action_cursor_down(self) -> None:
        self._move_cursor(self._cursor_row + 1)

    def action_cursor_page_up(self) -> None:
        self._move_cursor(self._cursor_row - self._page_rows())

    def action_cursor_page_down(self) -> None:
        self._move_cursor(self._cursor_row + self._page_rows())

    def action_cursor_home(self) -> None:
        self._move_cursor(0)

    def action_cursor_end(self) -> None:
        self._move_cursor(len(self._visible) - 1)

    def action_activate(self) -> None:
        if self._cursor_id is not None:
            self.post_message(self.Activated(self, self._cursor_id))

    def action_cycle_sort(self) -> None:
        self.cycle_sort()

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, not self._sort_reverse)

    # -- lifecycle -------------------------------------------------------------------------
    def on_mount(self) -> None:
        self._load()
        self.set_interval(1.0 / FLUSH_HZ, self.flush, name="vm-table-flush")
        self.set_interval(AGE_TICK_SECONDS, self._tick_ages, name="vm-table-ages")

    def _load(self) -> None:
        """Place every VM of the store (first paint; no highlights)."""
        self._dirty.clear()
        self._now = self._clock()
        vms = list(self.store.vms())
        if len(vms) >= BULK_ROWS:
            self._place_by_name([vm.id for vm in vms])
        else:
            for vm in vms:
                self._put_row(build_row(self.store, vm))
            self._grow_widths(row.cells for row in self._rows.values())
        self._relayout()
        self._loaded = True
        self._reorder(follow=False)

    def watch_stale(self) -> None:
        self.refresh()

    def watch_stale_nodes(self) -> None:
        self.refresh()

    def show_stale(self, everything: bool, names: tuple[str, ...]) -> None:
        """The links changed: every row stale (``everything``), or the rows of what is
        down, stamped with ``names``. Redrawn even when the names stay the same (what
        no node source names may have changed with a target's own link)."""
        self.stale, self.stale_nodes = everything, () if everything else names
        self.refresh()

    def row_stale(self, vm_id: str) -> bool:
        """Whether this VM's row shows stale: the whole link, its node's, or (several
        targets) its own target's is not live (``Staleness.of``: cached per link change,
        a set probe and a prefix test per drawn row)."""
        if self.stale:
            return True
        view = self.store.staleness()
        if not view.any:
            return False
        vm = self.store.vm(vm_id)
        return vm is not None and view.of(vm.node_id, vm.id)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            self._click_header(offset.x)
            return
        row = offset.y - 1 + self.scroll_offset.y
        if row < len(self._visible):
            self._move_cursor(row)
            if event.chain >= 2:
                self.action_activate()

    def _click_header(self, x: int) -> None:
        column = self._column_at(x)
        if column is None:
            return
        key = COLUMNS[column].key
        reverse = not self._sort_reverse if column == self._sort_column else False
        self.sort_by(key, reverse)

    def _column_at(self, x: int) -> int | None:
        fixed = self._offsets[1]
        virtual_x = x if x < fixed else x + self.scroll_offset.x
        for index, start in enumerate(self._offsets):
            if start <= virtual_x < start + _GAP + self._widths[index]:
                return index
        return None

    def _tick_ages(self) -> None:
        self._now = self._clock()
        self._age_epoch += 1
        self.refresh()

    # -- dirty tracking (O(changed)) -------------------------------------------------------
    def _mark_task(self, change: Change) -> None:
        for task in (change.old, change.new):
            if task is not None:
                vm_id = vm_id_of_target(task.target)  # type: ignore[union-attr]
                if vm_id is not None:
                    self._dirty.add(vm_id)

    def _mark_renamed(self, change: Change) -> None:
        old: Node | Lun | None = change.old  # type: ignore[assignment]
        new: Node | Lun | None = change.new  # type: ignore[assignment]
        if old is not None and new is not None and old.name == new.name:
            return  # free space, state…: not shown here
        index = self._by_node if change.kind is Kind.NODE else self._by_lun
        self._dirty.update(index.get(change.id, ()))

    # -- flushing --------------------------------------------------------------------------
    def _apply_dirty(self, now: float) -> None:
        dirty, self._dirty = self._dirty, set()
        self._now = self._clock()
        if self._sort_column == 0 and self._filter is None:
            by_name = dirty & self._unbuilt.keys()
            new = [vm_id for vm_id in dirty if vm_id not in self._keys]
            if len(new) >= BULK_ROWS:
                by_name.update(new)
            if by_name:
                dirty -= by_name
                self._apply_by_name(by_name)
        updates: list[tuple[Row | None, Row | None]] = []
        for vm_id in dirty:
            old = self._rows.get(vm_id)
            vm: VM | None = self.store.vm(vm_id)
            new = build_row(self.store, vm) if vm is not None else None
            if new != old:
                updates.append((old, new))
                if old is not None and new is not None:
                    self._mark_changed(old, new, now)
        if not updates:
            return
        moving = [(old, new) for old, new in updates if self._moves(old, new)]
        changed = {row.vm_id for _, row in updates if row is not None}
        if not moving:
            self._store_rows(updates)
            for vm_id in changed:
                self._refresh_row(vm_id)
        elif len(moving) > max(INCREMENTAL_MOVES, len(self._rows) // 100):
            self._store_rows(updates)
            self._reorder(follow=True, changed=changed)
        else:
            self._reposition(updates, moving, changed)

    # -- rows placed by name, built later ------------------------------------------------
    def _name_key(self, vm: VM) -> SortKey:
        """``sort_key`` of the VM's row for the Name column, without building the row."""
        value = name_sort_value(vm)
        return (descending(value) if self._sort_reverse else value, value, vm.id)

    def _place_by_name(self, ids: Iterable[str]) -> list[str]:
        """Key, index and size VMs by name; their rows are built later. Returns the new ones."""
        store, keys, strips, unbuilt = self.store, self._keys, self._strips, self._unbuilt
        added: list[str] = []
        placed: list[VM] = []
        for vm_id in ids:
            vm = store.vm(vm_id)
            if vm is None:
                continue
            strips.discard(vm_id)
            if unbuilt.get(vm_id) is vm:  # only its checkpoints, disks or tasks changed
                continue
            old = self._rows.pop(vm_id, None)
            if vm_id not in keys:
                added.append(vm_id)
            keys[vm_id] = self._name_key(vm)
            unbuilt[vm_id] = vm
            self._index(vm_id, vm.node_id, vm.lun_id, old)
            placed.append(vm)
        if placed and self._grow_to(wide_widths(store, placed)):
            self._relayout()
            self.refresh()
        return added

    def _apply_by_name(self, ids: set[str]) -> None:
        """Dirty VMs whose rows are not built (or many new ones): placed by name only."""
        store = self.store
        gone = [vm_id for vm_id in ids if store.vm(vm_id) is None]
        moved = [vm_id for vm_id in ids if vm_id in self._keys and vm_id not in gone
                 and self._keys[vm_id] != self._name_key(store.vm(vm_id))]  # type: ignore[arg-type]
        before = self._window()
        self._forget_texts()
        for vm_id in [*gone, *moved]:
            _remove(self._order, vm_id, self._keys)
        for vm_id in gone:
            self._forget(vm_id)
        added = self._place_by_name(ids.difference(gone))
        fresh = sorted([*added, *moved], key=self._keys.__getitem__)
        if len(fresh) > INCREMENTAL_MOVES:
            order = self._order + fresh  # two sorted runs: sorting merges them in O(n)
            order.sort(key=self._keys.__getitem__)
            self._order = self._visible = order
        else:
            for vm_id in fresh:
                insort(self._order, vm_id, key=self._keys.__getitem__)
        self._settle(before, follow=True, changed=ids)

    def _stage_new(self) -> None:
        """While held: key, index and size the new VMs noted so far, without placing them.

        Only VMs the table does not show yet, and only while sorted by name and
        not filtered (a bulk placement needs nothing else); everything else stays
        noted for the flush after ``release``. Staged VMs are in ``_keys`` but not
        in ``_order`` until ``_place_staged``: nothing draws them before then, so a
        staged VM noted again for its disks or checkpoints needs nothing more (its
        row is built from the store when first drawn).
        """
        dirty = self._dirty
        if self._sort_column != 0 or self._filter is not None or not dirty:
            return
        store, keys, staged, unbuilt = self.store, self._keys, self._staged, self._unbuilt
        place: list[str] = []
        done: list[str] = []
        for vm_id in dirty:
            if vm_id in keys and vm_id not in staged:
                continue  # shown already: the flush after release
            vm = store.vm(vm_id)
            if vm is None:
                continue  # gone: the flush after release forgets it
            if unbuilt.get(vm_id) is vm:
                done.append(vm_id)
            else:
                place.append(vm_id)
        dirty.difference_update(done)
        if place:
            dirty.difference_update(place)
            added = self._place_by_name(place)
            added.sort(key=keys.__getitem__)  # sorted runs: the final sort merges them
            staged.update(dict.fromkeys(added))

    def _place_staged(self) -> None:
        """The staged VMs join the order: one sort (a merge of two sorted runs)."""
        staged, self._staged = self._staged, {}
        keys = self._keys
        fresh = [vm_id for vm_id in staged if vm_id in keys]
        if not fresh:
            return
        before = self._window()
        order = self._order + fresh  # sorted runs (_stage_new): a merge
        order.sort(key=keys.__getitem__)
        self._order = self._visible = order
        self._settle(before, follow=True, changed=None)

    def _row(self, vm_id: str) -> Row:
        """The VM's row, built now if it was placed by name only."""
        if vm_id not in self._unbuilt:
            return self._rows[vm_id]
        vm = self.store.vm(vm_id)
        if vm is None:  # removed; the next flush drops it
            return Row(vm_id, "", "", ("",) * len(COLUMNS), ("",) * len(COLUMNS),
                       (NORMAL,) * len(COLUMNS), None, "")
        if vm_id in self._dirty:  # drawn as it is now; the next flush places it again
            return build_row(self.store, vm)
        return self._build(vm_id, vm, relayout_later=True)

    def _build(self, vm_id: str, vm: VM, *, relayout_later: bool = False) -> Row:
        row = build_row(self.store, vm)
        self._unbuilt.pop(vm_id, None)
        self._rows[vm_id] = row
        if self._grow_widths((row.cells,)):
            if relayout_later:  # not while a frame is being drawn
                self.call_later(self._relayout_and_refresh)
            else:
                self._relayout_and_refresh()
        return row

    def _relayout_and_refresh(self) -> None:
        self._relayout()
        self.refresh()

    def _build_some(self, budget: float) -> None:
        """Build rows placed by name, for at most ``budget`` seconds."""
        deadline = time.perf_counter() + budget
        unbuilt, store = self._unbuilt, self.store
        while unbuilt:
            for vm_id in list(itertools.islice(unbuilt, 64)):
                vm = store.vm(vm_id)
                if vm is None:
                    del unbuilt[vm_id]
                else:
                    self._build(vm_id, vm)
                    self._built_unfrozen += 1
            if time.perf_counter() >= deadline:
                break
        if not unbuilt:
            self._freeze_rows()

    def _freeze_rows(self) -> None:
        """Every row placed by name is built: if that was many rows, they leave the cyclic
        garbage collector's generations (``gc.freeze``), as the console does with the
        inventory (core/console.py ``_apply_inventory``).

        The rows and what they hold are long-lived, acyclic objects the collector tracks
        (about 2.8 a VM: 55,700 at 20,000 VMs, whose full collection took 25-30 ms of
        CPU, against 370 objects and 0.1 ms frozen); every full collection walked all of
        them and freed none: at 45,000 VMs a 50-100 ms pause in the middle of a frame, a
        few times over a filter typed key by key (what the p99 of a typed key was).
        Frozen objects are still freed by reference counting when a row is replaced;
        young cycles are collected first, so no garbage is frozen with them.
        """
        if self._built_unfrozen < BULK_ROWS:
            return
        self._built_unfrozen = 0
        gc.collect(1)
        gc.freeze()

    def _build_in_background(self) -> None:
        """A slice of the rows placed by name; while some are left, the next one runs a
        slice's time later (keys and frames get the other half of the loop), not at the
        next flush (10,000 rows took seconds at 8 slices a second)."""
        self._build_queued = False
        if self._held or self._dirty or not self._unbuilt or not self.is_attached:
            return  # held or dirty: the next flush carries on
        self._build_some(BUILD_SLICE_S)
        if self._unbuilt and not self._build_queued:
            self._build_queued = True
            asyncio.get_running_loop().call_later(BUILD_SLICE_S, self._build_in_background)

    def _build_all(self) -> None:
        """Every row built (a sort by another column or a filter reads them all)."""
        if self._dirty:
            self._apply_dirty(self._monotonic())
        self._build_some(float("inf"))

    def _store_rows(self, updates: list[tuple[Row | None, Row | None]]) -> None:
        for old, new in updates:
            if new is None:
                self._drop_row(old)  # type: ignore[arg-type]
            else:
                self._put_row(new, old)
                self._strips.discard(new.vm_id)
        if self._grow_widths(new.cells for _, new in updates if new is not None):
            self._relayout()
            self.refresh()

    def _moves(self, old: Row | None, new: Row | None) -> bool:
        """Does this change add, remove, move (sort) or show/hide (filter) the row?"""
        if old is None or new is None:
            return True
        column = self._sort_column
        if old.sort[column] != new.sort[column] or old.sort[0] != new.sort[0]:
            return True
        flt = self._filter
        return flt is not None and flt(old, self._now) != flt(new, self._now)

    def _reposition(
        self,
        updates: list[tuple[Row | None, Row | None]],
        moving: list[tuple[Row | None, Row | None]],
        changed: set[str],
    ) -> None:
        """Move a few rows in place: out at their old key, in at the new one (bisect)."""
        before = self._window()
        self._forget_texts()
        filtered = self._visible is not self._order
        for old, _ in moving:
            if old is not None:
                _remove(self._order, old.vm_id, self._keys)
                if filtered:
                    _remove(self._visible, old.vm_id, self._keys)
        self._store_rows(updates)
        keys, flt = self._keys, self._filter
        for _, new in moving:
            if new is not None:
                insort(self._order, new.vm_id, key=keys.__getitem__)
                if filtered and flt is not None and flt(new, self._now):
                    insort(self._visible, new.vm_id, key=keys.__getitem__)
        self._settle(before, follow=True, changed=changed)

    def _index(self, vm_id: str, node_id: str, lun_id: str, old: Row | None) -> None:
        if old is not None and old.node_id != node_id:
            self._by_node.get(old.node_id, set()).discard(vm_id)
        if old is not None and old.lun_id != lun_id:
            self._by_lun.get(old.lun_id, set()).discard(vm_id)
        self._by_node.setdefault(node_id, set()).add(vm_id)
        self._by_lun.setdefault(lun_id, set()).add(vm_id)

    def _put_row(self, row: Row, old: Row | None = None) -> None:
        vm_id = row.vm_id
        self._index(vm_id, row.node_id, row.lun_id, old)
        self._unbuilt.pop(vm_id, None)
        self._rows[vm_id] = row
        self._keys[vm_id] = sort_key(row, self._sort_column, self._sort_reverse)

    def _drop_row(self, row: Row) -> None:
        self._forget(row.vm_id)

    def _forget(self, vm_id: str) -> None:
        """A VM leaves the table (whether its row was built or not)."""
        row = self._rows.pop(vm_id, None)
        self._keys.pop(vm_id, None)
        self._unbuilt.pop(vm_id, None)
        if row is not None:
            self._by_node.get(row.node_id, set()).discard(vm_id)
            self._by_lun.get(row.lun_id, set()).discard(vm_id)
        else:  # placed by name only: its node and LUN are not kept (rare: removed unseen)
            for members in (*self._by_node.values(), *self._by_lun.values()):
                members.discard(vm_id)
        self._lit.pop(vm_id, None)
        self._strips.discard(vm_id)

    def _rekey(self) -> None:
        column, reverse = self._sort_column, self._sort_reverse
        store, rows, unbuilt = self.store, self._rows, self._unbuilt
        if not unbuilt and not reverse:  # sort_key, inlined: this runs once per row
            self._keys = {v: (row.sort[column], row.sort[0], v) for v, row in rows.items()}
            return
        keys: dict[str, SortKey] = {}
        for vm_id in self._keys:
            if vm_id in unbuilt:  # only while sorted by name (_build_all otherwise)
                keys[vm_id] = self._name_key(store.vm(vm_id))  # type: ignore[arg-type]
            else:
                keys[vm_id] = sort_key(rows[vm_id], column, reverse)
        self._keys = keys

    def _resort(self, previous: tuple[int, bool]) -> None:
        """A new sort with every row built (``previous``: the sort before it).

        The keys are made when first read (``_LazyKeys``: bisect reads a few dozen;
        building 45,000 tuples took longer than the sort), and the order comes from
        stable sorts of plain values: by name (with ties by id, only if two names are
        the same; no sort at all when the table was sorted by name), then by the
        column's value — the order the ``(value, name, id)`` keys give.
        """
        before = self._window()
        rows = self._rows
        column, reverse = self._sort_column, self._sort_reverse
        self._keys = _LazyKeys(rows, lambda vm_id: sort_key(self._rows[vm_id], column, reverse))
        by_name = self._order if previous == (0, False) else self._name_order()
        if column == 0 and not reverse:
            order = list(by_name)  # a copy: _order changes in place
        else:  # stable, also reversed: ties keep their order by name
            order = sorted(by_name, key=rows.column(column).__getitem__, reverse=reverse)
        self._order = order
        self._visible = order if self._filter is None else self._matching(order)
        self._settle(before, follow=True, changed=None)

    def _name_order(self) -> list[str]:
        """Every row by name, then id (kept until a row comes, goes or is renamed)."""
        rows = self._rows
        if rows.name_order is None:
            name_of = rows.column(0)
            if len(set(name_of.values())) == len(name_of):
                rows.name_order = sorted(rows, key=name_of.__getitem__)
            else:  # same names: by id
                rows.name_order = sorted(sorted(rows), key=name_of.__getitem__)
        return rows.name_order

    def _refilter(self, narrow: bool) -> None:
        """A new filter, the same order: match again, only among the rows the previous
        filter left when the new one ``narrow``s it (``vm_rows.narrows``)."""
        if self._staged:  # keyed, not in the order yet: a full reorder places them
            self._reorder(follow=True)
            return
        before = self._window()
        flt = self._filter
        if flt is None:
            self._visible = self._order
        else:
            self._visible = self._matching(self._visible if narrow else self._order)
        self._settle(before, follow=True, changed=None)

    def _matching(self, ids: list[str]) -> list[str]:
        """The ``ids`` (``_order`` or ``_visible``) the filter matches, in their order.

        Plain words are searched in the rows' search texts kept aligned with ``ids``
        (``_texts_of``): one pass in C per word, no row read; what is left keeps its
        texts, so the next key typed (which narrows) starts from them.
        """
        needles = plain_needles(self._filter)
        if needles is None:
            return matching(ids, self._rows, self._filter, self._now)
        shown, texts = match_texts(ids, self._texts_of(ids), needles)
        self._keep_texts(shown, texts)
        return shown

    def _texts_of(self, ids: list[str]) -> list[str]:
        """Each row's ``Row.search`` in the order of ``ids``, kept while neither that list
        (the same object, not edited in place: ``_forget_texts``) nor any row changed."""
        version = self._rows.version
        for kept, at, texts in self._texts:
            if kept is ids and at == version:
                return texts
        rows = self._rows
        texts = [rows[vm_id].search for vm_id in ids]
        self._keep_texts(ids, texts)
        return texts

    def _keep_texts(self, ids: list[str], texts: list[str]) -> None:
        # _order's and the last filter result's: what the next key matches against.
        keep = [entry for entry in self._texts if entry[0] is self._order and entry[0] is not ids]
        keep.append((ids, self._rows.version, texts))
        self._texts = keep

    def _forget_texts(self) -> None:
        """``_order`` or ``_visible`` edited in place: the kept texts no longer line up."""
        self._texts = []

    def _reorder(self, *, follow: bool, changed: Collection[str] | None = None) -> None:
        """Sort and filter every row again (new sort, new filter, big batches)."""
        before = self._window()
        self._staged.clear()  # every key is ordered below
        keys = self._keys
        order = [vm_id for vm_id in self._order if vm_id in keys]  # mostly sorted already:
        if len(order) != len(keys):  # a merge of runs, not a sort from scratch
            known = set(order)
            order += [vm_id for vm_id in keys if vm_id not in known]
        order.sort(key=keys.__getitem__)
        self._order = order
        self._visible = order if self._filter is None else self._matching(order)
        self._settle(before, follow=follow, changed=changed)

    def _post_counts(self) -> None:
        counts = (len(self._visible), len(self._keys))
        if counts != self._counts:
            self._counts = counts
            self.post_message(self.CountChanged(self, *counts))

    def _window(self) -> tuple[int, list[str]]:
        top = self.scroll_offset.y
        return top, self._visible[top : top + self._page_rows()]

    def _settle(
        self, before: tuple[int, list[str]], *, follow: bool, changed: Collection[str] | None
    ) -> None:
        """After the order changed: keep the cursor on its VM, repaint what moved.

        With ``changed`` (a live update) only the lines whose VM moved or
        changed are repainted; without it (new sort or filter) all of them.
        """
        self._restore_cursor(follow)
        self._post_counts()
        top, lines = before
        if changed is None or self.scroll_offset.y != top:
            self.refresh()
            return
        after = self._window()[1]
        for line, (old, new) in enumerate(zip_longest(lines, after), start=top + 1):
            if old != new or new in changed:
                self.refresh_line(line)

    def _restore_cursor(self, follow: bool) -> None:
        previous_id, previous_row = self._cursor_id, self._cursor_row
        top = self.scroll_offset.y
        on_screen = top <= previous_row < top + self._page_rows()
        row = self.row_of(previous_id) if previous_id is not None else None
        if row is None:
            row = min(previous_row, len(self._visible) - 1)
        self._cursor_row = max(row, 0)
        self._cursor_id = self._visible[self._cursor_row] if self._visible else None
        self._update_virtual_size()
        if follow and on_screen:  # the cursor stays on the line the eye is on
            self.scroll_to(y=self._cursor_row - (previous_row - top), animate=False)
        if self._cursor_id != previous_id:
            self.post_message(self.CursorMoved(self, self._cursor_id))

    # -- highlights ------------------------------------------------------------------------
    def _mark_changed(self, old: Row, new: Row, now: float) -> None:
        until = now + self._highlight_seconds
        lit: dict[int, float] | None = None
        for index in range(len(COLUMNS)):
            if index == OLDEST:  # the text ticks with time: flash only a new oldest
                differs = old.oldest != new.oldest
            elif index == TASK:  # progress ticks all the time: flash a new task or state
                differs = _PERCENT.sub("%", old.cells[index]) != _PERCENT.sub("%", new.cells[index])
            else:
                differs = old.cells[index] != new.cells[index]
            if differs:
                if lit is None:
                    lit = self._lit.setdefault(new.vm_id, {})
                lit[index] = until
        if lit is not None:
            self._lit_queue.append((until, new.vm_id))

    def _expire_highlights(self, now: float) -> set[str]:
        expired: set[str] = set()
        queue = self._lit_queue
        while queue and queue[0][0] <= now:
            _, vm_id = queue.popleft()
            lit = self._lit.get(vm_id)
            if not lit:
                continue
            for index in [i for i, until in lit.items() if until <= now]:
                del lit[index]
                expired.add(vm_id)
            if not lit:
                del self._lit[vm_id]
        return expired

    # -- geometry --------------------------------------------------------------------------
    def _grow_widths(self, rows: Iterable[tuple[str, ...]],
                     columns: tuple[int, ...] | None = None) -> bool:
        """Widen text columns to fit rows' cells (never narrower; capped per column).

        ``columns``: which column each cell is (``vm_rows.WIDE`` for ``wide_cells``);
        None: the cells are a whole row's.
        """
        widths = self._widths
        grew = False
        rows = list(rows)
        for index in WIDE:
            cap = COLUMNS[index].max_width
            if widths[index] >= cap or not rows:
                continue
            cell = index if columns is None else columns.index(index)
            size = min(cap, max(cell_len(cells[cell]) for cells in rows))
            if size > widths[index]:
                widths[index] = size
                grew = True
        return grew

    def _grow_to(self, sizes: tuple[int, ...]) -> bool:
        """Widen the ``WIDE`` columns to ``sizes`` cells (never narrower; capped)."""
        widths = self._widths
        grew = False
        for index, size in zip(WIDE, sizes, strict=True):
            size = min(COLUMNS[index].max_width, size)
            if size > widths[index]:
                widths[index] = size
                grew = True
        return grew

    def _relayout(self) -> None:
        offsets = []
        x = 0
        for width in self._widths:
            offsets.append(x)
            x += _GAP + width
        self._offsets = offsets
        self._table_width = x
        self._layout_gen += 1
        self._strips.clear()
        self._update_virtual_size()

    def _update_virtual_size(self) -> None:
        size = Size(self._table_width, len(self._visible) + 1)
        if self.virtual_size != size:
            self.virtual_size = size

    def _page_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    # -- cursor ----------------------------------------------------------------------------
    def _move_cursor(self, row: int) -> None:
        if not self._visible:
            return
        row = max(0, min(row, len(self._visible) - 1))
        previous_id, previous_row = self._cursor_id, self._cursor_row
        self._cursor_row = row
        self._cursor_id = self._visible[row]
        self._scroll_cursor_into_view()
        if previous_row != row:
            self.refresh_line(previous_row + 1)
            self.refresh_line(row + 1)
        if previous_id != self._cursor_id:
            self.post_message(self.CursorMoved(self, self._cursor_id))

    def _scroll_cursor_into_view(self) -> None:
        page = self._page_rows()
        top = self.scroll_offset.y
        row = self._cursor_row
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + page:
            self.scroll_to(y=row - page + 1, animate=False)

    def _refresh_row(self, vm_id: str) -> None:
        row = self.row_of(vm_id)
        if row is None:
            return
        top = self.scroll_offset.y
        if top <= row < top + self._page_rows():
            self.refresh_line(row + 1)

    # -- rendering -------------------------------------------------------------------------
    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None
        self._strips.clear()

    def render_lines(self, crop: Region) -> list[Strip]:
        self._current_styles()
        return super().render_lines(crop)

    def _current_styles(self) -> _Styles:
        get = self.get_component_rich_style
        styles = _Styles(
            base=self.rich_style,
            header=get("vm-table--header"),
            cursor=get("vm-table--cursor"),
            stale=self._overlay("vm-table--stale"),
            changed=self._overlay("vm-table--changed"),
            critical=self._overlay("vm-table--critical"),
            warning=self._overlay("vm-table--warning"),
        )
        if styles != self._styles:
            self._styles = styles
            self._strips.clear()
        return styles

    def _overlay(self, component: str) -> Style:
        """Only what a component sets, with colours blended as the full style has them."""
        partial = self.get_component_rich_style(component, partial=True)
        if partial.color is None and partial.bgcolor is None:
            return partial
        full = self.get_component_rich_style(component)
        return partial + Style(
            color=full.color if partial.color else None,
            bgcolor=full.bgcolor if partial.bgcolor else None,
        )

    def render_line(self, y: int) -> Strip:
        styles = self._styles or self._current_styles()
        width = self.size.width
        if y == 0:
            return self._header_line(styles, width)
        row = y - 1 + self.scroll_offset.y
        if row >= len(self._visible):
            return Strip.blank(width, styles.base)
        vm_id = self._visible[row]
        is_cursor = row == self._cursor_row
        stale = self.row_stale(vm_id)
        strip = self._row_strip(vm_id, is_cursor, styles, stale)
        fill = self._row_style(is_cursor, styles, stale)
        return self._crop(strip, width, fill)

    def _row_style(self, is_cursor: bool, styles: _Styles, stale: bool) -> Style:
        style = styles.cursor if is_cursor else styles.base
        return style + styles.stale if stale else style

    def _row_strip(self, vm_id: str, is_cursor: bool, styles: _Styles, stale: bool) -> Strip:
        lit = self._lit.get(vm_id)
        lit_mask = sum(1 << i for i in lit) if lit else 0
        key = (self._layout_gen, is_cursor, stale, lit_mask, self._age_epoch)
        cached = self._strips.get(vm_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        strip = self._build_strip(self._row(vm_id), is_cursor, lit_mask, styles, stale)
        self._strips.set(vm_id, (key, strip))
        self.rows_rendered += 1
        return strip

    def _build_strip(self, row: Row, is_cursor: bool, lit_mask: int, styles: _Styles,
                     stale: bool) -> Strip:
        base = self._row_style(is_cursor, styles, stale)
        gap = Segment(" " * _GAP, base)
        segments: list[Segment] = []
        now = self._now
        for index, column in enumerate(COLUMNS):
            style = base
            level = row.levels[index]
            if level != NORMAL:
                style += styles.critical if level == CRITICAL else styles.warning
            if lit_mask >> index & 1:
                style += styles.changed
            text = fit(row.cell(index, now), self._widths[index], column.numeric,
                       middle=column.key == "name")  # its end tells similar VMs apart
            segments.append(gap)
            segments.append(Segment(text, style))
        return Strip(segments, self._table_width)

    def _header_line(self, styles: _Styles, width: int) -> Strip:
        style = styles.header + styles.stale if self.stale else styles.header
        segments: list[Segment] = []
        for index, column in enumerate(COLUMNS):
            label = column.label
            if index == self._sort_column:
                label += " ▼" if self._sort_reverse else " ▲"
            segments.append(Segment(" " * _GAP, style))
            segments.append(Segment(self._fit_label(label, index, column.numeric), style))
        strip = self._crop(Strip(segments, self._table_width), width, style)
        # The stamp ends where the vertical scrollbar starts, so all of it is seen.
        seen = min(width, self.scrollable_content_region.width or width)
        if self.stale:
            strip = self._stamp_stale(strip, seen, styles, " STALE ")
        elif self.stale_nodes:  # which nodes' (targets') rows are dimmed
            nodes = ", ".join(self.stale_nodes)
            strip = self._stamp_stale(strip, seen, styles, f" STALE: {nodes} ")
        else:
            return strip
        return strip.crop_extend(0, width, style)

    def _fit_label(self, label: str, index: int, right: bool) -> str:
        width = self._widths[index]
        if len(label) > width and label[-1] in "▲▼":
            label = label[: width - 1] + label[-1]
        return fit(label, width, right)

    def _stamp_stale(self, strip: Strip, width: int, styles: _Styles, stamp: str) -> Strip:
        if len(stamp) > max(7, width // 2):  # never more than half the header
            stamp = stamp[: max(7, width // 2) - 2] + "… "
        stamp_style = styles.header + styles.critical
        if width <= len(stamp):
            return Strip([Segment(stamp[:width], stamp_style)], width)
        return Strip.join([strip.crop(0, width - len(stamp)), Strip([Segment(stamp, stamp_style)])])

    def _crop(self, strip: Strip, width: int, fill: Style) -> Strip:
        """The visible part of a table line: Name stays put, the rest scrolls sideways."""
        scroll_x = self.scroll_offset.x
        if scroll_x == 0:
            return strip.crop_extend(0, width, fill)
        fixed = self._offsets[1]
        moving = strip.crop(fixed + scroll_x, fixed + scroll_x + max(0, width - fixed))
        return Strip.join([strip.crop(0, fixed), moving]).crop_extend(0, width, fill)
