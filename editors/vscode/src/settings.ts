// The extension's settings that are sera server options: which ones the user set, as the
// initializationOptions and workspace/didChangeConfiguration payloads `sera lsp` reads.
// No `vscode` import: the extension passes in what WorkspaceConfiguration.inspect returns.

/** Setting name under "sera." -> the server's option name (OPTIONS in sera/server/options.py). */
export const SERVER_OPTION_FOR_SETTING: Readonly<Record<string, string>> = {
  scaffold: "scaffold",
  candidates: "candidates",
  model: "model",
  adapter: "adapter",
  reranker: "reranker",
  temperature: "temperature",
  maxSteps: "max_steps",
  testCommand: "test_command",
};

/** Settings that change how the server is started: a change restarts it. */
export const RESTART_SETTINGS: readonly string[] = ["path", "args"];

export type ServerOptions = Record<string, unknown>;

/** The parts of WorkspaceConfiguration.inspect(key) a user sets (the default is not one). */
export interface SettingInspection {
  globalValue?: unknown;
  workspaceValue?: unknown;
  workspaceFolderValue?: unknown;
}

export type InspectSetting = (setting: string) => SettingInspection | undefined;

/** The value the user set, the most specific scope winning; undefined when only the default applies. */
export function userValue(inspection: SettingInspection | undefined): unknown {
  if (inspection === undefined) {
    return undefined;
  }
  const value = inspection.workspaceFolderValue ?? inspection.workspaceValue ?? inspection.globalValue;
  return value === null ? undefined : value;
}

/** The server options the user set, e.g. {"scaffold": "guided", "max_steps": 20}. */
export function serverOptions(inspect: InspectSetting): ServerOptions {
  const options: ServerOptions = {};
  for (const [setting, option] of Object.entries(SERVER_OPTION_FOR_SETTING)) {
    const value = userValue(inspect(setting));
    if (value !== undefined) {
      options[option] = value;
    }
  }
  return options;
}

/**
 * The didChangeConfiguration settings that take the server from the options it was `sent` to the
 * `current` ones: all the current ones, and null for an option the user no longer sets, so that
 * a server that merges what it gets (as older ones do) drops it too; the server then uses the
 * `sera lsp` flag or the repository's setting (`sera config`) again.
 */
export function configurationChange(sent: ServerOptions, current: ServerOptions): { sera: ServerOptions } {
  const unset = Object.keys(sent).filter((option) => !(option in current));
  return { sera: { ...Object.fromEntries(unset.map((option) => [option, null])), ...current } };
}

/** The arguments of the server process: `lsp` and the sera.args setting (strings; anything but a
 * list is ignored, as VS Code's settings editor would not let it be set). */
export function lspArguments(extraArgs: unknown): string[] {
  return ["lsp", ...(Array.isArray(extraArgs) ? extraArgs.map(String) : [])];
}

/** Whether a configuration change needs the server restarted, resent options, or nothing. */
export function changeKind(affects: (section: string) => boolean): "restart" | "options" | "none" {
  if (RESTART_SETTINGS.some((setting) => affects(`sera.${setting}`))) {
    return "restart";
  }
  if (Object.keys(SERVER_OPTION_FOR_SETTING).some((setting) => affects(`sera.${setting}`))) {
    return "options";
  }
  return "none";
}
