"""Order the candidate patches of one solve: votes, cheap filters, then the reranker's score.

1. Votes: candidates whose patches are the same after `sera.diff.normalize` are one patch; its votes
   are how many candidates produced it. Duplicates are neither checked nor scored again.
2. Filters, cheap first: the patch applies to the user's working tree as it is now (`sera apply`'s
   check); in a fresh work copy of the solve's snapshot, the changed files still parse; the test
   command passes (`agent.test_command`; a guided candidate's own test result is reused when it
   covers the final patch). Empty patches are not candidates: they rank last.
3. Score: the unique non-empty patches that pass every filter go to `reranker.score` in one call.
4. Order: all filters passed first (then fewer failed filters), then score (high first; unscored
   after scored), then votes (more first), then the original index.

`Ranking.confident` says whether any candidate's score reaches the reranker's calibrated threshold
(None: no reranker, no threshold, or the reranker failed). A reranker that fails leaves the order
of steps 1-2 and says why in `Ranking.error`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypedDict

from sera.agent.checks import PatchCheck, check_patch, patch_applies
from sera.agent.testcmd import resolve_test_command
from sera.agent.trajectory import Trajectory
from sera.config import Settings
from sera.diff import digest, normalize
from sera.models.base import Reranker

DETAIL_CHARS = 2000  # of test output or parse errors kept per candidate


class CandidatePatch(Protocol):
    """What ranking needs of a candidate (solve.Candidate has it)."""

    index: int
    patch: str
    trajectory: str  # path of its trajectory file ('' = none): for the guided scaffold's checks


class Filters(TypedDict, total=False):
    """The cheap checks of one candidate's patch, in the order they run."""

    applies: bool              # to the user's working tree (to the commit, for a bench task)
    parses: bool               # the changed files still parse
    tests: bool | None         # the test command passed (None: no command)
    broken_before: list[str]   # changed files that did not parse before the patch either


@dataclass(kw_only=True)
class Ranked:
    """What the ranking says of a candidate; solve's Candidate carries the same fields."""

    rank: int | None = None      # 1 = best; None = not ranked
    votes: int = 0               # candidates that produced the same normalised patch (0: empty)
    filters: Filters = field(default_factory=Filters)  # type: ignore[assignment]
    score: float | None = None   # the reranker's, for patches that passed the filters
    duplicate_of: int | None = None  # the candidate whose identical patch was checked and scored
    check_detail: str = ""       # what failed: why it does not apply, parse errors, test output

    def ranked_fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(Ranked)}


@dataclass(kw_only=True)
class RankedCandidate(Ranked):
    index: int

    @property
    def passed(self) -> bool:
        return _failed(self.filters) == 0


@dataclass
class Ranking:
    entries: list[RankedCandidate]  # best first
    reranker: str | None = None     # the reranker's name; None when none scored
    threshold: float | None = None
    confident: bool | None = None
    test_command: str | None = None
    error: str | None = None        # why the reranker gave no scores

    @property
    def scored(self) -> bool:
        return any(e.score is not None for e in self.entries)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("entries")
        return data | {"order": [e.index for e in self.entries]}


def rank_candidates(repo_root: Path, commit: str, task: str, candidates: Sequence[CandidatePatch],
                    reranker: Reranker | None, settings: Settings,
                    progress: Callable[[str], None] | None = None,
                    working_tree: bool = True) -> Ranking:
    """Rank `candidates` (made from snapshot `commit` of `repo_root`) for `task`; see the module.
    `working_tree` False: "applies" means applies to `commit` (a task of the repository's past,
    which the user's working tree has moved on from)."""
    command = resolve_test_command(repo_root, settings.agent.test_command)
    groups = _group(candidates)
    checks: dict[int, tuple[dict[str, Any], str]] = {}
    for first, *_ in groups:
        if progress:
            progress(f"checking candidate {first.index} ...")
        checks[first.index] = _filters(repo_root, commit, first, command, settings, working_tree)
    passing = [members[0] for members in groups if _failed(checks[members[0].index][0]) == 0]
    scores, error = _score(reranker, task, passing, progress)
    entries = []
    for members in groups:
        first = members[0]
        filters, detail = checks[first.index]
        for c in members:
            entries.append(RankedCandidate(
                index=c.index, votes=len(members), filters=Filters(**filters),
                score=scores.get(first.index), duplicate_of=None if c is first else first.index,
                check_detail=detail))
    entries += [RankedCandidate(index=c.index, filters=Filters(applies=False, parses=False,
                                                               tests=None),
                                check_detail="the patch is empty")
                for c in candidates if not c.patch.strip()]
    entries.sort(key=_order)
    for rank, entry in enumerate(entries, 1):
        entry.rank = rank
    return _ranking(entries, reranker, scores, error, command)


