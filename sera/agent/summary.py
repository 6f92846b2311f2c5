"""What every front end says about a solve run: a candidate's rank line, the files it changes,
and the notes on how the candidates were ordered. Plain text, so the CLI prints it, the language
server sends it in messages and the TUI shows it."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sera.agent.solve import Candidate, SolveResult


def rank_line(c: Candidate) -> str:
    """rank 1: score 0.820, 2 votes; applies yes, parses yes, tests passed (what failed)."""
    def said(value, yes="yes", no="NO"):
        return "-" if value is None else (yes if value else no)
    score = "-" if c.score is None else f"{c.score:.3f}"
    f = c.filters
    parses = said(f.get("parses"))
    if f.get("broken_before"):  # "yes" would hide that the file was broken to begin with
        parses = f"{parses} (as before: {', '.join(f['broken_before'])} did not parse already)"
    line = (f"rank {c.rank}: score {score}, {c.votes} vote{'s' if c.votes != 1 else ''}; "
            f"applies {said(f.get('applies'))}, parses {parses}, "
            f"tests {said(f.get('tests'), 'passed', 'FAILED')}")
    problem = (c.check_detail.strip().splitlines() or [""])[0] if c.patch.strip() else ""
    return f"{line} ({problem[:120]})" if problem else line


def location_lines(c: Candidate) -> list[str]:
    """Where a guided candidate looked, and why: one line per located function."""
    return [f"looked at {place['path']}:{place['start_line']} {place['name']} "
            f"({'; '.join(place['reasons'])})" for place in c.locations]


def ordering_notes(result: SolveResult, reranker_off: bool = False) -> list[str]:
    """How the candidates were ordered, and what that means for trusting the first one."""
    ranking, notes = result.ranking, []
    if result.ranking_error:
        notes.append(f"warning: {result.ranking_error}")
    if ranking is None:
        notes.append("note: candidates are not ranked; they are listed in the order they finished")
    elif ranking.error:
        notes.append("note: the candidates were not scored; they are ordered by filters and votes")
    elif ranking.reranker is None:
        why = ("scoring is off (rerank.reranker = none)" if reranker_off else
               "no reranker is trained yet: run sera specialize . to train one")
        notes.append(f"note: {why}; candidates are ordered by filters and votes")
    elif ranking.confident is False:
        notes.append(f"no confident fix: no candidate scores above the reranker's threshold "
                     f"({ranking.threshold:.3f}); review the patches before applying one")
    elif ranking.scored and ranking.threshold is None:
        notes.append(f"note: reranker {ranking.reranker} is not calibrated: its scores order the "
                     f"candidates but do not say whether one is right")
    return notes


def distinct_patches(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates that change something, one per patch (duplicates left out), in order."""
    return [c for c in candidates if c.patch.strip() and c.duplicate_of is None]


def top_candidate(candidates: list[Candidate]) -> Candidate | None:
    """The best candidate that changes something (candidates come best first)."""
    return next(iter(distinct_patches(candidates)), None)


def candidate_from_record(record: dict[str, Any]) -> Candidate:
    """A Candidate from a run manifest's entry (older manifests lack some fields)."""
    known = {f.name for f in fields(Candidate)}
    return Candidate(**{k: v for k, v in record.items() if k in known})


def step_line(event) -> str:
    """One agent or guided step in a line: the tool and its argument, or the outcome of a guided
    edit (guided steps have no tool call)."""
    first_line = (event.observation.strip().splitlines() or [""])[0]
    if event.call is None:
        return first_line[:90]
    what = event.call.name
    if what == "bash":
        what += ": " + str(event.call.arguments.get("command", "")).replace("\n", " ")[:70]
    elif what == "str_replace_editor":
        what += f": {event.call.arguments.get('command', '')} {event.call.arguments.get('path', '')}"
    return what
