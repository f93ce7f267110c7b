"""Issue 12 at the command line: the log is evidence, and untrusted.

Rows are tampered with directly in the SQLite file (another console, a
restored backup, any writer) and every output must stay free of control
bytes; options are accepted before or after the subcommand; a mistyped log
is never created; ``| head`` ends quietly; an unwritable log is found at start.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ventana.state.actionlog import ActionLog
from ventana.state.config import ConfigError, load_config
from ventana.tui.cli import REPLAY_NO_LOG, _open_log, build_parser, main, session_log
from ventana.tui.logcheck import unwritable

HOSTILE = "\x1b]0;owned\x07vm\x1b[2J\x1b]52;c;cm0gLXJmIC8=\x07\x9b31m\u202eevil"
CONTROL = ("\x1b", "\x07", "\x9b", "\u202e")


def _row(path: Path, **changes: object) -> None:
    with ActionLog.open(path) as log:
        log.record(action="merge", target_system="sim://HVCLUSTER01", mode="read-write",
                   target_object="vm:a", target_name="web-01", plan={"x": 1}, findings=[],
                   override=False, confirmed=True, outcome="ok")
    changes = {"size_before": 5 * 1024**3, "size_after": 1024**3, **changes}
    if changes:  # written straight into the file, past the module's sanitizing
        con = sqlite3.connect(path)
        sets = ", ".join(f"{k} = ?" for k in changes)
        con.execute(f"UPDATE actions SET {sets}", tuple(changes.values()))
        con.commit()
        con.close()


def _clean(text: str) -> None:
    for byte in CONTROL:
        assert byte not in text, f"{byte!r} reached the terminal"


def test_log_and_csv_sanitize_rows_tampered_in_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "a.db"
    _row(db, target_name=HOSTILE, error=HOSTILE, operator=HOSTILE, final_state=HOSTILE,
         duration_s=44160.0)
    assert main(["log", "--log", str(db)]) == 0
    out = capsys.readouterr().out
    _clean(out)
    assert "\\x1b" in out  # shown, visibly escaped
    assert "5.0 GB" in out and "1.0 GB" in out and "12 h 16 min" in out  # for people
    assert "UTC" in out.splitlines()[0]  # the time base is labelled
    assert main(["log", "--csv", "--log", str(db)]) == 0
    out = capsys.readouterr().out
    _clean(out)
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["size_before"] == str(5 * 1024**3) and row["duration_s"] == "44160.0"  # raw


def test_global_options_are_accepted_before_or_after_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "a.db"
    _row(db)
    for argv in (["--log", str(db), "log"], ["log", "--log", str(db)]):
        assert build_parser().parse_args(argv).log == db, argv
        assert main(argv) == 0
        assert "web-01" in capsys.readouterr().out
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'log = "{db}"\n')
    for argv in (["--config", str(cfg), "report"], ["report", "--config", str(cfg)]):
        assert build_parser().parse_args(argv).config == cfg, argv
        assert main(argv) == 0
        assert "web-01" in capsys.readouterr().out


def test_a_mistyped_log_is_never_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    typo = tmp_path / "typo.db"
    assert main(["log", "--log", str(typo)]) == 1
    assert main(["log", "--csv", "--log", str(typo)]) == 1
    assert "no action log" in capsys.readouterr().err
    assert not typo.exists()


def test_log_piped_into_head_ends_without_a_traceback(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    _row(db)
    with ActionLog.open(db) as log:
        for i in range(1500):
            log.record(action="merge", target_system="sim", mode="read-write",
                       target_object=f"vm:{i}", target_name=f"vm-{i:05d}" + "x" * 40,
                       plan={}, findings=[], override=False, confirmed=False,
                       outcome="cancelled", error="cancelled by the operator " * 3)
    for extra in ([], ["--csv"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ventana.tui.cli", "log", "--limit", "5000", *extra,
             "--log", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # as `head -1` does
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
        assert "Traceback" not in err and "BrokenPipe" not in err, err
        assert proc.returncode == 0


def test_readonly_alias_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["--readonly"]).read_only
    assert build_parser().parse_args(["--read-only"]).read_only
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("ventana ")


@pytest.fixture
def unwritable_log(tmp_path: Path) -> Iterator[Path]:
    """A log file that opens but cannot be written (root: immutable; else mode 0444)."""
    db = tmp_path / "a.db"
    _row(db)
    if os.geteuid() != 0:
        db.chmod(0o444)
        yield db
        db.chmod(0o644)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: no way to make a file unwritable")
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("chattr +i is not permitted here")
    try:
        yield db
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)


def test_an_unwritable_log_is_found_at_start(unwritable_log: Path) -> None:
    assert "cannot be written" in unwritable(unwritable_log)
    log, why = _open_log(unwritable_log)
    assert log is None and "cannot be written" in why  # → NO ACTION LOG — ACTIONS REFUSED
    log, why = _open_log(unwritable_log, read_only=True)  # on-call: reading is enough
    assert log is not None and why == ""
    log.close()


def test_a_replay_never_opens_the_operators_log(tmp_path: Path) -> None:
    db = tmp_path / "real.db"
    log, why = session_log("replay", db, read_only=True)
    assert log is None and why == REPLAY_NO_LOG and not db.exists()


@pytest.mark.parametrize(("text", "key"), [
    ("log = 5\n", "log"),
    ('[[target]]\nname = "lab"\nkind = "sim"\nvms = "many"\n', "vms"),
    ('[[target]]\nname = "lab"\nkind = "sim"\nrate = "fast"\n', "rate"),
    ('[[target]]\nname = 7\nkind = "sim"\n', "name"),
])
def test_config_values_of_the_wrong_type_name_the_key(tmp_path: Path, text: str, key: str,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_config(cfg)
    assert main(["--config", str(cfg), "log"]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_an_unresolvable_name_says_cannot_resolve(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # .invalid never resolves (RFC 2606).
    assert main(["--log", str(tmp_path / "a.db"), "--vsphere", "vc01.invalid:443",
                 "--user", "u"]) == 2
    assert "cannot resolve vc01.invalid" in capsys.readouterr().err
    assert main(["--log", str(tmp_path / "a.db"), "--hyperv", "HVCLUSTER01", "--node",
                 "hv01.invalid:5986", "--user", "D\\u", "--password-file",
                 str(_secret(tmp_path))]) == 2
    assert "cannot resolve hv01.invalid" in capsys.readouterr().err


def test_resolve_checks_skip_mapped_names_and_name_the_first_failure() -> None:
    import socket
    from types import SimpleNamespace

    from ventana.state.config import Config
    from ventana.tui.preflight import names_to_resolve, unresolvable

    args = SimpleNamespace(resolve=["HVCLUSTER01=127.0.0.1:5986"], hyperv="HVCLUSTER01",
                           node=[], vsphere=None, targets=[], target=None)
    assert names_to_resolve(args, Config()) == ["127.0.0.1:5986"]

    def fake(name: str) -> object:
        if name == "bad":
            raise socket.gaierror(-2, "Name or service not known")
        return []

    assert unresolvable(["good:1", "bad:443"], fake) == "cannot resolve bad"
    assert unresolvable(["good"], fake) == ""


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    secret.chmod(0o600)
    return secret
