"""How each simulated VM is drawn, before it is placed anywhere.

Owns the per-VM recipe: the lab VMs with the campaign's disk sizes and merge
times (their chain depth follows the recorded merge time), the other 58 of
the 74 with plausible roles and sizes, cheaper ``vm-NNNNN`` VMs for scale
runs, their checkpoint chains (years-old manual checkpoints, backup-created
ones left behind), generation, configuration version, vCPU/RAM, power state
and which few replicate. Everything is drawn from the seeded generator
passed in.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from ventana.state.model import GB, MB, CheckpointKind, Health, PowerState

from . import lab
from .config import SimConfig
from .steps import STEP_ITEMS, Steps, finish

LAB_SHAPED_VMS = len(lab.LAB_VMS) + len(lab.OTHER_VM_NAMES)  # 74
HOSTILE_SLOTS = ("dev-01", "dev-02", "test-01", "web-03", "ci-01")
# Sizes (GB) disks get provisioned at; a dynamic VHDX is smaller than its size.
# fmt: off
_PROVISIONED_GB = (
    1, 2, 4, 8, 16, 20, 30, 40, 60, 80, 100, 127, 150, 200, 250, 300, 400, 500, 600,
    750, 1024, 1536, 2048, 2560, 3072, 4096,
)
# fmt: on


def guid(rng: random.Random) -> str:
    """A GUID-shaped id from the seeded generator (uuid.UUID is 4x slower; ``bytes.hex`` is
    twice as fast as ``f"{bits:032x}"``, with the same digits)."""
    h = rng.getrandbits(128).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def gb(x: float) -> int:
    return round(x * GB)


@dataclass(slots=True)
class VmProfile:
    """Per-VM facts the model does not carry but the simulation needs."""

    growth: float  # share of a merged differencing disk that is new to its parent
    minutes_per_checkpoint: float  # merge time per checkpoint (the chain, not the size)
    lab: bool  # one of the VMs whose work the campaign recorded


@dataclass(slots=True)
class CheckpointSpec:
    name: str
    kind: CheckpointKind
    created: datetime
    sizes: list[int]  # bytes, one per base disk


@dataclass(slots=True)
class VmSpec:
    name: str
    base: list[int]  # bytes per base disk
    maxb: list[int]
    cps: list[CheckpointSpec]
    generation: int
    config_version: str
    vcpus: int
    memory_mb: int
    power: PowerState
    profile: VmProfile
    vhd: bool = False
    pinned: str = ""  # LUN id
    replica_target: str = ""
    replication_health: Health = Health.NOT_APPLICABLE
    lun_id: str = ""
    node_id: str = ""

    def saved(self) -> int:
        return self.memory_mb * MB if self.power is PowerState.SAVED else 0

    def total(self) -> int:
        return sum(self.base) + sum(sum(c.sizes) for c in self.cps) + self.saved()


def _provisioned(rng: random.Random, size: int, vhd: bool) -> int:
    want = size * rng.uniform(1.03, 1.45) / GB
    for p in _PROVISIONED_GB:
        if p >= want and not (vhd and p > 2040):
            return p * GB
    return max(size, int(want * GB))


def _role(rng: random.Random, name: str) -> tuple[int, int]:
    """(vCPU, RAM MB) for a VM's role, varied a little as real estates are."""
    cpus, mem = lab.DEFAULT_ROLE_SIZE
    for prefix, role_cpus, role_mem in lab.ROLE_SIZES:
        if name.startswith(prefix):
            cpus, mem = role_cpus, role_mem
            break
    r = rng.random()
    if r < 0.2 and mem >= 4096:
        mem //= 2
    elif r > 0.85 and mem <= 32768:
        mem = mem * 3 // 2 if r < 0.93 else mem * 2
        cpus = min(16, cpus * 2) if r > 0.97 else cpus
    return cpus, mem


