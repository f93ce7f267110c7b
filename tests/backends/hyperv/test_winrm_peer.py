"""pypsrp 0.9.1 against the WinRM/PSRP test peer (tests/peers/winrm).

Proves the peer is a usable stand-in for a Windows host before the Hyper-V
backend is built on it: the synchronous pypsrp client (``WSMan`` +
``RunspacePool`` + ``PowerShell``, run in threads as the backend will) opens
pools over HTTPS with a verified certificate, authenticates with Basic, NTLM
and Negotiate, and gets objects, progress, errors and Stop the way a real
server delivers them. Every test is bounded; the file runs in well under 60 s.
"""

from __future__ import annotations

import datetime
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from peers.winrm.cmdlets import CommandRegistry, CommandWriter
from peers.winrm.demo import build_demo_registry
from peers.winrm.fixture import PeerHandle, start_winrm_peer
from pypsrp.complex_objects import GenericComplexObject, PSInvocationState
from pypsrp.exceptions import AuthenticationError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

pytestmark = pytest.mark.timeout(60)

VM_TYPE = "Microsoft.HyperV.PowerShell.VirtualMachine"

#: Tag → set when the handler saw the client's Stop.
STOPPED: dict[str, threading.Event] = {}


def watched_task(params: dict[str, Any], writer: CommandWriter) -> None:
    """Progress every 50 ms until stopped; records that it saw the Stop."""
    seen = STOPPED.setdefault(str(params["Tag"]), threading.Event())
    step = 0
    while True:
        step += 1
        writer.write_progress("Watched", f"step {step}", percent=step % 100)
        if writer.wait(0.05):
            seen.set()
            return


def show_parameters(params: dict[str, Any], writer: CommandWriter) -> None:
    """Echoes what the handler received: one Hashtable of ``name -> [type, value]``."""
    assert params["name"] == params.get("NAME") == "vm-1" and "nAmE" in params
    writer.write_output({k: [type(v).__name__, v] for k, v in params.items()})
    writer.write_output(list(writer.arguments))


def test_registry() -> CommandRegistry:
    registry = build_demo_registry()
    registry.register("Invoke-Watched", watched_task)
    registry.register("Show-Parameters", show_parameters)
    return registry


test_registry.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture(scope="module")
def peer() -> Iterator[PeerHandle]:
    handle = start_winrm_peer(registry=test_registry())
    try:
        yield handle
    finally:
        handle.stop()
        assert wait_until(lambda: not handle.peer.threads(), 5.0), handle.peer.threads()


def connect(peer: PeerHandle, auth: str = "ntlm", **kwargs: Any) -> WSMan:
    options: dict[str, Any] = {
        "port": peer.port,
        "username": peer.user,
        "password": peer.password,
        "auth": auth,
        "cert_validation": peer.ca_path,
        "connection_timeout": 5,
    }
    options.update(kwargs)
    return WSMan(options.pop("server", peer.host), **options)


def invoke(pool: RunspacePool, command: str, **params: Any) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet(command)
    for name, value in params.items():
        ps.add_parameter(name, value)
    ps.invoke()
    return ps


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is anywhere in the chain (causes, contexts, wrapped reasons)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kind):
            return True
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return False


# -- objects ----------------------------------------------------------------------------


