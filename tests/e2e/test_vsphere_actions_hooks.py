"""Create a snapshot from the console (n) with the guest's freeze/thaw hooks.

vcsim takes the snapshot; the loopback SSH peer stands in for the guest and
records the hook commands it receives, in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apphelp import wait_for
from peers.ssh import Reply, start_ssh_peer
from peers.vcsim import BUILD_HINT, VcsimHandle, binary_path, is_built, start_vcsim

if not is_built():
    pytest.skip(f"vcsim test peer not built ({binary_path()}): {BUILD_HINT}",
                allow_module_level=True)

from test_vsphere_actions import confirm, loaded, make_app, on_server, open_plan, reconfig

from ventana.backends.ssh.watcher import DEFAULT_PASSWORD_ENV, SshTarget
from ventana.state.plans_vsphere import CREATE_SNAPSHOT, SETTINGS
from ventana.tui.vm_table import VmTable

pytestmark = pytest.mark.timeout(60)
FREEZE, THAW = "/opt/db/freeze --all", "/opt/db/thaw --all"
GUEST = {FREEZE: Reply(0), THAW: Reply(0)}


@pytest.fixture(scope="module")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimHandle]:
    handle = start_vcsim(tmp_path_factory.mktemp("vcsim"), quiet=True, clusters=1, hosts=1,
                         vms=3)
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def hooks_for_every_vm() -> Iterator[None]:
    saved = dict(SETTINGS.guest_hooks)
    for i in range(3):
        SETTINGS.guest_hooks[f"DC0_C0_H0_VM{i}"] = {"pre_freeze": FREEZE, "post_thaw": THAW}
    yield
    SETTINGS.guest_hooks.clear()
    SETTINGS.guest_hooks.update(saved)


async def run_create(pilot, app, vm_name: str, *, quiesce: bool = False) -> None:
    vm = next(v for v in app.store.vms() if v.name == vm_name)
    app.query_one(VmTable).select_vm(vm.id)
    await pilot.pause(0.2)
    screen = await open_plan(pilot, app, "n")
    plan = screen.plan
    assert plan.action == CREATE_SNAPSHOT
    assert plan.steps[0] == f"Guest pre-freeze over SSH: {FREEZE}" and THAW in plan.steps[-1]
    if quiesce:
        screen.query_one("#toggle-quiesce").value = True
        await wait_for(pilot, lambda: screen.plan.params.get("quiesce") is True)
        assert "-q=true" in screen.plan.command and "-Quiesce" in screen.plan.command
        screen.query_one("#confirm-name").focus()
        await pilot.pause(0.05)
    await confirm(pilot, app, vm.name)


async def test_freeze_snapshot_thaw_in_order_and_logged(
    vcsim: VcsimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_ssh_peer(files={}, commands=GUEST) as peer:
        monkeypatch.setenv(DEFAULT_PASSWORD_ENV, peer.password)
        known = peer.write_known_hosts(tmp_path / "known_hosts")
        app = make_app(vcsim, tmp_path)
        app.backend.guest_shell = lambda name: SshTarget(
            peer.host, known, port=peer.port, user=peer.username).shell()
        async with app.run_test(size=(180, 50)) as pilot:
            await loaded(pilot, vms=3)
            await run_create(pilot, app, "DC0_C0_H0_VM0", quiesce=True)
            row = app.action_log.rows()[0]
            assert row.outcome == "ok", row.error
            assert peer.commands == [FREEZE, THAW]
            assert f"freeze '{FREEZE}': exit status 0" in row.detail
            assert f"thaw '{THAW}': exit status 0" in row.detail
            assert '"quiesce": true' in row.plan
            vm = next(v for v in app.store.vms() if v.name == "DC0_C0_H0_VM0")
            await wait_for(pilot, lambda: len(app.store.checkpoints_of(vm.id)) == 1)
            [cp] = app.store.checkpoints_of(vm.id)
            assert cp.quiesced is True and cp.memory is False


async def test_snapshot_fails_after_the_freeze_the_thaw_still_runs(
    vcsim: VcsimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_ssh_peer(files={}, commands=GUEST) as peer:
        monkeypatch.setenv(DEFAULT_PASSWORD_ENV, peer.password)
        known = peer.write_known_hosts(tmp_path / "known_hosts")
        app = make_app(vcsim, tmp_path)
        app.backend.guest_shell = lambda name: SshTarget(
            peer.host, known, port=peer.port, user=peer.username).shell()
        async with app.run_test(size=(180, 50)) as pilot:
            await loaded(pilot, vms=3)
            vm = next(v for v in app.store.vms() if v.name == "DC0_C0_H0_VM1")
            message = "msg.snapshot.error-QUIESCINGERROR"
            await on_server(vcsim, reconfig(vm.id, "vcsim.fail.CreateSnapshot_Task", message))
            try:
                await run_create(pilot, app, vm.name)
            finally:
                await on_server(vcsim, reconfig(vm.id, "vcsim.fail.CreateSnapshot_Task", ""))
            row = app.action_log.rows()[0]
            assert row.outcome == "failed" and message in row.error
            assert peer.commands == [FREEZE, THAW]  # thawed although the snapshot failed
            assert "freeze" in row.detail and "thaw" in row.detail


async def test_a_failed_freeze_takes_no_snapshot_and_thaws(
    vcsim: VcsimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = {**GUEST, FREEZE: Reply(3, stderr="db busy")}
    async with start_ssh_peer(files={}, commands=busy) as peer:
        monkeypatch.setenv(DEFAULT_PASSWORD_ENV, peer.password)
        known = peer.write_known_hosts(tmp_path / "known_hosts")
        app = make_app(vcsim, tmp_path)
        app.backend.guest_shell = lambda name: SshTarget(
            peer.host, known, port=peer.port, user=peer.username).shell()
        async with app.run_test(size=(180, 50)) as pilot:
            await loaded(pilot, vms=3)
            vm = next(v for v in app.store.vms() if v.name == "DC0_C0_H0_VM2")
            await run_create(pilot, app, vm.name)
            row = app.action_log.rows()[0]
            assert row.outcome == "failed" and "no snapshot taken" in row.error
            assert "exit status 3" in row.error and "db busy" in row.error
            assert peer.commands == [FREEZE, THAW]
            await pilot.pause(0.3)
            assert app.store.checkpoints_of(vm.id) == []


async def test_hooks_without_a_guest_connection_send_nothing(
    vcsim: VcsimHandle, tmp_path: Path
) -> None:
    app = make_app(vcsim, tmp_path)
    async with app.run_test(size=(180, 50)) as pilot:
        await loaded(pilot, vms=3)
        await run_create(pilot, app, "DC0_C0_H0_VM2")
        row = app.action_log.rows()[0]
        assert row.outcome == "failed" and "nothing was sent" in row.error


async def test_a_failed_thaw_is_loud(
    vcsim: VcsimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = {**GUEST, THAW: Reply(1, stderr="still frozen")}
    async with start_ssh_peer(files={}, commands=commands) as peer:
        monkeypatch.setenv(DEFAULT_PASSWORD_ENV, peer.password)
        known = peer.write_known_hosts(tmp_path / "known_hosts")
        app = make_app(vcsim, tmp_path)
        app.backend.guest_shell = lambda name: SshTarget(
            peer.host, known, port=peer.port, user=peer.username).shell()
        async with app.run_test(size=(180, 50)) as pilot:
            await loaded(pilot, vms=3)
            await run_create(pilot, app, "DC0_C0_H0_VM0")
            row = app.action_log.rows()[0]
            assert row.outcome == "failed" and row.final_state == "Degraded"
            assert row.error.startswith("snapshot ok; THAW FAILED") and "still frozen" in row.error
