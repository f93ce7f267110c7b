"""``ventana probe --vsphere``: a read-only capture of the raw answers, through vcsim,
decoded back with the backend's own decoders; names anonymized on request."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from peers.vcsim import BUILD_HINT, binary_path, is_built, start_vcsim

if not is_built():
    pytest.skip(f"vcsim test peer not built ({binary_path()}): {BUILD_HINT}",
                allow_module_level=True)

from ventana.backends.vsphere import leanxml
from ventana.backends.vsphere.mapping import Lookup, vm_entities
from ventana.backends.vsphere.probe import decode
from ventana.state.model import VM, Checkpoint
from ventana.tui.cli import main


@pytest.mark.timeout(60)
def test_probe_captures_every_read_and_decodes(tmp_path: Path, capsys, monkeypatch) -> None:
    handle = start_vcsim(tmp_path / "peer", clusters=1, hosts=1, vms=2, datastores=1,
                         quiet=True)
    try:
        from pyVim.connect import Disconnect
        from pyVim.task import WaitForTask
        from test_vsphere_backend import connect

        si = connect(handle)
        [vm] = [v for v in si.content.viewManager.CreateContainerView(
            si.content.rootFolder, [], True).view if getattr(v, "name", "") == "DC0_C0_H0_VM1"]
        WaitForTask(vm.CreateSnapshot_Task("before-upgrade", "", False, False))
        tasks_before = len(si.content.taskManager.recentTask)

        secret = tmp_path / "pw"
        secret.write_text(handle.password)
        os.chmod(secret, 0o600)
        args = ["probe", "--vsphere", f"{handle.host}:{handle.port}", "--user", handle.user,
                "--ca-file", str(handle.ca_path), "--password-file", str(secret), "--wait", "1"]
        plain, anon = tmp_path / "plain.jsonl", tmp_path / "anon.jsonl"
        assert main([*args, "--out", str(plain)]) == 0
        assert main([*args, "--out", str(anon), "--anonymize"]) == 0
        said = capsys.readouterr().out
        assert "wrote" in said and "lean inventory reader agrees with pyvmomi" in said
        # Read-only: no task was started on the server by either probe.
        assert len(si.content.taskManager.recentTask) == tasks_before
        Disconnect(si)

        for path in (plain, anon):
            capture = decode(path)
            assert capture.header["server"]["apiType"] == "VirtualCenter"
            assert {"inventory", "next-wait", "recent-tasks"} <= set(capture.purposes())
            assert capture.lean_differences() == []
            assert any(p.startswith("storage:") for p in capture.purposes())
            objects = capture.inventory()
            vms = [u for u in objects if u.type_name == "VirtualMachine"]
            assert len(vms) == 2
            snap_vm = next(u for u in vms if u.assigned.get("snapshot") is not None)
            entities = vm_entities(snap_vm.moid, snap_vm.assigned, "c",
                                   Lookup(datastore_by_name=lambda n: ""))
            assert isinstance(entities[0], VM) and entities[0].vcpus > 0
            [cp] = [e for e in entities if isinstance(e, Checkpoint)]
            names = {str(u.assigned.get("name")) for u in vms}
            if path is plain:
                assert "DC0_C0_H0_VM1" in names and cp.name == "before-upgrade"
            else:
                text = path.read_text()
                for real in ("DC0_C0_H0_VM1", "DC0_C0_H0_VM0", "LocalDS_0", "before-upgrade",
                             "DC0_C0_H0", handle.user):
                    assert real not in text, real
                assert names == {"VirtualMachine-1", "VirtualMachine-2"}
                assert cp.name.startswith("Snapshot-")
                assert json.loads(text.splitlines()[0])["anonymized"] is True
        # The lean check can fail: a reader that misreads the power state is caught.
        monkeypatch.setitem(leanxml.VM_READERS, "runtime.powerState", lambda val: "poweredOff"
                            if val.text == "poweredOn" else "poweredOn")
        assert [d.split(":")[1] for d in decode(plain).lean_differences()] == [
            " runtime.powerState read otherwise than pyvmomi reads it"] * 2
    finally:
        handle.stop()


def test_probe_without_a_target_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["probe", "--out", str(tmp_path / "x")]) == 2
    assert "--vsphere" in capsys.readouterr().err


def test_a_capture_of_another_format_is_refused_by_name(tmp_path: Path) -> None:
    """A stop-12 capture (format 1: the inventory as RetrievePropertiesEx) is not read
    as if it were a current one; the operator is told to probe again."""
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"ventana_probe": 1, "soap_version": "vim25/8.0"}) + "\n")
    with pytest.raises(ValueError, match="format 1; this version reads format 2"):
        decode(old)
    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"ventana_probe": "\x1b[2J" * 10}) + "\n")
    with pytest.raises(ValueError) as refused:
        decode(stray)
    assert "\x1b" not in str(refused.value)
    other = tmp_path / "other.jsonl"
    other.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="not a ventana probe capture"):
        decode(other)


@pytest.mark.timeout(60)
def test_probe_reads_the_storage_of_the_vms_named(tmp_path: Path, capsys) -> None:
    """``--vm NAME`` (repeatable): the storage re-read covers the VMs named, not the
    inventory's first 20; a name the inventory does not hold is said in the notes."""
    handle = start_vcsim(tmp_path / "peer", clusters=1, hosts=1, vms=3, datastores=1,
                         quiet=True)
    try:
        secret = tmp_path / "pw"
        secret.write_text(handle.password)
        os.chmod(secret, 0o600)
        out = tmp_path / "named.jsonl"
        assert main(["probe", "--vsphere", f"{handle.host}:{handle.port}", "--user",
                     handle.user, "--ca-file", str(handle.ca_path), "--password-file",
                     str(secret), "--wait", "0", "--vm", "DC0_C0_H0_VM1", "--vm",
                     "no-such\x1b[2Jvm", "--out", str(out)]) == 0
        said = capsys.readouterr().out
        assert "no VM named 'no-such" in said and "\x1b" not in said
        capture = decode(out)
        storage = [p for p in capture.purposes() if p.startswith("storage:")]
        named = [u.moid for u in capture.inventory() if u.assigned.get("name") == "DC0_C0_H0_VM1"]
        assert storage == [f"storage:{named[0]}"]
    finally:
        handle.stop()
