"""VMware vSphere backend (pyvmomi, in worker threads behind an async wrapper).

- ``credentials``: where the password comes from (secret file, environment).
- ``session``: one pyvmomi session — TLS-verified login, keep-alive, the one
  PropertyCollector with its ContainerView, paged ``RetrievePropertiesEx`` and
  ``WaitForUpdatesEx``.
- ``mapping``: vSphere objects → the shared model (pure functions).
- ``backend``: ``VSphereBackend``, the event stream with reconnects.
- ``executor``: ``VSphereExecutor`` — remove all snapshots + consolidate (the
  ``merge`` action), remove one snapshot, consolidate, create a snapshot
  (with guest freeze/thaw hooks), the storage estimate, cancel.
- ``actions``: registers ``remove-snapshot``, ``remove-all-snapshots``,
  ``consolidate`` and ``create-snapshot`` on the guarded path (planners in
  ``ventana.state.plans_vsphere``).

Sessions are read-only unless ``VSphereConfig(read_only=False)``; a read-only
backend refuses ``executor()`` before anything reaches the server.
"""

from __future__ import annotations

from . import actions as _actions  # registers the vSphere actions  # noqa: F401
from .backend import VSphereBackend, VSphereConfig
from .credentials import CredentialError, resolve_password
from .executor import VSphereExecutor

__all__ = [
    "CredentialError",
    "VSphereBackend",
    "VSphereConfig",
    "VSphereExecutor",
    "resolve_password",
]
