// The workspace/executeCommand requests the extension sends to `sera lsp`, and their arguments.
// No `vscode` import: URIs are passed in as strings.

/** The commands this extension contributes (the command palette's "Sera: ..."). They differ from
 * the server's command names, which vscode-languageclient registers itself. */
export const EDITOR_COMMANDS = {
  solve: "sera.vscode.solve",
  specialize: "sera.vscode.specialize",
  apply: "sera.vscode.applyCandidate",
  undo: "sera.vscode.undo",
  cancel: "sera.vscode.cancel",
} as const;

export const SERVER_COMMANDS = {
  solve: "sera.solve",
  specialize: "sera.specialize",
  runs: "sera.runs",
  apply: "sera.apply",
  undo: "sera.undo",
  cancel: "sera.cancel",
} as const;

export type ServerCommand = (typeof SERVER_COMMANDS)[keyof typeof SERVER_COMMANDS];

export interface PresetChoice {
  label: string;
  /** The server's preset name; undefined runs sera specialize with the repository's own settings. */
  preset: string | undefined;
  detail: string;
}

export const PRESETS: readonly PresetChoice[] = [
  { label: "demo", preset: "demo",
    detail: "minutes on 2 CPU cores with the small embedded model: a taste, not a good adapter" },
  { label: "laptop", preset: "laptop",
    detail: "an evening on a laptop CPU with the default embedded model" },
  { label: "default", preset: undefined,
    detail: "no preset: the repository's settings as `sera config` shows them" },
];

type WithUri = { uri?: string };

function withUri(uri: string | undefined): WithUri {
  return uri === undefined ? {} : { uri };
}

/** Why `text` is no task (for the input box), or undefined when it is one. */
export function taskProblem(text: string): string | undefined {
  return text.trim() === "" ? "Describe the task, e.g. \"fix the crash in parse() on empty input\"" : undefined;
}

export function solveArguments(task: string, uri?: string): [{ task: string } & WithUri] {
  const problem = taskProblem(task);
  if (problem !== undefined) {
    throw new Error(problem);
  }
  return [{ task: task.trim(), ...withUri(uri) }];
}

export function specializeArguments(folderUri: string, preset: string | undefined): [{ uri: string; preset?: string }] {
  return [preset === undefined ? { uri: folderUri } : { uri: folderUri, preset }];
}

export function runsArguments(uri?: string): [WithUri] {
  return [withUri(uri)];
}

/** `target` is "RUN:INDEX", as the candidate picks carry it. */
export function applyArguments(target: string, uri?: string): [{ target: string } & WithUri] {
  return [{ target, ...withUri(uri) }];
}

export function undoArguments(uri?: string): [WithUri] {
  return [withUri(uri)];
}

export function cancelArguments(): [] {
  return [];
}
