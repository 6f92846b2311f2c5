"""The guided scaffold driven by the scripted model on a real repository, in a real work copy:
edit, retry after a miss, repair after a failed parse or test check, model errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from conftest import git, write_script
from sera.agent.example import without_examples
from sera.agent.guided import PROMPTS, GuidedAgent
from sera.agent.localize import Location
from sera.agent.prompts import render
from sera.agent.searchreplace import apply_edits
from sera.agent.tools import ToolEnvironment
from sera.agent.trajectory import Trajectory
from sera.agent.views import shown_lines
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



def guided_agent(model, workcopy, trajectory, config, model_config, **options) -> GuidedAgent:
    """The guided scaffold on a work copy, in the environment rollout gives it."""
    return GuidedAgent(model, ToolEnvironment(workcopy, config), trajectory, config, model_config,
                       **options)

def block(search: str, replace: str, path: str = "calc.py") -> str:
    return f"{path}\n```python\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```"


GOOD = "The sum subtracts.\n" + block("    return a - b", "    return a + b")
MISS = block("    return a - c", "    return a + b")
BROKEN = block("    return a - b", "    return (a + b")
WRONG = block("    return a - b", "    return a * b")


def run_guided(repo, tmp_path, replies, test_command=None, locations=ADD, max_tokens=1024,
               **agent):
    spec = write_script(tmp_path / "script.json", replies)
    model = load_model(spec, ModelConfig(spec=spec))
    path = tmp_path / "trajectory.json"
    events = []
    with WorkCopy.create(repo, snapshot_commit(repo), parent=tmp_path / "work") as workcopy:
        traj = guided_agent(model, workcopy, Trajectory(path=path), AgentConfig(**agent),
                           ModelConfig(spec=spec, temperature=0.0, max_tokens=max_tokens),
                           on_step=events.append,
                           test_command=test_command).run("calc.add returns the wrong sum",
                                                          locations=locations)
    loaded = Trajectory.load(path)
    assert loaded.messages == traj.messages and loaded.meta["status"] == traj.meta["status"]
    return loaded, events


def talk(traj):
    """The conversation after the worked example every guided conversation opens with."""
    return without_examples(traj.messages)


def roles(traj):
    return [m["role"] for m in talk(traj)]


def test_good_edit_is_submitted_with_the_patch(repo, tmp_path):
    traj, events = run_guided(repo, tmp_path, [GOOD], test_command=TEST)
    assert traj.meta["status"] == "submitted" and traj.meta["exit_message"] == "submitted"
    assert "-    return a - b\n+    return a + b" in traj.meta["patch"]
    assert "notes.txt" not in traj.meta["patch"]
    assert roles(traj) == ["system", "user", "assistant"]
    prompt = talk(traj)[1]["content"]
    assert "calc.add returns the wrong sum" in prompt and "   3 |     return a - b" in prompt
    assert "```python\n   1 | def add(a, b):" in prompt
    assert "SEARCH" in talk(traj)[0]["content"]
    assert traj.meta["locations"][0]["name"] == "add"
    assert traj.meta["locations"][0]["reasons"] == ["named in the task"]
    assert traj.meta["checks"][-1][-1]["name"] == "tests" and traj.meta["checks"][-1][-1]["ok"]
    assert traj.meta["completion_tokens"] > 0 and traj.meta["seconds"] >= 0
    assert traj.meta["steps"] == 1 and len(events) == 1


def test_the_code_view_rewritten_in_place_is_taken_as_the_edit(repo, tmp_path):
    """The embedded 1.5B sometimes echoes the numbered view with the fix instead of blocks."""
    (tmp_path / "probe").mkdir()
    prompt_view = run_guided(repo, tmp_path / "probe", [GOOD])[0].messages[3]["content"]
    view = prompt_view[prompt_view.index("calc.py (lines"):].split("```\n\n")[0] + "```"
    rewrite = "Here is the fix:\n\n" + view.replace("return a - b", "return a + b")
    traj, _ = run_guided(repo, tmp_path, [rewrite], test_command=TEST)
    assert traj.meta["status"] == "submitted"
    assert "-    return a - b\n+    return a + b" in traj.meta["patch"]
    assert roles(traj) == ["system", "user", "assistant"]  # no retry was needed


def test_miss_is_fed_back_and_the_retry_succeeds(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [MISS, GOOD])
    assert traj.meta["status"] == "submitted"
    assert roles(traj) == ["system", "user", "assistant", "user", "assistant"]
    feedback = talk(traj)[3]["content"]
    assert "was not found" in feedback and "   3 |     return a - b" in feedback
    assert "+    return a + b" in traj.meta["patch"]


def test_the_worked_example_opens_the_conversation_and_a_copy_of_it_is_named_and_retried(
        repo, tmp_path):
    """The 1.5B answered with the instructions' placeholder block itself; the worked example that
    replaced it may be copied back too, and is named as such."""
    example_answer = render("guided_example_answer")
    traj, _ = run_guided(repo, tmp_path, [example_answer, GOOD])
    opening = traj.messages[:3]
    assert [m["role"] for m in opening] == ["system", "user", "assistant"]
    assert [bool(m.get("example")) for m in opening] == [False, True, True]
    assert "shapes/rect.py (lines 6-13: Rect.area)" in opening[1]["content"]
    assert "  10 |         return self.width * self.width" in opening[1]["content"]
    assert opening[2]["content"] == example_answer and traj.steps == 2
    assert traj.meta["status"] == "submitted"
    feedback = talk(traj)[3]["content"]
    assert "repeats the worked example (shapes/rect.py)" in feedback


def test_the_examples_code_quoted_in_a_block_for_a_real_file_is_named_too(repo, tmp_path):
    """The 1.5B put the example's first SEARCH line in blocks for its own files."""
    copied = ("calc.py\n```python\n<<<<<<< SEARCH\n        return self.width * self.width\n"
              "=======\n        return a + b\n>>>>>>> REPLACE\n```")
    traj, _ = run_guided(repo, tmp_path, [copied, GOOD])
    assert traj.meta["status"] == "submitted"
    assert "repeats the worked example" in talk(traj)[3]["content"]


