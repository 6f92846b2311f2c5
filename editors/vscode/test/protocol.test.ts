// Protocol tests: the real `sera lsp` (SERA_BIN) over stdio, driven with the arguments and
// settings the extension's modules build, in a real git repository, with sera's scripted model.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import {
  applyArguments, cancelArguments, PRESETS, runsArguments, SERVER_COMMANDS, solveArguments, specializeArguments,
  undoArguments,
} from "../src/commands";
import { ProgressStatus } from "../src/progressStatus";
import { requestFailure, serverError } from "../src/replies";
import { candidateChoice } from "../src/runs";
import { configurationChange, InspectSetting, SERVER_OPTION_FOR_SETTING, serverOptions } from "../src/settings";
import { CALC, FIXED_CALC, GUIDED_FIX, makeCalcRepo, TestRepo, writeScript } from "./support/gitRepo";
import { ClientSetup, TestClient, withClient } from "./support/lspClient";
import { documentChanges } from "./support/workspaceEdit";

const SOLVE_TEST_MS = 180_000;
/** The source of the sera that SERA_BIN runs (the folder holding sera/): $SERA_SOURCE, by default
 * this repository's root. */
const SERA_SOURCE = process.env.SERA_SOURCE ?? path.resolve(__dirname, "../../../..");

interface SolveReply {
  run: string;
  cancelled: boolean;
  candidates: { index: number; rank: number | null; status: string; files: string[]; patch: string }[];
}

/** The files of an apply or undo reply ({"applied"|"undone": label, "files": [...]}). */
function changedFiles(reply: unknown): unknown {
  return (reply as { files?: unknown }).files;
}

/** Settings as a user set them in VS Code (each one at the user level). */
function userSettings(values: Record<string, unknown>): InspectSetting {
  return (setting) => (setting in values ? { globalValue: values[setting] } : undefined);
}

/** One quick candidate with the guided scaffold and no test command. */
const QUICK_SETTINGS = { scaffold: "guided", candidates: 1, testCommand: "", maxSteps: 4, temperature: 0 };

function setup(repo: TestRepo, replies: string[], applyEdit: boolean, settings = QUICK_SETTINGS): ClientSetup {
  return {
    root: repo.root, cacheDir: path.join(repo.home, "cache"), applyEdit,
    args: ["--model", writeScript(repo, replies)],
    initializationOptions: serverOptions(userSettings(settings)),
  };
}

async function inRepo(body: (repo: TestRepo) => Promise<void>): Promise<void> {
  const repo = makeCalcRepo();
  try {
    await body(repo);
  } finally {
    repo.remove();
  }
}

function editedFiles(client: TestClient, from: number): string[] {
  return client.applyEditRequests.slice(from).flatMap((request) => documentChanges(request.edit))
    .map((change) => ("textDocument" in change ? fileURLToPath(change.textDocument.uri) : ""));
}

/** A capable client got the change as workspace edits (the server does not write the file). */
function assertEditsCameThroughTheClient(client: TestClient, from: number, file: string): void {
  assert.ok(editedFiles(client, from).includes(file),
    `the server sent no edit of ${file} to a client that declared workspace.applyEdit; it sent: ` +
    `${JSON.stringify(client.applyEditRequests.slice(from))}`);
}

async function solve(client: TestClient, uri: string): Promise<SolveReply> {
  const reply = await client.execute(SERVER_COMMANDS.solve, solveArguments("calc.add returns the wrong sum", uri));
  assert.equal(serverError(reply), undefined, `sera.solve failed; the server said:\n${client.errors()}`);
  return reply as SolveReply;
}

