"""The rebuild workflow (Hyper-V): ``b``.

Capture → merge → new VM → boot check → services check → keep the old one;
its steps and state live in ``state/rebuild.py`` and ``backends/rebuild_runner.py``.
It opens as a ``"workflow"``: an unfinished rebuild of the VM opens its
checklist instead of a new plan.
"""

from __future__ import annotations

from ventana.state.rebuild import plan_rebuild

from ..rebuild_runner import execute_rebuild
from . import HYPERV, ActionSpec, Command

REBUILD = Command(
    "rebuild", "b", "Rebuild VM", "Rebuild the selected VM on a fresh consolidated disk "
    "(capture → merge → new VM → boot check → services check → keep the old one), or open "
    "its unfinished rebuild: pause, resume, what to do by hand", "Rebuild",
    noun="The rebuild workflow")

SPECS = (ActionSpec("rebuild", plan_rebuild, execute_rebuild, HYPERV, (REBUILD,),
                    heading="Rebuild ", opens="workflow"),)
