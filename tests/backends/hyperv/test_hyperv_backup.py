"""Backup readiness through the real Hyper-V backend, against the WinRM test endpoint.

Each fact is served both ways — present and missing, healthy and broken,
readable and refused — and the findings engine on the store the backend
feeds shows the finding raised, cleared, or "not checked" with the reason:

- the agent (Win32_Service by display name, CIM_DataFile version,
  Get-NetTCPConnection): BACKUP_AGENT_MISSING / _STOPPED / _OLD (the Avamar
  floor 19.10) / _START_MODE / _PORTS_CLOSED / _NOT_CHECKED;
- each VM (the VSS integration service by id, KVP guest OS, pass-through
  disks): BACKUP_OFFLINE_ONLY with the conditions checked and not checked,
  BACKUP_NOT_CHECKED when a read failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from peers.winrm.fixture import PeerHandle, start_winrm_peer
from peers.winrm.hyperv import ClusterModel, build_hyperv_registry
from peers.winrm.hyperv.backup_state import AGENT_DISPLAY_NAME
from test_hyperv_backend import Feed, backend_for, make_model

from ventana.backends.hyperv.backup import CAMPAIGN_PORTS, executable, kvp_items
from ventana.backends.hyperv.commands import READ_CMDLETS
from ventana.state import findings as F
from ventana.state.findings import FindingsEngine
from ventana.state.model import VM, Node, PowerState, ServiceState, Severity
from ventana.state.store import Store

CURRENT = "19.10.0.136"  # an Avamar 19.10 build: at the campaign's floor


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> Iterator[tuple[ClusterModel, PeerHandle]]:
    model = make_model(getattr(request, "param", "server2019"))
    first = next(iter(model.nodes))  # the node one endpoint for the cluster answers as
    set_node(model, first, backup_agent_version=CURRENT, backup_ports_closed=(),
             backup_agent_state=ServiceState.RUNNING)
    handle = start_winrm_peer(registry=build_hyperv_registry(model))
    try:
        yield model, handle
    finally:
        handle.stop()


def set_node(model: ClusterModel, name: str, **changes: Any) -> None:
    with model.lock:
        model.nodes[name] = dataclasses.replace(model.nodes[name], **changes)
        model.changed()


async def started(handle: PeerHandle, **kwargs: Any) -> tuple[Feed, Store, FindingsEngine]:
    # The campaign's defaults: no service name configured, the version from the file.
    backend = backend_for(handle, backup_service=None, backup_version_key=None,
                          backup_interval=0, **kwargs)
    store = Store()
    engine = FindingsEngine(store).attach()
    feed = Feed(backend, store)
    return feed, store, engine


def node_of(store: Store, model: ClusterModel) -> Node:
    node = store.node(next(iter(model.nodes)))
    assert node is not None
    return node


def codes(engine: FindingsEngine, target: str) -> dict[str, F.LiveFinding]:
    return {f.code: f for f in engine.for_target(target)}


@pytest.mark.timeout(60)
async def test_agent_facts_are_read_and_each_finding_raised_and_cleared(
        peer: tuple[ClusterModel, PeerHandle]) -> None:
    model, handle = peer
    name = next(iter(model.nodes))
    target = f"node:{name}"
    feed, store, engine = await started(handle)
    try:
        await feed.until(lambda: store.node(name) is not None
                         and store.node(name).backup_agent_name is not None, 20, "agent read")
        node = node_of(store, model)
        assert (node.backup_agent_state, node.backup_agent_version, node.backup_agent_name,
                node.backup_agent_start_mode, node.backup_ports_closed, node.backup_unchecked
                ) == (ServiceState.RUNNING, CURRENT, AGENT_DISPLAY_NAME, "Auto", (), ())
        agent_codes = {F.AGENT_MISSING, F.AGENT_STOPPED, F.AGENT_OLD, F.AGENT_START_MODE,
                       F.AGENT_PORTS_CLOSED, F.AGENT_NOT_CHECKED}
        assert not agent_codes & set(codes(engine, target))

        # Older than the Avamar floor (19.10), started by hand, two ports not listening.
        set_node(model, name, backup_agent_version="19.4.0.116", backup_ports_closed=(29000,
                                                                                      30002))
        model.backup.start_mode[name] = "Manual"
        await feed.until(lambda: {F.AGENT_OLD, F.AGENT_START_MODE, F.AGENT_PORTS_CLOSED}
                         <= set(codes(engine, target)), 20, "old, manual, closed")
        found = codes(engine, target)
        assert "19.4.0.116 is older than 19.10" in found[F.AGENT_OLD].message
        assert "'Manual'" in found[F.AGENT_START_MODE].message
        assert "29000, 30002" in found[F.AGENT_PORTS_CLOSED].message

        # Stopped: critical; the ports are not checked while it is stopped.
        set_node(model, name, backup_agent_state=ServiceState.STOPPED)
        await feed.until(lambda: F.AGENT_STOPPED in codes(engine, target), 20, "stopped")
        assert codes(engine, target)[F.AGENT_STOPPED].severity is Severity.CRITICAL
        assert F.AGENT_PORTS_CLOSED not in codes(engine, target)

        # Uninstalled: the query answers nothing.
        set_node(model, name, backup_agent_state=ServiceState.MISSING)
        await feed.until(lambda: F.AGENT_MISSING in codes(engine, target), 20, "missing")
        assert F.AGENT_STOPPED not in codes(engine, target)

        # Healthy again: every agent finding clears.
        set_node(model, name, backup_agent_state=ServiceState.RUNNING,
                 backup_agent_version=CURRENT, backup_ports_closed=())
        model.backup.start_mode[name] = "Auto"
        await feed.until(lambda: not agent_codes & set(codes(engine, target)), 20, "cleared")
        sent = {n for s in feed.backend.sessions() for n in s.sent}
        assert "Get-NetTCPConnection" in sent and sent <= READ_CMDLETS
    finally:
        await feed.close()


@pytest.mark.timeout(60)
async def test_an_unreadable_agent_fact_is_not_checked_with_the_reason(
        peer: tuple[ClusterModel, PeerHandle]) -> None:
    model, handle = peer
    name = next(iter(model.nodes))
    target = f"node:{name}"
    model.backup.refuse[name] = {"ports"}
    model.backup.exe_missing.add(name)
    feed, store, engine = await started(handle)
    try:
        await feed.until(lambda: F.AGENT_NOT_CHECKED in codes(engine, target), 20,
                         "not checked")
        node = node_of(store, model)
        assert node.backup_agent_state is ServiceState.RUNNING
        assert node.backup_agent_version is None and node.backup_ports_closed is None
        message = codes(engine, target)[F.AGENT_NOT_CHECKED].message
        assert "version:" in message and "agent.exe was not found" in message
        assert "ports:" in message and "Access denied" in message
        # Never guessed: no version → no AGENT_OLD; unknown ports → no PORTS_CLOSED.
        assert not {F.AGENT_OLD, F.AGENT_PORTS_CLOSED} & set(codes(engine, target))

        # A transition state is neither running nor stopped: not checked, not "stopped".
        model.backup.refuse[name] = {"service"}
        await feed.until(lambda: "Win32_Service" in codes(engine, target).get(
            F.AGENT_NOT_CHECKED, F.LiveFinding("", "", Severity.INFO, "")).message, 20,
            "the service read refused")
        assert node_of(store, model).backup_agent_state is ServiceState.UNKNOWN
        model.backup.refuse.clear()
        model.backup.state[name] = "Start Pending"
        await feed.until(lambda: "Start Pending" in codes(engine, target).get(
            F.AGENT_NOT_CHECKED, F.LiveFinding("", "", Severity.INFO, "")).message, 20,
            "a pending state")
        assert not {F.AGENT_STOPPED, F.AGENT_MISSING} & set(codes(engine, target))
    finally:
        await feed.close()


def running_vm(model: ClusterModel, node: str, *, linux: bool = False) -> VM:
    return next(v for v in model.vms_of(None) if v.power is PowerState.RUNNING
                and v.node_id == node and v.name.startswith(("lnx-", "fw-")) is linux)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("peer", ["server2019", "german"], indirect=True)
async def test_online_backup_eligibility_per_vm(peer: tuple[ClusterModel, PeerHandle]) -> None:
    model, handle = peer
    node = next(iter(model.nodes))
    vm = running_vm(model, node)
    target = f"vm:{vm.id}"
    feed, store, engine = await started(handle)
    try:
        await feed.until(lambda: (v := store.vm(vm.id)) is not None
                         and v.vss_service is not None, 20, "the VM's backup facts")
        got = store.vm(vm.id)
        assert got is not None
        # The VSS component is found by its id, also where its Name is localized (german).
        assert (got.vss_service, got.guest_windows, got.passthrough_disks,
                got.backup_unchecked, got.cluster_group_state) == ("ok", True, (), (), "Online")
        assert got.guest_os == "Windows Server 2019 Datacenter"
        assert F.BACKUP_OFFLINE_ONLY not in codes(engine, target)

        # The Backup integration service disabled, a pass-through disk attached.
        model.backup.ic_disabled.add(("vss", vm.id))
        model.backup.passthrough[vm.id] = [3]
        await feed.until(lambda: F.BACKUP_OFFLINE_ONLY in codes(engine, target), 20, "offline")
        f = codes(engine, target)[F.BACKUP_OFFLINE_ONLY]
        assert f.severity is Severity.WARNING
        assert "Backup (volume shadow copy) integration service is disabled" in f.message
        assert "pass-through disk(s) physical disk 3 (SCSI 0:" in f.message
        assert "saved state" in f.message
        assert "Not checked: dynamic disks and non-NTFS volumes" in f.message
        # The pass-through disk is no file: the VM's disks are what they were.
        assert store.vm(vm.id).disk_ids == vm.disk_ids  # type: ignore[union-attr]

        # The VM's cluster role not online; then a role renamed: not checked.
        model.backup.ic_disabled.clear()
        model.backup.passthrough.clear()
        model.backup.group_state[vm.id] = "PartialOnline"
        await feed.until(lambda: "cluster group is PartialOnline" in codes(engine, target).get(
            F.BACKUP_OFFLINE_ONLY, F.LiveFinding("", "", Severity.INFO, "")).message, 20,
            "group not online")
        model.backup.group_state.clear()
        model.group_names[vm.id] = "SQL Server (renamed)"
        await feed.until(lambda: F.BACKUP_NOT_CHECKED in codes(engine, target), 20, "renamed")
        assert "no VM role named after the VM" in codes(engine, target)[
            F.BACKUP_NOT_CHECKED].message
        model.group_names.pop(vm.id)

        # Enabled but not answering.
        model.backup.ic_disabled.clear()
        model.backup.passthrough.clear()
        model.backup.ic_no_contact.add(("vss", vm.id))
        await feed.until(lambda: "not answering (NoContact)" in codes(engine, target).get(
            F.BACKUP_OFFLINE_ONLY, F.LiveFinding("", "", Severity.INFO, "")).message, 20,
            "no contact")

        # Healthy again: cleared.
        model.backup.ic_no_contact.clear()
        await feed.until(lambda: F.BACKUP_OFFLINE_ONLY not in codes(engine, target), 20,
                         "cleared")
    finally:
        await feed.close()


@pytest.mark.timeout(60)
async def test_guest_os_from_kvp_linux_silent_and_refused(
        peer: tuple[ClusterModel, PeerHandle]) -> None:
    model, handle = peer
    node = next(iter(model.nodes))
    vm = running_vm(model, node)
    target = f"vm:{vm.id}"
    model.backup.guest_os[vm.id] = ("Ubuntu 22.04.4 LTS", "")  # the Linux daemon: no platform
    feed, store, engine = await started(handle)
    try:
        await feed.until(lambda: F.BACKUP_OFFLINE_ONLY in codes(engine, target), 20, "linux")
        assert "the guest is not Windows (it reports 'Ubuntu 22.04.4 LTS')" in codes(
            engine, target)[F.BACKUP_OFFLINE_ONLY].message

        # A guest that reports nothing through KVP: not checked, not "Linux".
        model.backup.guest_os.clear()
        model.backup.no_kvp.add(vm.id)
        await feed.until(lambda: F.BACKUP_NOT_CHECKED in codes(engine, target), 20, "no KVP")
        assert F.BACKUP_OFFLINE_ONLY not in codes(engine, target)
        assert "reports nothing through KVP" in codes(engine, target)[
            F.BACKUP_NOT_CHECKED].message
        assert store.vm(vm.id).guest_windows is None  # type: ignore[union-attr]

        # The node refuses the KVP query: every VM says so.
        model.backup.no_kvp.clear()
        model.backup.refuse[node] = {"kvp"}
        await feed.until(lambda: "guest OS: " in codes(engine, target).get(
            F.BACKUP_NOT_CHECKED, F.LiveFinding("", "", Severity.INFO, "")).message
            and "Access denied" in codes(engine, target)[F.BACKUP_NOT_CHECKED].message,
            20, "refused")
    finally:
        await feed.close()


@pytest.mark.timeout(60)
async def test_smb_layout_one_share_depth_and_links_need_delegation(
        peer: tuple[ClusterModel, PeerHandle]) -> None:
    model, handle = peer
    node = next(iter(model.nodes))
    vm = running_vm(model, node)
    target = f"vm:{vm.id}"
    feed, store, engine = await started(handle)
    smb = {F.SMB_SPREAD, F.SMB_PATH_DEEP, F.SMB_LINKS_NOT_CHECKED}
    try:
        await feed.until(lambda: bool(getattr(store.vm(vm.id), "storage_paths", ())), 20,
                         "the VM's file locations")
        got = store.vm(vm.id)
        assert got is not None and got.smb_link_check is None
        folder = model.vm_folder(vm)
        assert folder in got.storage_paths  # configuration, checkpoints, smart paging
        assert all(d.path in got.storage_paths for d in model.disks.values()
                   if d.vm_id == vm.id)  # every file of every chain
        assert not smb & set(codes(engine, target))

        # Configuration deep under one share, checkpoints on another, disks on a CSV.
        deep = "\\\\FS-SMB01\\VMs\\a\\b\\c\\d\\e\\f\\" + vm.name
        model.backup.locations[vm.id] = {"ConfigurationLocation": deep,
                                         "SnapshotFileLocation": "\\\\FS-SMB02\\Snaps"}
        await feed.until(lambda: smb <= set(codes(engine, target)), 20, "SMB findings")
        found = codes(engine, target)
        assert "more than 5 folder levels" in found[F.SMB_PATH_DEEP].message
        links = found[F.SMB_LINKS_NOT_CHECKED]
        assert links.severity is Severity.INFO
        assert "not checked: needs delegation" in links.message
        assert "\\\\fs-smb01\\vms" in links.message and "\\\\fs-smb02\\snaps" in links.message

        model.backup.locations.clear()
        await feed.until(lambda: not smb & set(codes(engine, target)), 20, "cleared")
    finally:
        await feed.close()


@pytest.mark.timeout(60)
async def test_backup_checks_off_sends_none_of_the_reads(
        peer: tuple[ClusterModel, PeerHandle]) -> None:
    model, handle = peer
    feed, store, engine = await started(handle, backup_checks=False)
    try:
        await feed.until(lambda: store.node(next(iter(model.nodes))) is not None, 20, "read")
        for _ in range(200):  # a second poll (it changes nothing: no event to wait on)
            if model.calls.count("Get-VM") >= 2:
                break
            await asyncio.sleep(0.05)
        assert model.calls.count("Get-VM") >= 2
        sent = {n for s in feed.backend.sessions() for n in s.sent}
        assert not {"Get-NetTCPConnection", "Get-ClusterGroup", "Get-VMIntegrationService"} & sent
        assert not [c for c in model.calls if "win32_service" in c or "kvp" in c]
        node = node_of(store, model)
        assert node.backup_agent_state is ServiceState.UNKNOWN and node.backup_unchecked == ()
        assert not [f for f in engine.findings() if f.code.startswith("BACKUP_AGENT")]
    finally:
        await feed.close()


def test_commands_md_shows_every_backup_read_as_sent() -> None:
    from pathlib import Path

    from ventana.backends.hyperv import commands as c

    doc = (Path(c.__file__).parent / "COMMANDS.md").read_text()
    reads = [c.get_agent_services(("Dell Avamar Plug-in Service for Windows",)),
             c.get_file_version("C:\\Program Files\\Vendor\\agent.exe"),
             c.get_listening_ports(CAMPAIGN_PORTS),
             c.get_registry_value("HKLM:\\SOFTWARE\\Vendor\\Agent", "Version"),
             c.get_integration_services(), c.get_guest_kvp(), c.get_vm_locations(),
             c.get_cluster_groups(),
             c.get_hard_disk_drives()]
    for command in reads:
        assert command.as_powershell() in doc, command.as_powershell()
        assert {n for x in command.pipeline() for n in x.commands} <= READ_CMDLETS


def test_parsing_edges() -> None:
    assert executable('"C:\\Program Files\\A B\\agent.exe" --service') == \
        "C:\\Program Files\\A B\\agent.exe"
    assert executable("C:\\Agent\\agent.EXE -k x") == "C:\\Agent\\agent.EXE"
    item = ('<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem"><PROPERTY NAME="Data" '
            'TYPE="string"><VALUE>Windows\x1b[2J</VALUE></PROPERTY><PROPERTY NAME="Name" '
            'TYPE="string"><VALUE>OSName</VALUE></PROPERTY></INSTANCE>')
    assert kvp_items([item]) == {"OSName": "Windows\\x1b[2J"}  # control characters escaped
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaa">]><INSTANCE>&a;</INSTANCE>'
    assert kvp_items([bomb, "<not xml", None]) == {}
    assert CAMPAIGN_PORTS == F.BACKUP_AGENT_PORTS
