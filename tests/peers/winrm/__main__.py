"""Start the WinRM test peer by hand (the entry point of ``python -m tests.peers.winrm``).

Usage, from the repository root::

    python -m tests.peers.winrm --port 5986 --user 'LAB\\operator'

The password is read from ``VENTANA_TEST_WINRM_PASSWORD`` or prompted for
(never taken from the command line, never printed). Prints the endpoint and
the CA certificate path to give the client, then serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import logging
import os
import signal
import sys
import threading

from .cmdlets import CommandRegistry
from .server import WinRMPeer, split_user

PASSWORD_ENV = "VENTANA_TEST_WINRM_PASSWORD"


def _load_registry(spec: str | None) -> CommandRegistry | None:
    if not spec:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise SystemExit("--commands wants module:function")
    factory = getattr(importlib.import_module(module_name), attr)
    registry = factory()
    if not isinstance(registry, CommandRegistry):
        raise SystemExit(f"{spec} did not return a CommandRegistry")
    return registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.peers.winrm",
        description="WinRM/PSRP test endpoint (HTTPS, Basic + NTLM/Negotiate) for pypsrp clients.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5986, help="TCP port (0: any free port)")
    parser.add_argument("--user", default="LAB\\operator", help="DOMAIN\\USER allowed to log in")
    parser.add_argument(
        "--name",
        action="append",
        dest="names",
        help="name in the server certificate (repeatable; default localhost, 127.0.0.1, --host)",
    )
    parser.add_argument(
        "--auth",
        default="basic,negotiate",
        help="comma-separated schemes: basic, negotiate (NTLM raw or in SPNEGO)",
    )
    parser.add_argument("--workdir", help="where to write ca.pem (default: a new temporary dir)")
    parser.add_argument(
        "--commands",
        help="module:function returning a CommandRegistry (default: the demo commands)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # 'LAB\\operator' typed in a shell's single quotes arrives with two backslashes.
    args.user = args.user.replace("\\\\", "\\")
    try:
        split_user(args.user)
    except ValueError as exc:
        parser.error(str(exc))
    password = os.environ.get(PASSWORD_ENV)
    source = "environment"
    if not password:
        password = getpass.getpass(f"Password for {args.user}: ")
        source = "prompt"
    if not password:
        parser.error("an empty password is not accepted")

    peer = WinRMPeer(
        {args.user: password},
        registry=_load_registry(args.commands),
        host=args.host,
        port=args.port,
        cert_names=args.names,
        auth=[a.strip() for a in args.auth.split(",") if a.strip()],
        workdir=args.workdir,
    ).start()
    commands = ", ".join(peer.registry.names())
    print(
        f"WinRM test peer on {peer.endpoint}\n"
        f"  CA certificate: {peer.ca_path}\n"
        f"  certificate names: {', '.join(peer.cert_names)}\n"
        f"  user: {args.user} (password from the {source})\n"
        f"  auth: {', '.join(sorted(peer.auth))}\n"
        f"  commands: {commands}\n"
        f"Client: WSMan({args.host!r}, port={peer.port}, username={args.user!r}, "
        f"password=..., auth='ntlm', cert_validation={str(peer.ca_path)!r})\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        while not done.wait(1.0):
            pass
    finally:
        peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
