"""Every guarded action the console offers: one ``ActionSpec`` each, in one registry.

A spec says everything the rest of the console needs to know about an action:
its name (what the action log records), its planner, how a confirmed plan calls
the executor, the platforms it applies to and the console command that opens
it (key, palette title, help, footer label). The runner
(``backends/actions.py``) plans and executes through it; the console core
resolves an operator's command on a VM to the spec for the VM's platform
(``resolve``: "merge" on a vSphere VM is the removal of all its snapshots);
the app builds its bindings, palette and help from ``commands()``.

Registration is explicit and happens when this package is imported: each
family module (merge, upgrade, rebuild, vSphere snapshots, clean-up) lists its
``SPECS``; ``_FAMILIES`` below names the families in the order their commands
appear in the footer and the help. Adding an action is one spec in a family
module (plus its executor method and its tests).

Importing this package does not import pyVmomi or pypsrp: planners and execute
functions only name executor methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ventana.state.model import Platform
from ventana.state.plans import Plan, Planner

from ..base import ActionResult, Executor

#: How a confirmed plan is carried out: ``call(executor, vm_id, task_id, plan)``.
ExecuteFn = Callable[[Executor, str, str, Plan], Awaitable[ActionResult]]

HYPERV = frozenset({Platform.HYPERV})
VSPHERE = frozenset({Platform.VSPHERE})


@dataclass(frozen=True, slots=True)
class Command:
    """A console command that opens an action: its key, palette entry and help.

    ``name`` is the app's action name (``m`` runs ``merge``). Several specs may
    share one command (the merge on Hyper-V, the removal of all snapshots on
    vSphere): they then share this object. ``params`` are fixed plan params the
    command adds (``X``: the snapshot with its children); ``selects_snapshot``
    asks the front end for the snapshot selected in the Checkpoints pane.
    ``noun`` names the workflow in the one-line notice shown when the command
    is not for the VM's platform.
    """

    name: str
    key: str
    title: str
    help: str
    short: str = ""
    mutating: bool = True
    show: bool = True
    noun: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    selects_snapshot: bool = False


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One guarded action: plan → pre-flight → typed confirmation → log → executor.

    ``opens`` says how the front end opens it: ``"plan"`` (the plan screen),
    ``"estimate"`` (ask the server for its storage estimate first, on
    writable sessions, then the plan screen) or ``"workflow"`` (a step-by-step
    workflow with its own checklist screen: the rebuild). ``heading`` leads the
    plan screen's title, before the VM's name ("Merge checkpoints of "). The equivalent
    command an operator could run by hand is built by the planner
    (``Plan.command``), from the same facts the plan shows.
    """

    name: str
    planner: Planner
    execute: ExecuteFn
    platforms: frozenset[Platform]
    commands: tuple[Command, ...] = ()
    heading: str = ""
    opens: str = "plan"


class UnknownAction(ValueError):
    """No spec of that name."""


_SPECS: dict[str, ActionSpec] = {}
_COMMANDS: dict[str, Command] = {}
#: (command name, platform) → the spec that command opens on that platform.
_ROUTES: dict[tuple[str, Platform], ActionSpec] = {}


def register(spec: ActionSpec) -> None:
    """Add ``spec``; a second spec of the same name, or a second spec for the
    same command on the same platform, is a programming error."""
    if spec.name in _SPECS:
        raise ValueError(f"action {spec.name!r} is already registered")
    for command in spec.commands:
        known = _COMMANDS.get(command.name)
        if known is not None and known is not command:
            raise ValueError(f"command {command.name!r} is defined twice")
        for platform in spec.platforms:
            if (command.name, platform) in _ROUTES:
                raise ValueError(f"command {command.name!r} already opens an action on "
                                 f"{platform.value}")
    _SPECS[spec.name] = spec
    for command in spec.commands:
        _COMMANDS.setdefault(command.name, command)
        for platform in spec.platforms:
            _ROUTES[(command.name, platform)] = spec


def get(name: str) -> ActionSpec:
    """The spec of action ``name``; ``UnknownAction`` if there is none."""
    try:
        return _SPECS[name]
    except KeyError:
        raise UnknownAction(f"unknown action {name!r}") from None


def names() -> frozenset[str]:
    """Every registered action (what an operator's own task can be)."""
    return frozenset(_SPECS)


def specs() -> tuple[ActionSpec, ...]:
    return tuple(_SPECS.values())


def commands() -> tuple[Command, ...]:
    """The action commands, in registration order (footer and help order)."""
    return tuple(_COMMANDS.values())


def command(name: str) -> Command | None:
    return _COMMANDS.get(name)


def resolve(command_name: str, platform: Platform) -> ActionSpec | None:
    """The action ``command_name`` opens on a VM of ``platform`` (None: not there)."""
    return _ROUTES.get((command_name, platform))


def action_for(command_name: str, platform: Platform) -> str | None:
    """The name of the action ``command_name`` opens on ``platform`` (None: none)."""
    spec = _ROUTES.get((command_name, platform))
    return spec.name if spec is not None else None


def platforms_of(command_name: str) -> frozenset[Platform]:
    return frozenset(p for (c, p) in _ROUTES if c == command_name)


def not_for(command_name: str, platform: Platform, vm_name: str) -> str:
    """The one-line notice for a command that opens nothing on this VM's platform."""
    cmd = _COMMANDS.get(command_name)
    if platform is Platform.VSPHERE:
        what = (cmd.noun if cmd and cmd.noun else "This action")
        return (f"{what} is for Hyper-V VMs; {vm_name} is a vSphere VM (m removes all its "
                "snapshots, c consolidates, n takes a snapshot).")
    where = ", ".join(sorted(p.value for p in platforms_of(command_name)))
    if where == Platform.VSPHERE.value:
        return "This action is for vSphere VMs."
    return f"This action is not available on {platform.value} VMs."


#: A read-only view of the registry, by action name.
SPECS: Mapping[str, ActionSpec] = MappingProxyType(_SPECS)


def _register_families() -> None:
    from . import cleanup, merge, rebuild, upgrade, vsphere_snapshots

    # The order is the order of the commands in the footer, the palette and help.
    for family in (merge, upgrade, rebuild, vsphere_snapshots, cleanup):
        for spec in family.SPECS:
            register(spec)


_register_families()
