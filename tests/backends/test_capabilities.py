"""The capability Protocols (backends/capabilities.py) match the backends that have them.

Callers ask ``isinstance(obj, Capability)``; these tests pin which concrete
backends and executors answer yes, and that a composite refuses a
capability its owning child lacks before anything is sent.
"""

from __future__ import annotations

import pytest
from factories import NOW

from ventana.backends.capabilities import (
    Composite,
    ConsolidationEstimator,
    PerTargetModes,
    RecordedActions,
    SideChannelHost,
    SnapshotActions,
)
from ventana.backends.multi import MultiBackend
from ventana.backends.sim import SimBackend, SimConfig
from ventana.backends.vsphere import VSphereBackend, VSphereConfig
from ventana.backends.vsphere.executor import VSphereExecutor
from ventana.state.model import TaskState


def sim(read_only: bool = False) -> SimBackend:
    return SimBackend(SimConfig(seed=7, vms=4, rate=0.0, speed=1e6, epoch=NOW,
                                read_only=read_only, merge_failure_rate=0.0))


def test_which_backends_have_which_capability() -> None:
    one, two = sim(), sim(read_only=True)
    multi = MultiBackend([("a", one), ("b", two)])
    assert isinstance(multi, PerTargetModes) and isinstance(multi, Composite)
    assert [c.label for c in multi.children] == ["a", "b"]
    assert not isinstance(one, PerTargetModes | Composite | RecordedActions | SideChannelHost)
    vsphere = VSphereBackend(VSphereConfig("127.0.0.1", read_only=False), password="x")
    assert isinstance(vsphere, SideChannelHost) and not isinstance(vsphere, Composite)
    assert vsphere.stun_probe is None and vsphere.guest_shell is None
    ex = vsphere.executor()
    assert isinstance(ex, VSphereExecutor)
    assert isinstance(ex, SnapshotActions) and isinstance(ex, ConsolidationEstimator)
    assert not isinstance(one.executor(), SnapshotActions | ConsolidationEstimator)
    composite = multi.executor()
    assert isinstance(composite, SnapshotActions) and isinstance(composite, ConsolidationEstimator)
    assert ex.target == vsphere.target and composite.target == multi.target


async def test_a_composite_refuses_a_snapshot_action_its_child_cannot_do() -> None:
    multi = MultiBackend([("a", sim()), ("b", sim())])
    ex = multi.executor()
    for result in (await ex.remove_all_snapshots("a/vm-1", "t-1"),
                   await ex.consolidate("a/vm-1", "t-2"),
                   await ex.create_snapshot("a/vm-1", "t-3", "snap"),
                   await ex.remove_snapshot_of("a/vm-1", "a/snap-1", "t-4")):
        assert result.state is TaskState.FAILED
        assert "not available on a; nothing was sent" in result.error
    with pytest.raises(NotImplementedError):
        await ex.estimate_consolidation("a/vm-1")
    await multi.close()
