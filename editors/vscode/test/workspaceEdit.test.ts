// The protocol tests' workspace edit applier (test/support/workspaceEdit.ts) is checked here, so
// that a protocol test's "the file is fixed" means the server's edit was right.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { after, test } from "node:test";
import type { Range, TextEdit } from "vscode-languageserver-protocol";

import { applyTextEdits, applyWorkspaceEdit } from "./support/workspaceEdit";

const folder = fs.mkdtempSync(path.join(os.tmpdir(), "sera-edit-"));
after(() => fs.rmSync(folder, { recursive: true, force: true }));

function range(startLine: number, startCharacter: number, endLine: number, endCharacter: number): Range {
  return { start: { line: startLine, character: startCharacter }, end: { line: endLine, character: endCharacter } };
}

function edit(r: Range, newText: string): TextEdit {
  return { range: r, newText };
}

function fileWith(name: string, text: string): { file: string; uri: string } {
  const file = path.join(folder, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return { file, uri: pathToFileURL(file).toString() };
}

const CALC = "def add(a, b):\n    return a - b\n";

test("text edits: a replacement, a deletion across lines and an insertion, in any order", () => {
  const text = "one\ntwo\nthree\n";
  assert.equal(applyTextEdits(text, [edit(range(2, 0, 2, 5), "THREE"), edit(range(0, 3, 1, 3), ""),
    edit(range(3, 0, 3, 0), "four\n")]), "one\nTHREE\nfour\n");
});

test("text edits: insertions at one place keep their order; positions past a line's end clamp to it", () => {
  assert.equal(applyTextEdits("ab", [edit(range(0, 1, 0, 1), "1"), edit(range(0, 1, 0, 1), "2")]), "a12b");
  assert.equal(applyTextEdits("ab\ncd", [edit(range(0, 99, 1, 0), "-")]), "ab-cd");
  assert.equal(applyTextEdits("ab", [edit(range(5, 0, 5, 0), "!")]), "ab!");
});

test("text edits: overlapping edits are refused", () => {
  assert.throws(() => applyTextEdits("abcdef", [edit(range(0, 0, 0, 3), "x"), edit(range(0, 2, 0, 4), "y")]), /overlapping/);
});

test("a versioned edit applies at the open document's version; at another version nothing changes", () => {
  const { file, uri } = fileWith("versioned.py", CALC);
  const fix = { documentChanges: [{ textDocument: { uri, version: 3 }, edits: [edit(range(1, 13, 1, 14), "+")] }] };
  const stale = applyWorkspaceEdit(fix, () => 2);
  assert.equal(stale.applied, false);
  assert.match(stale.failureReason ?? "", /is at version 2, the edit is for version 3/);
  assert.equal(fs.readFileSync(file, "utf8"), CALC);
  assert.deepEqual(applyWorkspaceEdit(fix, () => 3), { applied: true, changedUris: [uri] });
  assert.equal(fs.readFileSync(file, "utf8"), "def add(a, b):\n    return a + b\n");
});

test("unversioned edits, as documentChanges with version null or as a changes map", () => {
  const first = fileWith("first.py", CALC);
  const second = fileWith("second.py", CALC);
  const fix = [edit(range(1, 13, 1, 14), "*")];
  assert.equal(applyWorkspaceEdit({ documentChanges: [{ textDocument: { uri: first.uri, version: null }, edits: fix }] },
    () => undefined).applied, true);
  assert.equal(applyWorkspaceEdit({ changes: { [second.uri]: fix } }, () => undefined).applied, true);
  for (const { file } of [first, second]) {
    assert.equal(fs.readFileSync(file, "utf8"), "def add(a, b):\n    return a * b\n");
  }
});

test("create, rename and delete file operations, with their options", () => {
  const created = pathToFileURL(path.join(folder, "ops", "new.py")).toString();
  const renamed = pathToFileURL(path.join(folder, "ops", "moved.py")).toString();
  const outcome = applyWorkspaceEdit({ documentChanges: [
    { kind: "create", uri: created },
    { textDocument: { uri: created, version: null }, edits: [edit(range(0, 0, 0, 0), "x = 1\n")] },
    { kind: "rename", oldUri: created, newUri: renamed },
  ] }, () => undefined);
  assert.deepEqual(outcome, { applied: true, changedUris: [created] });
  assert.equal(fs.readFileSync(path.join(folder, "ops", "moved.py"), "utf8"), "x = 1\n");
  assert.equal(fs.existsSync(path.join(folder, "ops", "new.py")), false);

  const exists = applyWorkspaceEdit({ documentChanges: [{ kind: "create", uri: renamed }] }, () => undefined);
  assert.equal(exists.applied, false, "creating an existing file without overwrite or ignoreIfExists fails");
  assert.equal(applyWorkspaceEdit({ documentChanges: [{ kind: "create", uri: renamed, options: { ignoreIfExists: true } }] },
    () => undefined).applied, true);
  assert.equal(fs.readFileSync(path.join(folder, "ops", "moved.py"), "utf8"), "x = 1\n");
  applyWorkspaceEdit({ documentChanges: [{ kind: "create", uri: renamed, options: { overwrite: true, ignoreIfExists: true } }] },
    () => undefined);
  assert.equal(fs.readFileSync(path.join(folder, "ops", "moved.py"), "utf8"), "", "overwrite wins over ignoreIfExists");

  assert.equal(applyWorkspaceEdit({ documentChanges: [{ kind: "delete", uri: renamed }] }, () => undefined).applied, true);
  assert.equal(fs.existsSync(path.join(folder, "ops", "moved.py")), false);
  assert.equal(applyWorkspaceEdit({ documentChanges: [{ kind: "delete", uri: renamed }] }, () => undefined).applied, false);
  assert.equal(applyWorkspaceEdit({ documentChanges: [{ kind: "delete", uri: renamed, options: { ignoreIfNotExists: true } }] },
    () => undefined).applied, true);
  const dir = pathToFileURL(path.join(folder, "ops")).toString();
  assert.equal(applyWorkspaceEdit({ documentChanges: [{ kind: "delete", uri: dir, options: { recursive: true } }] },
    () => undefined).applied, true);
  assert.equal(fs.existsSync(path.join(folder, "ops")), false);
});
