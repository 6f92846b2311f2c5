"""sera.diff, the one patch parser: against what git itself writes, and on what models write."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sera.diff import changed_files, changed_lines, changed_ranges, file_sections, normalize, parse

# Lines that look like headers or notes inside a hunk are what trips position-blind parsers.
LINE = st.sampled_from(["a", "b", "x = 1", "-- dashes", "++ pluses", "--- a/f", "+++ b/f",
                        "@@ -1 +1 @@", "\\ note", "", "  indented", "diff --git a/x b/x"])
NAME = st.sampled_from(["f.py", "with space.py", "tab\there.py", "ünï.py", 'quo"te.py'])


def git_diff(tmp: Path, old: list[str] | None, new: list[str] | None, name: str,
             end_newline: bool = True) -> str:
    """What `git diff --no-index` writes for the two versions of `name` (None: absent)."""
    sides = []
    for side, lines in (("a", old), ("b", new)):
        path = tmp / side / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        if lines is not None:
            path.write_text("\n".join(lines) + ("\n" if end_newline and lines else ""),
                            encoding="utf-8")
        sides.append(str(path.relative_to(tmp)) if lines is not None else "/dev/null")
    run = subprocess.run(["git", "diff", "--no-index", "--no-color", "--", *sides], cwd=tmp,
                         capture_output=True, text=True)
    assert run.returncode in (0, 1), run.stderr
    return run.stdout


def sides_of(file) -> tuple[dict[int, str], dict[int, str]]:
    """Line number -> text on the old and on the new side, as the hunks tell them."""
    old, new = {}, {}
    for hunk in file.hunks:
        o, n = hunk.old_start, hunk.new_start
        for line in hunk.lines:
            if line.startswith("\\"):
                continue
            if line[0] in " -":
                old[o] = line[1:]
                o += 1
            if line[0] in " +":
                new[n] = line[1:]
                n += 1
        assert o - hunk.old_start == hunk.old_count and n - hunk.new_start == hunk.new_count
    return old, new


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.lists(LINE, max_size=12), new=st.lists(LINE, max_size=12), name=NAME,
       end_newline=st.booleans())
def test_parse_gives_back_both_sides_of_what_git_diff_writes(tmp_path, old, new, name, end_newline):
    patch = git_diff(tmp_path, old, new, name, end_newline)
    files = parse(patch)
    text = lambda lines: "\n".join(lines) + ("\n" if end_newline and lines else "")
    if text(old) == text(new):  # [] and [""] without a final newline are both empty files
        assert files == []
        return
    [file] = files
    assert file.path.endswith(name)  # git --no-index names the files by the paths it was given
    old_side, new_side = sides_of(file)
    assert all(old[number - 1] == text for number, text in old_side.items())
    assert all(new[number - 1] == text for number, text in new_side.items())
    signed = [f"-{line}" for line in old] + [f"+{line}" for line in new]
    assert all(line in signed for line in changed_lines(patch))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, min_size=1, max_size=8), name=NAME)
def test_created_and_deleted_files_have_no_old_or_no_new_name(tmp_path, lines, name):
    created = parse(git_diff(tmp_path, None, lines, name))
    deleted = parse(git_diff(tmp_path, lines, None, name))
    assert created[0].old_path is None and created[0].new_path.endswith(name)
    assert deleted[0].new_path is None and deleted[0].old_path.endswith(name)
    assert changed_ranges(git_diff(tmp_path, None, lines, name)) == {}


def test_a_git_patch_of_several_files_binary_rename_and_mode(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True).stdout
    git("init", "-q")
    (repo / "keep.py").write_text("a\nb\nc\n")
    (repo / "old name.py").write_text("one\ntwo\nthree\nfour\n")
    (repo / "blob.bin").write_bytes(b"\0\1\2")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    (repo / "keep.py").write_text("a\nB\nc\n")
    git("mv", "old name.py", "new name.py")
    (repo / "new name.py").write_text("one\ntwo\nthree\nFOUR\n")
    (repo / "blob.bin").write_bytes(b"\0\1\3")
    git("add", ".")
    patch = git("diff", "--cached", "--binary", "-M").decode()
    files = {file.path: file for file in parse(patch)}
    assert set(files) == {"keep.py", "new name.py", "blob.bin"}
    assert files["new name.py"].old_path == "old name.py"
    assert files["blob.bin"].binary and not files["blob.bin"].hunks
    assert changed_files(patch) == ["blob.bin", "keep.py", "new name.py"]
    assert changed_ranges(patch) == {"keep.py": [(1, 3)], "old name.py": [(1, 4)]}
    assert changed_lines(patch) == ["-b", "+B", "-four", "+FOUR"]
    sections = file_sections(patch.encode())
    assert len(sections) == 3 and b"".join(sections) == patch.encode()


def test_what_models_write_hunks_without_counts_and_bare_fragments():
    uncounted = "--- a/f.py\n+++ b/f.py\n@@ @@\n-x = 1\n--- dashes\n+x = 2\n"
    assert changed_lines(uncounted) == ["-x = 1", "--- dashes", "+x = 2"]
    assert changed_ranges(uncounted) == {}  # no line numbers to place it by
    two_files = uncounted + "--- a/g.py\n+++ b/g.py\n@@ @@\n-y\n+z\n"
    assert [f.path for f in parse(two_files)] == ["f.py", "g.py"]
    assert changed_lines("+added\n-removed\n") == ["+added", "-removed"]


def test_normalize_ignores_offsets_index_lines_and_trailing_blanks():
    a = "diff --git a/x b/x\nindex 1..2\n--- a/x\n+++ b/x\n@@ -3,2 +3,2 @@\n a \n-b\n+c\n"
    b = a.replace("index 1..2", "index 3..4").replace("-3,2 +3,2", "-9,2 +9,2") + "\n\n"
    assert normalize(a) == normalize(b)
    assert normalize(a) != normalize(a.replace("+c", "+d"))
