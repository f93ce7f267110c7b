"""The SSH side channel: stun parsing and findings, and asyncssh against a real loopback server.

The server (``tests/peers/ssh.py``) has a generated host key and password;
the client verifies the key against a known_hosts file written for each test,
so an empty or wrong known_hosts must be refused. Freeze/thaw and a dropped
connection are checked through what the server recorded.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest
from peers.ssh import LAB_VMWARE_LOG_SAMPLE, VM_DIR, Drop, Reply, SshPeer, start_ssh_peer

from ventana.backends.ssh import (
    LONG_STUN,
    CommandFailed,
    EsxiShell,
    FreezeFailed,
    HookOutcome,
    HostKeyRefused,
    OutcomeUnknown,
    StunBudget,
    StunEvent,
    ThawFailed,
    budget_for_mirror,
    datastore_path,
    frozen,
    parse_stun_lines,
    stun_findings,
)
from ventana.state.model import Severity

LAB_SAMPLE = Path(__file__).resolve().parents[4] / "shared" / "lab" / "vmware.log.sample"

pytestmark = pytest.mark.timeout(30)


def shell_for(peer: SshPeer, known_hosts: Path, **kwargs: object) -> EsxiShell:
    return EsxiShell(
        peer.host,
        peer.port,
        peer.username,
        known_hosts=known_hosts,
        password=peer.password,
        connect_timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )


# --- parsing and findings (no network) ---------------------------------------------


def test_lab_sample_parses_to_seven_events() -> None:
    events = parse_stun_lines(LAB_VMWARE_LOG_SAMPLE)
    assert len(events) == 7
    first = events[0]
    assert first.duration_us == 1_091_706
    assert first.duration_s == pytest.approx(1.091706)
    assert first.timestamp == datetime(2017, 1, 4, 21, 30, 19, 662000, tzinfo=UTC)
    assert first.timestamp.tzinfo is not None
    assert [e.duration_us for e in events[1:]] == [
        38123,
        298346,
        301099,
        341616,
        264392,
        221633,
    ]


@pytest.mark.skipif(not LAB_SAMPLE.is_file(), reason="shared/lab not present")
def test_embedded_sample_matches_the_lab_file() -> None:
    assert parse_stun_lines(LAB_SAMPLE.read_text()) == parse_stun_lines(LAB_VMWARE_LOG_SAMPLE)


def test_both_spellings_separators_and_garbage() -> None:
    text = "\r\n".join(
        [
            "2017-01-04T21:30:19.662Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 10 us",
            "2017-01-04T21:30:20.5Z | vcpu-1 | I125: CheckpointUnstun: vm stopped for 20 us",
            "2021-03-01T10:00:00.123456+02:00 In(05) vcpu-0 - CheckpointUnstun: "
            "vm stopped for 30 us",
            "garbage Checkpoint_Unstun: vm stopped for 99 us",
            "2017-13-45T99:99:99.000Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 98 us",
            "2017-01-04T21:30:19.662Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for lots us",
            "2017-01-04T21:30:19.662Z| vcpu-0| I125: Checkpoint_Stun: begin",
            "",
            "\x1b[2J\x00\xff",
        ]
    )
    events = parse_stun_lines(text)
    assert [e.duration_us for e in events] == [10, 20, 30]
    assert events[1].timestamp == datetime(2017, 1, 4, 21, 30, 20, 500000, tzinfo=UTC)
    assert events[2].timestamp == datetime(2021, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)
    assert all(e.timestamp.utcoffset() is not None for e in events)


def test_budget_helpers() -> None:
    assert budget_for_mirror(8) == 4
    with pytest.raises(ValueError):
        budget_for_mirror(0)
    budget = StunBudget(default_s=2.0).with_mirror("vm-db", 8)
    assert budget.budget_for("vm-db") == 4
    assert budget.budget_for("vm-web") == 2.0
    with pytest.raises(ValueError):
        StunBudget(default_s=-1)


def test_findings_over_a_mirror_budget() -> None:
    budget = budget_for_mirror(8)  # 4 s
    when = datetime(2017, 1, 4, 22, 16, 3, 672000, tzinfo=UTC)
    events = [
        StunEvent(datetime(2017, 1, 4, 21, 30, 19, 662000, tzinfo=UTC), 1_091_706),
        StunEvent(when, 4_200_000),
        StunEvent(datetime(2017, 1, 4, 22, 17, 0, tzinfo=UTC), 9_000_000),
    ]
    findings = stun_findings("vm-42", "db-01", events, budget)
    assert len(findings) == 2  # the 1.09 s stun is within budget
    long, longer = findings
    assert long.code == LONG_STUN and longer.code == LONG_STUN
    assert long.target == "vm:vm-42"
    assert long.severity is Severity.WARNING
    assert longer.severity is Severity.CRITICAL  # over the QoS timeout itself
    assert "4.200 s" in long.message
    assert "2017-01-04 22:16:03.672" in long.message
    assert "db-01" in long.message
    assert long.id != longer.id
    assert stun_findings("vm-42", "db-01", events[:1], budget) == []


def test_finding_message_is_sanitized() -> None:
    event = StunEvent(datetime(2017, 1, 4, tzinfo=UTC), 5_000_000)
    [finding] = stun_findings("vm-1", "evil\x1b]52;c;x\x07", [event], 1.0)
    assert "\x1b" not in finding.message and "\\x1b" in finding.message


def test_datastore_path() -> None:
    assert datastore_path("[datastore1] db-01/db-01.vmx") == "/vmfs/volumes/datastore1/db-01"
    assert datastore_path("[datastore 2] my vm") == "/vmfs/volumes/datastore 2/my vm"
    assert datastore_path(VM_DIR) == VM_DIR
    with pytest.raises(ValueError):
        datastore_path("relative/path")


# --- against the loopback SSH server ---------------------------------------------


async def test_read_vmware_log_through_verified_connection(tmp_path: Path) -> None:
    weird_dir = "/vmfs/volumes/data store 1/db-01; rm -rf x"
    extra = (
        LAB_VMWARE_LOG_SAMPLE
        + "2017-01-05T09:00:00.000Z | vcpu-0 | I125: CheckpointUnstun: vm stopped for 4200000 us\n"
    )
    async with start_ssh_peer() as peer:
        peer.files[f"{weird_dir}/vmware.log"] = extra
        known_hosts = peer.write_known_hosts(tmp_path / "known_hosts")
        async with shell_for(peer, known_hosts) as shell:
            text = await shell.read_vmware_log(VM_DIR)
            events = parse_stun_lines(text)
            assert len(events) == 7 and events[0].duration_us == 1_091_706
            assert await shell.read_stun_events("[datastore1] db-01/db-01.vmx") == events
            # A path with spaces and shell metacharacters is passed as one quoted word.
            weird = await shell.read_stun_events(weird_dir)
            assert weird[-1].duration_us == 4_200_000
            with pytest.raises(CommandFailed) as missing:
                await shell.read_vmware_log("/vmfs/volumes/nowhere")
            assert missing.value.result.exit_status == 1
        assert peer.commands[0] == f"cat {VM_DIR}/vmware.log"
        assert peer.commands[2] == f"cat '{weird_dir}/vmware.log'"
        findings = stun_findings("vm-1", "db-01", weird, budget_for_mirror(8))
        assert [f.code for f in findings] == [LONG_STUN]


async def test_unknown_host_key_is_refused(tmp_path: Path) -> None:
    async with start_ssh_peer() as peer:
        empty = tmp_path / "known_hosts"
        empty.write_text("")
        with pytest.raises(HostKeyRefused) as refused:
            await shell_for(peer, empty).connect()
        assert refused.value.fingerprint == peer.fingerprint
        assert peer.fingerprint.startswith("SHA256:")
        assert peer.fingerprint in str(refused.value)
        assert "unknown host key" in str(refused.value)
        assert not refused.value.changed
        assert peer.commands == []


async def test_user_ssh_config_cannot_turn_checks_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # asyncssh would read ~/.ssh/config by default, and this one disables checks.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host *\n  UserKnownHostsFile none\n  StrictHostKeyChecking no\n"
    )
    monkeypatch.setenv("HOME", str(home))
    async with start_ssh_peer() as peer:
        empty = tmp_path / "known_hosts"
        empty.write_text("")
        with pytest.raises(HostKeyRefused):
            await shell_for(peer, empty).connect()
        assert peer.commands == []


async def test_changed_host_key_is_refused(tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    async with start_ssh_peer() as peer:
        known_hosts = peer.write_known_hosts(tmp_path / "known_hosts", key=other)
        with pytest.raises(HostKeyRefused) as refused:
            await shell_for(peer, known_hosts).connect()
        assert refused.value.changed
        assert "CHANGED" in str(refused.value)
        assert peer.fingerprint in str(refused.value)
        assert peer.commands == []


async def test_missing_known_hosts_and_wrong_password(tmp_path: Path) -> None:
    async with start_ssh_peer() as peer:
        with pytest.raises(Exception, match="does not exist"):
            await shell_for(peer, tmp_path / "absent").connect()
        known_hosts = peer.write_known_hosts(tmp_path / "known_hosts")
        bad = EsxiShell(
            peer.host,
            peer.port,
            peer.username,
            known_hosts=known_hosts,
            password="wrong",
            connect_timeout=5,
        )
        with pytest.raises(Exception, match="refused") as denied:
            await bad.connect()
        assert peer.password not in str(denied.value)
        assert peer.password not in repr(shell_for(peer, known_hosts))


async def test_freeze_body_raises_thaw_still_runs(tmp_path: Path) -> None:
    commands = {"db-freeze": Reply(0, "frozen\n"), "db-thaw": Reply(0, "thawed\n")}
    outcomes: list[HookOutcome] = []
    async with start_ssh_peer(commands=commands) as peer:
        known_hosts = peer.write_known_hosts(tmp_path / "known_hosts")
        async with shell_for(peer, known_hosts) as shell:
            with pytest.raises(RuntimeError, match="snapshot failed"):
                async with frozen(shell, "db-freeze", "db-thaw", log=outcomes.append) as freeze:
                    assert freeze.ok
                    assert peer.commands == ["db-freeze"]
                    raise RuntimeError("snapshot failed")
        assert peer.commands == ["db-freeze", "db-thaw"]
    assert [(o.phase, o.command, o.exit_status) for o in outcomes] == [
        ("freeze", "db-freeze", 0),
        ("thaw", "db-thaw", 0),
    ]
    assert all(o.duration_s >= 0 for o in outcomes)


async def test_thaw_failure_is_reported(tmp_path: Path) -> None:
    commands = {"db-freeze": Reply(0), "db-thaw": Reply(3, stderr="cannot thaw: busy\n")}
    outcomes: list[HookOutcome] = []
    async with start_ssh_peer(commands=commands) as peer:
        known_hosts = peer.write_known_hosts(tmp_path / "known_hosts")
        async with shell_for(peer, known_hosts) as shell:
            with pytest.raises(ThawFailed) as failed:
                async with frozen(shell, "db-freeze", "db-thaw", log=outcomes.append):
                    pass
        assert peer.commands == ["db-freeze", "db-thaw"]
    assert "may still be frozen" in str(failed.value)
    assert "exit status 3" in str(failed.value)
    assert "cannot thaw: busy" in str(failed.value)
    assert [o.exit_status for o in outcomes] == [0, 3]


async def test_failed_freeze_skips_body_but_thaws(tmp_path: Path) -> None:
    commands = {"db-freeze": Reply(1, stderr="partial"), "db-thaw": Reply(0)}
    outcomes: list[HookOutcome] = []
    ran = False
    async with start_ssh_peer(commands=commands) as peer:
        known_hosts = peer.write_known_hosts(tmp_path / "known_hosts")
        async with shell_for(peer, known_hosts) as shell:
            with pytest.raises(FreezeFailed):
                async with frozen(shell, "db-freeze", "db-thaw", log=outcomes.append):
                    ran = True
        assert peer.commands == ["db-freeze", "db-thaw"]
    assert not ran
    assert [(o.phase, o.exit_status) for o in outcomes] == [("freeze", 1), ("thaw", 0)]


async def test_cancelled_body_still_thaws(tmp_path: Path) -> None:
    commands = {"db-freeze": Reply(0), "db-thaw": Reply(0, delay=0.2)}
    outcomes: list[HookOutcome] = []
    async with start_ssh_peer(commands=commands) as peer:
        known_hosts = peer.write_known_hosts(tmp_path / "known_hosts")
        async with shell_for(peer, known_hosts) as shell:
            entered = asyncio.Event()

            async def snapshot() -> None:
                async with frozen(shell, "db-freeze", "db-thaw", log=outcomes.append):
                    entered.set()
                    await asyncio.sleep(30)

            task = asyncio.create_task(snapshot())
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert peer.commands == ["db-freeze", "db-thaw"]
    assert [(o.phase, o.exit_status) for o in outcomes] == [("freeze", 0), ("thaw", 0)]


async def test_dropped_connection_is_outcome_unknown(tmp_path: Path) -> None:
    commands = {"db-freeze": Drop(partial="freezing...\n"), "db-thaw": Reply(0)}
    async with start_ssh_peer(commands=commands) as peer:
        known_hosts = peer.write_known_hosts(tmp_path / "known_hosts")
        async with shell_for(peer, known_hosts) as shell:
            with pytest.raises(OutcomeUnknown) as unknown:
                await shell.run("db-freeze")
            assert "verify on the host" in str(unknown.value)
            assert unknown.value.stdout == "freezing...\n"  # truncated output, no status
        assert peer.commands == ["db-freeze"]  # sent exactly once, never resent

        # Through the hooks: the freeze outcome is unknown and the thaw cannot
        # reach the host either, so the operator is told it may still be frozen.
        outcomes: list[HookOutcome] = []
        async with shell_for(peer, known_hosts) as shell:
            with pytest.raises(ThawFailed) as failed:
                async with frozen(shell, "db-freeze", "db-thaw", log=outcomes.append):
                    pytest.fail("body must not run after an unknown freeze")
        assert [(o.phase, o.exit_status) for o in outcomes] == [("freeze", None), ("thaw", None)]
        assert isinstance(failed.value.__context__, FreezeFailed)
        assert "may still be frozen" in str(failed.value)