def _group(candidates: Sequence[CandidatePatch]) -> list[list[CandidatePatch]]:
    """Non-empty candidates grouped by normalised patch, each group by index (the first one is
    checked and scored for all)."""
    by_patch: dict[str, list[CandidatePatch]] = {}
    for c in sorted(candidates, key=lambda c: c.index):
        if c.patch.strip():
            by_patch.setdefault(normalize(c.patch), []).append(c)
    return list(by_patch.values())


def _filters(repo_root: Path, commit: str, candidate: CandidatePatch, command: str | None,
             settings: Settings, working_tree: bool) -> tuple[Filters, str]:
    applies, why_not = patch_applies(repo_root, candidate.patch) if working_tree else (True, "")
    own = _own_test_result(candidate, command)
    checked = check_patch(repo_root, commit, candidate.patch, None if own else command,
                          settings.agent)
    if own is not None and checked.parses:
        checked = PatchCheck(checked.applies, True, own[0], "" if own[0] else own[1],
                             checked.broken_before)
    applies = applies and checked.applies
    filters = Filters(applies=applies, parses=checked.applies and checked.parses,
                      tests=checked.tests)
    if checked.broken_before:
        filters["broken_before"] = list(checked.broken_before)
    detail = "\n".join(d for d in (
        f"does not apply to your working tree: {why_not}" if not applies else "",
        checked.detail[-DETAIL_CHARS:]) if d)
    return filters, detail


def _own_test_result(candidate: CandidatePatch, command: str | None) -> tuple[bool, str] | None:
    """(passed, detail) of the scaffold's own last test run (meta "tests", the guided scaffold's
    checks) when it ran `command` on exactly the candidate's patch; None otherwise."""
    if not command or not candidate.trajectory or not Path(candidate.trajectory).is_file():
        return None
    run = Trajectory.load(candidate.trajectory).meta.get("tests")
    if not run or run["command"] != command or run["patch"] != digest(candidate.patch):
        return None
    return bool(run["ok"]), run["detail"]


def _score(reranker: Reranker | None, task: str, passing: list[CandidatePatch],
           progress: Callable[[str], None] | None) -> tuple[dict[int, float], str | None]:
    """{candidate index: score} from one `reranker.score` call, and why it failed (None: it did
    not)."""
    if reranker is None or not passing:
        return {}, None
    if progress:
        progress(f"scoring {len(passing)} patch(es) with reranker {reranker.name} ...")
    try:
        scores = [float(s) for s in reranker.score(task, [c.patch for c in passing])]
    except Exception as error:  # any failure of the model: keep the filtered order, say why
        return {}, f"reranker {reranker.name} failed: {type(error).__name__}: {error}"
    if len(scores) != len(passing):
        return {}, (f"reranker {reranker.name} returned {len(scores)} scores for "
                    f"{len(passing)} patches")
    return {c.index: s for c, s in zip(passing, scores)}, None


def _failed(filters: dict[str, Any]) -> int:
    return sum(1 for name in ("applies", "parses", "tests") if filters.get(name) is False)


def _order(entry: RankedCandidate) -> tuple:
    empty = entry.votes == 0
    score = -entry.score if entry.score is not None else float("inf")
    return empty, _failed(entry.filters), score, -entry.votes, entry.index


def _ranking(entries, reranker, scores, error, command) -> Ranking:
    threshold = reranker.threshold if reranker is not None else None
    confident = None
    if reranker is not None and threshold is not None and error is None:
        confident = any(s >= threshold for s in scores.values())
    name = reranker.name if reranker is not None else None
    return Ranking(entries, name, threshold, confident, command, error)