test("a client that applies workspace edits: solve with a scripted fix, progress, apply, undo", { timeout: SOLVE_TEST_MS }, () =>
  inRepo((repo) => withClient(setup(repo, [GUIDED_FIX], true), async (client) => {
    const status = new ProgressStatus();
    const statusTexts: (string | undefined)[] = [];
    client.onProgress = (token, value) => {
      status.update(token, value);
      statusTexts.push(status.text);
    };
    const calcUri = await client.open(repo.calcPath);
    const solved = await solve(client, calcUri);

    assert.deepEqual(solved.candidates.map((c) => [c.status, c.rank, c.files]), [["submitted", 1, ["calc.py"]]]);
    assert.match(solved.candidates[0].patch, /^\+ {4}return a \+ b$/m);
    assert.equal(fs.readFileSync(repo.calcPath, "utf8"), CALC, "a solve must not change the user's files");
    assert.ok(statusTexts.some((text) => text?.startsWith("sera: candidate 0 step 1")), statusTexts.join("\n"));
    assert.equal(status.text, undefined, "the status bar item must clear when the progress ends");

    const target = `${solved.run}:${solved.candidates[0].index}`;
    const beforeApply = client.applyEditRequests.length;
    const applied = await client.execute(SERVER_COMMANDS.apply, applyArguments(target, calcUri));
    assert.equal(serverError(applied), undefined, client.errors());
    assert.deepEqual(changedFiles(applied), ["calc.py"]);
    assert.equal(fs.readFileSync(repo.calcPath, "utf8"), FIXED_CALC);
    assertEditsCameThroughTheClient(client, beforeApply, repo.calcPath);

    const beforeUndo = client.applyEditRequests.length;
    const undone = await client.execute(SERVER_COMMANDS.undo, undoArguments(calcUri));
    assert.equal(serverError(undone), undefined, client.errors());
    assert.deepEqual(changedFiles(undone), ["calc.py"]);
    assert.equal(fs.readFileSync(repo.calcPath, "utf8"), CALC);
    assertEditsCameThroughTheClient(client, beforeUndo, repo.calcPath);
  })));

test("a client without workspace.applyEdit: changed settings reach the server, which writes the files itself", { timeout: SOLVE_TEST_MS }, () =>
  inRepo((repo) => withClient(setup(repo, [GUIDED_FIX], false), async (client) => {
    fs.mkdirSync(path.join(repo.root, ".sera"));
    fs.writeFileSync(path.join(repo.root, ".sera", "config.toml"), "[solve]\ncandidates = 1\n");
    const { candidates: _initially1, ...others } = QUICK_SETTINGS;
    let sent = serverOptions(userSettings(QUICK_SETTINGS));
    let solved: SolveReply | undefined;
    for (const [setting, expected] of [[2, 2], [undefined, 1]]) {  // set to 2, then unset: the repository's 1
      const current = serverOptions(userSettings(setting === undefined ? others : { ...others, candidates: setting }));
      await client.changeConfiguration(configurationChange(sent, current));
      sent = current;
      solved = await solve(client, repo.rootUri);
      assert.equal(solved.candidates.length, expected, `sera.candidates ${setting}: the server did not follow the change`);
    }
    assert.ok(solved !== undefined);

    const applied = await client.execute(SERVER_COMMANDS.apply, applyArguments(`${solved.run}:${solved.candidates[0].index}`, repo.rootUri));
    assert.equal(serverError(applied), undefined, client.errors());
    assert.equal(fs.readFileSync(repo.calcPath, "utf8"), FIXED_CALC);
    const undone = await client.execute(SERVER_COMMANDS.undo, undoArguments(repo.rootUri));
    assert.deepEqual(changedFiles(undone), ["calc.py"]);
    assert.equal(fs.readFileSync(repo.calcPath, "utf8"), CALC);
    assert.deepEqual(client.applyEditRequests, [], "the server sent workspace/applyEdit to a client that cannot apply it");
  })));

test("the Apply command's flow: sera.runs lists the latest run's candidates as picks, and the picked one applies", { timeout: SOLVE_TEST_MS }, () =>
  inRepo((repo) => withClient(setup(repo, [GUIDED_FIX], true), async (client) => {
    assert.ok(client.hasCommand(SERVER_COMMANDS.runs), "sera lsp must offer runs");
    const solved = await solve(client, repo.calcUri);
    const answer = await client.execute(SERVER_COMMANDS.runs, runsArguments(repo.calcUri));
    assert.equal(serverError(answer), undefined, client.errors());
    const choice = candidateChoice(answer);
    assert.ok("picks" in choice, JSON.stringify(choice));
    assert.deepEqual(choice.picks.map((pick) => [pick.target, pick.description]),
      [[`${solved.run}:${solved.candidates[0].index}`, "calc.py"]]);
    const applied = await client.execute(SERVER_COMMANDS.apply, applyArguments(choice.picks[0].target, repo.calcUri));
    assert.equal(serverError(applied), undefined, client.errors());
    assert.equal(fs.readFileSync(repo.calcPath, "utf8"), FIXED_CALC);
  })));

