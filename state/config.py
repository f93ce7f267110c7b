r"""Targets from the TOML config file.

``~/.config/ventana/config.toml`` (XDG) or ``--config FILE`` lists targets::

    log = "/var/lib/ventana/actions.db"   # optional; default under XDG data
    # log = "postgresql://ops@db.corp.example/ventana"   # a team's shared log
    #   (docs/team-mode.md; the password never goes here: PGPASSWORD, ~/.pgpass
    #   or the OS keyring)
    # lease_ttl = 60   # team mode: seconds before a dead console's lease on a VM lapses

    [[target]]
    name = "lab"
    kind = "sim"
    seed = 7
    vms = 74
    read_only = false     # sim targets are writable unless this says true

    [[target]]
    name = "prod"
    kind = "hyperv"
    cluster = "HVCLUSTER01"
    nodes = ["hv01.corp.example:5986", "hv02.corp.example:5986"]
    user = 'CORP\ops'
    auth = "negotiate"
    ca_bundle = "/etc/ventana/corp-ca.pem"
    read_only = false     # real clusters are read-only unless this says false

    [[target]]
    name = "vcenter"
    kind = "vsphere"
    host = "vc01.corp.example"
    port = 443
    user = "ops@vsphere.local"
    ca_bundle = "/etc/ventana/corp-ca.pem"

vSphere actions and the SSH side channel (README: "vSphere actions")::

    [stun]
    budget_ms = 2000            # default stun budget per VM
    [stun.vm]
    "sql-01" = 4000             # e.g. half a database mirror's QoS timeout

    [vsphere]
    backup_window_h = 4         # a backup snapshot younger than this is in use

    [ssh.host."esx01.corp.example"]      # the ESXi host as vSphere names it
    user = "root"
    known_hosts = "/etc/ventana/known_hosts"
    key = "/etc/ventana/id_ed25519"      # else VENTANA_SSH_PASSWORD / the keyring

    [guest."sql-01"]                     # freeze/thaw around snapshots Ventana takes
    address = "sql-01.corp.example"
    user = "ventana"
    known_hosts = "/etc/ventana/known_hosts"
    key = "/etc/ventana/guest_ed25519"
    pre_freeze = "sudo /opt/db/freeze.sh"
    post_thaw = "sudo /opt/db/thaw.sh"

Findings thresholds (README: "Findings")::

    [findings]            # thresholds of the findings screen (defaults shown)
    checkpoint_warn_hours = 72
    checkpoint_critical_hours = 720
    chain_depth_max = 3
    differencing_pct = 50         # differencing data over this % of its base disk
    lun_warn_pct = 10
    lun_critical_pct = 5
    backup_max_gb = 2048          # the backup policy's per-VM limit
    backup_agent_min_version = "19.10"  # default: per product (Avamar 19.10, else 12.0)
    backup_agent_ports = [28001, 28002, 29000, 30001, 30002, 30003]

Passwords never go here: a config with a key that looks like a secret is
refused, so nobody is tempted.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .findings import FindingsConfig
from .leases import DEFAULT_TTL_S
from .paths import config_dir

KNOWN_KINDS = ("sim", "hyperv", "vsphere")
SECTIONS = ("stun", "vsphere", "ssh", "guest")
_SECRET_WORDS = ("password", "secret", "token", "passwd")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    kind: str = "sim"
    read_only: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    targets: tuple[Target, ...] = ()
    log: Path | str | None = None  # a file, or a postgresql:// URL (team mode)
    source: Path | None = None
    #: The ``[stun]``, ``[vsphere]``, ``[ssh]`` and ``[guest]`` tables, as read
    #: (``plans_vsphere.configure`` and ``ssh.wiring`` interpret them).
    sections: dict[str, Any] = field(default_factory=dict)
    findings: FindingsConfig = field(default_factory=FindingsConfig)  # [findings] thresholds
    #: Team mode: how long a console's lease on a VM outlives its last renewal
    #: (a console killed mid-action frees the VM, "interrupted", after this).
    lease_ttl: float = DEFAULT_TTL_S

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.targets) or "none"
        raise ConfigError(f"no target named {name!r} in {self.source} (known: {known})")


def default_config_path() -> Path:
    return config_dir() / "config.toml"


def _check_no_secrets(data: Any, where: str) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if any(word in str(key).lower() for word in _SECRET_WORDS):
                raise ConfigError(
                    f"{where}: key {key!r} looks like a secret; passwords come from the "
                    "environment, the OS keyring or a prompt, never the config file"
                )
            _check_no_secrets(value, where)
    elif isinstance(data, list):
        for item in data:
            _check_no_secrets(item, where)


#: The type each known target option must have (TOML gives ints for 5, floats for 5.0).
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,), "vms": (int,), "rate": (int, float), "speed": (int, float),
    "port": (int,), "cluster": (str,), "host": (str,), "user": (str,), "auth": (str,),
    "ca_bundle": (str,), "password_file": (str,), "nodes": (list,),
    # Hyper-V backup readiness (docs/backup-readiness.md); backup_checks: true/false.
    "backup_services": (list,), "backup_ports": (list,), "backup_interval": (int, float),
}
_TYPE_NAMES = {int: "a whole number", float: "a number", str: "a string", list: "a list"}


def _check_type(where: str, key: str, value: Any, types: tuple[type, ...]) -> None:
    """A value of the wrong type is named by its key, never a traceback later."""
    if isinstance(value, bool) or not isinstance(value, types):
        want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        raise ConfigError(f"{where}: {key} must be {want}, not {type(value).__name__} "
                          f"{value!r}"[:300])


def _check_backup_options(where: str, options: dict[str, Any]) -> None:
    """The Hyper-V backup agent's names (strings), ports (1-65535) and the on/off switch."""
    names = options.get("backup_services", [])
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"{where}: backup_services must be a list of service names")
    ports = options.get("backup_ports", [])
    if not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536
               for p in ports):
        raise ConfigError(f"{where}: backup_ports must be a list of TCP ports (1-65535)")
    if not isinstance(options.get("backup_checks", True), bool):
        raise ConfigError(f"{where}: backup_checks must be true or false")


