"""The command sandbox with a real shell: output cap, time limit, process-group kill, exit codes,
environment; and, where bubblewrap works, that it blocks the network and writes outside the root."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from sera.agent import sandbox as sandbox_module
from sera.agent.sandbox import Sandbox, bwrap_problem, clip_text
from sera.errors import ConfigError, SeraError

BWRAP_PROBLEM = bwrap_problem()
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None,
                                 reason=f"bubblewrap unusable here: {BWRAP_PROBLEM}")
MODES = ["none", pytest.param("bwrap", marks=needs_bwrap)]


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("mode", MODES)
def test_runs_in_root_with_exit_code_and_merged_output(root, mode):
    box = Sandbox(root, mode)
    assert box.kind == ("bwrap" if mode == "bwrap" else "plain")
    result = box.run("pwd; echo err >&2; exit 3", timeout=10, output_chars=1000)
    assert result.output == f"{root.resolve()}\nerr\n"
    assert (result.exit_code, result.timed_out) == (3, False)
    assert box.run("kill -9 $$", timeout=10, output_chars=1000).exit_code == 137
    assert box.run("cat", timeout=10, output_chars=100).output == ""  # stdin is /dev/null


@pytest.mark.parametrize("mode", MODES)
def test_output_is_capped_keeping_head_and_tail(root, mode):
    command = "echo START; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo END"
    result = Sandbox(root, mode).run(command, timeout=20, output_chars=1000)
    assert result.output.startswith("START\nxxx")
    assert result.output.endswith("xxx\nEND\n")
    assert "3000010 characters clipped" not in result.output
    assert f"of {3000000 + 11} characters clipped" in result.output
    assert len(result.output) < 1200


def test_clip_text_is_exact_for_short_text():
    assert clip_text("abc", 3) == "abc"
    clipped = clip_text("a" * 50 + "b" * 50, 10)
    assert clipped.startswith("aaaaa\n[... 90 of 100 characters clipped") and clipped.endswith("bbbbb")


@pytest.mark.parametrize("mode", MODES)
def test_timeout_and_end_kill_the_process_group_with_background_children(root, mode):
    box = Sandbox(root, mode)
    started = time.monotonic()
    slow = box.run("(sleep 1.5; touch late_a) & echo started; sleep 60", timeout=0.5,
                   output_chars=1000)
    assert slow.timed_out and slow.exit_code is None and slow.output == "started\n"
    assert time.monotonic() - started < 5
    quick = box.run("(sleep 1.5; touch late_b) & echo done", timeout=10, output_chars=1000)
    assert (quick.exit_code, quick.output, quick.timed_out) == (0, "done\n", False)
    assert quick.seconds < 1.4
    time.sleep(2)
    assert not (root / "late_a").exists() and not (root / "late_b").exists()


@pytest.mark.parametrize("mode", MODES)
def test_environment_is_non_interactive_and_not_redirected(root, mode, monkeypatch):
    monkeypatch.setenv("GIT_DIR", "/somewhere/else/.git")
    result = Sandbox(root, mode).run('echo "$GIT_PAGER $PAGER ${GIT_DIR-unset} $HOME"',
                                     timeout=10, output_chars=1000)
    assert result.output.split()[:3] == ["cat", "cat", "unset"]
    assert len(result.output.split()) == 4


@needs_bwrap
def test_bwrap_blocks_the_network(root):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        probe = (f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), "
                 f"timeout=3); print('connected')\"")
        assert Sandbox(root, "none").run(probe, 10, 1000).output == "connected\n"  # control
        blocked = Sandbox(root, "bwrap").run(probe, 10, 1000)
    assert blocked.exit_code != 0 and "connected" not in blocked.output


@pytest.fixture
def outside():
    """A folder outside /tmp (the sandbox hides the host's /tmp), so it stays visible inside."""
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path.home()
    folder = Path(tempfile.mkdtemp(prefix="sera-test-outside-", dir=base))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@needs_bwrap
def test_bwrap_allows_writes_only_inside_root_and_writable(root, tmp_path, outside):
    extra = tmp_path / "extra"
    extra.mkdir()
    box = Sandbox(root, "bwrap", writable=[extra])
    private = Path("/tmp") / f"sera-private-{uuid.uuid4().hex}"
    result = box.run(f"touch inside; touch {extra}/ok; touch {outside}/bad; echo x > {private}",
                     10, 1000)
    assert "Read-only file system" in result.output
    assert (root / "inside").exists() and (extra / "ok").exists()
    assert not (outside / "bad").exists()
    assert not private.exists()  # the sandbox's /tmp is its own, and gone after each command
    assert box.run(f"cat {private}", 10, 1000).exit_code != 0


@needs_bwrap
def test_bwrap_keeps_readonly_paths_under_tmp_visible(root, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data").write_text("seen\n")
    box = Sandbox(root, "bwrap", readonly=[shared])
    assert box.run(f"cat {shared}/data", 10, 1000).output == "seen\n"
    assert box.run(f"touch {shared}/new", 10, 1000).exit_code != 0


def test_missing_bwrap_falls_back_with_warning_or_refuses(root, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    bwrap_problem.cache_clear()
    try:
        box = Sandbox(root, "auto")
        assert box.kind == "plain"
        assert "bubblewrap not found" in box.warning and "apt-get install bubblewrap" in box.warning
        with pytest.raises(SeraError, match="agent.sandbox = bwrap"):
            Sandbox(root, "bwrap")
        assert Sandbox(root, "none").warning is None
    finally:
        sandbox_module.bwrap_problem.cache_clear()


def test_invalid_mode_is_a_config_error(root):
    with pytest.raises(ConfigError, match="auto, bwrap, none"):
        Sandbox(root, "docker")


@pytest.mark.parametrize("mode", MODES)
def test_secrets_stay_out_of_the_environment_unless_kept(root, mode, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("MY_TOOL_FLAG", "kept")
    monkeypatch.setenv("LC_TIME", "C")
    script = 'echo "${OPENAI_API_KEY-no} ${AWS_SECRET_ACCESS_KEY-no} ${MY_TOOL_FLAG-no} $LC_TIME"'
    assert Sandbox(root, mode).run(script, 10, 1000).output.split() == ["no", "no", "no", "C"]
    kept = Sandbox(root, mode, env_keep="MY_TOOL_*, AWS_SECRET_ACCESS_KEY")
    assert kept.run(script, 10, 1000).output.split() == ["no", "aws-secret", "kept", "C"]


@pytest.mark.parametrize("mode", MODES)
def test_home_is_a_throwaway_folder_without_the_users_credentials(root, mode, monkeypatch,
                                                                   tmp_path):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("aws_secret_access_key = abc\n")
    (home / ".netrc").write_text("machine example.com password hunter2\n")
    monkeypatch.setenv("HOME", str(home))
    box = Sandbox(root, mode)
    result = box.run('echo "$HOME"; cat ~/.netrc ~/.aws/credentials; git config --global -l',
                     10, 1000)
    assert result.output.splitlines()[0] == str(box.home) != str(home)
    assert "hunter2" not in result.output and "abc" not in result.output
    assert box.run("touch ~/made && echo ok", 10, 1000).output.strip() == "ok"


@pytest.fixture
def home_outside_tmp():
    """A home folder outside /tmp (which bubblewrap replaces anyway), removed afterwards."""
    if not os.access("/var/tmp", os.W_OK):
        pytest.skip("/var/tmp is not writable here")
    folder = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="sera-test-home-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@needs_bwrap
def test_bwrap_hides_the_home_but_the_work_copy_and_toolchain_in_it(home_outside_tmp,
                                                                    monkeypatch):
    home = home_outside_tmp
    secret = home / ".ssh" / "id_ed25519"
    secret.parent.mkdir(parents=True)
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    tool = home / ".local" / "bin"
    tool.mkdir(parents=True)
    (tool / "mytool").write_text("#!/bin/sh\necho tool ran\n")
    (tool / "mytool").chmod(0o755)
    work = home / "code" / "project"
    work.mkdir(parents=True)
    (work / "f.txt").write_text("work\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{tool}:{os.environ['PATH']}")
    box = Sandbox(work, "bwrap")
    result = box.run(f"cat f.txt; mytool; ls {home}/.ssh 2>&1 || echo hidden", 10, 1000)
    assert result.output.splitlines()[:2] == ["work", "tool ran"]
    assert "hidden" in result.output and "id_ed25519" not in result.output
    assert box.run("echo more >> f.txt && echo ok", 10, 1000).output.strip() == "ok"


@pytest.mark.parametrize("mode", MODES)
def test_python_commands_leave_no_bytecode_for_a_patch_to_carry(root, mode, monkeypatch):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    (root / "calc.py").write_text("X = 1\n")
    assert Sandbox(root, mode).run("python3 -c 'import calc'", 10, 1000).exit_code == 0
    assert not (root / "__pycache__").exists()


@pytest.mark.parametrize("mode", MODES)
def test_git_in_a_command_knows_the_users_name_but_not_their_credentials(root, mode, monkeypatch,
                                                                          tmp_path):
    home = tmp_path / "home-with-git"
    home.mkdir()
    (home / ".gitconfig").write_text('[user]\n\tname = Ada Lovelace\n\temail = ada@example.com\n'
                                     '[credential]\n\thelper = store\n')
    monkeypatch.setenv("HOME", str(home))
    sandbox_module._git_identity.cache_clear()
    try:
        output = Sandbox(root, mode).run("git config --global -l", 10, 1000).output
    finally:
        sandbox_module._git_identity.cache_clear()
    assert "user.name=Ada Lovelace" in output and "user.email=ada@example.com" in output
    assert "credential" not in output
