"""Build tests/recordings/small-cluster.jsonl, a small deterministic recording.

    .venv/bin/python tests/recordings/make_small.py [OUT]

One Hyper-V cluster, 2 nodes, 3 LUNs (one nearly full, as in the campaign),
5 VMs — one with a hostile name (markup plus an ESC sequence, stored as
``\\u001b`` in the JSON) — their disks and checkpoints, then ~5 s of changes:
a checkpoint merge with progress, space coming back on the LUN, a VM pausing
for lack of space, a finding, a stale link that recovers, and the operator's
action lines. Everything (times, ids, the header's start) is fixed, so the
file is byte-for-byte reproducible; a test checks that.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ventana.state.events import (
    ConnectionChanged,
    Event,
    FindingRaised,
    LinkState,
    Remove,
    TaskProgress,
    Upsert,
)
from ventana.state.model import (
    GB,
    MB,
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    DiskFormat,
    Finding,
    Health,
    IntegrationState,
    Kind,
    Lun,
    LunRole,
    Node,
    NodeState,
    Platform,
    PowerState,
    ReplicationState,
    ServiceState,
    Severity,
    Task,
    TaskState,
    VirtualDisk,
)
from ventana.state.recording import Recorder

HERE = Path(__file__).resolve().parent
OUT = HERE / "small-cluster.jsonl"
STARTED = datetime(2024, 11, 14, 22, 0, tzinfo=UTC)
HOSTILE = "[bold red]evil\x1b[2J"
TARGET = "sim://HVCLUSTER01"

Item = Event | dict[str, Any]


def _vm(vm_id: str, name: str, node: str, lun: str, **kw: Any) -> VM:
    return VM(vm_id, name, "c1", node, disk_ids=(f"{vm_id}-d0",), lun_id=lun, **kw)


def _disk(vm_id: str, name: str, lun: str, size_gb: float, max_gb: float,
          fmt: DiskFormat = DiskFormat.VHDX, parent: str | None = None,
          suffix: str = "d0") -> VirtualDisk:
    ext = fmt.value
    path = f"C:\\ClusterStorage\\{lun}\\{name}\\{name}_{suffix}.{ext}"
    return VirtualDisk(f"{vm_id}-{suffix}", vm_id, path, fmt, int(size_gb * GB),
                       int(max_gb * GB), parent, lun)


def script() -> list[tuple[float, Item]]:
    """(offset in seconds, event or operator-action dict), in order."""
    app = _vm("vm-app01", "APP-01", "n1", "lun-data1", power=PowerState.RUNNING,
              config_version="8.0", vcpus=4, memory_mb=16384,
              integration=IntegrationState.OK)
    items: list[tuple[float, Item]] = [
        (0.0, ConnectionChanged("sim", LinkState.CONNECTING, "connecting to HVCLUSTER01")),
        (0.0, Upsert(Cluster("c1", "HVCLUSTER01", Platform.HYPERV, nodes=2))),
        (0.0, Upsert(Node("n1", "HV-NODE-01", "c1", NodeState.UP, ("lun-data1",),
                          "12.1.0", ServiceState.RUNNING, 3))),
        (0.0, Upsert(Node("n2", "HV-NODE-02", "c1", NodeState.UP,
                          ("lun-data2", "lun-quorum"), "12.1.0", ServiceState.RUNNING, 2))),
        (0.0, Upsert(Lun("lun-data1", "CSV-DATA1", "c1", int(2367 * GB), 26 * MB, "n1",
                         LunRole.CSV))),
        (0.0, Upsert(Lun("lun-data2", "CSV-DATA2", "c1", int(2000 * GB), int(412 * GB),
                         "n2", LunRole.CSV, in_backup=True))),
        (0.0, Upsert(Lun("lun-quorum", "QUORUM", "c1", 1 * GB, int(0.9 * GB), "n2",
                         LunRole.QUORUM))),
        (0.0, Upsert(app)),
        (0.0, Upsert(_vm("vm-db01", "DB-01", "n1", "lun-data1", power=PowerState.RUNNING,
                         config_version="9.0", vcpus=8, memory_mb=65536,
                         integration=IntegrationState.OK))),
        (0.0, Upsert(_vm("vm-dc03", "DC-03", "n2", "lun-data2", power=PowerState.RUNNING,
                         generation=1, config_version="5.0", vcpus=2, memory_mb=4096,
                         integration=IntegrationState.DEGRADED))),
        (0.0, Upsert(_vm("vm-web02", "WEB-02", "n2", "lun-data2", power=PowerState.RUNNING,
                         config_version="8.0", replication=ReplicationState.REPLICATING,
                         replication_health=Health.NORMAL, replica_target="azure://rsv-01",
                         integration=IntegrationState.OK))),
        (0.0, Upsert(_vm("vm-evil", HOSTILE, "n1", "lun-data1", power=PowerState.OFF,
                         config_version="9.0"))),
        (0.0, Upsert(_disk("vm-app01", "APP-01", "lun-data1", 180, 250))),
        (0.0, Upsert(_disk("vm-db01", "DB-01", "lun-data1", 620, 1024))),
        (0.0, Upsert(_disk("vm-dc03", "DC-03", "lun-data2", 60, 127, DiskFormat.VHD))),
        (0.0, Upsert(_disk("vm-web02", "WEB-02", "lun-data2", 45, 127))),
        (0.0, Upsert(_disk("vm-evil", "evil", "lun-data1", 10, 40))),
    ]
    # APP-01: a three-deep chain of forgotten checkpoints; DC-03: one a backup left.
    parent: str | None = None
    for i, (days, size_gb) in enumerate(((700, 96.0), (420, 212.5), (35, 41.25))):
        cp_id = f"vm-app01-cp{i}"
        path = f"C:\\ClusterStorage\\lun-data1\\APP-01\\APP-01_{i}.avhdx"
        items.append((0.0, Upsert(Checkpoint(
            cp_id, "vm-app01", f"before patch {i + 1}", parent, CheckpointKind.STANDARD,
            STARTED - timedelta(days=days), path, int(size_gb * GB)))))
        parent = cp_id
    items.append((0.0, Upsert(Checkpoint(
        "vm-dc03-cp0", "vm-dc03", "Veeam backup checkpoint", None, CheckpointKind.BACKUP,
        STARTED - timedelta(days=3), "C:\\ClusterStorage\\lun-data2\\DC-03\\DC-03_0.avhdx",
        int(3.5 * GB)))))
    items.append((0.25, ConnectionChanged("sim", LinkState.CONNECTED)))

    # The operator merges APP-01's chain.
    task = Task("merge-0001", "merge", "vm:vm-app01", "APP-01", 0.0, TaskState.QUEUED,
                STARTED + timedelta(seconds=1))
    items += [
        (1.0, {"action": "merge", "target": "vm:vm-app01", "phase": "start",
               "task": "merge-0001"}),
        (1.0, Upsert(task)),
        (1.5, TaskProgress("merge-0001", 12.0, "merging APP-01_2.avhdx")),
        (2.0, TaskProgress("merge-0001", 37.5, "merging APP-01_1.avhdx")),
        (2.25, Upsert(_vm("vm-db01", "DB-01", "n1", "lun-data1",
                          power=PowerState.PAUSED_CRITICAL, config_version="9.0", vcpus=8,
                          memory_mb=65536, integration=IntegrationState.OK))),
        (2.25, FindingRaised(Finding(
            "low-space:lun-data1", Severity.CRITICAL, "lun:lun-data1", "LOW_SPACE",
            "CSV-DATA1 has 26 MB free; DB-01 paused (Paused-Critical)"))),
        (2.75, TaskProgress("merge-0001", 71.0, "merging APP-01_0.avhdx")),
        (3.0, ConnectionChanged("sim", LinkState.STALE, "no answer from HV-NODE-01 for 30 s")),
        (3.5, ConnectionChanged("sim", LinkState.RECONNECTING, "reconnecting: re-reading")),
        (4.0, ConnectionChanged("sim", LinkState.CONNECTED)),
        (4.25, TaskProgress("merge-0001", 100.0, "merge complete", TaskState.OK)),
        (4.25, Remove(Kind.CHECKPOINT, "vm-app01-cp2")),
        (4.25, Remove(Kind.CHECKPOINT, "vm-app01-cp1")),
        (4.25, Remove(Kind.CHECKPOINT, "vm-app01-cp0")),
        (4.25, Upsert(_disk("vm-app01", "APP-01", "lun-data1", 188.4, 250))),
        (4.5, Upsert(Lun("lun-data1", "CSV-DATA1", "c1", int(2367 * GB),
                         int(341.4 * GB), "n1", LunRole.CSV))),
        (4.5, {"action": "merge", "target": "vm:vm-app01", "phase": "end",
               "task": "merge-0001", "outcome": "ok", "error": ""}),
        (4.75, Upsert(_vm("vm-db01", "DB-01", "n1", "lun-data1", power=PowerState.RUNNING,
                          config_version="9.0", vcpus=8, memory_mb=65536,
                          integration=IntegrationState.OK))),
        (5.0, Remove(Kind.FINDING, "low-space:lun-data1")),
    ]
    return items


def build(out: Path = OUT) -> Path:
    """Write the recording to ``out`` (replacing it) and return the path."""
    now = [0.0]
    out.unlink(missing_ok=True)
    with Recorder(out, TARGET, meta={"backend": "sim", "note": "test fixture"},
                  clock=lambda: now[0], started=STARTED) as rec:
        for t, item in script():
            now[0] = t
            if isinstance(item, dict):
                rec.write_action(item)
            else:
                rec.write_event(item)
    return out


if __name__ == "__main__":
    path = build(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
