"""What the simulated hosts answer about backup readiness beyond the inventory.

:class:`BackupHost` lives on :class:`ClusterModel` as ``model.backup``; tests
change it between polls. The agent's running state, version and closed ports
come from each node of the inventory (``Node.backup_agent_state``,
``backup_agent_version``, ``backup_ports_closed``); what the inventory has no
field for is here. Handlers: ``backup.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The service as the campaign's Services console shows it (its display name); the
#: service name itself is the test endpoint's (BACKUP_SERVICE).
AGENT_DISPLAY_NAME = "Dell Avamar Plug-in Service for Windows"
AGENT_EXE = "C:\\Program Files\\VentanaTest\\Agent\\bin\\agent.exe"


@dataclass
class BackupHost:
    """Backup facts of the simulated hosts (node name -> …, VM id -> …)."""

    #: Win32_Service.StartMode per node (default "Auto").
    start_mode: dict[str, str] = field(default_factory=dict)
    #: Win32_Service.State per node overriding the inventory's (e.g. "Start Pending").
    state: dict[str, str] = field(default_factory=dict)
    #: Nodes whose agent executable is gone (CIM_DataFile answers nothing).
    exe_missing: set[str] = field(default_factory=set)
    #: Reads a node refuses with "Access denied": "service", "file", "ports", "kvp".
    refuse: dict[str, set[str]] = field(default_factory=dict)
    #: Integration services (key, VM id) disabled / enabled but not answering.
    ic_disabled: set[tuple[str, str]] = field(default_factory=set)
    ic_no_contact: set[tuple[str, str]] = field(default_factory=set)
    #: KVP: VM id -> (OSName, OSPlatformId or "" when the guest does not send it);
    #: default from the VM's name (lnx-/fw- Linux, else Windows Server); VMs with no KVP.
    guest_os: dict[str, tuple[str, str]] = field(default_factory=dict)
    no_kvp: set[str] = field(default_factory=set)
    #: Pass-through disks: VM id -> host disk numbers.
    passthrough: dict[str, list[int]] = field(default_factory=dict)
    #: A VM's configuration / checkpoint / smart paging folders where they are not the
    #: folder of its first disk: VM id -> {"ConfigurationLocation": …, …}.
    locations: dict[str, dict[str, str]] = field(default_factory=dict)
    #: A clustered VM's role state overriding the default (Online while it runs).
    group_state: dict[str, str] = field(default_factory=dict)

    def locations_of(self, vm_id: str, folder: str) -> dict[str, str]:
        """Get-VM's ConfigurationLocation, SnapshotFileLocation and SmartPagingFilePath
        (Set-VM -SnapshotFileLocation / -SmartPagingFilePath, MicrosoftDocs
        windows-powershell-docs hyper-v/Set-VM.md): by default all the VM's folder."""
        out = dict.fromkeys(("ConfigurationLocation", "SnapshotFileLocation",
                             "SmartPagingFilePath"), folder)
        out.update(self.locations.get(vm_id, {}))
        return out

    def refused(self, node: str, what: str) -> bool:
        return what in self.refuse.get(node, set())
