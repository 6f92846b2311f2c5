"""The guided scaffold: the harness localizes, the model edits, the harness checks.

For small local models that answer narrow requests well but cannot drive a long tool loop. Each
model call is one narrow request:

1. Localize: `localize()` ranks functions for the task (or the caller passes `locations`); they and
   the reasons they were chosen are recorded in meta["locations"].
2. Edit: the model sees the chosen functions with line numbers and a little context and answers
   with SEARCH/REPLACE blocks (searchreplace.py), applied leniently; a block that does not apply
   goes back to the model with the error, once.
3. Check: the patch is not empty, the changed files still parse (tree-sitter: no new ERROR or
   MISSING nodes; languages without a grammar are skipped), and the test command passes when one is
   given (run in the sandbox). A failed check goes back to the model for one repair.

Outcomes in trajectory.meta as for loop.Agent: status "submitted" (checks passed, meta["patch"] is
the patch), "check_failed" (the patch is kept for inspection), "edit_failed" (no block applied),
"model_error", "interrupted", "budget_exhausted", "step_limit", "error"; plus exit_message, tokens
and seconds. The conversation is stored in the agent's message format, so it can be trained on;
every exit saves the trajectory.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from sera.agent.loop import StepEvent, ask_model, run_recorded
from sera.agent.prompts import render
from sera.agent.protocol import AgentStop, Submitted
from sera.agent.sandbox import Sandbox, clip_text
from sera.agent.searchreplace import EditError, apply_edits, parse_edits
from sera.agent.trajectory import Trajectory
from sera.agent.workcopy import WorkCopy
from sera.config import AgentConfig, ModelConfig
from sera.models.base import ChatModel, Completion

LOCATIONS = 5           # functions localized and shown
CONTEXT_LINES = 3       # lines shown before and after each function
CHARS_PER_TOKEN = 3     # code is token-dense; a cautious estimate for the code budget
MIN_CODE_CHARS = 2000
MAX_ERRORS_SHOWN = 5
PATCH_CHARS = 4000      # patch shown with a failed check


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
    def __init__(self, model: ChatModel, workcopy: WorkCopy, trajectory: Trajectory,
                 agent_config: AgentConfig, model_config: ModelConfig, adapter: str | None = None,
                 on_step: Callable[[StepEvent], None] | None = None,
                 cancel: threading.Event | None = None, test_command: str | None = None):
        self.model, self.workcopy, self.trajectory = model, workcopy, trajectory
        self.config, self.model_config, self.adapter = agent_config, model_config, adapter
        self.on_step, self.cancel = on_step, cancel
        self.test_command = test_command or None
        self.root = Path(workcopy.path)
        self._originals: dict[str, bytes | None] = {}  # file contents before the first edit
        self._changed: list[str] = []
        self._sandbox: Sandbox | None = None

    # -----------------------------------------------------------------------------------------
    # The run

    def run(self, task: str, locations: Sequence[Any] | None = None) -> Trajectory:
        """Run to the end; the trajectory's meta says how it ended (status, exit_message, patch)."""
        traj = self.trajectory
        traj.meta.setdefault("scaffold", "guided")
        traj.meta.update(task=task, model=self.model.spec, adapter=self.adapter, status="running",
                         started=time.time(), test_command=self.test_command)
        traj.messages = []
        traj.add("system", render("guided_system"))
        return run_recorded(traj, lambda: self._flow(task, locations), self._diff)

    def _flow(self, task: str, locations: Sequence[Any] | None) -> None:
        """Localize, edit, check, repair once; ends by raising Submitted or another AgentStop."""
        traj = self.trajectory
        if locations is None:
            from sera.agent.localize import localize
            locations = localize(self.root, task, limit=LOCATIONS)
        locations = list(locations)
        traj.meta["locations"] = [_location_meta(loc) for loc in locations]
        paths = list(dict.fromkeys(loc.path for loc in locations))
        default_path = paths[0] if len(paths) == 1 else None
        traj.add("user", render("guided_edit", task=task, code=self.code_view(locations)))
        traj.save()
        self.edit_round(default_path, repairing=False)
        result = self.check()
        if not result.ok:
            traj.add("user", render("guided_repair", report=result.report,
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
        """Ask for blocks and apply them; on an EditError, feed it back and ask once more."""
        for attempt in (1, 2):
            completion = self.query()
            self.trajectory.add("assistant", completion.text)
            try:
                edits = parse_edits(completion.text, default_path)
                if not edits:
                    raise EditError("the reply holds no SEARCH/REPLACE block; answer with at least "
                                    "one block in the format shown")
                self._remember_originals(edit.path for edit in edits)
                changed = apply_edits(self.root, edits, None)
            except EditError as error:
                if attempt == 2:
                    self.trajectory.save()
                    self._event(completion, str(error))
                    raise EditFailed(f"the edits did not apply: {error}") from None
                observation = render("guided_retry", error=str(error))
                self.trajectory.add("user", observation)
                self.trajectory.save()
                self._event(completion, observation)
                continue
            for rel in changed:
                if rel not in self._changed:
                    self._changed.append(rel)
            self.trajectory.meta.setdefault("edits", []).append(
                {"round": "repair" if repairing else "edit", "attempt": attempt, "files": changed})
            self.trajectory.save()
            self._event(completion, f"applied edits to {', '.join(changed) or 'no file'}")
            return

    def query(self) -> Completion:
        return ask_model(self.model, self.trajectory, self.config, self.model_config, self.adapter,
                         self.cancel, None)

    # -----------------------------------------------------------------------------------------
    # The edit request

    def code_view(self, locations: Sequence[Any]) -> str:
        """The located functions with line numbers and a few lines around, merged per file and
        clipped to `agent.code_tokens` (and at most half the room the context window leaves)."""
        budget_tokens = min(self.config.code_tokens,
                            (self.model_config.context_tokens - 3 * self.model_config.max_tokens) // 2)
        budget = max(MIN_CODE_CHARS, budget_tokens * CHARS_PER_TOKEN)
        ranges: dict[str, list[tuple[int, int, str]]] = {}
        for loc in locations:
            ranges.setdefault(loc.path, []).append((loc.start_line, loc.end_line, loc.name))
        parts: list[str] = []
        for rel, spans in ranges.items():
            try:
                lines = (self.root / rel).read_bytes().decode("utf-8", "replace").split("\n")
            except OSError:
                continue
            if lines and lines[-1] == "":
                lines.pop()
            for start, end, names in _merge(spans, len(lines)):
                header = f"{rel} (lines {start}-{end}: {names})"
                body = [f"{n:>4} | {lines[n - 1]}" for n in range(start, end + 1)]
                fence = "```" + _language_name(rel)
                block = "\n".join([header, fence, *body, "```"])
                room = budget - sum(len(p) + 2 for p in parts)
                if len(block) > room:
                    kept = body[:max(0, (room - len(header) - 60) // 60)]
                    if not kept:
                        break
                    block = "\n".join([header, fence, *kept,
                                       f"... ({len(body) - len(kept)} more lines not shown)", "```"])
                parts.append(block)
        if not parts:
            return "(no code was located for this task; name the file to change in your block)"
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
            errors = self._new_syntax_errors(rel)
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

    def _new_syntax_errors(self, rel: str) -> list[str] | None:
        """Error locations the edits brought into `rel`; None when it cannot be checked (no
        grammar for its language, or the file is gone)."""
        parser = _parser_for(rel)
        target = self.root / rel
        if parser is None or not target.is_file():
            return None
        now = target.read_bytes()
        found = _syntax_errors(parser, now)
        before = self._originals.get(rel)
        if before is not None and len(found) <= len(_syntax_errors(parser, before)):
            return []
        lines = now.decode("utf-8", "replace").split("\n")
        shown = []
        for line, kind in found[:MAX_ERRORS_SHOWN]:
            text = lines[line - 1] if 0 < line <= len(lines) else ""
            shown.append(f"  line {line}: {kind}: {text.rstrip()}")
        if len(found) > MAX_ERRORS_SHOWN:
            shown.append(f"  ... and {len(found) - MAX_ERRORS_SHOWN} more")
        return shown

    def _run_tests(self) -> tuple[bool, str]:
        if self._sandbox is None:
            self._sandbox = Sandbox(self.root, self.config.sandbox,
                                    writable=[self.workcopy.git_dir],
                                    readonly=[self.workcopy.common_dir])
            if self._sandbox.warning:
                self.trajectory.meta["sandbox_warning"] = self._sandbox.warning
        result = self._sandbox.run(self.test_command, self.config.command_timeout,
                                   self.config.output_chars)
        if result.timed_out:
            return False, (f"it did not finish within {self.config.command_timeout:g} seconds\n"
                           f"{result.output}")
        if result.exit_code != 0:
            return False, f"exit code {result.exit_code}\n{result.output}"
        return True, result.output

    # -----------------------------------------------------------------------------------------
    # Bookkeeping

    def _event(self, completion: Completion, observation: str) -> None:
        if self.on_step:
            self.on_step(StepEvent(self.trajectory.steps, None, observation, completion))

    def _diff(self) -> str:
        return self.workcopy.diff()


def _location_meta(loc: Any) -> dict[str, Any]:
    return {"path": loc.path, "name": loc.name, "start_line": loc.start_line,
            "end_line": loc.end_line, "score": loc.score, "reasons": list(loc.reasons)}


def _merge(spans: list[tuple[int, int, str]], line_count: int) -> list[tuple[int, int, str]]:
    """Ranges widened by CONTEXT_LINES, clipped to the file, overlapping ones merged (names
    joined), in file order."""
    widened = sorted((max(1, s - CONTEXT_LINES), min(line_count, e + CONTEXT_LINES), name)
                     for s, e, name in spans if s <= line_count)
    merged: list[tuple[int, int, str]] = []
    for start, end, name in widened:
        if merged and start <= merged[-1][1] + 1:
            last = merged[-1]
            names = last[2] if name in last[2].split(", ") else f"{last[2]}, {name}"
            merged[-1] = (last[0], max(last[1], end), names)
        else:
            merged.append((start, end, name))
    return merged


def _language_name(rel: str) -> str:
    from sera.agent.sourcecode import LANGUAGE_BY_EXTENSION
    return LANGUAGE_BY_EXTENSION.get(Path(rel).suffix, ("", ""))[0]


def _parser_for(rel: str):
    from sera.agent.sourcecode import grammar_of, tree_sitter_parser
    grammar = grammar_of(rel)
    if grammar is None:
        return None
    try:
        return tree_sitter_parser(grammar)
    except ImportError:  # the grammar package is not installed: skip the check
        return None


def _syntax_errors(parser, data: bytes) -> list[tuple[int, str]]:
    """(1-based line, "syntax error" | "missing X") of each ERROR or MISSING node."""
    tree = parser.parse(data)
    found: list[tuple[int, str]] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_missing:
            found.append((node.start_point[0] + 1, f"missing {node.type}"))
            continue
        if node.type == "ERROR":
            found.append((node.start_point[0] + 1, "syntax error"))
            continue
        if node.has_error:
            stack.extend(reversed(node.children))
    return sorted(found)
