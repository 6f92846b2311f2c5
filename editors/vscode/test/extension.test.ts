// The wiring in src/extension.ts, with stand-ins for the `vscode` API and vscode-languageclient
// (no VS Code runs here): which commands it registers, how it starts the server, what each
// command sends, the status bar item, and settings changes.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import Module from "node:module";
import * as os from "node:os";
import * as path from "node:path";
import { after, beforeEach, test } from "node:test";

const home = fs.mkdtempSync(path.join(os.tmpdir(), "sera-extension-"));
const seraBin = path.join(home, "venv", "bin", "sera");
fs.mkdirSync(path.dirname(seraBin), { recursive: true });
fs.writeFileSync(seraBin, "#!/bin/sh\n", { mode: 0o755 });
after(() => fs.rmSync(home, { recursive: true, force: true }));

class FakeUri {
  constructor(readonly fsPath: string, readonly scheme = "file") {}
  toString(): string {
    return `${this.scheme}://${this.fsPath}`;
  }
}

/** What the stand-ins saw, and the answers they give; reset before each test. */
const world = {
  settings: {} as Record<string, unknown>,
  folder: { uri: new FakeUri(path.join(home, "project")), name: "project", index: 0 },
  editorUri: new FakeUri(path.join(home, "project", "calc.py")) as FakeUri | undefined,
  commands: new Map<string, () => Promise<void>>(),
  configurationListeners: [] as ((event: { affectsConfiguration(section: string): boolean }) => unknown)[],
  shown: [] as string[],  // error and information messages
  inputBox: undefined as string | undefined,
  quickPick: (items: { label: string }[]) => items[0] as unknown,
  quickPickItems: [] as unknown[],
  clients: [] as FakeLanguageClient[],
  replies: new Map<string, unknown>(),
  status: { text: "", tooltip: "" as string | undefined, command: "", visible: false },
};

class FakeLanguageClient {
  readonly requests: { command: string; arguments: unknown[] }[] = [];
  readonly notifications: unknown[] = [];
  running = false;
  constructor(readonly id: string, readonly name: string, readonly serverOptions: { command: string; args: string[]; options: { cwd: string } },
    readonly clientOptions: { initializationOptions: () => unknown; middleware: { handleWorkDoneProgress: Function } }) {
    world.clients.push(this);
  }
  onDidChangeState(): void {}
  async start(): Promise<void> {
    this.clientOptions.initializationOptions();
    this.running = true;
  }
  isRunning(): boolean {
    return this.running;
  }
  needsStop(): boolean {
    return this.running;
  }
  async stop(): Promise<void> {
    this.running = false;
  }
  get state(): number {
    return this.running ? 2 : 1;
  }
  async sendRequest(_type: unknown, params: { command: string; arguments: unknown[] }): Promise<unknown> {
    this.requests.push(params);
    return world.replies.get(params.command) ?? {};
  }
  async sendNotification(_type: unknown, params: unknown): Promise<void> {
    this.notifications.push(params);
  }
}

const fakeVscode = {
  StatusBarAlignment: { Left: 1 },
  window: {
    createOutputChannel: () => ({ appendLine: () => undefined, show: () => undefined, dispose: () => undefined }),
    createStatusBarItem: () => ({
      set text(value: string) { world.status.text = value; },
      set tooltip(value: string | undefined) { world.status.tooltip = value; },
      set command(value: string) { world.status.command = value; },
      show: () => { world.status.visible = true; },
      hide: () => { world.status.visible = false; },
      dispose: () => undefined,
    }),
    get activeTextEditor() {
      return world.editorUri && { document: { uri: world.editorUri } };
    },
    showInputBox: async () => world.inputBox,
    showQuickPick: async (items: { label: string }[]) => {
      world.quickPickItems = items;
      return world.quickPick(items);
    },
    showErrorMessage: async (message: string) => { world.shown.push(message); return undefined; },
    showInformationMessage: async (message: string) => { world.shown.push(message); return undefined; },
  },
  commands: {
    registerCommand: (id: string, run: () => Promise<void>) => {
      world.commands.set(id, run);
      return { dispose: () => undefined };
    },
    executeCommand: async () => undefined,
  },
  workspace: {
    get workspaceFolders() {
      return [world.folder];
    },
    getWorkspaceFolder: () => world.folder,
    getConfiguration: () => ({
      get: (key: string, fallback?: unknown) => (key in world.settings ? world.settings[key] : fallback),
      inspect: (key: string) => (key in world.settings ? { globalValue: world.settings[key] } : {}),
    }),
    onDidChangeConfiguration: (listener: (typeof world.configurationListeners)[number]) => {
      world.configurationListeners.push(listener);
      return { dispose: () => undefined };
    },
  },
};

const fakeLanguageClientModule = {
  LanguageClient: FakeLanguageClient,
  State: { Stopped: 1, Running: 2, Starting: 3 },
  ExecuteCommandRequest: { type: "workspace/executeCommand" },
  DidChangeConfigurationNotification: { type: "workspace/didChangeConfiguration" },
};

type Loader = (request: string, ...rest: unknown[]) => unknown;
const moduleInternals = Module as unknown as { _load: Loader };
const load = moduleInternals._load;
moduleInternals._load = function (request: string, ...rest: unknown[]) {
  if (request === "vscode") {
    return fakeVscode;
  }
  if (request === "vscode-languageclient/node") {
    return fakeLanguageClientModule;
  }
  return load.call(this, request, ...rest);
};
const extension = require("../src/extension") as typeof import("../src/extension");

async function activate(): Promise<FakeLanguageClient> {
  await extension.activate({ subscriptions: [] } as never);
  return world.clients[world.clients.length - 1];
}

