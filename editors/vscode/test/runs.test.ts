import assert from "node:assert/strict";
import { test } from "node:test";

import { candidateChoice, latestFinishedRun, parseRuns, Run } from "../src/runs";

function run(id: string, status: string, candidates: Run["candidates"] = []): Run {
  return { id, task: `task of ${id}`, status, candidates };
}

const CANDIDATES: Run["candidates"] = [
  { index: 0, rank: 2, status: "submitted", files: ["b.py"], summary: "rank 2: tests fail" },
  { index: 1, rank: null, status: "time_limit", files: ["c.py"], summary: "time_limit: out of time" },
  { index: 2, rank: 1, status: "submitted", files: ["a.py", "b.py"], summary: "rank 1: tests pass" },
  { index: 3, rank: null, status: "error", files: [], summary: "error: the model failed" },
];

test("the picks are the latest finished run's candidates that change files, best ranked first", () => {
  const choice = candidateChoice({ runs: [run("r3", "running"), run("r2", "done", CANDIDATES), run("r1", "done")] });
  assert.ok("picks" in choice);
  assert.equal(choice.run.id, "r2");
  assert.equal(choice.title, "sera run r2: task of r2");
  assert.deepEqual(choice.picks, [
    { label: "candidate 2: rank 1", description: "a.py, b.py", detail: "rank 1: tests pass", target: "r2:2" },
    { label: "candidate 0: rank 2", description: "b.py", detail: "rank 2: tests fail", target: "r2:0" },
    { label: "candidate 1: unranked (time_limit)", description: "c.py", detail: "time_limit: out of time", target: "r2:1" },
  ]);
});

test("when every run is still running, the newest one is offered", () => {
  assert.equal(latestFinishedRun([run("r2", "ranking"), run("r1", "running")])?.id, "r2");
  assert.equal(latestFinishedRun([]), undefined);
});

test("specialize runs are passed over: they have no candidates to apply", () => {
  const specialize = { ...run("s1", "done"), kind: "specialize" };
  const solve = { ...run("r1", "done", CANDIDATES), kind: "solve" };
  assert.equal(latestFinishedRun([specialize, solve])?.id, "r1");
  assert.equal(latestFinishedRun([specialize]), undefined);
  const none = candidateChoice({ runs: [specialize] });
  assert.ok("problem" in none && /no solve runs in this repository yet/.test(none.problem));
});

test("no runs, or a run whose candidates change nothing, is a problem that says what to do", () => {
  const none = candidateChoice({ runs: [] });
  assert.ok("problem" in none && /no solve runs .*: run "Sera: Solve" first/.test(none.problem));
  const empty = candidateChoice({ runs: [run("r1", "done", [CANDIDATES[3]])] });
  assert.ok("problem" in empty);
  assert.match(empty.problem, /no candidate of sera run r1 \(done\) changes a file: run "Sera: Solve" again/);
});

test("an answer of another shape is an error that says to update sera", () => {
  for (const answer of [null, {}, { runs: "r1" }, { runs: [{ id: "r1" }] },
    { runs: [run("r1", "done", [{ ...CANDIDATES[0], rank: "1" as unknown as number }])] }]) {
    assert.throws(() => parseRuns(answer), /update sera to the version this extension is built for/, JSON.stringify(answer));
  }
  assert.equal(parseRuns({ runs: [run("r1", "done", CANDIDATES)] })[0].candidates.length, 4);
});

test("a long task is cut to one line in the title", () => {
  const long = { ...run("r1", "done", CANDIDATES), task: `fix\n${"x".repeat(100)}` };
  const choice = candidateChoice({ runs: [long] });
  assert.ok("title" in choice);
  assert.equal(choice.title.length, "sera run r1: ".length + 60);
  assert.ok(choice.title.endsWith("\u2026") && !choice.title.includes("\n"));
});
