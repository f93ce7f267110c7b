"""Issue 14: how the rebuild stops a running VM is the operator's explicit choice.

The plan states what a guest shutdown (``Stop-VM -Force``) and a power-off
(``Stop-VM -TurnOff``) do (Microsoft's Stop-VM page), offers the power-off as
a toggle, and warns when the guest's integration services do not answer (a
guest shutdown would then be refused at the merge step).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from factories import NOW, small_cluster

from ventana.state.actionlog import ActionLog
from ventana.state.events import Upsert
from ventana.state.model import IntegrationState, PowerState, Severity
from ventana.state.rebuild import STOP_CONSEQUENCES, plan_rebuild


def _codes(plan: object) -> set[str]:
    return {f.code for f in plan.findings if f.severity is Severity.WARNING}  # type: ignore[attr-defined]


def test_the_stop_is_a_guest_shutdown_unless_turn_off_is_chosen(tmp_path: Path) -> None:
    db = str(tmp_path / "actions.db")
    ActionLog.open(db).close()
    store = small_cluster(free_gb=1500)
    store.apply(Upsert(dataclasses.replace(store.vm("a"), integration=IntegrationState.OK)))
    plan = plan_rebuild(store, "a", NOW, db=db)  # vm a runs
    assert "WILL_SHUT_DOWN" in _codes(plan) and "GUEST_SHUTDOWN_UNLIKELY" not in _codes(plan)
    assert plan.facts["stop"] == "guest shutdown" and "turn_off" in plan.facts["toggles"]
    assert "turn_off" not in plan.params
    assert STOP_CONSEQUENCES["shutdown"] in next(
        f.message for f in plan.findings if f.code == "WILL_SHUT_DOWN")
    assert "Stop-VM -ComputerName 'HV-NODE-01' -Name 'app-01' -Force;" in plan.command

    off = plan_rebuild(store, "a", NOW, db=db, turn_off=True)
    assert "WILL_TURN_OFF" in _codes(off) and "WILL_SHUT_DOWN" not in _codes(off)
    assert off.params["turn_off"] is True and off.facts["stop"] == "turn off"
    assert "-Name 'app-01' -TurnOff -Force;" in off.command
    assert any("Stop-VM -TurnOff" in step for step in off.steps)

    # Integration services not answering: the guest shutdown would be refused — say so.
    store.apply(Upsert(dataclasses.replace(store.vm("a"), integration=IntegrationState.DEGRADED)))
    assert "GUEST_SHUTDOWN_UNLIKELY" in _codes(plan_rebuild(store, "a", NOW, db=db))

    # A VM that is off is not stopped: no choice is offered, nothing is said about it.
    store.apply(Upsert(dataclasses.replace(store.vm("a"), power=PowerState.OFF)))
    idle = plan_rebuild(store, "a", NOW, db=db, turn_off=True)
    assert not {"WILL_SHUT_DOWN", "WILL_TURN_OFF"} & _codes(idle)
    assert "toggles" not in idle.facts and "turn_off" not in idle.params
