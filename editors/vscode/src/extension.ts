// The VS Code wiring: start `sera lsp`, register the "Sera: ..." commands, keep the server's
// options in step with the settings and show its progress in the status bar. The logic lives in
// the modules without `vscode` (settings, commands, runs, progressStatus, replies, executable).

import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  State,
} from "vscode-languageclient/node";

import {
  applyArguments, cancelArguments, EDITOR_COMMANDS, PRESETS, runsArguments, SERVER_COMMANDS,
  ServerCommand, solveArguments, specializeArguments, taskProblem, undoArguments,
} from "./commands";
import { findSera } from "./executable";
import { ProgressStatus } from "./progressStatus";
import { requestFailure, serverError } from "./replies";
import { CandidateChoice, candidateChoice } from "./runs";
import { changeKind, configurationChange, lspArguments, ServerOptions, serverOptions } from "./settings";

let extension: SeraExtension | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel("sera");
  const statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 0);
  statusItem.command = EDITOR_COMMANDS.cancel;
  extension = new SeraExtension(output, statusItem);
  const commands: [string, () => Promise<void>][] = [
    [EDITOR_COMMANDS.solve, () => extension!.solve()],
    [EDITOR_COMMANDS.specialize, () => extension!.specialize()],
    [EDITOR_COMMANDS.apply, () => extension!.applyCandidate()],
    [EDITOR_COMMANDS.undo, () => extension!.undo()],
    [EDITOR_COMMANDS.cancel, () => extension!.cancel()],
  ];
  context.subscriptions.push(output, statusItem,
    ...commands.map(([id, run]) => vscode.commands.registerCommand(id, run)),
    vscode.workspace.onDidChangeConfiguration((event) => extension!.onConfigurationChange(event)));
  await extension.start();
}

export async function deactivate(): Promise<void> {
  await extension?.stop();
  extension = undefined;
}

/** The workspace folder of the active editor, else the first one. */
function workspaceFolder(): vscode.WorkspaceFolder | undefined {
  const editorUri = vscode.window.activeTextEditor?.document.uri;
  return (editorUri && vscode.workspace.getWorkspaceFolder(editorUri)) || vscode.workspace.workspaceFolders?.[0];
}

/** The file a command is about: the active editor's file, else the workspace folder. */
function activeUri(): vscode.Uri | undefined {
  const editorUri = vscode.window.activeTextEditor?.document.uri;
  return editorUri?.scheme === "file" ? editorUri : workspaceFolder()?.uri;
}

function seraConfiguration(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration("sera", workspaceFolder()?.uri);
}

