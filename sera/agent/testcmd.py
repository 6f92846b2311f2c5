"""The test command that checks a patch (setting `agent.test_command`): '' = none, 'auto' = detected
from the repository's files, anything else is used as given.

Detection, first match wins: a pytest configuration or a tests/ (test/) folder with test_*.py files
-> `python -m pytest -x -q` (with `PYTHONPATH=src` in a src layout, so that the work copy's package
is tested rather than an installed one); package.json with a "test" script (not the failing placeholder that
`npm init` writes) -> `npm test --silent`; go.mod -> `go test ./...`; Cargo.toml -> `cargo test -q`.
"""

from __future__ import annotations

import configparser
import json
import tomllib
from pathlib import Path

PYTEST = "python -m pytest -x -q"


def resolve_test_command(repo_root: Path, setting: str) -> str | None:
    """The command to run, or None for no tests."""
    setting = setting.strip()
    if not setting:
        return None
    if setting != "auto":
        return setting
    return detect_test_command(Path(repo_root))


def detect_test_command(root: Path) -> str | None:
    """A test command guessed from the files at `root`, or None."""
    if _has_pytest_config(root) or _has_test_files(root):
        # src layout: the work copy's own package, not an installed copy of the user's checkout
        return f"PYTHONPATH=src {PYTEST}" if _has_src_package(root) else PYTEST
    if _has_npm_test(root / "package.json"):
        return "npm test --silent"
    if (root / "go.mod").is_file():
        return "go test ./..."
    if (root / "Cargo.toml").is_file():
        return "cargo test -q"
    return None


def _has_pytest_config(root: Path) -> bool:
    if (root / "pytest.ini").is_file() or (root / "conftest.py").is_file():
        return True
    pyproject = _read(root / "pyproject.toml")
    if pyproject is not None:
        try:
            if "pytest" in tomllib.loads(pyproject).get("tool", {}):
                return True
        except tomllib.TOMLDecodeError:
            pass  # not ours to fix: the other clues still count
    return _ini_has_section(root / "tox.ini", "pytest") or \
        _ini_has_section(root / "setup.cfg", "tool:pytest")


def _has_src_package(root: Path) -> bool:
    src = root / "src"
    return src.is_dir() and any((child / "__init__.py").is_file() for child in src.iterdir())


def _has_test_files(root: Path) -> bool:
    return any(any((root / folder).rglob("test_*.py")) for folder in ("tests", "test")
               if (root / folder).is_dir())


def _has_npm_test(package_json: Path) -> bool:
    text = _read(package_json)
    if text is None:
        return False
    try:
        scripts = json.loads(text).get("scripts") or {}
    except (ValueError, AttributeError):
        return False
    test = scripts.get("test") if isinstance(scripts, dict) else None
    # `npm init` writes a test script that only fails: echo "Error: no test specified" && exit 1
    return isinstance(test, str) and bool(test.strip()) and "no test specified" not in test


def _ini_has_section(path: Path, section: str) -> bool:
    text = _read(path)
    if text is None:
        return False
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return False
    return parser.has_section(section)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
    except OSError:
        return None
