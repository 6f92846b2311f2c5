"""History mining on a real repository: which commits become tasks, the date split, and
reconstructed trajectories that parse and make exactly the commit's change."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import GIT_IDENTITY
from sera.agent.editor import Editor
from sera.agent.loop import system_prompt
from sera.agent.parse import parse_reply
from sera.agent.prompts import render
from sera.specialize import mining as history_module
from sera.specialize.mining import (HistoryTask, _edit_blocks, _lines, _replay_edits,
                                     is_test_path, mine_history, reconstruct_trajectory,
                                     split_by_date)
from sera.diff import changed_lines

START = 1_700_000_000
CALC = "def add(a, b):\n    return a - b\n\n\ndef scale(values, factor):\n    return values\n"
LOOKUP = ("def find(items, key):\n    for item in items:\n        if item == key:\n"
          "            return None\n    return None\n\n\ndef first(items):\n"
          "    if not items:\n        return None\n    return None\n")
LEGACY = "OLD_NAME = 'legacy'\n\n\ndef legacy():\n    return OLD_NAME\n"
SQL = "-- old comment\nselect 1;\n"
UTIL = "".join(f"def tidy_{n}(text):\n    return text.strip()\n\n\n" for n in range(4))
BAT = "@echo off\r\necho helo\r\nrem a\r\nrem b\r\nrem c\r\nrem d\r\nexit\r\n"
REPORT = "".join(f"def helper_{n}(value):\n    return value + {n}\n\n\n" for n in range(25))


class History:
    """A repository built commit by commit with increasing committer dates."""

    def __init__(self, root: Path) -> None:
        self.root, self.date, self.commits = root, START, {}
        root.mkdir()
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        when = f"@{self.date} +0000"
        env = {**os.environ, **GIT_IDENTITY, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
        return subprocess.run(["git", *args], cwd=self.root, env=env, check=True,
                              capture_output=True).stdout.decode()

    def write(self, path: str, content: str | bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        target.write_bytes(content)

    def commit(self, name: str, message: str, *extra: str) -> str:
        self.date += 100
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message, *extra)
        self.commits[name] = self.git("rev-parse", "HEAD").strip()
        return self.commits[name]


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> History:
    repo = History(tmp_path_factory.mktemp("history") / "project")
    for path, content in {"calc.py": CALC, "lookup.py": LOOKUP, "legacy.py": LEGACY,
                          "util.py": UTIL,
                          "notes.sql": SQL, "run.sh": "echo run\n", "ratio.txt": "1.0\n",
                          "hello.bat": BAT, "data/logo.png": b"\x89PNG\0\1",
                          "docs/na\u00efve caf\u00e9.txt": "one\n", "latin.txt": b"caf\xe9\n",
                          "tests/test_calc.py": "def test_add():\n    pass\n"}.items():
        repo.write(path, content)
    repo.commit("root", "Initial import of the project")
    repo.write("calc.py", CALC.replace("a - b", "a + b"))
    repo.commit("fix", "Fix add so that it returns the sum\n\nIt subtracted before.")
    repo.write("report.py", REPORT)
    repo.commit("big", "Add a large report module with many helpers")
    repo.write("tests/test_calc.py", "def test_add():\n    assert True\n")
    repo.commit("tests_only", "Cover add with a real assertion")
    repo.git("checkout", "-q", "-b", "side")
    repo.write("util.py", UTIL.replace("strip()", "strip().lower()"))
    repo.commit("side", "Lower-case the tidied text on the side branch")
    repo.git("checkout", "-q", "main")
    repo.date += 100
    repo.git("merge", "-q", "--no-ff", "-m", "Merge branch 'side' into main", "side")
    repo.git("mv", "util.py", "helpers.py")
    repo.write("helpers.py", UTIL.replace("strip()", "strip().lower()") + "# tidy helpers\n")
    repo.commit("rename", "Rename util to helpers and comment tidy")
    repo.write("calc.py", CALC.replace("a - b", "a + b").replace("values\n", "values  \n"))
    repo.commit("wip", "wip")
    scale = "def scale(values, factor):"
    repo.write("calc.py", CALC.replace("a - b", "a + b").replace("values\n", "values  \n")
               .replace(scale, "def sub(a, b):\n    return a - b\n\n\n" + scale))
    repo.commit("insert", "Insert a subtract helper between add and scale")
    repo.write("lookup.py", LOOKUP[:-len("    return None\n")] + "    return items[0]\n")
    repo.commit("unique", "Return the first item instead of None in first()")
    repo.write("constants.py", "DEFAULT_FACTOR = 2\n")
    repo.commit("create", "Add a constants module for the defaults")
    (repo.root / "legacy.py").unlink()
    repo.commit("delete", "Remove the obsolete legacy module entirely")
    repo.write("notes.sql", "-- new comment\nselect 2;\n")
    repo.commit("sql", "Update the SQL comment and the query")
    multiplied = "return [v * factor for v in values]\n"
    calc = (repo.root / "calc.py").read_text()
    repo.write("calc.py", calc.replace("return values  \n", multiplied))
    repo.write("tests/test_calc.py", "def test_scale():\n    assert True\n")
    repo.write("releasenotes/notes/scale-multiplies-3f2a.yaml", "fixes:\n  - scale multiplies\n")
    repo.write("CHANGES.md", "- scale multiplies\n")
    repo.commit("mixed", "Make scale multiply and test it\n\nIt returned the values unchanged.\n\n"
                         "---------\n\nCo-authored-by: A Bot <bot@example.com>\n"
                         "Signed-off-by: A Developer\n <dev@example.com>\n\nChange-Id: I0123")
    repo.write("data/logo.png", b"\x89PNG\0\2")
    repo.commit("binary", "Replace the logo with a new image file")
    repo.write("run.sh", "echo running\n")
    (repo.root / "run.sh").chmod(0o755)
    repo.commit("mode", "Make the run script executable and verbose")
    repo.write("ratio.txt", "1.1")
    repo.commit("no_newline", "Raise the ratio to 1.1 without a final newline")
    repo.write("hello.bat", BAT.replace("helo", "hello").replace("exit", "echo bye\r\nexit"))
    repo.commit("crlf", "Fix the greeting typo in the batch file")
    repo.write("docs/na\u00efve caf\u00e9.txt", "one\ntwo\n")
    repo.commit("unicode", "Add a second line to the accented notes file")
    repo.write("latin.txt", b"caf\xe9s\n")
    repo.commit("latin1", "Pluralize the word in the Latin-1 file")
    return repo


MINED = ["unicode", "crlf", "no_newline", "mixed", "sql", "delete", "create", "unique", "insert",
         "fix"]


@pytest.fixture(scope="module")
def tasks(history) -> list[HistoryTask]:
    return mine_history(history.root)


def test_small_replayable_commits_with_real_messages_are_mined_newest_first(history, tasks):
    names = {sha: name for name, sha in history.commits.items()}
    assert [names[task.commit] for task in tasks] == MINED
    fix = tasks[-1]
    assert fix.parent == history.commits["root"]
    assert fix.message == "Fix add so that it returns the sum\n\nIt subtracted before."
    assert fix.date == START + 200 and fix.files == ["calc.py"]
    assert changed_lines(fix.patch) == ["-    return a - b", "+    return a + b"]
    mixed = next(task for task in tasks if task.commit == history.commits["mixed"])
    assert mixed.message == "Make scale multiply and test it\n\nIt returned the values unchanged."


@pytest.mark.parametrize("message, text", [
    ("Fix x\n\nSigned-off-by: A <a@b.c>", "Fix x"),
    ("Fix x\n\nNote: it failed on y.\nCo-authored-by: A <a@b.c>",  # a paragraph with words
     "Fix x\n\nNote: it failed on y.\nCo-authored-by: A <a@b.c>"),
    ("Fix x\n\nFixes #12", "Fix x\n\nFixes #12"),  # no trailer: the issue it names is a word
    ("Change-Id: I1", "Change-Id: I1"),  # the subject always stays
])
def test_trailers_are_no_part_of_the_task(message, text):
    assert history_module.task_text(message) == text


def test_the_reference_patch_leaves_out_test_files_release_notes_and_changelogs(tasks):
    mixed = tasks[MINED.index("mixed")]
    assert mixed.files == ["calc.py"]
    assert "tests/test_calc.py" not in mixed.patch and "diff --git a/calc.py" in mixed.patch
    assert "releasenotes" not in mixed.patch and "CHANGES.md" not in mixed.patch


def test_reference_patches_are_what_git_diff_gives_for_the_non_test_files(history, tasks):
    for task in tasks:
        assert task.patch == history.git("diff", "--binary", task.parent, task.commit, "--",
                                         *task.files)


def test_a_batch_output_that_cannot_be_split_falls_back_to_one_diff_per_commit(
        history, tasks, monkeypatch):
    monkeypatch.setattr(history_module, "_commit_patches",
                        lambda root, entries: [None] * len(entries))
    assert mine_history(history.root) == tasks


def test_limits_on_size_and_count(history, tasks):
    bigger = mine_history(history.root, max_changed_lines=100)
    assert history.commits["big"] in [task.commit for task in bigger]
    assert mine_history(history.root, limit=2) == tasks[:2]
    assert [t.commit for t in mine_history(history.root, max_commits=3)] == [
        t.commit for t in tasks[:2]]


def test_no_history_means_no_tasks(tmp_path):
    repo = History(tmp_path / "empty")
    assert mine_history(repo.root) == []
    repo.write("a.py", "x = 1\n")
    repo.commit("root", "Initial import of the project")
    assert mine_history(repo.root) == []


def test_the_newest_commits_are_held_out(tasks):
    train, heldout = split_by_date(tasks)
    assert [t.commit for t in heldout] == [tasks[1].commit, tasks[0].commit]
    assert [t.commit for t in train] == [t.commit for t in reversed(tasks[2:])]
    assert max(t.date for t in train) < min(t.date for t in heldout)
    assert len(split_by_date(tasks[:3])[1]) == 1  # at least one held out
    assert split_by_date(tasks[:1]) == ([], tasks[:1])
    assert split_by_date([]) == ([], [])
    assert len(split_by_date(tasks, heldout_fraction=0.5, min_heldout=0)[1]) == len(tasks) // 2


VERSION_PATCH = ('diff --git a/pkg/__init__.py b/pkg/__init__.py\n--- a/pkg/__init__.py\n'
                 '+++ b/pkg/__init__.py\n@@ -1 +1 @@\n-__version__ = "1.0"\n+__version__ = "1.1"\n')
CODE_PATCH = ('diff --git a/pkg/core.py b/pkg/core.py\n--- a/pkg/core.py\n+++ b/pkg/core.py\n'
              '@@ -1 +1 @@\n-    return a - b\n+    return a + b\n')


@pytest.mark.parametrize("message, files, patch, chore", [
    ("Release v7.0.6.", ["pkg/core.py"], CODE_PATCH, True),
    ("Bump version: 10.5.0 → 10.6.0", ["pkg/__init__.py"], VERSION_PATCH, True),
    ("chore(deps): bump actions/checkout from 3 to 4", ["pkg/core.py"], CODE_PATCH, True),
    ("[pre-commit.ci] pre-commit autoupdate", ["pkg/core.py"], CODE_PATCH, True),
    ("Update dependency mypy to v2 (#323)", ["requirements-mypy.txt"], "", True),
    ("Add 2.4.0 change log", ["CHANGELOG.md"], "", True),
    ("Describe the fix", ["releasenotes/notes/fix-a.yaml"], "", True),
    ("Set the version for the next cycle", ["pkg/__init__.py"], VERSION_PATCH, True),
    ("Test on the new runner", [".github/workflows/ci.yml"], "", True),
    ("Fix add: it subtracted", ["pkg/core.py"], CODE_PATCH, False),
    ("Fix the rounding (#329)", ["CHANGELOG.md", "pkg/core.py"], CODE_PATCH, False),
    ("Update sized_iter for merging", ["pkg/core.py"], CODE_PATCH, False),
    ("Release the lock before returning", ["pkg/core.py"], CODE_PATCH, True),
])
def test_chores_are_no_tasks(message, files, patch, chore):
    """Releases, version bumps, changelogs and dependency or CI updates teach nothing about the
    code. (A subject that starts with "Release" is read as a release, even when it is not.)"""
    assert history_module.is_chore(message, files, patch) is chore


@pytest.mark.parametrize("path, expected", [
    ("tests/test_calc.py", True), ("pkg/test/helpers.py", True), ("src/__tests__/a.js", True),
    ("spec/models.rb", True), ("Tests/Unit.cs", True), ("test_calc.py", True),
    ("calc_test.go", True), ("button.test.tsx", True), ("api.spec.ts", True),
    ("src/main/FooTest.java", True), ("calc.py", False), ("testing/conftest_like.py", True),
    ("contest.py", False), ("latest.py", False), ("src/attest/check.py", False)])
def test_test_paths(path, expected):
    assert is_test_path(path) is expected


def tools_used(trajectory) -> list[str]:
    used = []
    for message in trajectory.messages:
        if message["role"] == "assistant":
            call, _ = parse_reply(message["content"])
            used.append(call.arguments.get("command", "") if call.name == "str_replace_editor"
                        else call.name)
    return used


def test_reconstructed_trajectories_parse_and_reproduce_the_commit(history, tasks):
    for task in tasks:
        trajectory = reconstruct_trajectory(history.root, task)
        assert trajectory is not None, task.message
        messages = trajectory.messages
        assert messages[0] == {"role": "system", "content": system_prompt()}
        assert messages[1] == {"role": "user", "content": render("task", task=task.message)}
        roles = [m["role"] for m in messages[2:]]
        assert roles == ["assistant", "user"] * (len(roles) // 2) + ["assistant"]
        for message in messages[2:]:
            if message["role"] == "assistant":
                assert parse_reply(message["content"])[1] == message["content"]
            else:
                assert message["content"].startswith("<tool_response>\n")
        assert tools_used(trajectory)[-2:] == ["submit", "submit"]
        meta = trajectory.meta
        assert meta["source"] == "history" and meta["status"] == "submitted"
        assert meta["commit"] == task.commit and meta["recall"] == 1.0
        # Same final bytes, so even the blob ids in the index lines agree (the work copy's diff
        # goes through git's text mode, which drops the \r of CRLF lines).
        assert meta["patch"] in (task.patch, task.patch.replace("\r\n", "\n")), task.message


def test_each_kind_of_change_uses_the_fitting_tool(history, tasks):
    used = {name: tools_used(reconstruct_trajectory(history.root, tasks[MINED.index(name)]))
            for name in ("insert", "create", "delete", "unique", "fix", "crlf")}
    assert used["insert"] == ["view", "insert", "submit", "submit"]
    assert used["create"] == ["create", "submit", "submit"]
    assert used["delete"] == ["bash", "submit", "submit"]
    assert used["fix"] == ["view", "str_replace", "submit", "submit"]
    # In a CRLF file the calls are typed with plain newlines; the editor writes CRLF.
    assert used["crlf"] == ["view", "str_replace", "insert", "submit", "submit"]
    crlf = reconstruct_trajectory(history.root, tasks[MINED.index("crlf")])
    assert not any("\\r" in m["content"] for m in crlf.messages if m["role"] == "assistant")
    unique = reconstruct_trajectory(history.root, tasks[MINED.index("unique")])
    call, _ = parse_reply(unique.messages[4]["content"])
    assert call.arguments["old_str"].count("return None") == 2  # widened until it is unique
    assert "\n" + call.arguments["old_str"] in "\n" + LOOKUP


def test_commits_the_tools_cannot_make_are_not_reconstructed(history):
    def task_of(name: str, files: list[str]) -> HistoryTask:
        commit = history.commits[name]
        patch = history.git("diff", "--binary", f"{commit}^", commit)
        return HistoryTask(commit, f"{commit}^", 0, name, patch, files)

    assert reconstruct_trajectory(history.root, task_of("binary", ["data/logo.png"])) is None
    assert reconstruct_trajectory(history.root, task_of("mode", ["run.sh"])) is None
    assert reconstruct_trajectory(history.root,
                                  task_of("rename", ["helpers.py", "util.py"])) is None


class EditorOnly:
    """Stands in for the replay: runs editor calls on a folder, without git or a trajectory."""

    def __init__(self, root: Path) -> None:
        self.editor = Editor(root)

    def call(self, thought: str, name: str, **arguments) -> str:
        assert name == "str_replace_editor" and "\n" not in thought
        return self.editor.run(arguments)


def text_of(lines: list[str], final_newline: bool, crlf: bool) -> str:
    text = "\n".join(lines) + ("\n" if final_newline and lines else "")
    return text.replace("\n", "\r\n") if crlf else text


file_lines = st.lists(st.sampled_from(["a", "b", "", "  c", "a", "return None"]), max_size=14)


@settings(max_examples=150, deadline=None)
@given(file_lines, file_lines, st.booleans(), st.booleans(), st.booleans())
def test_the_planned_edits_turn_the_old_file_into_the_new(old, new, old_final, new_final, crlf):
    old_text, new_text = text_of(old, old_final, crlf), text_of(new, new_final, crlf)
    assume(old_text and old_text != new_text)  # empty files are created, not edited
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "f.txt").write_bytes(old_text.encode())
        old_lines, new_lines = _lines(old_text), _lines(new_text)
        _replay_edits(EditorOnly(Path(folder)), "f.txt", old_lines, new_lines,
                      _edit_blocks(old_lines, new_lines))
        assert (Path(folder) / "f.txt").read_bytes().decode() == new_text
