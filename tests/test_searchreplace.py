"""SEARCH/REPLACE blocks: lenient parsing, lenient application, errors written for the model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sera.agent.searchreplace import (Edit, EditError, SearchNotFound, apply_edits,
                                      apply_what_applies, numbered_rewrite_edits, parse_edits)

CALC = "def add(a, b):\n    return a - b\n\n\ndef scale(values, factor):\n    return [v * factor for v in values]\n"


def block(path="calc.py", search="    return a - b", replace="    return a + b", marks=(7, 7, 7),
          fence="```python"):
    lt, eq, gt = marks
    lines = [path] if path else []
    if fence:
        lines.append(fence)
    lines += ["<" * lt + " SEARCH", search, "=" * eq, replace, ">" * gt + " REPLACE"]
    if fence:
        lines.append("```")
    return "\n".join(lines)


def test_parse_canonical_and_lenient_forms():
    assert parse_edits("I will fix it.\n" + block()) == [
        Edit("calc.py", ("    return a - b",), ("    return a + b",))]
    assert parse_edits(block(marks=(5, 9, 6), fence=None))[0].path == "calc.py"
    inside = "```python calc.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n```"
    assert parse_edits(inside) == [Edit("calc.py", ("x",), ("y",))]
    decorated = block(path="**`src/calc.py`**:")
    assert parse_edits(decorated)[0].path == "src/calc.py"
    no_path = block(path=None)
    assert parse_edits(no_path, default_path="calc.py")[0].path == "calc.py"
    with pytest.raises(EditError, match="no file path"):
        parse_edits(no_path)
    # a second block without a path continues the first one's file
    two = block() + "\n" + block(path=None, search="x", replace="y")
    assert [e.path for e in parse_edits(two)] == ["calc.py", "calc.py"]
    assert parse_edits("no blocks here\n=======\n") == []
    with pytest.raises(EditError, match="not finished"):
        parse_edits("calc.py\n<<<<<<< SEARCH\nx\n=======\ny")


def test_a_block_closed_by_its_fence_without_the_replace_marker_ends_there():
    """The 1.5B often closes the fence right after the new lines and forgets >>>>>>> REPLACE."""
    forgot = "calc.py\n```python\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n```"
    assert parse_edits(forgot + "\nThat fixes it.") == [
        Edit("calc.py", ("    return a - b",), ("    return a + b",))]
    # the next block starts after that fence
    two = forgot + "\n" + block(search="x", replace="y")
    assert [e.search for e in parse_edits(two)] == [("    return a - b",), ("x",)]
    # a fence inside the new lines (a Markdown file) stays content when the marker follows
    markdown = "README.md\n<<<<<<< SEARCH\nold\n=======\n```sh\nrun\n```\n>>>>>>> REPLACE"
    assert parse_edits(markdown) == [Edit("README.md", ("old",), ("```sh", "run", "```"))]


def test_parse_empty_parts_and_crlf():
    edits = parse_edits("new.py\r\n<<<<<<< SEARCH\r\n=======\r\nprint(1)\r\n>>>>>>> REPLACE\r\n")
    assert edits == [Edit("new.py", (), ("print(1)",))]


@pytest.fixture
def root(tmp_path):
    (tmp_path / "calc.py").write_text(CALC)
    return tmp_path


def test_apply_exact_trailing_and_indentation(root):
    assert apply_edits(root, parse_edits(block()), None) == ["calc.py"]
    assert "    return a + b\n" in (root / "calc.py").read_text()
    # trailing whitespace in the model's lines
    apply_edits(root, parse_edits(block(search="    return a + b   ", replace="    return b + a")), None)
    assert "    return b + a\n" in (root / "calc.py").read_text()
    # no indentation at all: the replacement is re-indented by the file's offset
    edit = Edit("calc.py", ("return b + a",), ("total = a + b", "return total"))
    apply_edits(root, [edit], None)
    assert "    total = a + b\n    return total\n" in (root / "calc.py").read_text()
    # too much indentation: removed from the replacement
    edit = Edit("calc.py", ("        total = a + b", "        return total"), ("        return a + b",))
    apply_edits(root, [edit], None)
    assert (root / "calc.py").read_text() == CALC.replace("a - b", "a + b")


def test_indentation_off_line_by_line_takes_the_files_indentation(root):
    """The embedded 1.5B's quickstart answer: the def line indented like the body."""
    search = ("    def add(a, b):", "    return a - b")
    edit = Edit("calc.py", search, ("    def add(a, b):", "    if a is None:",
                                    "        return b", "    return a + b"))
    apply_edits(root, [edit], None)
    assert (root / "calc.py").read_text().startswith(
        "def add(a, b):\n    if a is None:\n        return b\n    return a + b\n\n")
    # the text itself must still match: a changed word is a miss, not a guess
    with pytest.raises(EditError, match="not found"):
        apply_edits(root, [Edit("calc.py", ("  def add(a, c):", "  return a + b"), ("x = 1",))], None)


