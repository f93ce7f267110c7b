"""Where the vSphere password comes from — never the value in a log.

Resolution order (RELIABILITY.md): a secret file (only when it is a regular
file that nobody but its owner can read or write, i.e. mode 0600 or
stricter) → an environment variable. Keyring and the console prompt live in
the UI layer; such a caller passes the password it obtained directly. The
source is logged, the value never is.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("ventana.backends.vsphere")

DEFAULT_ENV = "VENTANA_VSPHERE_PASSWORD"


class CredentialError(Exception):
    """No usable password; the message never contains a secret."""


def read_secret_file(path: Path) -> str:
    """The first line of ``path``, refused unless it is a 0600 (or stricter) file."""
    try:
        st = path.stat()
    except OSError as exc:
        raise CredentialError(f"secret file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialError(f"secret file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise CredentialError(
            f"secret file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
            "it must be readable by its owner only (chmod 600)"
        )
    text = path.read_text(encoding="utf-8")
    value = text.splitlines()[0] if text else ""
    if not value:
        raise CredentialError(f"secret file {path} is empty")
    return value


def resolve_password(
    *, secret_file: Path | None = None, env_var: str = DEFAULT_ENV
) -> tuple[str, str]:
    """Return ``(password, source)``; ``source`` is safe to show and log."""
    if secret_file is not None:
        value = read_secret_file(secret_file)
        source = f"secret file {secret_file}"
    elif env_var and os.environ.get(env_var):
        value = os.environ[env_var]
        source = f"environment variable {env_var}"
    else:
        raise CredentialError(
            f"no vSphere password: set {env_var} or name a secret file (mode 0600)"
        )
    log.info("vSphere password taken from %s", source)
    return value, source
