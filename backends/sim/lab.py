"""Figures from the source campaign, copied in as data (``shared/lab`` is not shipped).

Owns: the 18 CSV LUNs with their total and free space before/after the
campaign (GiB; 0.026 = 26 MB), the per-disk sizes and merge times of the VMs
whose work was recorded, the sizes seen on the other VMs, and the names the
simulated cluster uses for VMs, checkpoints, nodes and the backup agent.
Nothing here is random; ``inventory`` draws from these tables with a seed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LabLun:
    name: str
    total_gb: float
    free_gb_before: float
    free_gb_after: float
    disk: str  # "Disk 11", or "QUORUM" for the witness disk
    volume: str  # "Volume 11"; empty for the witness


# luns.csv — two LUNs share the name "NEW VOLUME" (Disk 10 and Disk 13).
LUNS: tuple[LabLun, ...] = (
    LabLun("CSV-03-DATA3", 2042.87, 380.14, 722.09, "Disk 2", "Volume 2"),
    LabLun("CSV-04-HITACHI", 2042.87, 525.24, 1347.68, "Disk 9", "Volume 9"),
    LabLun("CSV-06-HITA", 2042.87, 1849.64, 1874.78, "Disk 8", "Volume 8"),
    LabLun("CSV-07-HITA", 2042.87, 162.38, 393.96, "Disk 5", "Volume 5"),
    LabLun("CSV-08-HITA", 2042.87, 461.95, 704.80, "Disk 4", "Volume 4"),
    LabLun("CSV-09-HITA", 2042.87, 319.52, 909.40, "Disk 12", "Volume 12"),
    LabLun("CSV-DATA1", 2367.87, 0.026, 0.025, "Disk 11", "Volume 11"),
    LabLun("CSV-DATA2", 2042.87, 686.89, 1490.70, "Disk 7", "Volume 7"),
    LabLun("CSV-DATA4", 2042.87, 1182.71, 360.57, "Disk 14", "Volume 14"),
    LabLun("CSV-EXCHANGE1", 2042.87, 0.002, 384.46, "Disk 1", "Volume 1"),
    LabLun("CSV-EXCHANGE2", 2042.87, 512.80, 1174.66, "Disk 15", "Volume 15"),
    LabLun("CSV-EXCHANGE3", 2042.87, 827.29, 999.21, "Disk 6", "Volume 6"),
    LabLun("DATA_DBA_EMC", 1024.00, 23.57, 23.80, "Disk 17", "Volume 18"),
    LabLun("DATOS", 2042.87, 178.52, 674.70, "Disk 3", "Volume 3"),
    LabLun("HYPERV-LUN-15", 2042.87, 719.23, 1278.84, "Disk 16", "Volume 16"),
    LabLun("NEW VOLUME", 2042.87, 1724.60, 1564.79, "Disk 10", "Volume 10"),
    LabLun("NEW VOLUME", 2042.87, 490.50, 783.71, "Disk 13", "Volume 13"),
    LabLun("QUORUM", 4.97, 4.91, 4.91, "QUORUM", ""),
)


@dataclass(frozen=True, slots=True)
class LabDisk:
    size_before_gb: float
    size_after_gb: float


@dataclass(frozen=True, slots=True)
class LabVm:
    name: str
    disks: tuple[LabDisk, ...]
    merge_minutes: float | None  # 0: nothing to merge; None: not recorded
    rebuild_minutes: float | None
    final_state: str


def _d(before: float, after: float) -> LabDisk:
    return LabDisk(before, after)


# vm_results.csv, one row per VM (disk 1 = system disk).
LAB_VMS: tuple[LabVm, ...] = (
    LabVm("cafeteria-01", (_d(51.3, 39.3),), 40, 20, "Operational"),
    LabVm("app-01", (_d(150, 137),), 240, 10, "Operational"),
    LabVm("app-02", (_d(101, 43.1), _d(50, 52)), 80, 20, "Operational"),
    LabVm("app-03", (_d(127, 127), _d(100, 100)), 0, 20, "Operational"),
    LabVm("app-04", (_d(401, 401),), 720, 30, "Operational"),
    LabVm("app-06", (_d(49, 49), _d(184, 184)), 190, 30, "Operational"),
    LabVm("appagr-d01", (_d(45.7, 45.7), _d(2.03, 2.03)), 520, 20, "Operational"),
    LabVm("appagr-p01", (_d(47.6, 47.6), _d(250, 250)), 100, 20, "Operational"),
    LabVm("appweeds-01", (_d(20.5, 20.5),), 100, 20, "Operational"),
    LabVm("audit-01", (_d(99.9, 99.9), _d(400, 400)), 0, 20, "Operational"),
    LabVm("aurea-01", (_d(48.69, 51.6),), None, None, "Operational"),
    LabVm("av-01", (_d(51.49, 56.44),), 50, 10, "Operational"),
    LabVm("bwp-03", (_d(93.85, 93.85),), 400, 20, "Operational"),
    LabVm("db-01", (_d(122.91, 122.91), _d(1024, 1024)), 40, 20, "Operational"),
    LabVm("db-03", (_d(57.47, 57.35), _d(130, 130)), 810, 30, "Operational"),
    LabVm("dc-03", (_d(53.91, 53.91), _d(2, 2)), 180, 16, "Operational"),
)

# The other VMs of the 74: plausible names in the same style. Roles drive
# vCPU/RAM; a few names are placed on fixed LUNs (see PINNED).
OTHER_VM_NAMES: tuple[str, ...] = (
    "dc-01",
    "dc-02",
    "fs-01",
    "fs-02",
    "exch-01",
    "exch-02",
    "exch-03",
    "exch-04",
    "sql-01",
    "sql-02",
    "dba-01",
    "erp-01",
    "erp-02",
    "crm-01",
    "hr-01",
    "payroll-01",
    "web-01",
    "web-02",
    "web-03",
    "ftp-01",
    "print-01",
    "wsus-01",
    "sccm-01",
    "rds-01",
    "rds-02",
    "rds-03",
    "rdgw-01",
    "jump-01",
    "mon-01",
    "log-01",
    "ca-01",
    "adfs-01",
    "nps-01",
    "dhcp-01",
    "bkproxy-01",
    "bkproxy-02",
    "av-02",
    "relay-01",
    "proxy-01",
    "intranet-01",
    "sp-01",
    "bi-01",
    "etl-01",
    "dev-01",
    "dev-02",
    "test-01",
    "test-02",
    "tpl-w2016",
    "tpl-w2019",
    "old-app-05",
    "old-fs-01",
    "lnx-web-01",
    "lnx-db-01",
    "fw-mgmt-01",
    "kms-01",
    "lic-01",
    "git-01",
    "ci-01",
)

# System disk sizes seen on the other VMs (GB) and the range of their data disks.
OTHER_SYSTEM_GB: tuple[float, ...] = (
    18,
    38,
    49,
    62,
    70,
    93,
    99,
    100,
    104,
    108,
    111,
    117,
    120,
    187,
    452,
)
DATA_DISK_GB_MIN = 27.0
DATA_DISK_GB_MAX = 700.0
BIG_DATA_DISK_GB = 2253.0  # "one of 2.2 TB" — beyond the 2 TB backup policy
APPLIANCE_DISK_GB = 0.45

# name -> (LUN name, LUN disk) for VMs that the campaign's shape needs where
# they are: the full CSVs must host VMs with checkpoints.
PINNED: dict[str, tuple[str, str]] = {
    "fs-01": ("CSV-DATA1", "Disk 11"),
    "exch-01": ("CSV-EXCHANGE1", "Disk 1"),
    "exch-02": ("CSV-EXCHANGE1", "Disk 1"),
    "exch-03": ("CSV-EXCHANGE2", "Disk 15"),
    "exch-04": ("CSV-EXCHANGE3", "Disk 6"),
    "dba-01": ("DATA_DBA_EMC", "Disk 17"),
    "db-01": ("DATOS", "Disk 3"),
}
# Fixed data disks (GB) of some named VMs.
DATA_DISKS_GB: dict[str, tuple[float, ...]] = {
    "fs-01": (BIG_DATA_DISK_GB,),
    "exch-01": (700.0,),
    "exch-02": (690.0,),
    "exch-03": (650.0,),
    "exch-04": (600.0,),
    "dba-01": (640.0, 180.0),
    "fs-02": (520.0,),
    "sql-01": (310.0,),
    "sql-02": (260.0,),
}
# Fixed chain depth of some named VMs (the rest are drawn).
CHAIN_DEPTH: dict[str, int] = {"fs-01": 2, "exch-01": 5, "exch-02": 2}
# VMs that are off (templates, retired servers) and one paused by a full CSV.
OFF_PREFIXES: tuple[str, ...] = ("tpl-", "old-")
PAUSED_CRITICAL: tuple[str, ...] = ("exch-02",)
SAVED: tuple[str, ...] = ("dev-02", "test-01")

# (vCPU, RAM MB) by name prefix; the first match wins.
ROLE_SIZES: tuple[tuple[str, int, int], ...] = (
    ("dc-", 2, 4096),
    ("dhcp-", 2, 4096),
    ("nps-", 2, 4096),
    ("kms-", 1, 2048),
    ("lic-", 2, 4096),
    ("ca-", 2, 4096),
    ("adfs-", 2, 8192),
    ("fw-", 1, 1024),
    ("exch-", 8, 65536),
    ("sql-", 8, 32768),
    ("db-", 8, 32768),
    ("dba-", 16, 65536),
    ("erp-", 8, 32768),
    ("rds-", 8, 32768),
    ("sp-", 4, 16384),
    ("bi-", 8, 24576),
    ("bkproxy-", 4, 8192),
    ("fs-", 4, 8192),
    ("tpl-", 2, 4096),
    ("test-", 2, 4096),
    ("dev-", 4, 8192),
    ("lnx-", 2, 4096),
)
DEFAULT_ROLE_SIZE = (4, 8192)

NODE_PREFIX = "HV-NODE-"
DR_TARGETS: tuple[str, ...] = ("DR-HV01", "DR-HV01", "DR-HV02", "Azure Site Recovery (westeurope)")

# The backup agent: one Windows service per node, listening on these ports.
BACKUP_AGENT_CURRENT = "12.1.2.172"
BACKUP_AGENT_OLD = "11.0.1.1261"
BACKUP_AGENT_PORTS: tuple[int, ...] = (28001, 28002, 29000, 30001, 30002, 30003)
BACKUP_MAX_BYTES_GB = 2048  # at most 2 TB per VM or job

# Checkpoint names operators left behind (Spanish-speaking team) and the
# ones backup software leaves when it "forgets" to remove its checkpoint.
MANUAL_CHECKPOINT_NAMES: tuple[str, ...] = (
    "Antes de actualizar",
    "antes de parches",
    "Pre Windows Update",
    "before KB5034439",
    "pre-upgrade SQL CU",
    "antes migracion",
    "instalacion agente",
    "before app release",
    "cambio de IP",
    "pre-reboot",
    "prueba",
    "OK funcionando",
)
BACKUP_CHECKPOINT_NAMES: tuple[str, ...] = (
    "Veeam Replica Working Snapshot",
    "{vm} - Backup - ({stamp})",
    "Veeam backup checkpoint",
)

# Names with control sequences and markup, for UI safety tests (opt-in).
HOSTILE_NAMES: tuple[str, ...] = (
    "[@click=app.quit]evil-01[/]",
    "web-\x1b[2Jcleared",
    "clip-\x1b]52;c;cm0gLXJmIH4=\x07-01",
    "bidi-\u202egnp.exe",
    "markup-[/-01",
)
