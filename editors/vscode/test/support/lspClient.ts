// A language client for the protocol tests: it starts the real `sera lsp` over stdio and plays
// the editor with vscode-languageserver-protocol's node connection (no VS Code): it records what
// the server says, answers its requests, and applies workspace edits to the files on disk.

import { ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  ApplyWorkspaceEditParams, ApplyWorkspaceEditRequest, ClientCapabilities, createProtocolConnection,
  DidChangeConfigurationNotification, DidChangeTextDocumentNotification, DidOpenTextDocumentNotification,
  DidSaveTextDocumentNotification, ExecuteCommandRequest, ExitNotification, InitializedNotification,
  InitializeRequest, InitializeResult, LogMessageNotification, MessageType, ProtocolConnection,
  ShowDocumentRequest, ShowMessageNotification, ShowMessageParams, ShowMessageRequest,
  ShowMessageRequestParams, ShutdownRequest, StreamMessageReader, StreamMessageWriter,
  WorkDoneProgress, WorkDoneProgressCreateRequest,
} from "vscode-languageserver-protocol/node";

import type { ProgressToken, ProgressValue } from "../../src/progressStatus";
import { applyWorkspaceEdit } from "./workspaceEdit";

/** The sera executable the tests start: $SERA_BIN, else the repository's .venv/bin/sera. */
export const SERA_BIN = process.env.SERA_BIN ?? path.resolve(__dirname, "../../../../../.venv/bin/sera");

export interface ClientSetup {
  /** The repository the server runs in (its working folder and workspace root). */
  root: string;
  /** Where sera keeps its cache for this test. */
  cacheDir: string;
  /** Arguments after `sera lsp`, e.g. ["--model", "scripted:/tmp/x.json"]. */
  args: string[];
  initializationOptions: Record<string, unknown>;
  /** Whether the client declares workspace.applyEdit (and applies the edits it gets). */
  applyEdit: boolean;
}

/** How long the client waits for the answer to shutdown, and then for the process to exit. */
const STOP_MS = 5_000;

export interface StopOutcome {
  answeredShutdown: boolean;
  exit: { code: number | null; signal: NodeJS.Signals | null };
}

interface OpenDocument {
  version: number;
  text: string;
}

function capabilities(applyEdit: boolean): ClientCapabilities {
  return {
    workspace: applyEdit
      ? { applyEdit: true, workspaceEdit: { documentChanges: true, resourceOperations: ["create", "rename", "delete"] } }
      : {},
    window: { workDoneProgress: true, showDocument: { support: false } },
    textDocument: { synchronization: { didSave: true } },
  };
}

export class TestClient {
  readonly messages: ShowMessageParams[] = [];
  readonly logs: string[] = [];
  readonly offers: ShowMessageRequestParams[] = [];
  readonly applyEditRequests: ApplyWorkspaceEditParams[] = [];
  /** Called with every $/progress value, in order. */
  onProgress: (token: ProgressToken, value: ProgressValue) => void = () => undefined;
  initializeResult: InitializeResult | undefined;
  private stderr = "";
  /** The open documents by file path (URIs may spell a path in more than one way). */
  private readonly documents = new Map<string, OpenDocument>();

  private constructor(
    private readonly setup: ClientSetup,
    private readonly server: ChildProcessWithoutNullStreams,
    private readonly connection: ProtocolConnection,
  ) {
    server.stderr.on("data", (chunk: Buffer) => { this.stderr += chunk.toString(); });
    this.answerTheServer();
  }