def _versions(rng: random.Random, name: str) -> tuple[int, str]:
    if name == "tpl-w2016":
        return 2, "8.0"
    if name == "tpl-w2019":
        return 2, "9.0"
    r = rng.random()
    version = "5.0" if r < 0.18 else "8.0" if r < 0.6 else "9.0"
    if name.startswith(("lnx-", "fw-", "old-")):
        return 1, version
    gen1_odds = 0.7 if version == "5.0" else 0.22
    return (1 if rng.random() < gen1_odds else 2), version


def _stamp(t: datetime) -> str:
    return t.strftime("%d/%m/%Y - %H:%M:%S")


def _chain(
    rng: random.Random,
    name: str,
    epoch: datetime,
    depth: int,
    version: str,
    split: list[list[int]],
    leftover: list[int] | None,
) -> list[CheckpointSpec]:
    """``depth`` manual checkpoints (sizes per disk in ``split``), then maybe a
    checkpoint a backup job left behind (``leftover`` sizes)."""
    cps: list[CheckpointSpec] = []
    if depth:
        if depth >= 4:
            oldest, newest = rng.uniform(700, 2600), rng.uniform(15, 300)
        else:
            oldest = rng.uniform(3, 1100)
            newest = oldest * rng.uniform(0.05, 0.8)
        step = (oldest - newest) / (depth - 1) if depth > 1 else 0.0
        for k in range(depth):
            age_days = oldest - step * k - rng.uniform(0, step * 0.3)
            created = epoch - timedelta(days=age_days, seconds=rng.randrange(86400))
            if cps and created <= cps[-1].created:
                created = cps[-1].created + timedelta(hours=1)
            # Never in the future: the jitter above can overshoot the newest age.
            created = min(created, epoch - timedelta(minutes=30 * (depth - k)))
            if rng.random() < 0.45:
                cp_name = f"{name} - ({_stamp(created)})"
            else:
                cp_name = rng.choice(lab.MANUAL_CHECKPOINT_NAMES)
            standard = version == "5.0" or rng.random() < 0.3
            kind = CheckpointKind.STANDARD if standard else CheckpointKind.PRODUCTION
            cps.append(CheckpointSpec(cp_name, kind, created, split[k]))
    if leftover is not None:
        created = epoch - timedelta(days=rng.uniform(0.5, 45))
        if cps and created <= cps[-1].created:
            created = min(cps[-1].created + timedelta(hours=2), epoch - timedelta(minutes=10))
        pattern = rng.choice(lab.BACKUP_CHECKPOINT_NAMES)
        cps.append(
            CheckpointSpec(
                pattern.format(vm=name, stamp=_stamp(created)),
                CheckpointKind.BACKUP,
                created,
                leftover,
            )
        )
    return cps


def _weights(rng: random.Random, n: int) -> list[float]:
    w = [rng.expovariate(1.0) + 0.15 for _ in range(n)]
    s = sum(w)
    return [x / s for x in w]


def _lab_spec(rng: random.Random, item: lab.LabVm, epoch: datetime) -> VmSpec:
    minutes = item.merge_minutes
    if minutes == 0:
        depth = 0
    elif minutes is None:
        depth = rng.choice((1, 2))
    else:
        depth = max(1, min(12, round(minutes / 65)))
    base: list[int] = []
    chain: list[int] = []
    growth = rng.uniform(0.4, 0.9)
    for j, disk in enumerate(item.disks):
        before, after = disk.size_before_gb, disk.size_after_gb
        if depth == 0:
            b, c = before, 0.0
        elif after < before:
            b = after * rng.uniform(0.9, 0.98)
            c = before - b
            if j == 0:
                growth = (after - b) / c
        else:
            c = before * rng.uniform(0.06, 0.18) * (1.0 if j == 0 else 0.4)
            b = before - c
            if j == 0:
                growth = min(1.0, (after - b) / c)
        base.append(gb(b))
        chain.append(gb(c))
    split = []
    per_disk_w = [_weights(rng, depth) for _ in base]
    for k in range(depth):
        split.append([max(16 * MB, int(chain[j] * per_disk_w[j][k])) for j in range(len(base))])
    generation, version = _versions(rng, item.name)
    cps = _chain(rng, item.name, epoch, depth, version, split, None)
    cpus, mem = _role(rng, item.name)
    per_cp = (minutes / depth) if (minutes and depth) else rng.uniform(25, 65)
    return VmSpec(
        name=item.name,
        base=base,
        maxb=[_provisioned(rng, b, False) for b in base],
        cps=cps,
        generation=generation,
        config_version=version,
        vcpus=cpus,
        memory_mb=mem,
        power=PowerState.RUNNING,
        profile=VmProfile(max(0.0, min(1.0, growth)), per_cp, True),
    )


