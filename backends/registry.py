"""The one place that registers every guarded action.

``register_all()`` puts every action the console offers into the runner's
table (``backends/actions.EXECUTE``) and the planners' table
(``state/plans.PLANNERS``): merge and upgrade (built in), compact and delete
(offline clean-up), rebuild (the step-by-step workflow) and the vSphere
snapshot actions. ``ActionRunner`` calls it when it is built, so a script or
a test that builds a runner sees exactly the actions the console does.

It is idempotent and cheap after the first call. Importing the vSphere
actions does not import pyVmomi (their planners and execute functions only
name executor methods), so start-up stays fast.
"""

from __future__ import annotations

_done = False


def register_all() -> None:
    """Register every guarded action (idempotent)."""
    global _done
    if _done:
        return
    from ventana.state.cleanup_plans import plan_compact, plan_delete
    from ventana.state.rebuild import plan_rebuild

    from .actions import EXECUTE, execute_compact, execute_delete, register_action
    from .rebuild_runner import execute_rebuild
    from .vsphere import actions as vsphere_actions

    for name, planner, execute in (
        ("compact", plan_compact, execute_compact),
        ("delete", plan_delete, execute_delete),
        ("rebuild", plan_rebuild, execute_rebuild),
    ):
        if EXECUTE.get(name) is not execute:
            register_action(name, planner, execute)
    vsphere_actions.register()
    _done = True


def action_names() -> frozenset[str]:
    """Every registered action (what an operator's own task can be)."""
    register_all()
    from .actions import EXECUTE

    return frozenset(EXECUTE)
