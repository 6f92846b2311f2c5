"""Labelled candidate patches, grouped by task: what the reranker trains and is evaluated on.

A candidate's label is its line-level recall of the task's reference patch (P1 for an SVG task, the
real commit for a history task). Where the repository has a test command, pass/fail of the tests
outranks recall: a passing candidate is worth 1 more than any failing one. Pairs for the
Bradley-Terry loss are made only within one task, so only label differences inside a task matter.

    group = TaskGroup("svg-00012", issue_text, reference=p1,
                      candidates=[LabeledPatch(p1, recall=1.0, source="reference"),
                                  LabeledPatch(p2, recall=0.4, source="rollout2")])
    group.label(group.candidates[1])   # 0.4
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LabeledPatch:
    patch: str
    recall: float  # line-level recall of the task's reference in this patch, 0..1
    tests_passed: bool | None = None  # None = the tests were not run for this task
    source: str = ""  # reference, rollout2, other_task, sampled-r<k>, hard_negative-r<k>, ...
    score: float | None = None  # the reranker's score when it was mined (hard negatives)

    @property
    def label(self) -> float:
        bonus = 1.0 if self.tests_passed else 0.0
        return self.recall + bonus

    def succeeded(self, recall_threshold: float) -> bool:
        """Right or wrong, for AUC, oracle and the calibrated threshold: the tests decide when they
        ran; otherwise recall at or above the threshold SVG uses to keep a trajectory."""
        if self.tests_passed is not None:
            return self.tests_passed
        return self.recall >= recall_threshold


@dataclass
class TaskGroup:
    task_id: str
    task: str  # the text the agent was given: a synthetic issue or a commit message
    reference: str  # the patch recall is measured against
    candidates: list[LabeledPatch] = field(default_factory=list)
    split: str = "train"  # train or heldout

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskGroup":
        candidates = [LabeledPatch(**c) for c in data.get("candidates", [])]
        return cls(task_id=data["task_id"], task=data["task"], reference=data["reference"],
                   candidates=candidates, split=data.get("split", "train"))
