"""The final-state dialog (key ``e``): the operator sets a VM's final state.

Lists the eight campaign end states with the VM's current one (from the
action log) preselected, and takes an optional note. Choosing returns the
state and the note; the app writes them to the action log as a
``final-state`` row. Nothing is sent to the cluster, so read-only sessions
may set it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from ventana.state.model import FinalState

HELP = {
    FinalState.OPERATIONAL: "works as before the maintenance",
    FinalState.DEGRADED: "runs, with a known problem",
    FinalState.PENDING: "work left to do on it",
    FinalState.FAILED: "the work failed; it needs attention",
    FinalState.OPTIMIZED: "better than before (space, chain, version)",
    FinalState.MONITORING: "done; watched for a while",
    FinalState.MIGRATED: "moved elsewhere",
    FinalState.PARTIAL: "part of its chain still to consolidate",
}


@dataclass(frozen=True, slots=True)
class FinalStateChoice:
    state: FinalState
    note: str


class FinalStateScreen(ModalScreen[FinalStateChoice | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"),
                Binding("question_mark", "app.help", "Help", show=False)]
    DEFAULT_CSS = """
    FinalStateScreen { align: center middle; }
    #final-dialog { width: 72; height: auto; border: round $accent; background: $surface;
                    padding: 0 1; }
    #final-states { height: auto; max-height: 10; margin: 1 0; }
    #final-note { margin-bottom: 1; }
    """

    def __init__(self, vm_name: str, current: str | None) -> None:
        super().__init__()
        self.vm_name = vm_name
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="final-dialog"):
            title = Text("Final state of ", style="bold")
            title.append(self.vm_name, style="bold")
            title.append(f" — now: {self.current or 'not set'}", style="")
            yield Static(title, id="final-title")
            options = []
            for state in FinalState:
                label = Text(f"{state.value:<24}")
                label.append(HELP[state], style="dim")
                options.append(Option(label, id=state.name))
            yield OptionList(*options, id="final-states")
            yield Input(placeholder="note (optional), e.g. why or what is left; Enter saves",
                        id="final-note", max_length=500)
            yield Static(Text("↑↓ choose · Enter save · Tab note · Esc cancel", style="dim"))

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        names = [s.value for s in FinalState]
        options.highlighted = names.index(self.current) if self.current in names else 0
        options.focus()

    def _choose(self) -> None:
        index = self.query_one(OptionList).highlighted
        if index is None:
            return
        state = list(FinalState)[index]
        self.dismiss(FinalStateChoice(state, self.query_one("#final-note", Input).value.strip()))

    @on(OptionList.OptionSelected, "#final-states")
    def _selected(self) -> None:
        self._choose()

    @on(Input.Submitted, "#final-note")
    def _submitted(self) -> None:
        self._choose()
