"""Reranker evaluation metrics on hand-made groups whose answers are known."""

from __future__ import annotations

import pytest

from sera.reranker.labels import LabeledPatch, TaskGroup
from sera.reranker.metrics import (auc, calibrate_threshold, evaluate, majority_vote,
                                         oracle, per_task_auc, random_choice, top1)


def patch(*added: str) -> str:
    body = "".join(f"+{line}\n" for line in added)
    return f"--- a/f.py\n+++ b/f.py\n@@ -1,0 +1,{len(added)} @@\n{body}"


GOOD, BAD, OTHER = patch("return a + b"), patch("return a * b"), patch("return 0")


def group(*candidates: tuple[str, float], tests=None) -> TaskGroup:
    return TaskGroup("t", "task", GOOD, [LabeledPatch(p, recall=r, tests_passed=tests)
                                         for p, r in candidates])


def test_auc_is_one_half_and_zero_for_perfect_tied_and_reversed_scores():
    successes = [True, True, False, False]
    assert auc([0.9, 0.8, 0.2, 0.1], successes) == 1.0
    assert auc([0.5, 0.5, 0.5, 0.5], successes) == 0.5
    assert auc([0.1, 0.2, 0.8, 0.9], successes) == 0.0
    assert auc([0.9, 0.1, 0.5, 0.05], successes) == 0.75  # 3 of 4 pairs ordered right
    assert auc([0.1, 0.2], [True, True]) is None  # one kind only: undefined


def test_per_task_auc_averages_only_the_tasks_where_it_is_defined():
    mixed = group((GOOD, 1.0), (BAD, 0.0))
    all_good = group((GOOD, 1.0), (GOOD, 0.9))
    value, tasks = per_task_auc([mixed, all_good, mixed], [[0.9, 0.1], [0.3, 0.2], [0.1, 0.9]], 0.5)
    assert (value, tasks) == (0.5, 2)
    assert per_task_auc([all_good], [[0.1, 0.2]], 0.5) == (None, 0)


def test_random_choice_is_the_exact_expected_value():
    g = group((GOOD, 1.0), (BAD, 0.2), (OTHER, 0.0))
    solved, recall = random_choice(g, recall_threshold=0.5)
    assert solved == pytest.approx(1 / 3) and recall == pytest.approx(0.4)


def test_top1_picks_the_best_score_and_splits_ties_in_expectation():
    g = group((GOOD, 1.0), (BAD, 0.2), (OTHER, 0.0))
    assert top1(g, [0.9, 0.5, 0.1], 0.5) == (1.0, 1.0)
    assert top1(g, [0.1, 0.5, 0.9], 0.5) == (0.0, 0.0)
    solved, recall = top1(g, [0.7, 0.7, 0.1], 0.5)
    assert solved == pytest.approx(0.5) and recall == pytest.approx(0.6)


def test_majority_vote_counts_identical_changes_and_splits_ties():
    # The same change at another offset, with an index line and a trailing blank, is one cluster.
    good_again = "index 1a2b3c4..5d6e7f8 100644\n" + GOOD.replace("-1,0 +1,1", "-7,0 +7,1") + "  "
    g = group((BAD, 0.0), (GOOD, 1.0), (good_again, 1.0))
    assert majority_vote(g, 0.5) == (1.0, 1.0)
    tie = group((GOOD, 1.0), (GOOD, 1.0), (BAD, 0.0), (BAD, 0.0), (OTHER, 0.0))
    solved, recall = majority_vote(tie, 0.5)
    assert solved == pytest.approx(0.5) and recall == pytest.approx(0.5)
    all_different = group((GOOD, 1.0), (BAD, 0.0), (OTHER, 0.0), (patch("pass"), 0.0))
    assert majority_vote(all_different, 0.5)[0] == pytest.approx(0.25)  # a 4-way tie


def test_an_empty_patch_does_not_win_the_vote():
    g = group(("", 0.0), ("", 0.0), ("", 0.0), (GOOD, 1.0))
    assert majority_vote(g, 0.5) == (1.0, 1.0)
    assert majority_vote(group(("", 0.0), ("", 0.0)), 0.5) == (0.0, 0.0)


def test_oracle_is_the_best_available_and_tests_decide_success_when_they_ran():
    g = group((BAD, 0.3), (OTHER, 0.6))
    assert oracle(g, 0.5) == (1.0, 0.6)
    assert oracle(g, 0.7) == (0.0, 0.6)
    failed_tests = group((GOOD, 1.0), tests=False)
    assert oracle(failed_tests, 0.5) == (0.0, 1.0)


def test_calibrated_threshold_is_the_lowest_score_that_keeps_the_confidence():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    successes = [True, True, False, True, False, False]
    # From the top: 1/1, 2/2, 2/3, 3/4, 3/5, 3/6 succeeded.
    assert calibrate_threshold(scores, successes, 0.75) == 0.6
    assert calibrate_threshold(scores, successes, 0.5) == 0.4
    assert calibrate_threshold(scores, successes, 1.0) == 0.8
    assert calibrate_threshold(scores, [False] * 6, 0.5) is None
    assert calibrate_threshold([], [], 0.5) is None
    # Equal scores are kept or dropped together.
    assert calibrate_threshold([0.5, 0.5, 0.2], [True, False, False], 0.75) is None


def test_evaluate_compares_every_method_on_the_same_candidates():
    ranked_well = group((GOOD, 1.0), (BAD, 0.0), (BAD, 0.0), (OTHER, 0.0))
    hard = group((GOOD, 0.4), (BAD, 0.0), (OTHER, 0.2), (OTHER, 0.2))
    scores = [[0.9, 0.2, 0.2, 0.1], [0.3, 0.1, 0.8, 0.8]]
    result = evaluate([ranked_well, hard], scores, recall_threshold=0.5, confidence=0.5)
    assert result["tasks"] == 2 and result["candidates"] == [4]
    assert result["top1"] == {"solved": 0.5, "recall": pytest.approx(0.6)}
    assert result["random"]["solved"] == pytest.approx(0.125)
    assert result["random"]["recall"] == pytest.approx((0.25 + 0.2) / 2)
    assert result["majority"]["solved"] == 0.0  # BAD twice, OTHER twice
    assert result["oracle"] == {"solved": 0.5, "recall": pytest.approx(0.7)}
    assert result["auc"] == 1.0 and result["auc_per_task"] == 1.0 and result["auc_tasks"] == 1
    assert result["threshold"] == 0.9


def test_evaluate_refuses_scores_that_do_not_match_the_candidates():
    with pytest.raises(ValueError):
        evaluate([group((GOOD, 1.0), (BAD, 0.0))], [[0.1]], 0.5, 0.5)
