"""The tool environment over a real work copy: bash through the sandbox, the editor, and the
two-step submit protocol."""

from __future__ import annotations

import json
import subprocess

import pytest

from sera.agent.protocol import Submitted, ToolCall, ToolError
from sera.agent.sandbox import bwrap_problem
from sera.agent.tools import TOOL_SPECS, ToolEnvironment
from sera.agent.workcopy import WorkCopy, snapshot_commit
from sera.config import AgentConfig


def git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=T", "-c", "user.email=t@t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def work(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "app.py").write_text("def f():\n    return 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    (root / "notes.txt").write_text("untracked\n")
    with WorkCopy.create(root, snapshot_commit(root), parent=tmp_path / "works") as copy:
        yield copy


def make_env(work, **config):
    return ToolEnvironment(work, AgentConfig(**{"command_timeout": 10, **config}))


def bash(env, command):
    return env.execute(ToolCall("bash", {"command": command}))


def edit(env, **arguments):
    return env.execute(ToolCall("str_replace_editor", arguments))


def submit(env):
    return env.execute(ToolCall("submit", {}))


def test_bash_output_exit_code_and_silence(work):
    env = make_env(work)
    assert bash(env, "cat notes.txt") == "untracked\n"
    assert bash(env, "echo oops; exit 2") == "oops\n\n[exit code 2]"
    assert bash(env, "true") == "(no output)"


def test_bash_timeout_says_it_was_killed(work):
    out = bash(make_env(work, command_timeout=0.3), "sleep 30")
    assert "killed after 0.3 s" in out and "faster" in out


def test_bash_output_is_capped(work):
    out = bash(make_env(work, output_chars=500), "seq 1 100000")
    assert out.startswith("1\n2\n") and out.endswith("100000\n") and "clipped" in out
    assert len(out) < 700


def test_git_reads_work_in_the_sandbox(work):
    env = make_env(work)
    bash(env, "echo more >> app.py")
    out = bash(env, "git status --short && git diff --stat")
    assert "M app.py" in out and "1 file changed" in out


@pytest.mark.parametrize("arguments", [{}, {"command": ""}, {"command": 3},
                                       {"command": "ls", "cwd": "/"}])
def test_bash_bad_arguments(work, arguments):
    with pytest.raises(ToolError, match='"command"'):
        make_env(work).execute(ToolCall("bash", arguments))


def test_unknown_tool_lists_the_tools(work):
    with pytest.raises(ToolError, match="bash, str_replace_editor, submit"):
        make_env(work).execute(ToolCall("python", {"code": "1"}))


def test_editor_through_the_environment(work):
    env = make_env(work)
    edit(env, command="str_replace", path="app.py", old_str="return 1", new_str="return 2")
    assert "return 2" in edit(env, command="view", path="app.py")
    assert "+    return 2" in env.diff()


def test_submit_shows_the_diff_then_submits_when_unchanged(work):
    env = make_env(work)
    edit(env, command="str_replace", path="app.py", old_str="return 1", new_str="return 2")
    first = submit(env)
    assert "call submit again" in first and "+    return 2" in first
    edit(env, command="view", path="app.py")  # looking around does not reset the review
    with pytest.raises(Submitted) as submitted:
        submit(env)
    assert str(submitted.value) == env.diff()
    assert "+    return 2" in str(submitted.value)


def test_submit_shows_a_changed_diff_again(work):
    env = make_env(work)
    edit(env, command="str_replace", path="app.py", old_str="return 1", new_str="return 2")
    submit(env)
    edit(env, command="str_replace", path="app.py", old_str="return 2", new_str="return 3")
    again = submit(env)
    assert "+    return 3" in again and "call submit again" in again
    with pytest.raises(Submitted, match=r"\+    return 3"):
        submit(env)


def test_submit_without_changes(work):
    env = make_env(work)
    assert "No changes yet" in submit(env)
    with pytest.raises(Submitted) as submitted:
        submit(env)
    assert str(submitted.value) == ""


def test_sandbox_warning_matches_the_mode(work):
    assert make_env(work, sandbox="none").sandbox_warning is None
    auto = make_env(work, sandbox="auto")
    assert (auto.sandbox_warning is None) == (bwrap_problem() is None)
    assert auto.sandbox.kind == ("bwrap" if bwrap_problem() is None else "plain")


def test_tool_specs_are_json_schemas_for_the_three_tools():
    assert [spec["name"] for spec in TOOL_SPECS] == ["bash", "str_replace_editor", "submit"]
    for spec in TOOL_SPECS:
        assert spec["description"] and spec["parameters"]["type"] == "object"
    editor = TOOL_SPECS[1]["parameters"]
    assert set(editor["properties"]) == {"command", "path", "file_text", "old_str", "new_str",
                                         "insert_line", "view_range"}
    json.dumps(TOOL_SPECS)
