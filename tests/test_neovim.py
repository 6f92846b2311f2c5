"""Neovim (Debian's, 0.7 here) driving `sera lsp` headless through the setup the README gives
(editors/neovim/sera.lua): solve, then apply and undo through workspace/applyEdit, which change
the buffer itself, unsaved edits included, without :checktime; preview shows the patch in a
message (0.7 has no window/showDocument)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CALC, write_script
from test_guided import GOOD

ROOT = Path(__file__).resolve().parent.parent
NVIM = shutil.which("nvim")
pytestmark = pytest.mark.skipif(NVIM is None, reason="Neovim is not installed (apt-get install neovim)")


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string literal for these paths


def test_neovim_solves_applies_into_the_buffer_and_undoes(repo, tmp_path):
    script = write_script(tmp_path / "guided.json", [GOOD])
    out = tmp_path / "out.json"
    command = [sys.executable, "-m", "sera", "-C", str(repo), "lsp", "--model", script,
               "--scaffold", "guided"]
    globals_ = (f"lua SERA_LUA={lua_string(str(ROOT / 'editors/neovim/sera.lua'))}; "
                f"REPO={lua_string(str(repo))}; OUT={lua_string(str(out))}; "
                f"SERA_CMD={{{', '.join(lua_string(part) for part in command)}}}")
    done = subprocess.run([NVIM, "--headless", "-u", "NONE", "-i", "NONE", "--cmd", globals_,
                           "-c", f"luafile {ROOT / 'tests/neovim/drive.lua'}"],
                          capture_output=True, text=True, timeout=300, cwd=repo)
    assert out.is_file(), done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["errors"] == [], result
    unsaved = "# typed, not saved"
    assert result["applied"] == (CALC.replace("a - b", "a + b") + unsaved).split("\n")
    assert result["undone"] == (CALC + unsaved).split("\n")
    assert (repo / "calc.py").read_text() == CALC  # the buffer changed, not the file on disk
    assert result["apply"]["files"] == ["calc.py"] and result["undo"]["files"] == ["calc.py"]
    said = "\n".join(result["messages"])
    assert "applied candidate 0 of run" in said and "undid candidate 0" in said
    assert "+    return a + b" in said  # the preview, as a message
