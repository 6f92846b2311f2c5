"""Run one shell command of the agent inside the work copy, sandboxed when bubblewrap works here.

Under bubblewrap the command sees the whole file system read-only, a private /tmp, no network (its
own network namespace) and its own PID namespace (so background processes die with it); only the
work copy and the paths given as `writable` can be written. The user's home is hidden (an empty
tmpfs) but for the toolchain directories the environment points into (PATH entries, the virtualenv
and the interpreter it was made from, ~/.local, rustup/cargo, pyenv, nvm, conda, go) and the work
copy. Elsewhere commands run as plain subprocesses, with `Sandbox.warning` saying so.

Either way a command gets an allow-listed environment (`command_environment`: locale, PATH and
toolchain variables, plus the names in `agent.env_keep`), never the user's API keys or tokens, and
a throwaway HOME of its own, so ~/.netrc, ~/.aws and git credentials are not found through it.

Every command gets a fresh `bash -c`, stdin from /dev/null, stdout and stderr merged, a time limit,
and its output capped (head and tail kept). The command's process group is killed when it times out
and again when it ends, so nothing it started in the background outlives it.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import tempfile
import weakref
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sera.errors import ConfigError, SeraError

MODES = ("auto", "bwrap", "none")
# Variables that would point git at another repository than the work copy.
GIT_REDIRECTS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                 "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
                 "GIT_PREFIX", "GIT_CEILING_DIRECTORIES")
# Variables an agent command keeps: locale, paths and toolchains. Anything else (API keys, cloud
# credentials, tokens) stays out unless the user names it in agent.env_keep.
SAFE_VARIABLES = (
    "PATH", "LANG", "LANGUAGE", "LC_*", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR",
    "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_EXE", "PYTHONPATH",
    "PYTHONUSERBASE", "PYENV_ROOT", "PYENV_VERSION", "UV_PYTHON_INSTALL_DIR", "JAVA_HOME",
    "GOROOT", "GOPATH", "GOMODCACHE", "CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "NVM_DIR",
    "NODE_PATH", "LD_LIBRARY_PATH", "PKG_CONFIG_PATH", "CC", "CXX", "SSL_CERT_FILE",
    "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
# Variables naming toolchain folders, and the folders under the home they default to: visible
# (read-only) in the sandbox, and set for the command when they exist, since its HOME moved.
TOOLCHAIN_HOMES = {"PYTHONUSERBASE": ".local", "RUSTUP_HOME": ".rustup", "CARGO_HOME": ".cargo",
                   "PYENV_ROOT": ".pyenv", "NVM_DIR": ".nvm"}
TOOLCHAIN_VARIABLES = ("VIRTUAL_ENV", "CONDA_PREFIX", "JAVA_HOME", "GOROOT", "GOPATH",
                       "UV_PYTHON_INSTALL_DIR", *TOOLCHAIN_HOMES)
_DRAIN_SECONDS = 1.0  # how long to wait for the pipe to close once the command is over


@dataclass
class CommandResult:
    output: str
    exit_code: int | None  # None when the command was killed for running too long
    timed_out: bool
    seconds: float


class Sandbox:
    """Runs shell commands with `root` as working directory, in the environment
    `command_environment` builds (`env_keep`: more variable names to keep, agent.env_keep).

    mode: "auto" (bubblewrap if it works here, else plain with a warning), "bwrap" (required:
    raises SeraError if it does not work) or "none" (plain). `writable`: more paths the command may
    write (the work copy's git admin directory). `readonly`: paths to keep visible although they lie
    under /tmp, which the sandbox replaces by a private one (the repository's .git directory).
    """

    def __init__(self, root: Path, mode: str = "auto", writable: Sequence[Path] = (),
                 readonly: Sequence[Path] = (), env_keep: str = "") -> None:
        if mode not in MODES:
            raise ConfigError(f"agent.sandbox = {mode!r} is not valid; use one of: "
                              f"{', '.join(MODES)}")
        self.root = Path(root).resolve()
        self.writable = [Path(p).resolve() for p in writable]
        self.readonly = [Path(p).resolve() for p in readonly]
        self.warning: str | None = None
        self.kind = "plain"
        self.home = Path(tempfile.mkdtemp(prefix="sera-home-"))  # the commands' throwaway HOME
        weakref.finalize(self, shutil.rmtree, self.home, True)
        (self.home / ".gitconfig").write_text(_git_identity(), encoding="utf-8")
        self.environment = command_environment(env_keep, self.home)
        if mode != "none":
            problem = bwrap_problem()
            if problem is None:
                self.kind = "bwrap"
            elif mode == "bwrap":
                raise SeraError(f"agent.sandbox = bwrap but {problem}; fix that, or set "
                                f"agent.sandbox = auto to run commands without a sandbox")
            else:
                self.warning = f"{problem}: commands run without a sandbox"

    def run(self, command: str, timeout: float, output_chars: int) -> CommandResult:
        """Run `command` with bash; never raises for what the command does."""
        argv = self._argv(command)
        started = time.monotonic()
        process = subprocess.Popen(argv, cwd=self.root, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=self.environment, start_new_session=True)
        sink = _CappedOutput(output_chars)
        try:
            timed_out = _pump(process, sink, started + timeout)
        finally:
            _kill_group(process)
            process.wait()
            _drain(process, sink)
        exit_code = None if timed_out else _shell_status(process.returncode)
        return CommandResult(sink.text(), exit_code, timed_out, time.monotonic() - started)

    def _argv(self, command: str) -> list[str]:
        shell = ["bash", "-c", command]
        if self.kind != "bwrap":
            return shell
        binds = [("--ro-bind", p, p) for p in self.readonly if p.exists()]
        binds += [("--bind", p, p) for p in [self.root, self.home, *self.writable] if p.exists()]
        binds += self._home_mounts
        # parents before what mounts inside them; at equal depth the tmpfs first
        binds.sort(key=lambda bind: (len(bind[2].parts), bind[0] != "--tmpfs"))
        argv = ["bwrap", *BWRAP_BASE]
        for flag, source, point in binds:
            argv += [flag, str(point)] if flag == "--tmpfs" else [flag, str(source), str(point)]
        return argv + ["--chdir", str(self.root), "--", *shell]

    @functools.cached_property
    def _home_mounts(self) -> list[tuple[str, Path, Path]]:
        """The user's home as an empty tmpfs, and the toolchain folders in it mounted back; found
        once per sandbox (the environment is fixed), not per command."""
        home = _real_home()
        if home is None or home.is_relative_to(self.root):
            return []  # no home, or the work copy holds it (root = /home): hiding it hides work
        return [("--tmpfs", home, home)] + [("--ro-bind", source, point) for source, point
                                            in toolchain_paths(self.environment, home)]


BWRAP_BASE = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
              "--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session"]


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """None when bubblewrap can create its namespaces here, else why not (probed once per process:
    inside containers bwrap may exist but be refused the namespaces it needs)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap not found (install it: apt-get install bubblewrap)"
    try:
        probe = subprocess.run(["bwrap", *BWRAP_BASE, "--", "true"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap does not start ({error})"
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        return (f"bubblewrap cannot create a sandbox here ({reason}); allow user namespaces "
                f"or run outside this container")
    return None


def command_environment(keep: str = "", home: Path | None = None) -> dict[str, str]:
    """The environment of an agent command: the user's variables that SAFE_VARIABLES or `keep`
    (names or shell patterns, separated by spaces or commas) allow, made non-interactive, with
    `home` as HOME (toolchain folders that defaulted to the old home are named explicitly)."""
    patterns = [*SAFE_VARIABLES, *keep.replace(",", " ").split()]
    env = {k: v for k, v in os.environ.items() if k not in GIT_REDIRECTS
           and any(fnmatch.fnmatchcase(k, pattern) for pattern in patterns)}
    user_home = Path.home()
    for name, folder in TOOLCHAIN_HOMES.items():
        if name not in env and (user_home / folder).is_dir():
            env[name] = str(user_home / folder)
    env["HOME"] = str(home or user_home)
    env["PATH"] = env.get("PATH") or "/usr/local/bin:/usr/bin:/bin"
    env.update(TERM="dumb", PAGER="cat", GIT_PAGER="cat", MANPAGER="cat", GIT_EDITOR="true",
               EDITOR="true", GIT_TERMINAL_PROMPT="0", NO_COLOR="1", PIP_NO_INPUT="1",
               DEBIAN_FRONTEND="noninteractive", PYTHONUNBUFFERED="1",
               PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ in a candidate's patch
               GIT_CONFIG_NOSYSTEM="1")  # git's global config is the throwaway home's
    return env


@functools.lru_cache(maxsize=1)
def _git_identity() -> str:
    """The user's git name and email as a config file for the throwaway home (tests that commit
    need them); nothing else of the user's git configuration, whose credential helpers and
    tokens stay out."""
    lines = []
    for key in ("user.name", "user.email"):
        try:
            done = subprocess.run(["git", "config", "--global", "--get", key], text=True,
                                  capture_output=True, stdin=subprocess.DEVNULL, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        value = done.stdout.strip()
        if done.returncode == 0 and value and "\n" not in value:
            lines.append(f"\t{key.split('.')[1]} = {json.dumps(value, ensure_ascii=False)}")
    return "[user]\n" + "\n".join(lines) + "\n" if lines else ""


def toolchain_paths(env: dict[str, str], home: Path) -> list[tuple[Path, Path]]:
    """(source, mount point) of the folders under `home` that the commands' toolchain needs: PATH
    entries, the folders the toolchain variables name, and for a virtualenv the interpreter
    installation it was made from. A symlinked folder is mounted at its link's place too."""
    candidates = [Path(p) for p in env.get("PATH", "").split(os.pathsep) if p]
    candidates += [Path(env[name]) for name in TOOLCHAIN_VARIABLES if env.get(name)]
    for path in list(candidates):
        venv = path if (path / "pyvenv.cfg").is_file() else path.parent
        base = _venv_home(venv / "pyvenv.cfg")
        if base is not None:
            candidates += [venv, base.parent]  # bin/ of the interpreter, and its prefix
    mounts: list[tuple[Path, Path]] = []
    for path in candidates:
        try:
            source = path.resolve()
        except (OSError, RuntimeError):
            continue
        for point in dict.fromkeys([source, Path(os.path.abspath(path))]):
            inside = point.is_relative_to(home) and point != home
            if source.is_dir() and inside and (source, point) not in mounts:
                mounts.append((source, point))
    return mounts


def _venv_home(config: Path) -> Path | None:
    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            return Path(value.strip())
    return None


def _real_home() -> Path | None:
    """The user's home folder to hide, when it is one (not / and existing)."""
    try:
        home = Path.home().resolve()
    except (OSError, RuntimeError):
        return None
    return home if home.is_dir() and home != Path("/") else None


def _pump(process: subprocess.Popen, sink: "_CappedOutput", deadline: float) -> bool:
    """Copy output into `sink` until the command ends; True if the deadline passed first."""
    fd = process.stdout.fileno()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.1))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:  # pipe closed: the command is done or has closed its output
                try:
                    process.wait(max(deadline - time.monotonic(), 0))
                    return False
                except subprocess.TimeoutExpired:
                    return True
            sink.add(chunk)
        elif process.poll() is not None:
            return False  # done, though a background child may still hold the pipe


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _drain(process: subprocess.Popen, sink: "_CappedOutput") -> None:
    """Read what is left in the pipe, without waiting on a process that escaped the group."""
    fd = process.stdout.fileno()
    deadline = time.monotonic() + _DRAIN_SECONDS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            sink.add(chunk)
    finally:
        process.stdout.close()


def _shell_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # signal N -> 128 + N, as bash


_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))


class _CappedOutput:
    """Keeps the first and last bytes of a stream, and counts its characters."""

    def __init__(self, chars: int) -> None:
        self.chars = max(int(chars), 1)
        self.keep = 4 * self.chars  # bytes: enough for `chars` characters of UTF-8 at each end
        self.head = bytearray()
        self.tail = bytearray()
        self.total_bytes = 0
        self.total_chars = 0

    def add(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        self.total_chars += len(chunk.translate(None, _UTF8_CONTINUATION))
        room = self.keep - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > 2 * self.keep:
            del self.tail[:-self.keep]

    def text(self) -> str:
        if self.total_bytes <= len(self.head) + len(self.tail):
            return clip_text((self.head + self.tail).decode("utf-8", "replace"), self.chars)
        head = self.head.decode("utf-8", "replace")
        tail = self.tail[-self.keep:].decode("utf-8", "replace")
        return _join_clipped(head, tail, self.chars, self.total_chars)


def clip_text(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its head and tail around a note."""
    if len(text) <= limit:
        return text
    return _join_clipped(text, text, limit, len(text))


def _join_clipped(head: str, tail: str, limit: int, total: int) -> str:
    head_chars = max(limit // 2, 1)
    tail_chars = max(limit - head_chars, 0)
    shown_head = head[:head_chars]
    shown_tail = tail[len(tail) - tail_chars:] if tail_chars else ""
    clipped = max(total - len(shown_head) - len(shown_tail), 0)
    note = (f"\n[... {clipped} of {total} characters clipped here; to see less at once, narrow the "
            f"command (grep, head -n, tail -n, sed -n 'A,Bp') ...]\n")
    return shown_head + note + shown_tail
