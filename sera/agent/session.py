"""Models kept loaded between tasks, for every front end.

The language server and the TUI solve many tasks in one process, and loading a model takes
seconds (llama.cpp) to minutes (transformers on a CPU): a `Session` loads the agent's model and
the reranker on first use and keeps them while the settings name the same ones. `sera solve`
uses one session for one task. Thread-safe: one solve at a time per session.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from sera.agent.solve import ProgressFn, SolveResult, check_request, solve
from sera.config import Settings
from sera.errors import SeraError, reports_disk_errors
from sera.models.base import ChatModel, Reranker
from sera.models.registry import load_model
from sera.paths import probe_writable, runs_dir
from sera.reranker.model import open_reranker, resolve_reranker

NoteFn = Callable[[str], None]


class Busy(SeraError):
    """The session is solving another task."""


class Session:
    def __init__(self) -> None:
        self._model: ChatModel | None = None
        self._model_key: tuple | None = None
        self._reranker: Reranker | None = None
        self._reranker_key: tuple | None = None
        self._lock = threading.Lock()
        self.task: str | None = None  # the task being solved, while one is

    @reports_disk_errors
    def solve(self, repo_root: Path, task: str, settings: Settings,
              on_step: ProgressFn | None = None, on_note: NoteFn | None = None,
              cancel: threading.Event | None = None) -> SolveResult:
        """Check the request, load what it needs (or reuse it), and solve it (solve.py)."""
        note = on_note or (lambda _: None)
        if not self._lock.acquire(blocking=False):
            raise Busy(f"sera is still solving {self.task!r}; wait for it or cancel it first")
        try:
            self.task = task.strip()
            _, adapter = check_request(repo_root, task, settings)  # fails before any slow load
            probe_writable(runs_dir(repo_root))  # a run that cannot be saved fails before too
            model, reranker = self.load(repo_root, settings, note)
            if adapter:
                note(f"adapter: {adapter}")
            return solve(repo_root, task, settings, model, on_step=on_step, reranker=reranker,
                         on_note=note, cancel=cancel)
        finally:
            self.task = None
            self._lock.release()

    def load(self, repo_root: Path, settings: Settings,
             note: NoteFn) -> tuple[ChatModel, Reranker | None]:
        """The agent's model and the repository's reranker for `settings`, loaded when they are
        not the ones already in memory."""
        model_key, reranker_key = loaded_keys(repo_root, settings)  # a bad reranker fails here
        if self._model is None or model_key != self._model_key:
            self._close_reranker()  # it may share the old model's base
            self._close_model()
            where = where_code_goes(settings.model.spec)
            if where:
                note(where)
            note(f"loading model {settings.model.spec} ...")
            self._model, self._model_key = load_model(settings.model.spec, settings.model), model_key
        if reranker_key != self._reranker_key:
            self._close_reranker()
            folder = reranker_key[0]
            if folder is not None:
                note(f"loading reranker {Path(folder).name} ...")
                self._reranker = open_reranker(Path(folder), settings, agent_model=self._model)
            self._reranker_key = reranker_key
        return self._model, self._reranker

    def close(self) -> None:
        self._close_reranker()
        self._close_model()

    def _close_model(self) -> None:
        if self._model is not None:
            self._model.close()
        self._model, self._model_key = None, None

    def _close_reranker(self) -> None:
        if self._reranker is not None:
            self._reranker.close()
        self._reranker, self._reranker_key = None, None


def loaded_keys(repo_root: Path, settings: Settings) -> tuple[tuple, tuple]:
    """What a session loads for `settings`, as the keys it keeps them under: the agent's model,
    and the reranker (its folder, None for none). Settings with equal keys share what is loaded."""
    folder = resolve_reranker(repo_root, settings.rerank.reranker,
                              settings.rerank.base or settings.model.spec)
    return ((settings.model.spec, settings.model.context_tokens, settings.model.threads),
            (str(folder) if folder else None, settings.rerank.max_tokens))


def where_code_goes(spec: str) -> str | None:
    """A note when the model is a server on another machine: the task and code go there."""
    if not spec.startswith("openai:"):
        return None
    host = urlparse(spec[len("openai:"):].split("#")[0]).hostname or "?"
    if host in ("localhost", "127.0.0.1", "::1"):
        return None
    return f"note: the task and the code the agent reads are sent to {host}"
