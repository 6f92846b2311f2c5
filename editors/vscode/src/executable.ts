// Where the `sera` executable is: the sera.path setting, checked before the server is started so
// that a wrong path gets a message that says what to set. No `vscode` import.

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export const SERA_PATH_HINT = "set sera.path to the sera executable, e.g. /path/to/.venv/bin/sera";

export interface SearchPlaces {
  /** The PATH to search for a bare name such as "sera". */
  PATH?: string;
  /** Windows: the extensions an executable may have (".EXE;.CMD;..."). */
  PATHEXT?: string;
  /** Where a relative sera.path is taken from (the workspace folder). */
  baseDir?: string;
  platform?: NodeJS.Platform;
}

function expandHome(configured: string): string {
  return configured === "~" || configured.startsWith("~/") ? path.join(os.homedir(), configured.slice(1)) : configured;
}

function isExecutableFile(candidate: string, platform: NodeJS.Platform): boolean {
  try {
    if (!fs.statSync(candidate).isFile()) {
      return false;
    }
    fs.accessSync(candidate, platform === "win32" ? fs.constants.F_OK : fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function namesToTry(name: string, places: SearchPlaces, platform: NodeJS.Platform): string[] {
  if (platform !== "win32") {
    return [name];
  }
  const extensions = (places.PATHEXT ?? ".EXE;.CMD;.BAT").split(";").filter(Boolean);
  return [name, ...extensions.map((extension) => name + extension.toLowerCase())];
}

/** The absolute path of the sera executable that `configured` (sera.path) names; throws with what to do. */
export function findSera(configured: string, places: SearchPlaces): string {
  const platform = places.platform ?? process.platform;
  const name = expandHome(configured.trim() || "sera");
  if (name.includes("/") || name.includes("\\")) {
    const candidate = path.resolve(places.baseDir ?? process.cwd(), name);
    const found = namesToTry(candidate, places, platform).find((file) => isExecutableFile(file, platform));
    if (found === undefined) {
      throw new Error(`sera not found at ${candidate}: ${SERA_PATH_HINT}`);
    }
    return found;
  }
  for (const folder of (places.PATH ?? "").split(path.delimiter).filter(Boolean)) {
    const found = namesToTry(path.join(folder, name), places, platform).find((file) => isExecutableFile(file, platform));
    if (found !== undefined) {
      return found;
    }
  }
  throw new Error(`sera not found: "${name}" is not on the PATH VS Code was started with; ${SERA_PATH_HINT}`);
}
