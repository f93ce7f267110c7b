"""Small builders for model objects used across tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ventana.state.events import ConnectionChanged, LinkState, Upsert
from ventana.state.model import (
    GB,
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    DiskFormat,
    Lun,
    Node,
    Platform,
    PowerState,
    VirtualDisk,
)
from ventana.state.store import Store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def small_cluster(store: Store | None = None, *, free_gb: float = 500.0) -> Store:
    """One cluster, two nodes, two LUNs, three VMs; vm-a has a 3-deep chain."""
    store = store or Store()
    events = [
        ConnectionChanged("test", LinkState.CONNECTED),
        Upsert(Cluster("c1", "HVCLUSTER01", Platform.HYPERV, nodes=2)),
        Upsert(Node("n1", "HV-NODE-01", "c1", csv_owned=("l1",), vm_count=2)),
        Upsert(Node("n2", "HV-NODE-02", "c1", csv_owned=("l2",), vm_count=1)),
        Upsert(Lun("l1", "CSV-DATA2", "c1", int(2000 * GB), int(free_gb * GB), "n1")),
        Upsert(Lun("l2", "CSV-DATA1", "c1", int(2367 * GB), int(0.026 * GB), "n2")),
    ]
    for vm_id, name, lun in (("a", "app-01", "l1"), ("b", "db-01", "l1"), ("c", "dc-03", "l2")):
        events.append(
            Upsert(
                VM(vm_id, name, "c1", "n1" if lun == "l1" else "n2", PowerState.RUNNING,
                   disk_ids=(f"{vm_id}-d1",), lun_id=lun)
            )
        )
        events.append(
            Upsert(
                VirtualDisk(f"{vm_id}-d1", vm_id, f"C:\\CS\\{name}.vhdx", DiskFormat.VHDX,
                            int(100 * GB), int(200 * GB), None, lun)
            )
        )
    parent = None
    for i, days in enumerate((900, 400, 30)):
        cp_id = f"a-cp{i}"
        events.append(
            Upsert(
                Checkpoint(cp_id, "a", f"before patch {i}", parent, CheckpointKind.STANDARD,
                           NOW - timedelta(days=days), f"C:\\CS\\app-01_{i}.avhdx",
                           int((i + 1) * 10 * GB))
            )
        )
        parent = cp_id
    events.append(
        Upsert(
            Checkpoint("c-cp0", "c", "Veeam backup", None, CheckpointKind.BACKUP,
                       NOW - timedelta(days=3), "C:\\CS\\dc-03_0.avhdx", int(5 * GB))
        )
    )
    store.apply_many(events)
    return store
