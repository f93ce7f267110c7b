"""How the simulated hosts differ: :class:`HostProfile`, one mode per published behaviour.

Each mode changes only what a real host of that kind sends, and each
difference cites where it is published:

``server2019``  Hyper-V module 2.0.0.0 as on Windows Server 2019/2022, English.
``server2016``  VMState numbered as on Server 2016, whose module lacks
                ``Hibernated`` and ``ComponentServicing``: every member after
                ``ForceReboot`` is 2 lower (eryph-org/eryph
                ``VirtualMachineState.cs``: "Starting from here the numerical
                values differ between the Windows versions. Hibernated and
                ComponentServicing are not present on at least Windows Server
                2016").
``german``      A German host: integration-service names are the localized
                Captions of the ``Msvm_*ComponentSettingData`` classes
                (PlagueHO's "Get an Array of Localized Hyper-V Integration
                Service Names", gist 2281e18279d78aceb7db283681ebd95b), so
                ``Get-VMIntegrationService -Name 'Heartbeat'`` finds nothing:
                the service is called "Takt".
``spellings``   Node names as real clusters spell them: Get-ClusterNode keeps the
                name the node joined with (lower case here), Win32_ComputerSystem
                reports the NetBIOS name (upper case), Get-VM's ``ComputerName``
                the name the cmdlet connected to (the FQDN here) — see
                Get-VM's ``-ComputerName``: "NetBIOS names, IP addresses, and
                fully qualified domain names are allowable" (MicrosoftDocs
                windows-powershell-docs, hyper-v/Get-VM.md).

Every mode sends ``ConvertTo-Json`` output with PowerShell's real depth
semantics (``pipeline.py``); tests run the console's Hyper-V tests against
each (``MODES``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: English and German integration-service names (the Captions a host reports).
SERVICE_NAMES = {
    "en": {"heartbeat": "Heartbeat", "shutdown": "Shutdown", "kvp": "Key-Value Pair Exchange",
           "timesync": "Time Synchronization", "vss": "VSS",
           "guest": "Guest Service Interface"},
    "de": {"heartbeat": "Takt", "shutdown": "Herunterfahren des Betriebssystems",
           "kvp": "Datenaustausch", "timesync": "Zeitsynchronisierung",
           "vss": "Sicherung (Volumeschattenkopie)", "guest": "Gastdienstschnittstelle"},
}


@dataclass(frozen=True, slots=True)
class HostProfile:
    """What kind of Windows host every node of the simulated cluster is."""

    name: str = "server2019"
    server2016: bool = False  # VMState numbered as on Server 2016
    language: str = "en"  # integration-service names
    spellings: bool = False  # node names differ in case and short/FQDN form
    domain: str = "lab.example"

    def service(self, key: str) -> str:
        """An integration service's display name in this host's language."""
        return SERVICE_NAMES[self.language][key]

    def cluster_node(self, node_id: str) -> str:
        """A node's name as Get-ClusterNode (and a CSV's owner) reports it."""
        return node_id.lower() if self.spellings else node_id

    def computer(self, node_id: str) -> str:
        """A node's name as Win32_ComputerSystem reports it (NetBIOS, upper case)."""
        return node_id.upper()

    def vm_host(self, node_id: str) -> str:
        """A node's name as Get-VM's ``ComputerName`` reports it."""
        return f"{node_id.lower()}.{self.domain}" if self.spellings else node_id


MODES = {
    "server2019": HostProfile(),
    "server2016": HostProfile("server2016", server2016=True),
    "german": HostProfile("german", language="de"),
    "spellings": HostProfile("spellings", spellings=True),
}
