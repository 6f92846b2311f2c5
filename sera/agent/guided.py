"""The guided scaffold: the harness localizes, the model edits, the harness checks.

For small local models that answer narrow requests well but cannot drive a long tool loop. Each
model call is one narrow request:

1. Localize: `candidate_view()` (localize.py) picks this candidate's view of the ranked functions
   (or the caller passes `locations`); they and the reasons they were chosen are recorded in
   meta["locations"], the view in meta["localization"]. With `agent.choose_locations` the model
   first picks, in one short request, which of them to edit (meta["location_choice"]; an answer
   that names no offered location keeps the ranked view).
2. Edit: the model sees the chosen functions with line numbers and a little context and answers
   with SEARCH/REPLACE blocks (searchreplace.py), applied leniently; the blocks that apply are
   kept, and one that does not goes back to the model with the error, once (meta["edits"] counts
   each reply's failed blocks).
3. Check: the patch is not empty, the changed files still parse (tree-sitter: no new ERROR or
   MISSING nodes; languages without a grammar are skipped), and the test command passes when one is
   given (run in the sandbox). A failed check goes back to the model for one repair.

Outcomes in trajectory.meta as for loop.Agent: status "submitted" (checks passed, meta["patch"] is
the patch), "check_failed" (the patch is kept for inspection), "edit_failed" (the edit round
changed no file), "model_error", "interrupted", "budget_exhausted", "step_limit", "error"; plus
exit_message, tokens and seconds. The conversation is stored in the agent's message format, so it
can be trained on; every exit saves the trajectory.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from sera.agent.checks import language_name, new_syntax_errors, run_tests
from sera.agent.example import COPIED, copies_the_example, example_messages
from sera.agent.localize import candidate_view
from sera.agent.loop import StepEvent, ask_model, run_recorded
from sera.agent.prompts import render
from sera.agent.protocol import AgentStop, Submitted
from sera.agent.rewrite import function_edits
from sera.agent.sandbox import clip_text
from sera.agent.searchreplace import (SEARCH_MARK, Edit, EditError, SearchNotFound,
                                      apply_what_applies, numbered_rewrite_edits, parse_edits)
from sera.agent.tools import ToolEnvironment
from sera.agent.trajectory import TestRun, Trajectory
from sera.agent.views import function_block, located_view, view_lines
from sera.config import AgentConfig, ModelConfig
from sera.diff import digest
from sera.errors import SeraError
from sera.models.base import ChatModel, Completion

LOCATIONS = 5           # functions localized and shown
CHARS_PER_TOKEN = 3     # code is token-dense; a cautious estimate for the code budget
MIN_CODE_CHARS = 2000
PATCH_CHARS = 4000      # patch shown with a failed check
CHOICE_TOKENS = 24      # most tokens of the answer to the location choice (numbers only)
SKELETON_MARGIN_TOKENS = 64  # reply room beyond the ready block's function (path, markers)
# The templates of each edit format (agent.edit_format): SEARCH/REPLACE blocks, or whole functions
# written back (rewrite.py).
PROMPTS = {
    "blocks": {"system": "guided_system", "edit": "guided_edit", "chosen": "guided_edit_chosen",
               "retry": "guided_retry", "repair": "guided_repair"},
    "functions": {"system": "guided_system_functions", "edit": "guided_edit_functions",
                  "chosen": "guided_edit_chosen_functions", "retry": "guided_retry_functions",
                  "repair": "guided_repair_functions"},
}


class NoBlock(EditError):
    """The reply holds no block of its own: none at all, or the instructions' example copied."""


class CheckFailed(AgentStop):
    """The patch did not pass the checks after the repair attempt."""

    status = "check_failed"


class EditFailed(AgentStop):
    """The model's blocks did not apply, also after the retry."""

    status = "edit_failed"


@dataclass
class CheckResult:
    ok: bool
    report: str          # for the model: what failed and how, or "all checks passed"
    checks: list[dict[str, Any]]  # for meta: name, ok, detail


