"""The Session that the language server and the TUI keep between tasks: models loaded once and
reused, reloaded when the settings name another model, one solve at a time, cancel."""

from __future__ import annotations

import json
import threading

import pytest

from conftest import FIX_SCRIPT_REPLIES, write_script
from sera.agent.session import Busy, Session, where_code_goes
from sera.config import load_settings
from sera.errors import SeraError


def settings_for(repo, spec, **flags):
    return load_settings(repo, {"model.spec": spec, "solve.candidates": 1, **flags})


def test_the_model_is_loaded_once_and_reloaded_for_another_spec(repo, tmp_path):
    first = write_script(tmp_path / "a.json", FIX_SCRIPT_REPLIES)
    second = write_script(tmp_path / "b.json", FIX_SCRIPT_REPLIES)
    session, notes = Session(), []
    for spec in (first, first, second):
        result = session.solve(repo, "calc.add is wrong", settings_for(repo, spec),
                               on_note=notes.append)
        assert result.candidates[0].status == "submitted"
    loads = [n for n in notes if n.startswith("loading model")]
    assert loads == [f"loading model {first} ...", f"loading model {second} ..."]
    session.close()
    session.close()  # safe twice


def test_a_bad_request_fails_before_loading_anything(repo, tmp_path):
    session, notes = Session(), []
    spec = write_script(tmp_path / "a.json", FIX_SCRIPT_REPLIES)
    with pytest.raises(SeraError, match="the task is empty"):
        session.solve(repo, "  ", settings_for(repo, spec), on_note=notes.append)
    with pytest.raises(SeraError, match="reranker 'nosuch' not found"):
        session.solve(repo, "fix it", settings_for(repo, spec, **{"rerank.reranker": "nosuch"}),
                      on_note=notes.append)
    assert notes == []


def test_one_solve_at_a_time(repo, tmp_path):
    session = Session()
    spec = write_script(tmp_path / "a.json", FIX_SCRIPT_REPLIES)
    started, release, outcome = threading.Event(), threading.Event(), {}

    def slow_step(index, event):
        started.set()
        release.wait(30)

    def first():
        outcome["result"] = session.solve(repo, "calc.add is wrong", settings_for(repo, spec),
                                          on_step=slow_step)
    worker = threading.Thread(target=first)
    worker.start()
    assert started.wait(30)
    with pytest.raises(Busy, match="still solving 'calc.add is wrong'"):
        session.solve(repo, "another task", settings_for(repo, spec))
    release.set()
    worker.join(30)
    assert outcome["result"].candidates[0].status == "submitted"


def test_cancel_keeps_the_run_and_skips_the_ranking(repo, tmp_path):
    session, cancel = Session(), threading.Event()
    spec = write_script(tmp_path / "a.json", FIX_SCRIPT_REPLIES)
    result = session.solve(repo, "calc.add is wrong", settings_for(repo, spec,
                                                                    **{"solve.candidates": 2}),
                           on_step=lambda index, event: cancel.set(), cancel=cancel)
    assert result.cancelled and result.ranking is None
    assert [c.status for c in result.candidates] == ["interrupted", "interrupted"]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "cancelled" and len(manifest["candidates"]) == 2


def test_where_code_goes():
    assert where_code_goes("embedded") is None
    assert where_code_goes("openai:http://localhost:8000/v1#m") is None
    assert "sent to 192.0.2.1" in where_code_goes("openai:http://192.0.2.1:8000/v1#m")
