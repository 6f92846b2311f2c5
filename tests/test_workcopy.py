"""The work copy on real git repositories: the snapshot sees uncommitted and untracked work, the
user's working tree, index, stash list, branches and HEAD stay byte-identical, and work copies are
removed (also after Ctrl-C and after a crashed run)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import user_state
from sera.agent.workcopy import (WorkCopy, cleanup_stale, ensure_state_dir, find_repo_root,
                                 snapshot_commit)
from sera.errors import RepositoryError

IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]


def sh(cwd: Path, *args: str, input: str | None = None) -> str:
    return subprocess.run(["git", *IDENTITY, *args], cwd=cwd, check=True, capture_output=True,
                          text=True, input=input).stdout


@pytest.fixture
def repo(tmp_path):
    """A repository with history, a branch, a stash entry, and uncommitted work of every kind."""
    root = tmp_path / "repo"
    root.mkdir()
    sh(root, "init", "-q", "-b", "main")
    (root / ".gitignore").write_text("*.log\n")
    (root / "app.py").write_text("def f():\n    return 1\n")
    (root / "gone.py").write_text("old\n")
    (root / "staged.py").write_text("s = 1\n")
    sh(root, "add", "-A")
    sh(root, "commit", "-qm", "init")
    sh(root, "branch", "feature")
    (root / "app.py").write_text("def f():\n    return 10\n")
    sh(root, "stash", "-q")
    (root / "app.py").write_text("def f():\n    return 2\n")  # unstaged edit
    (root / "staged.py").write_text("s = 2\n")
    sh(root, "add", "staged.py")  # staged edit
    (root / "gone.py").unlink()  # deleted, not staged
    (root / "new.py").write_text("untracked = True\n")
    (root / "debug.log").write_text("ignored\n")
    return root


def test_snapshot_work_copy_and_diff_leave_the_user_untouched(repo):
    before = user_state(repo)
    commit = snapshot_commit(repo)
    with WorkCopy.create(repo, commit) as work:
        assert (work.path / "app.py").read_text() == "def f():\n    return 2\n"
        assert (work.path / "staged.py").read_text() == "s = 2\n"
        assert (work.path / "new.py").exists()
        assert not (work.path / "gone.py").exists()
        assert not (work.path / "debug.log").exists()
        assert work.diff() == ""
        (work.path / "app.py").write_text("def f():\n    return 3\n")
        (work.path / "added.txt").write_text("hello\n")
        (work.path / "new.py").unlink()
        patch = work.diff()
        assert work.path not in Path(repo).parents and repo not in work.path.parents
    assert not work.path.exists()
    assert user_state(repo) == before
    assert "+    return 3" in patch and "-    return 2" in patch
    assert "b/added.txt" in patch and "deleted file mode" in patch
    sh(repo, "apply", "--check", input=patch)  # applies to the user's working tree


def test_snapshot_is_stable_and_parented_on_head(repo):
    commit = snapshot_commit(repo)
    assert snapshot_commit(repo) == commit
    assert sh(repo, "rev-parse", f"{commit}^").strip() == sh(repo, "rev-parse", "HEAD").strip()


def test_snapshot_without_git_identity(repo, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    assert len(snapshot_commit(repo)) == 40


def test_snapshot_without_an_index_file_keeps_tracked_files(repo):
    sh(repo, "add", "-A")
    sh(repo, "commit", "-qm", "all")
    (repo / ".git" / "index").unlink()
    commit = snapshot_commit(repo)
    assert "app.py" in sh(repo, "ls-tree", "--name-only", commit)
    assert not (repo / ".git" / "index").exists()


def test_snapshot_from_a_linked_worktree(repo, tmp_path):
    linked = tmp_path / "linked"
    sh(repo, "worktree", "add", "-q", str(linked), "feature")
    (linked / "extra.py").write_text("x = 1\n")
    index = Path(sh(linked, "rev-parse", "--git-path", "index").strip())
    index_before = (linked / index).read_bytes()
    assert find_repo_root(linked) == linked.resolve()
    commit = snapshot_commit(linked)
    assert "extra.py" in sh(repo, "ls-tree", "--name-only", commit)
    assert (linked / index).read_bytes() == index_before
    with WorkCopy.create(linked, commit) as work:
        assert (work.path / "extra.py").exists()


def test_find_repo_root_from_a_subfolder(repo):
    (repo / "pkg").mkdir()
    assert find_repo_root(repo / "pkg") == repo.resolve()
    assert find_repo_root(repo / "app.py") == repo.resolve()


def test_find_repo_root_errors_say_what_to_do(tmp_path):
    with pytest.raises(RepositoryError, match="not a git repository: .*git init && git commit"):
        find_repo_root(tmp_path)
    sh(tmp_path, "init", "-q")
    with pytest.raises(RepositoryError, match="no commits yet; commit once"):
        find_repo_root(tmp_path)


def test_state_dir_is_excluded_once(repo):
    status = sh(repo, "status", "--porcelain")
    state = ensure_state_dir(repo)
    (state / "config.toml").write_text("")
    ensure_state_dir(repo)
    assert state == repo / ".sera" and state.is_dir()
    assert (repo / ".git" / "info" / "exclude").read_text().count("/.sera/") == 1
    assert sh(repo, "status", "--porcelain") == status


def test_git_works_in_the_work_copy_and_admin_dir_is_known(repo):
    with WorkCopy.create(repo, snapshot_commit(repo)) as work:
        assert work.git_dir.is_dir() and work.git_dir.parent.name == "worktrees"
        assert work.common_dir == (repo / ".git").resolve()
        assert sh(work.path, "status", "--porcelain") == ""


def test_diff_and_remove_survive_a_deleted_dot_git_file(repo):
    work = WorkCopy.create(repo, snapshot_commit(repo))
    (work.path / ".git").unlink()  # an agent's `rm -rf .git`
    (work.path / "app.py").write_text("changed\n")
    assert "+changed" in work.diff()
    work.remove()
    assert not work.path.exists() and not work.git_dir.exists()
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_invalid_commit_leaves_nothing_behind(repo, tmp_path):
    with pytest.raises(RepositoryError, match="git worktree failed"):
        WorkCopy.create(repo, "0" * 40, parent=tmp_path / "works")
    assert list((tmp_path / "works").iterdir()) == []


def test_binary_changes_round_trip_through_git_apply(repo):
    with WorkCopy.create(repo, snapshot_commit(repo)) as work:
        (work.path / "blob.bin").write_bytes(bytes(range(256)) * 4)
        patch = work.diff()
    assert "GIT binary patch" in patch
    sh(repo, "apply", input=patch)
    assert (repo / "blob.bin").read_bytes() == bytes(range(256)) * 4


def test_remove_is_idempotent_and_runs_on_keyboard_interrupt(repo, tmp_path):
    commit = snapshot_commit(repo)
    with pytest.raises(KeyboardInterrupt):
        with WorkCopy.create(repo, commit, parent=tmp_path / "works") as work:
            (work.path / "scratch").write_text("x")
            raise KeyboardInterrupt
    assert not work.path.exists() and not work.git_dir.exists()
    work.remove()
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_cleanup_stale_removes_work_copies_of_dead_processes_only(repo, tmp_path):
    commit = snapshot_commit(repo)
    live = WorkCopy.create(repo, commit)
    dead = subprocess.Popen(["true"])
    dead.wait()
    crashed = tmp_path / "crashed"
    sh(repo, "worktree", "add", "-q", "--detach", "--lock", "--reason", f"sera pid {dead.pid}",
       str(crashed), commit)
    user_locked = tmp_path / "users"
    sh(repo, "worktree", "add", "-q", "--detach", "--lock", "--reason", "on usb disk",
       str(user_locked), commit)
    try:
        assert cleanup_stale(repo) == [crashed]
        assert not crashed.exists() and live.path.exists() and user_locked.exists()
        listing = sh(repo, "worktree", "list", "--porcelain")
        assert str(crashed) not in listing and str(live.path) in listing
    finally:
        live.remove()


def test_work_copies_made_in_parallel_threads_do_not_race(repo):
    """git reads every sibling worktree's admin folder while adding one; parallel candidates
    used to fail with 'failed to read .git/worktrees/<x>/commondir'."""
    import threading
    commit = snapshot_commit(repo)
    errors: list[str] = []

    def make_and_remove() -> None:
        for _ in range(8):
            try:
                with WorkCopy.create(repo, commit) as work:
                    work.diff()
            except RepositoryError as error:
                errors.append(str(error))

    threads = [threading.Thread(target=make_and_remove) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
