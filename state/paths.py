"""Where Ventana keeps its files on this machine (XDG base directories).

``data_dir()`` holds the action log, ``config_dir()`` the config file. Both
follow the XDG Base Directory spec: ``$XDG_DATA_HOME`` / ``$XDG_CONFIG_HOME``
when set to an absolute path (relative values are ignored, as the spec
says), else ``~/.local/share`` / ``~/.config``; then ``ventana``. Nothing is
created by merely asking for a path; ``ensure_dir()`` (used by the action log)
creates a missing directory with mode 0700, because the log names systems,
operators and VMs.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "ventana"


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def data_dir(*, create: bool = False) -> Path:
    """``$XDG_DATA_HOME/ventana`` (default ``~/.local/share/ventana``)."""
    path = _xdg("XDG_DATA_HOME", ".local/share") / APP
    return ensure_dir(path) if create else path


def config_dir(*, create: bool = False) -> Path:
    """``$XDG_CONFIG_HOME/ventana`` (default ``~/.config/ventana``)."""
    path = _xdg("XDG_CONFIG_HOME", ".config") / APP
    return ensure_dir(path) if create else path


def default_log_path() -> Path:
    """The action log used when neither ``--log`` nor the config names one."""
    return data_dir() / "actions.db"


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) if needed; the leaf gets mode 0700.

    An existing directory is left as it is (its owner chose its mode). Raises
    ``OSError`` when it cannot be created (a parent is a file, no permission).
    """
    if path.is_dir():
        return path
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path
