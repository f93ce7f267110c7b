"""The rebuild workflow's six steps on a Hyper-V cluster node (state/rebuild.py drives them).

Each step re-reads what it depends on from the host, sends the cmdlets of
``commands`` (by the VM's Id, never by name), reports progress under the
step's task id and returns a ``StepResult`` whose ``data`` has the shapes
``backends/rebuild_runner.py`` and ``backends/sim/rebuild.py`` use:

- **capture**: Get-VM (generation, vCPU, startup memory, dynamic memory,
  version, replication), Get-VMHardDiskDrive (controller type/number/
  location of every disk), Get-VHD (sizes, the chain), Get-VMNetworkAdapter
  (switch, MAC, the guest's addresses as the host sees them through KVP)
  and Get-VMNetworkAdapterVlan per NIC, Get-VMFirmware and its BootOrder
  (Gen2: Secure Boot template, which disk boots first) or Get-VMBios (Gen1),
  Get-VMSnapshot, Get-VMIntegrationService.
  **Guest services are not read**: the host cannot list a guest's services;
  PowerShell Direct (``Invoke-Command -VMName``) needs credentials for the
  guest, which Ventana does not hold. The capture says so
  (``guest_reachable`` False, ``services`` None, ``services_note``), so the
  runner skips the services comparison and flags it, never claims it.
  IPv4 settings (addresses, prefix, gateway, DNS, DHCP) are what the
  guest's integration services report over KVP
  (``Msvm_GuestNetworkAdapterConfiguration``); a guest that reports
  nothing leaves them None.
- **merge**: Stop-VM when not Off — a guest shutdown (``-Force``: no prompt, the
  guest's Shutdown service checked first, nothing sent without it), or ``-TurnOff``
  when the operator ticked it on the plan — then Remove-VMSnapshot of
  every checkpoint (``Get-VM -Id … | Remove-VMSnapshot -Name *``), or — for a
  replicating VM — of every one but the newest, one by one by Id.
- **create**: Convert-VHD of each disk's current file (the whole chain) into
  a new folder, New-VM -NoVHD of the same generation, Set-VMProcessor,
  Set-VMMemory, the default NIC replaced by the captured ones
  (Add-VMNetworkAdapter -StaticMacAddress, Set-VMNetworkAdapterVlan),
  Add-VMScsiController for SCSI controllers beyond New-VM's one,
  Add-VMHardDiskDrive at the captured controller slots — **the system disk
  first**, so it is the first disk in the new firmware's boot order
  (``Set-VMFirmware -FirstBootDevice`` takes a device *object*, which a
  command sent with plain parameters cannot carry; the order is checked
  before the VM starts) — Set-VMFirmware -SecureBootTemplate (Gen2) and
  Add-ClusterVirtualMachineRole when the old VM was clustered.
- **verify_boot**: the new VM's boot order (Get-VMFirmware) must start with
  the captured system disk and carry the captured Secure Boot template —
  otherwise it is not started (it stays Off: the known state); then
  Start-VM and the Heartbeat integration service must turn Ok.
- **services**: what the host can see (integration services); guest
  services "unknown" (see capture).
- **keep_old**: Stop-VM if it runs, Rename-VM, Set-VM -AutomaticStartAction
  Nothing; the name is read back.

Failures: the host's refusal is FAILED with its message; a connection lost
after a mutating command was sent is UNKNOWN (the runner then writes what
to verify by hand). Nothing is retried.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Any

from ventana.state.derived import human_bytes
from ventana.state.model import Kind, Lun, TaskState

from ..base import StepResult
from . import commands as cmd
from .context import HyperVContext, HyperVNode
from .mapping import (
    as_id,
    as_int,
    path_key,
    power_state,
    props,
    replication_state,
    text,
)
from .merge import wait_background_merge
from .session import CommandFailed, NodeSession, SessionError

log = logging.getLogger(__name__)

_SLOT = re.compile(r"(SCSI|IDE)\s+controller\s+number\s+(\d+)\s+at\s+location\s+(\d+)",
                   re.IGNORECASE)
_NIC_NAME = re.compile(r"Name\s*=\s*'([^']*)'")
SERVICES_NOTE = ("guest services not read: the host cannot list them, and PowerShell Direct "
                 "(Invoke-Command -VMName) needs guest credentials, which Ventana does not hold")


class StepFailed(Exception):
    def __init__(self, result: StepResult) -> None:
        super().__init__(result.error)
        self.result = result


def _slot_of(device: Any) -> tuple[str, int, int] | None:
    """(controller type, number, location) of a boot entry's Device: a nested object
    (ConvertTo-Json's depth) or its ToString ("Hard Drive on SCSI controller number 0 at
    location 1")."""
    if isinstance(device, dict) and device.get("ControllerLocation") is not None:
        ctype = text(device.get("ControllerType"))
        ctype = {"0": "IDE", "1": "SCSI"}.get(ctype, ctype).upper()
        return ctype, as_int(device.get("ControllerNumber")), as_int(
            device.get("ControllerLocation"))
    match = _SLOT.search(text(device))
    if match:
        return match.group(1).upper(), int(match.group(2)), int(match.group(3))
    return None


def boot_entries(rows: list[Any]) -> list[dict[str, Any]]:
    """Get-VMFirmware's BootOrder rows → the capture's ``boot_order`` shape."""
    out: list[dict[str, Any]] = []
    for row in rows:
        p = props(row)
        device = p.get("Device")
        slot = _slot_of(device)
        kind = text(p.get("BootType"))
        if slot is not None:
            out.append({"type": "HardDiskDrive", "controller_type": slot[0],
                        "controller_number": slot[1], "controller_location": slot[2]})
        elif "networkadapter" in text(device).casefold() or kind == "Network":
            name = _NIC_NAME.search(text(device))
            out.append({"type": "NetworkAdapter", "name": name.group(1) if name else ""})
        else:
            out.append({"type": kind or "Unknown", "description": text(p.get("Description")),
                        "firmware_path": text(p.get("FirmwarePath"))})
    return out


_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return [text(v) for v in value] if isinstance(value, list) else [text(value)]


def _prefix(mask: str) -> int | None:
    """ "255.255.255.0" → 24; "24" → 24; anything else → None."""
    if mask.isdigit():
        return int(mask)
    if _IPV4.match(mask):
        bits = "".join(f"{int(x):08b}" for x in mask.split("."))
        return bits.count("1") if "01" not in bits else None
    return None


def guest_ipv4(addresses: Any, config: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The capture's ``ipv4`` of one NIC: the guest's IPv4 addresses (Get-VMNetworkAdapter)
    with prefix, gateway and DNS where its KVP configuration reports them (else None)."""
    ips = _list(config.get("IPAddresses")) or _list(addresses)
    subnets = _list(config.get("Subnets"))
    gateways = [g for g in _list(config.get("DefaultGateways")) if _IPV4.match(g)]
    dns = [d for d in _list(config.get("DNSServers")) if _IPV4.match(d)]
    out = []
    for i, ip in enumerate(ips):
        if not _IPV4.match(ip):
            continue
        out.append({"address": ip, "prefix": _prefix(subnets[i]) if i < len(subnets) else None,
                    "gateway": gateways[0] if gateways else None, "dns": dns or None,
                    "dhcp": config.get("DHCPEnabled") if config else None})
    return out or None


def first_disk(order: list[dict[str, Any]]) -> tuple[str, int, int] | None:
    disk = next((b for b in order if b.get("type") == "HardDiskDrive"), None)
    if disk is None:
        return None
    return (str(disk["controller_type"]).upper(), int(disk["controller_number"]),
            int(disk["controller_location"]))


class HyperVRebuild:
    """The rebuild steps for one backend (its node sessions, its inventory)."""

    #: verify_boot: how long to wait for the heartbeat after Start-VM.
    heartbeat_timeout_s = 600.0
    heartbeat_poll_s = 5.0

    def __init__(self, ctx: HyperVContext) -> None:
        self.ctx = ctx

    # -- shared ------------------------------------------------------------------
    def _node(self, vm_id: str, node_name: str = "") -> HyperVNode:
        vm = self.ctx.vm(vm_id)
        node = self.ctx.node_for(vm, node_name)
        if node is None:
            raise StepFailed(StepResult(TaskState.FAILED, error=(
                "the VM's node is not connected" if vm is not None
                else "the VM is not in the inventory") + "; nothing was sent"))
        return node

    def _progress(self, task_id: str, pct: float, message: str) -> None:
        self.ctx.tasks.progress(task_id, pct, message)

    @staticmethod
    async def _read(session: NodeSession, command: cmd.Command) -> list[dict[str, Any]]:
        return [props(o) for o in (await session.run(command)).output]

    async def _one(self, session: NodeSession, command: cmd.Command, what: str
                   ) -> dict[str, Any]:
        rows = await self._read(session, command)
        if not rows:
            raise StepFailed(StepResult(TaskState.FAILED, error=f"the host does not know {what}"))
        return rows[0]

    async def _guarded(self, coro: Any, sent_what: str) -> StepResult:
        """Run a step body; map host refusals to FAILED and lost connections to UNKNOWN."""
        if self.ctx.read_only:  # the executor checked too; this is below it
            return StepResult(TaskState.FAILED, error=f"{self.ctx.target} is read-only")
        try:
            return await coro
        except StepFailed as exc:
            return exc.result
        except CommandFailed as exc:
            return StepResult(TaskState.FAILED, error=str(exc))
        except SessionError as exc:
            return StepResult(TaskState.UNKNOWN, error=f"{exc} — {sent_what}; outcome "
                              "unknown, verify on the host")

    # -- capture -------------------------------------------------------------------
    async def capture(self, vm_id: str, task_id: str) -> StepResult:
        return await self._guarded(self._capture(vm_id, task_id), "only reads were sent")

    async def _capture(self, vm_id: str, task_id: str) -> StepResult:
        node = self._node(vm_id)
        s = node.session
        self._progress(task_id, 5, "Get-VM")
        vm = await self._one(s, cmd.get_vm_config(vm_id), "this VM")
        gen = as_int(vm.get("Generation")) or 1
        drives = await self._read(s, cmd.get_vm_drives(vm_id))
        leaves = [text(d.get("Path")) for d in drives]
        self._progress(task_id, 25, "Get-VHD")
        vhds = {path_key(text(r.get("Path"))): r
                for r in await self._read(s, cmd.get_vhds(leaves))} if leaves else {}
        self._progress(task_id, 45, "Get-VMNetworkAdapter")
        nic_rows = await self._read(s, cmd.get_vm_nics(vm_id))
        guest = {}
        if nic_rows:
            try:
                rows = await self._read(s, cmd.get_guest_network())
            except CommandFailed as exc:  # no rights on the class: addresses only
                log.info("guest IP configuration not readable: %s", exc)
                rows = []
            for r in rows:
                ident = text(r.get("InstanceID")).casefold()
                if vm_id.casefold() in ident:
                    guest[ident.rsplit("\\", 1)[-1]] = r
        nics = []
        for n in nic_rows:
            name = text(n.get("Name"))
            vlan_rows = await self._read(s, cmd.get_nic_vlan(vm_id, name))
            vlan = next((as_int(v.get("AccessVlanId")) for v in vlan_rows
                         if text(v.get("OperationMode")) == "Access"), 0)
            addresses = n.get("IPAddresses") or []
            if isinstance(addresses, str):
                addresses = [addresses]
            config = guest.get(text(n.get("Id")).casefold().rsplit("\\", 1)[-1], {})
            ipv4 = guest_ipv4(addresses, config)
            nics.append({"name": name, "switch": text(n.get("SwitchName")), "vlan": vlan,
                         "mac": text(n.get("MacAddress")).replace("-", "").upper(),
                         "dynamic_mac": bool(n.get("DynamicMacAddressEnabled")),
                         "ipv4": ipv4 or None})
        self._progress(task_id, 65, "Get-VMFirmware" if gen == 2 else "Get-VMBios")
        firmware: dict[str, Any]
        if gen == 2:
            fw = await self._one(s, cmd.get_firmware(vm_id), "this VM's firmware")
            order = boot_entries(await self._read(s, cmd.get_boot_order(vm_id)))
            firmware = {"boot_order": order, "secure_boot": text(fw.get("SecureBoot")) == "On",
                        "secure_boot_template": text(fw.get("SecureBootTemplate"))}
        else:
            bios = await self._one(s, cmd.get_bios(vm_id), "this VM's BIOS")
            startup = bios.get("StartupOrder") or []
            # Names, converted on the host ([string[]]): never decoded by number.
            firmware = {"bios_startup_order": [text(x) for x in startup]}
        self._progress(task_id, 80, "Get-VMSnapshot")
        checkpoints = await self._read(s, cmd.get_vm_checkpoints(vm_id))
        components = await self._read(s, cmd.get_vm_integration(vm_id))
        heartbeat = text(vm.get("Heartbeat"))  # Get-VM's own, not a localized service name
        boot_slot = first_disk(firmware.get("boot_order") or []) if gen == 2 else None
        name = text(vm.get("Name"))
        now = datetime.now(UTC)
        first_path = leaves[0] if leaves else text(vm.get("Path"))
        parts = first_path.split("\\")
        root = "\\".join(parts[:3]) if len(parts) > 3 else first_path.rsplit("\\", 1)[0]
        folder = f"{root}\\{name}-rebuilt-{now:%Y%m%d}\\"
        disks = []
        for j, d in enumerate(drives):
            path = text(d.get("Path"))
            info = vhds.get(path_key(path), {})
            ctype = text(d.get("ControllerType")).upper() or ("IDE" if gen == 1 else "SCSI")
            slot = (ctype, as_int(d.get("ControllerNumber")), as_int(d.get("ControllerLocation")))
            system = slot == boot_slot if boot_slot else (gen == 1 and slot == ("IDE", 0, 0))
            stem = re.sub(r"_[0-9A-Fa-f-]{36}$", "", path.rsplit("\\", 1)[-1].rsplit(".", 1)[0])
            base = self._base_of(vm_id, path)
            known = next((x for x in self.ctx.vm_disks(vm_id)
                          if path_key(x.path) == path_key(base)), None)
            disks.append({
                "index": j, "path": base, "leaf_path": path,
                "format": text(info.get("VhdFormat")),
                "size": known.size_bytes if known else as_int(info.get("FileSize")),
                "max": as_int(info.get("Size")), "controller_type": slot[0],
                "controller_number": slot[1], "controller_location": slot[2],
                "system": system, "new_path": f"{folder}{stem}.vhdx",
            })
        if disks and not any(d["system"] for d in disks) and gen == 1:
            disks[0]["system"] = True
        slots = {(d["controller_type"], d["controller_number"], d["controller_location"]):
                 d["path"] for d in disks}
        for entry in firmware.get("boot_order") or []:
            if entry.get("type") == "HardDiskDrive":
                entry["path"] = slots.get((entry["controller_type"], entry["controller_number"],
                                           entry["controller_location"]), "")
        for i, d in enumerate(disks):  # two files from one stem must not collide
            if any(o["new_path"].casefold() == d["new_path"].casefold() for o in disks[:i]):
                d["new_path"] = d["new_path"][:-5] + f"-{i}.vhdx"
        vm_entity = self.ctx.vm(vm_id)
        lun = ""
        if vm_entity is not None and vm_entity.lun_id:
            entity = self.ctx.entity(Kind.LUN, vm_entity.lun_id)
            lun = (entity.name if isinstance(entity, Lun) else "") or vm_entity.lun_id
        data = {
            "vm_id": as_id(text(vm.get("Id"))) or vm_id, "name": name,
            "node": text(vm.get("ComputerName")) or node.computer, "lun": lun,
            "generation": gen, "config_version": text(vm.get("Version")),
            "vcpus": as_int(vm.get("ProcessorCount")),
            "memory_mb": as_int(vm.get("MemoryStartup")) // (1024 * 1024),
            "dynamic_memory": bool(vm.get("DynamicMemoryEnabled")),
            "power": power_state(vm.get("State")).value, "os": "unknown",
            "firmware": firmware, "nics": nics,
            "disks": disks, "new_folder": folder, "clustered": bool(vm.get("IsClustered")),
            "checkpoints": [{"name": text(c.get("Name")), "kind": text(c.get("SnapshotType")),
                             "created": (c["CreationTime"].isoformat()
                                         if isinstance(c.get("CreationTime"), datetime)
                                         else text(c.get("CreationTime"))),
                             "id": as_id(text(c.get("Id")))} for c in checkpoints],
            "replication": {"state": replication_state(
                                vm.get("ReplicationState") or "Disabled").value,
                            "target": (vm_entity.replica_target if vm_entity is not None
                                       else None) or None},
            "heartbeat": heartbeat or "none",
            "integration_services": {text(c.get("Name")): bool(c.get("Enabled"))
                                     for c in components},
            "guest_reachable": False, "services": None, "services_note": SERVICES_NOTE,
            "captured_at": now.isoformat(),
        }
        return StepResult(TaskState.OK, data=data, detail=(
            f"configuration captured: Gen{gen}, {data['vcpus']} vCPU, {data['memory_mb']} MB, "
            f"{len(disks)} disk(s), {len(nics)} NIC(s); {SERVICES_NOTE}"))

    def _base_of(self, vm_id: str, path: str) -> str:
        """The first file of a chain, following ParentPath through the inventory."""
        by_path = {path_key(d.path): d for d in self.ctx.vm_disks(vm_id)}
        seen: set[str] = set()
        while path_key(path) in by_path and path_key(path) not in seen:
            seen.add(path_key(path))
            parent = by_path[path_key(path)].parent_path
            if not parent:
                break
            path = parent
        return path

    # -- merge ---------------------------------------------------------------------
    async def merge(self, vm_id: str, task_id: str, to_last_parent: bool,
                    turn_off: bool = False) -> StepResult:
        return await self._guarded(self._merge(vm_id, task_id, to_last_parent, turn_off),
                                   "Stop-VM or Remove-VMSnapshot was sent")

    async def _stop(self, node: HyperVNode, vm_id: str, task_id: str,
                    turn_off: bool = False) -> None:
        """Stop the VM before its chain is touched.

        Stop-VM's semantics (MicrosoftDocs windows-powershell-docs, hyper-v/Stop-VM.md):
        plain, it "shuts down … through the guest operating system"; ``-Force`` does so
        "regardless of any unsaved application data. Hyper-V gives the guest five minutes
        to save data, then forces a shutdown" (it also suppresses the prompt);
        ``-TurnOff`` "is equivalent to disconnecting the power from the virtual machine,
        and can result in loss of unsaved data". The guest route needs the guest's
        Shutdown integration service. ``turn_off`` is the operator's explicit choice on
        the plan; without it the service is checked first and nothing is sent when it
        does not answer."""
        session = node.session
        vm = await self._one(session, cmd.get_vm_check(vm_id), "this VM")
        if text(vm.get("State")) != "Off" and turn_off:
            self._progress(task_id, 2, "Stop-VM -TurnOff: turning the VM off (operator's "
                           "choice on the plan)")
            await session.run(cmd.stop_vm(vm_id, turn_off=True))
            vm = await self._one(session, cmd.get_vm_check(vm_id), "this VM")
            if text(vm.get("State")) != "Off":
                raise StepFailed(StepResult(TaskState.FAILED, error=(
                    f"Stop-VM -TurnOff returned but the host reports the VM "
                    f"{text(vm.get('State'))}")))
        elif text(vm.get("State")) != "Off":
            # Stop-VM -Force powers the VM off when the guest's Shutdown service does not
            # answer: check it first; a power-off is the operator's explicit choice.
            services = await self._read(session, cmd.get_vm_integration(vm_id))
            shutdown = next((c for c in services if text(c.get("Id")).lower().endswith(
                cmd.SHUTDOWN_SERVICE_ID)), None)
            status = text(shutdown.get("PrimaryOperationalStatus")) if shutdown else ""
            if not shutdown or not shutdown.get("Enabled") or status != "Ok":
                raise StepFailed(StepResult(TaskState.FAILED, error=(
                    f"the guest's Shutdown integration service is {status or 'unavailable'}: "
                    "the guest cannot be shut down from the host. Nothing was sent; shut the "
                    "guest down from inside, or resume the rebuild and tick 'Turn off … "
                    "instead of a guest shutdown' on its plan (Stop-VM -TurnOff: a "
                    "power-off, like pulling the plug; unsaved data is lost) if that is "
                    "acceptable.")))
            self._progress(task_id, 2, "Stop-VM: shutting the guest down")
            # Its own pool: a guest may take minutes to shut down; the polls go on.
            async with self.ctx.action_session(node) as action:
                await action.run(cmd.stop_vm(vm_id), timeout=max(
                    self.ctx.command_timeout, 600.0))
            vm = await self._one(session, cmd.get_vm_check(vm_id), "this VM")
            if text(vm.get("State")) != "Off":
                raise StepFailed(StepResult(TaskState.FAILED, error=(
                    f"Stop-VM returned but the host reports the VM {text(vm.get('State'))}")))

    async def _merge(self, vm_id: str, task_id: str, to_last_parent: bool,
                     turn_off: bool = False) -> StepResult:
        ctx = self.ctx
        node = self._node(vm_id)
        s = node.session
        await self._stop(node, vm_id, task_id, turn_off)
        before_rows = await self._read(s, cmd.get_vm_checkpoints(vm_id))
        before = sum(d.size_bytes for d in ctx.vm_disks(vm_id))
        ordered = sorted(before_rows, key=lambda c: text(c.get("CreationTime")))
        ordered.sort(key=lambda c: c.get("CreationTime") if isinstance(
            c.get("CreationTime"), datetime) else datetime.min.replace(tzinfo=UTC))
        todo = ordered[:-1] if to_last_parent else ordered
        async with ctx.action_session(node) as action:
            if not to_last_parent and todo:
                def progress(pct: float, message: str) -> None:
                    self._progress(task_id, 5 + 0.9 * pct, message)

                await action.run_long(cmd.remove_all_snapshots(vm_id), progress)
            else:
                for i, c in enumerate(todo):
                    def one(pct: float, message: str, i: int = i) -> None:
                        self._progress(task_id, 5 + 90 * (i + pct / 100) / len(todo), message)

                    await action.run_long(cmd.remove_snapshot(as_id(text(c.get("Id")))), one)
            # The disks may go on merging after Remove-VMSnapshot returns: the step ends
            # (and Convert-VHD may copy the chain) only once Get-VM no longer says so.
            if todo:
                await wait_background_merge(ctx, action, vm_id,
                                            lambda message: self._progress(task_id, 95, message))
        left = await self._read(s, cmd.get_vm_checkpoints(vm_id))
        try:
            await ctx.reread(node)
        except Exception as exc:
            log.warning("re-read after the rebuild merge failed: %s", exc)
        after = sum(d.size_bytes for d in ctx.vm_disks(vm_id))
        want = 1 if to_last_parent and ordered else 0
        data = {"size_before": before, "size_after": after, "checkpoints_left": len(left)}
        if len(left) != want:
            return StepResult(TaskState.FAILED, data=data, error=(
                f"the host still reports {len(left)} checkpoint(s), expected {want}"))
        return StepResult(TaskState.OK, data=data, detail=(
            f"shut down; {len(todo)} checkpoint(s) merged"
            + ("; the newest stays (replication)" if to_last_parent and ordered else "")))

    # -- create --------------------------------------------------------------------
    async def create(self, capture: dict[str, Any], task_id: str) -> StepResult:
        return await self._guarded(self._create(capture, task_id),
                                   "Convert-VHD/New-VM or a setting was sent")

    async def _create(self, cap: dict[str, Any], task_id: str) -> StepResult:
        ctx = self.ctx
        old_id = str(cap.get("vm_id", ""))
        node = self._node(old_id, str(cap.get("node", "")))
        s = node.session
        old = await self._one(s, cmd.get_vm_check(old_id), "the captured VM")
        if text(old.get("State")) != "Off":
            raise StepFailed(StepResult(TaskState.FAILED, error=(
                f"Convert-VHD needs the old VM Off; the host reports {text(old.get('State'))}. "
                "Nothing was sent.")))
        disks = sorted(cap.get("disks") or [], key=lambda d: not d.get("system"))
        # The files the drives use now: the merge replaced the captured leaves.
        now = {(text(r.get("ControllerType")).upper(), as_int(r.get("ControllerNumber")),
                as_int(r.get("ControllerLocation"))): text(r.get("Path"))
               for r in await self._read(s, cmd.get_vm_drives(old_id))}
        sources = []
        for d in disks:
            slot = (str(d["controller_type"]).upper(), int(d["controller_number"]),
                    int(d["controller_location"]))
            if slot not in now:
                raise StepFailed(StepResult(TaskState.FAILED, error=(
                    f"the old VM has no disk at {slot[0]} {slot[1]}:{slot[2]} any more; "
                    "nothing was sent")))
            sources.append(now[slot])
        made: list[str] = []
        new_id = ""
        total = 0
        try:
            async with ctx.action_session(node) as action:
                for i, d in enumerate(disks):
                    def copy(pct: float, message: str, i: int = i) -> None:
                        self._progress(task_id, 60 * (i + pct / 100) / max(1, len(disks)), message)

                    self._progress(task_id, 60 * i / max(1, len(disks)),
                                   f"Convert-VHD {i + 1} of {len(disks)}")
                    await action.run_long(cmd.convert_vhd(sources[i], str(d["new_path"])), copy)
                    made.append(str(d["new_path"]))
                sizes = await self._read(s, cmd.get_vhds(made)) if made else []
                total = sum(as_int(r.get("FileSize")) for r in sizes)
                self._progress(task_id, 65, "New-VM")
                gen = int(cap["generation"])
                memory = int(cap["memory_mb"]) * 1024 * 1024
                folder = str(cap.get("new_folder", "")).rstrip("\\")
                created = await self._one(s, cmd.new_vm(str(cap["name"]), gen, memory, folder),
                                          "the new VM")
                new_id = as_id(text(created.get("Id")))
                steps: list[cmd.Command] = [
                    cmd.set_processor(new_id, int(cap["vcpus"])),
                    cmd.set_memory(new_id, memory, bool(cap.get("dynamic_memory"))),
                    cmd.remove_nics(new_id),
                ]
                for nic in cap.get("nics") or []:
                    name = str(nic.get("name") or "Network Adapter")
                    steps.append(cmd.add_nic(new_id, name, str(nic.get("switch") or ""),
                                             str(nic.get("mac") or "")))
                    if int(nic.get("vlan") or 0):
                        steps.append(cmd.set_nic_vlan(new_id, str(nic.get("name")),
                                                      int(nic["vlan"])))
                scsi = [int(d["controller_number"]) for d in disks
                        if str(d["controller_type"]).upper() == "SCSI"]
                steps += [cmd.add_scsi_controller(new_id) for _ in range(max(scsi, default=0))]
                for d in disks:  # the system disk first: it is first in the boot order
                    steps.append(cmd.add_drive(new_id, str(d["controller_type"]),
                                               int(d["controller_number"]),
                                               int(d["controller_location"]), str(d["new_path"])))
                template = str((cap.get("firmware") or {}).get("secure_boot_template") or "")
                if gen == 2 and template:
                    steps.append(cmd.set_secure_boot(new_id, template))
                if cap.get("clustered"):
                    steps.append(cmd.add_cluster_role(
                        new_id, f"{cap['name']}-rebuilt-{datetime.now(UTC):%Y%m%d}"))
                for i, command in enumerate(steps):
                    self._progress(task_id, 70 + 28 * i / len(steps), command.label)
                    try:
                        await s.run(command)
                    except CommandFailed as exc:
                        if command.cmdlets[0].name != "Add-ClusterVirtualMachineRole":
                            raise
                        # Documented as not runnable remotely without CredSSP (a second
                        # hop to the cluster service): a known state, and the line to run.
                        line = command.as_powershell()
                        return StepResult(TaskState.FAILED, error=(
                            f"{exc} — Add-ClusterVirtualMachineRole needs CredSSP when run "
                            f"remotely. The new VM {new_id} exists, Off, fully configured but "
                            f"not clustered; run on {node.computer or node.host}: {line}"),
                            data={"left_behind": made, "vm_id": new_id, "run_on_node": line})
        except CommandFailed as exc:
            left = ", ".join(made) or "none"
            where = f"; the new VM {new_id} exists, Off" if new_id else ""
            return StepResult(TaskState.FAILED, error=f"{exc} (copies made: {left}{where})",
                              data={"left_behind": made, "vm_id": new_id or None})
        try:
            await ctx.reread(node)
        except Exception as exc:
            log.warning("re-read after the rebuild create failed: %s", exc)
        return StepResult(TaskState.OK, data={"vm_id": new_id, "disks": len(made),
                                              "size_bytes": total, "folder": cap.get(
                                                  "new_folder")},
                          detail=f"new VM {cap['name']} ({new_id}) created; "
                                 f"{human_bytes(total)} copied")

    # -- verify boot ------------------------------------------------------------------
    async def verify_boot(self, vm_id: str, cap: dict[str, Any], task_id: str) -> StepResult:
        return await self._guarded(self._verify(vm_id, cap, task_id), "Start-VM was sent")

    async def _verify(self, vm_id: str, cap: dict[str, Any], task_id: str) -> StepResult:
        node = self._node(vm_id, str(cap.get("node", "")))
        s = node.session
        first = ""
        if int(cap.get("generation", 2)) == 2:
            self._progress(task_id, 5, "Get-VMFirmware: boot order")
            order = boot_entries(await self._read(s, cmd.get_boot_order(vm_id)))
            got = first_disk(order)
            want = first_disk((cap.get("firmware") or {}).get("boot_order") or [])
            first = f"{got[0]} {got[1]}:{got[2]}" if got else "network"
            if want is None:
                raise StepFailed(StepResult(TaskState.FAILED, error=(
                    "the capture holds no boot disk; the new VM was not started")))
            if got != want:
                raise StepFailed(StepResult(TaskState.FAILED, data={"first_boot_device": first},
                                            error=(
                    f"the new VM's first boot disk is {first}, but the system disk is at "
                    f"{want[0]} {want[1]}:{want[2]} (from the capture): it would stop at "
                    "INACCESSIBLE_BOOT_DEVICE. The new VM was not started (it is Off).")))
            fw = await self._one(s, cmd.get_firmware(vm_id), "the new VM's firmware")
            template = str((cap.get("firmware") or {}).get("secure_boot_template") or "")
            if template and text(fw.get("SecureBootTemplate")) != template:
                raise StepFailed(StepResult(TaskState.FAILED, error=(
                    f"the new VM's Secure Boot template is {text(fw.get('SecureBootTemplate'))}"
                    f", the capture says {template}. The new VM was not started (it is Off).")))
        self._progress(task_id, 20, "Start-VM")
        await s.run(cmd.start_vm(vm_id))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.heartbeat_timeout_s
        status = ""
        while True:
            # Get-VM's Heartbeat: integration-service names are localized ("Takt").
            rows = await self._read(s, cmd.get_vm_heartbeat(vm_id))
            status = text(rows[0].get("Heartbeat")) if rows else ""
            if status in ("OkApplicationsHealthy", "OkApplicationsUnknown"):
                break
            if loop.time() >= deadline:
                return StepResult(TaskState.FAILED, data={"first_boot_device": first}, error=(
                    f"no heartbeat within {self.heartbeat_timeout_s:g} s (status "
                    f"{status or 'none'}); the new VM is running — open its console"))
            self._progress(task_id, 50, "waiting for the heartbeat")
            await asyncio.sleep(self.heartbeat_poll_s)
        try:
            await self.ctx.reread(node)
        except Exception as exc:
            log.warning("re-read after Start-VM failed: %s", exc)
        return StepResult(TaskState.OK, data={"first_boot_device": first}, detail=(
            "started; heartbeat Ok" + (f"; boots from {first}" if first else "")))

    # -- services -------------------------------------------------------------------
    async def services(self, vm_id: str, task_id: str) -> StepResult:
        return await self._guarded(self._services(vm_id, task_id), "only reads were sent")

    async def _services(self, vm_id: str, task_id: str) -> StepResult:
        node = self._node(vm_id)
        rows = await self._read(node.session, cmd.get_vm_integration(vm_id))
        seen = {text(r.get("Name")): text(r.get("PrimaryOperationalStatus")) or "none"
                for r in rows}
        return StepResult(TaskState.OK, data={"services": None, "integration": seen},
                          detail=f"guest services unknown ({SERVICES_NOTE}); integration "
                                 "services: " + ", ".join(f"{k} {v}" for k, v in seen.items()))

    # -- keep the old VM ---------------------------------------------------------------
    async def retire(self, vm_id: str, new_name: str, task_id: str) -> StepResult:
        return await self._guarded(self._retire(vm_id, new_name, task_id),
                                   "Stop-VM/Rename-VM/Set-VM was sent")

    async def _retire(self, vm_id: str, new_name: str, task_id: str) -> StepResult:
        node = self._node(vm_id)
        s = node.session
        await self._stop(node, vm_id, task_id)
        self._progress(task_id, 40, "Rename-VM")
        await s.run(cmd.rename_vm(vm_id, new_name))
        self._progress(task_id, 70, "Set-VM -AutomaticStartAction Nothing")
        await s.run(cmd.set_no_autostart(vm_id))
        vm = await self._one(s, cmd.get_vm_check(vm_id), "the old VM")
        if text(vm.get("Name")) != new_name:
            return StepResult(TaskState.FAILED, error=(
                f"the host reports the old VM as {text(vm.get('Name'))!r}, not {new_name!r}"))
        try:
            await self.ctx.reread(node)
        except Exception as exc:
            log.warning("re-read after the rename failed: %s", exc)
        return StepResult(TaskState.OK, detail=f"old VM renamed {new_name}, kept Off, no "
                                               "automatic start")
