"""vSphere's escaping of names, both ways, and the typed-name match that accepts either.

vCenter reports a ManagedEntity's name with ``/``, ``\\`` and ``%`` escaped as
``%2f``, ``%5c`` and ``%25`` ("Any / (slash), \\ (backslash), character used in
this name element will be escaped. Similarly, any % (percent) character … unless
it is used to start an escape sequence", pyvmomi ``docs/vim/ManagedEntity.rst``,
name). Snapshot names (``VirtualMachineSnapshotTree.name``; a snapshot is no
ManagedEntity) have no documented rule, but arrive the same way when the vSphere
Client made them: its default name ``VM Snapshot 8/23/2023, 8:38:26 AM`` reads
back as ``VM Snapshot 8%2f23%2f2023, …`` (ansible-collections/community.vmware
#2083; StackStorm-Exchange/stackstorm-vsphere#61 saw it escaped once more by its
own code). So both are shown unescaped, and an operator who types a name may type
either form: the one shown, or the one vCenter reports (govc, PowerCLI's raw
``ExtensionData``).
"""

from __future__ import annotations

import re

_ESCAPES = re.compile(r"%(2[fF]|5[cC]|25)")
_UNESCAPED = {"2f": "/", "5c": "\\", "25": "%"}


def unescape(raw: str) -> str:
    """The name as typed: ``%2f`` ``%5c`` ``%25`` (any case) undone; other ``%XX`` kept."""
    return _ESCAPES.sub(lambda m: _UNESCAPED[m.group(1).lower()], raw)


def escape(name: str) -> str:
    """The name as vCenter reports it (``%`` first, so no escape is escaped twice)."""
    return name.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


def typed_matches(typed: str, shown: str) -> bool:
    """Whether a typed confirmation names ``shown``: exactly, or in vCenter's
    escaped form of it (which keeps a ``%`` that starts an escape sequence, so the
    test is that the typed text unescapes to the name shown). Nothing looser: no
    case folding, no trimming."""
    return typed == shown or (typed != "" and unescape(typed) == shown)
