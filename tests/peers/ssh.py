"""A loopback SSH server (asyncssh) standing in for an ESXi host or a guest.

It listens on 127.0.0.1 on a free port with a freshly generated ed25519 host
key and accepts one test user with a generated password. It serves
``cat <path>`` and ``grep [-H] -E PATTERN -- FILE...`` (a ``*`` in a file's
last component expanded as the shell does) from a dict of fake
files (by default a ``vmware.log`` built from the lab sample), records every
command it receives in order, and answers configured commands with a given
exit status and output, or by dropping the connection mid-way (``Drop``) to show an unknown outcome.

    async with start_ssh_peer(commands={"freeze": Reply(0)}) as peer:
        peer.write_known_hosts(tmp_path / "known_hosts")
        ...
        assert peer.commands == ["freeze", "thaw"]
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import glob
import re
import secrets
import shlex
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

# Copied from shared/lab/vmware.log.sample (not shipped with the repo): one stun
# from a snapshot create (1.09 s), then six from its removal 45 min later.
LAB_VMWARE_LOG_SAMPLE = """\
2017-01-04T21:30:19.662Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 1091706 us
2017-01-04T22:15:58.846Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 38123 us
2017-01-04T22:15:59.573Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 298346 us
2017-01-04T22:16:03.672Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 301099 us
2017-01-04T22:16:06.471Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 341616 us
2017-01-04T22:16:24.813Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 264392 us
2017-01-04T22:16:30.921Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 221633 us
"""

VM_DIR = "/vmfs/volumes/datastore1/db-01"
"""Where ``vmware_log()`` lives on the fake host (``VM_DIR/vmware.log``)."""


def vmware_log() -> str:
    """A plausible ``vmware.log``: the lab stun lines among ordinary log noise."""
    noise = [
        "2017-01-04T21:30:18.100Z| vmx| I125: SnapshotVMX_TakeSnapshot start: 'backup'",
        "2017-01-04T21:30:18.570Z| vcpu-0| I125: Checkpoint_Stun: begin",
        "not a log line at all",
        "2017-01-04T22:15:58.001Z| vmx| I125: ConsolidateStart: Consolidating disks",
    ]
    lines = LAB_VMWARE_LOG_SAMPLE.splitlines()
    return "\n".join([*noise[:2], lines[0], noise[2], noise[3], *lines[1:]]) + "\n"


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer a command with this exit status and output (after ``delay`` seconds)."""

    exit_status: int = 0
    stdout: str = ""
    stderr: str = ""
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Drop:
    """Write ``partial`` output, then drop the whole connection: no exit status."""

    partial: str = ""


Behaviour = Reply | Drop


