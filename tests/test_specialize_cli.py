"""`sera specialize` as a user runs it, on bad input: one clear line, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GIT_IDENTITY, git
from sera.agent.sandbox import bwrap_problem

SERA = [sys.executable, "-m", "sera.cli"]


def specialize(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SERA, "specialize", str(path), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **GIT_IDENTITY})


def test_repository_without_supported_source_files(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    git(root, "init", "-q")
    (root / "README.md").write_text("# docs only\n")
    (root / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # a big binary file is skipped too
    git(root, "add", "-A")
    git(root, "commit", "-qm", "docs")
    out = specialize(root, "--model", "scripted:/dev/null")
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1].startswith("sera: error: no Python, JavaScript")


def test_repository_without_commits(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q")
    out = specialize(root)
    assert out.returncode == 1 and "no commits" in out.stderr


def test_unreachable_teacher_fails_clearly_and_the_run_resumes_later(repo, tmp_path):
    out = specialize(repo, "--teacher", "openai:http://127.0.0.1:9/v1#big", "--no-train",
                     "--functions", "1")
    assert out.returncode == 1
    assert "cannot reach" in out.stderr.splitlines()[-1]
    assert "parsing 1/1" in out.stdout.splitlines()  # a log gets the bars as lines
    assert "note: the task and the code" not in out.stderr  # 127.0.0.1 keeps code on the machine
    manifest = json.loads(next((repo / ".sera" / "runs").glob("*/manifest.json")).read_text())
    assert manifest["stages"]["functions"]["status"] == "done"
    assert manifest["stages"]["rollouts"]["status"] == "failed"
    again = subprocess.run([*SERA, "specialize", str(repo), "--resume"], capture_output=True,
                           text=True, timeout=300, env={**os.environ, **GIT_IDENTITY})
    assert again.returncode == 1 and "cannot reach" in again.stderr  # same teacher, still down
    assert git(repo, "worktree", "list").count("\n") == 1


def test_a_remote_teacher_is_announced(repo):
    out = specialize(repo, "--teacher", "openai:http://192.0.2.1:9/v1#big", "--stage", "functions")
    assert "note: the task and the code the agent reads are sent to 192.0.2.1" in out.stderr


def test_read_only_repository_gives_one_clear_line(repo, tmp_path):
    if bwrap_problem():
        pytest.skip("needs bubblewrap to mount the repository read-only (root ignores permissions)")
    sandbox = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--bind", str(tmp_path), str(tmp_path), "--ro-bind", str(repo), str(repo)]
    out = subprocess.run([*sandbox, *SERA, "specialize", str(repo), "--stage", "functions"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, **GIT_IDENTITY})
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1].startswith("sera: error: cannot write")
    assert "Read-only file system" in out.stderr and "Traceback" not in out.stderr
