"""Hyper-V failover clusters over PowerShell Remoting (pypsrp 0.9.1 over WinRM/HTTPS).

Modules: ``commands`` (the read contract as code; ``COMMANDS.md`` documents
it for operators), ``session`` (the async wrapper running pypsrp in worker
threads), ``mapping`` (pypsrp objects → the model's dataclasses),
``credentials`` (where the password comes from) and ``backend``
(``HyperVBackend``: connect, full read, poll and diff, stale/reconnect;
``HyperVExecutor``: the merge, for writable sessions only).
"""

from .backend import HyperVBackend, HyperVConfig, HyperVExecutor
from .credentials import Credential, CredentialError, resolve_password

__all__ = [
    "Credential",
    "CredentialError",
    "HyperVBackend",
    "HyperVConfig",
    "HyperVExecutor",
    "resolve_password",
]
