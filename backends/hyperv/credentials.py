"""Where the Hyper-V password comes from (never the config file, a log or a recording).

Order: a secret file (``--password-file``; it must be a regular file that
only its owner can read, mode 0600 or stricter) → the environment variable
``VENTANA_HYPERV_PASSWORD`` → the OS keyring (service ``ventana-hyperv``,
the user name as key), asked in a worker thread with a time limit and only
when a real keyring backend is present (the null and fail backends, and
``keyrings.alt``'s plaintext stores, are not used) → otherwise
:class:`CredentialError` (the console's prompt comes later). The source used
is logged; the value never is.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV_VAR = "VENTANA_HYPERV_PASSWORD"
KEYRING_SERVICE = "ventana-hyperv"
KEYRING_TIMEOUT_S = 5.0


class CredentialError(Exception):
    """No usable password was found; the message says where Ventana looked."""


@dataclass(frozen=True, slots=True, repr=False)
class Credential:
    username: str
    password: str
    source: str  # "file", "environment", "keyring", "given"

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, source={self.source!r}, password='***')"


def _from_file(path: Path) -> str:
    try:
        info = path.stat()
    except OSError as exc:
        raise CredentialError(f"password file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CredentialError(f"password file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise CredentialError(
            f"password file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            "chmod 600 it"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise CredentialError(f"password file {path} is not owned by this user")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot read password file {path}: {type(exc).__name__}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise CredentialError(f"password file {path} is empty")
    return password


def _real_keyring() -> bool:
    try:
        import keyring
        from keyring.backends import fail, null
    except ImportError:
        return False
    backend = keyring.get_keyring()
    chained = getattr(backend, "backends", None)
    candidates = list(chained) if chained is not None else [backend]
    usable = [
        b
        for b in candidates
        if not isinstance(b, fail.Keyring | null.Keyring)
        and not type(b).__module__.startswith("keyrings.alt")
    ]
    return bool(usable)


def _from_keyring(username: str, timeout: float) -> str | None:
    result: list[str | None] = []

    def ask() -> None:
        try:
            import keyring

            result.append(keyring.get_password(KEYRING_SERVICE, username))
        except Exception as exc:  # NoKeyringError, locked collections, D-Bus errors
            log.info("keyring lookup failed: %s", type(exc).__name__)
            result.append(None)

    thread = threading.Thread(target=ask, name="ventana-keyring", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        log.warning("the OS keyring did not answer within %.0f s; not using it", timeout)
        return None
    return result[0] if result else None


def resolve_password(
    username: str,
    *,
    password_file: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
    use_keyring: bool = True,
    keyring_timeout: float = KEYRING_TIMEOUT_S,
) -> Credential:
    """Find the password for ``username``; see the module docstring for the order."""
    env = os.environ if environ is None else environ
    if password_file is not None:
        password = _from_file(Path(password_file))
        log.info("Hyper-V password for %s taken from the password file", username)
        return Credential(username, password, "file")
    value = env.get(ENV_VAR)
    if value:
        log.info("Hyper-V password for %s taken from $%s", username, ENV_VAR)
        return Credential(username, value, "environment")
    if use_keyring and _real_keyring():
        stored = _from_keyring(username, keyring_timeout)
        if stored:  # None (null backend, not stored) is "not stored", never an empty password
            log.info("Hyper-V password for %s taken from the OS keyring", username)
            return Credential(username, stored, "keyring")
    raise CredentialError(
        f"no password for {username}: give --password-file (mode 0600), set ${ENV_VAR}, "
        f"or store it in the OS keyring (service {KEYRING_SERVICE!r}, user {username!r})"
    )
