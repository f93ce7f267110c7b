"""Where a backend's password comes from — the logic every backend shares.

Order: a secret file (it must be a regular file owned by this user that
nobody else can read or write, mode 0600 or stricter) → an environment
variable → the OS keyring (``state/oskeyring.py``: asked in a worker thread
with a time limit and only when a real keyring backend is present: the null
and fail backends, and ``keyrings.alt``'s plaintext stores, are not used). Each backend's own
``credentials`` module names its variable, keyring service and label
("Hyper-V", "vSphere"), and words its "no password" error. The value of a
password never appears in a message, a log or a repr.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ventana.state.oskeyring import TIMEOUT_S, real_keyring
from ventana.state.oskeyring import ask as from_keyring

log = logging.getLogger(__name__)

KEYRING_TIMEOUT_S = TIMEOUT_S


class CredentialError(Exception):
    """No usable password was found; the message says where Ventana looked, never a secret."""


@dataclass(frozen=True, slots=True, repr=False)
class Credential:
    username: str
    password: str
    source: str  # "file", "environment", "keyring", "given"

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, source={self.source!r}, password='***')"


def read_secret_file(path: Path, *, label: str) -> str:
    """The password in ``path`` (trailing line ending removed), refused unless the file is
    a regular file owned by this user with mode 0600 or stricter."""
    what = f"{label} password file {path}"
    try:
        info = path.stat()
    except OSError as exc:
        raise CredentialError(f"{what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CredentialError(f"{what} is not a regular file")
    if info.st_mode & 0o077:
        raise CredentialError(
            f"{what} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise CredentialError(f"{what} is not owned by this user")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot read {what}: {type(exc).__name__}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise CredentialError(f"{what} is empty")
    return password


def find_password(
    username: str,
    *,
    label: str,
    env_var: str | None,
    keyring_service: str | None,
    password_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    use_keyring: bool = True,
    keyring_timeout: float = KEYRING_TIMEOUT_S,
) -> Credential | None:
    """The first password found in the order of the module docstring, or None.

    A named ``password_file`` is the only source tried (its faults raise
    :class:`CredentialError`); an empty ``env_var`` or a missing
    ``keyring_service`` skips that source. The caller logs the source and
    words the error when None comes back.
    """
    if password_file is not None:
        return Credential(username, read_secret_file(Path(password_file), label=label), "file")
    env = os.environ if environ is None else environ
    value = env.get(env_var) if env_var else None
    if value:
        return Credential(username, value, "environment")
    if keyring_service and use_keyring and real_keyring():
        stored = from_keyring(keyring_service, username, keyring_timeout)
        if stored:  # None (null backend, not stored) is "not stored", never an empty password
            return Credential(username, stored, "keyring")
    return None
