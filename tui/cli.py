"""The ``ventana`` command line.

    ventana [--target NAME | --seed N --vms N ...] [--read-only] [--record FILE]
    ventana --hyperv CLUSTER [--node HOST]... --user 'DOMAIN\\user' [--ca-file PEM] [--read-write]
        (no --node: the nodes are discovered with Get-ClusterNode through CLUSTER)
    ventana --vsphere HOST[:PORT] --user USER [--ca-file PEM] [--read-write]
    ventana --target A --target B              (several targets side by side)
    ventana --vsphere HOST --user U --sim      (likewise: --vsphere with --hyperv or --sim)
    ventana replay FILE [--speed N]
    ventana log [--csv] [--limit N]
    ventana report [--format md|csv|xlsx|chart] [--out PATH] [--db PATH] [--since ISO] [--until ISO]

With no target, the console opens on the built-in simulated cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ventana.backends.base import Backend
from ventana.backends.capabilities import Composite, SideChannelHost
from ventana.state.actionlog import ActionLog, ActionLogError
from ventana.state.config import Config, ConfigError, load_config
from ventana.state.leases import DEFAULT_TTL_S
from ventana.state.sanitize import clean
from ventana.state.schema import is_url


def _log_arg(value: str) -> Path | str:
    """``--log``: a file, or a team's postgresql:// URL (no password in it)."""
    from ventana.state.schema import LocationError, location

    try:
        return location(value)  # type: ignore[return-value]
    except LocationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_common(p: argparse.ArgumentParser, *, sub: bool = False) -> None:
    # On a subcommand the options default to SUPPRESS, so ``ventana --log X log``
    # and ``ventana log --log X`` both keep X (argparse would reset it to None).
    default = argparse.SUPPRESS if sub else None
    p.add_argument("--log", type=_log_arg, default=default, help="action log file, or a "
                   "team's postgresql://user@host/db URL (default: XDG data dir)")
    p.add_argument("--config", type=Path, default=default,
                   help="config file (default: XDG config dir)")


