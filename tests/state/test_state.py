"""The model, the store, derived facts, the codec and the sanitizer."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from factories import NOW, small_cluster

from ventana.state import codec
from ventana.state.derived import (
    PAUSE_CRITICAL_MARGIN,
    chain_depth,
    differencing_bytes,
    human_age,
    human_bytes,
    lun_level,
    merge_space,
    oldest_checkpoint_age,
    pct_free,
)
from ventana.state.events import (
    ConnectionChanged,
    FindingRaised,
    LinkState,
    Remove,
    TaskProgress,
    Upsert,
)
from ventana.state.model import (
    GB,
    VM,
    Checkpoint,
    CheckpointKind,
    Finding,
    Kind,
    Severity,
    Task,
    TaskState,
)
from ventana.state.sanitize import clean, is_clean
from ventana.state.store import Store, ref


def test_store_indexes_and_notifies_only_changes() -> None:
    store = small_cluster()
    seen = []
    store.subscribe(seen.append)
    vm = store.vm("a")
    assert vm is not None
    assert len(store.checkpoints_of("a")) == 3
    assert len(store.disks_of("a")) == 1
    # Same value again: no change, no notification.
    assert not store.apply(Upsert(vm))
    assert seen == []
    store.apply(Upsert(dataclasses.replace(vm, vcpus=8)))
    assert len(seen) == 1
    (change,) = seen[0].changes
    assert change.old.vcpus == 1 and change.new.vcpus == 8
    store.apply(Remove(Kind.CHECKPOINT, "a-cp2"))
    assert [c.id for c in store.checkpoints_of("a")] and "a-cp2" not in {
        c.id for c in store.checkpoints_of("a")
    }
    assert not store.apply(Remove(Kind.CHECKPOINT, "missing"))


def test_task_progress_and_running_index() -> None:
    store = small_cluster()
    target = ref(Kind.VM, "a")
    store.apply(Upsert(Task("t1", "merge", target, "app-01")))
    store.apply(TaskProgress("t1", 140.0, "merging"))
    task = store.task("t1")
    assert task.pct == 100.0 and task.state is TaskState.RUNNING and task.message == "merging"
    assert store.running_tasks_for(target) == [task]
    store.apply(TaskProgress("t1", 100.0, "", TaskState.OK))
    assert store.running_tasks_for(target) == []
    # Progress for an unknown task is ignored, not a crash.
    assert not store.apply(TaskProgress("nope", 5.0))


def test_link_state_is_worst_of_sources() -> None:
    store = Store()
    assert store.link_state() is LinkState.CONNECTING
    store.apply(ConnectionChanged("a", LinkState.CONNECTED))
    store.apply(ConnectionChanged("b", LinkState.STALE, "node HV-NODE-02 not answering"))
    assert store.link_state() is LinkState.STALE and store.stale
    assert "HV-NODE-02" in store.link_reason()
    delta = store.apply(ConnectionChanged("b", LinkState.CONNECTED))
    assert delta.links_changed and not store.stale


def test_store_sanitizes_every_text_field() -> None:
    store = Store()
    evil = "[bold red]x\x1b[2J\x1b]52;c;aGk=\x07\u202egnp.exe\x9b"
    store.apply(Upsert(VM("v", evil, "c", "n", disk_ids=("d\x1b",))))
    store.apply(FindingRaised(Finding("f", Severity.WARNING, "vm:v", "X", "bad\x1b[31m")))
    vm = store.vm("v")
    assert is_clean(vm.name) and "\x1b" not in vm.name and "[bold red]" in vm.name
    assert vm.disk_ids == ("d\\x1b",)
    assert "\\x1b" in store.get(Kind.FINDING, "f").message
    assert "\\u202e" in vm.name and "\\x9b" in vm.name


def test_optional_lists_of_names_are_sanitized_too() -> None:
    """vSphere's disk, bus and device labels (``tuple[str, ...] | None``) are cluster
    text like any name: escaped in the store; None (not reported) stays None."""
    store = Store()
    store.apply_many([
        Upsert(VM("v1", "ok", "c", "n", independent_disks=("Hard disk 1\x1b[2J",),
                  physical_rdms=("rdm\u202e",), passthrough_disks=None)),
        Upsert(VM("v2", "ok", "c", "n", shared_buses=(), passthrough_devices=None)),
    ])
    v1, v2 = store.vm("v1"), store.vm("v2")
    assert v1.independent_disks == ("Hard disk 1\\x1b[2J",)
    assert v1.physical_rdms == ("rdm\\u202e",) and v1.passthrough_disks is None
    assert v2.shared_buses == () and v2.passthrough_devices is None


def test_one_hostile_field_is_found_wherever_it_is() -> None:
    """The whole-entity fast check sees a control character in any one text field: the
    last str field, a tuple of str, or a None/empty field next to it."""
    store = Store()
    store.apply_many([
        Upsert(VM("v1", "ok", "c", "n", disk_ids=("d1", "d\x9b2"))),
        Upsert(VM("v2", "ok", "c", "n", lun_id="", config_version="9.0\u202e")),
        Upsert(VM("v3", "ok", "c\x1b", "n", disk_ids=())),
    ])
    assert store.vm("v1").disk_ids == ("d1", "d\\x9b2")
    assert store.vm("v2").config_version == "9.0\\u202e"
    assert store.vm("v3").cluster_id == "c\\x1b"
    clean_vm = VM("v4", "plain", "c", "n", disk_ids=("d",))
    store.apply(Upsert(clean_vm))
    assert store.vm("v4") is clean_vm  # nothing to clean: the entity itself is kept


def test_clean_keeps_plain_text_and_escapes_layout_breakers() -> None:
    assert clean("b [x] é 日本") == "b [x] é 日本"
    assert clean("a\nb\rc\td") == "a\\x0ab\\x0dc\\x09d"
    # Look-alike names: zero-width and line separators are made visible.
    assert clean("db\u200b-01\u2028\ufeff") == "db\\u200b-01\\u2028\\ufeff"


def test_store_tolerates_a_non_string_in_a_text_field() -> None:
    store = Store()
    store.apply(Upsert(VM("v", 12345, "c", "n")))  # type: ignore[arg-type]
    assert store.vm("v").name == "12345"


def test_derived_facts() -> None:
    store = small_cluster()
    cps = store.checkpoints_of("a")
    assert chain_depth(cps) == 3
    assert chain_depth([]) == 0
    assert oldest_checkpoint_age(cps, NOW) == timedelta(days=900)
    assert oldest_checkpoint_age([], NOW) is None
    assert differencing_bytes(cps) == 60 * GB
    space = merge_space(store, "a")
    assert space.chain_bytes == 60 * GB
    assert space.parent_headroom == 100 * GB
    assert space.needed == 60 * GB  # bounded by the chain here
    assert space.freed_best == 60 * GB and space.freed_worst == 0
    lun = store.lun("l1")
    assert pct_free(lun) == pytest.approx(25.0)
    assert lun_level(lun) is Severity.INFO
    assert lun_level(store.lun("l2")) is Severity.CRITICAL


def test_merge_space_bounded_by_parent_headroom() -> None:
    store = small_cluster()
    disk = store.disks_of("a")[0]
    store.apply(Upsert(dataclasses.replace(disk, size_bytes=180 * GB)))
    space = merge_space(store, "a")
    assert space.needed == 20 * GB and space.freed_worst == 40 * GB


def test_chain_depth_survives_cycles_and_branches() -> None:
    def cp(i: str, parent: str | None) -> Checkpoint:
        return Checkpoint(i, "v", i, parent, CheckpointKind.STANDARD, NOW)

    assert chain_depth([cp("a", None), cp("b", "a"), cp("c", "a"), cp("d", "c")]) == 3
    # A corrupt tree (cycle) from a broken source must not hang.
    assert chain_depth([cp("x", "y"), cp("y", "x")]) == 2


def test_lun_thresholds() -> None:
    store = small_cluster(free_gb=150)  # 7.5 %
    assert lun_level(store.lun("l1")) is Severity.WARNING
    store = small_cluster(free_gb=60)  # 3 %
    assert lun_level(store.lun("l1")) is Severity.CRITICAL
    assert PAUSE_CRITICAL_MARGIN == 200 * 1024**2


def test_human_formats() -> None:
    assert human_bytes(26 * 1024**2) == "26.0 MB"
    assert human_bytes(2367 * GB) == "2.3 TB"
    assert human_age(timedelta(days=900)) == "2y170d"
    assert human_age(timedelta(hours=5)) == "5h"
    assert human_age(None) == "-"


def test_codec_round_trips_every_event() -> None:
    store = small_cluster()
    events = [Upsert(e) for kind in Kind for e in store.all(kind)]
    events += [
        Upsert(Task("t", "merge", "vm:a", "app-01", 12.5, TaskState.RUNNING, NOW)),
        Remove(Kind.VM, "b"),
        TaskProgress("t", 50.0, "half", TaskState.RUNNING),
        FindingRaised(Finding("f", Severity.BLOCKING, "vm:a", "NO_SPACE", "full")),
        ConnectionChanged("sim", LinkState.STALE, "timeout"),
    ]
    for event in events:
        assert codec.event_from_dict(codec.event_to_dict(event)) == event


@pytest.mark.parametrize(
    "bad",
    [
        {"ev": "upsert", "kind": "vm", "data": {"id": "x"}},
        {"ev": "upsert", "kind": "spaceship", "data": {}},
        {"ev": "upsert", "kind": "vm", "data": {"id": 1, "name": "n", "cluster_id": "c",
                                                "node_id": "n"}},
        {"ev": "upsert", "kind": "vm", "data": {"id": "1", "name": "n", "cluster_id": "c",
                                                "node_id": "n", "power": "exploded"}},
        {"ev": "progress", "task": "t"},
        {"ev": "teleport"},
        ["not", "a", "dict"],
        {"ev": "upsert", "kind": "checkpoint", "data": {
            "id": "c", "vm_id": "v", "name": "n", "parent_id": None, "kind": "standard",
            "created": "2024-01-01T00:00:00"}},  # no timezone
        {"ev": "upsert", "kind": "task", "data": {"id": "t", "kind": "merge", "target": "vm:a",
                                                  "pct": "abc"}},
    ],
)
def test_codec_rejects_bad_input(bad: object) -> None:
    with pytest.raises(codec.CodecError):
        codec.event_from_dict(bad)  # type: ignore[arg-type]
