"""The stun watcher: vmware.log over SSH beside the vSphere stream.

Unit-level against the loopback SSH peer with a fake source, then end to end:
vcsim for vSphere, the SSH peer standing in for the ESXi host that serves
the VM's vmware.log, and the console removing a snapshot.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from apphelp import wait_for
from peers.ssh import VM_DIR, start_ssh_peer

from ventana.backends.ssh.stun import LONG_STUN
from ventana.backends.ssh.watcher import (
    DEFAULT_PASSWORD_ENV,
    SshTarget,
    StunWatcher,
    VmLocation,
    vm_log_dir,
)
from ventana.backends.ssh.wiring import attach, guest_targets, ssh_hosts
from ventana.state.actionlog import ActionLog
from ventana.state.events import Event, FindingRaised, Remove
from ventana.state.model import Kind, Severity

STARTED = datetime(2017, 1, 4, 22, 0, tzinfo=UTC)  # between the lab sample's create and remove


def line(at: datetime, us: int) -> str:
    return f"{at:%Y-%m-%dT%H:%M:%S}.000Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for {us} us\n"


class FakeSource:
    target = "vsphere://vc.test:443"
    read_only = False

    def __init__(self, host: str = "esx01") -> None:
        self.events: list[Event] = []
        self.stuns: dict[str, tuple[float, datetime]] = {}
        self.locations = [VmLocation("vm-1", "db-01", "host-1", host, VM_DIR)]

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def note_stun(self, vm_id: str, ms: float, at: datetime) -> None:
        self.stuns[vm_id] = (ms, at)

    def vm_locations(self) -> list[VmLocation]:
        return self.locations


def target_for(peer, known_hosts: Path) -> SshTarget:
    return SshTarget(peer.host, known_hosts, port=peer.port, user=peer.username)


async def test_new_stuns_set_the_vm_log_rows_and_raise_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_ssh_peer() as peer:
        monkeypatch.setenv(DEFAULT_PASSWORD_ENV, peer.password)
        known = peer.write_known_hosts(tmp_path / "known_hosts")
        source = FakeSource()
        with ActionLog.open(tmp_path / "a.db") as log:
            watcher = StunWatcher(source, {"esx01": target_for(peer, known)},
                                  budget_ms=lambda name: 300.0, log=log, started=STARTED)
            await watcher.poll()
            # The last stun of the history sets the VM; the six removal stuns after
            # STARTED are logged; the 1.09 s create stun (before) is not.
            assert source.stuns["vm-1"][0] == pytest.approx(221.633)
            rows = log.rows(newest_first=False)
            assert [r.action for r in rows] == ["stun"] * 6
            assert [r.outcome for r in rows].count("warning") == 2  # 301 and 341 ms > 300
            assert rows[0].target_object == "vm:vm-1" and rows[0].target_name == "db-01"
            assert not [e for e in source.events if isinstance(e, FindingRaised)]

            # A new, long stun: a row and a LONG_STUN finding.
            later = datetime(2017, 1, 5, 9, 0, 0, tzinfo=UTC)
            peer.files[f"{VM_DIR}/vmware.log"] += line(later, 4_200_000)
            await watcher.poll()
            assert source.stuns["vm-1"] == (4200.0, later)
            (finding,) = [e.finding for e in source.events if isinstance(e, FindingRaised)]
            assert finding.code == LONG_STUN and finding.severity is Severity.CRITICAL
            assert log.rows()[0].outcome == "warning" and "4.200 s" in log.rows()[0].error
            # Read again: nothing new, nothing logged twice.
            await watcher.poll()
            assert len(log.rows()) == 7
            text = await watcher.probe("vm-1", later - timedelta(seconds=1), tries=1)
            assert text.startswith("stun 4200 ms") and "OVER BUDGET" in text


async def test_ssh_failure_is_a_finding_never_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_ssh_peer() as peer:
        monkeypatch.setenv(DEFAULT_PASSWORD_ENV, peer.password)
        other = asyncssh.generate_private_key("ssh-ed25519")
        known = peer.write_known_hosts(tmp_path / "known_hosts", other)  # the wrong key
        source = FakeSource()
        watcher = StunWatcher(source, {"esx01": target_for(peer, known)},
                              budget_ms=lambda name: 2000.0)
        await watcher.poll()
        (raised,) = [e for e in source.events if isinstance(e, FindingRaised)]
        assert raised.finding.code == "SSH_UNAVAILABLE"
        assert raised.finding.target == "node:host-1" and "esx01" in raised.finding.message
        assert "vm-1" not in source.stuns and peer.commands == []  # refused before any command
        text = await watcher.probe("vm-1", STARTED, tries=1)
        assert "SSH to esx01 failed" in text
        peer.write_known_hosts(known)  # the operator fixes known_hosts
        await watcher.poll()
        assert Remove(Kind.FINDING, "ssh:host-1") in source.events
        assert "vm-1" in source.stuns
        monkeypatch.delenv(DEFAULT_PASSWORD_ENV)  # no password and no key: a finding again
        await watcher.poll()
        assert "no SSH password" in source.events[-1].finding.message  # type: ignore[union-attr]


async def test_watcher_runs_in_the_background_and_closes() -> None:
    source = FakeSource(host="not-configured")
    watcher = StunWatcher(source, {}, budget_ms=lambda name: 1.0, interval_s=0.01)
    watcher.start()
    await asyncio.sleep(0.05)
    await watcher.close()
    assert source.events == []


def test_config_tables() -> None:
    sections = {
        "ssh": {"host": {"esx01.corp": {"user": "root", "known_hosts": "/k", "key": "/id"}}},
        "guest": {"sql-01": {"address": "sql-01.corp", "known_hosts": "/k",
                             "pre_freeze": "f", "post_thaw": "t"},
                  "web-01": {"pre_freeze": "x"}},  # no address: hooks only
    }
    hosts = ssh_hosts(sections)
    assert hosts["esx01.corp"].host == "esx01.corp" and hosts["esx01.corp"].key == Path("/id")
    assert list(guest_targets(sections)) == ["sql-01"]
    with pytest.raises(ValueError, match="known_hosts"):
        ssh_hosts({"ssh": {"host": {"esx02": {"user": "root"}}}})

    class Backend:
        side_channels: list = []
        stun_probe = None
        guest_shell = None

    b = Backend()
    said = attach(b, sections, None)
    assert "1 host" in said and "1 VM" in said and b.stun_probe is not None
    assert b.guest_shell("nobody") is None


def test_vm_log_dir_from_layout_ex() -> None:
    from types import SimpleNamespace as F

    layout = F(file=[F(name="[ds1] vm1/vm1.vmx", type="config"),
                     F(name="[ds1] vm1/vmware.log", type="log")])
    assert vm_log_dir(layout) == "[ds1] vm1"
    assert vm_log_dir(F(file=[F(name="[ds1] vm2/disk.vmdk", type="diskDescriptor")])) == \
        "[ds1] vm2"
    assert vm_log_dir(None) == ""


# --- end to end with vcsim -----------------------------------------------------------------

vcsim_peer = pytest.importorskip("peers.vcsim")


@pytest.mark.skipif(not vcsim_peer.is_built(), reason=vcsim_peer.BUILD_HINT)
@pytest.mark.timeout(60)
async def test_console_shows_the_stun_of_its_own_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_vsphere_actions import confirm, loaded, make_app, on_server, open_plan, snapshot

    from ventana.backends.ssh.client import datastore_path
    from ventana.state.plans_vsphere import REMOVE_ALL, SETTINGS
    from ventana.tui.checkpoints_pane import CheckpointsPane
    from ventana.tui.vm_table import VmTable

    handle = vcsim_peer.start_vcsim(tmp_path / "vcsim", clusters=1, hosts=1, vms=2, quiet=True)
    saved = dict(SETTINGS.stun_budget_by_vm)
    try:
        async with start_ssh_peer(files={}) as peer:
            monkeypatch.setenv(DEFAULT_PASSWORD_ENV, peer.password)
            known = peer.write_known_hosts(tmp_path / "known_hosts")
            app = make_app(handle, tmp_path)
            backend = app.backend
            SETTINGS.stun_budget_by_vm["DC0_C0_H0_VM0"] = 500.0
            attach(backend, {"ssh": {"host": {"DC0_C0_H0": {
                "address": peer.host, "port": peer.port, "user": peer.username,
                "known_hosts": str(known)}}}}, app.action_log, interval_s=0.2)
            async with app.run_test(size=(180, 50)) as pilot:
                await loaded(pilot, vms=2)
                vm = next(v for v in app.store.vms() if v.name == "DC0_C0_H0_VM0")
                [loc] = [v for v in backend.vm_locations() if v.vm_id == vm.id]
                log_path = f"{datastore_path(loc.log_dir)}/vmware.log"
                peer.files[log_path] = ""
                await on_server(handle, snapshot(vm.id, "before patch"))
                await wait_for(pilot, lambda: bool(app.store.checkpoints_of(vm.id)))
                # ESXi writes the stun of the removal when it releases the VM.
                real = backend.stun_probe

                async def probe_after_stun(vm_id: str, since: datetime) -> str:
                    peer.files[log_path] += line(datetime.now(UTC), 812_000)
                    return await real(vm_id, since)

                backend.stun_probe = probe_after_stun
                app.query_one(VmTable).select_vm(vm.id)
                await pilot.pause(0.2)
                screen = await open_plan(pilot, app, "m")
                assert screen.plan.action == REMOVE_ALL
                await confirm(pilot, app, vm.name, REMOVE_ALL)
                [row] = [r for r in app.action_log.rows() if r.action == REMOVE_ALL]
                assert row.outcome == "ok", row.error
                assert "stun 812 ms" in row.detail and "OVER BUDGET" in row.detail
                stun_rows = [r for r in app.action_log.rows() if r.action == "stun"]
                assert len(stun_rows) == 1 and stun_rows[0].outcome == "warning", [
                    (r.target_name, r.plan) for r in stun_rows]
                await wait_for(pilot, lambda: app.store.vm(vm.id).last_stun_ms == 812.0)
                await wait_for(pilot, lambda: any(
                    f.code == LONG_STUN for f in app.store.all(Kind.FINDING)))
                assert "last stun 0.81 s" in str(app.query_one(CheckpointsPane).root.label)
                # The next snapshot operation on this VM warns before it starts.
                await on_server(handle, snapshot(vm.id, "again"))
                await wait_for(pilot, lambda: bool(app.store.checkpoints_of(vm.id)))
                plan = app.runner.plan(REMOVE_ALL, vm.id)
                assert "LAST_STUN_LONG" in {f.code for f in plan.findings}
                # A vSphere update of the VM keeps the stun.
                assert app.store.vm(vm.id).last_stun_ms == 812.0
    finally:
        SETTINGS.stun_budget_by_vm.clear()
        SETTINGS.stun_budget_by_vm.update(saved)
        handle.stop()


async def test_one_round_trip_per_host_and_a_missing_log_skips_only_its_vm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_ssh_peer() as peer:
        monkeypatch.setenv(DEFAULT_PASSWORD_ENV, peer.password)
        known = peer.write_known_hosts(tmp_path / "known_hosts")
        source = FakeSource()
        weird = "/vmfs/volumes/data store 1/db-02; x:y"
        peer.files[f"{weird}/vmware.log"] = line(STARTED, 1_500_000) + "noise\n"
        source.locations += [
            VmLocation("vm-2", "db-02", "host-1", "esx01", weird),
            VmLocation("vm-3", "gone", "host-1", "esx01", "[datastore1] gone"),
        ]
        watcher = StunWatcher(source, {"esx01": target_for(peer, known)},
                              budget_ms=lambda name: 2000.0)
        await watcher.poll()
        assert len(peer.commands) == 1 and peer.commands[0].startswith("grep -H -E ")
        assert source.stuns["vm-1"][0] == pytest.approx(221.633)
        assert source.stuns["vm-2"] == (1500.0, STARTED)
        assert "vm-3" not in source.stuns
        assert not [e for e in source.events if isinstance(e, FindingRaised)]


async def test_rotated_logs_are_read_and_the_log_follows_a_storage_vmotion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ESXi rotates vmware.log into vmware-N.log: a stun written before the
    rotation is still read. After a Storage vMotion the VM's directory (from
    its layoutEx) is another one: the watcher reads there, and what it already
    handled is not logged again."""
    async with start_ssh_peer(files={}) as peer:
        monkeypatch.setenv(DEFAULT_PASSWORD_ENV, peer.password)
        known = peer.write_known_hosts(tmp_path / "known_hosts")
        source = FakeSource()
        t0 = STARTED + timedelta(minutes=1)
        peer.files[f"{VM_DIR}/vmware-7.log"] = line(t0, 900_000) + "noise\n"
        peer.files[f"{VM_DIR}/vmware-8.log"] = line(t0 + timedelta(minutes=1), 250_000)
        peer.files[f"{VM_DIR}/vmware.log"] = line(t0 + timedelta(minutes=2), 120_000)
        # Another VM's directory whose name starts like this one's: not read as ours.
        peer.files[f"{VM_DIR}-old/vmware-1.log"] = line(t0 + timedelta(hours=1), 5_000_000)
        with ActionLog.open(tmp_path / "a.db") as log:
            watcher = StunWatcher(source, {"esx01": target_for(peer, known)},
                                  budget_ms=lambda name: 500.0, log=log, started=STARTED)
            assert await watcher.poll() and len(log.rows()) == 3
            assert [json.loads(r.plan)["stun_ms"] for r in log.rows(newest_first=False)] == [
                900.0, 250.0, 120.0]
            assert source.stuns["vm-1"] == (120.0, t0 + timedelta(minutes=2))

            # A VM with no rotated log yet: the unexpanded pattern is no error worth a line.
            caplog.clear()
            with caplog.at_level("INFO", logger="ventana.backends.ssh.watcher"):
                source.locations = [VmLocation("vm-1", "db-01", "host-1", "esx01",
                                               "[datastore2] db-01")]
                moved = "/vmfs/volumes/datastore2/db-01"
                peer.files[f"{moved}/vmware.log"] = (
                    line(t0 + timedelta(minutes=2), 120_000)  # copied along: handled already
                    + line(t0 + timedelta(minutes=9), 700_000)
                )
                await watcher.poll()
            assert not [r for r in caplog.records if "not read" in r.getMessage()]
            assert f"{moved}/vmware-*.log" in peer.commands[-1]
            assert [json.loads(r.plan)["stun_ms"] for r in log.rows(newest_first=False)] == [
                900.0, 250.0, 120.0, 700.0]
            assert log.rows()[0].outcome == "warning"
            assert source.stuns["vm-1"] == (700.0, t0 + timedelta(minutes=9))
