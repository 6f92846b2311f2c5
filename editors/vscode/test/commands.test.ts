import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

import {
  applyArguments, cancelArguments, EDITOR_COMMANDS, PRESETS, runsArguments, SERVER_COMMANDS, solveArguments,
  specializeArguments, taskProblem, undoArguments,
} from "../src/commands";
import { RESTART_SETTINGS, SERVER_OPTION_FOR_SETTING } from "../src/settings";

const manifest = JSON.parse(fs.readFileSync(path.resolve(__dirname, "../../package.json"), "utf8"));

test("sera.solve gets the trimmed task and the active file's uri", () => {
  assert.deepEqual(solveArguments("  fix add  ", "file:///r/calc.py"), [{ task: "fix add", uri: "file:///r/calc.py" }]);
  assert.deepEqual(solveArguments("fix add"), [{ task: "fix add" }]);
});

test("an empty task is refused with an example of one", () => {
  assert.match(taskProblem("  \n") ?? "", /Describe the task, e\.g\./);
  assert.equal(taskProblem("fix add"), undefined);
  assert.throws(() => solveArguments(" "), /Describe the task/);
});

test("sera.specialize gets the folder and the preset; the default choice sends none", () => {
  assert.deepEqual(specializeArguments("file:///r", "demo"), [{ uri: "file:///r", preset: "demo" }]);
  assert.deepEqual(specializeArguments("file:///r", undefined), [{ uri: "file:///r" }]);
  assert.deepEqual(PRESETS.map((choice) => [choice.label, choice.preset]),
    [["demo", "demo"], ["laptop", "laptop"], ["default", undefined]]);
});

test("runs, apply, undo and cancel arguments", () => {
  assert.deepEqual(runsArguments("file:///r"), [{ uri: "file:///r" }]);
  assert.deepEqual(runsArguments(), [{}]);
  assert.deepEqual(applyArguments("20250101-abc:2", "file:///r/a.py"), [{ target: "20250101-abc:2", uri: "file:///r/a.py" }]);
  assert.deepEqual(undoArguments("file:///r"), [{ uri: "file:///r" }]);
  assert.deepEqual(cancelArguments(), []);
  assert.deepEqual(Object.values(SERVER_COMMANDS).sort(),
    ["sera.apply", "sera.cancel", "sera.runs", "sera.solve", "sera.specialize", "sera.undo"]);
});

test("package.json contributes the extension's commands, none named like a server command", () => {
  const contributed = manifest.contributes.commands.map((c: { command: string; category: string; title: string }) =>
    [c.command, `${c.category}: ${c.title}`]);
  assert.deepEqual(contributed, [
    [EDITOR_COMMANDS.solve, "Sera: Solve"],
    [EDITOR_COMMANDS.specialize, "Sera: Specialize"],
    [EDITOR_COMMANDS.apply, "Sera: Apply candidate"],
    [EDITOR_COMMANDS.undo, "Sera: Undo"],
    [EDITOR_COMMANDS.cancel, "Sera: Cancel"],
  ]);
  const serverNames = new Set<string>([...Object.values(SERVER_COMMANDS), "sera.preview"]);
  assert.ok(Object.values(EDITOR_COMMANDS).every((id) => !serverNames.has(id)));
});

test("package.json declares every setting the extension reads, and no other", () => {
  const declared = Object.keys(manifest.contributes.configuration.properties).sort();
  const read = [...RESTART_SETTINGS, ...Object.keys(SERVER_OPTION_FOR_SETTING)].map((s) => `sera.${s}`).sort();
  assert.deepEqual(declared, read);
  const withDefault = declared.filter((key) => "default" in manifest.contributes.configuration.properties[key]);
  assert.deepEqual(withDefault, ["sera.args", "sera.path"], "a server option with a default is always sent as set");
});
