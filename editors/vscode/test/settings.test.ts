import assert from "node:assert/strict";
import { test } from "node:test";

import {
  changeKind, configurationChange, lspArguments, InspectSetting, SERVER_OPTION_FOR_SETTING, serverOptions, SettingInspection, userValue,
} from "../src/settings";

function inspections(values: Record<string, SettingInspection>): InspectSetting {
  return (setting) => values[setting];
}

test("the most specific scope the user set wins; a default alone is no user value", () => {
  assert.equal(userValue({ globalValue: 1, workspaceValue: 2, workspaceFolderValue: 3 }), 3);
  assert.equal(userValue({ globalValue: 1, workspaceValue: 2 }), 2);
  assert.equal(userValue({ globalValue: 1 }), 1);
  assert.equal(userValue({}), undefined);
  assert.equal(userValue(undefined), undefined);
  assert.equal(userValue({ globalValue: null }), undefined);
});

test("server options hold only the settings the user set, under the server's names", () => {
  const options = serverOptions(inspections({
    maxSteps: { workspaceValue: 20 },
    testCommand: { globalValue: "" },  // "" turns tests off: a value, not an unset setting
    scaffold: { globalValue: "agent", workspaceFolderValue: "guided" },
    model: {},
  }));
  assert.deepEqual(options, { max_steps: 20, test_command: "", scaffold: "guided" });
});

test("every setting that is a server option is mapped, each to its own name", () => {
  const everything = serverOptions((setting) => ({ globalValue: `value of ${setting}` }));
  assert.deepEqual(Object.keys(everything).sort(), [
    "adapter", "candidates", "max_steps", "model", "reranker", "scaffold", "temperature", "test_command"]);
  assert.equal(everything.max_steps, "value of maxSteps");
  assert.equal(everything.test_command, "value of testCommand");
  assert.equal(new Set(Object.values(SERVER_OPTION_FOR_SETTING)).size, Object.keys(SERVER_OPTION_FOR_SETTING).length);
});

test("a configuration change sends the current options and null for the ones no longer set", () => {
  assert.deepEqual(configurationChange({ scaffold: "guided", candidates: 2 }, { candidates: 3, model: "m" }),
    { sera: { scaffold: null, candidates: 3, model: "m" } });
  assert.deepEqual(configurationChange({}, {}), { sera: {} });
});

test("a change of sera.path or sera.args restarts the server, of a server option resends the options", () => {
  const affecting = (...sections: string[]) => (section: string) => sections.includes(section);
  assert.equal(changeKind(affecting("sera.path")), "restart");
  assert.equal(changeKind(affecting("sera.args", "sera.model")), "restart");
  assert.equal(changeKind(affecting("sera.maxSteps")), "options");
  assert.equal(changeKind(affecting("editor.fontSize")), "none");
});

test("the server is started as `sera lsp` with the sera.args setting after it", () => {
  assert.deepEqual(lspArguments(["--model", "embedded:0.5b"]), ["lsp", "--model", "embedded:0.5b"]);
  assert.deepEqual(lspArguments(["-n", 2]), ["lsp", "-n", "2"]);
  assert.deepEqual(lspArguments(undefined), ["lsp"]);
  assert.deepEqual(lspArguments("--model x"), ["lsp"]);
});
