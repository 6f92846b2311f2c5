"""Text as the TUI shows it: a patch cut down to what a reader needs on a small screen, and
messages of the shared code reworded where the TUI has a key for the command they name (or, for
a setting the TUI has no key for, where to set it)."""

from __future__ import annotations

from rich.text import Text

from sera.diff import git_header_paths

# git's header lines: on an 80x24 terminal they filled the patch pane, leaving no changed line
HEADER_PREFIXES = ("index ", "--- ", "+++ ", "similarity index ")
LINE_STYLES = (("@@", "cyan"), ("+", "green"), ("-", "red"))

# Commands and flags named by sera.agent's and sera.specialize's messages, for the CLI, and what
# does the same in the TUI.
TUI_WORDING = (
    ("Run sera solve again", "Solve the task again"),
    ("run sera solve again", "solve the task again"),
    ("(sera undo reverts the last apply)", "(press u to undo the last apply)"),
    ("(`sera runs` lists them)", "from the list"),
    ("; use agent, guided or auto", "; use agent, guided or auto: press F2 to switch"),
    # a specialize run's outcome: sera tui has no flag for these, .sera/config.toml sets them
    ("sera solve uses", "the next solve uses"),
    ("(--functions)", "(specialize.functions in .sera/config.toml)"),
    ("(--teacher)", "(specialize.teacher in .sera/config.toml)"),
    ("(--max-steps)", "(sera tui --max-steps)"),
)


def patch_view(patch: str) -> Text:
    """The patch with each file named once in bold, then its hunks coloured; git's header lines
    (diff --git, index, ---/+++) are left out. Mode, rename and binary lines stay."""
    view, in_header = Text(), False
    for line in patch.rstrip("\n").splitlines():
        named = git_header_paths(line)
        if named:
            view.append(("\n" if view else "") + named[1] + "\n", style="bold")
            in_header = True
            continue
        in_header = in_header and not line.startswith("@@")
        if in_header and line.startswith(HEADER_PREFIXES):  # a hunk's "--- x" is a changed line
            continue
        style = next((style for prefix, style in LINE_STYLES if line.startswith(prefix)), "")
        view.append(line + "\n", style=style)
    view.rstrip()
    return view


def tui_message(message: str) -> str:
    """`message` with the CLI commands that have a TUI key replaced by that key."""
    for cli, tui in TUI_WORDING:
        message = message.replace(cli, tui)
    return message
