"""Builds the simulated cluster's initial model from the lab figures and a seed.

Owns where everything is at connect time: the 18 CSV LUNs with the
campaign's "before" free space (plus extra LUNs for scale runs), which LUN
each VM (drawn in ``specs``) lives on, which node runs it and coordinates
each CSV, the nodes' backup agents, and the entities themselves with their
ids and paths: base disks, one .avhdx per base disk and checkpoint, chained
by parent path. Each LUN's free space is exactly its total minus the VM files
placed on it minus "orphaned" bytes (old exports, unregistered disks), so
later size changes move free space consistently. ``build_inventory`` is pure:
the same config and epoch give the same inventory; 10,000 VMs build in well
under a second.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from ventana.state.model import (
    VM,
    Checkpoint,
    Cluster,
    DiskFormat,
    Entity,
    IntegrationState,
    Lun,
    LunRole,
    Node,
    NodeState,
    Platform,
    PowerState,
    ReplicationState,
    ServiceState,
    VirtualDisk,
)

from .. import gcpause
from . import lab
from .config import SimConfig
from .construct import constructor
from .specs import (
    LAB_SHAPED_VMS,
    VmProfile,
    VmSpec,
    choose_replicas,
    drawing_specs,
    fit,
    gb,
    guid,
)
from .specs import shrink as shrink_specs
from .steps import STEP_ITEMS, Steps, finish

#: The simulated hosts' default VM configuration version (what Update-VMVersion raises a VM
#: to): the campaign's Windows Server 2019 hosts, whose newest supported version is 9.0
#: (MicrosoftDocs windows-server, "Upgrade virtual machine version in Hyper-V").
HOST_DEFAULT_VERSION = "9.0"

__all__ = ["Inventory", "VmProfile", "build_inventory", "lun_id_for"]

SCALE_LUN_GB = 16384.0
SCALE_LUN_FILL = 0.72
SCALE_LUN_ORPHANED = 0.02

# The entities made by the thousand here, without their dataclass __init__ (construct.py).
_new_vm = constructor(VM)
_new_disk = constructor(VirtualDisk)
_new_checkpoint = constructor(Checkpoint)


@dataclass(slots=True)
class Inventory:
    cluster: Cluster
    nodes: list[Node]
    luns: list[Lun]
    vms: list[VM] = field(default_factory=list)
    disks: list[VirtualDisk] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    chains: dict[str, list[str]] = field(default_factory=dict)  # VM -> checkpoints, oldest first
    checkpoint_files: dict[str, list[str]] = field(default_factory=dict)  # -> .avhdx per drive
    profiles: dict[str, VmProfile] = field(default_factory=dict)
    saved_bytes: dict[str, int] = field(default_factory=dict)  # VM -> saved-state bytes
    orphaned_bytes: dict[str, int] = field(default_factory=dict)  # LUN -> bytes outside VMs
    broken_chains: set[str] = field(default_factory=set)  # VMs whose .avhdx parent is missing

    def entities(self) -> Iterator[Entity]:
        """Everything, in the order a real backend reports it."""
        yield self.cluster
        yield from self.nodes
        yield from self.luns
        yield from self.vms
        yield from self.disks
        yield from self.checkpoints


def lun_id_for(cluster: str, disk: str) -> str:
    """A cluster disk resource id: stable for a cluster and disk, seed or not."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ventana-sim://{cluster}/{disk}"))


@dataclass(slots=True)
class _Slot:
    """A LUN while VMs are being placed on it."""

    lun_id: str
    name: str
    total: int
    capacity: int  # bytes of files it must hold (total - free before)
    volume: str  # "Volume11"
    role: LunRole = LunRole.CSV
    remaining: int = 0
    free: int = 0


