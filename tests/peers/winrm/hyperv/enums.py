"""The Hyper-V and FailoverClusters enums the endpoint sends, and the model → member maps.

Members are psrpcore enums (:func:`~..cmdlets.ps_enum`): pypsrp shows them by
name; ``ConvertTo-Json`` writes their number. The numbers are the module's own
(cited beside each table); ``vm_state`` numbers VMState per host profile.
"""

from __future__ import annotations

from typing import Any

from ventana.state.model import CheckpointKind, LunState, PowerState, ReplicationState

from ..cmdlets import ps_enum
from .profile import HostProfile

HV = "Microsoft.HyperV.PowerShell."
FC = "Microsoft.FailoverClusters.PowerShell."

# -- Hyper-V module 2.0.0.0 (dsccommunity/HyperVDsc tests/Unit/Stubs/Hyper-V.stubs.psm1,
# "Name: Hyper-V, Version: 2.0.0.0"; nforgeio/neonSDK Neon.HyperV VMState.cs agrees) --

#: VMState as Windows Server 2019/2022 number it.
VM_STATES = {
    "Other": 1, "Running": 2, "Off": 3, "Stopping": 4, "Saved": 6, "Paused": 9,
    "Starting": 10, "Reset": 11, "Saving": 32773, "Pausing": 32776, "Resuming": 32777,
    "FastSaved": 32779, "FastSaving": 32780, "ForceShutdown": 32781, "ForceReboot": 32782,
    "Hibernated": 32783, "ComponentServicing": 32784, "RunningCritical": 32785,
    "OffCritical": 32786, "StoppingCritical": 32787, "SavedCritical": 32788,
    "PausedCritical": 32789, "StartingCritical": 32790, "ResetCritical": 32791,
    "SavingCritical": 32792, "PausingCritical": 32793, "ResumingCritical": 32794,
    "FastSavedCritical": 32795, "FastSavingCritical": 32796,
}
#: Server 2016: no Hibernated/ComponentServicing, so every later member is 2 lower
#: (eryph-org/eryph VirtualMachineState.cs: "the numerical values differ between the
#: Windows versions. Hibernated and ComponentServicing are not present on at least
#: Windows Server 2016").
VM_STATES_2016 = {
    k: (v - 2 if v > 32784 else v) for k, v in VM_STATES.items()
    if k not in ("Hibernated", "ComponentServicing")
}
VMState = ps_enum(HV + "VMState", VM_STATES)
VMState2016 = ps_enum(HV + "VMState", VM_STATES_2016)
SnapshotType = ps_enum(
    HV + "SnapshotType",
    {"Standard": 0, "Recovery": 1, "Planned": 2, "Missing": 5, "Replica": 6,
     "AppConsistentReplica": 7, "SyncedReplica": 8},
)
#: Get-VM's Heartbeat (Nullable<VMHeartbeatStatus>).
HeartbeatStatus = ps_enum(
    HV + "VMHeartbeatStatus",
    {"Unknown": 0, "Disabled": 1, "NoContact": 2, "Error": 3, "LostCommunication": 4,
     "OkApplicationsUnknown": 5, "OkApplicationsHealthy": 6, "OkApplicationsCritical": 7,
     "Paused": 8},
)
#: Get-VM's Primary/SecondaryOperationalStatus (VMOperationalStatus, a subset).
OperationalStatus = ps_enum(
    HV + "VMOperationalStatus",
    {"Ok": 2, "Degraded": 3, "PredictiveFailure": 5, "InService": 11, "Dormant": 15,
     "SupportingEntityInError": 16, "CreatingSnapshot": 32768, "DeletingSnapshot": 32770,
     "WaitingToStart": 32771, "MergingDisks": 32772, "ExportingVirtualMachine": 32773,
     "MigratingVirtualMachine": 32774, "BackingUpVirtualMachine": 32776},
)
# Microsoft.Vhd.PowerShell (the VHD cmdlets of the same module).
VhdFormat = ps_enum("Microsoft.Vhd.PowerShell.VhdFormat",
                    {"Unknown": 0, "VHD": 2, "VHDX": 3, "VHDSet": 4})
VhdType = ps_enum("Microsoft.Vhd.PowerShell.VhdType",
                  {"Unknown": 0, "Fixed": 2, "Dynamic": 3, "Differencing": 4})
