"""Where the Hyper-V password comes from (never the config file, a log or a recording).

Order: a secret file (``--password-file``; it must be a regular file that
only its owner can read, mode 0600 or stricter) → the environment variable
``VENTANA_HYPERV_PASSWORD`` → the OS keyring (service ``ventana-hyperv``,
the user name as key), asked in a worker thread with a time limit and only
when a real keyring backend is present → otherwise :class:`CredentialError`
(the console's prompt comes later). This module owns the Hyper-V names and
wording; the lookup itself is :mod:`ventana.backends.credentials`. The source
used is logged; the value never is.
"""

from __future__ import annotations

import logging
import os

from ..credentials import KEYRING_TIMEOUT_S, Credential, CredentialError, find_password

__all__ = [
    "ENV_VAR",
    "KEYRING_SERVICE",
    "KEYRING_TIMEOUT_S",
    "LABEL",
    "Credential",
    "CredentialError",
    "resolve_password",
]

log = logging.getLogger(__name__)

ENV_VAR = "VENTANA_HYPERV_PASSWORD"
KEYRING_SERVICE = "ventana-hyperv"
LABEL = "Hyper-V"

_SOURCE_WORDS = {
    "file": "the password file",
    "environment": f"${ENV_VAR}",
    "keyring": "the OS keyring",
}


def resolve_password(
    username: str,
    *,
    password_file: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
    use_keyring: bool = True,
    keyring_timeout: float = KEYRING_TIMEOUT_S,
) -> Credential:
    """Find the password for ``username``; see the module docstring for the order."""
    cred = find_password(
        username,
        label=LABEL,
        env_var=ENV_VAR,
        keyring_service=KEYRING_SERVICE,
        password_file=password_file,
        environ=environ,
        use_keyring=use_keyring,
        keyring_timeout=keyring_timeout,
    )
    if cred is not None:
        log.info("%s password for %s taken from %s", LABEL, username, _SOURCE_WORDS[cred.source])
        return cred
    raise CredentialError(
        f"no password for {username}: give --password-file (mode 0600), set ${ENV_VAR}, "
        f"or store it in the OS keyring (service {KEYRING_SERVICE!r}, user {username!r})"
    )