def _lab_slots(cluster: str) -> list[_Slot]:
    slots = []
    for item in lab.LUNS:
        total = gb(item.total_gb)
        quorum = item.disk == "QUORUM"
        slot = _Slot(
            lun_id_for(cluster, item.disk),
            item.name,
            total,
            total - gb(item.free_gb_before),
            item.volume.replace(" ", ""),
            LunRole.QUORUM if quorum else LunRole.CSV,
            free=gb(item.free_gb_before),
        )
        slot.remaining = slot.capacity  # the witness's used bytes stay "orphaned"
        slots.append(slot)
    return slots


def _place_lab(rng: random.Random, specs: list[VmSpec], slots: list[_Slot]) -> None:
    """Pinned VMs first, then the largest, each on a LUN weighted by room left.

    The campaign's free space figures are kept exactly; whatever room is left
    on a LUN becomes its orphaned bytes.
    """
    csv_slots = [s for s in slots if s.role is LunRole.CSV]
    by_name_disk = {(item.name, item.disk): s for item, s in zip(lab.LUNS, slots, strict=True)}
    for spec in specs:
        pin = lab.PINNED.get(spec.name)
        if pin is None:
            continue
        slot = by_name_disk[pin]
        spec.pinned = slot.lun_id
        fit(spec, slot.remaining)
        if spec.total() <= slot.remaining:
            spec.lun_id = slot.lun_id
            slot.remaining -= spec.total()
    rest = sorted((s for s in specs if not s.lun_id), key=lambda s: -s.total())
    room = sum(s.remaining for s in csv_slots)
    demand = sum(s.total() for s in rest)
    if demand > room * 0.9:  # keep the LUN figures: shrink the drawn (not lab) VMs
        shrink_specs([s for s in rest if not s.profile.lab], room * 0.9 - demand)
    for spec in rest:
        size = spec.total()
        cands = [s for s in csv_slots if s.remaining >= size]
        if cands:
            slot = rng.choices(cands, weights=[s.remaining for s in cands])[0]
        else:  # fragmentation: squeeze it into the roomiest LUN
            slot = max(csv_slots, key=lambda s: s.remaining)
            fit(spec, slot.remaining)
        spec.lun_id = slot.lun_id
        slot.remaining -= spec.total()


def _place_scale(specs: list[VmSpec], slots: list[_Slot], cluster: str) -> None:
    """VMs beyond the 74 fill extra 16 TB CSVs to about 72 %, one after another."""
    current: _Slot | None = None
    for spec in specs:
        size = spec.total()
        if current is None or current.remaining < size:
            n = len(slots) - len(lab.LUNS) + 1
            total = gb(SCALE_LUN_GB)
            current = _Slot(
                lun_id_for(cluster, f"Disk {18 + n}"),
                f"CSV-SCALE-{n:03d}",
                total,
                int(total * SCALE_LUN_FILL),
                f"Volume{18 + n}",
            )
            current.remaining = current.capacity
            slots.append(current)
        spec.lun_id = current.lun_id
        current.remaining -= size
    for slot in slots[len(lab.LUNS) :]:
        slot.free = (
            slot.total - int(slot.total * SCALE_LUN_ORPHANED) - (slot.capacity - slot.remaining)
        )
        slot.remaining = int(slot.total * SCALE_LUN_ORPHANED)


def _node_list(config: SimConfig) -> list[tuple[str, str, ServiceState]]:
    """(name, backup agent version, agent state): one node lags, one is stopped."""
    out = []
    for i in range(config.nodes):
        version, state = lab.BACKUP_AGENT_CURRENT, ServiceState.RUNNING
        if i == 2 or (config.nodes == 2 and i == 1):
            version = lab.BACKUP_AGENT_OLD
        if i == 3:
            state = ServiceState.STOPPED
        out.append((f"{lab.NODE_PREFIX}{i + 1:02d}", version, state))
    return out


