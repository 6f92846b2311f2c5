"""The agent's work copy: a detached git worktree of a snapshot of the user's working tree.

The snapshot is HEAD plus uncommitted edits plus untracked, not-ignored files, committed through a
temporary index, so the user's working tree, index, stash list and branches stay untouched. The
work copy lives outside the repository (default: <tmp>/sera-work/) and is removed afterwards, also
after Ctrl-C; work copies left by a crashed run are found again by their worktree lock reason
("sera pid N") and removed by `cleanup_stale`.

What the user's repository gains: unreferenced objects (the snapshot commit and blobs) and, while a
work copy exists, its entry under .git/worktrees/. Shared refs (branches, refs/stash) live in the
common .git directory, which the sandbox keeps read-only, so the agent cannot change them either.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from sera.agent.sandbox import GIT_REDIRECTS
from sera.errors import RepositoryError, disk_error
from sera.paths import STATE_DIR, file_lock, state_dir

# A fixed identity and date: snapshots work without a configured git identity, and the same state
# always gives the same commit id.
SNAPSHOT_IDENTITY = {
    "GIT_AUTHOR_NAME": "sera", "GIT_AUTHOR_EMAIL": "sera@localhost",
    "GIT_COMMITTER_NAME": "sera", "GIT_COMMITTER_EMAIL": "sera@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}
LOCK_REASON = re.compile(r"^sera pid (\d+)$")
# Hooks of the user's repository must not run for sera's own git operations.
NO_HOOKS = ["-c", f"core.hooksPath={os.devnull}"]


def run_git(args: list[str], cwd: Path, env: dict[str, str] | None = None,
            stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """git with the user's redirecting variables (GIT_DIR, ...) removed and bytes in and out (text
    mode would turn the \r\n of CRLF files into \n and break patches). Does not check the status."""
    full_env = {k: v for k, v in os.environ.items() if k not in GIT_REDIRECTS}
    # GIT_OPTIONAL_LOCKS=0: status and diff never rewrite the user's index to refresh it
    full_env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_OPTIONAL_LOCKS="0", **(env or {}))
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=full_env, capture_output=True,
                              input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise RepositoryError("git is not installed; install git and try again") from None


def git_bytes(args: list[str], cwd: Path, env: dict[str, str] | None = None,
              stdin: bytes | None = None) -> bytes:
    """git's exact output; RepositoryError with git's message on failure."""
    done = run_git(args, cwd, env, stdin)
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace")
        message = stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        subcommand = next((a for a, before in zip(args, ["", *args]) if not a.startswith("-")
                           and before != "-c"), "")
        if "No space left on device" in stderr or "Disk quota exceeded" in stderr:
            raise disk_error(OSError(errno.ENOSPC, f"git {subcommand} ran out of disk space "
                                     f"({message[0]})", str(cwd)))
        raise RepositoryError(f"git {subcommand} failed in {cwd}: {message[0]}")
    return done.stdout


def git(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run git in `cwd` and return its stdout; RepositoryError with git's message on failure."""
    return git_bytes(args, cwd, env).decode("utf-8", "surrogateescape")


def find_repo_root(path: Path) -> Path:
    """The top of the git repository containing `path`, which must have at least one commit."""
    path = Path(path).resolve()
    if not path.exists():
        raise RepositoryError(f"{path} does not exist; run sera inside a git repository")
    folder = path if path.is_dir() else path.parent
    try:
        top = git(["rev-parse", "--show-toplevel"], folder).strip()
    except RepositoryError:
        raise RepositoryError(f"not a git repository: {path}; run sera inside a git repository "
                              f"(git init && git commit)") from None
    if not top:  # inside a .git directory or a bare repository
        raise RepositoryError(f"not a git repository: {path}; run sera inside a git repository "
                              f"(git init && git commit)")
    root = Path(top).resolve()
    try:
        git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], root)
    except RepositoryError:
        raise RepositoryError("repository has no commits yet; commit once (git add -A && "
                              "git commit -m init) so sera has a base to work from") from None
    return root


def git_path(repo_root: Path, name: str) -> Path:
    """Where git keeps `name` (index, info/exclude, ...) for this checkout, worktrees included."""
    return (Path(repo_root) / git(["rev-parse", "--git-path", name], repo_root).strip()).resolve()


def ensure_state_dir(repo_root: Path) -> Path:
    """.sera/ at the repository root, excluded from git status through .git/info/exclude."""
    directory = state_dir(repo_root)
    directory.mkdir(exist_ok=True)
    exclude = git_path(repo_root, "info/exclude")
    entry = f"/{STATE_DIR}/"
    current = exclude.read_text(encoding="utf-8", errors="replace") if exclude.exists() else ""
    if entry not in current.splitlines():
        exclude.parent.mkdir(parents=True, exist_ok=True)
        separator = "" if not current or current.endswith("\n") else "\n"
        with open(exclude, "a", encoding="utf-8") as file:
            file.write(f"{separator}{entry}\n")
    return directory


