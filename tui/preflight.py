"""Command-line checks before a real target is contacted (issue 12).

An unresolvable name is said plainly — ``cannot resolve NAME`` — before any
password prompt, instead of a socket error text later in the header.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ventana.state.sanitize import clean

#: How long one name may take to resolve before the check gives up (the
#: backend then tries, and reports what it finds).
RESOLVE_TIMEOUT_S = 5.0

Resolver = Callable[[str], object]


def _getaddrinfo(name: str) -> object:
    return socket.getaddrinfo(name, None)


def host_of(address: str) -> str:
    """``host`` from ``host``, ``host:port`` or ``[v6]:port``."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address


def unresolvable(names: Iterable[str], resolve: Resolver = _getaddrinfo) -> str:
    """"cannot resolve NAME" for the first name that does not resolve; "" if all do
    (or if resolving takes longer than RESOLVE_TIMEOUT_S: not a verdict)."""
    for name in names:
        host = host_of(name)
        if not host:
            continue
        failure: list[BaseException] = []

        def attempt(host: str = host, failure: list[BaseException] = failure) -> None:
            try:
                resolve(host)
            except (socket.gaierror, UnicodeError) as exc:
                failure.append(exc)

        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(RESOLVE_TIMEOUT_S)
        if failure:
            return f"cannot resolve {clean(host)}"
    return ""


def names_to_resolve(args: Any, config: Any) -> list[str]:
    """The host names this command line will contact (``--resolve`` ones excepted)."""
    mapped = {r.split("=", 1)[0] for r in (args.resolve or []) if "=" in r}
    names: list[str] = [r.split("=", 1)[1] for r in (args.resolve or []) if "=" in r]
    if args.hyperv:
        names += list(args.node) if args.node else [args.hyperv]
    if args.vsphere:
        names.append(args.vsphere)
    for target_name in args.targets or ([args.target] if args.target else []):
        try:
            target = config.target(target_name)
        except Exception:
            continue
        if target.kind == "hyperv":
            nodes = target.options.get("nodes") or [target.options.get("cluster") or target.name]
            names += [str(n) for n in nodes]
        elif target.kind == "vsphere":
            names.append(str(target.options.get("host") or target.name))
    return [n for n in names if host_of(n) not in mapped]
