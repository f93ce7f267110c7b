"""Hyper-V / FailoverClusters handlers of the WinRM test peer, answering from a simulated cluster.

:class:`ClusterModel` holds a simulated cluster built by
``ventana.backends.sim.build_inventory`` (the same data the built-in
simulator shows) behind a lock; tests change it between polls
(:meth:`ClusterModel.set_power`, :meth:`~ClusterModel.add_checkpoint`,
:meth:`~ClusterModel.remove_checkpoint`, :meth:`~ClusterModel.set_free`).
:func:`build_hyperv_registry` serves it as one node would: ``node=None``
answers for every VM of the cluster (one endpoint for the whole cluster),
``node="HV-NODE-01"`` only for the VMs that node hosts (one peer per node).

Objects are shaped like a real server's output: plain type names
(``Microsoft.HyperV.PowerShell.VirtualMachine``…), enums by name (numbered
as the host's module numbers them), nested objects as objects (CLIXML
flattens them to their ToString at the default depth), sizes as
Int64/UInt64, Guids as Guids, DateTime as DateTime. ``ConvertTo-Json``
follows PowerShell's depth rules (``pipeline.py``); the one script the
client sends — ``$input | Select-Object -Property … | ConvertTo-Json
-Compress`` with calculated ``[string]`` properties — is understood, any
other script refused. ``Select-Object -Property`` projects them into
``Selected.<type>`` objects with note properties, as PowerShell does;
``ConvertTo-Json`` writes what Windows PowerShell 5.1 writes (enums as
numbers, DateTime as ``\\/Date(ms)\\/``). Within a statement, cmdlets pass
light :class:`Row` objects to the next one (``Get-VMSnapshot |
Get-VMHardDiskDrive | Get-VHD`` works as on a host: drives of piped VMs or
checkpoints, ``Get-VHD`` taking ``Path`` from the pipeline); only what
reaches the client is built as psrpcore objects.

Commands: Get-ClusterNode, Get-ClusterSharedVolume,
Get-ClusterSharedVolumeState, Get-CimInstance (Win32_ComputerSystem,
root/MSCluster MSCluster_DiskPartition and MSCluster_ClusterSharedVolume with
its BackupState — :meth:`ClusterModel.set_in_backup`), ConvertTo-Json, Get-VM, Get-VMSnapshot,
Get-VMHardDiskDrive, Get-VHD, Get-VMReplication, Get-VMIntegrationService,
Get-Service, Get-ItemPropertyValue, Select-Object (-Property, -ExpandProperty),
the VM event stream (Register-CimIndicationEvent on Msvm_ComputerSystem,
Wait-Event, Get-Event, Remove-Event, Unregister-Event: events are queued as
:meth:`ClusterModel.set_power` changes a VM of this node; WQL queries on
``Msvm_VirtualSystemSettingData`` and ``MSCluster_DiskPartition`` are served by
polling at their ``WITHIN`` interval, ``indications.py``; ``model.indications
= False`` refuses the subscription; queues are per endpoint and
SourceIdentifier, not per runspace as on a real server), and the mutating
commands: Remove-VMSnapshot (``Get-VM -Id … | Remove-VMSnapshot -Name *``:
merges newest first with progress records; ``model.merge_fail_after``
makes it fail part-way with a terminating error, ``model.merge_step_s``
sets its pace; ``Get-VMSnapshot -Id … | Remove-VMSnapshot`` merges one),
Update-VMVersion; the clean-up ones — Optimize-VHD (refused while the file's
VM is not Off; the file keeps ``model.compact_keep`` of its size, the CSV
gains the rest), Remove-ClusterGroup -VMId, Remove-VM (Off and no cluster
role; leaves the files), Remove-Item -LiteralPath (one file; ``model.locked``
files are "in use"), Test-Path; and the rebuild's — Get-VMNetworkAdapter(+Vlan),
Get-VMFirmware (BootOrder), Get-VMBios, Stop-VM, Start-VM, Convert-VHD,
New-VM -NoVHD, Set-VMProcessor, Set-VMMemory, Remove-/Add-VMNetworkAdapter,
Set-VMNetworkAdapterVlan, Add-VMHardDiskDrive, Set-VMFirmware,
Add-ClusterVirtualMachineRole, Rename-VM, Set-VM -AutomaticStartAction.
Per-VM host facts the inventory lacks (drive slots, NICs, firmware) are
derived from the VM's name; ``model.system_drive`` puts a VM's OS on another
drive and ``model.prepend_boot_entries`` makes Add-VMHardDiskDrive put the
new drive first in the boot order (the wrong-boot-device incident).

Start it by hand (one endpoint serving the whole cluster)::

    VENTANA_TEST_WINRM_PASSWORD=... .venv/bin/python -m tests.peers.winrm \\
        --port 5986 --commands tests.peers.winrm.hyperv:build_registry

Modules (one per cmdlet family)
-------------------------------
``model.py``        :class:`ClusterModel`, the simulated cluster
``profile.py``      :class:`HostProfile`: the host modes (server2019, server2016,
                    german, spellings), each behaviour with its published source
``endpoint.py``     :class:`Endpoint`: what one node's handlers share
``enums.py``        the Hyper-V / FailoverClusters enums sent
``wire.py``         :class:`Row`, object building, errors, name filters
``pipeline.py``     Select-Object, ConvertTo-Json
``cluster.py``      Get-ClusterNode, CSVs, cluster roles
``cim.py``          Get-CimInstance, the CIM event stream
``indications.py`` WQL event queries served by polling, as WMI does (checkpoints:
                    Msvm_VirtualSystemSettingData; CSV space: MSCluster_DiskPartition)
``vms.py``          Get-VM and the VM-level cmdlets
``checkpoints.py``  Get-VMSnapshot, Remove-VMSnapshot
``storage.py``      drives and disk files
``devices.py``      network adapters, firmware, BIOS
``host.py``         Get-Service, Get-ItemPropertyValue
``registry.py``     :func:`build_hyperv_registry`
"""

from .model import BACKUP_SERVICE, BACKUP_VERSION_KEY, ClusterModel, volume_guid
from .registry import build_hyperv_registry, build_registry

__all__ = [
    "BACKUP_SERVICE",
    "BACKUP_VERSION_KEY",
    "ClusterModel",
    "build_hyperv_registry",
    "build_registry",
    "volume_guid",
]
