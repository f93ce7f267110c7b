"""Where the vSphere password comes from — never the value in a log.

Resolution order (RELIABILITY.md): a secret file (only when it is a regular
file owned by this user that nobody else can read or write, i.e. mode 0600
or stricter) → an environment variable → (command line only) the OS keyring
(service ``ventana-vsphere``, the user name as key, as Hyper-V does) → the
console prompt. The keyring and the prompt are asked only after the host was
reached and its certificate verified (``backends/hostcheck.py``); such a
caller passes the password it obtained directly.
This module owns the vSphere names, wording and ``(password, source)``
shape; the checks themselves are :mod:`ventana.backends.credentials`. The
source is logged, the value never is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import credentials as shared
from ..credentials import CredentialError

__all__ = [
    "DEFAULT_ENV",
    "KEYRING_SERVICE",
    "LABEL",
    "CredentialError",
    "from_keyring",
    "read_secret_file",
    "resolve_password",
]

log = logging.getLogger("ventana.backends.vsphere")

DEFAULT_ENV = "VENTANA_VSPHERE_PASSWORD"
KEYRING_SERVICE = "ventana-vsphere"
LABEL = "vSphere"


def read_secret_file(path: Path) -> str:
    """The password in ``path``, refused unless it is a 0600 (or stricter) file of this user."""
    return shared.read_secret_file(path, label=LABEL)


def resolve_password(
    *, secret_file: Path | None = None, env_var: str = DEFAULT_ENV
) -> tuple[str, str]:
    """Return ``(password, source)``; ``source`` is safe to show and log."""
    cred = shared.find_password(
        "", label=LABEL, env_var=env_var, keyring_service=None, password_file=secret_file
    )
    if cred is None:
        raise CredentialError(
            f"no vSphere password: set {env_var} or name a secret file (mode 0600)"
        )
    if cred.source == "file":
        source = f"secret file {secret_file}"
    else:
        source = f"environment variable {env_var}"
    log.info("vSphere password taken from %s", source)
    return cred.password, source


def from_keyring(user: str, *, timeout: float = shared.KEYRING_TIMEOUT_S) -> str | None:
    """The password stored for ``user`` in the OS keyring, or None (no real keyring,
    nothing stored, or no answer within ``timeout``). Ask only after the host check."""
    if not user or not shared.real_keyring():
        return None
    value = shared.from_keyring(KEYRING_SERVICE, user, timeout)
    if value:
        log.info("vSphere password for %s taken from the OS keyring", user)
    return value or None
