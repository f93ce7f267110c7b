"""Start and stop the vSphere API simulator built by ``tools/vcsim/build.sh``.

The binary (govmomi's simulator from Debian packages, our patches and
``tools/vcsim/main.go``) is built into ``.cache/vcsim/bin/vcsim-ventana``;
``VCSIM_BIN`` or ``VCSIM_CACHE_DIR`` point elsewhere. Each start gets a fresh
throwaway CA (trustme) and a server certificate for the listen address, so a
client verifies TLS against ``handle.ca_path`` — always pass an explicit SSL
context to pyvmomi: it skips verification for 127.0.0.1 otherwise.

Inventory size, as created by main.go (per datacenter):
``clusters`` clusters of ``hosts`` hosts, ``standalone_hosts`` standalone
hosts, ``vms`` VMs on every host (named ``<host>_VM<i>``, powered on unless
``autostart=False``) and ``datastores`` datastores ``LocalDS_<i>`` mounted on
every host, the VMs spread over them round-robin.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import trustme

REPO = Path(__file__).resolve().parents[2]
BUILD_HINT = "run `make vcsim` (or `tools/vcsim/build.sh`)"


class VcsimNotBuilt(RuntimeError):
    """The simulator binary is missing: build it first."""


class VcsimStartError(RuntimeError):
    """The simulator did not come up; the message carries the end of its log."""


def binary_path() -> Path:
    """Where the built simulator is expected (it may not exist yet)."""
    if explicit := os.environ.get("VCSIM_BIN"):
        return Path(explicit)
    cache = os.environ.get("VCSIM_CACHE_DIR")
    base = Path(cache) if cache else REPO / ".cache" / "vcsim"
    return base / "bin" / "vcsim-ventana"


def is_built() -> bool:
    path = binary_path()
    return path.is_file() and os.access(path, os.X_OK)


@dataclass(frozen=True)
class InventorySize:
    datacenters: int = 1
    clusters: int = 1
    hosts: int = 3  # per cluster
    standalone_hosts: int = 0  # per datacenter
    vms: int = 2  # per host
    datastores: int = 1  # per datacenter

    @property
    def total_clusters(self) -> int:
        return self.datacenters * self.clusters

    @property
    def total_hosts(self) -> int:
        return self.datacenters * (self.clusters * self.hosts + self.standalone_hosts)

    @property
    def total_vms(self) -> int:
        return self.total_hosts * self.vms

    @property
    def total_datastores(self) -> int:
        return self.datacenters * self.datastores


@dataclass
class VcsimHandle:
    url: str  # https://HOST:PORT/sdk
    host: str
    port: int
    ca_path: Path  # PEM of the CA that signed the server certificate
    user: str
    password: str = field(repr=False)
    size: InventorySize
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the simulator removes its datastore folders), wait, then SIGKILL."""
        proc = self.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would (the datastore folders stay behind in $TMPDIR)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> VcsimHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _write_tls(tmp_dir: Path, host: str) -> tuple[Path, Path, Path]:
    ca = trustme.CA(organization_name="Ventana test vcsim CA")
    names = dict.fromkeys([host, "localhost", "127.0.0.1"])  # ordered, unique
    cert = ca.issue_cert(*names)
    ca_path = tmp_dir / "vcsim-ca.pem"
    cert_path = tmp_dir / "vcsim-cert.pem"
    key_path = tmp_dir / "vcsim-key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key_path.touch(mode=0o600)
    cert.private_key_pem.write_to_path(str(key_path))
    return ca_path, cert_path, key_path


def _read_first_line(proc: subprocess.Popen[bytes], deadline: float) -> str | None:
    assert proc.stdout is not None
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not sel.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:  # EOF: the process ended
                return None
            buf += chunk
    return buf.split(b"\n", 1)[0].decode().strip()


def start_vcsim(
    tmp_dir: Path | str,
    *,
    datacenters: int = 1,
    clusters: int = 1,
    hosts: int = 3,
    standalone_hosts: int = 0,
    vms: int = 2,
    datastores: int = 1,
    listen: str = "127.0.0.1:0",
    autostart: bool = True,
    user: str = "ventana-test@vsphere.local",
    password: str | None = None,
    quiet: bool = False,
    startup_timeout: float = 60.0,
) -> VcsimHandle:
    """Start the simulator and return once it accepts connections.

    ``hosts`` is per cluster, ``vms`` per host, ``datastores`` and the others
    per datacenter. ``listen`` is ``HOST:PORT``; port 0 picks a free port.
    The caller must ``stop()`` the handle (or use it as a context manager).
    """
    binary = binary_path()
    if not is_built():
        raise VcsimNotBuilt(f"vcsim test peer not built ({binary} missing): {BUILD_HINT}")
    tmp = Path(tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    listen_host = listen.rsplit(":", 1)[0].strip("[]")
    ca_path, cert_path, key_path = _write_tls(tmp, listen_host)
    password = password or secrets.token_urlsafe(18)
    size = InventorySize(datacenters, clusters, hosts, standalone_hosts, vms, datastores)

    args = [
        str(binary),
        f"-listen={listen}",
        f"-tls-cert={cert_path}",
        f"-tls-key={key_path}",
        f"-dc={datacenters}",
        f"-clusters={clusters}",
        f"-cluster-hosts={hosts}",
        f"-standalone-hosts={standalone_hosts}",
        f"-vms-per-host={vms}",
        f"-datastores={datastores}",
        f"-autostart={'true' if autostart else 'false'}",
    ]
    if quiet:
        args.append("-quiet")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCSIM_")}
    env |= {"VCSIM_USERNAME": user, "VCSIM_PASSWORD": password, "TMPDIR": str(tmp)}
    log_path = tmp / "vcsim.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env
        )
    line = _read_first_line(proc, time.monotonic() + startup_timeout)
    if not line or not line.startswith(("https://", "http://")):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise VcsimStartError(
            f"vcsim did not start (exit {proc.returncode}, first line {line!r}); log:\n{tail}"
        )
    parts = urlsplit(line)
    assert parts.hostname is not None and parts.port is not None
    return VcsimHandle(
        url=line,
        host=parts.hostname,
        port=parts.port,
        ca_path=ca_path,
        user=user,
        password=password,
        size=size,
        log_path=log_path,
        process=proc,
    )
