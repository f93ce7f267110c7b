"""Demo command handlers of the WinRM test peer, used by tests/backends/hyperv/test_winrm_peer.py.

They exercise every kind of result a handler can produce; they are not the
Hyper-V/FailoverClusters handlers backed by the simulated cluster (those are
built on the same registry, see ``cmdlets.py``).

=====================  ==========================================================
``Get-Date``           the server's current time (arrives as a DateTime string)
``Write-Output``       echoes ``-InputObject`` (each element of a list), then
                       positional arguments, then pipeline input
``Get-VM``             ``-Count N`` (demo only, default 5) VMs named
                       ``vm-0000``…, filtered by ``-Name`` (wildcards, one name
                       or a list); type ``Microsoft.HyperV.PowerShell.VirtualMachine``
                       with Name, State (enum VMState), Generation, Version,
                       ProcessorCount, MemoryStartup (Int64), Id (Guid),
                       CreationTime (DateTime); a name that matches nothing
                       writes a non-terminating ObjectNotFound error like the real one
``Invoke-LongTask``    progress records every ``-IntervalMs`` (default 100)
                       until stopped or ``-Seconds`` (default 300) pass
``Write-Error``        a non-terminating error (``-Message``), then one object
                       ``"after error"``
``Invoke-Failure``     one object, then a terminating error (``-Message``)
``Write-Warning``      a warning record (``-Message``)
=====================  ==========================================================
"""

from __future__ import annotations

import datetime
import fnmatch
import time
import uuid
from typing import Any

from .cmdlets import (
    CommandRegistry,
    CommandWriter,
    ErrorCategory,
    PSInt64,
    TerminatingError,
    ps_enum,
    ps_object,
)

VM_TYPE_NAMES = [
    "Microsoft.HyperV.PowerShell.VirtualMachine",
    "Microsoft.HyperV.PowerShell.VirtualMachineBase",
    "Microsoft.HyperV.PowerShell.VirtualizationObject",
]

#: Microsoft.HyperV.PowerShell.VMState (the values Get-VM reports most).
VMState = ps_enum(
    "Microsoft.HyperV.PowerShell.VMState",
    {
        "Other": 1,
        "Running": 2,
        "Off": 3,
        "Stopping": 4,
        "Saved": 6,
        "Paused": 9,
        "Starting": 10,
        "Reset": 11,
        "Saving": 32773,
        "Pausing": 32776,
        "Resuming": 32777,
    },
)

_NAMESPACE = uuid.UUID("6f1b7a52-1b7e-4d53-9a4e-2f4d1e0c9b11")
_CREATED = datetime.datetime(2024, 5, 1, 10, 0, 0, tzinfo=datetime.UTC)


def demo_vm(index: int) -> Any:
    """The demo VM number ``index`` (deterministic)."""
    name = f"vm-{index:04d}"
    states = [VMState.Running, VMState.Off, VMState.Saved, VMState.Paused]  # type: ignore[attr-defined]
    vm_id = uuid.uuid5(_NAMESPACE, name)
    return ps_object(
        VM_TYPE_NAMES,
        {
            "Name": name,
            "State": states[index % len(states)],
            "Generation": 2 if index % 5 else 1,
            "Version": "9.0" if index % 3 else "8.0",
            "ProcessorCount": PSInt64(2 + index % 7),
            "MemoryStartup": PSInt64((1 + index % 8) * 1024**3),
            "Id": vm_id,
            "CreationTime": _CREATED + datetime.timedelta(hours=index),
        },
        to_string=f"VirtualMachine (Name = '{name}') [Id = '{vm_id}']",
    )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def get_date(params: dict[str, Any], writer: CommandWriter) -> None:
    writer.write_output(datetime.datetime.now(datetime.UTC))


def write_output(params: dict[str, Any], writer: CommandWriter) -> None:
    writer.write_outputs(_as_list(params.get("InputObject")))
    writer.write_outputs(writer.arguments)
    writer.write_outputs(writer.input)


def get_vm(params: dict[str, Any], writer: CommandWriter) -> None:
    count = int(params.get("Count", 5))
    patterns = [str(p) for p in _as_list(params.get("Name"))]
    matched = {p: False for p in patterns}
    for index in range(count):
        name = f"vm-{index:04d}"
        if patterns:
            hits = [p for p in patterns if fnmatch.fnmatchcase(name.lower(), p.lower())]
            if not hits:
                continue
            for p in hits:
                matched[p] = True
        writer.write_output(demo_vm(index))
    for pattern, hit in matched.items():
        if not hit and not any(c in pattern for c in "*?["):
            writer.write_error(
                f'Hyper-V was unable to find a virtual machine with name "{pattern}".',
                error_id="InvalidParameter",
                category=ErrorCategory.InvalidArgument,
                exception_type="Microsoft.HyperV.PowerShell.VirtualizationException",
                target=pattern,
            )


def invoke_long_task(params: dict[str, Any], writer: CommandWriter) -> None:
    seconds = float(params.get("Seconds", 300))
    interval = float(params.get("IntervalMs", 100)) / 1000
    start = time.monotonic()
    step = 0
    while time.monotonic() - start < seconds:
        step += 1
        writer.write_progress(
            "Merging disks",
            f"step {step}",
            percent=min(99, step),
            current_operation="merging",
        )
        if writer.wait(interval):
            return
    writer.write_progress("Merging disks", "done", percent=100, completed=True)
    writer.write_output("finished")


def write_error(params: dict[str, Any], writer: CommandWriter) -> None:
    writer.write_error(
        str(params.get("Message", "demo non-terminating error")),
        error_id="DemoError",
        category=ErrorCategory.ObjectNotFound,
        target=params.get("Target"),
    )
    writer.write_output("after error")


def invoke_failure(params: dict[str, Any], writer: CommandWriter) -> None:
    writer.write_output("before failure")
    raise TerminatingError(
        str(params.get("Message", "demo terminating error")),
        error_id="DemoFailure",
        category=ErrorCategory.InvalidOperation,
        exception_type="Microsoft.HyperV.PowerShell.VirtualizationException",
    )


def write_warning(params: dict[str, Any], writer: CommandWriter) -> None:
    writer.write_warning(str(params.get("Message", "demo warning")))


def build_demo_registry() -> CommandRegistry:
    """A registry holding the demo handlers listed in the module docstring."""
    return CommandRegistry(
        {
            "Get-Date": get_date,
            "Write-Output": write_output,
            "Get-VM": get_vm,
            "Invoke-LongTask": invoke_long_task,
            "Write-Error": write_error,
            "Invoke-Failure": invoke_failure,
            "Write-Warning": write_warning,
        }
    )
