"""A throwaway PostgreSQL cluster for the team-mode tests (a real server, never a mock).

``make test`` installs Debian's ``postgresql`` when missing
(``tools/postgres/install.sh``); its programs live in
``/usr/lib/postgresql/<major>/bin`` (``PG_BIN`` points elsewhere). Each
``PgServer`` runs ``initdb`` + ``pg_ctl start`` in a fresh temporary directory,
listening only on a Unix socket in that directory (``listen_addresses=''``);
``tcp=True`` adds 127.0.0.1 on a free port, never any other address.

``initdb`` refuses to run as root ("cannot be run as root", PostgreSQL docs,
app-initdb), so when the tests run as root the server runs as ``nobody``
(``runuser``), which owns the directory. Authentication is ``trust`` for the
superuser ``ventana`` unless ``password`` is given (then ``scram-sha-256``
with ``--pwfile``). ``fsync=off`` by default (speed); the durability test
starts its own server with ``fsync=True``.

Fixtures: ``pg_server`` (one per session), ``pg_url`` (a fresh database on it
per test, dropped afterwards).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

REPO = Path(__file__).resolve().parents[2]
SUPERUSER = "ventana"


def server_bin() -> Path | None:
    """Where initdb/pg_ctl/postgres are (newest major version), or None."""
    if explicit := os.environ.get("PG_BIN"):
        return Path(explicit)
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return None
    found = [d / "bin" for d in root.iterdir() if (d / "bin" / "initdb").exists()
             and (d / "bin" / "pg_ctl").exists()]
    if not found:
        return None
    return max(found, key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()])


def ensure_installed() -> Path | None:
    """The server's bin dir, installing Debian's postgresql once if it is missing."""
    found = server_bin()
    if found is not None:
        return found
    script = REPO / "tools" / "postgres" / "install.sh"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([str(script)], check=True, capture_output=True, timeout=900)
    return server_bin()


class PgStartError(RuntimeError):
    """The server did not come up; the message carries the end of its log."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temporary directory; ``start()``/``stop()``."""

    def __init__(self, *, fsync: bool = False, tcp: bool = False,
                 password: str | None = None) -> None:
        bindir = ensure_installed()
        if bindir is None:
            raise PgStartError("no PostgreSQL server programs (run tools/postgres/install.sh)")
        self.bin = bindir
        self.fsync = fsync
        self.password = password
        self.port = _free_port() if tcp else 5432
        self.tcp = tcp
        self.dir = Path(tempfile.mkdtemp(prefix="ventana-pg-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.logfile = self.dir / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as nobody
            shutil.chown(self.dir, "nobody", "nogroup")
            self._as = ["runuser", "-u", "nobody", "--"]
        self._init()

    # -- addresses ------------------------------------------------------------
    @property
    def host(self) -> str:
        return str(self.dir)  # the Unix socket's directory

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq URL for the socket (no password in it: PGPASSWORD/pgpass carry it)."""
        query = f"host={quote(self.host, safe='')}&port={self.port}"
        return f"postgresql://{quote(user)}@/{quote(dbname)}?{query}"

    def tcp_url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        assert self.tcp, "started without tcp=True"
        return f"postgresql://{quote(user)}@127.0.0.1:{self.port}/{quote(dbname)}"

    # -- lifecycle ------------------------------------------------------------
    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as, *args], capture_output=True, text=True,
                              timeout=timeout, cwd=self.dir)

    def _init(self) -> None:
        cmd = [str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--no-sync",
               "-E", "UTF8", "--locale=C"]
        if self.password is not None:
            pwfile = self.dir / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self._as:
                shutil.chown(pwfile, "nobody", "nogroup")
            pwfile.chmod(0o600)
            cmd += ["-A", "scram-sha-256", "--pwfile", str(pwfile)]
        else:
            cmd += ["-A", "trust"]
        done = self._run(*cmd)
        if done.returncode != 0:
            raise PgStartError(f"initdb failed: {done.stderr[-2000:]}")

    def start(self) -> PgServer:
        listen = "127.0.0.1" if self.tcp else ""
        opts = (f"-k {self.dir} -p {self.port} -c listen_addresses='{listen}' "
                f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200")
        done = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                         str(self.logfile), "-w", "-t", "60", "-o", opts, "start", timeout=90)
        if done.returncode != 0:
            raise PgStartError(f"pg_ctl start failed: {done.stderr[-1000:]}\n{self.log_tail()}")
        return self

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """kill -9 the whole server (postmaster and its backends), as a crash would."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        pids = [pid, *(int(p) for p in found.stdout.split())]
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 30
        for p in pids:  # gone (reaped by init) before the next start reuses the directory
            while time.monotonic() < deadline:
                try:
                    os.kill(p, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def stop(self) -> None:
        if self.postmaster_pid() is None:
            return
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                  "stop", timeout=60)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser (for set-up: roles, databases)."""
        done = subprocess.run(
            [str(self.bin / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p",
             str(self.port), "-U", SUPERUSER, "-d", dbname, "-At", "-c", sql],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, **({"PGPASSWORD": self.password} if self.password else {})})
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _skip_reason() -> str | None:
    if ensure_installed() is None:
        return "PostgreSQL server programs cannot be installed here (no apt-get, not root)"
    return None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    reason = _skip_reason()
    if reason is not None and not os.environ.get("CI"):
        pytest.skip(reason)
    with PgServer() as server:  # in CI a missing server is a failure, not a skip
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"create database {name}")
    yield pg_server.url(name)
    with contextlib.suppress(RuntimeError):
        pg_server.psql(f"drop database {name} with (force)")