class _Assembler:
    """Turns placed specs into entities, with ids drawn in a fixed order."""

    def __init__(self, rng: random.Random, cluster: str, volumes: dict[str, str]) -> None:
        self.rng = rng
        self.cluster = cluster
        self.volumes = volumes
        self.inv = Inventory(Cluster(cluster, cluster, Platform.HYPERV), [], [])
        self.drafts: list[_Draft] = []  # one per VM, in order (inv.vms is built from them)

    def add_vm(self, spec: VmSpec) -> None:
        rng, inv = self.rng, self.inv
        vm_id = guid(rng)
        folder = (
            f"C:\\ClusterStorage\\{self.volumes[spec.lun_id]}\\{spec.name}\\Virtual Hard Disks\\"
        )
        stems = [spec.name] + [f"{spec.name}-DATA{j:02d}" for j in range(1, len(spec.base))]
        base_format = DiskFormat.VHD if spec.vhd else DiskFormat.VHDX
        base_ids: list[str] = []
        leaf: list[str] = []
        for stem, size, maxb in zip(stems, spec.base, spec.maxb, strict=True):
            disk_id = guid(rng)
            path = f"{folder}{stem}.{base_format.value}"
            inv.disks.append(
                _new_disk(disk_id, vm_id, path, base_format, size, maxb, None, spec.lun_id)
            )
            base_ids.append(disk_id)
            leaf.append(path)
        chain: list[str] = []
        for cp in spec.cps:
            cp_id = guid(rng)
            files = []
            for j, (stem, size) in enumerate(zip(stems, cp.sizes, strict=True)):
                file_id = guid(rng)
                path = f"{folder}{stem}_{file_id.upper()}.avhdx"
                inv.disks.append(
                    _new_disk(
                        file_id,
                        vm_id,
                        path,
                        DiskFormat.AVHDX,
                        size,
                        spec.maxb[j],
                        leaf[j],
                        spec.lun_id,
                    )
                )
                leaf[j] = path
                files.append(file_id)
            first = inv.disks[-len(files)].path
            parent = chain[-1] if chain else None
            inv.checkpoints.append(_new_checkpoint(
                cp_id, vm_id, cp.name, parent, cp.kind, cp.created, first, sum(cp.sizes)
            ))
            inv.checkpoint_files[cp_id] = files
            chain.append(cp_id)
        inv.chains[vm_id] = chain
        self.drafts.append(_Draft(vm_id, spec, tuple(base_ids), self._integration(spec)))
        inv.profiles[vm_id] = spec.profile
        if spec.saved():
            inv.saved_bytes[vm_id] = spec.saved()

    def _integration(self, spec: VmSpec) -> IntegrationState:
        if spec.power is PowerState.RUNNING:
            degraded = spec.config_version == "5.0" and self.rng.random() < 0.25
            return IntegrationState.DEGRADED if degraded else IntegrationState.OK
        if spec.power is PowerState.PAUSED_CRITICAL:
            return IntegrationState.UNKNOWN
        return IntegrationState.OFF


@dataclass(slots=True)
class _Draft:
    """A VM whose guest facts are not drawn yet (``_guest_facts`` builds the VM, once)."""

    id: str
    spec: VmSpec
    disk_ids: tuple[str, ...]
    integration: IntegrationState

    def vm(self, cluster: str, vss_capable: bool | None, dynamic_disks: bool | None,
           storage_paths: tuple[str, ...]) -> VM:
        spec = self.spec
        replicating = bool(spec.replica_target)
        return _new_vm(
            id=self.id,
            name=spec.name,
            cluster_id=cluster,
            node_id=spec.node_id,
            power=spec.power,
            generation=spec.generation,
            config_version=spec.config_version,
            vcpus=spec.vcpus,
            memory_mb=spec.memory_mb,
            replication=(
                ReplicationState.REPLICATING if replicating else ReplicationState.DISABLED
            ),
            replication_health=spec.replication_health,
            replica_target=spec.replica_target,
            integration=self.integration,
            disk_ids=self.disk_ids,
            lun_id=spec.lun_id,
            vss_capable=vss_capable,
            dynamic_disks=dynamic_disks,
            storage_paths=storage_paths,
        )


