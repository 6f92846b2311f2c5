"""The str_replace_editor tool on a real folder: each command, its refusals, path confinement, and
property tests (undo restores bytes; any argument dict gives a result or ToolError; nothing is
written outside the root)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sera.agent.editor import Editor
from sera.agent.protocol import ToolError


@pytest.fixture
def layout(tmp_path):
    """root/ (the work copy) next to outside/, with a symlink from inside to outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "pkg" / "sub" / "deep").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (root / "pkg" / "mod.py").write_text("def f():\n    return 1\n\n\ndef g():\n    return 1\n")
    (root / "pkg" / "sub" / "deep" / "far.py").write_text("x = 1\n")
    (root / ".hidden").write_text("h\n")
    (root / ".git").write_text("gitdir: /elsewhere\n")
    (root / "link_out").symlink_to(outside)
    return root, outside


@pytest.fixture
def editor(layout):
    return Editor(layout[0])


def run(editor, **arguments):
    return editor.run(arguments)


def test_view_file_numbers_lines_like_cat_n(editor):
    out = run(editor, command="view", path="pkg/mod.py")
    assert out.splitlines()[:2] == ["     1\tdef f():", "     2\t    return 1"]
    assert out.splitlines()[-1] == "     6\t    return 1"


def test_view_range_and_minus_one(editor):
    assert run(editor, command="view", path="pkg/mod.py", view_range=[5, 6]) == (
        "     5\tdef g():\n     6\t    return 1")
    assert run(editor, command="view", path="pkg/mod.py", view_range=[6, -1]) == "     6\t    return 1"
    with pytest.raises(ToolError, match="has 6 lines"):
        run(editor, command="view", path="pkg/mod.py", view_range=[7, 9])


def test_view_long_file_is_clipped_with_a_view_range_hint(layout):
    root, _ = layout
    (root / "long.py").write_text("".join(f"line {i}\n" for i in range(1, 5001)))
    out = Editor(root, max_output_chars=2000).run({"command": "view", "path": "long.py"})
    assert len(out) < 2300
    assert "has 5000 lines" in out and "view_range [" in out


def test_view_directory_two_levels_skipping_hidden(editor):
    out = run(editor, command="view", path=".")
    assert "pkg/" in out and "pkg/mod.py" in out and "pkg/sub/" in out
    assert "far.py" not in out  # three levels down
    assert ".hidden" not in out and ".git" not in out


def test_absolute_path_inside_root_is_accepted(layout, editor):
    assert "def f" in run(editor, command="view", path=str(layout[0] / "pkg" / "mod.py"))


@pytest.mark.parametrize("path", ["../outside/secret.txt", "link_out/secret.txt", "/etc/passwd",
                                  "pkg/../../outside/secret.txt", ".git", "pkg/../.git", ""])
def test_paths_outside_the_root_are_refused(editor, path):
    with pytest.raises(ToolError):
        run(editor, command="view", path=path)


def test_create_makes_parents_and_refuses_to_overwrite(layout, editor):
    assert "created" in run(editor, command="create", path="new/dir/a.txt", file_text="hello")
    assert (layout[0] / "new" / "dir" / "a.txt").read_bytes() == b"hello"
    with pytest.raises(ToolError, match="already exists.*str_replace"):
        run(editor, command="create", path="new/dir/a.txt", file_text="again")
    with pytest.raises(ToolError):
        run(editor, command="create", path="link_out/evil.txt", file_text="x")
    assert not (layout[1] / "evil.txt").exists()


def test_str_replace_unique_match(layout, editor):
    out = run(editor, command="str_replace", path="pkg/mod.py",
              old_str="def f():\n    return 1", new_str="def f():\n    return 2")
    assert "     2\t    return 2" in out
    assert (layout[0] / "pkg" / "mod.py").read_text().startswith("def f():\n    return 2\n")


def test_str_replace_several_matches_names_their_lines(editor):
    with pytest.raises(ToolError, match=r"2 times .*lines 2, 6.*more surrounding lines"):
        run(editor, command="str_replace", path="pkg/mod.py", old_str="return 1", new_str="x")


def test_str_replace_no_match_suggests_view_and_spots_whitespace(editor):
    with pytest.raises(ToolError, match="does not occur.*view the file"):
        run(editor, command="str_replace", path="pkg/mod.py", old_str="return 3", new_str="x")
    with pytest.raises(ToolError, match="near line 2.*whitespace"):
        run(editor, command="str_replace", path="pkg/mod.py", old_str="  return 1  ", new_str="x")


def test_str_replace_without_new_str_deletes(layout, editor):
    run(editor, command="str_replace", path="pkg/mod.py", old_str="\n\ndef g():\n    return 1\n")
    assert (layout[0] / "pkg" / "mod.py").read_text() == "def f():\n    return 1\n"


def test_str_replace_in_a_crlf_file_keeps_crlf(layout, editor):
    path = layout[0] / "win.txt"
    path.write_bytes(b"a\r\nb\r\nc\r\n")
    run(editor, command="str_replace", path="win.txt", old_str="a\nb", new_str="A\nB")
    assert path.read_bytes() == b"A\r\nB\r\nc\r\n"


@pytest.mark.parametrize("content, line, text, expected", [
    ("a\nb\n", 0, "top", "top\na\nb\n"),
    ("a\nb\n", 1, "mid\n", "a\nmid\nb\n"),
    ("a\nb\n", 2, "end", "a\nb\nend\n"),
    ("a\nb", 2, "end", "a\nb\nend\n"),  # a last line without newline gets one
    ("", 0, "first", "first\n"),
])
def test_insert_after_line(layout, editor, content, line, text, expected):
    path = layout[0] / "ins.txt"
    path.write_text(content)
    run(editor, command="insert", path="ins.txt", insert_line=line, new_str=text)
    assert path.read_text() == expected


