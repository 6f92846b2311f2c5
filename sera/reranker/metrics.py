"""How well a reranker picks among the candidates of held-out tasks, against the baselines.

METHODS.md section 2: always compare a reranker with random choice and majority vote at the same
number of candidates, and report AUC, not only top-1. Every method picks one candidate per task
from the same candidates; each is measured as the share of tasks solved (the pick succeeded) and
the mean recall of the pick ("recall@1"):

- top-1: the reranker's highest score (tied top scores split in expectation);
- random: the expected value of a uniform pick, computed exactly, not sampled;
- majority: the most frequent patch, patches compared as `sera solve` counts its votes
  (`sera.diff.normalize`: index lines, hunk line numbers and trailing blanks ignored); an
  empty patch does not vote unless every candidate is empty; tied clusters split in expectation;
- oracle: the best available (solved when any candidate succeeded; the highest recall).

    groups = [TaskGroup.from_dict(row) for row in rows]  # held-out groups, sampled candidates
    scores = [reranker.score(g.task, [c.patch for c in g.candidates]) for g in groups]
    result = evaluate(groups, scores, recall_threshold=0.5, confidence=0.5)
    result["top1"]["solved"], result["auc"], result["threshold"]

Pure functions of the groups and scores: no model, no torch.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Sequence

from sera.diff import normalize
from sera.reranker.labels import LabeledPatch, TaskGroup

METHODS = ("top1", "random", "majority", "oracle")
Scores = Sequence[Sequence[float]]  # one score per candidate, per group, in candidate order


def evaluate(groups: Sequence[TaskGroup], scores: Scores, recall_threshold: float,
             confidence: float) -> dict[str, Any]:
    """Every method's solved share and recall@1, AUC (pooled and per task), the threshold."""
    _check_aligned(groups, scores)
    groups_scores = [(g, list(s)) for g, s in zip(groups, scores) if g.candidates]
    result: dict[str, Any] = {"tasks": len(groups_scores),
                              "candidates": sorted({len(g.candidates) for g, _ in groups_scores})}
    methods: dict[str, Callable[[TaskGroup, list[float]], tuple[float, float]]] = {
        "top1": lambda g, s: top1(g, s, recall_threshold),
        "random": lambda g, s: random_choice(g, recall_threshold),
        "majority": lambda g, s: majority_vote(g, recall_threshold),
        "oracle": lambda g, s: oracle(g, recall_threshold)}
    for method, pick in methods.items():
        picks = [pick(g, s) for g, s in groups_scores]
        result[method] = ({"solved": sum(p[0] for p in picks) / len(picks),
                           "recall": sum(p[1] for p in picks) / len(picks)} if picks else None)
    flat_scores = [x for _, s in groups_scores for x in s]
    flat_successes = [c.succeeded(recall_threshold) for g, _ in groups_scores for c in g.candidates]
    result["auc"] = auc(flat_scores, flat_successes)
    result["auc_per_task"], result["auc_tasks"] = per_task_auc(
        [g for g, _ in groups_scores], [s for _, s in groups_scores], recall_threshold)
    result["threshold"] = calibrate_threshold(flat_scores, flat_successes, confidence)
    return result


def expected_pick(candidates: Sequence[LabeledPatch], weights: Sequence[float],
                  recall_threshold: float) -> tuple[float, float]:
    """(probability the pick succeeds, expected recall of the pick) for pick probabilities
    `weights` over `candidates`."""
    solved = sum(w for w, c in zip(weights, candidates) if c.succeeded(recall_threshold))
    recall = sum(w * c.recall for w, c in zip(weights, candidates))
    return solved, recall


def random_choice(group: TaskGroup, recall_threshold: float) -> tuple[float, float]:
    """The exact expected value of picking one candidate uniformly at random."""
    return expected_pick(group.candidates, _uniform(len(group.candidates)), recall_threshold)