def load_config(path: Path | None = None) -> Config:
    """Load the config; a missing default file is an empty config."""
    explicit = path is not None
    path = path or default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist")
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    _check_no_secrets(data, str(path))
    targets = []
    for i, raw in enumerate(data.get("target", [])):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ConfigError(f"{path}: target #{i + 1} needs a name (a string)")
        kind = raw.get("kind", "sim")
        if kind not in KNOWN_KINDS:
            raise ConfigError(
                f"{path}: target {raw['name']!r} has kind {kind!r}; this version supports: "
                + ", ".join(KNOWN_KINDS)
            )
        # Real clusters are read-only unless the config explicitly says otherwise.
        read_only = raw.get("read_only", kind != "sim")
        if not isinstance(read_only, bool):
            raise ConfigError(f"{path}: read_only of {raw['name']!r} must be true or false")
        options = {k: v for k, v in raw.items() if k not in ("name", "kind", "read_only")}
        for key, value in options.items():
            if key in _OPTION_TYPES:
                _check_type(f"{path}: target {raw['name']!r}", key, value, _OPTION_TYPES[key])
        _check_backup_options(f"{path}: target {raw['name']!r}", options)
        targets.append(Target(raw["name"], kind, read_only, options))
    log = data.get("log")
    if log is not None:
        _check_type(str(path), "log", log, (str,))
    sections = {k: data[k] for k in SECTIONS if k in data}
    for name, table in sections.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
    raw_findings = data.get("findings", {})
    if not isinstance(raw_findings, dict):
        raise ConfigError(f"{path}: [findings] must be a table")
    try:
        findings = FindingsConfig.from_toml(raw_findings)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return Config(tuple(targets), _log_setting(log, path), path, sections, findings,
                  _lease_ttl(data.get("lease_ttl", DEFAULT_TTL_S), path))


#: The lease TTL's bounds: renewed every third of it, so a few seconds at least;
#: at most an hour before a dead console's VM is free again.
LEASE_TTL_RANGE = (5.0, 3600.0)


def _lease_ttl(value: Any, path: Path) -> float:
    """The ``lease_ttl`` key (seconds), within ``LEASE_TTL_RANGE``."""
    _check_type(str(path), "lease_ttl", value, (int, float))
    low, high = LEASE_TTL_RANGE
    if not low <= value <= high:
        raise ConfigError(f"{path}: lease_ttl must be between {low:g} and {high:g} seconds, "
                          f"not {value!r}")
    return float(value)


def _log_setting(value: Any, path: Path) -> Path | str | None:
    """The ``log`` key: a file path, or a postgresql:// URL that carries no password."""
    from .schema import LocationError, location

    if not value:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}: log must be a file path or a postgresql:// URL")
    try:
        return location(value)
    except LocationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
