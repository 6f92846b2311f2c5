import assert from "node:assert/strict";
import { test } from "node:test";

import { ProgressStatus } from "../src/progressStatus";

test("the status shows the latest progress message and clears when the progress ends", () => {
  const status = new ProgressStatus();
  assert.equal(status.text, undefined);
  status.update("t", { kind: "begin", title: "sera: fix add", message: "starting" });
  assert.equal(status.text, "sera: starting");
  status.update("t", { kind: "report", message: "candidate 0 step 1: applied edits to calc.py" });
  assert.equal(status.text, "sera: candidate 0 step 1: applied edits to calc.py");
  assert.match(status.tooltip ?? "", /^sera: fix add\ncandidate 0 step 1: applied edits to calc\.py\nClick to cancel/);
  status.update("t", { kind: "report", percentage: 50 });  // no message: the last one stays
  assert.equal(status.text, "sera: candidate 0 step 1: applied edits to calc.py");
  status.update("t", { kind: "end" });
  assert.equal(status.text, undefined);
  assert.equal(status.tooltip, undefined);
});

test("without a message the title shows, without its own sera: prefix", () => {
  const status = new ProgressStatus();
  status.update(1, { kind: "begin", title: "sera: specialize demo" });
  assert.equal(status.text, "sera: specialize demo");
});

test("with two progresses the latest updated one shows; when it ends, the other does again", () => {
  const status = new ProgressStatus();
  status.update("solve", { kind: "begin", title: "solve", message: "solving" });
  status.update("train", { kind: "begin", title: "specialize", message: "training" });
  assert.equal(status.text, "sera: training");
  status.update("solve", { kind: "report", message: "step 2" });
  assert.equal(status.text, "sera: step 2");
  status.update("solve", { kind: "end" });
  assert.equal(status.text, "sera: training");
  status.clear();
  assert.equal(status.text, undefined);
});

test("a long or multi-line message is cut to one short line", () => {
  const status = new ProgressStatus();
  status.update("t", { kind: "begin", title: "x", message: `line one\nline two ${"y".repeat(200)}` });
  const text = status.text ?? "";
  assert.equal(text.length, "sera: ".length + 80);
  assert.ok(text.startsWith("sera: line one line two y") && text.endsWith("\u2026"));
});
