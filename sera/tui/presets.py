"""The budget of a specialize run started from the TUI: a short list of sera.specialize's presets,
each with what it costs, picked with the arrows and Enter (Escape starts nothing)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from sera.specialize.presets import PRESETS

DEFAULT = "default"  # no preset: the settings as they are
# What each preset costs, in the words of sera/specialize/presets.py; a preset added there without
# a line here is still listed, with its number of functions.
PRESET_NOTES = {
    DEFAULT: "your settings as they are (sera config shows them)",
    "demo": "minutes on 2 CPU cores with the small embedded model: a taste, not a good adapter",
    "laptop": "an evening on a laptop CPU with the default embedded model",
    "gpu": "a GPU and a served teacher: the scale of the SERA paper",
}


def preset_line(name: str) -> str:
    functions = PRESETS.get(name, {}).get("specialize.functions")
    parts = ([f"{functions} functions"] if functions else []) + \
        ([PRESET_NOTES[name]] if name in PRESET_NOTES else [])
    return f"{name}: {', '.join(parts)}" if parts else name


class PresetScreen(ModalScreen[str | None]):
    """Dismissed with the chosen preset's name (DEFAULT for none), or None when closed."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Back")]
    DEFAULT_CSS = """
    PresetScreen { align: center middle; }
    #presets-box { width: 90%; max-width: 100; height: auto; border: round $accent;
                   background: $surface; padding: 0 1; }
    #presets { height: auto; border: none; }
    """

    def __init__(self, repo_name: str):
        super().__init__()
        self.repo_name = repo_name

    def compose(self) -> ComposeResult:
        with Vertical(id="presets-box"):
            yield Static(f"Specialize {self.repo_name}: pick a budget; Enter starts the run, "
                         f"Escape goes back. The settings sera tui was started with (--model, "
                         f"--max-steps ...) and the scaffold (F2) win over the preset's.")
            yield OptionList(*(Option(preset_line(name), id=name)
                               for name in (DEFAULT, *PRESETS)), id="presets")

    def on_mount(self) -> None:
        self.query_one("#presets", OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