class _TargetAction(argparse.Action):
    """``--target`` keeps the last name in ``target`` and every name in ``targets``."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        namespace.targets = [*(getattr(namespace, "targets", None) or []), values]
        namespace.target = values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ventana",
        description="Terminal console for live maintenance of virtualization clusters.",
    )
    _add_common(parser)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--target", action=_TargetAction, default=None,
                        help="a target named in the config file (repeat: side by side)")
    parser.set_defaults(targets=[])
    parser.add_argument("--read-only", "--readonly", action="store_true",
                        help="no action can change anything")
    parser.add_argument("--record", type=Path, metavar="FILE", help="record the session")
    real = parser.add_argument_group("real clusters")
    real.add_argument(
        "--hyperv", metavar="CLUSTER_OR_NODE",
        help="a Hyper-V failover cluster over WinRM/HTTPS (read-only unless --read-write)",
    )
    real.add_argument(
        "--node", action="append", default=[], metavar="HOST[:PORT]",
        help="--hyperv: a cluster node to connect to (repeat; default: the name itself)",
    )
    real.add_argument(
        "--resolve", action="append", default=[], metavar="NAME=HOST[:PORT]",
        help="--hyperv: reach this node (or cluster) name at this address (labs, the test "
             "endpoint; repeat)",
    )
    real.add_argument(
        "--no-discover", action="store_true",
        help="--hyperv: without --node, connect to the name only (no Get-ClusterNode)",
    )
    real.add_argument("--auth", default=None,
                      choices=("negotiate", "ntlm", "kerberos", "credssp", "basic"),
                      help="--hyperv: WinRM authentication (default negotiate)")
    real.add_argument("--winrm-port", type=int, default=None,
                      help="--hyperv: HTTPS port (default 5986)")
    real.add_argument(
        "--read-write", action="store_true",
        help="--hyperv/--vsphere: allow actions (after plan, pre-flight and typed confirmation)",
    )
    real.add_argument("--vsphere", metavar="HOST[:PORT]",
                      help="a vCenter or ESXi host (read-only unless --read-write)")
    real.add_argument("--user", help="user name (DOMAIN\\user, or user@vsphere.local)")
    real.add_argument("--ca-file", type=Path, help="CA bundle that signed the server's certificate")
    real.add_argument("--password-file", type=Path, help="file with the password (mode 0600)")
    real.add_argument(
        "--insecure", action="store_true",
        help="do NOT verify the TLS certificate (shown in the header and logged)",
    )
    sim = parser.add_argument_group("built-in simulated cluster (the default target)")
    sim.add_argument("--sim", action="store_true",
                     help="also show the simulated cluster (with --hyperv or --vsphere)")
    sim.add_argument("--seed", type=int, default=None, help="seed: the same seed, the same run")
    sim.add_argument("--vms", type=int, default=None, help="number of VMs (default 74)")
    sim.add_argument("--rate", type=float, default=None, help="churn rate multiplier (0: static)")
    sim.add_argument(
        "--speed", dest="sim_speed", type=float, default=None,
        help="simulated seconds per real second for long tasks (default 60)",
    )
    sub = parser.add_subparsers(dest="command")
    replay = sub.add_parser("replay", help="play a recording back, read-only")
    replay.add_argument("file", type=Path)
    replay.add_argument("--speed", type=float, default=1.0, help="playback speed (0: instant)")
    _add_common(replay, sub=True)
    log = sub.add_parser("log", help="list the action log")
    log.add_argument("--csv", action="store_true", help="export every row as CSV to stdout")
    log.add_argument("--limit", type=int, default=50)
    # team mode (docs/team-mode.md): `ventana log migrate --to postgresql://…`
    log.add_argument("migrate", nargs="?", choices=["migrate"],
                     help="copy this SQLite log into a team's database (with --to)")
    log.add_argument("--to", type=_log_arg, metavar="URL",
                     help="migrate: the destination, a postgresql:// URL")
    _add_common(log, sub=True)
    report = sub.add_parser(
        "report", help="the campaign report from the action log (Markdown, CSV or xlsx)",
        description="Exit codes: 0 written; 1 the action log cannot be read; 2 bad "
        "arguments; 3 the output cannot be written.",
    )
    report.add_argument("--format", choices=("md", "csv", "xlsx", "chart"), default="md",
                        help="md (default), csv and chart (the LUN bars alone) go to stdout "
                        "unless --out; xlsx needs --out")
    report.add_argument("--out", type=Path, metavar="PATH", help="write the report to PATH")
    report.add_argument("--db", type=_log_arg, metavar="PATH",
                        help="the action log (default: --log, the config's log, or the XDG one)")
    report.add_argument("--since", metavar="ISO", help="only rows started at or after this time")
    report.add_argument("--until", metavar="ISO", help="only rows started at or before this time")
    report.add_argument("--recording", type=Path, metavar="FILE",
                        help="a recording: every LUN it saw joins the LUN table")
    report.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                        help="how long to wait for a locked action log (default 10)")
    _add_common(report, sub=True)
    # -- ventana probe: read-only captures (tui/probecli.py; backends/*/probe.py) ---------
    probe = sub.add_parser(
        "probe", help="read-only: capture what real hosts answer to Ventana's reads",
        description="Sends only the reads the backend sends (Hyper-V: the read contract in "
        "COMMANDS.md; vSphere: docs/vsphere.md) and writes every raw answer to --out. "
        "Nothing that changes a host is sent. Exit codes: 0 written; 1 the server refused "
        "or failed; 2 bad arguments; 3 cannot write.",
    )
    probe.add_argument("--vsphere", metavar="HOST[:PORT]", help="a vCenter or ESXi host")
    probe.add_argument("--hyperv", dest="probe_hyperv", action="append", default=[],
                       metavar="NODE[:PORT]", help="a Hyper-V node to probe (repeat)")
    probe.add_argument("--out", type=Path, metavar="FILE",
                       help="the capture file to write (mode 0600; required)")
    probe.add_argument("--anonymize", action="store_true",
                       help="replace names, paths, ids and addresses with stable aliases")
    probe.add_argument("--user", help="DOMAIN\\user (Hyper-V) or user@vsphere.local (vSphere)")
    probe.add_argument("--password-file", type=Path, help="a file holding the password (0600)")
    probe.add_argument("--ca-file", type=Path, help="the CA bundle of the hosts' certificates")
    probe.add_argument("--wait", type=int, default=5, metavar="SECONDS",
                       help="vSphere: how long to listen for pushed updates (default 5)")
    probe.add_argument("--vm", dest="probe_vm", action="append", default=[], metavar="NAME",
                       help="vSphere: read the storage properties of this VM (repeat; "
                            "default: the inventory's first 20)")
    probe.add_argument("--insecure", action="store_true",
                       help="vSphere: do NOT verify the TLS certificate")
    probe.add_argument("--auth", choices=("negotiate", "ntlm", "kerberos", "credssp", "basic"),
                       help="Hyper-V: WinRM authentication")
    probe.add_argument("--winrm-port", type=int, default=None, help="Hyper-V: WinRM port")
    probe.add_argument("--resolve", action="append", default=[], metavar="NAME=HOST[:PORT]",
                       help="Hyper-V: reach NAME at HOST (the certificate is checked "
                       "against NAME)")
    _add_common(probe, sub=True)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ventana-console")
    except PackageNotFoundError:
        return "unknown"


def _open_log(path: Path | None, *, read_only: bool = False,
              lease_ttl: float = DEFAULT_TTL_S) -> tuple[ActionLog | None, str]:
    """The action log, proven writable now (not at the first action); read-only
    sessions only read it. A team's log (a URL) whose database is out of reach opens
    anyway: the console refuses actions under a banner until it answers (core/console.py)."""
    from .logcheck import unwritable

    try:
        log = ActionLog.open(path, lazy=True, lease_ttl=lease_ttl)
    except ActionLogError as exc:
        return None, clean(str(exc))
    problem = "" if is_url(log.path) else unwritable(log.path)
    if problem and not read_only:
        log.close()
        return None, clean(problem)
    return log, ""


def cmd_log_migrate(args: argparse.Namespace, log_path: Path | str | None) -> int:
    from ventana.state.logmigrate import copy_log
    from ventana.state.paths import default_log_path

    source = log_path or default_log_path()
    if args.to is None or is_url(source):
        print("ventana log migrate: needs --to postgresql://… and a SQLite log as the source "
              "(--log FILE, the config's log, or the XDG one)", file=sys.stderr)
        return 2
    try:
        report = copy_log(Path(source), args.to)
    except ActionLogError as exc:
        print(f"ventana log migrate: {clean(str(exc))}", file=sys.stderr)
        return 1
    print("\n".join(clean(line) for line in report.lines()))
    return 0


def cmd_log(args: argparse.Namespace, log_path: Path | str | None) -> int:
    from ventana.state.paths import default_log_path

    from .logcli import cmd_log as run

    if getattr(args, "migrate", None):
        return cmd_log_migrate(args, log_path)
    return run(log_path or default_log_path(), as_csv=args.csv, limit=args.limit)


def cmd_report(args: argparse.Namespace, log_path: Path | None) -> int:
    from ventana.state.paths import default_log_path
    from ventana.state.recording import RecordingError, read_recording
    from ventana.state.report import (
        ReportError,
        build_report,
        lun_chart,
        lun_sightings,
        parse_time,
        to_csv,
        to_markdown,
        write_xlsx,
    )

    def fail(code: int, message: str) -> int:
        print(f"ventana report: {clean(message)}", file=sys.stderr)
        return code

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ReportError as exc:
        return fail(2, str(exc))
    if args.format == "xlsx" and args.out is None:
        return fail(2, "--format xlsx needs --out PATH (a workbook is not written to a terminal)")

    path = args.db or log_path or default_log_path()
    if not is_url(path) and not Path(path).is_file():  # a report never creates an empty log
        return fail(1, f"no action log at {path}")
    luns = []
    if args.recording is not None:
        try:
            luns = lun_sightings(read_recording(args.recording))
        except (RecordingError, OSError) as exc:
            return fail(1, f"cannot read the recording {args.recording}: {exc}")
    try:
        with ActionLog.open(path, busy_timeout=max(0.0, args.wait)) as log:
            rows = log.rows(newest_first=False)
    except ActionLogError as exc:
        return fail(1, str(exc))
    try:
        report = build_report(rows, since=since, until=until, luns=luns)
    except ReportError as exc:
        return fail(2, str(exc))
    try:
        if args.format == "xlsx":
            write_xlsx(report, args.out)
            return 0
        if args.format == "chart":
            text = "\n".join(lun_chart(report.luns) or ["No LUN seen in this range."]) + "\n"
        else:
            text = to_markdown(report) if args.format == "md" else to_csv(report)
        if args.out is None:
            sys.stdout.write(text)
        else:
            args.out.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        return fail(3, f"cannot write {args.out}: {exc.strerror or exc}")
    return 0


def _sim_backend(args: argparse.Namespace, options: dict[str, object], read_only: bool) -> Backend:
    from ventana.backends.sim import SimBackend, SimConfig

    values: dict[str, object] = {}
    for name in ("seed", "vms", "rate", "speed"):
        cli_value = getattr(args, "sim_speed" if name == "speed" else name, None)
        if cli_value is not None:
            values[name] = cli_value
        elif name in options:
            values[name] = options[name]
    return SimBackend(SimConfig(read_only=read_only, **values))  # type: ignore[arg-type]


VSPHERE_READ_ONLY = "vSphere sessions are read-only unless started with --read-write"


def _vsphere_backend(args: argparse.Namespace) -> Backend:
    import getpass
    import os

    from ventana.backends.vsphere import VSphereBackend, VSphereConfig
    from ventana.backends.vsphere.backend import DEFAULT_ENV

    host, _, port = str(args.vsphere).rpartition(":") if ":" in args.vsphere else (
        args.vsphere, "", "443")
    config = VSphereConfig(
        host=host, port=int(port), user=args.user or "", ca_file=args.ca_file,
        insecure=args.insecure, password_file=args.password_file,
        read_only=not args.read_write or args.read_only,
    )
    from ventana.backends.credentials import real_keyring

    password = None
    if args.password_file is None and not os.environ.get(DEFAULT_ENV) and (
        sys.stdin.isatty() or real_keyring()
    ):
        # Reach the host and verify its certificate before asking the keyring or
        # the operator (issue 12): raises HostCheckError, and nobody is asked.
        from ventana.backends.hostcheck import check_host
        from ventana.backends.vsphere.credentials import from_keyring
        from ventana.backends.vsphere.session import ssl_context

        trust = check_host(config.host, config.port,
                           ssl_context(config.ca_file, insecure=config.insecure))
        if not trust.verified:  # the explicit flag: say what is being trusted blindly
            print(f"ventana: TLS verification OFF for {clean(host)}:{config.port}; its "
                  f"certificate's SHA-256 fingerprint is {trust.fingerprint}", file=sys.stderr)
        password, source = from_keyring(config.user), "the OS keyring"
        if password is None and sys.stdin.isatty():
            password = getpass.getpass(f"Password for {config.user or 'the user'} on {host}: ")
            source = "the prompt"
        return VSphereBackend(config, password=password, password_source=source)
    return VSphereBackend(config)


def _hyperv_first_contact(args: argparse.Namespace) -> None:
    """Reach the first Hyper-V host and verify its certificate as pypsrp will (the
    certifi bundle unless --ca-file; the NAME is checked even when --resolve maps
    it), before a keyring or the operator is asked. Raises HostCheckError."""
    from ventana.backends.hostcheck import check_host, requests_context
    from ventana.tui.preflight import host_of

    first = args.node[0] if args.node else str(args.hyperv)
    name = host_of(first)
    port = int(first.rsplit(":", 1)[1]) if first.count(":") == 1 else (args.winrm_port or 5986)
    mapped = dict(r.split("=", 1) for r in args.resolve if "=" in r)
    connect_to = None
    if name in mapped:
        to = mapped[name]
        connect_to = (host_of(to), int(to.rsplit(":", 1)[1]) if to.count(":") == 1 else port)
    check_host(name, port, requests_context(args.ca_file, insecure=args.insecure),
               connect_to=connect_to)


def _hyperv_backend(args: argparse.Namespace) -> Backend:
    import dataclasses
    import getpass
    import os

    from ventana.backends.credentials import real_keyring
    from ventana.backends.hyperv import (
        Credential,
        CredentialError,
        HyperVBackend,
        HyperVConfig,
        resolve_password,
    )
    from ventana.backends.hyperv.credentials import ENV_VAR

    if args.password_file is None and not os.environ.get(ENV_VAR) and (
        sys.stdin.isatty() or real_keyring()
    ):
        _hyperv_first_contact(args)  # before the keyring or the prompt (issue 12)
    try:
        credential = resolve_password(args.user, password_file=args.password_file)
    except CredentialError:
        if args.password_file is not None or not sys.stdin.isatty():
            raise
        password = getpass.getpass(f"Password for {args.user} on {args.hyperv}: ")
        credential = Credential(args.user, password, "prompt")
    port = args.winrm_port or 5986
    nodes = tuple(n if ":" in n else f"{n}:{port}" for n in args.node)
    config = HyperVConfig(
        args.hyperv, args.user, nodes=nodes, port=port, auth=args.auth or "negotiate",
        ca_bundle=str(args.ca_file) if args.ca_file else None,
        verify_tls=not args.insecure, read_only=not args.read_write or args.read_only,
        discover=not args.no_discover,
        resolve=tuple(tuple(r.split("=", 1)) for r in args.resolve if "=" in r),  # type: ignore[misc]
    )
    backup = getattr(args, "hyperv_backup", None) or {}  # the target's backup_* options
    if backup:
        config = dataclasses.replace(config, **{
            k: tuple(v) if isinstance(v, list) else v for k, v in backup.items()})
    return HyperVBackend(config, credential)


def _apply_target(args: argparse.Namespace, kind: str, options: dict[str, object],
                  read_only: bool) -> None:
    """Fill the command-line fields from a config target (the command line wins)."""
    def take(attr: str, key: str, convert=lambda v: v) -> None:  # type: ignore[no-untyped-def]
        if getattr(args, attr, None) in (None, [], False) and key in options:
            setattr(args, attr, convert(options[key]))

    take("user", "user", str)
    take("ca_file", "ca_bundle", lambda v: Path(str(v)).expanduser())
    take("password_file", "password_file", lambda v: Path(str(v)).expanduser())
    if kind == "hyperv":
        args.hyperv = str(options.get("cluster") or args.target)
        take("node", "nodes", lambda v: [str(n) for n in v])  # type: ignore[attr-defined]
        take("auth", "auth", str)
        take("winrm_port", "port", int)
        args.hyperv_backup = {k: options[k] for k in (
            "backup_services", "backup_ports", "backup_interval", "backup_checks")
            if k in options}
        args.read_write = args.read_write or not read_only
    else:
        host = str(options.get("host") or args.target)
        args.vsphere = f"{host}:{int(options.get('port', 443))}"  # type: ignore[arg-type]
        args.read_write = args.read_write or not read_only
    args.target = None


def _single_backend(args: argparse.Namespace, config: Config) -> tuple[Backend, str] | int:
    """One target from the command line or the config: (backend, read-only reason),
    or an exit code after saying why not."""
    reason = ""
    if args.hyperv:
        from ventana.backends.hyperv import CredentialError

        if not args.user:
            print("ventana: --hyperv needs --user DOMAIN\\user", file=sys.stderr)
            return 2
        from ventana.backends.hostcheck import HostCheckError

        try:
            backend = _hyperv_backend(args)
        except (CredentialError, HostCheckError, ValueError, OSError) as exc:
            print(f"ventana: {clean(str(exc))}", file=sys.stderr)
            return 2
        if backend.read_only:
            reason = ("started with --read-only" if args.read_only
                      else "Hyper-V sessions are read-only unless started with --read-write")
    elif args.vsphere:
        if not args.user:
            print("ventana: --vsphere needs --user", file=sys.stderr)
            return 2
        from ventana.backends.hostcheck import HostCheckError

        try:
            backend = _vsphere_backend(args)
        except (HostCheckError, ValueError, OSError) as exc:
            print(f"ventana: {clean(str(exc))}", file=sys.stderr)
            return 2
        if backend.read_only:
            reason = "started with --read-only" if args.read_only else VSPHERE_READ_ONLY
    else:
        try:
            target = config.target(args.target) if args.target else None
        except ConfigError as exc:
            print(f"ventana: {clean(str(exc))}", file=sys.stderr)
            return 2
        if target is not None and target.kind != "sim":
            _apply_target(args, target.kind, target.options, target.read_only)
            return _single_backend(args, config)
        read_only = args.read_only or bool(target and target.read_only)
        try:
            backend = _sim_backend(args, target.options if target else {}, read_only)
        except (TypeError, ValueError) as exc:
            print(f"ventana: bad simulator settings: {clean(str(exc))}", file=sys.stderr)
            return 2
        if read_only:
            reason = "started with --read-only" if args.read_only else (
                f"target {target.name!r} is read_only in the config" if target else ""
            )

    return backend, reason


def _several(args: argparse.Namespace) -> bool:
    """More than one target asked for (``--target`` repeated, or real ones combined)."""
    named = len(args.targets or [])
    direct = sum(bool(x) for x in (args.hyperv, args.vsphere, getattr(args, "sim", False)))
    return named + direct > 1


def _several_backends(args: argparse.Namespace, config: Config) -> tuple[Backend, str] | int:
    """Each target on its own copy of the arguments, then one composite backend."""
    import copy

    from ventana.backends.multi import MultiBackend

    def only(**fields: object) -> argparse.Namespace:
        one = copy.copy(args)
        one.node = list(args.node)
        one.targets, one.target, one.hyperv, one.vsphere, one.sim = [], None, None, None, False
        for key, value in fields.items():
            setattr(one, key, value)
        return one

    wanted: list[tuple[str, argparse.Namespace]] = [
        (name, only(target=name)) for name in args.targets or []
    ]
    if args.hyperv:
        wanted.append((str(args.hyperv), only(hyperv=args.hyperv)))
    if args.vsphere:
        wanted.append((str(args.vsphere).rsplit(":", 1)[0] if ":" in args.vsphere
                       else str(args.vsphere), only(vsphere=args.vsphere)))
    if getattr(args, "sim", False):
        wanted.append(("sim", only()))
    children: list[tuple[str, Backend]] = []
    labels: set[str] = set()
    for label, one in wanted:
        label = label.replace("/", "-").replace(":", "-") or "target"
        while label in labels:
            label += "'"
        labels.add(label)
        built = _single_backend(one, config)
        if isinstance(built, int):
            return built
        children.append((label, built[0]))
    backend = MultiBackend(children)
    reason = "every target is read-only" if backend.read_only else ""
    return backend, reason


def attach_side_channels(backend: Backend, config: Config, log: ActionLog | None) -> str:
    """The SSH side channel (stun watcher, guest hooks) on every vSphere backend,
    a composite's vSphere targets included; raises ValueError on a bad config."""
    backends = ([c.backend for c in backend.children] if isinstance(backend, Composite)
                else [backend])
    vsphere = [b for b in backends if isinstance(b, SideChannelHost)]
    if not vsphere or not config.sections:
        return ""
    from ventana.backends.ssh.wiring import attach
    from ventana.state.plans_vsphere import configure

    configure(config.sections)
    return "; ".join(filter(None, (attach(b, config.sections, log) for b in vsphere)))


