"""SSH side channel (asyncssh): ESXi stun times and guest freeze/thaw hooks.

- ``stun``: parse ``Checkpoint_Unstun`` lines of a VM's ``vmware.log`` and turn
  stuns over a VM's budget into ``LONG_STUN`` findings (pure functions).
- ``client``: ``EsxiShell`` — one verified connection (explicit known_hosts,
  no implicit ssh config); success is ``exit_status == 0`` only, a missing exit
  status is ``OutcomeUnknown``.
- ``hooks``: ``frozen(shell, freeze_cmd, thaw_cmd, log=…)`` — the thaw always
  runs, both outcomes are reported, a failed thaw is raised loudly.
- ``watcher``: ``StunWatcher`` — beside a vSphere backend's stream, reads the
  stun lines of the VMs on configured ESXi hosts (one ``grep -H`` per host),
  sets each VM's last stun, logs a row per stun, raises ``LONG_STUN``; SSH
  failures become ``SSH_UNAVAILABLE`` findings.
- ``wiring``: ``attach(backend, config sections, log)`` — the watcher, the stun
  probe after each action and the guest shells for freeze/thaw, from the config.
"""

from __future__ import annotations

from .client import (
    CommandFailed,
    CommandResult,
    EsxiShell,
    HostKeyRefused,
    OutcomeUnknown,
    SshError,
    datastore_path,
)
from .hooks import FreezeFailed, HookOutcome, ThawFailed, frozen
from .stun import (
    LONG_STUN,
    StunBudget,
    StunEvent,
    budget_for_mirror,
    parse_stun_lines,
    stun_findings,
)

__all__ = [
    "LONG_STUN",
    "CommandFailed",
    "CommandResult",
    "EsxiShell",
    "FreezeFailed",
    "HookOutcome",
    "HostKeyRefused",
    "OutcomeUnknown",
    "SshError",
    "StunBudget",
    "StunEvent",
    "ThawFailed",
    "budget_for_mirror",
    "datastore_path",
    "frozen",
    "parse_stun_lines",
    "stun_findings",
]