def test_apply_strips_copied_line_numbers(root):
    edit = Edit("calc.py", ("   2 |     return a - b",), ("   2 |     return a + b",))
    apply_edits(root, [edit], None)
    assert (root / "calc.py").read_text() == CALC.replace("a - b", "a + b")


def test_apply_keeps_crlf(tmp_path):
    (tmp_path / "w.py").write_bytes(b"x = 1\r\ny = 2\r\n")
    apply_edits(tmp_path, [Edit("w.py", ("y = 2",), ("y = 3", "z = 4"))], None)
    assert (tmp_path / "w.py").read_bytes() == b"x = 1\r\ny = 3\r\nz = 4\r\n"


def test_miss_says_what_and_where(root):
    with pytest.raises(EditError) as error:
        apply_edits(root, [Edit("calc.py", ("    return a - c",), ("    return a + b",))], None)
    message = str(error.value)
    assert "was not found" in message and "   2 |     return a - b" in message
    assert (root / "calc.py").read_text() == CALC


def test_ambiguous_match_and_all_or_nothing(root):
    (root / "twice.py").write_text("x = 1\nx = 1\n")
    good = Edit("calc.py", ("    return a - b",), ("    return a + b",))
    with pytest.raises(EditError, match="matches 2 places"):
        apply_edits(root, [good, Edit("twice.py", ("x = 1",), ("x = 2",))], None)
    assert (root / "calc.py").read_text() == CALC  # the good block was not applied either


def test_blocks_that_apply_are_written_and_the_others_returned_with_why(root):
    """The embedded 1.5B's replies often hold one block that does not apply beside right ones."""
    (root / "twice.py").write_text("x = 1\nx = 1\n")
    good = Edit("calc.py", ("    return a - b",), ("    return a + b",))
    ambiguous = Edit("twice.py", ("x = 1",), ("x = 2",))
    missing = Edit("calc.py", ("    return a * b",), ("    return a / b",))
    applied = apply_what_applies(root, [ambiguous, good, missing])
    assert applied.changed == ["calc.py"]
    assert (root / "calc.py").read_text() == CALC.replace("a - b", "a + b")
    assert (root / "twice.py").read_text() == "x = 1\nx = 1\n"
    assert [edit for edit, _ in applied.failed] == [ambiguous, missing]
    assert "matches 2 places" in str(applied.failed[0][1])
    assert isinstance(applied.failed[1][1], SearchNotFound)
    # A later block applies to the text the earlier ones left.
    again = apply_what_applies(root, [Edit("calc.py", ("    return a + b",), ("    return b + a",))])
    assert again.changed == ["calc.py"] and not again.failed


def test_a_missed_block_that_changes_nothing_is_returned_only_when_nothing_else_applied(root):
    """The 1.5B often answers with a block whose REPLACE repeats its SEARCH. Beside a block that
    applied, such a block missing its file is no reason to ask again; alone, its miss goes back
    with the closest lines, which lead to a real edit more often than an empty patch's repair."""
    unchanged = Edit("calc.py", ("    return a * b",), ("    return a * b",))
    good = Edit("calc.py", ("    return a - b",), ("    return a + b",))
    with pytest.raises(SearchNotFound):
        apply_edits(root, [unchanged, good], None)  # all or none, as before
    applied = apply_what_applies(root, [unchanged, good])
    assert applied.changed == ["calc.py"] and applied.failed == []
    alone = apply_what_applies(root, [unchanged])
    assert alone.changed == [] and isinstance(alone.failed[0][1], SearchNotFound)


