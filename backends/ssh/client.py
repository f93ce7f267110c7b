"""The SSH side channel to an ESXi host or a guest (asyncssh).

Host keys are always checked against an explicit ``known_hosts`` file and no
implicit ssh config is read: asyncssh silently turns verification off with
``known_hosts=None`` or a config saying ``UserKnownHostsFile none``. An
unknown or changed host key is refused with the SHA256 fingerprint the
server offered, so the operator can compare it out of band.

A command succeeds only when the server reports ``exit_status == 0``. When
the connection drops mid-command asyncssh returns normally with
``exit_status=None`` (even with ``check=True``): that is ``OutcomeUnknown``,
never success — the caller must re-read the real state and ask the operator,
and must not resend the command by itself.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import asyncssh

from ventana.state.sanitize import clean

from .stun import StunEvent, parse_stun_lines

__all__ = [
    "CommandFailed",
    "CommandResult",
    "EsxiShell",
    "HostKeyRefused",
    "OutcomeUnknown",
    "SshError",
    "datastore_path",
]

DEFAULT_CONNECT_TIMEOUT_S = 15.0
DEFAULT_COMMAND_TIMEOUT_S = 120.0


class SshError(Exception):
    """Anything that went wrong on the SSH side channel."""


class HostKeyRefused(SshError):
    """The server's host key is not in known_hosts (unknown) or differs from it (changed)."""

    def __init__(self, host: str, port: int, fingerprint: str, changed: bool, known_hosts: Path):
        self.host, self.port, self.fingerprint, self.changed = host, port, fingerprint, changed
        what = "CHANGED host key (possible man-in-the-middle)" if changed else "unknown host key"
        super().__init__(
            f"Refused {clean(host)}:{port}: {what} {fingerprint or '(fingerprint unavailable)'}; "
            f"not found in {clean(known_hosts)}. Verify the fingerprint on the host "
            "before adding it to known_hosts."
        )


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A command that ran to completion: its exit status, output and duration."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class CommandFailed(SshError):
    """The command ran and exited with a non-zero status."""

    def __init__(self, result: CommandResult):
        self.result = result
        detail = clean(result.stderr.strip()[-500:]) or "no error output"
        super().__init__(
            f"{clean(result.command)!r} exited with status {result.exit_status}: {detail}"
        )


class OutcomeUnknown(SshError):
    """The command was sent but no exit status came back: it may or may not have run.

    Never treat this as success, and never resend a mutating command by
    itself: re-read the real state and ask the operator.
    """

    def __init__(self, command: str, reason: str, stdout: str = "", duration_s: float = 0.0):
        self.command, self.reason, self.stdout, self.duration_s = (
            command,
            reason,
            stdout,
            duration_s,
        )
        super().__init__(
            f"Outcome of {clean(command)!r} is unknown ({clean(reason)}): it may or may not "
            "have run — verify on the host."
        )


def datastore_path(path: str) -> str:
    """``[datastore1] vm1/vm1.vmx`` or ``[datastore1] vm1`` → ``/vmfs/volumes/datastore1/vm1``.

    A path that is already absolute is returned unchanged.
    """
    text = path.strip()
    if text.startswith("["):
        store, sep, rest = text[1:].partition("]")
        if not sep or not store:
            raise ValueError(f"not a datastore path: {path!r}")
        rel = PurePosixPath(rest.strip())
        if rel.suffix == ".vmx":
            rel = rel.parent
        return str(PurePosixPath("/vmfs/volumes", store) / rel)
    if not text.startswith("/"):
        raise ValueError(f"not an absolute or datastore path: {path!r}")
    return text


class _KeyRecorder(asyncssh.SSHClient):
    """Remembers the key a server offered when it was not trusted (for the error)."""

    def __init__(self, seen: list[str]):
        self._seen = seen

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self._seen.append(key.get_fingerprint("sha256"))
        return False  # only keys in known_hosts are trusted


