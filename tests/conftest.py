"""Shared test set-up: snapshot SVGs live in top-level screenshots/.

pytest-textual-snapshot is pinned (1.1.0): its ``snap_compare`` fixture looks
up ``SVGImageExtension`` in its module at call time, so replacing that name
with a subclass whose ``dirname`` is ``screenshots/`` keeps every SVG where
people look for them, named after the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_textual_snapshot

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"


class ScreenshotsExtension(pytest_textual_snapshot.SVGImageExtension):
    @classmethod
    def dirname(cls, *, test_location) -> str:  # type: ignore[no-untyped-def, override]
        return str(SCREENSHOTS)


pytest_textual_snapshot.SVGImageExtension = ScreenshotsExtension  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _isolated_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the developer's real config or action log."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    os.environ.pop("NO_COLOR", None)
