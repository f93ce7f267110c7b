"""``ventana probe``: a read-only capture of a server's raw answers to the backend's reads.

The parser lives in ``cli.py``; each backend's capture logic in its own
package (``backends/vsphere/probe.py``).
"""

from __future__ import annotations

import argparse
import sys

from ventana.state.sanitize import clean


def cmd_probe(args: argparse.Namespace) -> int:
    """``ventana probe --vsphere HOST``: logic in backends/vsphere/probe.py."""
    if not args.vsphere:
        print("ventana: probe needs --vsphere HOST or --hyperv NODE", file=sys.stderr)
        return 2
    if args.out is None:
        print("ventana: probe needs --out FILE", file=sys.stderr)
        return 2
    if not args.user:
        print("ventana: probe --vsphere needs --user", file=sys.stderr)
        return 2
    import getpass
    import os

    from ventana.backends.vsphere.credentials import (
        DEFAULT_ENV,
        CredentialError,
        resolve_password,
    )
    from ventana.backends.vsphere.probe import probe, summary

    host, _, port = (str(args.vsphere).rpartition(":") if ":" in args.vsphere
                     else (args.vsphere, "", "443"))
    from ventana.backends.hostcheck import HostCheckError, check_host
    from ventana.backends.vsphere.session import ssl_context

    try:
        if args.password_file is None and not os.environ.get(DEFAULT_ENV) and sys.stdin.isatty():
            # Reach and certificate before the prompt (issue 12), as the console does.
            check_host(host, int(port), ssl_context(args.ca_file, insecure=args.insecure))
            password = getpass.getpass(f"Password for {args.user} on {host}: ")
        else:
            password, _ = resolve_password(secret_file=args.password_file, env_var=DEFAULT_ENV)
        result = probe(host, int(port), args.user, password, args.out, ca_file=args.ca_file,
                       insecure=args.insecure, anonymize=args.anonymize, wait_s=args.wait,
                       vm_names=tuple(args.probe_vm))
    except (CredentialError, HostCheckError) as exc:
        print(f"ventana: {clean(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:
        text = f"{type(exc).__name__}: {getattr(exc, 'msg', None) or exc}"
        print(f"ventana: probe failed: {clean(text)}", file=sys.stderr)
        return 1
    print(clean(summary(result)))
    return 0