test("Sera: Specialize's request shows progress in the status bar until sera.cancel stops it", { timeout: 60_000 }, () =>
  inRepo((repo) => withClient(setup(repo, [GUIDED_FIX], true), async (client) => {
    assert.ok(client.hasCommand(SERVER_COMMANDS.specialize), "sera lsp must offer specialize");
    const status = new ProgressStatus();
    const statusTexts: (string | undefined)[] = [];
    client.onProgress = (token, value) => {
      status.update(token, value);
      statusTexts.push(status.text);
    };
    const specializing = client.execute(SERVER_COMMANDS.specialize, specializeArguments(repo.rootUri, "demo"));
    await client.waitFor("the specialize run's first progress report", () => statusTexts.some((text) => /^sera: specialize run /.test(text ?? "")));
    assert.deepEqual(await client.execute(SERVER_COMMANDS.cancel, cancelArguments()), { cancelled: true });
    const reply = await specializing;
    assert.match(serverError(reply) ?? JSON.stringify(reply), /was cancelled; continue it with: sera specialize --resume/);
    assert.equal(status.text, undefined, "the status bar item must clear when the progress ends");
  })));

test("an idle server: sera.cancel answers {cancelled: false}; an unknown command's failure says to update sera", { timeout: 60_000 }, () =>
  inRepo((repo) => withClient(setup(repo, [GUIDED_FIX], true), async (client) => {
    assert.deepEqual(await client.execute(SERVER_COMMANDS.cancel, cancelArguments()), { cancelled: false });
    const failure = await client.execute("sera.nosuch", []).then(
      (reply) => assert.fail(`sera.nosuch answered ${JSON.stringify(reply)}`),
      (error: Error) => requestFailure("sera.nosuch", error.message));
    assert.match(failure, /update sera/, failure);
  })));

test("a bad option in initializationOptions gets an error message that names it", { timeout: 60_000 }, () =>
  inRepo(async (repo) => {
    const quick = setup(repo, [GUIDED_FIX], true);
    const badSetup = { ...quick, initializationOptions: { ...quick.initializationOptions, colour: "red" } };
    await withClient(badSetup, async (client) => {
      // said when initialized, or (an older sera) when the settings are first used
      await client.execute(SERVER_COMMANDS.solve, solveArguments("calc.add returns the wrong sum", repo.calcUri));
      await client.waitFor("an error message naming 'colour'", () => /\bcolour\b/.test(client.errors()));
      assert.equal(fs.readFileSync(repo.calcPath, "utf8"), CALC);
    });
  }));

test("the server answers shutdown and exits with status 0 on exit, as VS Code's client expects", { timeout: 60_000 }, () =>
  inRepo(async (repo) => {
    const client = await TestClient.start(setup(repo, [GUIDED_FIX], true));
    const outcome = await client.stop();
    assert.deepEqual(outcome, { answeredShutdown: true, exit: { code: 0, signal: null } },
      `sera lsp stderr (end):\n${client.stderrTail()}`);
  }));

test("every setting maps to an option the server knows (OPTIONS in sera/server/options.py)", () => {
  const source = fs.readFileSync(path.join(SERA_SOURCE, "sera", "server", "options.py"), "utf8");
  const table = /^OPTIONS = \{([\s\S]*?)^\}/m.exec(source);
  assert.ok(table, "no OPTIONS table in sera/server/options.py");
  const serverNames = [...table[1].matchAll(/^\s*"(\w+)":/gm)].map((match) => match[1]);
  assert.deepEqual([...Object.values(SERVER_OPTION_FOR_SETTING)].sort(), serverNames.sort());
});

test("the Specialize presets offered are presets the server knows (PRESETS in sera/specialize/presets.py)", () => {
  const source = fs.readFileSync(path.join(SERA_SOURCE, "sera", "specialize", "presets.py"), "utf8");
  const table = /^PRESETS[^=]*= \{([\s\S]*?)^\}/m.exec(source);
  assert.ok(table, "no PRESETS table in sera/specialize/presets.py");
  const serverPresets = [...table[1].matchAll(/^ {4}"(\w+)":/gm)].map((match) => match[1]);
  const offered = PRESETS.flatMap((choice) => (choice.preset === undefined ? [] : [choice.preset]));
  assert.deepEqual(offered.filter((preset) => !serverPresets.includes(preset)), [], `server presets: ${serverPresets}`);
  assert.ok(offered.length >= 2);
});
