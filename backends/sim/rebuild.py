"""How the simulated Hyper-V host answers the rebuild workflow's steps.

Owns the facts the inventory does not carry — per VM, drawn from the seed
and the VM's name with their own generator, so the lab's shape is unchanged:
the guest OS, disk controllers, firmware (boot order, Secure Boot template),
NICs (switch, VLAN, MAC, guest IPv4), guest services and agents — and the
steps: capture, shut down + merge (all or to the last parent), create a VM
from a capture (a new id, copies of the consolidated disks on the same CSV),
start and verify it, read its services, rename the old VM.

The campaign's incidents are reproducible:

- **boot order**: Gen2 VMs whose system disk is not the first on its
  controller (a data disk sits at SCSI 0:0); the first such VM by name always
  has it. A new VM created without the captured boot device boots the data
  disk: INACCESSIBLE_BOOT_DEVICE (0x7B). Linux Gen2 guests need the
  ``MicrosoftUEFICertificateAuthority`` Secure Boot template.
- **lost agent**: VMs whose monitoring agent is bound to the VM's hardware
  (BIOS GUID); it does not start on the new VM. The first running Windows
  VM by name always has one.
- **replication**: the lab's replicating VMs (merged to the last parent).

Failure injection: ``SimConfig.rebuild_failures`` or ``fail_next(step, vm)``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ventana.state.derived import human_bytes, version_key
from ventana.state.model import (
    VM,
    DiskFormat,
    IntegrationState,
    PowerState,
    ReplicationState,
    TaskState,
    VirtualDisk,
)

from ..base import ActionResult, StepResult
from .context import SimContext
from .hresults import ACCESS_DENIED, INVALID_STATE
from .specs import guid

COPY_MB_PER_S = 150.0
_LINUX = ("lnx-", "fw-")
_SWITCHES = (("vSwitch-LAN", 10), ("vSwitch-LAN", 20), ("vSwitch-DMZ", 110),
             ("vSwitch-Backup", 30))
_WINDOWS_BASE = ("Dnscache", "EventLog", "LanmanServer", "W32Time", "WinRM", "vmicheartbeat",
                 "vmicshutdown", "vmickvpexchange")
_LINUX_BASE = ("sshd", "chronyd", "rsyslog", "hv-kvp-daemon", "hv-vss-daemon")
_ROLE_SERVICES = (("sql", ("MSSQLSERVER", "SQLSERVERAGENT")), ("web", ("W3SVC", "WAS")),
                  ("dc", ("NTDS", "DNS", "Netlogon")), ("exch", ("MSExchangeIS",
                                                                 "MSExchangeTransport")),
                  ("fs", ("LanmanServer", "DFSR")), ("app", ("AppService",)))
MONITORING_AGENTS = {"windows": "HealthService", "linux": "zabbix-agent"}

_FAILURES = {
    "capture": "Get-VMNetworkAdapter: The WS-Management service cannot process the request: "
               "the operation timed out.",
    "merge": "",  # the merge job stops part-way with a disk error
    "create": "New-VM: Failed to create the virtual machine: 'General access denied error' "
              f"({ACCESS_DENIED}).",
    "verify_boot": "The new VM did not report a heartbeat within 10 minutes.",
    "services": "Invoke-Command: The virtual machine's guest did not answer (PowerShell "
                "Direct: the credential or the guest service is unavailable).",
    "keep_old": "Rename-VM: The cluster resource is busy; the operation could not be "
                f"completed ({INVALID_STATE}).",
}


@dataclass(slots=True)
class Guest:
    """What the host and the guest know about a VM beyond the model."""

    os: str  # "windows" | "linux"
    layout: list[tuple[str, int, int]]  # per drive: controller type, number, location
    boot_drive: int  # index of the drive holding the OS
    template: str  # Secure Boot template the OS needs (Gen2)
    nics: list[dict[str, Any]]
    services: list[str]
    bound_agents: set[str] = field(default_factory=set)  # do not start on a new VM


@dataclass(slots=True)
class Firmware:
    boot_order: list[dict[str, Any]]
    template: str
    secure_boot: bool = True


class SimRebuild:
    """The simulated host's side of rebuilds, through the backend's ``SimContext``."""

    def __init__(self, ctx: SimContext, *, seed: int,
                 failures: Iterable[tuple[str, str]] = ()) -> None:
        self.sim = ctx
        self.seed = seed
        self.failures: set[tuple[str, str]] = set(failures)
        self.guests: dict[str, Guest] = {}
        self.firmware: dict[str, Firmware] = {}
        self.origin: dict[str, str] = {}  # new VM id -> the VM it was rebuilt from
        self._swapped: str | None = None
        self._bound: str | None = None
        self._picked = False

    # -- facts ---------------------------------------------------------------------
    def fail_next(self, step: str, vm: str) -> None:
        """Test hook: ``step`` fails on the VM named (or with the id) ``vm``."""
        self.failures.add((step, vm))

    def _failing(self, step: str, vm: VM | None, *also: str) -> bool:
        names = {vm.id, vm.name} if vm else set()
        names.update(also)
        hit = next(((s, n) for s, n in self.failures if s == step and n in names), None)
        if hit:
            self.failures.discard(hit)
        return hit is not None

    def _pick(self) -> None:
        """The VMs that always carry an incident (first by name)."""
        if self._picked:
            return
        self._picked = True
        world = self.sim.world
        for vm in sorted(world.vms.values(), key=lambda v: v.name):
            windows = not vm.name.startswith(_LINUX)
            if self._swapped is None and vm.generation == 2 and len(vm.disk_ids) >= 2 and windows:
                self._swapped = vm.id
            elif (self._bound is None and windows and vm.power is PowerState.RUNNING
                  and vm.replication is ReplicationState.DISABLED):
                self._bound = vm.id

    def guest(self, vm_id: str) -> Guest:
        if vm_id in self.guests:
            return self.guests[vm_id]
        self._pick()
        vm = self.sim.world.vms[vm_id]
        rng = random.Random(f"rebuild:{self.seed}:{vm.name}")
        os_ = "linux" if vm.name.startswith(_LINUX) else "windows"
        drives = len(vm.disk_ids)
        if vm.generation == 1:
            layout = [("IDE", 0, 0)] + [("SCSI", 0, j) for j in range(drives - 1)]
        else:
            layout = [("SCSI", 0, j) for j in range(drives)]
        swapped = drives >= 2 and vm.generation == 2 and (
            vm_id == self._swapped or rng.random() < 0.3)
        if swapped:  # a data disk was attached first: the OS sits at SCSI 0:1
            layout[0], layout[1] = layout[1], layout[0]
        template = "MicrosoftUEFICertificateAuthority" if os_ == "linux" else "MicrosoftWindows"
        nics = []
        for i in range(2 if vm.name.startswith(("fw-", "dc-")) else 1):
            switch, vlan = _SWITCHES[rng.randrange(len(_SWITCHES))] if i else _SWITCHES[
                rng.randrange(2)]
            mac = "00155D" + "".join(f"{rng.randrange(256):02X}" for _ in range(3))
            host = rng.randrange(20, 250)
            nics.append({
                "name": "Network Adapter" if i == 0 else f"Network Adapter {i + 1}",
                "switch": switch, "vlan": vlan, "mac": mac,
                "ipv4": [{"address": f"10.20.{vlan}.{host}", "prefix": 24,
                          "gateway": f"10.20.{vlan}.1", "dns": ["10.20.10.11", "10.20.10.12"]}],
            })
        services = list(_WINDOWS_BASE if os_ == "windows" else _LINUX_BASE)
        for prefix, names in _ROLE_SERVICES:
            if vm.name.startswith(prefix):
                services += [n for n in names if n not in services]
        agent = MONITORING_AGENTS[os_]
        services.append(agent)
        bound = {agent} if vm_id == self._bound or rng.random() < 0.1 else set()
        guest = Guest(os_, layout, 0, template, nics, services, bound)
        self.guests[vm_id] = guest
        return guest

    def reachable(self, vm: VM) -> bool:
        return vm.power is PowerState.RUNNING and vm.integration in (
            IntegrationState.OK, IntegrationState.DEGRADED)

    # -- timed operations ----------------------------------------------------------
    async def _timed(self, task_id: str, kind: str, vm: VM, message: str, seconds: float,
                     finish: Callable[[], StepResult], ticks: int = 4) -> StepResult:
        sim = self.sim
        if not sim.connected:
            return StepResult(TaskState.FAILED, error=f"{sim.target} is not connected; "
                                                      "nothing was sent")
        sim.catch_up()
        world = sim.world
        world.start_task(task_id, kind, vm, message)
        future: asyncio.Future[ActionResult | StepResult] = \
            asyncio.get_running_loop().create_future()

        def tick(n: int) -> None:
            if future.done():
                return
            if n < ticks:
                world.progress(task_id, 100.0 * n / ticks, message)
                sim.sched.after(seconds / ticks, lambda: tick(n + 1))
            else:
                try:
                    result = finish()
                except Exception as exc:  # a bug in the simulation must not hang the step
                    result = StepResult(TaskState.FAILED, error=f"{type(exc).__name__}: {exc}")
                state = TaskState.OK if result.state is TaskState.OK else TaskState.FAILED
                world.finish_task(task_id, state, result.detail or message, result.error,
                                  pct=100.0 if state is TaskState.OK else None)
                future.set_result(result)
            sim.wake()

        sim.sched.after(seconds / ticks, lambda: tick(1))
        result = await sim.settle(task_id, future)
        if isinstance(result, ActionResult):  # the session closed or the link dropped
            return StepResult(result.state, error=result.error)
        return result

    # -- steps ---------------------------------------------------------------------
    async def capture(self, vm_id: str, task_id: str) -> StepResult:
        world = self.sim.world
        vm = world.vms.get(vm_id)
        if vm is None:
            return StepResult(TaskState.FAILED, error="the VM was not found on the host")
        fail = self._failing("capture", vm)

        def finish() -> StepResult:
            if fail:
                return StepResult(TaskState.FAILED, error=_FAILURES["capture"])
            return StepResult(TaskState.OK, data=self._capture(world.vms[vm_id]),
                              detail="configuration captured")

        return await self._timed(task_id, "rebuild", vm, "Capturing the configuration", 20,
                                 finish)

    def _capture(self, vm: VM) -> dict[str, Any]:
        world = self.sim.world
        g = self.guest(vm.id)
        node = world.nodes.get(vm.node_id)
        lun = world.luns.get(vm.lun_id)
        reachable = self.reachable(vm)
        now = world.now()
        base0 = world.disks[vm.disk_ids[0]].path if vm.disk_ids else ""
        volume = base0.split("\\")[2] if base0.count("\\") > 2 else "Volume1"
        folder = f"C:\\ClusterStorage\\{volume}\\{vm.name}-rebuilt-{now:%Y%m%d}\\"
        disks = []
        for j, disk_id in enumerate(vm.disk_ids):
            base = world.disks[disk_id]
            ctype, number, location = g.layout[j]
            stem = base.path.rpartition("\\")[2].rsplit(".", 1)[0]
            disks.append({
                "index": j, "path": base.path, "leaf_path": world.disks[
                    world.leaf_file(vm.id, j)].path, "format": base.format.value,
                "size": base.size_bytes, "max": base.max_bytes, "controller_type": ctype,
                "controller_number": number, "controller_location": location,
                "system": j == g.boot_drive, "new_path": f"{folder}{stem}.vhdx",
            })
        nics = [{**n, "ipv4": n["ipv4"] if reachable else None} for n in g.nics]
        if vm.generation == 2:
            boot = disks[g.boot_drive] if disks else None
            order: list[dict[str, Any]] = []
            if boot:
                order.append({"type": "HardDiskDrive", "controller_type": boot["controller_type"],
                              "controller_number": boot["controller_number"],
                              "controller_location": boot["controller_location"],
                              "path": boot["path"]})
            order += [{"type": "NetworkAdapter", "name": n["name"], "mac": n["mac"]}
                      for n in g.nics]
            firmware: dict[str, Any] = {"boot_order": order, "secure_boot": True,
                                        "secure_boot_template": g.template}
        else:
            firmware = {"bios_startup_order": ["IDE", "CD", "LegacyNetworkAdapter", "Floppy"]}
        return {
            "vm_id": vm.id, "name": vm.name, "node": node.name if node else "",
            "lun": lun.name if lun else "", "generation": vm.generation,
            "config_version": vm.config_version, "vcpus": vm.vcpus, "memory_mb": vm.memory_mb,
            "power": vm.power.value, "os": g.os, "firmware": firmware, "nics": nics,
            "disks": disks, "new_folder": folder,
            "checkpoints": [
                {"name": world.checkpoints[c].name, "kind": world.checkpoints[c].kind.value,
                 "created": world.checkpoints[c].created.isoformat(),
                 "size": world.checkpoints[c].size_bytes}
                for c in world.chains.get(vm.id, ())
            ],
            "replication": {"state": vm.replication.value, "target": vm.replica_target},
            "guest_reachable": reachable,
            "services": sorted(g.services) if reachable else None,
            "captured_at": now.isoformat(),
        }

    async def merge(self, vm_id: str, task_id: str, to_last_parent: bool,
                    turn_off: bool = False) -> StepResult:
        world = self.sim.world
        vm = world.vms.get(vm_id)
        if vm is None:
            return StepResult(TaskState.FAILED, error="the VM was not found on the host")
        if vm.power is not PowerState.OFF:
            def stop() -> StepResult:
                world.set_power(vm_id, PowerState.OFF)
                return StepResult(TaskState.OK, detail="turned off" if turn_off else "shut down")

            # A power-off is immediate; a guest shutdown takes the guest's time.
            what = ("Stop-VM -TurnOff: turning the VM off" if turn_off
                    else "Stop-VM: shutting the guest down")
            stopped = await self._timed(f"{task_id}-stop", "shutdown", vm, what,
                                        5 if turn_off else 60, stop, ticks=2)
            if stopped.state is not TaskState.OK:
                return stopped
        fail = self._failing("merge", vm)
        result = await self.sim.merge(vm_id, task_id, keep_last=to_last_parent,
                                          force_fail=fail)
        return StepResult(result.state, error=result.error, detail=result.detail,
                          data={"size_before": result.size_before,
                                "size_after": result.size_after,
                                "checkpoints_left": len(world.chains.get(vm_id, ()))})

    async def create(self, capture: dict[str, Any], task_id: str) -> StepResult:
        world = self.sim.world
        old = world.vms.get(str(capture.get("vm_id")))
        if old is None:
            return StepResult(TaskState.FAILED, error="the captured VM is no longer on the host")
        total = sum(self._flat_size(old.id, j) for j in range(len(old.disk_ids)))
        fail = self._failing("create", old)
        seconds = max(30.0, total / (COPY_MB_PER_S * 1024**2))

        def finish() -> StepResult:
            current = world.vms[old.id]
            if current.power is not PowerState.OFF:
                return StepResult(TaskState.FAILED, error="Convert-VHD: the source disk is in "
                                  "use: the old VM is running.")
            lun = world.luns[current.lun_id]
            if lun.free_bytes - total < 200 * 1024**2:
                return StepResult(TaskState.FAILED, error=f"Convert-VHD: not enough space on "
                                  f"{lun.name} ({human_bytes(lun.free_bytes)} free).")
            if fail:  # the copies were made, then New-VM failed: they stay on the CSV
                world.orphaned_bytes[lun.id] = world.orphaned_bytes.get(lun.id, 0) + total
                world.adjust_free(lun.id, -total)
                return StepResult(TaskState.FAILED, error=_FAILURES["create"],
                                  data={"left_behind": [d["new_path"]
                                                        for d in capture.get("disks", [])]})
            return self._create(current, capture)

        return await self._timed(task_id, "rebuild", old,
                                 f"Convert-VHD: copying {human_bytes(total)}, then New-VM",
                                 seconds, finish)

    def _flat_size(self, vm_id: str, j: int) -> int:
        world = self.sim.world
        vm = world.vms[vm_id]
        base = world.disks[vm.disk_ids[j]]
        size = base.size_bytes + sum(world.disks[world.files[c][j]].size_bytes
                                     for c in world.chains.get(vm_id, ()))
        return min(size, base.max_bytes)

    def _create(self, old: VM, capture: dict[str, Any]) -> StepResult:
        world = self.sim.world
        rng = random.Random(f"rebuild:new:{self.seed}:{old.id}:{len(self.origin)}")
        new_id = guid(rng)
        disk_ids = []
        total = 0
        for j, d in enumerate(capture.get("disks", [])):
            disk_id = guid(rng)
            size = self._flat_size(old.id, j)
            total += size
            world.put(VirtualDisk(disk_id, new_id, str(d["new_path"]), DiskFormat.VHDX, size,
                                  int(d["max"]), None, old.lun_id))
            world.adjust_free(old.lun_id, -size)
            disk_ids.append(disk_id)
        version = max((v.config_version for v in world.vms.values()), key=version_key,
                      default=old.config_version)
        new = VM(id=new_id, name=str(capture.get("name", old.name)), cluster_id=old.cluster_id,
                 node_id=old.node_id, power=PowerState.OFF, generation=int(capture["generation"]),
                 config_version=version, vcpus=int(capture["vcpus"]),
                 memory_mb=int(capture["memory_mb"]), integration=IntegrationState.OFF,
                 disk_ids=tuple(disk_ids), lun_id=old.lun_id)
        world.put(new)
        node = world.nodes.get(old.node_id)
        if node is not None:
            world.update_node(node.id, vm_count=node.vm_count + 1)
        world.chains[new_id] = []
        world.profiles[new_id] = world.profiles[old.id]
        g = self.guest(old.id)
        self.guests[new_id] = Guest(g.os, [tuple(x) for x in (  # type: ignore[misc]
            (d["controller_type"], d["controller_number"], d["controller_location"])
            for d in capture.get("disks", []))] or g.layout, g.boot_drive, g.template,
            g.nics, [s for s in g.services if s not in g.bound_agents])
        self.origin[new_id] = old.id
        fw = capture.get("firmware") or {}
        layout = self.guests[new_id].layout
        if new.generation == 2:
            order = list(fw.get("boot_order") or [])
            if not any(b.get("type") == "HardDiskDrive" for b in order):
                # New-VM's default: the drives in controller order, then the network.
                by_slot = sorted(range(len(layout)), key=lambda j: layout[j])
                order = [{"type": "HardDiskDrive", "controller_type": layout[j][0],
                          "controller_number": layout[j][1],
                          "controller_location": layout[j][2]} for j in by_slot] + order
            self.firmware[new_id] = Firmware(order, str(fw.get("secure_boot_template")
                                                        or "MicrosoftWindows"))
        return StepResult(TaskState.OK, data={"vm_id": new_id, "disks": len(disk_ids),
                                              "size_bytes": total},
                          detail=f"new VM {new.name} ({new_id}) created, version {version}")

    async def verify_boot(self, vm_id: str, capture: dict[str, Any], task_id: str
                          ) -> StepResult:
        world = self.sim.world
        vm = world.vms.get(vm_id)
        if vm is None:
            return StepResult(TaskState.FAILED, error="the new VM was not found on the host")
        fail = self._failing("verify_boot", vm, str(capture.get("vm_id", "")))
        g = self.guests.get(vm_id) or self.guest(vm_id)

        def finish() -> StepResult:
            problem = ""
            first = ""
            if vm.generation == 2:
                fw = self.firmware.get(vm_id)
                disk = next((b for b in (fw.boot_order if fw else [])
                             if b.get("type") == "HardDiskDrive"), None)
                slot = ((disk["controller_type"], disk["controller_number"],
                         disk["controller_location"]) if disk else None)
                first = f"{slot[0]} {slot[1]}:{slot[2]}" if slot else "network"
                os_slot = tuple(g.layout[g.boot_drive]) if g.layout else None
                if slot != os_slot:
                    problem = (f"The guest stopped at boot: INACCESSIBLE_BOOT_DEVICE (0x7B). "
                               f"The first boot device is {first}, but the system disk is at "
                               f"{os_slot[0]} {os_slot[1]}:{os_slot[2]} (from the capture)."
                               if os_slot else "No boot device.")
                elif fw is not None and g.os == "linux" and fw.template != g.template:
                    problem = ("Secure Boot violation: the boot loader failed the signature "
                               f"check with template {fw.template}; this guest needs {g.template}.")
            if fail:
                problem = _FAILURES["verify_boot"]
            if problem:
                world.set_power(vm_id, PowerState.OFF)  # turned off: a known state
                return StepResult(TaskState.FAILED, error=problem + " The new VM was turned off.",
                                  data={"first_boot_device": first})
            world.set_power(vm_id, PowerState.RUNNING)
            return StepResult(TaskState.OK, data={"first_boot_device": first},
                              detail=f"{vm.name} started; heartbeat OK" +
                              (f"; boots from {first}" if first else ""))

        return await self._timed(task_id, "rebuild", vm, "Start-VM: waiting for the heartbeat",
                                 90, finish)

    async def services(self, vm_id: str, task_id: str) -> StepResult:
        world = self.sim.world
        vm = world.vms.get(vm_id)
        if vm is None:
            return StepResult(TaskState.FAILED, error="the VM was not found on the host")
        fail = self._failing("services", vm, self.origin.get(vm_id, ""))

        def finish() -> StepResult:
            current = world.vms[vm_id]
            if fail or not self.reachable(current):
                return StepResult(TaskState.FAILED, error=_FAILURES["services"])
            g = self.guests.get(vm_id) or self.guest(vm_id)
            return StepResult(TaskState.OK, data={"services": sorted(g.services)},
                              detail=f"{len(g.services)} services running")

        return await self._timed(task_id, "rebuild", vm, "Reading the guest's services", 10,
                                 finish, ticks=2)

    async def retire(self, vm_id: str, new_name: str, task_id: str) -> StepResult:
        world = self.sim.world
        vm = world.vms.get(vm_id)
        if vm is None:
            return StepResult(TaskState.FAILED, error="the old VM was not found on the host")
        fail = self._failing("keep_old", vm)

        def finish() -> StepResult:
            if fail:
                return StepResult(TaskState.FAILED, error=_FAILURES["keep_old"])
            if world.vms[vm_id].power is not PowerState.OFF:
                world.set_power(vm_id, PowerState.OFF)
            world.update_vm(vm_id, name=new_name)
            return StepResult(TaskState.OK, detail=f"old VM renamed {new_name}, kept off")

        return await self._timed(task_id, "rebuild", vm, "Rename-VM", 5, finish, ticks=1)