function currentServerOptions(): ServerOptions {
  const configuration = seraConfiguration();
  return serverOptions((setting) => configuration.inspect(setting));
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function offerSettings(message: string, setting: string): Promise<void> {
  const choice = await vscode.window.showErrorMessage(message, "Open Settings");
  if (choice === "Open Settings") {
    await vscode.commands.executeCommand("workbench.action.openSettings", setting);
  }
}

class SeraExtension {
  private client: LanguageClient | undefined;
  private sentOptions: ServerOptions = {};
  private readonly progress = new ProgressStatus();

  constructor(private readonly output: vscode.OutputChannel, private readonly statusItem: vscode.StatusBarItem) {}

  // --- the server -------------------------------------------------------------------------------

  async start(): Promise<LanguageClient | undefined> {
    const folder = workspaceFolder()?.uri.fsPath;
    const configuration = seraConfiguration();
    let command: string;
    try {
      const configured = configuration.get("path");
      command = findSera(typeof configured === "string" ? configured : "sera",
        { PATH: process.env.PATH, PATHEXT: process.env.PATHEXT, baseDir: folder });
    } catch (error) {
      void offerSettings(messageOf(error), "sera.path");
      return undefined;
    }
    const args = lspArguments(configuration.get("args"));
    const client = new LanguageClient("sera", "sera", { command, args, options: { cwd: folder } },
      this.clientOptions());
    client.onDidChangeState((change) => change.newState === State.Stopped && this.clearProgress());
    this.client = client;
    try {
      await client.start();
    } catch (error) {
      this.client = undefined;
      void offerSettings(`sera: \`${command} ${args.join(" ")}\` did not start: ${messageOf(error)}; ` +
        "the \"sera\" output channel has its log; check sera.path and sera.args", "sera");
      return undefined;
    }
    return client;
  }

  private clientOptions(): LanguageClientOptions {
    return {
      documentSelector: [{ scheme: "file" }],
      outputChannel: this.output,
      initializationOptions: () => {
        this.sentOptions = currentServerOptions();
        return this.sentOptions;
      },
      middleware: {
        handleWorkDoneProgress: (token, params, next) => {
          this.progress.update(token, params);
          this.showProgress();
          next(token, params);
        },
      },
    };
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.clearProgress();
    if (client?.needsStop()) {
      await client.stop();
    }
  }

  private async runningClient(): Promise<LanguageClient | undefined> {
    if (this.client?.state === State.Stopped) {
      this.client = undefined;  // it stopped for good (crashed too often): start a new one
    }
    return this.client ?? this.start();
  }

  /** The command's reply, or undefined when it failed (the user has been told). */
  private async execute(command: ServerCommand, args: unknown[]): Promise<unknown> {
    const client = await this.runningClient();
    if (client === undefined) {
      return undefined;
    }
    try {
      const reply: unknown = await client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
      this.output.appendLine(`${command}: ${JSON.stringify(reply)?.slice(0, 2000)}`);
      return serverError(reply) === undefined ? reply : undefined;  // the server showed its error itself
    } catch (error) {
      void vscode.window.showErrorMessage(requestFailure(command, messageOf(error)));
      return undefined;
    }
  }

  // --- settings and progress --------------------------------------------------------------------

  async onConfigurationChange(event: vscode.ConfigurationChangeEvent): Promise<void> {
    const kind = changeKind((section) => event.affectsConfiguration(section));
    if (kind === "restart") {
      await this.stop();
      await this.start();
    } else if (kind === "options" && this.client?.isRunning()) {
      const current = currentServerOptions();
      await this.client.sendNotification(DidChangeConfigurationNotification.type,
        { settings: configurationChange(this.sentOptions, current) });
      this.sentOptions = current;
    }
  }

  private showProgress(): void {
    const text = this.progress.text;
    if (text === undefined) {
      this.statusItem.hide();
      return;
    }
    this.statusItem.text = text;
    this.statusItem.tooltip = this.progress.tooltip;
    this.statusItem.show();
  }

  private clearProgress(): void {
    this.progress.clear();
    this.showProgress();
  }

  // --- the commands -----------------------------------------------------------------------------

  async solve(): Promise<void> {
    const task = await vscode.window.showInputBox({
      title: "Sera: Solve", prompt: "What sera should do; it proposes candidate patches to apply",
      placeHolder: "e.g. fix the crash in parse() on empty input", validateInput: taskProblem,
      ignoreFocusOut: true,
    });
    if (task !== undefined) {
      await this.execute(SERVER_COMMANDS.solve, solveArguments(task, activeUri()?.toString()));
    }
  }

  async specialize(): Promise<void> {
    const folder = workspaceFolder();
    if (folder === undefined) {
      void vscode.window.showErrorMessage("sera: open the folder of a git repository first; " +
        "Sera: Specialize learns the workspace folder's repository");
      return;
    }
    const choice = await vscode.window.showQuickPick(PRESETS, {
      title: `Sera: Specialize to ${folder.name}`, placeHolder: "How much time to spend learning this repository",
    });
    if (choice === undefined) {
      return;
    }
    // the server reports the outcome itself (a message, and the report in the "sera" output channel)
    await this.execute(SERVER_COMMANDS.specialize, specializeArguments(folder.uri.toString(), choice.preset));
  }

  async applyCandidate(): Promise<void> {
    const uri = activeUri();
    const answer = await this.execute(SERVER_COMMANDS.runs, runsArguments(uri?.toString()));
    if (answer === undefined) {
      return;
    }
    let choice: CandidateChoice;
    try {
      choice = candidateChoice(answer);
    } catch (error) {
      void vscode.window.showErrorMessage(messageOf(error));
      return;
    }
    if ("problem" in choice) {
      void vscode.window.showInformationMessage(choice.problem);
      return;
    }
    const pick = await vscode.window.showQuickPick(choice.picks, {
      title: choice.title, placeHolder: "The candidate to apply to your files (Sera: Undo reverts it)",
      matchOnDescription: true, matchOnDetail: true,
    });
    if (pick !== undefined) {
      await this.execute(SERVER_COMMANDS.apply, applyArguments(pick.target, uri?.toString()));
    }
  }

  async undo(): Promise<void> {
    await this.execute(SERVER_COMMANDS.undo, undoArguments(activeUri()?.toString()));
  }

  async cancel(): Promise<void> {
    await this.execute(SERVER_COMMANDS.cancel, cancelArguments());
  }
}