def _draw_depth(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.5:
        return 0
    if r < 0.76:
        return 1
    if r < 0.88:
        return 2
    return rng.randint(3, 12)


def _generated_spec(rng: random.Random, name: str, epoch: datetime) -> VmSpec:
    if name.startswith("fw-"):
        system = lab.APPLIANCE_DISK_GB
    else:
        system = rng.choice(lab.OTHER_SYSTEM_GB) * rng.uniform(0.97, 1.03)
    data = lab.DATA_DISKS_GB.get(name)
    if data is None:
        data = ()
        if rng.random() < 0.45:
            lo, hi = math.log(lab.DATA_DISK_GB_MIN), math.log(lab.DATA_DISK_GB_MAX)
            data = (math.exp(rng.uniform(lo, hi)),)
    base = [gb(system)] + [gb(d) for d in data]
    generation, version = _versions(rng, name)
    off = name.startswith(lab.OFF_PREFIXES)
    depth = lab.CHAIN_DEPTH.get(name, 0 if off else _draw_depth(rng))
    split = [
        [
            max(
                16 * MB, int(b * (rng.uniform(0.004, 0.05) if j == 0 else rng.uniform(0.001, 0.02)))
            )
            for j, b in enumerate(base)
        ]
        for _ in range(depth)
    ]
    leftover = None
    if name == "exch-02" or (not off and rng.random() < 0.07):
        leftover = [max(16 * MB, int(b * rng.uniform(0.001, 0.01))) for b in base]
    cps = _chain(rng, name, epoch, depth, version, split, leftover)
    vhd = generation == 1 and version == "5.0" and not cps and rng.random() < 0.5
    if name in lab.PAUSED_CRITICAL:
        power = PowerState.PAUSED_CRITICAL
    elif off:
        power = PowerState.OFF
    elif name in lab.SAVED:
        power = PowerState.SAVED
    else:
        r = rng.random()
        power = PowerState.OFF if r < 0.04 else PowerState.SAVED if r < 0.07 else PowerState.RUNNING
    cpus, mem = _role(rng, name)
    return VmSpec(
        name=name,
        base=base,
        maxb=[_provisioned(rng, b, vhd) for b in base],
        cps=cps,
        generation=generation,
        config_version=version,
        vcpus=cpus,
        memory_mb=mem,
        power=power,
        profile=VmProfile(rng.uniform(0.3, 0.95), rng.uniform(25, 65), False),
        vhd=vhd,
    )


def _scale_spec(rng: random.Random, name: str, epoch: datetime) -> VmSpec:
    """A cheaper spec for VMs beyond the campaign's 74 (scale runs)."""
    base = [gb(rng.choice(lab.OTHER_SYSTEM_GB))]
    if rng.random() < 0.3:
        base.append(gb(rng.uniform(lab.DATA_DISK_GB_MIN, 300.0)))
    r = rng.random()
    depth = 0 if r < 0.55 else 1 if r < 0.8 else 2 if r < 0.92 else rng.randint(3, 10)
    split = [[max(16 * MB, int(b * rng.uniform(0.002, 0.04))) for b in base] for _ in range(depth)]
    leftover = [int(b * 0.004) + 16 * MB for b in base] if rng.random() < 0.04 else None
    version = "5.0" if r < 0.1 else "8.0" if r < 0.5 else "9.0"
    cps = _chain(rng, name, epoch, depth, version, split, leftover)
    p = rng.random()
    power = PowerState.OFF if p < 0.06 else PowerState.SAVED if p < 0.08 else PowerState.RUNNING
    return VmSpec(
        name=name,
        base=base,
        maxb=[max(b + GB, int(b * 1.25)) for b in base],
        cps=cps,
        generation=1 if p > 0.75 else 2,
        config_version=version,
        vcpus=rng.choice((2, 2, 4, 4, 8)),
        memory_mb=rng.choice((2048, 4096, 8192, 8192, 16384)),
        power=power,
        profile=VmProfile(rng.uniform(0.3, 0.95), rng.uniform(25, 65), False),
    )


def fit(spec: VmSpec, capacity: int) -> None:
    """Shrink a pinned VM's chain (then base) so it fits the LUN it must be on."""
    excess = spec.total() - int(capacity * 0.985)
    if excess <= 0:
        return
    chain = sum(sum(c.sizes) for c in spec.cps)
    if chain:
        keep = max(0.05, 1 - excess / chain)
        for c in spec.cps:
            c.sizes = [max(16 * MB, int(s * keep)) for s in c.sizes]
    excess = spec.total() - int(capacity * 0.985)
    if excess > 0:
        spec.base[0] = max(GB, spec.base[0] - excess)


def shrink(specs: list[VmSpec], delta: float) -> None:
    """Scale the VMs' files down by ``-delta`` bytes in total (delta < 0)."""
    total = sum(s.total() - s.saved() for s in specs)
    if total <= 0:
        return
    keep = max(0.3, 1 + delta / total)
    for spec in specs:
        spec.base = [max(GB // 2, int(b * keep)) for b in spec.base]
        for c in spec.cps:
            c.sizes = [max(16 * MB, int(x * keep)) for x in c.sizes]


def vm_names(config: SimConfig) -> list[tuple[str, lab.LabVm | None]]:
    names: list[tuple[str, lab.LabVm | None]] = [(v.name, v) for v in lab.LAB_VMS]
    names += [(n, None) for n in lab.OTHER_VM_NAMES]
    names = names[: config.vms]
    names += [(f"vm-{i:05d}", None) for i in range(len(names), config.vms)]
    return names


def choose_replicas(rng: random.Random, specs: list[VmSpec], total_vms: int) -> None:
    lab_part = [s for s in specs[:LAB_SHAPED_VMS] if s.power is PowerState.RUNNING and not s.pinned]
    with_cps = [s for s in lab_part if s.cps]
    without = [s for s in lab_part if not s.cps]
    picks = rng.sample(with_cps, min(2, len(with_cps))) + rng.sample(without, min(2, len(without)))
    if total_vms < 20:
        picks = picks[: max(0, total_vms // 8)]
    for k, s in enumerate(picks):
        s.replica_target = lab.DR_TARGETS[k % len(lab.DR_TARGETS)]
        s.replication_health = Health.WARNING if k == 1 else Health.NORMAL
    for s in specs[LAB_SHAPED_VMS:]:
        if rng.random() < 0.05 and s.power is PowerState.RUNNING:
            s.replica_target = rng.choice(lab.DR_TARGETS)
            s.replication_health = Health.NORMAL


def draw_specs(config: SimConfig, rng: random.Random, epoch: datetime) -> list[VmSpec]:
    """Every VM of the cluster, unplaced (no LUN, no node yet)."""
    return finish(drawing_specs(config, rng, epoch))


def drawing_specs(config: SimConfig, rng: random.Random,
                  epoch: datetime) -> Steps[list[VmSpec]]:
    """``draw_specs`` as a stepped build (``steps``): a pause every ``STEP_ITEMS`` VMs."""
    specs: list[VmSpec] = []
    for name, lab_vm in vm_names(config):
        if lab_vm is not None:
            spec = _lab_spec(rng, lab_vm, epoch)
        elif len(specs) < LAB_SHAPED_VMS:
            spec = _generated_spec(rng, name, epoch)
        else:
            spec = _scale_spec(rng, name, epoch)
        specs.append(spec)
        if len(specs) % STEP_ITEMS == 0:
            yield
    if config.hostile_names:
        hostile = iter(lab.HOSTILE_NAMES)
        for spec in specs:
            if spec.name in HOSTILE_SLOTS:
                spec.name = next(hostile, spec.name)
    return specs
