"""The key bar: Textual's ``Footer``, recomposed only when what it shows changes.

Textual's footer rebuilds all its keys (a dozen widgets, 20 to 30 ms) whenever the
screen's bindings may have changed: each focus change, and four times while
the console starts (as its first inventory loads, delaying keys and the first
rows). Ours shows the same keys on every pane (the panes' own bindings are not
shown), so this one compares what it would show with what it shows and
recomposes only when they differ.
"""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer


def _shown(screen: Screen[Any]) -> tuple[object, ...]:
    """What ``Footer.compose`` reads from the screen's bindings."""
    palette = screen.app.COMMAND_PALETTE_BINDING
    return tuple((key, active.binding, active.enabled, active.tooltip)
                 for key, active in screen.active_bindings.items()
                 if active.binding.show or key == palette)


class StableFooter(Footer):
    """A ``Footer`` that skips recomposing when its keys would come out the same."""

    _composed: tuple[object, ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            shown = _shown(screen)
            if shown == self._composed:
                return
            self._composed = shown  # the recompose Footer.bindings_changed schedules
        super().bindings_changed(screen)
