"""VMware vSphere backend (pyvmomi, in worker threads behind an async wrapper).

- ``credentials``: where the password comes from (secret file, environment).
- ``session``: one pyvmomi session — TLS-verified login, keep-alive, the one
  PropertyCollector with its ContainerView and update filter
  (``WaitForUpdatesEx``: its first answer, in pages, is the inventory).
- ``lean``: the small forms a VM's properties are kept in; ``leanxml`` reads
  the inventory's VMs from the raw XML straight into them (no pyvmomi).
- ``mapping``: vSphere objects → the shared model (pure functions).
- ``backend``: ``VSphereBackend``, the event stream with reconnects.
- ``executor``: ``VSphereExecutor`` — remove all snapshots + consolidate (the
  ``merge`` action), remove one snapshot, consolidate, create a snapshot
  (with guest freeze/thaw hooks), the storage estimate, cancel.
The snapshot actions' specs (``remove-snapshot``, ``remove-all-snapshots``,
``consolidate``, ``create-snapshot``) are in ``backends/actionspecs/vsphere_snapshots.py``.

Sessions are read-only unless ``VSphereConfig(read_only=False)``; a read-only
backend refuses ``executor()`` before anything reaches the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import VSphereBackend, VSphereConfig
    from .credentials import CredentialError, resolve_password
    from .executor import VSphereExecutor

_LAZY = {
    "VSphereBackend": "backend",
    "VSphereConfig": "backend",
    "CredentialError": "credentials",
    "resolve_password": "credentials",
    "VSphereExecutor": "executor",
}


def __getattr__(name: str) -> Any:
    """pyVmomi is imported on first use, not by importing the package (start-up time)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CredentialError",
    "VSphereBackend",
    "VSphereConfig",
    "VSphereExecutor",
    "resolve_password",
]
