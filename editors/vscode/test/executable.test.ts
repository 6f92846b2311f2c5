import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";

import { findSera } from "../src/executable";

const folder = fs.mkdtempSync(path.join(os.tmpdir(), "sera-executable-"));
after(() => fs.rmSync(folder, { recursive: true, force: true }));

function file(relative: string, mode: number): string {
  const full = path.join(folder, relative);
  fs.mkdirSync(path.dirname(full), { recursive: true });
  fs.writeFileSync(full, "#!/bin/sh\n", { mode });
  return full;
}

const venvSera = file("venv/bin/sera", 0o755);
const notExecutable = file("plain/sera", 0o644);
const onPath = file("bin/sera", 0o755);

test("a configured path to an executable is used as it is", () => {
  assert.equal(findSera(venvSera, { PATH: "" }), venvSera);
});

test("a relative path is taken from the workspace folder", () => {
  assert.equal(findSera("venv/bin/sera", { baseDir: folder }), venvSera);
});

test("a bare name is looked up on the PATH, skipping files that cannot run", () => {
  const PATH = [path.join(folder, "plain"), path.join(folder, "nothing"), path.join(folder, "bin")].join(path.delimiter);
  assert.equal(findSera("sera", { PATH }), onPath);
  assert.equal(findSera("  ", { PATH }), onPath, "an empty sera.path means sera on the PATH");
});

test("a path that is not an executable file says to set sera.path", () => {
  for (const configured of [notExecutable, path.join(folder, "venv/bin"), path.join(folder, "missing/sera")]) {
    assert.throws(() => findSera(configured, { PATH: "" }), {
      message: `sera not found at ${configured}: set sera.path to the sera executable, e.g. /path/to/.venv/bin/sera`,
    });
  }
});

test("a name not on the PATH says so and to set sera.path", () => {
  assert.throws(() => findSera("sera", { PATH: path.join(folder, "plain") }),
    /^Error: sera not found: "sera" is not on the PATH VS Code was started with; set sera\.path to the sera executable/);
});

test("on Windows a bare name is found with an extension from PATHEXT", () => {
  const cmd = file("win/sera.cmd", 0o644);
  assert.equal(findSera("sera", { PATH: path.join(folder, "win"), PATHEXT: ".EXE;.CMD", platform: "win32" }), cmd);
});
