"""The ``ventana`` command line.

    ventana [--target NAME | --seed N --vms N ...] [--read-only] [--record FILE]
    ventana --hyperv CLUSTER [--node HOST]... --user 'DOMAIN\\user' [--ca-file PEM] [--read-write]
        (no --node: the nodes are discovered with Get-ClusterNode through CLUSTER)
    ventana --vsphere HOST[:PORT] --user USER [--ca-file PEM]   (monitoring only)
    ventana replay FILE [--speed N]
    ventana log [--csv] [--limit N]

With no target, the console opens on the built-in simulated cluster.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ventana.backends.base import Backend
from ventana.state.actionlog import ActionLog, ActionLogError
from ventana.state.config import Config, ConfigError, load_config
from ventana.state.sanitize import clean


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", type=Path, help="action log file (default: XDG data dir)")
    p.add_argument("--config", type=Path, help="config file (default: XDG config dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ventana",
        description="Terminal console for live maintenance of virtualization clusters.",
    )
    _add_common(parser)
    parser.add_argument("--target", help="a target named in the config file")
    parser.add_argument("--read-only", action="store_true", help="no action can change anything")
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
        help="--hyperv: allow actions (after plan, pre-flight and typed confirmation)",
    )
    real.add_argument("--vsphere", metavar="HOST[:PORT]",
                      help="a vCenter or ESXi host (monitoring only in this version)")
    real.add_argument("--user", help="user name (DOMAIN\\user, or user@vsphere.local)")
    real.add_argument("--ca-file", type=Path, help="CA bundle that signed the server's certificate")
    real.add_argument("--password-file", type=Path, help="file with the password (mode 0600)")
    real.add_argument(
        "--insecure", action="store_true",
        help="do NOT verify the TLS certificate (shown in the header and logged)",
    )
    sim = parser.add_argument_group("built-in simulated cluster (the default target)")
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
    _add_common(replay)
    log = sub.add_parser("log", help="list the action log")
    log.add_argument("--csv", action="store_true", help="export every row as CSV to stdout")
    log.add_argument("--limit", type=int, default=50)
    _add_common(log)
    return parser


def _open_log(path: Path | None) -> tuple[ActionLog | None, str]:
    try:
        return ActionLog.open(path), ""
    except ActionLogError as exc:
        return None, clean(str(exc))


def cmd_log(args: argparse.Namespace, log_path: Path | None) -> int:
    try:
        log = ActionLog.open(log_path)
    except ActionLogError as exc:
        print(f"ventana: {clean(str(exc))}", file=sys.stderr)
        return 1
    try:
        if args.csv:
            log.to_csv(sys.stdout)
            return 0
        rows = log.rows(limit=args.limit)
        if not rows:
            print("The action log is empty.")
            return 0
        out = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
        out.writerow(["started", "operator", "mode", "action", "target", "status",
                      "duration_s", "size_before", "size_after", "final_state", "error"])
        for r in rows:
            out.writerow([r.started, r.operator, r.mode, r.action, r.target_name, r.status,
                          "" if r.duration_s is None else f"{r.duration_s:.1f}",
                          r.size_before if r.size_before is not None else "",
                          r.size_after if r.size_after is not None else "",
                          r.final_state or "", r.error or ""])
        return 0
    finally:
        log.close()


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


VSPHERE_READ_ONLY = "vSphere actions are not available in this version (monitoring only)"


def _vsphere_backend(args: argparse.Namespace) -> Backend:
    import getpass
    import os

    from ventana.backends.vsphere import VSphereBackend, VSphereConfig
    from ventana.backends.vsphere.backend import DEFAULT_ENV

    host, _, port = str(args.vsphere).rpartition(":") if ":" in args.vsphere else (
        args.vsphere, "", "443")
    config = VSphereConfig(
        host=host, port=int(port), user=args.user or "", ca_file=args.ca_file,
        insecure=args.insecure, password_file=args.password_file, read_only=True,
    )
    password = None
    if args.password_file is None and not os.environ.get(DEFAULT_ENV) and sys.stdin.isatty():
        password = getpass.getpass(f"Password for {config.user or 'the user'} on {host}: ")
    return VSphereBackend(config, password=password)


def _hyperv_backend(args: argparse.Namespace) -> Backend:
    import getpass

    from ventana.backends.hyperv import (
        Credential,
        CredentialError,
        HyperVBackend,
        HyperVConfig,
        resolve_password,
    )

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
        args.read_write = args.read_write or not read_only
    else:
        host = str(options.get("host") or args.target)
        args.vsphere = f"{host}:{int(options.get('port', 443))}"  # type: ignore[arg-type]
    args.target = None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ventana: {clean(str(exc))}", file=sys.stderr)
        return 2
    return main_with(args, config, args.log or config.log)


def main_with(args: argparse.Namespace, config: Config, log_path: Path | None) -> int:

    if args.command == "log":
        return cmd_log(args, log_path)

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
    elif args.hyperv:
        from ventana.backends.hyperv import CredentialError

        if not args.user:
            print("ventana: --hyperv needs --user DOMAIN\\user", file=sys.stderr)
            return 2
        try:
            backend = _hyperv_backend(args)
        except (CredentialError, ValueError, OSError) as exc:
            print(f"ventana: {clean(str(exc))}", file=sys.stderr)
            return 2
        if backend.read_only:
            reason = ("started with --read-only" if args.read_only
                      else "Hyper-V sessions are read-only unless started with --read-write")
    elif args.vsphere:
        if not args.user:
            print("ventana: --vsphere needs --user", file=sys.stderr)
            return 2
        try:
            backend = _vsphere_backend(args)
        except (ValueError, OSError) as exc:
            print(f"ventana: {clean(str(exc))}", file=sys.stderr)
            return 2
        reason = VSPHERE_READ_ONLY
    else:
        try:
            target = config.target(args.target) if args.target else None
        except ConfigError as exc:
            print(f"ventana: {clean(str(exc))}", file=sys.stderr)
            return 2
        if target is not None and target.kind != "sim":
            _apply_target(args, target.kind, target.options, target.read_only)
            return main_with(args, config, log_path)
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

    log, log_error = _open_log(log_path)
    from .app import VentanaApp

    flags = "TLS NOT VERIFIED" if getattr(args, "insecure", False) else ""
    app = VentanaApp(
        backend, log=log, log_error=log_error, recorder=recorder, mode=mode,
        read_only_reason=reason, flags=flags,
    )
    try:
        app.run()
    finally:
        if recorder is not None:
            recorder.close()
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