def top1(group: TaskGroup, scores: Sequence[float], recall_threshold: float) -> tuple[float, float]:
    """The reranker's pick; candidates tied on the top score split the pick equally."""
    return expected_pick(group.candidates, _top_weights(list(scores)), recall_threshold)


def majority_vote(group: TaskGroup, recall_threshold: float) -> tuple[float, float]:
    return expected_pick(group.candidates, majority_weights(group.candidates), recall_threshold)


def majority_weights(candidates: Sequence[LabeledPatch]) -> list[float]:
    """Pick probabilities of the majority vote: the largest clusters of identical patches (after
    `sera.diff.normalize`) share the pick equally, each spread over its members."""
    keys = [normalize(c.patch) for c in candidates]
    voters = [i for i, key in enumerate(keys) if key] or list(range(len(candidates)))
    clusters: dict[str, list[int]] = defaultdict(list)
    for i in voters:
        clusters[keys[i]].append(i)
    if not clusters:
        return []
    most = max(len(members) for members in clusters.values())
    winners = [members for members in clusters.values() if len(members) == most]
    weights = [0.0] * len(candidates)
    for members in winners:
        for i in members:
            weights[i] = 1.0 / (len(winners) * len(members))
    return weights


def oracle(group: TaskGroup, recall_threshold: float) -> tuple[float, float]:
    """The best available: solved when any candidate succeeded; the highest recall."""
    solved = any(c.succeeded(recall_threshold) for c in group.candidates)
    return float(solved), max((c.recall for c in group.candidates), default=0.0)


def auc(scores: Sequence[float], successes: Sequence[bool]) -> float | None:
    """The probability that a succeeded candidate scores above a failed one (ties count half);
    None unless both kinds are present."""
    good = [s for s, ok in zip(scores, successes) if ok]
    bad = [s for s, ok in zip(scores, successes) if not ok]
    if not good or not bad:
        return None
    wins = sum(1.0 if g > b else 0.5 if g == b else 0.0 for g in good for b in bad)
    return wins / (len(good) * len(bad))


def per_task_auc(groups: Sequence[TaskGroup], scores: Scores,
                 recall_threshold: float) -> tuple[float | None, int]:
    """(mean AUC over the tasks where it is defined, how many tasks that is)."""
    values = [auc(list(s), [c.succeeded(recall_threshold) for c in g.candidates])
              for g, s in zip(groups, scores)]
    defined = [v for v in values if v is not None]
    return (sum(defined) / len(defined) if defined else None), len(defined)


def calibrate_threshold(scores: Sequence[float], successes: Sequence[bool],
                        confidence: float) -> float | None:
    """The lowest score t such that at least `confidence` of the candidates scoring t or more
    succeeded; None when there is no such score (e.g. no candidate succeeded)."""
    ranked = sorted(zip(scores, successes), key=lambda pair: pair[0], reverse=True)
    best, seen, good, i = None, 0, 0, 0
    while i < len(ranked):
        score = ranked[i][0]
        while i < len(ranked) and ranked[i][0] == score:  # equal scores enter together
            seen, good, i = seen + 1, good + ranked[i][1], i + 1
        if good > 0 and good / seen >= confidence - 1e-12:  # tolerate 0.7 * 10 != 7
            best = score
    return best


def _top_weights(scores: list[float]) -> list[float]:
    if not scores:
        return []
    top = max(scores)
    tied = [i for i, s in enumerate(scores) if s == top]
    return [1.0 / len(tied) if i in tied else 0.0 for i in range(len(scores))]


def _uniform(count: int) -> list[float]:
    return [1.0 / count] * count if count else []


def _check_aligned(groups: Sequence[TaskGroup], scores: Scores) -> None:
    if len(groups) != len(scores) or any(len(g.candidates) != len(s) for g, s in zip(groups, scores)):
        raise ValueError("scores must hold one score per candidate of every group, in order")
