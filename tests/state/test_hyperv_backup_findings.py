"""Hyper-V backup readiness (issue 15) in the findings rules, from hand-built stores:
the agent's start mode, product floor and unread facts on a node; the VSS
integration service, guest OS, pass-through disks and unread facts on a VM.
Each raised, cleared, and silent while the fact is not reported (None)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from factories import NOW, small_cluster

from ventana.state import findings as F
from ventana.state.config import ConfigError, load_config
from ventana.state.events import Upsert
from ventana.state.findings import FindingsConfig, FindingsEngine
from ventana.state.model import Node, PowerState, ServiceState, Severity
from ventana.state.store import Store

AVAMAR = "Dell Avamar Plug-in Service for Windows"


def engine(store: Store, **cfg: object) -> FindingsEngine:
    return FindingsEngine(store, FindingsConfig(**cfg), clock=lambda: NOW).attach()  # type: ignore[arg-type]


def found(eng: FindingsEngine, target: str) -> dict[str, F.LiveFinding]:
    return {f.code: f for f in eng.for_target(target)}


def a_node(store: Store) -> Node:
    return next(iter(store.nodes()))


def put(store: Store, entity: object, **facts: object) -> None:
    """The entity as first built, with ``facts`` (each call starts from the same base)."""
    store.apply(Upsert(dataclasses.replace(entity, **facts)))  # type: ignore[call-overload]


def test_agent_floor_follows_the_product_unless_configured() -> None:
    store = small_cluster()
    eng = engine(store)
    node = a_node(store)
    target = f"node:{node.id}"
    put(store, node, backup_agent_state=ServiceState.RUNNING, backup_agent_version="19.4.0.1",
        backup_agent_name=AVAMAR)
    assert "older than 19.10" in found(eng, target)[F.AGENT_OLD].message
    put(store, node, backup_agent_state=ServiceState.RUNNING, backup_agent_version="19.10.0.1",
        backup_agent_name=AVAMAR)
    assert F.AGENT_OLD not in found(eng, target)
    # Another product (or the simulator's agent): the generic floor 12.0.
    put(store, node, backup_agent_state=ServiceState.RUNNING, backup_agent_version="12.1",
        backup_agent_name="DPM Protection Agent")
    assert F.AGENT_OLD not in found(eng, target)
    # Configured: it wins whatever the product.
    store2 = small_cluster()
    eng2 = engine(store2, backup_agent_min_version="20.0")
    node2 = a_node(store2)
    put(store2, node2, backup_agent_state=ServiceState.RUNNING,
        backup_agent_version="19.10.0.1", backup_agent_name=AVAMAR)
    assert "older than 20.0" in found(eng2, f"node:{node2.id}")[F.AGENT_OLD].message


def test_start_mode_and_not_checked_on_a_node() -> None:
    store = small_cluster()
    eng = engine(store)
    node = a_node(store)
    target = f"node:{node.id}"
    put(store, node, backup_agent_state=ServiceState.RUNNING, backup_agent_start_mode="Auto")
    assert not {F.AGENT_START_MODE, F.AGENT_NOT_CHECKED} & set(found(eng, target))
    put(store, node, backup_agent_state=ServiceState.RUNNING,
        backup_agent_start_mode="Disabled", backup_unchecked=("ports: Access denied",))
    f = found(eng, target)
    assert f[F.AGENT_START_MODE].severity is Severity.WARNING
    assert "'Disabled'" in f[F.AGENT_START_MODE].message
    assert f[F.AGENT_NOT_CHECKED].severity is Severity.INFO
    assert f[F.AGENT_NOT_CHECKED].message == "Backup agent not checked: ports: Access denied."
    # A missing agent has no start mode to speak of.
    put(store, node, backup_agent_state=ServiceState.MISSING, backup_agent_start_mode="Manual")
    assert F.AGENT_START_MODE not in found(eng, target)


def test_vm_online_backup_conditions() -> None:
    store = small_cluster()
    eng = engine(store)
    vm = next(v for v in store.vms() if v.power is PowerState.RUNNING)
    target = f"vm:{vm.id}"
    healthy = dict(vss_service="ok", guest_os="Windows Server 2022", guest_windows=True,
                   passthrough_disks=())
    put(store, vm, **healthy)
    assert not {F.BACKUP_OFFLINE_ONLY, F.BACKUP_NOT_CHECKED} & set(found(eng, target))
    put(store, vm, **{**healthy, "vss_service": "disabled"})
    f = found(eng, target)[F.BACKUP_OFFLINE_ONLY]
    assert f.severity is Severity.WARNING
    assert "integration service is disabled" in f.message
    assert "Checked: power state, integration services, the Backup service" in f.message
    assert "Not checked: dynamic disks and non-NTFS volumes" in f.message
    put(store, vm, **{**healthy, "guest_os": "CentOS Linux 7", "guest_windows": False})
    assert "not Windows (it reports 'CentOS Linux 7')" in found(eng, target)[
        F.BACKUP_OFFLINE_ONLY].message
    put(store, vm, **{**healthy, "passthrough_disks": ("physical disk 2 (SCSI 0:1)",)})
    assert "pass-through disk(s) physical disk 2" in found(eng, target)[
        F.BACKUP_OFFLINE_ONLY].message
    put(store, vm, **{**healthy, "cluster_group_state": "Failed"})
    assert "its cluster group is Failed, not Online" in found(eng, target)[
        F.BACKUP_OFFLINE_ONLY].message
    put(store, vm, **{**healthy, "cluster_group_state": "Online"})
    assert F.BACKUP_OFFLINE_ONLY not in found(eng, target)
    # A read that failed: not checked (info), never "offline".
    put(store, vm, **{**healthy, "guest_os": None, "guest_windows": None,
                      "backup_unchecked": ("guest OS: Access denied",)})
    f = found(eng, target)
    assert F.BACKUP_OFFLINE_ONLY not in f
    assert f[F.BACKUP_NOT_CHECKED].severity is Severity.INFO
    assert "guest OS: Access denied" in f[F.BACKUP_NOT_CHECKED].message
    # Stopped: offline backup (info); the guest facts are not held against it.
    put(store, vm, **{**healthy, "vss_service": "disabled", "power": PowerState.OFF})
    f = found(eng, target)
    assert f[F.BACKUP_OFFLINE_ONLY].severity is Severity.INFO
    assert "service is disabled" not in f[F.BACKUP_OFFLINE_ONLY].message


def test_backup_options_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[target]]\nname = "hv"\nkind = "hyperv"\n'
                    'backup_services = ["DPMRA"]\nbackup_ports = [5718, 5719]\n'
                    'backup_interval = 300\nbackup_checks = true\n'
                    '[findings]\nbackup_agent_min_version = "5.0"\n')
    config = load_config(path)
    assert config.target("hv").options["backup_services"] == ["DPMRA"]
    assert config.findings.backup_agent_min_version == "5.0"
    assert FindingsConfig().backup_agent_min_version is None  # per product by default
    for bad in ('backup_ports = [70000]', 'backup_services = [1]', 'backup_checks = "no"'):
        path.write_text(f'[[target]]\nname = "hv"\nkind = "hyperv"\n{bad}\n')
        with pytest.raises(ConfigError, match="backup_"):
            load_config(path)
