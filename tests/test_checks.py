"""Patch checks on real repositories and real work copies: syntax, applying to the user's current
tree, tests in the sandbox."""

from __future__ import annotations

from conftest import CALC, user_state
from sera.agent import checks  # (`tests_pass` imported by name would be collected as a test)
from sera.agent.checks import check_patch, new_syntax_errors, patch_applies
from sera.agent.workcopy import WorkCopy, snapshot_commit
from sera.config import AgentConfig

TEST = "python3 -c 'import calc; assert calc.add(2, 3) == 5, calc.add(2, 3)'"
CONFIG = AgentConfig(command_timeout=60)


def make_patch(repo, commit, old: str, new: str, path: str = "calc.py") -> str:
    """A real patch of `commit`: `old` replaced by `new` in `path`, taken from a work copy."""
    with WorkCopy.create(repo, commit) as workcopy:
        target = workcopy.path / path
        target.write_text(target.read_text().replace(old, new))
        return workcopy.diff()


def test_new_syntax_errors_counts_only_what_the_edit_brought(tmp_path):
    (tmp_path / "a.py").write_text("def f(:\n    return 1\n")
    errors = new_syntax_errors(tmp_path, "a.py", b"def f():\n    return 1\n")
    assert errors and "line 1" in errors[0] and "def f(:" in errors[0]
    assert new_syntax_errors(tmp_path, "a.py", b"def f(:\n    return 1\n") == []  # already broken
    assert new_syntax_errors(tmp_path, "a.py", None)  # a new file: every error is new
    (tmp_path / "notes.unknownext").write_text("((((")
    assert new_syntax_errors(tmp_path, "notes.unknownext", b"") is None  # no grammar
    assert new_syntax_errors(tmp_path, "gone.py", b"x = 1\n") is None


def test_patch_applies_to_the_current_tree_without_touching_it(repo):
    commit = snapshot_commit(repo)
    patch = make_patch(repo, commit, "return a - b", "return a + b")
    before = user_state(repo)
    assert patch_applies(repo, patch) == (True, "")
    # The user edits a context line of the hunk: plain apply fails, the 3-way merge works.
    calc = repo / "calc.py"
    calc.write_text(CALC.replace("def scale(values, factor):", "def scale(values, factor=1):"))
    edited = user_state(repo)
    assert patch_applies(repo, patch) == (True, "")
    assert user_state(repo) == edited
    # The user rewrites the very line the patch changes: it no longer applies.
    calc.write_text(CALC.replace("return a - b", "return sum((a, b))"))
    edited = user_state(repo)
    ok, why = patch_applies(repo, patch)
    assert not ok and "conflicts with your edits" in why
    assert user_state(repo) == edited
    assert user_state(repo)["index"] == before["index"]
    assert patch_applies(repo, "") == (False, "the patch is empty")


def test_check_patch_parses_and_runs_the_tests(repo):
    commit = snapshot_commit(repo)
    good = make_patch(repo, commit, "return a - b", "return a + b")
    assert check_patch(repo, commit, good, TEST, CONFIG).ok
    checked = check_patch(repo, commit, good, None, CONFIG)
    assert (checked.applies, checked.parses, checked.tests) == (True, True, None)

    wrong = make_patch(repo, commit, "return a - b", "return a * b")
    checked = check_patch(repo, commit, wrong, TEST, CONFIG)
    assert (checked.parses, checked.tests, checked.ok) == (True, False, False)
    assert "exit code 1" in checked.detail and "AssertionError: 6" in checked.detail

    broken = make_patch(repo, commit, "return a - b", "return (a + b")
    checked = check_patch(repo, commit, broken, TEST, CONFIG)
    assert (checked.parses, checked.tests) == (False, None)  # the tests are not run
    assert "calc.py no longer parses" in checked.detail and "return (a + b" in checked.detail


def test_tests_pass_in_a_fresh_work_copy(repo):
    commit = snapshot_commit(repo)
    before = user_state(repo)
    good = make_patch(repo, commit, "a - b", "a + b")
    assert checks.tests_pass(repo, commit, good, TEST, CONFIG) == (True, "")
    wrong = make_patch(repo, commit, "a - b", "b - a")
    passed, output = checks.tests_pass(repo, commit, wrong, TEST, CONFIG)
    assert not passed and "AssertionError: 1" in output
    passed, why = checks.tests_pass(repo, commit, "not a patch\n", TEST, CONFIG)
    assert not passed and "not a valid git patch" in why
    slow = checks.tests_pass(repo, commit, wrong, "sleep 5", AgentConfig(command_timeout=0.5))
    assert slow[0] is False and "did not finish within 0.5 seconds" in slow[1]
    assert user_state(repo) == before


def test_a_file_broken_before_the_patch_parses_only_as_before_and_says_so(repo):
    """A patch that leaves an already broken file no worse passes the parse filter, but the
    candidate's line says the file did not parse before either ("parses yes" would mislead)."""
    from conftest import git
    from sera.agent.ranking import rank_candidates
    from sera.agent.solve import Candidate
    from sera.agent.summary import rank_line
    from sera.config import load_settings
    (repo / "calc.py").write_text(CALC.replace("def scale(values, factor):",
                                               "def scale(values, factor:"))
    git(repo, "commit", "-qam", "a broken scale")
    commit = snapshot_commit(repo)
    patch = make_patch(repo, commit, "return a - b", "return a + b")
    checked = check_patch(repo, commit, patch, None, CONFIG)
    assert (checked.parses, checked.broken_before) == (True, ("calc.py",))
    clean = make_patch(repo, commit, "# project", "# the project", path="README.md")
    assert check_patch(repo, commit, clean, None, CONFIG).broken_before == ()
    candidate = Candidate(0, "submitted", "", patch, 1, 0, 0, 0.0, "")
    settings = load_settings(repo, {"agent.test_command": ""})
    [ranked] = rank_candidates(repo, commit, "fix add", [candidate], None, settings).entries
    candidate.rank, candidate.filters = ranked.rank, ranked.filters
    assert "parses yes (as before: calc.py did not parse already)" in rank_line(candidate)