def test_a_change_the_file_already_has_is_named_as_made(root):
    """The 1.5B 'fixed' `async def __call__` by quoting it without `async` and adding it back."""
    made = Edit("calc.py", ("    return a + c",), ("    return a - b",))
    with pytest.raises(EditError, match=r"its REPLACE part already is \(line 2\): that change "
                                        r"is made already") as error:
        apply_edits(root, [made], None)
    assert not isinstance(error.value, SearchNotFound)  # no ready block of the same lines
    # The block sent again after it applied at the file's indentation (the 1.5B did, after a
    # failed check): its lines are in the file, indented deeper.
    again = Edit("calc.py", ("return a + c",), ("return a - b",))
    with pytest.raises(EditError, match="that change is made already"):
        apply_edits(root, [again], None)
    # REPLACE lines found elsewhere, away from where the SEARCH part points, are no such case.
    elsewhere = Edit("calc.py", ("    return [v * factor for v in value]",), ("    return a - b",))
    with pytest.raises(SearchNotFound):
        apply_edits(root, [elsewhere], None)


UTILS = "def wrap(fn):\n    return fn\n"


def test_a_search_in_another_shown_file_is_applied_there(root):
    """The 1.5B names the first file shown above code it quotes from the second."""
    (root / "utils.py").write_text(UTILS)
    quoted = Edit("calc.py", ("    return fn",), ("    return staticmethod(fn)",))
    with pytest.raises(SearchNotFound):  # utils.py was not shown
        apply_edits(root, [quoted], None, focus={"calc.py": {"add"}})
    shown = {"calc.py": {"add"}, "utils.py": {"wrap"}}
    assert apply_edits(root, [quoted], None, focus=shown) == ["utils.py"]
    assert (root / "utils.py").read_text() == UTILS.replace("return fn", "return staticmethod(fn)")
    assert (root / "calc.py").read_text() == CALC
    # A path that names no file is no obstacle either.
    (root / "utils.py").write_text(UTILS)
    assert apply_edits(root, [Edit("wrap.py", quoted.search, quoted.replace)], None,
                       focus=shown) == ["utils.py"]
    assert not (root / "wrap.py").exists()
    # Where two other shown files hold the lines, the block names neither: it stays a miss.
    (root / "utils.py").write_text(UTILS)
    (root / "more.py").write_text(UTILS)
    with pytest.raises(SearchNotFound):
        apply_edits(root, [quoted], None, focus={**shown, "more.py": {"wrap"}})
    # A file the caller does not allow is not a place to put it either.
    with pytest.raises(SearchNotFound):
        apply_edits(root, [quoted], ["calc.py"], focus=shown)


TWO_CHECKS = """class Exact:
    def check(self, message):
        if self.message:
            return self.message == message
        return False


class Pattern:
    def check(self, message):
        if self.message:
            return self.message == message
        return True
"""


def test_an_ambiguous_search_is_taken_in_the_function_shown(root):
    (root / "checks.py").write_text(TWO_CHECKS)
    fix = Edit("checks.py", ("        if self.message:",), ("        if self.message is not None:",))
    with pytest.raises(EditError, match="matches 2 places"):
        apply_edits(root, [fix], None)
    # One of the two places is in a function the model was shown: that is the one it means.
    assert apply_edits(root, [fix], None, focus={"checks.py": {"Pattern.check"}}) == ["checks.py"]
    text = (root / "checks.py").read_text()
    assert text.count("if self.message is not None:") == 1
    assert text.index("if self.message is not None:") > text.index("class Pattern")
    # Shown both (or neither), it stays ambiguous: the model is asked for more lines.
    (root / "checks.py").write_text(TWO_CHECKS)
    with pytest.raises(EditError, match="matches 2 places"):
        apply_edits(root, [Edit("checks.py", ("        if self.message:",), ("        x",))], None,
                    focus={"checks.py": {"Exact.check", "Pattern.check"}})


def test_create_append_and_path_rules(root):
    assert apply_edits(root, [Edit("pkg/new.py", (), ("print(1)",))], None) == ["pkg/new.py"]
    assert (root / "pkg/new.py").read_text() == "print(1)\n"
    apply_edits(root, [Edit("pkg/new.py", (), ("print(2)",))], None)
    assert (root / "pkg/new.py").read_text() == "print(1)\nprint(2)\n"
    with pytest.raises(EditError, match="does not exist"):
        apply_edits(root, [Edit("missing.py", ("x",), ("y",))], None)
    for bad in ("../outside.py", "/etc/passwd", ".git/config"):
        with pytest.raises(EditError):
            apply_edits(root, [Edit(bad, (), ("x",))], None)
    with pytest.raises(EditError, match="not one of the files"):
        apply_edits(root, [Edit("other.py", (), ("x",))], ["calc.py"])
    assert not (root.parent / "outside.py").exists()


lines_strategy = st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\r",
                                                         blacklist_categories=("Cs",)),
                                  max_size=12), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(lines=lines_strategy, data=st.data(), final_newline=st.booleans())
