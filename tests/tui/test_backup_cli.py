"""A Hyper-V target's backup readiness options reach the backend's config."""

from __future__ import annotations

from pathlib import Path

from ventana.backends.hyperv import HyperVBackend
from ventana.backends.hyperv.backup import CAMPAIGN_PORTS, CAMPAIGN_SERVICES
from ventana.state.config import load_config
from ventana.tui.cli import _apply_target, _hyperv_backend, build_parser


def backend(tmp_path: Path, extra: str) -> HyperVBackend:
    secret = tmp_path / "pw"
    secret.write_text("not-a-real-one\n")
    secret.chmod(0o600)
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[target]]\nname = "hv"\nkind = "hyperv"\ncluster = "HVCLUSTER01"\n'
                   f'user = \'LAB\\ops\'\n{extra}')
    args = build_parser().parse_args(["--target", "hv", "--password-file", str(secret)])
    _apply_target(args, "hyperv", load_config(cfg).target("hv").options, True)
    made = _hyperv_backend(args)
    assert isinstance(made, HyperVBackend)
    return made


def test_campaign_defaults_and_configured_agent(tmp_path: Path) -> None:
    default = backend(tmp_path, "").config
    assert (default.backup_services, default.backup_ports, default.backup_checks) == (
        CAMPAIGN_SERVICES, CAMPAIGN_PORTS, True)
    other = backend(tmp_path, 'backup_services = ["DPMRA"]\nbackup_ports = [5718]\n'
                              'backup_interval = 300\nbackup_checks = false\n').config
    assert (other.backup_services, other.backup_ports, other.backup_interval,
            other.backup_checks) == (("DPMRA",), (5718,), 300, False)
