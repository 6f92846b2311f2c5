"""Ranking the candidates of a solve on real repositories: votes of identical patches, the cheap
filters (applies to the current tree, parses, tests), the reranker's score, and the order they
make; through solve(), `sera apply` and what `sera solve` prints.

The reranker here is a fake at the edge (the model): it scores patches by a rule on their text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Sequence

import pytest

from conftest import CALC, FIX_SCRIPT_REPLIES, tool_call, user_state, write_script
from sera import cli
from sera.agent.apply import apply_candidate
from sera.agent.ranking import rank_candidates
from sera.diff import normalize
from sera.agent.solve import solve
from sera.agent.summary import ordering_notes
from sera.agent.workcopy import WorkCopy, snapshot_commit
from sera.config import load_settings
from sera.models.base import Reranker
from sera.models.registry import load_model

TEST = "python3 -c 'import calc; assert calc.add(2, 3) == 5, calc.add(2, 3)'"
TASK = "calc.add returns the wrong sum"


class RuleReranker:
    """Scores each patch by `rule(patch)`; records its calls."""

    def __init__(self, rule: Callable[[str], float], threshold: float | None = None,
                 error: Exception | None = None):
        self.name, self.threshold = "rule", threshold
        self.rule, self.error = rule, error
        self.calls: list[list[str]] = []
        self.closed = False

    def score(self, task: str, patches: Sequence[str]) -> list[float]:
        self.calls.append(list(patches))
        if self.error is not None:
            raise self.error
        return [self.rule(p) for p in patches]

    def close(self) -> None:
        self.closed = True


def prefers(text: str, high: float = 0.9, low: float = 0.1) -> Callable[[str], float]:
    return lambda patch: high if text in patch else low


@dataclass
class Cand:
    index: int
    patch: str
    trajectory: str = ""


def make_patch(repo, commit, old: str, new: str) -> str:
    with WorkCopy.create(repo, commit) as workcopy:
        target = workcopy.path / "calc.py"
        target.write_text(target.read_text().replace(old, new))
        return workcopy.diff()


@pytest.fixture
def patches(repo):
    commit = snapshot_commit(repo)
    made = {name: make_patch(repo, commit, "return a - b", new) for name, new in
            [("plus", "return a + b"), ("times", "return a * b"), ("broken", "return (a + b"),
             ("swapped", "return b + a")]}
    return commit, made


def rank(repo, commit, cands, reranker=None, **flags):
    settings = load_settings(repo, flags)
    return rank_candidates(repo, commit, TASK, cands, reranker, settings)


def entries_by_index(ranking):
    return {e.index: e for e in ranking.entries}


def test_normalize_patch_ignores_line_numbers_index_lines_and_trailing_spaces():
    a = ("diff --git a/x.py b/x.py\nindex 1111111..2222222 100644\n--- a/x.py\n+++ b/x.py\n"
         "@@ -1,3 +1,3 @@ def f():\n     y = 1\n-    return a\n+    return b\n")
    b = ("diff --git a/x.py b/x.py\nindex 3333333..4444444 100644\n--- a/x.py\n+++ b/x.py\n"
         "@@ -10,3 +10,3 @@\n     y = 1   \n-    return a\n+    return b  \n\n")
    assert normalize(a) == normalize(b)
    assert "index" not in normalize(a) and "+    return b" in normalize(a)
    assert normalize(a) != normalize(a.replace("+    return b", "+    return c"))
    assert normalize(a) != normalize(a.replace("x.py", "z.py"))


def test_identical_patches_are_one_vote_each_and_scored_once(repo, patches):
    commit, p = patches
    reranker = RuleReranker(prefers("a + b"))
    respaced = p["times"].replace("+    return a * b", "+    return a * b   ")
    cands = [Cand(0, p["times"]), Cand(1, p["plus"]), Cand(2, respaced), Cand(3, "")]
    ranking = rank(repo, commit, cands, reranker)
    got = entries_by_index(ranking)
    assert (got[0].votes, got[2].votes, got[1].votes) == (2, 2, 1)
    assert got[2].duplicate_of == 0 and got[0].duplicate_of is None
    assert reranker.calls == [[p["times"], p["plus"]]]  # one call, unique patches, no empty one
    assert got[2].score == got[0].score == 0.1 and got[1].score == 0.9
    assert [e.index for e in ranking.entries] == [1, 0, 2, 3]  # score beats votes; empty last
    assert [e.rank for e in ranking.entries] == [1, 2, 3, 4]
    assert got[3].score is None and got[3].votes == 0 and ranking.scored


def test_without_scores_votes_decide(repo, patches):
    commit, p = patches
    cands = [Cand(0, p["plus"]), Cand(1, p["times"]), Cand(2, p["times"])]
    ranking = rank(repo, commit, cands)
    assert [e.index for e in ranking.entries] == [1, 2, 0]
    assert ranking.reranker is None and ranking.confident is None and not ranking.scored
    assert all(e.filters == {"applies": True, "parses": True, "tests": None}
               for e in ranking.entries)


def test_a_patch_that_breaks_parsing_is_not_scored_and_ranks_below(repo, patches):
    commit, p = patches
    reranker = RuleReranker(prefers("(a + b", high=5.0))
    ranking = rank(repo, commit, [Cand(0, p["broken"]), Cand(1, p["broken"]), Cand(2, p["times"])],
                   reranker)
    got = entries_by_index(ranking)
    assert got[0].filters["parses"] is False and got[0].score is None
    assert "calc.py no longer parses" in got[0].check_detail
    assert reranker.calls == [[p["times"]]]
    assert [e.index for e in ranking.entries] == [2, 0, 1]  # two votes do not beat a failed filter


def test_a_patch_that_no_longer_applies_after_the_users_edit(repo, patches):
    commit, p = patches
    (repo / "calc.py").write_text(CALC.replace("return a - b", "return sum((a, b))"))
    before = user_state(repo)
    ranking = rank(repo, commit, [Cand(0, p["plus"]), Cand(1, p["plus"])], RuleReranker(len))
    assert user_state(repo) == before
    entry = ranking.entries[0]
    assert entry.filters == {"applies": False, "parses": True, "tests": None}
    assert "does not apply to your working tree" in entry.check_detail and entry.score is None
    assert ranking.confident is None  # no threshold


def test_failing_tests_rank_below_passing_ones_whatever_the_score(repo, patches):
    commit, p = patches
    reranker = RuleReranker(prefers("a * b"), threshold=0.5)
    cands = [Cand(0, p["times"]), Cand(1, p["times"]), Cand(2, p["swapped"]), Cand(3, p["plus"])]
    ranking = rank(repo, commit, cands, reranker, **{"agent.test_command": TEST})
    got = entries_by_index(ranking)
    assert got[0].filters["tests"] is False and "AssertionError: 6" in got[0].check_detail
    assert got[2].filters["tests"] is True and got[3].filters["tests"] is True
    assert reranker.calls == [[p["swapped"], p["plus"]]]
    assert [e.index for e in ranking.entries][:2] == [2, 3]  # equal scores: the lower index first
    assert ranking.confident is False and ranking.test_command == TEST  # 0.1 < 0.5


def test_confident_when_a_score_clears_the_threshold(repo, patches):
    commit, p = patches
    ranking = rank(repo, commit, [Cand(0, p["plus"])], RuleReranker(prefers("a + b"), 0.5))
    assert ranking.confident is True and ranking.threshold == 0.5 and ranking.reranker == "rule"


def test_a_failing_reranker_leaves_the_order_of_filters_and_votes(repo, patches):
    commit, p = patches
    reranker = RuleReranker(len, threshold=0.5, error=RuntimeError("out of memory"))
    cands = [Cand(0, p["plus"]), Cand(1, p["times"]), Cand(2, p["times"]), Cand(3, p["broken"])]
    ranking = rank(repo, commit, cands, reranker)
    assert "reranker rule failed" in ranking.error and "out of memory" in ranking.error
    assert [e.index for e in ranking.entries] == [1, 2, 0, 3]
    assert ranking.confident is None and not ranking.scored


def test_the_guided_candidates_own_test_run_is_reused(repo, tmp_path):
    log = tmp_path / "test-runs.log"
    command = f"echo run >> {log}; {TEST}"
    fix = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"
    result = run_solve(repo, tmp_path, [fix], candidates=2, **{
        "agent.scaffold": "guided", "agent.test_command": command, "agent.sandbox": "none"})
    assert log.read_text() == "run\nrun\n"  # once per candidate by the scaffold, never again
    assert [c.filters["tests"] for c in result.candidates] == [True, True]
    assert [c.votes for c in result.candidates] == [2, 2]


def run_solve(repo, tmp_path, replies, candidates=2, reranker=None, **flags):
    spec = write_script(tmp_path / "script.json", replies)
    settings = load_settings(repo, {"model.spec": spec, "solve.candidates": candidates,
                                    "solve.parallel": 1, **flags})
    return solve(repo, TASK, settings, load_model(spec, settings.model), reranker=reranker)


# Candidate 0 multiplies, every later one adds: the script counts rollouts in a file outside the
# work copy (so the sandbox is off).
def counting_script(counter) -> list[str]:
    command = (f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n + 1)) > {counter}; "
               f"if [ $n = 0 ]; then sed -i 's/a - b/a * b/' calc.py; "
               f"else sed -i 's/a - b/a + b/' calc.py; fi")
    return [tool_call("bash", command=command), tool_call("submit"), tool_call("submit")]


def test_solve_ranks_saves_and_apply_takes_the_top_one(repo, tmp_path):
    reranker = RuleReranker(prefers("a + b"), threshold=0.5)
    result = run_solve(repo, tmp_path, counting_script(tmp_path / "n"), candidates=3,
                       reranker=reranker, **{"agent.sandbox": "none"})
    assert isinstance(reranker, Reranker)
    assert [c.index for c in result.candidates] == [1, 2, 0] and result.ranked
    assert [c.rank for c in result.candidates] == [1, 2, 3]
    assert result.candidates[0].score == 0.9 and result.candidates[0].votes == 2
    assert result.candidates[1].duplicate_of == 1
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["ranked"] and manifest["confident"] is True
    assert [c["index"] for c in manifest["candidates"]] == [1, 2, 0]
    assert manifest["ranking"]["order"] == [1, 2, 0] and manifest["ranking"]["reranker"] == "rule"
    applied = apply_candidate(repo)
    assert applied.label.startswith("candidate 1 of run")
    assert "return a + b" in (repo / "calc.py").read_text()


def test_apply_takes_the_top_ranked_even_when_listed_later(repo, tmp_path):
    result = run_solve(repo, tmp_path, counting_script(tmp_path / "n"), candidates=2,
                       **{"agent.sandbox": "none", "agent.test_command": TEST})
    assert [c.index for c in result.candidates] == [1, 0]  # candidate 0 fails the tests
    manifest_file = result.run_dir / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["candidates"].reverse()  # the order on disk does not matter, the rank does
    manifest_file.write_text(json.dumps(manifest))
    assert apply_candidate(repo).label.startswith("candidate 1 of run")


def test_a_failing_reranker_loses_no_candidate(repo, tmp_path, capsys):
    reranker = RuleReranker(len, threshold=0.5, error=RuntimeError("CUDA out of memory"))
    result = run_solve(repo, tmp_path, FIX_SCRIPT_REPLIES, reranker=reranker)
    assert len(result.candidates) == 2 and not result.ranked
    assert "CUDA out of memory" in result.ranking_error
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and len(manifest["candidates"]) == 2
    assert "CUDA out of memory" in manifest["ranking_error"]
    notes = "\n".join(ordering_notes(result))
    assert "warning: reranker rule failed" in notes
    assert "not scored; they are ordered by filters and votes" in notes


def test_printed_ranking_and_the_not_confident_message(repo, tmp_path, capsys):
    result = run_solve(repo, tmp_path, counting_script(tmp_path / "n"), candidates=2,
                       reranker=RuleReranker(prefers("a + b", high=0.4), threshold=0.5),
                       **{"agent.sandbox": "none"})
    cli._print_result(result)
    out = capsys.readouterr().out
    assert "rank 1: score 0.400, 1 vote; applies yes, parses yes, tests -" in out
    assert ("no confident fix: no candidate scores above the reranker's threshold (0.500); "
            "review the patches before applying one") in ordering_notes(result)
    assert out.index("rank 1:") < out.index("rank 2:")


def test_sera_solve_says_when_no_reranker_is_trained(repo, tmp_path):
    from test_cli import sera
    spec = write_script(tmp_path / "s.json", FIX_SCRIPT_REPLIES)
    out = sera(repo, "solve", "--model", spec, "-n", "2", "add is wrong")
    assert out.returncode == 0, out.stderr
    assert "rank 1: score -, 2 votes; applies yes, parses yes, tests -" in out.stdout
    assert "(the same patch as candidate 0)" in out.stdout
    assert "no reranker is trained yet: run sera specialize . to train one; candidates are " \
           "ordered by filters and votes" in out.stdout
    off = sera(repo, "solve", "--model", spec, "-n", "1", "--reranker", "none", "add is wrong")
    assert "scoring is off (rerank.reranker = none)" in off.stdout
    unknown = sera(repo, "solve", "--model", spec, "--reranker", "nosuch", "add is wrong")
    assert unknown.returncode == 1 and "reranker 'nosuch' not found" in unknown.stderr
    assert "loading model" not in unknown.stderr  # refused before the slow load
