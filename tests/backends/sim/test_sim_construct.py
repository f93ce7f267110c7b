"""The simulator's fast entity constructors (backends/sim/construct.py) and the pinned
world they build: speed work on the simulator must leave its world exactly as it was
(tests, recordings and snapshot SVGs depend on its names, ids and figures)."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime

import pytest

from ventana.backends.sim import SimBackend, SimConfig
from ventana.backends.sim.construct import constructor
from ventana.state.events import Upsert
from ventana.state.model import (
    ENTITY_TYPES,
    VM,
    Checkpoint,
    CheckpointKind,
    DiskFormat,
    Kind,
    PowerState,
    VirtualDisk,
)

EPOCH = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)


def _values(cls: type) -> dict[str, object]:
    """A distinct, non-default value for every field of ``cls``."""
    out: dict[str, object] = {}
    for i, f in enumerate(dataclasses.fields(cls)):
        default = f.default
        if isinstance(default, bool) or f.type in ("bool", "bool | None"):
            out[f.name] = True
        elif isinstance(default, int | float) and not isinstance(default, bool):
            out[f.name] = default + i + 1
        elif isinstance(default, tuple):
            out[f.name] = (f"t{i}",)
        elif hasattr(default, "__members__") or type(default).__mro__[1:2] == (str,):
            out[f.name] = list(type(default))[-1]  # an enum: its last member
        else:
            out[f.name] = f"v{i}"
    return out


@pytest.mark.parametrize("cls", [*ENTITY_TYPES.values(), Upsert], ids=lambda c: c.__name__)
def test_a_fast_constructor_makes_the_value_the_class_makes(cls: type) -> None:
    new = constructor(cls)
    values = _values(cls)
    made, expected = new(**values), cls(**values)
    assert type(made) is cls
    assert made == expected and hash(made) == hash(expected)
    assert new(*values.values()) == expected  # positionally too
    required = {f.name: values[f.name] for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING}
    assert new(**required) == cls(**required)  # the defaults are the class's own
    first = dataclasses.fields(cls)[0].name
    for value in (made, expected):  # still frozen (as the class's own value refuses it)
        with pytest.raises((dataclasses.FrozenInstanceError, TypeError)):
            setattr(value, first, "x")
    assert getattr(made, first) == values[first]
    with pytest.raises(TypeError):
        new()  # the same required parameters


def test_the_constructors_of_the_model_match_by_hand() -> None:
    when = datetime(2024, 1, 2, tzinfo=UTC)
    disk = constructor(VirtualDisk)("d", "v", "C:\\x.vhdx", DiskFormat.VHDX, 1, 2)
    assert disk == VirtualDisk("d", "v", "C:\\x.vhdx", DiskFormat.VHDX, 1, 2, None, "")
    cp = constructor(Checkpoint)("c", "v", "n", None, CheckpointKind.BACKUP, when)
    assert cp == Checkpoint("c", "v", "n", None, CheckpointKind.BACKUP, when, "", 0)
    vm = constructor(VM)(id="v", name="n", cluster_id="c", node_id="h", vcpus=4)
    assert vm == VM("v", "n", "c", "h", vcpus=4) and vm.power is PowerState.UNKNOWN


def test_classes_it_would_change_are_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True, slots=True)
    class NoInit:
        a: int = dataclasses.field(default=1, init=False)

    for cls in (NoSlots, NotFrozen, PostInit, Factory, NoInit):
        with pytest.raises(TypeError):
            constructor(cls)


# The simulated world's figures, pinned: a digest of the fields each entity had when
# this was written (a field added to the model later does not move it).
_FIELDS = {
    Kind.CLUSTER: ("id", "name", "platform", "nodes"),
    Kind.NODE: ("id", "name", "cluster_id", "state", "csv_owned", "backup_agent_version",
                "backup_agent_state", "vm_count", "backup_ports_closed",
                "default_config_version"),
    Kind.LUN: ("id", "name", "cluster_id", "total_bytes", "free_bytes", "owner_node_id",
               "role", "state"),
    Kind.VM: ("id", "name", "cluster_id", "node_id", "power", "generation", "config_version",
              "vcpus", "memory_mb", "replication", "replication_health", "replica_target",
              "integration", "disk_ids", "lun_id", "vss_capable", "dynamic_disks",
              "storage_paths"),
    Kind.DISK: ("id", "vm_id", "path", "format", "size_bytes", "max_bytes", "parent_path",
                "lun_id"),
    Kind.CHECKPOINT: ("id", "vm_id", "name", "parent_id", "kind", "created", "disk_path",
                      "size_bytes"),
}


def world_digest(config: SimConfig) -> str:
    world = SimBackend(config).world
    digest = hashlib.sha256()
    for entity in world.snapshot():
        values = tuple(getattr(entity, name) for name in _FIELDS[entity.KIND])
        digest.update(repr((entity.KIND.value, values)).encode())
    for table in (world.chains, world.files, world.saved_bytes, world.orphaned_bytes):
        digest.update(repr(sorted(table.items())).encode())
    digest.update(repr(sorted((k, dataclasses.astuple(p)) for k, p in world.profiles.items()))
                  .encode())
    digest.update(repr(sorted(world.broken_chains)).encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize(("config", "digest"), [
    (SimConfig(epoch=EPOCH), "7a32510bea1172ff"),
    (SimConfig(seed=3, vms=2_000, nodes=2, hostile_names=True, epoch=EPOCH), "82161aaf9db8ecf0"),
    (SimConfig(seed=5, vms=300, nodes=64, epoch=EPOCH), "c51e041ee131c128"),
], ids=["lab-74", "2000-hostile", "64-nodes"])
def test_the_simulated_world_is_the_one_pinned(config: SimConfig, digest: str) -> None:
    assert world_digest(config) == digest