def test_apply_then_reverse_restores_file(lines, data, final_newline):
    text = "\n".join(lines) + ("\n" if final_newline else "")
    start = data.draw(st.integers(0, len(lines) - 1))
    end = data.draw(st.integers(start + 1, len(lines)))
    search = tuple(lines[start:end])
    replace = tuple(data.draw(lines_strategy))
    assume(any(line.strip() for line in search) and any(line.strip() for line in replace))
    assume(final_newline or lines[-1])  # without a final newline, a last "" is no line
    # at the end of a file without a final newline, a trailing "" line cannot be told from none
    assume(final_newline or end < len(lines) or replace[-1].strip())
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "f.txt").write_bytes(text.encode("utf-8", "surrogateescape"))
        try:
            apply_edits(root, [Edit("f.txt", search, replace)], None)
        except EditError:
            return  # the slice occurs more than once (or matches loosely twice): refused, fine
        try:
            apply_edits(root, [Edit("f.txt", replace, search)], None)
        except EditError:
            return  # the replacement is ambiguous in the new file
        restored = (root / "f.txt").read_bytes().decode("utf-8", "surrogateescape")
        # lenient matching may have re-indented or trimmed; an exact unique slice comes back exact
        if text.count("\n".join(search)) == 1 and all(line == line.rstrip() and not line[:1].isspace()
                                                       for line in search + replace):
            assert restored == text


@settings(max_examples=200, deadline=None)
@given(reply=st.text(alphabet=st.sampled_from(list("<=>ab .py/\n`SEARCHREPLACE\t\r ")), max_size=200)
       | st.text(max_size=200), content=st.text(max_size=100))
def test_arbitrary_text_raises_only_edit_error(reply, content):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "a.py").write_text(content, encoding="utf-8", errors="surrogateescape")
        try:
            edits = parse_edits(reply, default_path="a.py")
            apply_edits(root, edits, None)
        except EditError:
            pass


plain_lines = st.lists(st.text(alphabet="abxy=(", max_size=5), min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(lines=plain_lines, data=st.data(), final_newline=st.booleans())
def test_apply_then_reverse_restores_file_exactly(lines, data, final_newline):
    """Without whitespace the lenient levels cannot kick in: whenever both directions apply
    (each match unique), the file comes back byte for byte."""
    text = "\n".join(lines) + ("\n" if final_newline else "")
    start = data.draw(st.integers(0, len(lines) - 1))
    end = data.draw(st.integers(start + 1, len(lines)))
    search = tuple(lines[start:end])
    replace = tuple(data.draw(plain_lines))
    assume(any(search) and any(replace))
    assume(final_newline or lines[-1])  # without a final newline, a last "" is no line
    # at the end of a file without a final newline, a trailing "" line cannot be told from none
    assume(final_newline or end < len(lines) or replace[-1].strip())
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "f.txt").write_text(text)
        try:
            apply_edits(root, [Edit("f.txt", search, replace)], None)
        except EditError as error:
            assert "matches" in str(error)  # only ambiguity can refuse an exact slice
            return
        try:
            apply_edits(root, [Edit("f.txt", replace, search)], None)
        except EditError as error:
            assert "matches" in str(error)
            return
        assert (root / "f.txt").read_text() == text


def test_blank_lines_at_the_ends_of_search_are_forgiven(root):
    edit = Edit("calc.py", ("    return [v * factor for v in values]", ""), ("    return []", ""))
    apply_edits(root, [edit], None)
    assert (root / "calc.py").read_text().endswith("def scale(values, factor):\n    return []\n")


def test_prose_before_a_block_is_not_a_path():
    reply = "I fixed it.\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE"
    assert parse_edits(reply, default_path="calc.py")[0].path == "calc.py"
    assert parse_edits("Makefile.am\n" + reply.split("\n", 1)[1])[0].path == "Makefile.am"


def test_the_code_views_header_copied_back_names_the_file():
    """The guided scaffold shows code under "path (lines a-b: names)"; small models copy it."""
    block = "```python\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n```"
    reply = "sera/paths.py (lines 60-87: atomic_write_json, card_folders)\n" + block
    assert parse_edits(reply)[0].path == "sera/paths.py"
    assert parse_edits("calc.py (line 3)\n" + block)[0].path == "calc.py"
    assert parse_edits("calc.py (the sum)\n" + block, default_path="x.py")[0].path == "x.py"