def test_the_quickstart_answer_with_the_def_line_indented_like_its_body(repo, tmp_path):
    """Word for word the embedded 1.5B's failed quickstart candidate (stop 9)."""
    body = '    def add(a, b):\n    """Return the sum of a and b."""\n    return a - b'
    reply = ("```python\ncalc.py\n```python\n<<<<<<< SEARCH\n" + body + "\n=======\n"
             + body.replace("a - b", "a + b") + "\n>>>>>>> REPLACE\n```")
    traj, _ = run_guided(repo, tmp_path, [reply], test_command=TEST)
    assert traj.meta["status"] == "submitted"
    assert "-    return a - b\n+    return a + b" in traj.meta["patch"]
    changed = [line for line in traj.meta["patch"].splitlines()
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-    return a - b", "+    return a + b"]  # the def line kept its place


def test_a_reply_without_a_block_gets_a_ready_block_to_fix(repo, tmp_path):
    """The retry offers the located function as SEARCH and REPLACE; the model only edits it."""
    traj, _ = run_guided(repo, tmp_path, ["The bug is in add.", GOOD], test_command=TEST)
    assert traj.meta["status"] == "submitted" and traj.meta["skeleton"] == "add in calc.py"
    offer = talk(traj)[3]["content"]
    body = 'def add(a, b):\n    """Return the sum of a and b."""\n    return a - b'
    assert "no SEARCH/REPLACE block" in offer
    assert f"calc.py\n```python\n<<<<<<< SEARCH\n{body}\n=======\n{body}\n>>>>>>> REPLACE\n```" in offer
    # a function whose answer would not fit the reply limit gets the plain retry
    (tmp_path / "long").mkdir()
    traj, _ = run_guided(repo, tmp_path / "long", ["The bug is in add.", GOOD], max_tokens=80)
    assert "skeleton" not in traj.meta and "Answer again with corrected" in talk(traj)[3]["content"]


def test_a_search_not_in_the_file_gets_a_ready_block_of_the_closest_lines(repo, tmp_path):
    """The retry offers the file's lines closest to the invented SEARCH, exactly, as SEARCH and
    REPLACE of a block; the model only changes its REPLACE part."""
    invented = block('    """Return a plus b."""\n    return a - b', '    return a + b')
    traj, _ = run_guided(repo, tmp_path, [invented, GOOD], test_command=TEST)
    assert traj.meta["status"] == "submitted" and traj.meta["closest_block"] == ["calc.py"]
    offer = talk(traj)[3]["content"]
    real = '    """Return the sum of a and b."""\n    return a - b'
    assert "was not found in the file" in offer
    assert f"calc.py\n```python\n<<<<<<< SEARCH\n{real}\n=======\n{real}\n>>>>>>> REPLACE" in offer
    # lines whose block would not fit the reply limit get the plain retry
    (tmp_path / "short").mkdir()
    traj, _ = run_guided(repo, tmp_path / "short", [invented, GOOD], max_tokens=40)
    assert "closest_block" not in traj.meta and "Answer again with corrected" in talk(traj)[3]["content"]


def test_a_reply_cut_at_the_length_limit_is_told_to_skip_the_explanation(repo, tmp_path):
    rambling = "Let me explain the function in detail first. " * 20 + GOOD
    traj, _ = run_guided(repo, tmp_path, [rambling, GOOD], max_tokens=60)
    assert traj.meta["status"] == "submitted"
    assert "reached the length limit before the blocks were complete: answer with the blocks " \
           "only" in talk(traj)[3]["content"]


def test_a_wrong_search_in_a_reply_cut_at_the_length_limit_is_retried(repo, tmp_path):
    """An error with fields of its own (the closest lines of a SEARCH not found) keeps them when
    the length limit is added to its message (it once crashed the solve with a TypeError)."""
    invented = block('    """Return a plus b."""\n    return a - b', '    return a + b')
    rambling = invented + "\nNow let me explain why this is right. " * 20
    traj, _ = run_guided(repo, tmp_path, [rambling, GOOD], max_tokens=100)
    assert traj.meta["status"] == "submitted"
    offer = talk(traj)[3]["content"]
    assert "was not found in the file" in offer and "reached the length limit" in offer


def test_a_search_found_twice_is_taken_in_the_function_shown(repo, tmp_path):
    """The 1.5B quotes only the line it changes; where that line recurs in the file, the place
    inside the shown function is the one it means."""
    (repo / "checks.py").write_text(
        "def exact(message, wanted):\n    if wanted:\n        return message == wanted\n"
        "    return False\n\n\ndef pattern(message, wanted):\n    if wanted:\n"
        "        return message == wanted\n    return True\n")
    git(repo, "add", "checks.py")
    git(repo, "commit", "-qm", "checks")
    reply = block("    if wanted:", "    if wanted is not None:", path="checks.py")
    traj, _ = run_guided(repo, tmp_path, [reply], locations=[Location("checks.py", "pattern", 7, 10)])
    assert traj.meta["status"] == "submitted", traj.meta["exit_message"]
    assert "@@ -5,6 +5,6 @@ def exact" in traj.meta["patch"]  # the hunk is pattern's
    assert traj.meta["patch"].count("+    if wanted is not None:") == 1


SCALE_MISS = block("    return [v * factor for v in value]", "    return [factor * v for v in values]")
SCALE_FIX = block("    return [v * factor for v in values]", "    return [factor * v for v in values]")


def test_the_blocks_that_apply_stay_and_only_the_failed_one_is_asked_again(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [GOOD + "\n\n" + SCALE_MISS, SCALE_FIX],
                         test_command=TEST)
    assert traj.meta["status"] == "submitted", traj.meta["exit_message"]
    retry = talk(traj)[3]["content"]
    assert retry.startswith("Your blocks for calc.py were applied: they are in the files now, "
                            "do not send them again. One block did not apply")
    assert "was not found" in retry and "return [v * factor for v in value]" in retry
    patch = traj.meta["patch"]
    assert "+    return a + b" in patch and "+    return [factor * v for v in values]" in patch
    assert [e["failed_blocks"] for e in traj.meta["edits"]] == [1, 0]


def test_what_applied_stays_when_the_retry_fails_too(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [GOOD + "\n\n" + SCALE_MISS, SCALE_MISS],
                         test_command=TEST)
    assert traj.meta["status"] == "submitted", traj.meta["exit_message"]
    assert "+    return a + b" in traj.meta["patch"] and "factor * v" not in traj.meta["patch"]
    assert roles(traj) == ["system", "user", "assistant", "user", "assistant"]


def test_a_retry_after_several_failed_blocks_says_how_many(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [MISS + "\n\n" + SCALE_MISS, GOOD])
    assert traj.meta["status"] == "submitted", traj.meta["exit_message"]
    retry = talk(traj)[3]["content"]
    assert retry.startswith("None of the 2 blocks of your reply applied.\n\n")
    assert "return a - c" in retry and "send the block again" in retry


def test_a_block_naming_the_wrong_shown_file_lands_in_the_one_that_holds_it(repo, tmp_path):
    (repo / "shapes.py").write_text("def double(x):\n    return x + x\n")
    git(repo, "add", "shapes.py")
    git(repo, "commit", "-qm", "shapes")
    shown = [*ADD, Location("shapes.py", "double", 1, 2)]
    reply = block("    return x + x", "    return 2 * x")  # under calc.py's path
    traj, _ = run_guided(repo, tmp_path, [reply], locations=shown)
    assert traj.meta["status"] == "submitted", traj.meta["exit_message"]
    assert "+++ b/shapes.py" in traj.meta["patch"] and "+    return 2 * x" in traj.meta["patch"]


def test_two_misses_end_as_edit_failed(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [MISS, "I am not sure."])
    assert traj.meta["status"] == "edit_failed"
    assert "no SEARCH/REPLACE block" in traj.meta["exit_message"]
    assert traj.meta["patch"] == ""


def test_syntax_error_is_repaired(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [BROKEN, block("    return (a + b", "    return a + b")])
    assert traj.meta["status"] == "submitted"
    repair = talk(traj)[3]["content"]
    assert "calc.py no longer parses" in repair and "line 3" in repair
    assert "+    return (a + b" in repair  # the patch so far is shown
    assert traj.meta["checks"][0][1] == {"name": "parse calc.py", "ok": False,
                                         "detail": traj.meta["checks"][0][1]["detail"]}
    assert "-    return a - b\n+    return a + b" in traj.meta["patch"]


def test_failing_tests_are_repaired(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [WRONG, block("    return a * b", "    return a + b")],
                         test_command=TEST)
    assert traj.meta["status"] == "submitted"
    repair = talk(traj)[3]["content"]
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
        traj = guided_agent(model, workcopy, Trajectory(path=tmp_path / "t.json"), AgentConfig(),
                           ModelConfig(spec=spec), cancel=cancel).run("task", locations=ADD)
    assert Trajectory.load(tmp_path / "t.json").meta["status"] == "interrupted" == traj.status


def test_code_view_merges_context_and_clips(repo, tmp_path):
    spec = write_script(tmp_path / "script.json", [GOOD])
    model = load_model(spec, ModelConfig(spec=spec))
    with WorkCopy.create(repo, snapshot_commit(repo), parent=tmp_path / "work") as workcopy:
        agent = guided_agent(model, workcopy, Trajectory(), AgentConfig(), ModelConfig(spec=spec))
        view = agent.code_view([Location("calc.py", "add", 1, 3), Location("calc.py", "scale", 6, 7)])
        assert view.count("calc.py (lines") == 1 and "add, scale" in view
        assert "   7 |     return [v * factor for v in values]" in view
        small = guided_agent(model, workcopy, Trajectory(), AgentConfig(),
                            ModelConfig(spec=spec, context_tokens=0, max_tokens=0))
        (workcopy.path / "long.py").write_text("".join(f"x{i} = {i}\n" for i in range(500)))
        clipped = small.code_view([Location("calc.py", "add", 1, 3),
                                   Location("long.py", "x", 1, 500)])
        assert "   1 | def add(a, b):" in clipped
        assert "more lines not shown" in clipped and len(clipped) < 2500
        # read back, the clipped view holds add whole and the first lines of long.py only
        shown = shown_lines(clipped)
        assert shown["calc.py"][0][:3] == ["def add(a, b):", '    """Return the sum of a and b."""',
                                           "    return a - b"]
        assert shown["long.py"][0][0] == "x0 = 0" and 0 < len(shown["long.py"][0]) < 500
        # A large window, but agent.code_tokens caps the code: fewer lines than the default shows.
        long_file = [Location("long.py", "x", 1, 500)]
        default = guided_agent(model, workcopy, Trajectory(), AgentConfig(),
                              ModelConfig(spec=spec)).code_view(long_file)
        capped = guided_agent(model, workcopy, Trajectory(), AgentConfig(code_tokens=1000),
                             ModelConfig(spec=spec)).code_view(long_file)
        assert "more lines not shown" in capped and "more lines not shown" in default
        assert 0 < capped.count(" | x") < default.count(" | x")


def test_default_path_when_one_file_is_in_play(repo, tmp_path):
    reply = "```python\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n```"
    traj, _ = run_guided(repo, tmp_path, [reply])
    assert traj.meta["status"] == "submitted"


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
    from sera.agent.sandbox import bwrap_problem
    problem = bwrap_problem()  # the sandbox's warning reaches the caller, or there is none
    assert warning == (f"{problem}: commands run without a sandbox" if problem else None)
    loaded = Trajectory.load(tmp_path / "r.json")
    assert loaded.meta["status"] == "submitted" and loaded.meta["scaffold"] == "guided"
    assert loaded.meta["locations"][0]["path"] == "calc.py"
    assert loaded.meta["locations"][0]["name"] == "add"
    assert loaded.meta["localization"] == {"candidate": 0, "variant": "top", "ranks": [1, 2],
                                           "pinned": loaded.meta["localization"]["pinned"]}
    assert "+    return a + b" in loaded.meta["patch"]


# ---------------------------------------------------------------------------------------------
# Candidates over different localizations

def test_solve_candidates_look_at_different_views_of_the_ranking(tmp_path, monkeypatch):
    from test_localize import SOURCES, TASKS, make_repo
    from sera.agent.localize import clear_cache, localize
    from sera.agent.solve import solve
    from sera.config import load_settings
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    clear_cache()
    shop = make_repo(tmp_path / "shop", SOURCES)
    fix = block("    return round_cents(amount - amount * percent / 100)",
                "    return round_cents(amount * (100 - percent) / 100)", path="shop/discounts.py")
    spec = write_script(tmp_path / "script.json", [fix])
    settings = load_settings(shop, {"model.spec": spec, "agent.scaffold": "guided",
                                    "solve.candidates": 4})
    task = TASKS[4][0]  # percentage coupons applied twice: apply_discount, no decisive location
    result = solve(shop, task, settings, load_model(spec, settings.model))
    metas = {c.index: Trajectory.load(c.trajectory).meta for c in result.candidates}
    views = [metas[i]["localization"] for i in range(4)]
    assert [v["variant"] for v in views] == ["top", "drop-top", "sample", "sample"]
    assert [v["candidate"] for v in views] == [0, 1, 2, 3] and not views[0]["pinned"]
    assert views[0]["ranks"] == [1, 2, 3, 4, 5] and views[1]["ranks"] == [2, 3, 4, 5, 6]
    assert views[2]["ranks"] != views[0]["ranks"] and views[3]["ranks"] != views[0]["ranks"]
    assert all(len(v["ranks"]) == 5 and max(v["ranks"]) <= 10 for v in views)
    ranked = localize(shop, task, limit=10)
    for view, meta in zip(views, (metas[i] for i in range(4))):
        shown = [loc["name"] for loc in meta["locations"]]
        assert shown == [ranked[r - 1].name for r in view["ranks"]]
        assert meta["status"] == "submitted"
    by_index = {c.index: c for c in result.candidates}
    assert by_index[1].locations[0]["name"] != "apply_discount"  # what solve reports per candidate


# ---------------------------------------------------------------------------------------------
# The model's choice among the located functions

ADD_AND_SCALE = [Location("calc.py", "add", 1, 3), Location("calc.py", "scale", 6, 7)]


def test_the_model_chooses_which_location_to_edit(repo, tmp_path):
    scale = block("    return [v * factor for v in values]",
                  "    return [factor * v for v in values]")
    traj, events = run_guided(repo, tmp_path, ["2", scale], locations=ADD_AND_SCALE,
                              choose_locations=True)
    assert traj.meta["status"] == "submitted"
    assert roles(traj) == ["system", "user", "assistant", "user", "assistant"]
    request = talk(traj)[1]["content"]
    assert "calc.add returns the wrong sum" in request
    assert "1. calc.py, lines 1-3: add\n   def add(a, b):" in request
    assert "2. calc.py, lines 6-7: scale\n   def scale(values, factor):" in request
    assert talk(traj)[2]["content"] == "2"
    assert traj.meta["location_choice"] == {"offered": ["calc.py:add", "calc.py:scale"],
                                            "chosen": [2], "fallback": None}
    assert [loc["name"] for loc in traj.meta["locations"]] == ["scale"]
    edit = talk(traj)[3]["content"]
    assert "calc.py (lines 3-7: scale)" in edit and "   1 | def add" not in edit
    assert "<task>" not in edit  # the task was in the choice request already
    assert events[0].observation == "chose calc.py:scale"
    assert "+    return [factor * v for v in values]" in traj.meta["patch"]


@pytest.mark.parametrize("answer, reason", [
    ("The sum looks wrong to me.", "names no location number"),
    ("7", "the answer names 7, but the locations were numbered 1 to 2"),
    (GOOD, "holds SEARCH/REPLACE blocks"),
])
def test_a_bad_choice_keeps_the_ranked_locations(repo, tmp_path, answer, reason):
    traj, events = run_guided(repo, tmp_path, [answer, GOOD], locations=ADD_AND_SCALE,
                              choose_locations=True)
    assert traj.meta["status"] == "submitted"
    assert traj.meta["location_choice"]["chosen"] == []
    assert reason in traj.meta["location_choice"]["fallback"]
    assert [loc["name"] for loc in traj.meta["locations"]] == ["add", "scale"]
    assert answer.startswith(talk(traj)[2]["content"])  # cut to CHOICE_TOKENS
    assert "add, scale" in talk(traj)[3]["content"]
    assert events[0].observation.startswith("kept the ranked locations: ")


def test_no_choice_is_asked_for_a_single_location(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [GOOD], choose_locations=True)
    assert roles(traj) == ["system", "user", "assistant"] and "location_choice" not in traj.meta


def test_choice_answers_are_read_strictly():
    from sera.agent.guided import parse_choice
    assert parse_choice("2", 5) == ([2], None)
    assert parse_choice("1, 3", 5) == ([1, 3], None)
    assert parse_choice("Locations 3 and 1, then 3 again.", 5) == ([3, 1], None)
    assert parse_choice("2 (lines 9-12 of calc.py:10)", 5) == ([2], None)
    assert parse_choice("`4`", 4) == ([4], None)
    assert parse_choice("9, 2", 5) == ([2], None)  # out of range ignored when one is valid
    assert parse_choice("about 2.5", 5)[0] == []
    assert parse_choice("0", 5) == (
        [], "the answer names 0, but the locations were numbered 1 to 5")


def test_choose_locations_is_a_setting(repo):
    from sera.config import load_settings
    assert load_settings(repo).agent.choose_locations is False
    settings = load_settings(repo, environ={"SERA_AGENT_CHOOSE_LOCATIONS": "yes"})
    assert settings.agent.choose_locations is True


# ---------------------------------------------------------------------------------------------
# The scaffold an adapter was trained in


def test_auto_scaffold_follows_the_adapter_card_where_the_model_can_drive_it(tmp_path):
    import json
    from sera.agent.rollout import choose_scaffold
    from sera.errors import SeraError
    guided, agent, old, broken = (tmp_path / n for n in ("guided", "agent", "old", "broken"))
    for folder, card in ((guided, {"scaffold": "guided"}), (agent, {"scaffold": "agent"}),
                         (old, {"student": "embedded"})):
        folder.mkdir()
        (folder / "card.json").write_text(json.dumps(card))
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    assert choose_scaffold("auto", "transformers:/models/tiny", str(guided)) == "guided"
    assert choose_scaffold("auto", "transformers:/models/tiny", str(agent)) == "agent"
    assert choose_scaffold("auto", "embedded", str(agent)) == "guided"  # it cannot drive the loop
    assert choose_scaffold("auto", "embedded", str(old)) == "guided"  # by backend name
    assert choose_scaffold("auto", "openai:http://x/v1#m", str(broken)) == "agent"
    assert choose_scaffold("auto", "openai:http://x/v1#m", str(tmp_path / "gone")) == "agent"
    assert choose_scaffold("agent", "embedded", str(guided)) == "agent"  # an explicit setting wins
    assert choose_scaffold("auto", "embedded:0.5b", None) == "guided"
    with pytest.raises(SeraError, match="use agent, guided or auto"):
        choose_scaffold("loop", "embedded", str(guided))


# ---------------------------------------------------------------------------------------------
# Whole functions written back (agent.edit_format = functions)

FIXED_ADD = 'calc.py\n```python\ndef add(a, b):\n    """Return the sum of a and b."""\n    return a + b\n```'
SAME_ADD = FIXED_ADD.replace("a + b", "a - b")


def test_a_function_written_back_is_swapped_in(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, ["Fixed:\n" + FIXED_ADD], test_command=TEST,
                         edit_format="functions")
    assert traj.meta["status"] == "submitted" and traj.meta["edit_format"] == "functions"
    assert "-    return a - b\n+    return a + b" in traj.meta["patch"]
    removed = [line for line in traj.meta["patch"].splitlines()
               if line.startswith("-") and not line.startswith("---")]
    assert removed == ["-    return a - b"]  # only the changed line, the rest kept
    system, request = talk(traj)[0]["content"], talk(traj)[1]["content"]
    assert "complete new code of each function" in system and "SEARCH" not in system
    assert "calc.py (function add)\n```python\ndef add(a, b):" in request
    assert "   3 |" not in request  # no line numbers to copy back


def test_an_unchanged_function_is_retried_and_blocks_are_read_too(repo, tmp_path):
    traj, _ = run_guided(repo, tmp_path, [SAME_ADD, GOOD], test_command=TEST,
                         edit_format="functions")
    assert traj.meta["status"] == "submitted"
    retry = talk(traj)[3]["content"]
    assert "(add) is unchanged" in retry and "complete code of each function" in retry


def test_a_function_that_was_not_shown_fails_the_edit(repo, tmp_path):
    other = "calc.py\n```python\ndef subtract(a, b):\n    return a - b\n```"
    traj, _ = run_guided(repo, tmp_path, [other, "I do not know."], edit_format="functions")
    assert traj.meta["status"] == "edit_failed"
    assert "`subtract` is not one of the functions shown (add)" in talk(traj)[3]["content"]
    assert "no function in a fenced code block" in traj.meta["exit_message"]


def test_the_repair_round_finds_the_function_where_the_first_edit_moved_it(repo, tmp_path):
    longer = FIXED_ADD.replace('    return a + b', '    total = a - b\n    return (total')
    repaired = FIXED_ADD.replace('    return a + b', '    total = a + b\n    return total')
    traj, _ = run_guided(repo, tmp_path, [longer, repaired], test_command=TEST,
                         edit_format="functions")
    assert traj.meta["status"] == "submitted", traj.meta["exit_message"]
    assert "+    total = a + b\n+    return total" in traj.meta["patch"]


def test_a_bad_edit_format_is_refused(repo, tmp_path):
    from sera.errors import SeraError
    with pytest.raises(SeraError, match="edit_format = 'diff' is not valid"):
        run_guided(repo, tmp_path, [GOOD], edit_format="diff")


def test_a_function_and_a_block_in_one_answer_both_apply(repo, tmp_path):
    both = FIXED_ADD + "\n\n" + block("def scale(values, factor):", "def scale(values, factor=1):")
    traj, _ = run_guided(repo, tmp_path, [both], test_command=TEST, edit_format="functions")
    assert traj.meta["status"] == "submitted"
    assert "+    return a + b" in traj.meta["patch"]
    assert "+def scale(values, factor=1):" in traj.meta["patch"]


def test_functions_too_long_to_write_back_are_not_offered(repo, tmp_path):
    long_body = "".join(f"    value_{n} = {n}\n" for n in range(200))
    (repo / "calc.py").write_text((repo / "calc.py").read_text() + "\n\ndef big():\n" + long_body)
    lines = (repo / "calc.py").read_text().count("\n")
    both = ADD + [Location("calc.py", "big", lines - 199, lines)]
    traj, _ = run_guided(repo, tmp_path, [FIXED_ADD], locations=both, max_tokens=400,
                         edit_format="functions")
    assert "def add(a, b):" in talk(traj)[1]["content"]
    assert "def big():" not in talk(traj)[1]["content"]


@pytest.mark.parametrize("edit_format", ["blocks", "functions"])
def test_the_worked_examples_answer_fixes_the_example_as_the_format_reads_it(tmp_path, edit_format):
    from sera.agent.example import EXAMPLE_PATH, example_messages
    from sera.agent.rewrite import function_edits
    from sera.agent.searchreplace import parse_edits
    from sera.agent.views import view_lines
    source = render("guided_example_source") + "\n"
    (tmp_path / EXAMPLE_PATH).parent.mkdir(parents=True)
    (tmp_path / EXAMPLE_PATH).write_text(source)
    request, answer = example_messages(edit_format, PROMPTS[edit_format]["edit"])
    shown = [Location(EXAMPLE_PATH, "Rect.area", 9, 10, 1.0, [])]
    edits = function_edits(tmp_path, answer["content"], shown) if edit_format == "functions" \
        else parse_edits(answer["content"])
    apply_edits(tmp_path, edits, None)
    assert (tmp_path / EXAMPLE_PATH).read_text() == source.replace(
        "self.width * self.width", "self.width * self.height")
    assert view_lines(source)[9] == "        return self.width * self.width"  # line 10
