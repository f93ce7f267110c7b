"""``ventana probe --hyperv NODE …`` against the WinRM test endpoint, and decoding captures.

The probe sends only the contract's reads, writes every raw answer to one
file (0600), optionally anonymized; ``probe.decode`` turns a capture back into
Ventana's entities with the console's own mapping — what an operator with a
real cluster runs to confirm (or refute) the contract.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.winrm.fixture import PeerHandle, generate_password, start_winrm_peer
from peers.winrm.hyperv import ClusterModel, build_hyperv_registry
from peers.winrm.hyperv.profile import MODES

from ventana.backends.hyperv import probe
from ventana.backends.hyperv.commands import MUTATING_CMDLETS
from ventana.backends.sim import SimConfig
from ventana.state.model import VM, Checkpoint, Kind, Lun, Node, PowerState
from ventana.tui.cli import main

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["server2016", "spellings"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path
            ) -> Iterator[tuple[ClusterModel, dict[str, PeerHandle], list[str]]]:
    """One endpoint per node, each certificate carrying its node's name only; the
    probe's arguments (nodes by name, --resolve to 127.0.0.1, password file, CA bundle)."""
    model = ClusterModel(SimConfig(vms=12, nodes=2, rate=0), profile=MODES[request.param])
    first = next(iter(model.nodes))
    vm = next(v for v in model.vms.values() if v.node_id == first)
    model.set_power(vm.id, PowerState.PAUSED_CRITICAL)  # a number that differs in 2016
    password = generate_password()
    handles = {name: start_winrm_peer(registry=build_hyperv_registry(model, name),
                                      password=password, cert_names=[name])
               for name in model.nodes}
    secret = tmp_path / "pw"
    secret.write_text(password + "\n")
    os.chmod(secret, 0o600)
    bundle = tmp_path / "cas.pem"
    bundle.write_text("".join(Path(h.ca_path).read_text() for h in handles.values()))
    user = next(iter(handles.values())).user
    args = ["probe", "--user", user, "--password-file", str(secret), "--auth", "ntlm",
            "--ca-file", str(bundle)]
    for name, h in handles.items():
        args += ["--hyperv", name, "--resolve", f"{name}=127.0.0.1:{h.port}"]
    try:
        yield model, handles, args
    finally:
        for h in handles.values():
            h.stop()


def test_probe_captures_every_read_and_the_capture_decodes(
    cluster: tuple[ClusterModel, dict[str, PeerHandle], list[str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, _handles, args = cluster
    out = tmp_path / "capture.json"
    assert main([*args, "--out", str(out)]) == 0
    assert "2 node(s)" in capsys.readouterr().out
    assert (out.stat().st_mode & 0o777) == 0o600
    assert not set(model.calls) & MUTATING_CMDLETS  # reads only
    data = json.loads(out.read_text())
    assert [n["node"] for n in data["nodes"]] == list(model.nodes)
    for node in data["nodes"]:
        assert set(node["reads"]) == set(probe.READS)
        assert all("failure" not in e for e in node["reads"].values())
        assert all(e["command"] for e in node["reads"].values())  # the exact line sent
    password = Path(args[args.index("--password-file") + 1]).read_text().strip()
    assert password not in out.read_text()

    entities = probe.decode(data)
    vms = {e.id: e for e in entities if isinstance(e, VM)}
    assert set(vms) == set(model.vms)
    for vm_id, want in model.vms.items():
        assert (vms[vm_id].name, vms[vm_id].node_id, vms[vm_id].power) == (
            want.name, want.node_id, want.power)
    nodes = [e for e in entities if isinstance(e, Node)]
    assert {n.id for n in nodes} == set(model.nodes)
    assert {n.default_config_version for n in nodes} == {model.host_version}
    assert {e.id for e in entities if isinstance(e, Checkpoint)} == set(model.checkpoints)
    luns = [e for e in entities if isinstance(e, Lun)]
    assert luns and all(lun.owner_node_id in model.nodes for lun in luns)
    assert not [e for e in entities if e.KIND is Kind.FINDING]  # every value known


def test_an_anonymized_capture_hides_names_and_still_decodes(
    cluster: tuple[ClusterModel, dict[str, PeerHandle], list[str]], tmp_path: Path,
) -> None:
    model, _handles, args = cluster
    out = tmp_path / "capture.json"
    assert main([*args, "--out", str(out), "--anonymize"]) == 0
    text = out.read_text()
    data = json.loads(text)
    answers = json.dumps([e["output"] + e["errors"] for n in data["nodes"]
                          for e in n["reads"].values()])
    for vm in model.vms.values():
        assert vm.name not in answers and vm.id not in answers.lower()
    for name in model.nodes:
        assert not re.search(re.escape(name), answers + json.dumps(
            [n["node"] for n in data["nodes"]]), re.IGNORECASE)
    assert model.cluster.name not in answers and "127.0.0.1" not in answers
    entities = probe.decode(data)
    vms = [e for e in entities if isinstance(e, VM)]
    assert len(vms) == len(model.vms)
    assert len({v.node_id for v in vms}) == len(model.nodes)  # spellings still join
    assert sorted(v.power.value for v in vms) == sorted(v.power.value for v in model.vms.values())
    assert len([e for e in entities if isinstance(e, Checkpoint)]) == len(model.checkpoints)
    assert sum(len(v.disk_ids) for v in vms) == sum(len(v.disk_ids) for v in model.vms.values())


def test_decode_refuses_what_is_not_a_capture() -> None:
    with pytest.raises(ValueError, match="not a Ventana Hyper-V probe capture"):
        probe.decode({"format": "something else", "nodes": []})


def test_probe_needs_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--hyperv", "HV-NODE-01"]) == 2
    assert "needs --hyperv" in capsys.readouterr().err
