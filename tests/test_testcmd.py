"""agent.test_command: none, as given, or detected from the repository's files; and the guided
scaffold of a solve gets the resolved command."""

from __future__ import annotations

import json

import pytest

from conftest import git, write_script
from sera.agent.solve import solve
from sera.agent.testcmd import PYTEST, resolve_test_command
from sera.agent.trajectory import Trajectory
from sera.config import load_settings
from sera.models.registry import load_model


NPM_INIT_PLACEHOLDER = 'echo "Error: no test specified" && exit 1'


def write(root, files: dict[str, str]):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize("files, expected", [
    ({}, None),
    ({"README.md": "# x\n", "src/a.py": "x = 1\n"}, None),
    ({"pytest.ini": "[pytest]\n"}, PYTEST),
    ({"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"}, PYTEST),
    ({"pyproject.toml": "[project]\nname = 'x'\n"}, None),
    ({"setup.cfg": "[tool:pytest]\ntestpaths = t\n"}, PYTEST),
    ({"tox.ini": "[tox]\n[pytest]\n"}, PYTEST),
    ({"tests/unit/test_a.py": "def test_a(): pass\n"}, PYTEST),
    ({"tests/helpers.py": "x = 1\n"}, None),
    ({"pytest.ini": "[pytest]\n", "src/pkg/__init__.py": ""}, f"PYTHONPATH=src {PYTEST}"),
    ({"pytest.ini": "[pytest]\n", "src/notes.txt": ""}, PYTEST),
    ({"package.json": json.dumps({"scripts": {"test": "jest"}})}, "npm test --silent"),
    ({"package.json": json.dumps({"scripts": {"test": NPM_INIT_PLACEHOLDER}})}, None),
    ({"package.json": "{not json"}, None),
    ({"go.mod": "module x\n"}, "go test ./..."),
    ({"Cargo.toml": "[package]\nname = 'x'\n"}, "cargo test -q"),
    ({"go.mod": "module x\n", "test/test_tool.py": ""}, PYTEST),  # first match wins
])
def test_auto_detects_from_the_files(tmp_path, files, expected):
    assert resolve_test_command(write(tmp_path, files), "auto") == expected


def test_none_and_explicit_commands(tmp_path):
    write(tmp_path, {"pytest.ini": "[pytest]\n"})
    assert resolve_test_command(tmp_path, "") is None
    assert resolve_test_command(tmp_path, "  ") is None
    assert resolve_test_command(tmp_path, "make check") == "make check"


def test_guided_solve_runs_the_detected_command(repo, tmp_path):
    (repo / "tests").mkdir()
    (repo / "tests" / "test_calc.py").write_text("import calc\n\ndef test_add():\n"
                                                 "    assert calc.add(2, 3) == 5\n")
    git(repo, "add", "tests")
    git(repo, "commit", "-qm", "tests")
    fix = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"
    spec = write_script(tmp_path / "g.json", [fix])
    settings = load_settings(repo, {"model.spec": spec, "solve.candidates": 1,
                                    "agent.scaffold": "guided", "agent.test_command": "auto"})
    result = solve(repo, "add(2, 3) returns -1", settings, load_model(spec, settings.model))
    meta = Trajectory.load(result.candidates[0].trajectory).meta
    assert meta["test_command"] == PYTEST
    assert meta["checks"][-1][-1]["name"] == "tests"
    assert result.ranking.test_command == PYTEST