@dataclass
class SshPeer:
    """A running test server: where it listens, who may log in, what it received."""

    host: str
    port: int
    username: str
    password: str
    host_key: asyncssh.SSHKey
    files: dict[str, str]
    behaviours: dict[str, Behaviour]
    commands: list[str] = field(default_factory=list)
    _acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def fingerprint(self) -> str:
        return self.host_key.get_fingerprint("sha256")

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        """A known_hosts entry for this server (with ``key``'s public half if given)."""
        public = (key or self.host_key).export_public_key().decode().split()
        return f"[{self.host}]:{self.port} {public[0]} {public[1]}\n"

    def write_known_hosts(self, path: Path, key: asyncssh.SSHKey | None = None) -> Path:
        path.write_text(self.known_hosts_line(key))
        return path

    async def stop(self) -> None:
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
            await acceptor.wait_closed()

    async def _handle(self, process: asyncssh.SSHServerProcess[str]) -> None:
        command = process.command or ""
        self.commands.append(command)
        behaviour = self.behaviours.get(command)
        if behaviour is None:
            behaviour = self._builtin(command)
        if isinstance(behaviour, Drop):
            if behaviour.partial:
                process.stdout.write(behaviour.partial)
                await asyncio.sleep(0.05)  # let the partial output reach the client
            process.channel.get_connection().abort()
            return
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.stdout:
            process.stdout.write(behaviour.stdout)
        if behaviour.stderr:
            process.stderr.write(behaviour.stderr)
        process.exit(behaviour.exit_status)

    def _builtin(self, command: str) -> Reply:
        try:
            argv = shlex.split(command)
        except ValueError:
            return Reply(2, stderr=f"sh: syntax error: {command}\n")
        if argv and argv[0] == "grep":
            return self._grep(argv[1:])
        if len(argv) == 2 and argv[0] == "cat":
            text = self.files.get(argv[1])
            if text is None:
                return Reply(1, stderr=f"cat: can't open '{argv[1]}': No such file or directory\n")
            return Reply(0, stdout=text)
        return Reply(127, stderr=f"sh: {argv[0] if argv else command}: not found\n")


    def _grep(self, args: list[str]) -> Reply:
        """busybox-like ``grep [-H] -E PATTERN [--] FILE...`` over the fake files."""
        with_name = False
        pattern = None
        files: list[str] = []
        it = iter(args)
        for arg in it:
            if arg == "-H":
                with_name = True
            elif arg == "-E":
                pattern = next(it, None)
            elif arg == "--":
                files.extend(it)
            else:
                files.append(arg)
        if pattern is None or not files:
            return Reply(2, stderr="grep: usage\n")
        regex = re.compile(pattern)
        out, err, found = [], [], False
        for name in self._expand(files):
            text = self.files.get(name)
            if text is None:
                err.append(f"grep: {name}: No such file or directory\n")
                continue
            for line in text.splitlines():
                if regex.search(line):
                    found = True
                    out.append(f"{name}:{line}\n" if with_name else f"{line}\n")
        status = 2 if err else (0 if found else 1)
        return Reply(status, stdout="".join(out), stderr="".join(err))


    def _expand(self, words: list[str]) -> list[str]:
        """The shell's pathname expansion of a last component with ``*`` (ESXi's
        busybox sh, as POSIX "Pathname Expansion"): the matching files in sorted
        order, or the word unchanged when none matches. The directory part is
        taken literally (the watcher quotes it)."""
        out: list[str] = []
        for word in words:
            head, _, tail = word.rpartition("/")
            if "*" not in tail:
                out.append(word)
                continue
            pattern = glob.escape(head) + "/" + tail
            hits = sorted(f for f in self.files if fnmatch.fnmatchcase(f, pattern)
                          and "/" not in f[len(head) + 1 :])
            out.extend(hits or [word])
        return out


class _Server(asyncssh.SSHServer):
    def __init__(self, username: str, password: str):
        self._username, self._password = username, password

    def begin_auth(self, username: str) -> bool:
        return True  # always require authentication

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return secrets.compare_digest(username, self._username) and secrets.compare_digest(
            password, self._password
        )


@contextlib.asynccontextmanager
async def start_ssh_peer(
    *,
    files: Mapping[str, str] | None = None,
    commands: Mapping[str, Behaviour] | None = None,
    username: str = "ventana-test",
) -> AsyncIterator[SshPeer]:
    """Start the server on 127.0.0.1:0; stop it when the block ends."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    peer = SshPeer(
        host="127.0.0.1",
        port=0,
        username=username,
        password=secrets.token_urlsafe(18),
        host_key=key,
        files=dict(files if files is not None else {f"{VM_DIR}/vmware.log": vmware_log()}),
        behaviours=dict(commands or {}),
    )
    acceptor = await asyncssh.create_server(
        lambda: _Server(peer.username, peer.password),
        peer.host,
        0,
        server_host_keys=[key],
        process_factory=peer._handle,
        encoding="utf-8",
    )
    peer._acceptor = acceptor
    peer.port = acceptor.get_port()
    try:
        yield peer
    finally:
        await peer.stop()