class GuidedAgent:
    def __init__(self, model: ChatModel, env: ToolEnvironment, trajectory: Trajectory,
                 agent_config: AgentConfig, model_config: ModelConfig, adapter: str | None = None,
                 on_step: Callable[[StepEvent], None] | None = None,
                 cancel: threading.Event | None = None, test_command: str | None = None,
                 candidate: int = 0):
        # The environment both scaffolds share: the work copy, its sandbox (tests run in it) and
        # the sandbox's warning, which rollout reports for either scaffold.
        self.model, self.env, self.trajectory = model, env, trajectory
        self.workcopy = env.workcopy
        self.candidate = candidate  # which view of the localization this candidate gets
        self.config, self.model_config, self.adapter = agent_config, model_config, adapter
        self.on_step, self.cancel = on_step, cancel
        self.test_command = test_command or None
        self.root = Path(env.workcopy.path)
        self._originals: dict[str, bytes | None] = {}  # file contents before the first edit
        self._changed: list[str] = []
        self.skeleton: tuple[str, str] | None = None  # (what, block) for a retry; see edit_round
        if agent_config.edit_format not in PROMPTS:
            raise SeraError(f"agent.edit_format = {agent_config.edit_format!r} is not valid; use "
                            f"one of: {', '.join(PROMPTS)}")
        self.format = agent_config.edit_format
        self.prompts = PROMPTS[self.format]
        self.shown: list[Any] = []  # the functions the edit request shows

    # -----------------------------------------------------------------------------------------
    # The run

    def run(self, task: str, locations: Sequence[Any] | None = None) -> Trajectory:
        """Run to the end; the trajectory's meta says how it ended (status, exit_message, patch)."""
        traj = self.trajectory
        traj.meta.setdefault("scaffold", "guided")
        traj.meta.update(task=task, model=self.model.spec, adapter=self.adapter, status="running",
                         started=time.time(), test_command=self.test_command,
                         edit_format=self.format)
        traj.messages = opening(self.format)
        return run_recorded(traj, lambda: self._flow(task, locations), self._diff)

    def _flow(self, task: str, locations: Sequence[Any] | None) -> None:
        """Localize, edit, check, repair once; ends by raising Submitted or another AgentStop."""
        traj = self.trajectory
        locations = self.locate(task, locations)
        chosen = self.config.choose_locations and len(locations) > 1
        if chosen:
            locations = self.choose(task, locations)
        traj.meta["locations"] = [_location_meta(loc) for loc in locations]
        self.shown = list(locations)
        if self.format == "blocks":
            self.prepare_skeleton(locations)
        paths = list(dict.fromkeys(loc.path for loc in locations))
        default_path = paths[0] if len(paths) == 1 else None
        view = self.code_view(locations) if self.format == "blocks" else \
            self.function_view(locations)
        if chosen:
            traj.add("user", render(self.prompts["chosen"], code=view))
        else:
            traj.add("user", render(self.prompts["edit"], task=task, code=view))
        traj.save()
        self.edit_round(default_path, repairing=False)
        result = self.check()
        if not result.ok:
            traj.add("user", render(self.prompts["repair"], report=result.report,
                                    patch=clip_text(self._diff(), PATCH_CHARS)))
            traj.save()
            try:
                self.edit_round(default_path, repairing=True)
            except EditFailed as failed:
                raise CheckFailed(f"{result.report}\nThe repair did not apply: {failed}") from None
            result = self.check()
            if not result.ok:
                raise CheckFailed(result.report)
        raise Submitted(self._diff())

    def edit_round(self, default_path: str | None, repairing: bool) -> None:
        """Ask for blocks and apply those that apply; when a block failed, feed its error back
        and ask once more (after blocks that applied: for the failed ones only). A reply without
        a usable block gets, for the retry, a block whose SEARCH part already holds the first
        located function (`self.skeleton`), to be answered with its REPLACE part fixed. Raises
        EditFailed when the round changed no file."""
        landed: list[str] = []
        for attempt in (1, 2):
            completion = self.query()
            self.trajectory.add("assistant", completion.text)
            try:
                changed, failed = self._apply_reply(completion.text, default_path)
            except EditError as error:
                changed, failed = [], [error]
            self._record(changed, attempt, repairing, failed)
            landed += changed
            if not failed:
                self._event(completion, f"applied edits to {', '.join(changed) or 'no file'}")
                return
            error = failed[0]
            if completion.finish_reason == "length":  # small models explain at length
                # The same error (its kind and fields, e.g. the closest lines), told more.
                error.args = (f"{error}. Your reply reached the length limit before the "
                              f"blocks were complete: answer with the blocks only, without "
                              f"an explanation",)
            if attempt == 2:
                self._event(completion, str(error))
                if landed:
                    return  # what applied stays; the check judges it
                raise EditFailed(f"the edits did not apply: {error}")
            observation = _applied_note(changed, len(failed)) + self._retry_request(error)
            self.trajectory.add("user", observation)
            self.trajectory.save()
            self._event(completion, observation)

    def _apply_reply(self, text: str, default_path: str | None) -> tuple[list[str], list[EditError]]:
        """Apply the reply's blocks that apply: the files they changed, and the errors of the
        blocks that did not (raises EditError when the reply cannot be read as edits)."""
        edits = self.read_edits(text, default_path)
        # The shown files too: a block may land in another shown file than the one it names.
        self._remember_originals([*(edit.path for edit in edits),
                                  *(loc.path for loc in self.shown)])
        applied = apply_what_applies(self.root, edits, focus=self._focus())
        return applied.changed, [error for _, error in applied.failed]

    def _record(self, changed: list[str], attempt: int, repairing: bool,
                failed: list[EditError]) -> None:
        for rel in changed:
            if rel not in self._changed:
                self._changed.append(rel)
        if changed or not failed:
            self.trajectory.meta.setdefault("edits", []).append(
                {"round": "repair" if repairing else "edit", "attempt": attempt,
                 "files": changed, "failed_blocks": len(failed)})
        self.trajectory.save()

    def _focus(self) -> dict[str, set[str]]:
        """Path -> names of the functions shown: where an ambiguous SEARCH part is meant."""
        focus: dict[str, set[str]] = {}
        for loc in self.shown:
            focus.setdefault(loc.path, set()).add(loc.name)
        return focus

    def read_edits(self, text: str, default_path: str | None) -> list[Edit]:
        """The edits a reply asks for, in the edit format. Asked for whole functions, a reply may
        also hold SEARCH/REPLACE blocks (for lines outside a function): both are read."""
        if self.format == "functions":
            has_blocks = any(SEARCH_MARK.match(line) for line in text.split("\n"))
            edits = (parse_edits(text, default_path) if has_blocks else []) + \
                function_edits(self.root, text, self.shown)
            if not edits:
                raise NoBlock("the reply holds no function in a fenced code block; answer with "
                              "the whole function you change, in the form shown")
            return edits
        edits = parse_edits(text, default_path) or numbered_rewrite_edits(self.root, text)
        if not edits:
            raise NoBlock("the reply holds no SEARCH/REPLACE block; answer with at least "
                          "one block in the format shown")
        _refuse_copied_example(self.root, edits)
        return edits

    def _retry_request(self, error: EditError) -> str:
        """The retry's request: a reply without a block gets a ready block of the first located
        function, a SEARCH part not in the file a ready block of the file's closest lines (small
        models copy a given block far more reliably than they copy code from the view); other
        errors are shown as they are."""
        if isinstance(error, NoBlock) and self.skeleton is not None:
            name, block = self.skeleton
            self.trajectory.meta["skeleton"] = name
            return render("guided_skeleton", error=str(error), function=name, block=block)
        if (isinstance(error, SearchNotFound) and error.closest and self.format == "blocks"
                and self._fits_reply(error.closest)):
            self.trajectory.meta.setdefault("closest_block", []).append(error.path)
            block = Edit(error.path, error.closest, error.closest).render(language_name(error.path))
            return render("guided_closest", error=str(error), path=error.path, block=block)
        return render(self.prompts["retry"], error=str(error))

    def _fits_reply(self, lines: Sequence[str]) -> bool:
        """Whether a block repeating `lines` twice (SEARCH and REPLACE) fits the reply limit."""
        tokens = sum(len(line) + 1 for line in lines) // CHARS_PER_TOKEN
        return 2 * tokens + SKELETON_MARGIN_TOKENS <= self.model_config.max_tokens

    def prepare_skeleton(self, locations: Sequence[Any]) -> None:
        """The retry's ready block for the first located function; None when answering it (the
        function again, changed) would not fit the reply limit (model.max_tokens)."""
        self.skeleton = None
        if not locations:
            return
        loc = locations[0]
        try:
            lines = (self.root / loc.path).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            return
        body = tuple(lines[loc.start_line - 1:loc.end_line])
        if not body or not self._fits_reply(body):  # the answer repeats it in REPLACE
            return
        self.skeleton = (f"{loc.name} in {loc.path}",
                         Edit(loc.path, body, body).render(language_name(loc.path)))

    def query(self) -> Completion:
        return ask_model(self.model, self.trajectory, self.config, self.model_config, self.adapter,
                         self.cancel, None)

    # -----------------------------------------------------------------------------------------
    # Where to edit

    def locate(self, task: str, given: Sequence[Any] | None) -> list[Any]:
        """The caller's locations, else this candidate's view of the localizer's ranking."""
        if given is not None:
            self.trajectory.meta["localization"] = {"candidate": self.candidate, "variant": "given"}
            return list(given)
        view = candidate_view(self.root, task, self.candidate, LOCATIONS)
        self.trajectory.meta["localization"] = view.meta(self.candidate)
        return view.locations

    def choose(self, task: str, locations: list[Any]) -> list[Any]:
        """One short request: which of the numbered locations to edit. The chosen ones, in the
        model's order; the ranked list when the answer names none of them (reason in meta)."""
        traj = self.trajectory
        options = "\n".join(f"{n}. {loc.path}, lines {loc.start_line}-{loc.end_line}: {loc.name}\n"
                            f"   {self._first_line(loc)}" for n, loc in enumerate(locations, 1))
        traj.add("user", render("guided_choose", task=task, options=options))
        traj.save()
        limits = replace(self.model_config,
                         max_tokens=min(CHOICE_TOKENS, self.model_config.max_tokens))
        completion = ask_model(self.model, traj, self.config, limits, self.adapter, self.cancel,
                               None)
        traj.add("assistant", completion.text)
        numbers, problem = parse_choice(completion.text, len(locations))
        traj.meta["location_choice"] = {
            "offered": [f"{loc.path}:{loc.name}" for loc in locations], "chosen": numbers,
            "fallback": problem}
        traj.save()
        if problem:
            self._event(completion, f"kept the ranked locations: {problem}")
            return locations
        picked = [locations[n - 1] for n in numbers]
        self._event(completion, "chose " + ", ".join(f"{loc.path}:{loc.name}" for loc in picked))
        return picked

    def _first_line(self, loc: Any) -> str:
        try:
            with open(self.root / loc.path, encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, 1):
                    if number == loc.start_line:
                        return line.strip()[:120]
        except OSError:
            pass
        return ""

    # -----------------------------------------------------------------------------------------
    # The edit request

    def code_view(self, locations: Sequence[Any]) -> str:
        """The located functions with line numbers and a few lines around, merged per file and
        clipped to `code_budget` (views.located_view)."""
        files = {}
        for rel in dict.fromkeys(loc.path for loc in locations):
            try:
                files[rel] = view_lines((self.root / rel).read_bytes().decode("utf-8", "replace"))
            except OSError:
                continue
        return located_view(files, locations, self.code_budget()) or \
            "(no code was located for this task; name the file to change in your block)"

    def code_budget(self) -> int:
        """Characters of code a request may show: `agent.code_tokens`, and at most half the room
        the context window leaves beside the replies."""
        budget_tokens = min(self.config.code_tokens,
                            (self.model_config.context_tokens - 3 * self.model_config.max_tokens) // 2)
        return max(MIN_CODE_CHARS, budget_tokens * CHARS_PER_TOKEN)

    def function_view(self, locations: Sequence[Any]) -> str:
        """The located functions, whole and without line numbers (the model writes them back),
        each under its path and name, in rank order, within the same budget as code_view; a
        function too long to be written back within the reply limit (model.max_tokens) is left
        out: its answer would be cut."""
        budget = self.code_budget()
        parts: list[str] = []
        for loc in locations:
            try:
                lines = (self.root / loc.path).read_bytes().decode("utf-8", "replace").split("\n")
            except OSError:
                continue
            first = loc.start_line
            while first > 1 and lines[first - 2].lstrip().startswith("@"):
                first -= 1  # decorators belong to the function written back
            body = "\n".join(lines[first - 1:loc.end_line])
            block = function_block(loc.path, loc.name, body)
            too_long = len(body) // CHARS_PER_TOKEN + SKELETON_MARGIN_TOKENS > \
                self.model_config.max_tokens
            if too_long or sum(len(p) + 2 for p in parts) + len(block) > budget:
                continue  # too long to show or to write back whole: a shorter one may fit
            parts.append(block)
        if not parts:
            return "(no function was located for this task that fits; name the file to change)"
        return "\n\n".join(parts)

    # -----------------------------------------------------------------------------------------
    # Checks

    def check(self) -> CheckResult:
        checks: list[dict[str, Any]] = []
        problems: list[str] = []
        patch = self._diff()
        checks.append({"name": "patch", "ok": bool(patch.strip())})
        if not patch.strip():
            problems.append("The edits left the code unchanged: the patch is empty. Change the "
                            "code so that it does what the task asks.")
        for rel in self._changed:
            errors = new_syntax_errors(self.root, rel, self._originals.get(rel))
            if errors is None:
                continue
            checks.append({"name": f"parse {rel}", "ok": not errors,
                           "detail": "\n".join(errors)})
            if errors:
                problems.append(f"{rel} no longer parses:\n" + "\n".join(errors))
        if self.test_command and not problems:
            ok, detail = self._run_tests()
            checks.append({"name": "tests", "ok": ok, "command": self.test_command,
                           "detail": detail if not ok else ""})
            self.trajectory.meta["tests"] = TestRun(command=self.test_command, patch=digest(patch),
                                                    ok=ok, detail=detail if not ok else "")
            if not ok:
                problems.append(f"The test command `{self.test_command}` failed:\n{detail}")
        self.trajectory.meta.setdefault("checks", []).append(checks)
        self.trajectory.save()
        if problems:
            return CheckResult(False, "\n\n".join(problems), checks)
        return CheckResult(True, "all checks passed", checks)

    def _remember_originals(self, paths) -> None:
        for path in paths:
            try:
                target = (self.root / path).resolve()
                rel = target.relative_to(self.root.resolve()).as_posix()
            except (ValueError, OSError, RuntimeError):
                continue  # apply_edits refuses it with a message
            if rel not in self._originals:
                try:
                    self._originals[rel] = target.read_bytes() if target.is_file() else None
                except OSError:
                    self._originals[rel] = None

    def _run_tests(self) -> tuple[bool, str]:
        return run_tests(self.env.sandbox, self.test_command, self.config)

    # -----------------------------------------------------------------------------------------
    # Bookkeeping

    def _event(self, completion: Completion, observation: str) -> None:
        if self.on_step:
            self.on_step(StepEvent(self.trajectory.steps, None, observation, completion))

    def _diff(self) -> str:
        return self.workcopy.diff()


CHOICE_NUMBER = re.compile(r"(?<![\w.:/-])(\d{1,3})(?![\w:/-]|\.\d)")  # not 1-3, x.py:3, 2.5


def _applied_note(changed: list[str], failed: int) -> str:
    """The retry's first words: which blocks of the reply applied (not to be sent again), and
    how many did not when that is more than the one error that follows."""
    if not changed:
        return f"None of the {failed} blocks of your reply applied.\n\n" if failed > 1 else ""
    others = "One block" if failed == 1 else f"{failed} blocks"
    return (f"Your blocks for {', '.join(changed)} were applied: they are in the files now, do "
            f"not send them again. {others} did not apply; send {'it' if failed == 1 else 'them'} "
            f"again, corrected.\n\n")


def parse_choice(answer: str, count: int) -> tuple[list[int], str | None]:
    """The location numbers (1..count) an answer names, in its order, without repeats; or [] and
    why the answer is no choice. Line ranges, `file:line` and decimals are not read as numbers;
    numbers out of range are ignored unless nothing else is named."""
    if re.search(r"^\s*(<{5,}|>{5,})", answer, re.MULTILINE):
        return [], "the answer holds SEARCH/REPLACE blocks instead of location numbers"
    named = [int(m) for m in CHOICE_NUMBER.findall(answer)]
    if not named:
        return [], "the answer names no location number"
    valid = [n for n in dict.fromkeys(named) if 1 <= n <= count]
    if not valid:
        return [], (f"the answer names {', '.join(map(str, dict.fromkeys(named)))}, but the "
                    f"locations were numbered 1 to {count}")
    return valid, None


def _location_meta(loc: Any) -> dict[str, Any]:
    return {"path": loc.path, "name": loc.name, "start_line": loc.start_line,
            "end_line": loc.end_line, "score": loc.score, "reasons": list(loc.reasons)}


def opening(edit_format: str) -> list[dict[str, Any]]:
    """How every guided conversation in `edit_format` begins, in solve and in training rows: the
    system prompt, then the worked example (example.py)."""
    prompts = PROMPTS[edit_format]
    return [{"role": "system", "content": render(prompts["system"])},
            *example_messages(edit_format, prompts["edit"])]


def _refuse_copied_example(root: Path, edits: Sequence[Any]) -> None:
    if any(copies_the_example(root, edit.path, edit.search) for edit in edits):
        raise NoBlock(COPIED)