beforeEach(async () => {
  await extension.deactivate();
  Object.assign(world, {
    settings: { path: seraBin, args: ["--model", "embedded:0.5b"], maxSteps: 7 },
    editorUri: new FakeUri(path.join(home, "project", "calc.py")),
    commands: new Map(), configurationListeners: [], shown: [], inputBox: undefined, clients: [],
    quickPick: (items: { label: string }[]) => items[0], quickPickItems: [], replies: new Map(),
    status: { text: "", tooltip: "", command: "", visible: false },
  });
});

test("activation registers the Sera commands and starts `sera lsp` with sera.args in the workspace folder", async () => {
  const client = await activate();
  assert.deepEqual([...world.commands.keys()], ["sera.vscode.solve", "sera.vscode.specialize",
    "sera.vscode.applyCandidate", "sera.vscode.undo", "sera.vscode.cancel"]);
  assert.deepEqual(client.serverOptions, { command: seraBin, args: ["lsp", "--model", "embedded:0.5b"],
    options: { cwd: world.folder.uri.fsPath } });
  assert.deepEqual(client.clientOptions.initializationOptions(), { max_steps: 7 });
});

test("a sera.path that is no executable is reported with what to set, and nothing starts", async () => {
  world.settings.path = path.join(home, "nowhere", "sera");
  await activate();
  assert.equal(world.clients.length, 0);
  assert.deepEqual(world.shown, [`sera not found at ${world.settings.path}: set sera.path to the sera executable, ` +
    "e.g. /path/to/.venv/bin/sera"]);
});

test("Sera: Solve sends the typed task with the active file", async () => {
  const client = await activate();
  world.inputBox = "  fix add  ";
  await world.commands.get("sera.vscode.solve")!();
  assert.deepEqual(client.requests, [{ command: "sera.solve",
    arguments: [{ task: "fix add", uri: world.editorUri!.toString() }] }]);
});

test("Sera: Apply candidate picks from sera.runs and applies the picked target", async () => {
  const client = await activate();
  world.replies.set("sera.runs", { runs: [{ id: "r1", task: "fix add", status: "done", candidates: [
    { index: 0, rank: 2, status: "submitted", files: ["a.py"], summary: "second" },
    { index: 1, rank: 1, status: "submitted", files: ["calc.py"], summary: "first" }] }] });
  world.quickPick = (items) => items[1];
  await world.commands.get("sera.vscode.applyCandidate")!();
  assert.deepEqual((world.quickPickItems as { target: string }[]).map((item) => item.target), ["r1:1", "r1:0"]);
  const uri = world.editorUri!.toString();
  assert.deepEqual(client.requests, [
    { command: "sera.runs", arguments: [{ uri }] },
    { command: "sera.apply", arguments: [{ target: "r1:0", uri }] }]);
});

test("Sera: Apply candidate with no runs says to solve first and applies nothing", async () => {
  const client = await activate();
  world.replies.set("sera.runs", { runs: [] });
  await world.commands.get("sera.vscode.applyCandidate")!();
  assert.deepEqual(client.requests.map((request) => request.command), ["sera.runs"]);
  assert.match(world.shown.join("\n"), /run "Sera: Solve" first/);
});

test("Sera: Specialize, Undo and Cancel send their commands", async () => {
  const client = await activate();
  world.quickPick = (items) => items.find((item) => item.label === "laptop");
  await world.commands.get("sera.vscode.specialize")!();
  world.editorUri = undefined;  // no editor: the workspace folder is the uri
  await world.commands.get("sera.vscode.undo")!();
  await world.commands.get("sera.vscode.cancel")!();
  const folderUri = world.folder.uri.toString();
  assert.deepEqual(client.requests, [
    { command: "sera.specialize", arguments: [{ uri: folderUri, preset: "laptop" }] },
    { command: "sera.undo", arguments: [{ uri: folderUri }] },
    { command: "sera.cancel", arguments: [] }]);
});

test("$/progress shows in the status bar item (click: cancel) and hides when it ends", async () => {
  const client = await activate();
  const passedOn: string[] = [];
  const progress = (value: object) => client.clientOptions.middleware.handleWorkDoneProgress("t", value,
    (_token: unknown, params: { kind: string }) => passedOn.push(params.kind));
  progress({ kind: "begin", title: "sera: fix add", message: "starting" });
  assert.deepEqual(world.status, { text: "sera: starting", tooltip: "sera: fix add\nstarting\nClick to cancel (Sera: Cancel)",
    command: "sera.vscode.cancel", visible: true });
  progress({ kind: "report", message: "candidate 0 step 1: applied edits" });
  assert.equal(world.status.text, "sera: candidate 0 step 1: applied edits");
  progress({ kind: "end" });
  assert.equal(world.status.visible, false);
  assert.deepEqual(passedOn, ["begin", "report", "end"], "the notification's own progress must still get every value");
});

test("a changed server option is sent as didChangeConfiguration; a changed sera.path restarts the server", async () => {
  const client = await activate();
  world.settings.maxSteps = 9;
  world.settings.scaffold = "guided";
  await world.configurationListeners[0]({ affectsConfiguration: (section) => section === "sera.maxSteps" });
  assert.deepEqual(client.notifications, [{ settings: { sera: { max_steps: 9, scaffold: "guided" } } }]);
  delete world.settings.scaffold;
  await world.configurationListeners[0]({ affectsConfiguration: (section) => section === "sera.scaffold" });
  assert.deepEqual(client.notifications[1], { settings: { sera: { max_steps: 9, scaffold: null } } });

  await world.configurationListeners[0]({ affectsConfiguration: (section) => section === "sera.path" });
  assert.equal(client.running, false);
  assert.equal(world.clients.length, 2);
  assert.equal(world.clients[1].running, true);
});
