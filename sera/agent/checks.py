"""Checks of a patch: shared by the guided scaffold (after each edit), the candidate filters of
`sera solve` (ranking.py) and the test labels of reranker self-training.

- `new_syntax_errors`: the ERROR / MISSING tree-sitter nodes an edit brought into a file (None for
  a language without a grammar here).
- `workcopy_sandbox` + `run_tests`: a test command in the sandbox of a work copy.
- `patch_applies`: whether a patch still applies to the user's working tree, the way `sera apply`
  applies it (apply.py), without touching anything.
- `check_patch`: a patch in a fresh work copy of its commit: applies there, changed files parse,
  the test command passes. `tests_pass`: the tests alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sera.agent.apply import check_apply, touched_paths
from sera.agent.sandbox import Sandbox
from sera.agent.sourcecode import LANGUAGE_BY_EXTENSION, grammar_of, tree_sitter_parser
from sera.agent.workcopy import WorkCopy, run_git
from sera.config import AgentConfig
from sera.errors import ApplyError

MAX_ERRORS_SHOWN = 5


# ---------------------------------------------------------------------------------------------
# Syntax: tree-sitter

def language_name(rel: str) -> str:
    """The language name of a path (for code fences), '' when unknown."""
    return LANGUAGE_BY_EXTENSION.get(Path(rel).suffix, ("", ""))[0]


def parser_for(rel: str):
    """A tree-sitter parser for the path's language, or None (no grammar for it here)."""
    grammar = grammar_of(rel)
    if grammar is None:
        return None
    try:
        return tree_sitter_parser(grammar)
    except ImportError:  # the grammar package is not installed: skip the check
        return None


def syntax_errors(parser, data: bytes) -> list[tuple[int, str]]:
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


def new_syntax_errors(root: Path, rel: str, before: bytes | None) -> list[str] | None:
    """Error locations (one line each, with the source line) that `root/rel` has gained over its
    content `before` (None: a new file); [] when it gained none; None when it cannot be checked
    (no grammar for its language, or the file is gone)."""
    parser = parser_for(rel)
    target = Path(root) / rel
    if parser is None or not target.is_file():
        return None
    now = target.read_bytes()
    found = syntax_errors(parser, now)
    if before is not None and len(found) <= len(syntax_errors(parser, before)):
        return []
    lines = now.decode("utf-8", "replace").split("\n")
    shown = []
    for line, kind in found[:MAX_ERRORS_SHOWN]:
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        shown.append(f"  line {line}: {kind}: {text.rstrip()}")
    if len(found) > MAX_ERRORS_SHOWN:
        shown.append(f"  ... and {len(found) - MAX_ERRORS_SHOWN} more")
    return shown


# ---------------------------------------------------------------------------------------------
# Tests: the sandbox of a work copy

def workcopy_sandbox(workcopy: WorkCopy, config: AgentConfig) -> Sandbox:
    """The sandbox commands of `workcopy` run in (config.sandbox, config.env_keep): the work copy
    and its git admin folder writable, the repository's .git visible read-only."""
    return Sandbox(workcopy.path, config.sandbox, writable=[workcopy.git_dir],
                   readonly=[workcopy.common_dir], env_keep=config.env_keep)


def run_tests(sandbox: Sandbox, command: str, config: AgentConfig) -> tuple[bool, str]:
    """(passed, output or why it failed) of `command`, within `config.command_timeout`."""
    result = sandbox.run(command, config.command_timeout, config.output_chars)
    if result.timed_out:
        return False, (f"it did not finish within {config.command_timeout:g} seconds\n"
                       f"{result.output}")
    if result.exit_code != 0:
        return False, f"exit code {result.exit_code}\n{result.output}"
    return True, result.output


# ---------------------------------------------------------------------------------------------
# Whole patches

def patch_applies(repo_root: Path, patch: str) -> tuple[bool, str]:
    """(True, "") when `sera apply` would put `patch` on the user's working tree as it is now
    (plainly or by a 3-way merge with the user's edits), else (False, why); changes nothing."""
    if not patch.strip():
        return False, "the patch is empty"
    problem = check_apply(Path(repo_root), patch)
    return (problem is None), problem or ""


@dataclass
class PatchCheck:
    applies: bool        # applies to its commit (a patch made there always does)
    parses: bool         # no changed file gained syntax errors (files without a grammar pass)
    tests: bool | None   # the test command passed; None when there is none or it was not run
    detail: str = ""     # what failed, for people: the parse errors or the test output
    broken_before: tuple[str, ...] = ()  # changed files that had syntax errors before the patch

    @property
    def ok(self) -> bool:
        return self.applies and self.parses and self.tests is not False


def check_patch(repo_root: Path, commit: str, patch: str, command: str | None,
                config: AgentConfig) -> PatchCheck:
    """Apply `patch` in a fresh work copy of `commit`, check that the changed files still parse,
    then run `command` (when given and the files parse) in the sandbox; the work copy is removed."""
    with WorkCopy.create(repo_root, commit) as workcopy:
        before, problem = _apply_in(workcopy, patch)
        if problem is not None:
            return PatchCheck(False, False, None, problem)
        errors = []
        for rel, content in before.items():
            found = new_syntax_errors(workcopy.path, rel, content)
            if found:
                errors.append(f"{rel} no longer parses:\n" + "\n".join(found))
        broken = tuple(rel for rel, content in before.items() if had_syntax_errors(rel, content))
        if errors:
            return PatchCheck(True, False, None, "\n".join(errors), broken)
        if not command:
            return PatchCheck(True, True, None, broken_before=broken)
        passed, output = run_tests(workcopy_sandbox(workcopy, config), command, config)
        return PatchCheck(True, True, passed, "" if passed else output, broken)


def had_syntax_errors(rel: str, content: bytes | None) -> bool:
    """Whether `content` of `rel` did not parse (a conflicted file, a broken one): a patch that
    leaves it no worse "parses" only as before, and the user should hear that."""
    parser = parser_for(rel)
    return parser is not None and content is not None and bool(syntax_errors(parser, content))


def tests_pass(repo_root: Path, commit: str, patch: str, command: str,
               config: AgentConfig) -> tuple[bool, str]:
    """(passed, output or why not) of `command` after applying `patch` in a fresh work copy of
    `commit`, run in the sandbox within `config.command_timeout`. A patch that does not apply
    fails."""
    with WorkCopy.create(repo_root, commit) as workcopy:
        _, problem = _apply_in(workcopy, patch)
        if problem is not None:
            return False, problem
        return run_tests(workcopy_sandbox(workcopy, config), command, config)


def _apply_in(workcopy: WorkCopy, patch: str) -> tuple[dict[str, bytes | None], str | None]:
    """Apply `patch` to the work copy: (the touched files' contents before, None), or ({}, why
    not)."""
    if not patch.strip():
        return {}, "the patch is empty"
    try:
        paths = touched_paths(workcopy.path, patch)
    except ApplyError as error:
        return {}, str(error)
    before = {rel: _read(workcopy.path / rel) for rel in paths}
    done = run_git(["apply", "--whitespace=nowarn"], workcopy.path,
                   stdin=patch.encode("utf-8", "surrogateescape"))
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["git apply failed"]
        return {}, f"the patch does not apply to {workcopy.commit[:12]}: {lines[-1]}"
    return before, None


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None