ControllerType = ps_enum(HV + "ControllerType", {"IDE": 0, "SCSI": 1, "PMEM": 2})
ReplState = ps_enum(
    HV + "VMReplicationState",
    {"Disabled": 0, "ReadyForInitialReplication": 1, "InitialReplicationInProgress": 2,
     "WaitingForInitialReplication": 3, "Replicating": 4, "PreparedForFailover": 5,
     "FailedOverWaitingCompletion": 6, "FailedOver": 7, "Suspended": 8, "Error": 9,
     "WaitingForStartResynchronize": 10, "Resynchronizing": 11, "ResynchronizeSuspended": 12},
)
ReplHealth = ps_enum(
    HV + "VMReplicationHealthState",
    {"NotApplicable": 0, "Normal": 1, "Warning": 2, "Critical": 3},
)
ReplMode = ps_enum(HV + "VMReplicationMode", {"None": 0, "Primary": 1, "Replica": 2})
OpStatus = ps_enum(
    HV + "VMIntegrationComponentOperationalStatus",
    {"Ok": 2, "Degraded": 3, "Error": 6, "NonRecoverableError": 7, "NoContact": 12,
     "LostCommunication": 13, "ProtocolMismatch": 32775, "ApplicationCritical": 32782,
     "CommunicationTimedOut": 32783, "CommunicationFailed": 32784, "Disabled": 32896},
)
NodeStateEnum = ps_enum(
    FC + "ClusterNodeState", {"Up": 0, "Down": 1, "Paused": 2, "Joining": 3, "Unknown": -1}
)
DrainStatus = ps_enum(
    FC + "NodeDrainStatus", {"NotInitiated": 0, "InProgress": 1, "Completed": 2, "Failed": 3}
)
ResourceState = ps_enum(
    FC + "ClusterResourceState",
    {"Unknown": -1, "Online": 2, "Offline": 3, "Failed": 4, "OnlinePending": 129},
)
CsvStateInfo = ps_enum(
    FC + "ClusterSharedVolumeStateInfo",
    {"Unavailable": 0, "Paused": 1, "Direct": 2, "FileSystemRedirected": 3, "BlockRedirected": 4},
)
VlanMode = ps_enum(HV + "VMNetworkAdapterVlanMode",
                   {"Untagged": 0, "Access": 1, "Trunk": 2, "Private": 3})
OnOff = ps_enum(HV + "OnOffState", {"On": 0, "Off": 1})
BootType = ps_enum(HV + "VMBootSourceType", {"Unknown": 0, "Drive": 1, "Network": 2, "File": 3})
BootDevice = ps_enum(HV + "BootDevice", {"Floppy": 0, "CD": 1, "IDE": 2,
                                         "LegacyNetworkAdapter": 3, "NetworkAdapter": 4,
                                         "VHD": 5})
ServiceStatus = ps_enum(
    "System.ServiceProcess.ServiceControllerStatus",
    {"Stopped": 1, "StartPending": 2, "StopPending": 3, "Running": 4},
)

_POWER = {
    PowerState.RUNNING: "Running",
    PowerState.OFF: "Off",
    PowerState.SAVED: "Saved",
    PowerState.PAUSED: "Paused",
    PowerState.PAUSED_CRITICAL: "PausedCritical",
    PowerState.STARTING: "Starting",
    PowerState.STOPPING: "Stopping",
    PowerState.UNKNOWN: "Other",
}
_SNAP = {
    CheckpointKind.STANDARD: "Standard",
    CheckpointKind.PRODUCTION: "Standard",  # production checkpoints report "Standard" too
    CheckpointKind.BACKUP: "Recovery",
    CheckpointKind.RECOVERY: "Planned",
}
_REPL = {
    ReplicationState.DISABLED: "Disabled",
    ReplicationState.REPLICATING: "Replicating",
    ReplicationState.SUSPENDED: "Suspended",
    ReplicationState.ERROR: "Error",
}
_CSV_STATE = {
    LunState.ONLINE: "Online",
    LunState.REDIRECTED: "Online",
    LunState.OFFLINE: "Offline",
    LunState.FAILED: "Failed",
}


def _enum(enum_type: Any, name: str) -> Any:
    return enum_type[name]


def vm_state(profile: HostProfile, name: str) -> Any:
    """A VMState member, numbered as this host's module numbers it."""
    return (VMState2016 if profile.server2016 else VMState)[name]


#: Msvm_ComputerSystem.EnabledState of each power state (2 Enabled, 3 Disabled,
#: 6 Enabled but Offline = saved, 9 Quiesce = paused, 10 Starting, 4 Shutting Down).
_ENABLED_STATE = {
    PowerState.RUNNING: 2,
    PowerState.OFF: 3,
    PowerState.SAVED: 6,
    PowerState.PAUSED: 9,
    PowerState.PAUSED_CRITICAL: 9,
    PowerState.STARTING: 10,
    PowerState.STOPPING: 4,
}