def build_inventory(config: SimConfig, epoch: datetime | None = None) -> Inventory:
    """The cluster as it is at ``epoch`` (default: ``config.start_time()``).

    The cyclic garbage collector is paused meanwhile: the build allocates
    ~100,000 acyclic objects for 10,000 VMs, and collections triggered by
    them would only rescan the caller's heap.
    """
    with gcpause.paused():
        return finish(building_inventory(config, epoch))


def building_inventory(config: SimConfig, epoch: datetime | None = None) -> Steps[Inventory]:
    """``build_inventory`` as a stepped build (``steps``): the same inventory, with a pause
    every ``STEP_ITEMS`` VMs. The caller decides about the garbage collector."""
    epoch = epoch or config.start_time()
    rng = random.Random(config.seed)
    cluster = config.cluster_name

    slots = _lab_slots(cluster)
    specs = yield from drawing_specs(config, rng, epoch)
    _place_lab(rng, specs[:LAB_SHAPED_VMS], slots)
    choose_replicas(rng, specs, config.vms)
    yield
    _place_scale(specs[LAB_SHAPED_VMS:], slots, cluster)
    yield

    # Nodes: balanced and shuffled; cluster disks round-robin, the witness on node 1.
    node_list = _node_list(config)
    node_ids = [name for name, _, _ in node_list]
    seats = [node_ids[i % len(node_ids)] for i in range(len(specs))]
    rng.shuffle(seats)
    yield
    for spec, node_id in zip(specs, seats, strict=True):
        spec.node_id = node_id
    offset = rng.randrange(len(node_ids))
    owners = {s.lun_id: node_ids[(i + offset) % len(node_ids)] for i, s in enumerate(slots)}
    for s in slots:
        if s.role is LunRole.QUORUM:
            owners[s.lun_id] = node_ids[0]

    asm = _Assembler(rng, cluster, {s.lun_id: s.volume for s in slots})
    inv = asm.inv
    inv.luns = [
        Lun(s.lun_id, s.name, cluster, s.total, s.free, owner_node_id=owners[s.lun_id], role=s.role)
        for s in slots
    ]
    inv.orphaned_bytes = {s.lun_id: max(0, s.remaining) for s in slots}
    for n, spec in enumerate(specs, start=1):
        asm.add_vm(spec)
        if n % STEP_ITEMS == 0:
            yield

    counts = dict.fromkeys(node_ids, 0)
    for spec in specs:
        counts[spec.node_id] += 1
    owned: dict[str, list[str]] = {n: [] for n in node_ids}
    for lun in inv.luns:
        if lun.role is LunRole.CSV:  # the witness disk is owned, but it is no CSV
            owned[lun.owner_node_id].append(lun.id)
    inv.nodes = [
        Node(name, name, cluster, NodeState.UP, tuple(owned[name]), version, state, counts[name],
             default_config_version=HOST_DEFAULT_VERSION)
        for name, version, state in node_list
    ]
    inv.cluster = Cluster(cluster, cluster, Platform.HYPERV, nodes=len(node_ids))
    yield from _guest_facts(config, inv, asm.drafts, {s.lun_id: s.volume for s in slots})
    return inv


