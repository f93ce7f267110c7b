"""Application freeze/thaw around a snapshot, over SSH.

``async with frozen(shell, freeze_cmd, thaw_cmd, log=callback):`` runs the
freeze command, runs the body (e.g. create the snapshot), and then ALWAYS
runs the thaw command — when the body raises, when the freeze failed or
its outcome is unknown (a partial freeze must be undone too), and when the
task is cancelled. Both outcomes (command, exit status, duration) go to
``log``.

If the thaw fails, or its outcome is unknown, ``ThawFailed`` is raised
(chained to the body's error, if any): the application may still be frozen
and someone must look now. A failed freeze raises ``FreezeFailed`` after the
thaw, and the body does not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from ventana.state.sanitize import clean

from .client import CommandResult, OutcomeUnknown, SshError

__all__ = ["FreezeFailed", "HookOutcome", "HookRunner", "ThawFailed", "frozen"]

DEFAULT_HOOK_TIMEOUT_S = 60.0


class HookRunner(Protocol):
    """What ``frozen`` needs from a shell (``EsxiShell`` has it)."""

    async def run_unchecked(
        self, command: str, *, timeout: float | None = None
    ) -> CommandResult: ...


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """One hook command as it went: ``exit_status`` None means the outcome is unknown."""

    phase: str  # "freeze" | "thaw"
    command: str
    exit_status: int | None
    duration_s: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def describe(self) -> str:
        status = (
            f"exit status {self.exit_status}" if self.exit_status is not None else "outcome unknown"
        )
        text = f"{self.phase} {clean(self.command)!r}: {status} in {self.duration_s:.2f} s"
        return f"{text} ({clean(self.error)})" if self.error else text


class FreezeFailed(SshError):
    """The freeze command failed or its outcome is unknown (the thaw was run anyway)."""

    def __init__(self, outcome: HookOutcome):
        self.outcome = outcome
        super().__init__(f"Application freeze failed — {outcome.describe()}; thaw was run.")


class ThawFailed(SshError):
    """The thaw did not succeed: the application may still be frozen."""

    def __init__(self, outcome: HookOutcome):
        self.outcome = outcome
        super().__init__(
            f"THAW FAILED — the application may still be frozen: {outcome.describe()}. "
            "Thaw it by hand on the guest now."
        )


async def _run_hook(shell: HookRunner, phase: str, command: str, timeout: float) -> HookOutcome:
    started = time.monotonic()
    try:
        result = await shell.run_unchecked(command, timeout=timeout)
    except OutcomeUnknown as exc:
        return HookOutcome(phase, command, None, time.monotonic() - started, exc.reason)
    except SshError as exc:
        return HookOutcome(phase, command, None, time.monotonic() - started, str(exc))
    error = "" if result.ok else result.stderr.strip()[-300:]
    return HookOutcome(phase, command, result.exit_status, result.duration_s, error)


@contextlib.asynccontextmanager
async def frozen(
    shell: HookRunner,
    freeze_cmd: str,
    thaw_cmd: str,
    *,
    log: Callable[[HookOutcome], object] | None = None,
    timeout: float = DEFAULT_HOOK_TIMEOUT_S,
) -> AsyncIterator[HookOutcome]:
    """Freeze, yield the freeze outcome, and always thaw afterwards."""

    def report(outcome: HookOutcome) -> None:
        if log is not None:
            log(outcome)

    freeze: HookOutcome | None = None
    try:
        freeze = await _run_hook(shell, "freeze", freeze_cmd, timeout)
        report(freeze)
        if not freeze.ok:
            raise FreezeFailed(freeze)
        yield freeze
    finally:
        # Shielded: a cancelled snapshot task must not skip (or lose) the thaw.
        thawing = asyncio.ensure_future(_run_hook(shell, "thaw", thaw_cmd, timeout))
        try:
            thaw = await asyncio.shield(thawing)
        except asyncio.CancelledError:
            thaw = await thawing
            report(thaw)
            if not thaw.ok:
                raise ThawFailed(thaw) from None
            raise
        report(thaw)
        if not thaw.ok:
            raise ThawFailed(thaw)  # chained to the body's error, if any