  static async start(setup: ClientSetup): Promise<TestClient> {
    if (!fs.existsSync(SERA_BIN)) {
      throw new Error(`sera not found at ${SERA_BIN}: set SERA_BIN to the sera executable, or create ` +
        "the repository's .venv with `bash .ci/run`");
    }
    const server = spawn(SERA_BIN, ["lsp", ...setup.args], {
      cwd: setup.root,
      env: { ...process.env, HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1", SERA_CACHE_DIR: setup.cacheDir },
    });
    const connection = createProtocolConnection(new StreamMessageReader(server.stdout), new StreamMessageWriter(server.stdin));
    const client = new TestClient(setup, server, connection);
    connection.listen();
    await client.initialize();
    return client;
  }

  private async initialize(): Promise<void> {
    this.initializeResult = await this.connection.sendRequest(InitializeRequest.type, {
      processId: process.pid,
      rootUri: pathToUri(this.setup.root),
      workspaceFolders: [{ uri: pathToUri(this.setup.root), name: path.basename(this.setup.root) }],
      capabilities: capabilities(this.setup.applyEdit),
      initializationOptions: this.setup.initializationOptions,
    });
    await this.connection.sendNotification(InitializedNotification.type, {});
  }

  private answerTheServer(): void {
    const connection = this.connection;
    connection.onNotification(ShowMessageNotification.type, (params) => { this.messages.push(params); });
    connection.onNotification(LogMessageNotification.type, (params) => { this.logs.push(params.message); });
    connection.onRequest(WorkDoneProgressCreateRequest.type, ({ token }) => {
      connection.onProgress(WorkDoneProgress.type, token, (value) => this.onProgress(token, value));
      return null;
    });
    connection.onRequest(ShowMessageRequest.type, (params) => {
      this.offers.push(params);
      return null;  // the user dismissed the offer
    });
    connection.onRequest(ShowDocumentRequest.type, () => ({ success: false }));
    connection.onRequest(ApplyWorkspaceEditRequest.type, (params) => this.applyEdit(params));
  }

  private applyEdit(params: ApplyWorkspaceEditParams): { applied: boolean; failureReason?: string } {
    this.applyEditRequests.push(params);
    if (!this.setup.applyEdit) {
      return { applied: false, failureReason: "this client did not declare workspace.applyEdit" };
    }
    const outcome = applyWorkspaceEdit(params.edit, (uri) => this.documents.get(fileURLToPath(uri))?.version);
    outcome.changedUris.forEach((uri) => this.reloadAndSave(uri));
    return outcome.applied ? { applied: true } : { applied: false, failureReason: outcome.failureReason };
  }

  /** An open document edited through applyEdit: tell the server its new text and that it is saved,
   * as VS Code and the extension (which saves the files an apply changed) do. */
  private reloadAndSave(editedUri: string): void {
    const file = fileURLToPath(editedUri);
    const document = this.documents.get(file);
    if (document === undefined) {
      return;
    }
    const uri = pathToUri(file);  // as the document was opened
    document.version += 1;
    document.text = fs.readFileSync(file, "utf8");
    void this.connection.sendNotification(DidChangeTextDocumentNotification.type, {
      textDocument: { uri, version: document.version }, contentChanges: [{ text: document.text }],
    });
    void this.connection.sendNotification(DidSaveTextDocumentNotification.type, { textDocument: { uri } });
  }

  /** Open a file as an editor does (version 1, its text on disk). */
  async open(file: string): Promise<string> {
    const uri = pathToUri(file);
    const text = fs.readFileSync(file, "utf8");
    this.documents.set(path.resolve(file), { version: 1, text });
    await this.connection.sendNotification(DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: "python", version: 1, text },
    });
    return uri;
  }

  execute(command: string, args: unknown[]): Promise<unknown> {
    return this.connection.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
  }

  changeConfiguration(settings: unknown): Promise<void> {
    return this.connection.sendNotification(DidChangeConfigurationNotification.type, { settings });
  }

  /** Whether the server offers `command` (its executeCommandProvider). */
  hasCommand(command: string): boolean {
    return this.initializeResult?.capabilities.executeCommandProvider?.commands.includes(command) ?? false;
  }

  errors(): string {
    return this.messages.filter((m) => m.type === MessageType.Error).map((m) => m.message).join("\n");
  }

  /** Resolves when `condition` holds; rejects after `seconds` naming `what` it waited for. */
  async waitFor(what: string, condition: () => boolean, seconds = 60): Promise<void> {
    for (let waited = 0; !condition(); waited += 0.05) {
      if (waited > seconds) {
        throw new Error(`waited ${seconds} s for ${what}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** The end of the server's stderr, to explain a failed test. */
  stderrTail(chars = 3000): string {
    return this.stderr.slice(-chars);
  }

  /** Shut the server down as an editor does (shutdown, then exit); one that does not answer
   * or exit within STOP_MS each is killed. Says how it went. */
  async stop(): Promise<StopOutcome> {
    const exited = new Promise<StopOutcome["exit"]>((resolve) => {
      if (this.server.exitCode !== null || this.server.signalCode !== null) {
        resolve({ code: this.server.exitCode, signal: this.server.signalCode });
      }
      this.server.once("exit", (code, signal) => resolve({ code, signal }));
    });
    let answeredShutdown = false;
    try {
      await withTimeout(this.connection.sendRequest(ShutdownRequest.type), STOP_MS);
      answeredShutdown = true;
    } catch {
      // no answer: the exit below, else the kill, ends it
    }
    await this.connection.sendNotification(ExitNotification.type).catch(() => undefined);
    const timer = setTimeout(() => this.server.kill("SIGKILL"), STOP_MS);
    const exit = await exited;
    clearTimeout(timer);
    this.connection.dispose();
    return { answeredShutdown, exit };
  }
}

function pathToUri(file: string): string {
  return pathToFileURL(file).toString();
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms).unref())]);
}

/** Run `body` with a started client, stopping it after; a failure carries the server's stderr. */
export async function withClient(setup: ClientSetup, body: (client: TestClient) => Promise<void>): Promise<void> {
  const client = await TestClient.start(setup);
  try {
    await body(client);
  } catch (error) {
    if (error instanceof Error) {
      error.message += `\n--- sera lsp stderr (end) ---\n${client.stderrTail()}`;
    }
    throw error;
  } finally {
    await client.stop();
  }
}
