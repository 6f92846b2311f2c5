// A small workspace/applyEdit implementation for the protocol tests' client, which plays the editor:
// text edits (versioned or not) and create/rename/delete file operations, applied to the files on
// disk. Versions are checked before anything changes, so a refused edit changes nothing.

import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type {
  CreateFile, DeleteFile, Position, RenameFile, TextDocumentEdit, TextEdit, WorkspaceEdit,
} from "vscode-languageserver-protocol";

export type DocumentChange = TextDocumentEdit | CreateFile | RenameFile | DeleteFile;

export interface ApplyOutcome {
  applied: boolean;
  failureReason?: string;
  /** The URIs of the documents whose text changed, in order. */
  changedUris: string[];
}

/** The open documents' versions the editor knows (undefined: not open). */
export type VersionOf = (uri: string) => number | undefined;

function offsetAt(text: string, position: Position): number {
  let offset = 0;
  for (let line = 0; line < position.line; line += 1) {
    const end = text.indexOf("\n", offset);
    if (end === -1) {
      return text.length;  // past the last line: the end of the text
    }
    offset = end + 1;
  }
  const lineEnd = text.indexOf("\n", offset);
  const lineLength = (lineEnd === -1 ? text.length : lineEnd) - offset;
  return offset + Math.min(position.character, lineLength);
}

/** `edits` (ranges in the original text, not overlapping) applied to `text`. Edits that start at
 * the same place are applied in the order given, as LSP says. */
export function applyTextEdits(text: string, edits: TextEdit[]): string {
  const located = edits.map((edit, order) => ({
    start: offsetAt(text, edit.range.start), end: offsetAt(text, edit.range.end), newText: edit.newText, order,
  }));
  located.sort((a, b) => a.start - b.start || a.order - b.order);
  let result = "";
  let copied = 0;
  for (const edit of located) {
    if (edit.start < copied) {
      throw new Error(`overlapping text edits at offset ${edit.start}`);
    }
    result += text.slice(copied, edit.start) + edit.newText;
    copied = edit.end;
  }
  return result + text.slice(copied);
}

function isTextDocumentEdit(change: DocumentChange): change is TextDocumentEdit {
  return "textDocument" in change;
}

/** Every change of `edit` as documentChanges (a `changes` map is unversioned text edits). */
export function documentChanges(edit: WorkspaceEdit): DocumentChange[] {
  if (edit.documentChanges !== undefined) {
    return edit.documentChanges;
  }
  return Object.entries(edit.changes ?? {}).map(([uri, edits]) => ({ textDocument: { uri, version: null }, edits }));
}

function versionProblem(changes: DocumentChange[], versionOf: VersionOf): string | undefined {
  for (const change of changes.filter(isTextDocumentEdit)) {
    const { uri, version } = change.textDocument;
    if (version !== null && version !== versionOf(uri)) {
      return `${uri} is at version ${versionOf(uri) ?? "(not open)"}, the edit is for version ${version}`;
    }
  }
  return undefined;
}

function applyTextDocumentEdit(change: TextDocumentEdit): void {
  const file = fileURLToPath(change.textDocument.uri);
  fs.writeFileSync(file, applyTextEdits(fs.readFileSync(file, "utf8"), change.edits));
}

/** Whether to write `file` when it may exist: overwrite wins over ignoreIfExists; an existing file
 * with neither option is an error, as in VS Code. */
function mayWrite(file: string, options: { overwrite?: boolean; ignoreIfExists?: boolean } | undefined): boolean {
  if (!fs.existsSync(file) || options?.overwrite) {
    return true;
  }
  if (options?.ignoreIfExists) {
    return false;
  }
  throw new Error(`${file} exists, and the edit neither overwrites nor ignores it`);
}

function applyCreate(change: CreateFile): void {
  const file = fileURLToPath(change.uri);
  if (!mayWrite(file, change.options)) {
    return;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, "");
}

function applyRename(change: RenameFile): void {
  const from = fileURLToPath(change.oldUri);
  const to = fileURLToPath(change.newUri);
  if (!mayWrite(to, change.options)) {
    return;
  }
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.renameSync(from, to);
}

function applyDelete(change: DeleteFile): void {
  const file = fileURLToPath(change.uri);
  if (!fs.existsSync(file) && change.options?.ignoreIfNotExists) {
    return;
  }
  fs.rmSync(file, { recursive: change.options?.recursive ?? false });
}

function applyChange(change: DocumentChange): string | undefined {
  if (isTextDocumentEdit(change)) {
    applyTextDocumentEdit(change);
    return change.textDocument.uri;
  }
  if (change.kind === "create") {
    applyCreate(change);
  } else if (change.kind === "rename") {
    applyRename(change);
  } else {
    applyDelete(change);
  }
  return undefined;
}

/** Apply `edit` to the files on disk, as an editor that then saves them would. */
export function applyWorkspaceEdit(edit: WorkspaceEdit, versionOf: VersionOf): ApplyOutcome {
  const changes = documentChanges(edit);
  const problem = versionProblem(changes, versionOf);
  if (problem !== undefined) {
    return { applied: false, failureReason: problem, changedUris: [] };
  }
  const changedUris: string[] = [];
  try {
    for (const change of changes) {
      const uri = applyChange(change);
      if (uri !== undefined) {
        changedUris.push(uri);
      }
    }
  } catch (error) {
    return { applied: false, failureReason: (error as Error).message, changedUris };
  }
  return { applied: true, changedUris };
}
