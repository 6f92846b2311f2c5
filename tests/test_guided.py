"""The guided scaffold driven by the scripted model on a real repository, in a real work copy:
edit, retry after a miss, repair after a failed parse or test check, model errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from conftest import write_script
from sera.agent.guided import GuidedAgent
from sera.agent.trajectory import Trajectory
from sera.agent.workcopy import WorkCopy, snapshot_commit
from sera.config import AgentConfig, ModelConfig
from sera.models.registry import load_model


@dataclass
class Location:  # the shape of sera.agent.localize.Location
    path: str
    name: str
    start_line: int
    end_line: int
    score: float = 1.0
    reasons: list[str] = field(default_factory=lambda: ["named in the task"])


ADD = [Location("calc.py", "add", 1, 3)]
TEST = "python3 -c 'import calc; assert calc.add(2, 3) == 5, calc.add(2, 3)'"


def block(search: str, replace: str, path: str = "calc.py") -> str:
    return f"{path}\n```python\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```"


GOOD = "The sum subtracts.\n" + block("    return a - b", "    return a + b")
MISS = block("    return a - c", "    return a + b")
BROKEN = block("    return a - b", "    return (a + b")
WRONG = block("    return a - b", "    return a * b")


def run_guided(repo, tmp_path, replies, test_command=None, locations=ADD, **agent):
    spec = write_script(tmp_path / "script.json", replies)
    model = load_model(spec, ModelConfig(spec=spec))
    path = tmp_path / "trajectory.json"
    events = []
    with WorkCopy.create(repo, snapshot_commit(repo), parent=tmp_path / "work") as workcopy:
        traj = GuidedAgent(model, workcopy, Trajectory(path=path), AgentConfig(**agent),
                           ModelConfig(spec=spec, temperature=0.0), on_step=events.append,
                           test_command=test_command).run("calc.add returns the wrong sum",
                                                          locations=locations)
    loaded = Trajectory.load(path)
    assert loaded.messages == traj.messages and loaded.meta["status"] == traj.meta["status"]
    return loaded, events


def roles(traj):
    return [m["role"] for m in traj.messages]


def test_good_edit_is_submitted_with_the_patch(repo, tmp_path):
    traj, events = run_guided(repo, tmp_path, [GOOD], test_command=TEST)
    assert traj.meta["status"] == "submitted" and traj.meta["exit_message"] == "submitted"
    assert "-    return a - b\n+    return a + b" in traj.meta["patch"]
    assert "notes.txt" not in traj.meta["patch"]
    assert roles(traj) == ["system", "user", "assistant"]
    prompt = traj.messages[1]["content"]
    assert "calc.add returns the wrong sum" in prompt and "   3 |     return a - b" in prompt
    assert "```python\n   1 | def add(a, b):" in prompt
    assert "SEARCH" in traj.messages[0]["content"]
    assert traj.meta["locations"][0]["name"] == "add"
    assert traj.meta["locations"][0]["reasons"] == ["named in the task"]
    assert traj.meta["checks"][-1][-1]["name"] == "tests" and traj.meta["checks"][-1][-1]["ok"]
    assert traj.meta["completion_tokens"] > 0 and traj.meta["seconds"] >= 0
    assert traj.meta["steps"] == 1 and len(events) == 1


def test_miss_is_fed_back_and_the_retry_succeeds(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [MISS, GOOD])
    assert traj.meta["status"] == "submitted"
    assert roles(traj) == ["system", "user", "assistant", "user", "assistant"]
    feedback = traj.messages[3]["content"]
    assert "was not found" in feedback and "   3 |     return a - b" in feedback
    assert "+    return a + b" in traj.meta["patch"]


def test_two_misses_end_as_edit_failed(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [MISS, "I am not sure."])
    assert traj.meta["status"] == "edit_failed"
    assert "no SEARCH/REPLACE block" in traj.meta["exit_message"]
    assert traj.meta["patch"] == ""


def test_syntax_error_is_repaired(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [BROKEN, block("    return (a + b", "    return a + b")])
    assert traj.meta["status"] == "submitted"
    repair = traj.messages[3]["content"]
    assert "calc.py no longer parses" in repair and "line 3" in repair
    assert "+    return (a + b" in repair  # the patch so far is shown
    assert traj.meta["checks"][0][1] == {"name": "parse calc.py", "ok": False,
                                         "detail": traj.meta["checks"][0][1]["detail"]}
    assert "-    return a - b\n+    return a + b" in traj.meta["patch"]


def test_failing_tests_are_repaired(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [WRONG, block("    return a * b", "    return a + b")],
                         test_command=TEST)
    assert traj.meta["status"] == "submitted"
    repair = traj.messages[3]["content"]
    assert "failed" in repair and "AssertionError: 6" in repair
    assert "+    return a + b" in traj.meta["patch"]


def test_a_failed_repair_ends_as_check_failed_with_the_patch_kept(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [WRONG, block("    return a * b", "    return b * a")],
                         test_command=TEST)
    assert traj.meta["status"] == "check_failed"
    assert "AssertionError: 6" in traj.meta["exit_message"]
    assert "+    return b * a" in traj.meta["patch"]


def test_empty_patch_fails_the_check(repo, tmp_path):
    same = block("    return a - b", "    return a - b")
    traj, _ = run_guided(repo, tmp_path, [same, same])
    assert traj.meta["status"] == "check_failed" and "patch is empty" in traj.meta["exit_message"]


def test_model_error_is_saved(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [MISS])  # the script has no reply for the retry
    assert traj.meta["status"] == "model_error"
    assert "only 1 replies" in traj.meta["exit_message"]
    assert roles(traj)[-1] == "user"  # the retry request that got no answer


def test_cancel_before_the_first_request(repo, tmp_path):
    import threading
    cancel = threading.Event()
    cancel.set()
    spec = write_script(tmp_path / "script.json", [GOOD])
    model = load_model(spec, ModelConfig(spec=spec))
    with WorkCopy.create(repo, snapshot_commit(repo), parent=tmp_path / "work") as workcopy:
        traj = GuidedAgent(model, workcopy, Trajectory(path=tmp_path / "t.json"), AgentConfig(),
                           ModelConfig(spec=spec), cancel=cancel).run("task", locations=ADD)
    assert Trajectory.load(tmp_path / "t.json").meta["status"] == "interrupted" == traj.status


def test_code_view_merges_context_and_clips(repo, tmp_path):
    spec = write_script(tmp_path / "script.json", [GOOD])
    model = load_model(spec, ModelConfig(spec=spec))
    with WorkCopy.create(repo, snapshot_commit(repo), parent=tmp_path / "work") as workcopy:
        agent = GuidedAgent(model, workcopy, Trajectory(), AgentConfig(), ModelConfig(spec=spec))
        view = agent.code_view([Location("calc.py", "add", 1, 3), Location("calc.py", "scale", 6, 7)])
        assert view.count("calc.py (lines") == 1 and "add, scale" in view
        assert "   7 |     return [v * factor for v in values]" in view
        small = GuidedAgent(model, workcopy, Trajectory(), AgentConfig(),
                            ModelConfig(spec=spec, context_tokens=0, max_tokens=0))
        (workcopy.path / "long.py").write_text("".join(f"x{i} = {i}\n" for i in range(500)))
        clipped = small.code_view([Location("calc.py", "add", 1, 3),
                                   Location("long.py", "x", 1, 500)])
        assert "   1 | def add(a, b):" in clipped
        assert "more lines not shown" in clipped and len(clipped) < 2500
        # A large window, but agent.code_tokens caps the code: fewer lines than the default shows.
        long_file = [Location("long.py", "x", 1, 500)]
        default = GuidedAgent(model, workcopy, Trajectory(), AgentConfig(),
                              ModelConfig(spec=spec)).code_view(long_file)
        capped = GuidedAgent(model, workcopy, Trajectory(), AgentConfig(code_tokens=1000),
                             ModelConfig(spec=spec)).code_view(long_file)
        assert "more lines not shown" in capped and "more lines not shown" in default
        assert 0 < capped.count(" | x") < default.count(" | x")


def test_default_path_when_one_file_is_in_play(repo, tmp_path):
    reply = "```python\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n```"
    traj, _ = run_guided(repo, tmp_path, [reply])
    assert traj.meta["status"] == "submitted"


def test_localize_is_called_when_no_locations_are_given(repo, tmp_path, monkeypatch):
    import sys
    import types
    calls = []
    fake = types.ModuleType("sera.agent.localize")
    fake.localize = lambda root, task, limit=5: calls.append((root, task, limit)) or ADD
    monkeypatch.setitem(sys.modules, "sera.agent.localize", fake)
    traj, _ = run_guided(repo, tmp_path, [GOOD], locations=None)
    assert traj.meta["status"] == "submitted" and calls and calls[0][2] == 5
    assert traj.meta["locations"][0]["path"] == "calc.py"


def test_with_the_real_localizer_through_rollout(repo, tmp_path):
    """rollout() with scaffold guided: localize finds calc.add, the edit lands, the run is saved."""
    pytest.importorskip("sera.agent.localize")
    from sera.agent.rollout import rollout
    from sera.config import load_settings
    spec = write_script(tmp_path / "script.json", [GOOD])
    settings = load_settings(repo, {"model.spec": spec, "agent.scaffold": "guided",
                                    "agent.test_command": TEST})
    traj, warning = rollout(repo, snapshot_commit(repo), "calc.add returns the wrong sum",
                            load_model(spec, settings.model), settings, tmp_path / "r.json")
    assert warning is None
    loaded = Trajectory.load(tmp_path / "r.json")
    assert loaded.meta["status"] == "submitted" and loaded.meta["scaffold"] == "guided"
    assert loaded.meta["locations"][0]["path"] == "calc.py"
    assert loaded.meta["locations"][0]["name"] == "add"
    assert "+    return a + b" in loaded.meta["patch"]