def test_get_vm_objects_types_and_property_types(peer: PeerHandle) -> None:
    with RunspacePool(connect(peer)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-VM").add_parameter("Count", 20).add_parameter("Name", "VM-001*")
        out = ps.invoke()
        assert not ps.had_errors
        assert ps.streams.error == []
        assert ps.state == PSInvocationState.COMPLETED

        assert [vm.adapted_properties["Name"] for vm in out] == [
            f"vm-{i:04d}" for i in range(10, 20)
        ]
        vm = out[0]
        assert isinstance(vm, GenericComplexObject)
        assert vm.types[0] == VM_TYPE  # plain name, as a real server sends it
        assert not any(t.startswith("Deserialized.") for t in vm.types)
        props = vm.adapted_properties
        assert set(props) >= {
            "Name",
            "State",
            "Generation",
            "Version",
            "ProcessorCount",
            "MemoryStartup",
            "Id",
        }
        state = props["State"]
        assert isinstance(state, GenericComplexObject)
        assert str(state) == "Saved"  # enums arrive by name (vm-0010: index 10 % 4 == 2)
        assert state.types[0] == "Microsoft.HyperV.PowerShell.VMState"
        assert state.property_sets == [6]
        assert isinstance(props["Generation"], int)
        assert isinstance(props["Version"], str)
        assert props["ProcessorCount"] == 2 + 10 % 7
        assert props["MemoryStartup"] == (1 + 10 % 8) * 1024**3  # Int64 beyond Int32
        assert isinstance(props["Id"], uuid.UUID)
        assert isinstance(props["CreationTime"], str)  # DateTime arrives as a string
        assert datetime.datetime.fromisoformat(props["CreationTime"].replace("Z", "+00:00"))
        assert str(vm) == f"VirtualMachine (Name = 'vm-0010') [Id = '{props['Id']}']"


def test_primitive_values_round_trip(peer: PeerHandle) -> None:
    guid = uuid.uuid4()
    with RunspacePool(connect(peer)) as pool:
        ps = invoke(pool, "Write-Output", InputObject=[1, "a b", True, guid, 1.5, None])
        assert ps.output == [1, "a b", True, guid, 1.5, None]

        when = invoke(pool, "Get-Date").output[0]
        assert isinstance(when, str)
        parsed = datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
        assert abs((parsed - datetime.datetime.now(datetime.UTC)).total_seconds()) < 60


def test_parameters_reach_the_handler_typed(peer: PeerHandle) -> None:
    guid = uuid.uuid4()
    with RunspacePool(connect(peer)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("show-parameters")  # command names match case-insensitively
        ps.add_parameter("Name", "vm-1").add_parameter("Count", 7).add_parameter("Force")
        ps.add_parameter("Id", guid).add_parameter("Names", ["a", "b"]).add_argument("positional")
        seen, arguments = ps.invoke()
    assert seen == {
        "Name": ["PSString", "vm-1"],
        "Count": ["PSInt", 7],
        "Force": ["bool", True],  # a switch (no value) arrives as True
        "Id": ["PSGuid", guid],
        "Names": ["PSList", ["a", "b"]],
    }
    assert arguments == ["positional"]


def test_pipeline_input_and_chained_commands(peer: PeerHandle) -> None:
    with RunspacePool(connect(peer)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Write-Output")
        assert ps.invoke(input=["x", "y"]) == ["x", "y"]

        ps = PowerShell(pool)
        ps.add_cmdlet("Get-VM").add_parameter("Count", 3).add_cmdlet("Write-Output")
        assert [o.adapted_properties["Name"] for o in ps.invoke()] == [
            "vm-0000",
            "vm-0001",
            "vm-0002",
        ]


def test_three_thousand_objects(peer: PeerHandle) -> None:
    with RunspacePool(connect(peer)) as pool:
        start = time.monotonic()
        ps = invoke(pool, "Get-VM", Count=3000)
        elapsed = time.monotonic() - start
    assert len(ps.output) == 3000
    assert ps.output[-1].adapted_properties["Name"] == "vm-2999"
    assert elapsed < 30, f"3,000 objects took {elapsed:.1f} s"
    # Replies stayed under the MaxEnvelopeSize the client asked for.
    assert 0 < peer.peer.service.max_envelope_use <= 1.0


# -- streams and errors -------------------------------------------------------------------


def test_progress_records_arrive(peer: PeerHandle) -> None:
    with RunspacePool(connect(peer)) as pool:
        ps = invoke(pool, "Invoke-LongTask", Seconds=0.5, IntervalMs=50)
    assert ps.output == ["finished"]
    progress = ps.streams.progress
    assert len(progress) >= 5
    assert progress[0].activity == "Merging disks"
    assert progress[0].description == "step 1"
    assert progress[0].percent_complete == 1
    assert str(progress[-1].progress_type) == "Completed"
    assert progress[-1].percent_complete == 100


def test_non_terminating_error_goes_to_error_stream(peer: PeerHandle) -> None:
    with RunspacePool(connect(peer)) as pool:
        ps = invoke(pool, "Write-Error", Message="disk not found", Target="vm-7")
        assert ps.had_errors is False
        assert ps.state == PSInvocationState.COMPLETED
        assert ps.output == ["after error"]
        [error] = ps.streams.error
        assert str(error) == "disk not found"
        assert error.fq_error == "DemoError,Write-Error"
        assert error.exception.adapted_properties["Message"] == "disk not found"

        # As Get-VM does for a name it cannot find.
        ps = invoke(pool, "Get-VM", Count=3, Name="missing")
        assert ps.had_errors is False
        assert ps.output == []
        assert "missing" in str(ps.streams.error[0])

        ps = invoke(pool, "Write-Warning", Message="low space")
        assert [str(w.message) for w in ps.streams.warning] == ["low space"]


def test_terminating_error_fails_the_pipeline(peer: PeerHandle) -> None:
    with RunspacePool(connect(peer)) as pool:
        ps = invoke(pool, "Invoke-Failure", Message="merge failed: chain broken")
        assert ps.had_errors is True
        assert ps.state == PSInvocationState.FAILED
        assert ps.output == ["before failure"]
        assert "merge failed: chain broken" in [str(e) for e in ps.streams.error]

        ps = invoke(pool, "Get-Nothing")
        assert ps.had_errors is True
        assert "not recognized" in str(ps.streams.error[0])

        # The pool survives failed pipelines.
        assert invoke(pool, "Write-Output", InputObject="ok").output == ["ok"]


def test_stop_from_another_thread(peer: PeerHandle) -> None:
    tag = uuid.uuid4().hex
    # A small OperationTimeout bounds pypsrp's own race: a poll that starts just
    # after stop() removed the pipeline waits on the pool instead, until then.
    with RunspacePool(connect(peer, operation_timeout=3)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Invoke-Watched").add_parameter("Tag", tag)
        ps.begin_invoke()
        finished = threading.Event()
        errors: list[BaseException] = []

        def poll() -> None:
            try:
                ps.end_invoke()
            except BaseException as exc:
                errors.append(exc)
            finally:
                finished.set()

        threading.Thread(target=poll, name="client-poll", daemon=True).start()
        assert wait_until(lambda: len(ps.streams.progress) >= 2, 10.0)

        start = time.monotonic()
        ps.stop()
        assert time.monotonic() - start < 2.0  # answered at once, stopped in the background
        assert ps.state == PSInvocationState.STOPPED
        assert STOPPED[tag].wait(5.0), "the handler never saw the Stop"
        assert finished.wait(10.0)
        assert errors == []

        # The pool is still usable after a Stop.
        assert invoke(pool, "Write-Output", InputObject="after stop").output == ["after stop"]


def test_command_longer_than_operation_timeout(peer: PeerHandle) -> None:
    before = peer.peer.service.stats["Receive.timeout"]
    with RunspacePool(connect(peer, operation_timeout=1)) as pool:
        ps = invoke(pool, "Invoke-LongTask", Seconds=1.5, IntervalMs=1500)
    assert ps.output == ["finished"]
    assert peer.peer.service.stats["Receive.timeout"] > before  # re-polled after the fault


def test_pools_in_parallel_threads(peer: PeerHandle) -> None:
    results: dict[int, list[str]] = {}

    def work(n: int) -> None:
        with RunspacePool(connect(peer)) as pool:
            ps = invoke(pool, "Get-VM", Count=100 + n)
            results[n] = [o.adapted_properties["Name"] for o in ps.output]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 1, 2, 3]
    for n, names in results.items():
        assert len(names) == 100 + n


def test_is_alive_and_close(peer: PeerHandle) -> None:
    pool = RunspacePool(connect(peer))
    pool.open()
    assert pool.is_alive()
    shells = peer.peer.service.shell_count()
    pool.close()
    assert peer.peer.service.shell_count() == shells - 1
    assert pool.is_alive() is False


def test_pool_level_requests(peer: PeerHandle) -> None:
    wsman = connect(peer)
    with RunspacePool(wsman, max_runspaces=3) as pool:
        assert pool.get_available_runspaces() == 3
        pool.max_runspaces = 5  # SetMaxRunspaces on an open pool
        pool.min_runspaces = 2
        pool.reset_runspace_state()
        assert (pool.max_runspaces, pool.min_runspaces) == (5, 2)
        wsman.update_max_payload_size()  # reads the WinRM config resource
        assert wsman.max_envelope_size == 500 * 1024
        assert invoke(pool, "Write-Output", InputObject="still fine").output == ["still fine"]


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "ntlm", "negotiate"])
def test_authentication_schemes(peer: PeerHandle, auth: str) -> None:
    with RunspacePool(connect(peer, auth=auth)) as pool:
        assert invoke(pool, "Write-Output", InputObject=auth).output == [auth]


@pytest.mark.parametrize("auth", ["basic", "ntlm", "negotiate"])
def test_wrong_password_is_refused(peer: PeerHandle, auth: str) -> None:
    wrong = peer.password[::-1] + "x"
    with pytest.raises(AuthenticationError):
        RunspacePool(connect(peer, auth=auth, password=wrong)).open()


def test_unknown_user_is_refused(peer: PeerHandle) -> None:
    with pytest.raises(AuthenticationError):
        RunspacePool(connect(peer, username="LAB\\intruder")).open()


def test_password_never_logged(peer: PeerHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for auth in ("basic", "ntlm"):
        with RunspacePool(connect(peer, auth=auth)) as pool:
            invoke(pool, "Get-Date")
        with pytest.raises(AuthenticationError):
            RunspacePool(connect(peer, auth=auth, password="not-" + peer.password)).open()
    peer_logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("peers."))
    assert "authenticated LAB\\operator" in peer_logs
    assert "Basic authentication from 127.0.0.1 refused" in peer_logs
    assert peer.password not in peer_logs
    assert peer.password not in repr(peer)


# -- TLS -------------------------------------------------------------------------------------


def test_unknown_ca_is_refused(peer: PeerHandle, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with pytest.raises(Exception) as info:
        RunspacePool(connect(peer, cert_validation=str(other_ca))).open()
    assert caused_by(info.value, ssl.SSLCertVerificationError), repr(info.value)


def test_system_trust_store_does_not_trust_the_test_ca(peer: PeerHandle) -> None:
    with pytest.raises(Exception) as info:
        RunspacePool(connect(peer, cert_validation=True)).open()
    assert caused_by(info.value, ssl.SSLCertVerificationError), repr(info.value)


def test_connect_by_dns_name(peer: PeerHandle) -> None:
    with RunspacePool(connect(peer, server="localhost")) as pool:
        assert invoke(pool, "Write-Output", InputObject="by name").output == ["by name"]


def test_name_not_in_certificate_is_refused() -> None:
    handle = start_winrm_peer(cert_names=["winrm.other.example"])
    try:
        with pytest.raises(Exception) as info:
            RunspacePool(connect(handle)).open()
        assert caused_by(info.value, ssl.SSLCertVerificationError), repr(info.value)
        assert "mismatch" in repr(info.value) or "match" in repr(info.value)
    finally:
        handle.stop()


# -- shutdown ---------------------------------------------------------------------------------


def test_shutdown_mid_command_then_restart() -> None:
    handle = start_winrm_peer(registry=test_registry())
    try:
        wsman = connect(handle, operation_timeout=5, read_timeout=8)
        pool = RunspacePool(wsman)
        pool.open()
        ps = PowerShell(pool)
        ps.add_cmdlet("Invoke-Watched").add_parameter("Tag", uuid.uuid4().hex)
        ps.begin_invoke()
        ps.poll_invoke()
        assert ps.streams.progress

        # The endpoint goes away mid-command: bounded, and no thread of it is left.
        start = time.monotonic()
        handle.peer.stop()
        assert time.monotonic() - start < 10
        assert wait_until(lambda: not handle.peer.threads(), 5.0), handle.peer.threads()
        with pytest.raises(Exception):  # noqa: B017 - any transport error: the peer is gone
            ps.poll_invoke()
        wsman.close()

        # Back on the same port with the same certificate; the old shell is gone.
        handle.peer.start()
        assert handle.peer.port == handle.port
        with RunspacePool(connect(handle)) as fresh:
            assert invoke(fresh, "Write-Output", InputObject="back").output == ["back"]
        assert pool.is_alive() is False
    finally:
        handle.stop()
        handle.stop()  # idempotent
    assert not Path(handle.ca_path).exists()
    assert wait_until(lambda: not handle.peer.threads(), 5.0), handle.peer.threads()