#: Why a replay has no action log.
REPLAY_NO_LOG = "a replay does not write to the action log"


def session_log(mode: str | None, path: Path | None, *, read_only: bool,
                lease_ttl: float = DEFAULT_TTL_S) -> tuple[ActionLog | None, str]:
    """The console's action log: none for a replay (it never touches the operator's log)."""
    if mode == "replay":
        return None, REPLAY_NO_LOG
    return _open_log(path, read_only=read_only, lease_ttl=lease_ttl)


def main(argv: list[str] | None = None) -> int:
    from .logcheck import closing_pipe_quietly

    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ventana: {clean(str(exc))}", file=sys.stderr)
        return 2
    with closing_pipe_quietly() as done:  # ``ventana log | head`` ends without a traceback
        done.code = main_with(args, config, args.log or config.log)
    return done.code


def main_with(args: argparse.Namespace, config: Config, log_path: Path | None) -> int:

    if args.command == "log":
        return cmd_log(args, log_path)
    if args.command == "report":
        return cmd_report(args, log_path)
    if args.command == "probe":
        if getattr(args, "probe_hyperv", None):
            from ventana.backends.hyperv.probe import main as probe_hyperv

            return probe_hyperv(args)
        from .probecli import cmd_probe

        return cmd_probe(args)

    mode: str | None = None
    reason = ""
    if args.command == "replay":
        from ventana.backends.replay import ReplayBackend
        from ventana.state.recording import RecordingError

        try:
            backend: Backend = ReplayBackend(args.file, speed=args.speed)
        except (RecordingError, OSError, ValueError) as exc:
            print(f"ventana: {clean(str(exc))}", file=sys.stderr)
            return 2
        mode = "replay"
        reason = "replaying a recording"
    elif _several(args):
        built = _several_backends(args, config)
        if isinstance(built, int):
            return built
        backend, reason = built
    else:
        single = _single_backend(args, config)
        if isinstance(single, int):
            return single
        backend, reason = single

    recorder = None
    if args.record:
        from ventana.state.recording import Recorder

        try:
            recorder = Recorder(args.record, backend.target, meta={
                "backend": backend.name,
                "clock_start": backend.now().isoformat(),
                "clock_rate": backend.clock_rate,
            })
        except OSError as exc:
            print(f"ventana: cannot record to {args.record}: {exc}", file=sys.stderr)
            return 2

    log, log_error = session_log(mode, log_path, read_only=backend.read_only,
                                 lease_ttl=config.lease_ttl)
    if log is not None:  # who did it: the cluster account on every row (team mode)
        from ventana.state.team import account_of

        log.account = account_of(backend)
    try:
        attach_side_channels(backend, config, log)
    except (ValueError, TypeError) as exc:
        print(f"ventana: {clean(str(exc))}", file=sys.stderr)
        if log is not None:
            log.close()
        return 2

    from .preflight import names_to_resolve, unresolvable

    if mode != "replay" and (problem := unresolvable(names_to_resolve(args, config))):
        print(f"ventana: {problem}", file=sys.stderr)  # plainly, not a socket error later
        if log is not None:
            log.close()
        return 2

    from .app import VentanaApp

    flags = "TLS NOT VERIFIED" if getattr(args, "insecure", False) else ""
    app = VentanaApp(
        backend, log=log, log_error=log_error, recorder=recorder, mode=mode,
        read_only_reason=reason, flags=flags, findings_config=config.findings,
    )
    from .logcheck import ConnectionWatch

    if mode != "replay":
        app.connection_watch = ConnectionWatch(app.store)  # type: ignore[attr-defined]
    try:
        app.run()
    finally:
        if recorder is not None:
            recorder.close()
        if log is not None:
            log.close()
    from .logcheck import exit_code

    return exit_code(app)


if __name__ == "__main__":
    sys.exit(main())