class EsxiShell:
    """One SSH connection to an ESXi host (or a guest), verified against ``known_hosts``.

    Use as ``async with EsxiShell(...) as shell:`` or call ``connect()`` and
    ``close()``.
    """

    def __init__(
        self,
        host: str,
        port: int = 22,
        username: str = "root",
        *,
        known_hosts: Path,
        client_keys: list[Any] | None = None,
        password: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT_S,
    ):
        if known_hosts is None:  # explicit: None would disable host-key checks in asyncssh
            raise ValueError("known_hosts is required: host keys are always verified")
        self.host, self.port, self.username = host, port, username
        self.known_hosts = Path(known_hosts)
        self._client_keys = client_keys
        self._password = password
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._conn: asyncssh.SSHClientConnection | None = None

    def __repr__(self) -> str:  # never shows the password
        return f"EsxiShell({self.username}@{self.host}:{self.port})"

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connect(self) -> None:
        if self.connected:
            return
        if not self.known_hosts.is_file():
            raise SshError(f"known_hosts file {clean(self.known_hosts)} does not exist")
        seen: list[str] = []
        try:
            self._conn = await asyncssh.connect(
                self.host,
                self.port,
                username=self.username,
                password=self._password,
                # Keys only when given: no ~/.ssh/id_* and no agent behind our back.
                client_keys=self._client_keys,
                agent_path=None,
                known_hosts=str(self.known_hosts),
                config=None,  # no implicit ~/.ssh/config (UserKnownHostsFile none…)
                client_factory=lambda: _KeyRecorder(seen),
                connect_timeout=self.connect_timeout,
                login_timeout=self.connect_timeout,
                encoding="utf-8",
                errors="replace",
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyRefused(
                self.host,
                self.port,
                seen[-1] if seen else "",
                self._host_is_known(),
                self.known_hosts,
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise SshError(
                f"SSH login to {clean(self.host)}:{self.port} as {clean(self.username)} "
                "was refused (wrong credentials)"
            ) from exc
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise SshError(
                f"SSH connection to {clean(self.host)}:{self.port} failed: "
                f"{clean(exc) or type(exc).__name__}"
            ) from exc

    def _host_is_known(self) -> bool:
        """Whether known_hosts has some key for this host (then the key *changed*)."""
        try:
            trusted = asyncssh.match_known_hosts(
                str(self.known_hosts), self.host, self.host, self.port
            )[0]
        except (OSError, ValueError):
            return False
        return bool(trusted)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()

    async def __aenter__(self) -> EsxiShell:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        """Run ``command``; success is ``exit_status == 0`` and nothing else.

        Raises ``CommandFailed`` for a non-zero exit status and
        ``OutcomeUnknown`` when no exit status came back (connection dropped,
        timeout, killed by a signal).
        """
        result = await self.run_unchecked(command, timeout=timeout)
        if result.exit_status != 0:
            raise CommandFailed(result)
        return result

    async def run_unchecked(self, command: str, *, timeout: float | None = None) -> CommandResult:
        """Run ``command`` and return its result whatever its exit status.

        Still raises ``OutcomeUnknown`` when there is no exit status at all.
        """
        if self._conn is None or self._conn.is_closed():
            raise SshError(f"not connected to {clean(self.host)}:{self.port}")
        started = time.monotonic()
        try:
            done = await self._conn.run(
                command,
                check=False,
                timeout=timeout if timeout is not None else self.command_timeout,
            )
        except asyncssh.TimeoutError as exc:
            raise OutcomeUnknown(
                command, "timed out", _text(exc.stdout), time.monotonic() - started
            ) from exc
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise OutcomeUnknown(
                command,
                f"connection lost: {clean(exc) or type(exc).__name__}",
                duration_s=time.monotonic() - started,
            ) from exc
        duration = time.monotonic() - started
        if done.exit_status is None:
            reason = (
                f"killed by signal {done.exit_signal[0]}"
                if done.exit_signal
                else "connection dropped before an exit status"
            )
            raise OutcomeUnknown(command, reason, _text(done.stdout), duration)
        return CommandResult(
            command, done.exit_status, _text(done.stdout), _text(done.stderr), duration
        )

    async def read_vmware_log(self, vm_dir: str) -> str:
        """The text of ``<vm_dir>/vmware.log`` (an absolute or ``[datastore] dir`` path)."""
        path = str(PurePosixPath(datastore_path(vm_dir)) / "vmware.log")
        return (await self.run(f"cat {shlex.quote(path)}")).stdout

    async def read_stun_events(self, vm_dir: str) -> list[StunEvent]:
        """The stun events of one VM, parsed from its ``vmware.log``."""
        return parse_stun_lines(await self.read_vmware_log(vm_dir))


def _text(data: object) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)
