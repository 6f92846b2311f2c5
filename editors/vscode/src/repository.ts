// Where a reply's repository-relative files are on disk. No `vscode` import.

import * as fs from "node:fs";
import * as path from "node:path";

/** The git repository folder containing `start` (a folder), or undefined outside one. */
export function repositoryRoot(start: string): string | undefined {
  let folder = path.resolve(start);
  for (;;) {
    if (fs.existsSync(path.join(folder, ".git"))) {
      return folder;
    }
    const parent = path.dirname(folder);
    if (parent === folder) {
      return undefined;
    }
    folder = parent;
  }
}

/** The git repository of a file or folder, or undefined outside one (or when it does not exist). */
export function repositoryOf(fileOrFolder: string): string | undefined {
  try {
    const isFolder = fs.statSync(fileOrFolder).isDirectory();
    return repositoryRoot(isFolder ? fileOrFolder : path.dirname(fileOrFolder));
  } catch {
    return undefined;
  }
}

/** The absolute paths of `files` (relative to the repository `root`, with "/" separators). */
export function absolutePaths(root: string, files: string[]): string[] {
  return files.map((file) => path.join(root, ...file.split("/")));
}
