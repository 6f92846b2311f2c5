import assert from "node:assert/strict";
import { test } from "node:test";

import { requestFailure, serverError } from "../src/replies";

test("an {error} reply is told apart from a result", () => {
  assert.equal(serverError({ error: "save or revert calc.py first" }), "save or revert calc.py first");
  assert.equal(serverError({ applied: "candidate 0 of run r", files: [] }), undefined);
  assert.equal(serverError(null), undefined);
  assert.equal(serverError({ cancelled: false }), undefined);
});

test("a failed request names the command and what to do", () => {
  assert.equal(requestFailure("sera.runs", "Invalid Params: Command name 'sera.runs' is not defined"),
    "sera: sera.runs failed: Invalid Params: Command name 'sera.runs' is not defined; this sera has no " +
    "sera.runs command: update sera to the version this extension is built for");
  assert.match(requestFailure("sera.solve", "Internal error"), /sera\.solve failed: Internal error; the "sera" output channel/);
});
