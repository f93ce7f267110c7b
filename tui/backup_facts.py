"""The selected VM's online-backup facts, as lines for the VM's detail (checkpoints) pane.

Shown only for a VM whose backend read them (Hyper-V: ``backends/hyperv/backup``):
the Backup (volume shadow copy) integration service, the guest OS its KVP
reports, pass-through disks, what could not be checked and why, what the
host can never see, and where each of its files lives (configuration,
checkpoints, smart paging, every disk file). Every value is cluster data:
plain ``Text``, never markup.
"""

from __future__ import annotations

from rich.text import Text

from ventana.state.model import VM


def has_backup_facts(vm: VM) -> bool:
    return (vm.vss_service is not None or vm.guest_windows is not None
            or vm.guest_os is not None or vm.passthrough_disks is not None
            or bool(vm.backup_unchecked))


def backup_signature(vm: VM | None) -> tuple[object, ...]:
    if vm is None:
        return ()
    return (vm.vss_service, vm.guest_os, vm.guest_windows, vm.passthrough_disks,
            vm.backup_unchecked, vm.storage_paths, vm.smb_link_check, vm.cluster_group_state)


def backup_title(vm: VM) -> Text:
    return Text("backup (host-level, online)", style="bold")


def backup_lines(vm: VM) -> list[Text]:
    """One line per fact; "not read" where the backend did not read it."""
    lines: list[Text] = []
    vss = vm.vss_service
    style = "" if vss == "ok" else "yellow"
    lines.append(Text("Backup (VSS) integration service: ", style="dim")
                 + Text(vss or "not read", style=style if vss else "dim"))
    if vm.guest_windows is None:
        guest = Text(vm.guest_os or "not reported (KVP)", style="dim")
    else:
        guest = Text(vm.guest_os or ("Windows" if vm.guest_windows else "not Windows"),
                     style="" if vm.guest_windows else "yellow")
    lines.append(Text("guest OS: ", style="dim") + guest)
    if vm.cluster_group_state:
        lines.append(Text("cluster group: ", style="dim") + Text(
            vm.cluster_group_state,
            style="" if vm.cluster_group_state.casefold() == "online" else "yellow"))
    disks = vm.passthrough_disks
    lines.append(Text("pass-through disks: ", style="dim")
                 + (Text(", ".join(disks), style="yellow") if disks
                    else Text("none" if disks is not None else "not read", style="dim")))
    for item in vm.backup_unchecked:
        lines.append(Text("not checked: ", style="dim") + Text(item, style="yellow"))
    lines.append(Text("host cannot see: dynamic disks, non-NTFS volumes", style="dim"))
    if vm.smb_link_check:
        lines.append(Text("links under the share: ", style="dim")
                     + Text(vm.smb_link_check, style="yellow"))
    for path in vm.storage_paths:  # every file location: one share on SMB, no deep folders
        lines.append(Text("file: ", style="dim") + Text(path))
    return lines
