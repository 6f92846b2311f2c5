// A `sera.runs` answer turned into QuickPick items: the latest finished run's candidates that
// change something, best ranked first. No `vscode` import: the items are plain objects.

import { shorten } from "./text";

export interface RunCandidate {
  index: number;
  rank: number | null;
  status: string;
  files: string[];
  summary: string;
}

export interface Run {
  id: string;
  /** "solve" or "specialize"; absent from a sera that lists solve runs only. */
  kind?: string;
  task: string;
  status: string;
  candidates: RunCandidate[];
}

/** A QuickPickItem that also carries the apply target "RUN:INDEX". */
export interface CandidatePick {
  label: string;
  description: string;
  detail: string;
  target: string;
}

export type CandidateChoice = { run: Run; title: string; picks: CandidatePick[] } | { problem: string };

/** Run statuses of a solve that has not finished: its candidates may still change. */
const UNFINISHED = new Set(["running", "ranking"]);
const TITLE_TASK_CHARS = 60;

/** The runs of a `sera.runs` answer, newest first; an answer of another shape is an error. */
export function parseRuns(answer: unknown): Run[] {
  const runs = (answer as { runs?: unknown } | null)?.runs;
  if (!Array.isArray(runs) || !runs.every(isRun)) {
    throw new Error(`sera.runs answered ${JSON.stringify(answer)?.slice(0, 200)}, not {"runs": [...]}: ` +
      "update sera to the version this extension is built for");
  }
  return runs;
}

function isRun(value: unknown): value is Run {
  const run = value as Run;
  return typeof run?.id === "string" && typeof run.task === "string" && typeof run.status === "string" &&
    (run.kind === undefined || typeof run.kind === "string") &&
    Array.isArray(run.candidates) && run.candidates.every(isCandidate);
}

function isCandidate(value: unknown): value is RunCandidate {
  const candidate = value as RunCandidate;
  return Number.isInteger(candidate?.index) && (candidate.rank === null || Number.isInteger(candidate.rank)) &&
    typeof candidate.status === "string" && Array.isArray(candidate.files) && typeof candidate.summary === "string";
}

/** The newest solve run that is not still being solved; the newest solve run when all are. */
export function latestFinishedRun(runs: Run[]): Run | undefined {
  const solves = runs.filter((run) => (run.kind ?? "solve") === "solve");
  return solves.find((run) => !UNFINISHED.has(run.status)) ?? solves[0];
}

/** Ranked candidates first (rank 1 on top), then the unranked ones by index. */
export function byRank(a: RunCandidate, b: RunCandidate): number {
  const rankA = a.rank ?? Number.POSITIVE_INFINITY;
  const rankB = b.rank ?? Number.POSITIVE_INFINITY;
  return rankA !== rankB ? rankA - rankB : a.index - b.index;
}

export function candidatePick(run: Run, candidate: RunCandidate): CandidatePick {
  const place = candidate.rank === null ? `unranked (${candidate.status})` : `rank ${candidate.rank}`;
  return {
    label: `candidate ${candidate.index}: ${place}`,
    description: candidate.files.join(", "),
    detail: candidate.summary,
    target: `${run.id}:${candidate.index}`,
  };
}

/** What the Apply command offers for a `sera.runs` answer, or why it offers nothing. */
export function candidateChoice(answer: unknown): CandidateChoice {
  const run = latestFinishedRun(parseRuns(answer));
  if (run === undefined) {
    return { problem: "sera has no solve runs in this repository yet: run \"Sera: Solve\" first" };
  }
  const changing = run.candidates.filter((candidate) => candidate.files.length > 0).sort(byRank);
  if (changing.length === 0) {
    return { problem: `no candidate of sera run ${run.id} (${run.status}) changes a file: run "Sera: Solve" ` +
      "again, e.g. with more candidates (sera.candidates) or a clearer task" };
  }
  return { run, title: `sera run ${run.id}: ${shorten(run.task, TITLE_TASK_CHARS)}`,
    picks: changing.map((candidate) => candidatePick(run, candidate)) };
}
