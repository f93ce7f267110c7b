"""A compact yes/no question (posting's confirmation model): Esc means no.

The question may carry untrusted names: every unbroken run longer than a
name's width is cut in the middle (as the plan screen shows names), and the
question scrolls above buttons that stay on screen at any terminal size.
"""

from __future__ import annotations

import re

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from .fit import NAME_CELLS, cap_middle, shorten_names

_LONG_RUN = re.compile(r"\S{" + str(NAME_CELLS + 1) + ",}")


def fit_question(question: str) -> str:
    """``question`` sanitized with long unbroken runs (names) cut in the middle."""
    text = shorten_names(question, [])
    return _LONG_RUN.sub(lambda m: cap_middle(m.group(0)), text)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("escape", "no", "No")]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question = question
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            with VerticalScroll(id="confirm-question-box"):
                yield Static(Text(fit_question(self.question)), id="confirm-question")
            with Horizontal(id="confirm-buttons"):
                yield Button(self.no, id="no", variant="primary")
                yield Button(self.yes, id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no_button(self) -> None:
        self.dismiss(False)

    def action_no(self) -> None:
        self.dismiss(False)
