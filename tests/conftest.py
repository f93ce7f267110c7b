"""Shared test set-up: snapshot SVGs live in top-level screenshots/.

pytest-textual-snapshot is pinned (1.1.0): its ``snap_compare`` fixture looks
up ``SVGImageExtension`` in its module at call time, so replacing that name
with a subclass whose ``dirname`` is ``screenshots/`` keeps every SVG where
people look for them, named after the test.

Two SVGs of the same screen can differ only in how runs of text are split
into ``<text>``/``<rect>`` elements (Textual's compositor cuts lines at
widget edges, and the cuts depend on timing). The extension therefore
compares what a person sees: every cell's character, colours and style.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_textual_snapshot

pytest_plugins = ["peers.postgres"]  # pg_server, pg_url: a throwaway PostgreSQL (team mode)

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"


@pytest.fixture(scope="session", autouse=True)
def no_os_keyring() -> Iterator[None]:
    """Every test starts with no keyring, as on a headless machine.

    keyring registers every ``KeyringBackend`` subclass for its own discovery
    (keyring/backend.py, the metaclass's ``_register``) and its chainer chains
    every viable one with a priority above 0 (keyring/backends/chainer.py). The
    test backends (tests/backends/test_credentials.py's 30-second ``Blocking``
    among them) would become the default as soon as their module is imported,
    and every later log open would wait out its 5 s keyring limit; a
    developer's desktop keyring would be read by the suite. Tests that need a
    keyring install their own with ``keyring.set_keyring`` and restore it.
    """
    import keyring
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())  # never asks the machine's (discovery is not run)
    yield


_CELL_W, _CELL_H = 12.2, 24.4
_STYLE = re.compile(r"\.(terminal-[\w-]+) \{([^}]*)\}")
_TEXT = re.compile(r'<text class="([^"]+)" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', re.S)
_RECT = re.compile(
    r'<rect fill="([^"]+)" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="[\d.]+" '
    r'shape-rendering="crispEdges"/>'
)


def screen_cells(svg: str) -> dict[tuple[int, int], tuple[str, str, str]]:
    """(row, column) -> (character, text style, background) of an SVG screen."""
    styles = {name: css.strip() for name, css in _STYLE.findall(svg)}
    cells: dict[tuple[int, int], list[str]] = {}
    for fill, x, y, width in _RECT.findall(svg):
        row = round((float(y) - 1.5) / _CELL_H)
        first = round(float(x) / _CELL_W)
        for col in range(first, first + round(float(width) / _CELL_W)):
            cells.setdefault((row, col), [" ", "", ""])[2] = fill
    for cls, x, y, content in _TEXT.findall(svg):
        row = round((float(y) - 20) / _CELL_H)
        first = round(float(x) / _CELL_W)
        for offset, char in enumerate(html.unescape(content).replace("\xa0", " ")):
            cell = cells.setdefault((row, first + offset), [" ", "", ""])
            cell[0], cell[1] = char, styles.get(cls, cls)
    return {k: (c, "" if c == " " else s, b) for k, (c, s, b) in cells.items()}


class ScreenshotsExtension(pytest_textual_snapshot.SVGImageExtension):
    @classmethod
    def dirname(cls, *, test_location) -> str:  # type: ignore[no-untyped-def, override]
        return str(SCREENSHOTS)

    def matches(self, *, serialized_data, snapshot_data) -> bool:  # type: ignore[no-untyped-def, override]
        if serialized_data == snapshot_data:
            return True
        if not isinstance(serialized_data, str) or not isinstance(snapshot_data, str):
            return False
        return screen_cells(serialized_data) == screen_cells(snapshot_data)


pytest_textual_snapshot.SVGImageExtension = ScreenshotsExtension  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _isolated_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the developer's real config or action log."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    os.environ.pop("NO_COLOR", None)


@pytest.fixture(autouse=True)
def _no_gc_pause_left() -> Iterator[None]:
    """A test that ends with one of our collector pauses still running (a console not
    closed mid-load, a build that never finished) fails: every later test in the
    process would run without the cyclic GC, and a pause that cannot end is a bug. A
    worker thread still reading a page when its test closed the backend ends its pause
    by itself: waited for, up to 10 s."""
    import time

    from ventana.backends import gcpause

    before = gcpause.pausing()
    yield
    deadline = time.monotonic() + 10.0
    while gcpause.pausing() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gcpause.pausing() == before, "a garbage-collector pause was left running"
