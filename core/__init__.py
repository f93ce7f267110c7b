"""The console's engine without a front end (no Textual, no Rich).

``Console`` (``core/console.py``) owns what a headless recorder or a second
front end reuses: the backend's event pump and its batching into the store,
the recorder, the action runner and its store settling, the findings engine
and acknowledgements, final states, the maintenance window's runner, vCenter's
storage estimates and the routing of an operator's command on a VM to the
action of the VM's platform. It tells its front end what happened through a
small listener protocol (``ConsoleListener``) and never calls into it
otherwise.
"""

from .console import Console, ConsoleListener, Notice, Resolved

__all__ = ["Console", "ConsoleListener", "Notice", "Resolved"]
