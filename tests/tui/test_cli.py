"""The command line: log listing/export, config errors, replay refusals."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from ventana.state.actionlog import ActionLog
from ventana.state.config import ConfigError, load_config
from ventana.tui.cli import build_parser, main


def _one_row(path: Path) -> None:
    with ActionLog.open(path) as log:
        log.record(action="merge", target_system="sim://HVCLUSTER01", mode="read-write",
                   target_object="vm:a", target_name="=cmd|' /C calc'!A0", plan={"x": 1},
                   findings=[], override=False, confirmed=False, outcome="cancelled",
                   error="cancelled by the operator")


def test_log_lists_and_exports_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "a.db"
    assert main(["log", "--log", str(db)]) == 1  # never creates an empty log
    assert "no action log" in capsys.readouterr().err and not db.exists()
    ActionLog.open(db).close()
    assert main(["log", "--log", str(db)]) == 0
    assert "empty" in capsys.readouterr().out
    _one_row(db)
    assert main(["log", "--log", str(db)]) == 0
    out = capsys.readouterr().out
    assert "cancelled" in out and "merge" in out
    assert main(["log", "--csv", "--log", str(db)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and rows[0]["outcome"] == "cancelled"
    assert rows[0]["target_name"].startswith("'=")  # no formula in a spreadsheet


def test_log_defaults_to_xdg_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_row(tmp_path / "xdg-data" / "ventana" / "actions.db")
    assert main(["log"]) == 0
    assert "cancelled" in capsys.readouterr().out


def test_config_targets_and_refusals(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[target]]\nname = "lab"\nkind = "sim"\nseed = 3\nread_only = true\n')
    config = load_config(cfg)
    target = config.target("lab")
    assert target.read_only and target.options == {"seed": 3}
    with pytest.raises(ConfigError, match="no target named"):
        config.target("prod")
    cfg.write_text('[[target]]\nname = "lab"\npassword = "hunter2"\n')
    with pytest.raises(ConfigError, match="looks like a secret"):
        load_config(cfg)
    cfg.write_text('[[target]]\nname = "x"\nkind = "openstack"\n')
    with pytest.raises(ConfigError, match="supports"):
        load_config(cfg)
    cfg.write_text("not = [toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(cfg)
    assert load_config(None).targets == ()  # no default file: empty config


def test_cli_refuses_bad_config_and_recordings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[target]]\nname = "lab"\ntoken = "x"\n')
    assert main(["--config", str(cfg)]) == 2
    assert "secret" in capsys.readouterr().err
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"format": "ventana-recording", "version": 99}) + "\n")
    assert main(["replay", str(newer)]) == 2
    assert "newer" in capsys.readouterr().err
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    assert main(["replay", str(junk)]) == 2
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    fixture = Path(__file__).resolve().parents[1] / "recordings" / "small-cluster.jsonl"
    assert main(["replay", str(fixture), "--speed", "-1"]) == 2
    assert main(["--target", "nope"]) == 2


def test_real_cluster_targets_come_from_the_config(tmp_path: Path) -> None:
    from ventana.tui.cli import _apply_target

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[[target]]\nname = "prod"\nkind = "hyperv"\ncluster = "HVCLUSTER01"\n'
        'nodes = ["hv01:5986", "hv02"]\nuser = \'CORP\\ops\'\nca_bundle = "/etc/ca.pem"\n'
        '[[target]]\nname = "prod-rw"\nkind = "hyperv"\nread_only = false\n'
        '[[target]]\nname = "vc"\nkind = "vsphere"\nhost = "vc01"\nport = 8443\n'
    )
    config = load_config(cfg)
    assert config.target("prod").read_only  # real clusters: read-only by default
    assert not config.target("prod-rw").read_only
    args = build_parser().parse_args(["--target", "prod"])
    _apply_target(args, "hyperv", config.target("prod").options, True)
    assert args.hyperv == "HVCLUSTER01" and args.node == ["hv01:5986", "hv02"]
    assert args.user == "CORP\\ops" and str(args.ca_file) == "/etc/ca.pem"
    assert not args.read_write
    args = build_parser().parse_args(["--target", "prod-rw", "--user", "CORP\\me"])
    _apply_target(args, "hyperv", config.target("prod-rw").options, False)
    assert args.read_write and args.user == "CORP\\me"  # the command line wins
    args = build_parser().parse_args(["--target", "vc"])
    _apply_target(args, "vsphere", config.target("vc").options, True)
    assert args.vsphere == "vc01:8443"
