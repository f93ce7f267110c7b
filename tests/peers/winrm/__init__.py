"""A WinRM/PowerShell Remoting endpoint written in Python, for testing pypsrp clients.

No PowerShell exists on the machines Ventana is tested on, so the Hyper-V
backend's tests talk to this peer: HTTPS on 127.0.0.1 with a certificate
from a throwaway trustme CA that the client verifies, real authentication
(Basic, and NTLM/Negotiate through pyspnego's acceptor), WS-Management in
front of psrpcore's server-side runspace pool, and command handlers that a
test registers by name.

Modules
-------
``server.py``   HTTPS, TLS certificate, authentication; :class:`WinRMPeer`
``wsman.py``    WS-Man SOAP actions of the PowerShell shell
``psrp.py``     psrpcore runspace pool / pipelines, handler threads, output buffers
``cmdlets.py``  the command registry API and what a handler may emit
``demo.py``     demo handlers (Get-VM-like, progress, errors, …)
``hyperv/``     Hyper-V / FailoverClusters handlers, one module per cmdlet family
``fixture.py``  ``start_winrm_peer()`` and the ``winrm_peer`` pytest fixture

What the endpoint costs in CPU, and what it does to keep that small without
changing what a client receives: ``docs/winrm-peer-cost.md``.

Starting it by hand
-------------------
From the repository root::

    VENTANA_TEST_WINRM_PASSWORD=... .venv/bin/python -m tests.peers.winrm \\
        --port 5986 --user 'LAB\\operator'

The password comes from ``VENTANA_TEST_WINRM_PASSWORD`` or a prompt. The
peer prints the path of its CA certificate (pass it to pypsrp as
``cert_validation=``; a new CA is made at every start) and serves until
Ctrl-C. ``--commands module:function`` serves the registry that function
returns instead of the demo commands; ``--help`` lists the other options.
A client connects with::

    WSMan("127.0.0.1", port=5986, username="LAB\\\\operator", password=...,
          auth="ntlm", cert_validation="/tmp/winrm-peer-…/ca.pem")

Limits: PowerShell shells only (no cmd.exe WinRS), commands only (scripts
only as a registry's ``scripts`` parser understands them), no message
encryption (use HTTPS), no Kerberos or CredSSP, no disconnect/reconnect.
"""

from .cmdlets import (
    CommandRegistry,
    CommandWriter,
    ErrorCategory,
    Handler,
    PipelineStopped,
    TerminatingError,
    ps_enum,
    ps_object,
)
from .server import WinRMPeer

__all__ = [
    "CommandRegistry",
    "CommandWriter",
    "ErrorCategory",
    "Handler",
    "PipelineStopped",
    "TerminatingError",
    "WinRMPeer",
    "ps_enum",
    "ps_object",
]
