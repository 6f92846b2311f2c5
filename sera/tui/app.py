"""`sera tui`: the terminal app (Textual). Type a task, watch the candidates run, read each
ranked patch, apply one and undo it.

    sera tui [--scaffold auto|agent|guided] [--model SPEC] [--candidates N] [--run RUN]

Keys: Enter (in the task line) solves; in the candidate list, arrows pick a candidate and show its
patch, `a` (or ctrl+y anywhere) applies it to the working tree, `u` (ctrl+z) undoes the last
apply; F2 switches the scaffold (auto, agent, guided) for the next solve; `s` (ctrl+s) starts a
specialize run of the repository with a preset picked from a list; Escape cancels a running solve
(each candidate stops after its current step) or specialize run (it stops at its next progress
tick and can be resumed); `q` (ctrl+q) quits. The letters go to the task line while it has focus,
so each action has a ctrl key too, and the footer shows the one that works where the focus is.
Solving, ranking, apply and undo are sera.agent's, specializing is sera.specialize's, shared with
the CLI and the language server; the models stay loaded between tasks (agent/session.py).
One thing runs at a time: a solve or a specialize run.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, RichLog, Static

from sera.agent.apply import apply_candidate, undo_last
from sera.agent.runs import find_run
from sera.agent.session import Session, where_code_goes
from sera.agent.solve import Candidate
from sera.agent.summary import candidate_from_record, location_lines, ordering_notes, step_line
from sera.config import load_settings
from sera.diff import changed_files
from sera.errors import SeraError
from sera.specialize.run import Cancelled, outcome, run_stages, start_run
from sera.tui.presets import DEFAULT, PresetScreen
from sera.tui.progress import SolveProgress, SpecializeProgress, StageBars
from sera.tui.wording import patch_view, tui_message

SCAFFOLDS = ("auto", "agent", "guided")
COLUMNS = ("#", "rank", "status", "score", "votes", "checks", "files")
EMPTY_TASK = ("Type a task first, e.g. \"add() returns a - b instead of a + b\", "
              "then press Enter")


class SeraApp(App, inherit_bindings=False):
    TITLE = "sera"
    CSS_PATH = "app.tcss"
    # The task line takes printable keys, and Textual leaves a key the focused widget takes out of
    # the footer: each letter has a ctrl key that works (and shows) while the task line has focus.
    # The footer shows an action's first key that works: the letter first, so the list shows
    # letters (Textual's own ctrl+q binding, inherited, would come first: hence not inherited).
    BINDINGS = [
        Binding("ctrl+c", "help_quit", show=False, system=True),
        Binding("a,ctrl+y", "apply", "Apply"),
        Binding("u,ctrl+z", "undo", "Undo"),
        Binding("f2", "scaffold", "Scaffold", priority=True),
        Binding("s,ctrl+s", "specialize", "Specialize"),
        Binding("escape", "cancel", "Cancel"),
        Binding("q,ctrl+q", "quit", "Quit"),
    ]
    # Under 30 rows (80x24) the screen is "-short": app.tcss gives the patch pane the rows there.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]

    def __init__(self, repo_root: Path, flags: dict[str, Any] | None = None,
                 run_id: str | None = None):
        super().__init__()
        self.repo_root, self.flags = repo_root, dict(flags or {})
        self.open_run = run_id
        self.session = Session()
        self.cancel: threading.Event | None = None  # set to stop the running solve or specialize
        self.busy = ""  # what runs: "a solve", "a specialize run" (one at a time)
        self.run_id: str | None = None
        self.candidates: list[Candidate] = []
        self.progress: SolveProgress | SpecializeProgress | None = None  # while something runs
        self.progress_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="Describe the task, then press Enter", id="task")
        yield DataTable(id="candidates", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="preview-box"):
            yield Static("", id="progress")  # while a solve runs: time and each candidate's state
            yield Static("No candidate yet.", id="preview")
            yield Static("", id="places")  # where a guided candidate looked, and why
        yield Static("", id="notes")
        yield RichLog(id="log", wrap=True, markup=False)  # progress, notes and errors
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#candidates", DataTable)
        table.add_columns(*COLUMNS)
        table.border_title = "candidates"
        self.query_one("#log", RichLog).border_title = "log"
        self.query_one("#progress", Static).display = False
        self._show_scaffold()
        if self.open_run:
            self.load_run(self.open_run)
        else:
            self.query_one("#task", Input).focus()

    # -----------------------------------------------------------------------------------------
    # Solving

    @on(Input.Submitted, "#task")
    def solve_task(self, event: Input.Submitted) -> None:
        if self.refused_while_busy("press Enter to solve"):
            return
        if not event.value.strip():
            self.say(EMPTY_TASK, "warning")
            return
        try:
            settings = load_settings(self.repo_root, self.flags)
        except SeraError as error:
            self.say(str(error), "error")
            return
        self.cancel, self.busy = threading.Event(), "a solve"
        self.log_line(f"solving: {event.value.strip()}")
        self._clear_candidates()
        self._show_progress(SolveProgress(self.repo_root, event.value, settings.solve.candidates,
                                          settings.agent.max_steps))
        self.run_solve(event.value, settings, self.cancel)

    def refused_while_busy(self, then: str) -> bool:
        """True, with a notification saying what runs and how to stop it, while something runs."""
        if self.cancel is None:
            return False
        resumable = " (it can be resumed later)" if self.busy == "a specialize run" else ""
        self.say(f"{self.busy} is running: wait for it to end, or press Escape to cancel "
                 f"it{resumable}; then {then}", "warning")
        return True

    @work(thread=True, exclusive=True, group="solve")
    def run_solve(self, task: str, settings, cancel: threading.Event) -> None:
        try:
            result = self.session.solve(
                self.repo_root, task, settings,
                on_step=lambda index, event: self.call_from_thread(self._stepped, index, event),
                on_note=lambda note: self.call_from_thread(self._noted, note), cancel=cancel)
        except SeraError as error:
            self.call_from_thread(self.say, str(error), "error")
            return
        finally:
            self.call_from_thread(self._work_ended)
        notes = ordering_notes(result, reranker_off=settings.rerank.reranker == "none")
        if result.sandbox_warning:
            notes.append(f"warning: {result.sandbox_warning}")
        self.call_from_thread(self.show_candidates, result.run_id, result.candidates, notes)
        if result.cancelled:
            self.call_from_thread(self.say, "cancelled: the finished work is kept in run "
                                  f"{result.run_id}", "warning")

    def _stepped(self, index: int, event) -> None:
        self.log_line(f"candidate {index} step {event.step}: {step_line(event)}")
        if self.progress is not None:
            self.progress.stepped(index, event)
            self._tick()

    def _noted(self, note: str) -> None:
        note = tui_message(note)  # a stage's note names the CLI's flags
        self.log_line(note)
        if self.progress is not None:
            self.progress.noted(note)
            self._tick()

    def _clear_candidates(self) -> None:
        """A new solve replaces the previous run's candidates."""
        self.run_id, self.candidates = None, []
        table = self.query_one("#candidates", DataTable)
        table.clear()
        table.border_title = "candidates: solving"
        self.query_one("#notes", Static).update("")

    def _show_progress(self, progress: SolveProgress | SpecializeProgress) -> None:
        """Show the progress of what runs in the patch pane instead, ticking each second."""
        self.progress = progress
        self.query_one("#preview-box").border_title = "progress"
        for name, running in (("#progress", True), ("#preview", False), ("#places", False)):
            self.query_one(name).display = running
        self._tick()
        self.progress_timer = self.set_interval(1.0, self._tick)
        self.refresh_bindings()  # Escape (cancel) shows while something runs

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress.refresh_finished()
            self.query_one("#progress", Static).update(Text(self.progress.text()))

    def _work_ended(self) -> None:
        """The solve or specialize run ended: the patch pane shows the selected candidate again
        (a specialize run keeps the candidates of the solve before it)."""
        self.cancel, self.busy, self.progress = None, "", None
        if self.progress_timer is not None:
            self.progress_timer.stop()
        self.progress_timer = None
        self.query_one("#progress", Static).display = False
        self.query_one("#preview", Static).display = True
        chosen = self.selected()
        if chosen is not None:
            self.show_patch(chosen)
        else:
            self.query_one("#preview", Static).update("No candidate yet.")
            self.query_one("#preview-box").border_title = ""
        if self.run_id is None:  # a solve that failed
            self.query_one("#candidates", DataTable).border_title = "candidates"
        self.refresh_bindings()

    def load_run(self, run_id: str) -> None:
        """Show a saved solve run (`--run`)."""
        try:
            manifest = find_run(self.repo_root, run_id)
        except SeraError as error:
            self.say(str(error), "error")
            return
        candidates = [candidate_from_record(c) for c in manifest.get("candidates", [])]
        self.query_one("#task", Input).value = manifest.get("task", "")
        self.show_candidates(manifest["id"], candidates, [])

    # -----------------------------------------------------------------------------------------
    # Specializing

    def action_specialize(self) -> None:
        if not self.refused_while_busy("press s (ctrl+s in the task line) to specialize"):
            self.push_screen(PresetScreen(self.repo_root.name), self.specialize_with)

    def specialize_with(self, preset: str | None) -> None:
        """Start a specialize run with `preset` (DEFAULT: none; None: the list was closed)."""
        if preset is None:
            return
        chosen = None if preset == DEFAULT else preset
        self.cancel, self.busy = threading.Event(), "a specialize run"
        self.log_line(f"specializing {self.repo_root.name}" +
                      (f" with the {chosen} preset" if chosen else ""))
        self._show_progress(SpecializeProgress(self.repo_root.name, chosen))
        self.run_specialize(chosen, self.cancel)

    @work(thread=True, exclusive=True, group="specialize")
    def run_specialize(self, preset: str | None, cancel: threading.Event) -> None:
        try:
            lines = self._specialize(preset, cancel)
        except Cancelled as stopped:  # its message says how to resume the run
            self.call_from_thread(self.say, str(stopped), "warning")
            return
        except SeraError as error:
            self.call_from_thread(self.say, str(error), "error")
            return
        except Exception as error:  # before the run started; uncaught, it would end the app
            self.call_from_thread(self.say, f"specialize could not start: {error!r}; run `sera "
                                  f"specialize .` in a shell to see where it fails", "error")
            return
        finally:
            self.call_from_thread(self._work_ended)
        self.call_from_thread(self._specialized, lines)

    def _specialize(self, preset: str | None, cancel: threading.Event) -> list[str]:
        """A new run of the repository with the app's settings, to its end (in the worker's
        thread); its outcome lines. A stage's error that is not sera's becomes one that names
        the run to resume."""
        run = start_run(self.repo_root, preset, dict(self.flags), {})
        try:
            run.cancel, run.say = cancel, lambda note: self.call_from_thread(self._noted, note)
            run.progress = StageBars(
                lambda bar, line: self.call_from_thread(self._bar_changed, bar, line))
            self.call_from_thread(self._specialize_started, run.dir)
            teacher = run.settings.specialize.teacher or run.settings.model.spec
            for note in (where_code_goes(teacher),
                         f"teacher {teacher}, student {run.settings.model.spec}"):
                if note:
                    run.say(note)
            try:
                run_stages(run)
            except SeraError:
                raise
            except Exception as error:
                raise SeraError(f"specialize run {run.id} failed: {error!r}; fix the cause, then "
                                f"continue it with: sera specialize --resume {run.id}") from error
        finally:
            run.close()
        return outcome(run)

    def _specialize_started(self, run_dir: Path) -> None:
        self.log_line(f"specialize run {run_dir.name}")
        if isinstance(self.progress, SpecializeProgress):
            self.progress.started_run(run_dir)
            self._tick()

    def _bar_changed(self, bar: int, line: str) -> None:
        if isinstance(self.progress, SpecializeProgress):
            self.progress.bar_changed(bar, line)
            self._tick()

    def _specialized(self, lines: list[str]) -> None:
        """The outcome in the log, line by line, and in a notification: the adapter, or why not."""
        lines = [tui_message(line) for line in lines]
        for line in lines:
            self.log_line(line)
        trained = any(line.startswith("adapter: ") for line in lines)
        what = "; ".join(lines[1:] or lines)  # the first line names the run's folder
        self.notify(f"specialized {self.repo_root.name}: {what}",
                    severity="information" if trained else "warning", timeout=15)

    # -----------------------------------------------------------------------------------------
    # Showing

    def show_candidates(self, run_id: str, candidates: list[Candidate], notes: list[str]) -> None:
        self.run_id, self.candidates = run_id, candidates
        table = self.query_one("#candidates", DataTable)
        table.clear()
        for c in candidates:
            table.add_row(*_row(c), key=str(c.index))
        table.border_title = f"candidates of run {run_id}"
        self.query_one("#preview-box").border_title = "patch"
        self.query_one("#notes", Static).update(Text("\n".join(notes)))
        if candidates:
            table.focus()
            table.move_cursor(row=0)
            self.show_patch(candidates[0])
        else:
            self.query_one("#preview", Static).update("The run has no finished candidate.")

    @on(DataTable.RowHighlighted, "#candidates")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        chosen = self.selected()
        if chosen is not None and self.progress is None:  # the pane shows a specialize's progress
            self.show_patch(chosen)

    def show_patch(self, c: Candidate) -> None:
        self.query_one("#preview-box").border_title = f"candidate {c.index}: {c.status}"
        places = self.query_one("#places", Static)
        places.update(Text("\n".join(location_lines(c))))
        places.display = bool(c.locations)
        preview = self.query_one("#preview", Static)
        if c.duplicate_of is not None:
            preview.update(Text(f"The same patch as candidate {c.duplicate_of}."))
        elif c.patch.strip():
            preview.update(patch_view(c.patch))
        else:
            preview.update(Text(f"No changes ({c.status}: {c.exit_message})."))

    def selected(self) -> Candidate | None:
        table = self.query_one("#candidates", DataTable)
        if not self.candidates or table.cursor_row is None or table.cursor_row >= len(self.candidates):
            return None
        return self.candidates[table.cursor_row]

    def log_line(self, text: str) -> None:
        self.query_one("#log", RichLog).write(Text(text))

    def say(self, message: str, severity: str = "information") -> None:
        """A notification, kept in the log too; the shared code's messages name CLI commands,
        reworded here where the TUI has a key for them."""
        message = tui_message(message)
        self.log_line(("error: " if severity == "error" else "") + message)
        self.notify(message, severity=severity, timeout=8)

    def _show_scaffold(self) -> None:
        scaffold = self.flags.get("agent.scaffold") or "auto"
        self.sub_title = f"{self.repo_root.name} · scaffold {scaffold}"
        # also under the candidates: a short terminal hides the header (app.tcss)
        self.query_one("#candidates", DataTable).border_subtitle = f"scaffold {scaffold}"

    # -----------------------------------------------------------------------------------------
    # Actions

    def action_apply(self) -> None:
        chosen = self.selected()
        if chosen is None or self.run_id is None:
            self.say("no candidate to apply: solve a task first", "warning")
            return
        try:
            applied = apply_candidate(self.repo_root, f"{self.run_id}:{chosen.index}")
        except SeraError as error:
            self.say(str(error), "error")
            return
        how = " (3-way merge with your edits)" if applied.three_way else ""
        self.say(f"applied {applied.label}{how} to {', '.join(applied.files)}; press u to undo")

    def action_undo(self) -> None:
        try:
            undone = undo_last(self.repo_root)
        except SeraError as error:
            self.say(str(error), "error")
            return
        self.say(f"undid {undone.label}: restored {', '.join(undone.files)}")

    def action_scaffold(self) -> None:
        current = self.flags.get("agent.scaffold") or "auto"
        after = SCAFFOLDS.index(current) + 1 if current in SCAFFOLDS else 0  # an unknown one: auto
        self.flags["agent.scaffold"] = SCAFFOLDS[after % len(SCAFFOLDS)]
        self._show_scaffold()
        self.say(f"scaffold for the next solve: {self.flags['agent.scaffold']}")

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Escape (cancel) is in the footer only while something runs."""
        return self.cancel is not None if action == "cancel" else True

    def action_cancel(self) -> None:
        if self.cancel is None:
            return
        self.cancel.set()
        if self.busy == "a specialize run":
            self.say("cancelling: the specialize run stops at its next progress tick", "warning")
        else:
            self.say("cancelling: each candidate stops after its current step", "warning")

    def on_unmount(self) -> None:
        if self.cancel is not None:
            self.cancel.set()
        self.session.close()


def _row(c: Candidate) -> tuple[str, ...]:
    f = c.filters

    def mark(value: Any) -> str:
        return "-" if value is None else ("ok" if value else "NO")
    checks = f"applies {mark(f.get('applies'))} parses {mark(f.get('parses'))} tests {mark(f.get('tests'))}"
    score = "-" if c.score is None else f"{c.score:.3f}"
    files = ", ".join(changed_files(c.patch)) or "-"
    if c.duplicate_of is not None:
        files = f"= #{c.duplicate_of}"
    return (str(c.index), "-" if c.rank is None else str(c.rank), c.status, score, str(c.votes),
            checks, files)


def run_app(repo_root: Path, flags: dict[str, Any], run_id: str | None = None) -> None:
    SeraApp(repo_root, flags, run_id).run()
