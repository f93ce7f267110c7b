"""Wire the SSH side channel into a vSphere backend from the config.

``attach(backend, sections, log)`` reads ``[ssh.host."<ESXi host>"]`` (the
stun watcher) and ``[guest."<VM>"]`` (the shells for freeze/thaw hooks) and
hangs them on the backend: the watcher starts and stops with the backend's
stream, ``backend.stun_probe`` reports the stun after each snapshot action,
``backend.guest_shell(vm_name)`` gives the verified shell of a guest.
Returns a one-line description for the console (empty when nothing is set).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ventana.state.actionlog import ActionLog
from ventana.state.plans_vsphere import SETTINGS

from ..capabilities import SideChannelHost
from .client import EsxiShell
from .watcher import SshTarget, StunWatcher


def ssh_hosts(sections: Mapping[str, Any]) -> dict[str, SshTarget]:
    hosts = ((sections.get("ssh") or {}).get("host")) or {}
    out = {}
    for name, options in hosts.items():
        if not isinstance(options, dict):
            raise ValueError(f"[ssh.host.{name!r}] must be a table")
        out[str(name)] = SshTarget.from_options({"host": options.get("address", name),
                                                 **options})
    return out


def guest_targets(sections: Mapping[str, Any]) -> dict[str, SshTarget]:
    out = {}
    for name, options in (sections.get("guest") or {}).items():
        if isinstance(options, dict) and (options.get("address") or options.get("host")):
            out[str(name)] = SshTarget.from_options(
                {**options, "host": options.get("address") or options.get("host")}
            )
    return out


def attach(backend: SideChannelHost, sections: Mapping[str, Any], log: ActionLog | None,
           *, interval_s: float | None = None) -> str:
    hosts = ssh_hosts(sections)
    if interval_s is None:
        interval_s = float((sections.get("ssh") or {}).get("interval_s", 60.0))
        if interval_s <= 0:
            raise ValueError("[ssh] interval_s must be positive")
    guests = guest_targets(sections)
    said = []
    if hosts:
        watcher = StunWatcher(backend, hosts, budget_ms=_budget, log=log,
                              interval_s=interval_s, started=datetime.now(UTC))
        backend.side_channels.append(watcher)
        backend.stun_probe = watcher.probe
        said.append(f"stun times over SSH from {len(hosts)} host(s)")
    if guests:
        def shell_for(vm_name: str) -> EsxiShell | None:
            target = guests.get(vm_name)
            return target.shell() if target is not None else None

        backend.guest_shell = shell_for
        said.append(f"guest hooks for {len(guests)} VM(s)")
    return "; ".join(said)


def _budget(vm_name: str) -> float:
    return float(SETTINGS.stun_budget_by_vm.get(vm_name, SETTINGS.stun_budget_ms))