def _guest_facts(config: SimConfig, inv: Inventory, drafts: list[_Draft],
                 volumes: dict[str, str]) -> Steps[None]:
    """Backup-eligibility facts, storage paths, closed agent ports, broken chains; the VMs
    (``inv.vms``) are built here, with them.

    Drawn from a generator of their own (seeded from the seed) after
    everything else, so adding them changed no other figure of the lab.
    Running guests report VSS and dynamic disks (appliances: no VSS); guests
    that are not running report neither (unknown). A few VMs of each bad
    case: no VSS, dynamic disks, files spread over two SMB shares, a
    differencing disk whose parent is not where the chain says.
    """
    rng = random.Random(f"ventana-sim-guest-facts:{config.seed}")
    running_ = PowerState.RUNNING
    lab_part = sorted(drafts[:LAB_SHAPED_VMS], key=lambda d: d.spec.name)
    running = [d for d in lab_part if d.spec.power is running_]
    windows = [d for d in running if not d.spec.name.startswith(("fw-", "lnx-"))]
    no_vss = {d.id for d in rng.sample(windows, min(2, len(windows)))}
    dyn_pool = [d for d in windows if d.id not in no_vss]
    dynamic = {d.id for d in rng.sample(dyn_pool, min(2, len(dyn_pool)))}
    smb_pool = [d for d in lab_part if not d.spec.replica_target and d.id not in no_vss | dynamic]
    smb = {d.id for d in rng.sample(smb_pool, min(2, len(smb_pool)))}
    chain_pool = [
        d for d in lab_part
        if inv.chains.get(d.id) and not d.spec.replica_target and inv.profiles[d.id].lab is False
        and d.id not in smb
    ]
    broken = {d.id for d in rng.sample(chain_pool, min(2, len(chain_pool)))}
    yield
    for d in drafts[LAB_SHAPED_VMS:]:  # scale runs: about 1 % of each case
        r = rng.random()
        if d.spec.power is running_ and r < 0.01:
            no_vss.add(d.id)
        elif d.spec.power is running_ and r < 0.02:
            dynamic.add(d.id)
        elif r < 0.03 and not d.spec.replica_target:
            smb.add(d.id)
    yield
    firsts = _first_avhdx(inv, broken)  # once, not once per disk (0.1 s at 10,000 VMs)
    disks = {d.id: d for d in inv.disks if d.id in firsts}
    for i, disk in enumerate(inv.disks):
        if disk.id in disks and disk.parent_path:
            # Moved by hand from a node's local disk: the chain still names the old parent.
            stem = disk.parent_path.rpartition("\\")[2]
            wrong = f"D:\\Hyper-V\\Virtual Hard Disks\\{stem}"
            inv.disks[i] = dataclasses.replace(disk, parent_path=wrong)
    inv.broken_chains = broken
    cluster = inv.cluster.id
    vms = inv.vms
    for n, d in enumerate(drafts, start=1):
        name = d.spec.name
        running_vm = d.spec.power is running_
        appliance = name.startswith("fw-")  # Linux guests freeze via the VSS daemon
        if d.id in smb:
            paths: tuple[str, ...] = (
                f"\\\\FS-SMB01\\VMs\\{name}",
                f"\\\\FS-SMB02\\VMData\\{name}\\Virtual Hard Disks",
            )
        else:
            paths = (f"C:\\ClusterStorage\\{volumes.get(d.spec.lun_id, '')}\\{name}",)
        vms.append(d.vm(
            cluster,
            vss_capable=(not appliance and d.id not in no_vss) if running_vm else None,
            dynamic_disks=(d.id in dynamic) if running_vm else None,
            storage_paths=paths,
        ))
        if n % STEP_ITEMS == 0:
            yield
    ports = lab.BACKUP_AGENT_PORTS
    for i, node in enumerate(inv.nodes):
        if node.backup_agent_state is ServiceState.STOPPED:
            closed: tuple[int, ...] = ports  # nothing listens
        elif i == 1 and len(inv.nodes) > 2:
            closed = (ports[2],)  # a firewall rule lost in a node rebuild
        else:
            closed = ()
        inv.nodes[i] = dataclasses.replace(node, backup_ports_closed=closed)


def _first_avhdx(inv: Inventory, vm_ids: set[str]) -> set[str]:
    """The first .avhdx of each of these VMs' chains (its parent is the base disk)."""
    out: set[str] = set()
    for vm_id in vm_ids:
        chain = inv.chains.get(vm_id) or []
        if chain:
            out.update(inv.checkpoint_files[chain[0]][:1])
    return out