def snapshot_commit(repo_root: Path) -> str:
    """A commit of the working tree as it is now (HEAD + edits + untracked, not-ignored files),
    made through a copy of the index, so nothing the user sees changes."""
    repo_root = Path(repo_root)
    index = git_path(repo_root, "index")
    with tempfile.TemporaryDirectory(prefix="sera-index-") as scratch:
        temporary_index = Path(scratch) / "index"
        env = {"GIT_INDEX_FILE": str(temporary_index), **SNAPSHOT_IDENTITY}
        if index.exists():
            shutil.copy2(index, temporary_index)
        else:  # no index (fresh clone edge): start from HEAD so tracked-but-ignored files stay
            git(["read-tree", "HEAD"], repo_root, env)
        git(["add", "--all", "--", ":/"], repo_root, env)
        tree = git(["write-tree"], repo_root, env).strip()
        commit = git(["commit-tree", "--no-gpg-sign", tree, "-p", "HEAD", "-m", "sera snapshot"],
                     repo_root, env)
    return commit.strip()


class WorkCopy:
    """A detached worktree at `commit`, in a temporary folder outside the repository."""

    def __init__(self, repo_root: Path, path: Path, commit: str, git_dir: Path,
                 common_dir: Path) -> None:
        self.repo_root = Path(repo_root)
        self.path = Path(path)
        self.commit = commit
        self.git_dir = git_dir  # the worktree's admin dir: the sandbox must let git write there
        self.common_dir = common_dir  # the repository's .git: objects and refs, read-only inside
        self.removed = False

    @classmethod
    def create(cls, repo_root: Path, commit: str, parent: Path | None = None) -> "WorkCopy":
        repo_root = Path(repo_root).resolve()
        parent = Path(parent) if parent is not None else Path(tempfile.gettempdir()) / "sera-work"
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{repo_root.name}-", dir=parent)).resolve()
        try:
            with _worktree_lock(repo_root):
                git([*NO_HOOKS, "worktree", "add", "--detach", "--lock", "--reason",
                     f"sera pid {os.getpid()}", str(path), commit], repo_root)
            git_dir = Path(git(["rev-parse", "--absolute-git-dir"], path).strip())
            common = (path / git(["rev-parse", "--git-common-dir"], path).strip()).resolve()
        except BaseException:
            _remove_worktree(repo_root, path)
            raise
        return cls(repo_root, path, commit, git_dir, common)

    def diff(self) -> str:
        """The patch of the work copy against the snapshot, as `git apply` takes it later.

        git is pointed at the worktree explicitly, so the patch comes out right even if the
        agent removed or rewrote the work copy's .git file."""
        env = {"GIT_DIR": str(self.git_dir), "GIT_WORK_TREE": str(self.path)}
        git(["add", "--all", "--", ":/"], self.path, env)
        return git(["diff", "--cached", "--binary", "--no-color", "--no-ext-diff",
                    "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/", self.commit],
                   self.path, env)

    def remove(self) -> None:
        """Delete the work copy and its worktree entry; safe to call twice."""
        if not self.removed:
            _remove_worktree(self.repo_root, self.path, self.git_dir)
            self.removed = True

    def __enter__(self) -> "WorkCopy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def _worktree_lock(repo_root: Path):
    """One `git worktree add/remove` at a time per repository: git reads every sibling's admin
    folder while it adds one, and fails on a sibling that another thread or process is creating."""
    common = Path(git(["rev-parse", "--git-common-dir"], repo_root).strip())
    return file_lock((common if common.is_absolute() else repo_root / common) / "sera-worktree.lock")


def _remove_worktree(repo_root: Path, path: Path, git_dir: Path | None = None) -> None:
    # --force twice: the worktree is locked and may have uncommitted changes.
    try:
        with _worktree_lock(repo_root):
            git(["worktree", "remove", "--force", "--force", str(path)], repo_root)
    except RepositoryError:
        pass  # already gone or half made: clean up by hand below
    shutil.rmtree(path, ignore_errors=True)
    # Only our own admin entry, never a global `git worktree prune`: that would also drop the
    # user's worktrees that merely sit on an unmounted disk.
    if git_dir is not None and git_dir.parent.name == "worktrees":
        shutil.rmtree(git_dir, ignore_errors=True)


def cleanup_stale(repo_root: Path) -> list[Path]:
    """Remove work copies that sera processes no longer running left behind; returns their paths."""
    removed = []
    for path, reason in _locked_worktrees(Path(repo_root)):
        match = LOCK_REASON.match(reason)
        if match and (not path.exists() or not process_alive(int(match.group(1)))):
            git_dir = _admin_dir_of(Path(repo_root), path)
            _remove_worktree(Path(repo_root), path, git_dir)
            removed.append(path)
    return removed


def _locked_worktrees(repo_root: Path) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    path: Path | None = None
    for line in git(["worktree", "list", "--porcelain"], repo_root).splitlines():
        if line.startswith("worktree "):
            path = Path(line[len("worktree "):])
        elif line.startswith("locked ") and path is not None:
            found.append((path, line[len("locked "):]))
    return found


def _admin_dir_of(repo_root: Path, worktree: Path) -> Path | None:
    """The .git/worktrees/<name> entry whose gitdir file points at `worktree`."""
    common = git(["rev-parse", "--git-common-dir"], repo_root).strip()
    admin = (repo_root / common / "worktrees").resolve()
    for entry in admin.iterdir() if admin.is_dir() else []:
        gitdir = entry / "gitdir"
        if gitdir.is_file() and Path(gitdir.read_text().strip()).parent == worktree:
            return entry
    return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