def test_a_rewritten_numbered_view_is_read_as_the_edit_it_describes(root):
    """What the embedded 1.5B answered in the quickstart: the code view echoed, fixed in place."""
    reply = ("<task>\nadd() returns a - b\n</task>\n\ncalc.py (lines 1-2: add)\n```python\n"
             "   1 | def add(a, b):\n   2 |     return a + b\n```\n\nExplanation: add must add.")
    edits = numbered_rewrite_edits(root, reply)
    assert edits == [Edit("calc.py", ("def add(a, b):", "    return a - b"),
                          ("def add(a, b):", "    return a + b"))]
    apply_edits(root, edits, None)
    assert (root / "calc.py").read_text() == CALC.replace("a - b", "a + b")
    # the path inside a fence of the model's own, as the 1.5B wrote it in the quickstart
    nested = ("```python\ncalc.py (lines 1-2: add)\n```python\n   1 | def add(a, b):\n"
              "   2 |     return a * b\n```")
    assert numbered_rewrite_edits(root, nested)[0].replace == ("def add(a, b):", "    return a * b")
    # an inserted, unnumbered line is kept; the view echoed unchanged is no edit
    inserted = "calc.py\n```\n   2 |     return a + b\n    # summed\n```"
    assert numbered_rewrite_edits(root, inserted)[0].replace == ("    return a + b", "    # summed")
    assert numbered_rewrite_edits(root, "calc.py\n```\n   2 |     return a + b\n```") == []
    # not a numbered view, numbers past the end, outside the root: nothing
    assert numbered_rewrite_edits(root, "calc.py\n```\nreturn a + b\n```") == []
    assert numbered_rewrite_edits(root, "calc.py\n```\n  99 | x\n```") == []
    assert numbered_rewrite_edits(root, "../calc.py\n```\n   1 | x\n```") == []


def test_markers_with_a_path_instead_of_their_words_are_read(root):
    """The embedded 1.5B on tomli: "<<<<<<< src/tomli/_parser.py" ... ">>>>>>> ...", and the
    markers' words run into the angle brackets or left out."""
    reply = ("calc.py\n```python\n<<<<<<< calc.py\n    return a - b\n=======\n    return a + b\n"
             ">>>>>>> calc.py\n```\n\ncalc.py\n<<<<<<<SEARCH\ndef add(a, b):\n=======\n"
             "def add(a, b):  # sum\n>>>>>>>\n")
    edits = parse_edits(reply)
    assert [(e.search, e.replace) for e in edits] == [
        (("    return a - b",), ("    return a + b",)),
        (("def add(a, b):",), ("def add(a, b):  # sum",))]


KEY_PART = '''def parse_key_part(src, pos):
    try:
        char: str | None = src[pos]
    except IndexError:
        char = None
    if char == "'":
        return parse_literal_str(src, pos)
    raise ValueError("bad key")
'''


def test_a_line_copied_with_a_slip_but_kept_unchanged_is_taken_from_the_file(tmp_path):
    """The embedded 1.5B on tomli: the annotation dropped from a line it keeps, and every line
    indented four spaces too deep."""
    (tmp_path / "p.py").write_text(KEY_PART)
    body = ["        char = src[pos]", "    except IndexError:", "        char = None",
            "    if char == \"'\":", "        return parse_literal_str(src, pos)"]
    search = ["    " + line for line in body]
    replace = search[:3] + ["        if char is None:", "            return pos, ''"] + search[3:]
    apply_edits(tmp_path, [Edit("p.py", tuple(search), tuple(replace))], None)
    assert (tmp_path / "p.py").read_text() == KEY_PART.replace(
        "        char = None\n", "        char = None\n    if char is None:\n        return pos, ''\n")


def test_a_slip_on_a_line_the_reply_changes_or_in_a_short_search_is_a_miss(tmp_path):
    (tmp_path / "p.py").write_text(KEY_PART)
    changed = Edit("p.py", ("    try:", "        char = src[pos]", "    except IndexError:",
                            "        char = None"),
                   ("    try:", "        char = src[pos + 1]", "    except IndexError:",
                    "        char = None"))
    with pytest.raises(EditError, match="not found"):
        apply_edits(tmp_path, [changed], None)
    short = Edit("p.py", ("        char = src[pos]", "    except IndexError:"),
                 ("        char = src[pos]", "    except LookupError:"))
    with pytest.raises(EditError, match="not found"):
        apply_edits(tmp_path, [short], None)
    assert (tmp_path / "p.py").read_text() == KEY_PART
