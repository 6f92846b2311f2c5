// A real git repository in a temporary folder with a bug in calc.add (as the Python tests'
// conftest.py has), and a scripted model reply that fixes it.

import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";

export const CALC = `def add(a, b):
    """Return the sum of a and b."""
    return a - b


def scale(values, factor):
    return [v * factor for v in values]
`;

export const FIXED_CALC = CALC.replace("return a - b", "return a + b");

/** The guided scaffold's answer that fixes calc.add (a SEARCH/REPLACE block, tests/test_guided.py GOOD). */
export const GUIDED_FIX = "The sum subtracts.\ncalc.py\n```python\n<<<<<<< SEARCH\n    return a - b\n=======\n" +
  "    return a + b\n>>>>>>> REPLACE\n```";

const GIT_IDENTITY = {
  GIT_AUTHOR_NAME: "Test", GIT_AUTHOR_EMAIL: "test@example.com",
  GIT_COMMITTER_NAME: "Test", GIT_COMMITTER_EMAIL: "test@example.com",
};

export interface TestRepo {
  /** The temporary folder: the repository, the model script and sera's cache are inside it. */
  home: string;
  root: string;
  calcPath: string;
  calcUri: string;
  rootUri: string;
  remove(): void;
}

function git(root: string, ...args: string[]): void {
  execFileSync("git", args, { cwd: root, env: { ...process.env, ...GIT_IDENTITY }, stdio: "pipe" });
}

export function makeCalcRepo(): TestRepo {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "sera-vscode-"));
  const root = path.join(home, "project");
  fs.mkdirSync(root);
  git(root, "init", "-q", "-b", "main");
  fs.writeFileSync(path.join(root, "calc.py"), CALC);
  fs.writeFileSync(path.join(root, "README.md"), "# project\n");
  git(root, "add", "-A");
  git(root, "commit", "-qm", "initial");
  const calcPath = path.join(root, "calc.py");
  return {
    home, root, calcPath,
    calcUri: pathToFileURL(calcPath).toString(),
    rootUri: pathToFileURL(root).toString(),
    remove: () => fs.rmSync(home, { recursive: true, force: true }),
  };
}

/** A model spec that answers each request with the next of `replies` (sera's scripted model). */
export function writeScript(repo: TestRepo, replies: string[]): string {
  const file = path.join(repo.home, "script.json");
  fs.writeFileSync(file, JSON.stringify(replies));
  return `scripted:${file}`;
}