def test_insert_line_out_of_range(editor):
    with pytest.raises(ToolError, match="between 0 .* and 6"):
        run(editor, command="insert", path="pkg/mod.py", insert_line=7, new_str="x")


def test_undo_edit_walks_back_history_and_undoes_create(layout, editor):
    path = layout[0] / "pkg" / "mod.py"
    original = path.read_bytes()
    run(editor, command="insert", path="pkg/mod.py", insert_line=0, new_str="# one")
    run(editor, command="str_replace", path="pkg/mod.py", old_str="# one", new_str="# two")
    run(editor, command="undo_edit", path="pkg/mod.py")
    assert path.read_text().startswith("# one\n")
    run(editor, command="undo_edit", path="pkg/mod.py")
    assert path.read_bytes() == original
    with pytest.raises(ToolError, match="no edit"):
        run(editor, command="undo_edit", path="pkg/mod.py")
    run(editor, command="create", path="made.txt", file_text="x")
    run(editor, command="undo_edit", path="made.txt")
    assert not (layout[0] / "made.txt").exists()


def test_binary_and_non_utf8_files_are_refused(layout, editor):
    (layout[0] / "blob.bin").write_bytes(b"\x00\x01\x02")
    (layout[0] / "latin.txt").write_bytes("café".encode("latin-1"))
    for name in ("blob.bin", "latin.txt"):
        with pytest.raises(ToolError, match="binary or not UTF-8"):
            run(editor, command="view", path=name)


@pytest.mark.parametrize("arguments, expected", [
    ({"path": "a"}, "command must be one of"),
    ({"command": "delete", "path": "a"}, "command must be one of"),
    ({"command": "create", "path": "a"}, "missing file_text"),
    ({"command": "view", "path": "pkg/mod.py", "file_text": "x"}, "unexpected file_text"),
    ({"command": "insert", "path": "pkg/mod.py", "insert_line": "3", "new_str": "x"},
     "insert_line must be an integer"),
    ({"command": "insert", "path": "pkg/mod.py", "insert_line": True, "new_str": "x"},
     "insert_line must be an integer"),
    ({"command": "view", "path": 3}, "path must be a string"),
    ({"command": "view", "path": "pkg/mod.py", "view_range": [1]}, "two integers"),
    ({"command": "str_replace", "path": "pkg/mod.py", "old_str": ""}, "old_str is empty"),
    ({"command": "view", "path": "missing.py"}, "does not exist"),
])
def test_bad_arguments_name_what_is_expected(editor, arguments, expected):
    with pytest.raises(ToolError, match=expected):
        editor.run(arguments)


def test_null_arguments_count_as_absent(editor):
    out = editor.run({"command": "view", "path": "pkg/mod.py", "view_range": None,
                      "file_text": None})
    assert "def f" in out


# --- properties ------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY_SETTINGS
@given(content=st.text(max_size=200), old=st.text(min_size=1, max_size=10),
       new=st.text(max_size=10), prefix=st.text(max_size=20))
def test_str_replace_then_undo_restores_bytes(layout, content, old, new, prefix):
    root, _ = layout
    path = root / "prop.txt"
    data = (prefix + old + content).encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    editor = Editor(root)
    try:
        editor.run({"command": "str_replace", "path": "prop.txt", "old_str": old, "new_str": new})
    except ToolError:
        assert path.read_bytes() == data  # a refused edit changes nothing
        return
    editor.run({"command": "undo_edit", "path": "prop.txt"})
    assert path.read_bytes() == data


OUTSIDE = "@OUTSIDE@"  # replaced by the absolute path of the outside folder
PATH_PARTS = ["..", ".", "pkg", "link_out", "secret.txt", "new.txt", ".git", "/", "", "sub",
              "~", "x\0y", "\udc80", OUTSIDE]
paths = st.lists(st.sampled_from(PATH_PARTS), max_size=5).map("/".join) | st.text(max_size=15)
values = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.lists(
    st.integers(), max_size=3) | paths
argument_dicts = st.fixed_dictionaries(
    {}, optional={"command": st.sampled_from(["view", "create", "str_replace", "insert",
                                              "undo_edit", "bogus"]) | values,
                  "path": paths | values, "file_text": values, "old_str": values,
                  "new_str": values, "insert_line": values, "view_range": values,
                  "extra": values})


@PROPERTY_SETTINGS
@given(calls=st.lists(argument_dicts | st.dictionaries(st.text(max_size=5), values, max_size=4),
                      min_size=1, max_size=6))
def test_any_arguments_give_a_result_or_tool_error_and_never_write_outside(layout, calls):
    root, outside = layout
    before = snapshot(outside)
    editor = Editor(root)
    for arguments in calls:
        if isinstance(arguments.get("path"), str):
            arguments["path"] = arguments["path"].replace(OUTSIDE, str(outside))
        try:
            assert isinstance(editor.run(arguments), str)
        except ToolError:
            pass
    assert snapshot(outside) == before
    assert Path(tempfile.gettempdir(), "new.txt").exists() is False


def snapshot(folder: Path) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(d, f), folder): Path(d, f).read_bytes()
            for d, _, files in os.walk(folder) for f in files}
