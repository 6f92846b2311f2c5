"""Whole-function answers turned into edits: matched by name to the functions shown, indented as
the file is, decorators kept, copied line numbers dropped, examples and strangers refused."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sera.agent.rewrite import function_edits
from sera.agent.searchreplace import EditError, apply_edits

SOURCE = '''import functools


class Calc:
    @functools.cache
    def add(self, a, b):
        """Sum."""
        return a - b

    def scale(self, values, factor):
        return [v * factor for v in values]


def helper(x):
    return x
'''


@dataclass
class Location:  # the shape of sera.agent.localize.Location
    path: str
    name: str
    start_line: int
    end_line: int
    score: float = 1.0
    reasons: list[str] = field(default_factory=list)


SHOWN = [Location("calc.py", "Calc.add", 6, 8), Location("calc.py", "Calc.scale", 10, 11)]


@pytest.fixture
def root(tmp_path):
    (tmp_path / "calc.py").write_text(SOURCE)
    return tmp_path


def rewrite(root, reply, shown=SHOWN):
    edits = function_edits(root, reply, shown)
    apply_edits(root, edits, None)
    return (root / "calc.py").read_text()


def test_a_method_written_at_column_zero_is_indented_as_in_the_file(root):
    reply = ('calc.py\n```python\n@functools.cache\ndef add(self, a, b):\n    """Sum."""\n'
             '    return a + b\n```')
    assert rewrite(root, reply) == SOURCE.replace("a - b", "a + b")


def test_copied_line_numbers_and_a_header_path_are_read(root):
    reply = ("calc.py (function Calc.scale)\n```python\n"
             "  10 |     def scale(self, values, factor):\n"
             "  11 |         return [factor * v for v in values]\n```")
    assert rewrite(root, reply) == SOURCE.replace("v * factor", "factor * v")


def test_a_function_in_a_shown_file_that_was_not_shown_is_found_by_its_unique_name(root):
    reply = "```python\ndef helper(x):\n    return -x\n```"
    assert rewrite(root, reply).endswith("def helper(x):\n    return -x\n")


def test_two_functions_in_one_block_are_two_edits(root):
    reply = ("```python\ndef add(self, a, b):\n    return a + b\n\n\n"
             "def scale(self, values, factor):\n    return [factor * v for v in values]\n```")
    edits = function_edits(root, reply, SHOWN)
    assert [next(line.strip() for line in e.search if "def " in line) for e in edits] == [
        "def add(self, a, b):", "def scale(self, values, factor):"]
    assert edits[0].search[0] == "    def add(self, a, b):"  # its decorator is kept: none written
    assert rewrite(root, reply).count("@functools.cache") == 1


def test_a_function_cut_at_the_reply_limit_is_not_read(root):
    cut = 'calc.py\n```python\ndef add(self, a, b):\n    """Sum."""\n'
    assert function_edits(root, cut, SHOWN) == []
    assert SOURCE in (root / "calc.py").read_text()


@pytest.mark.parametrize("reply, message", [
    ("shapes/rect.py\n```python\n    def area(self):\n        return 1\n```",
     "repeats the worked example"),
    ("```python\ndef subtract(a, b):\n    return a - b\n```", "`subtract` is not one of"),
    ('```python\n@functools.cache\ndef add(self, a, b):\n    """Sum."""\n    return a - b\n```',
     "is unchanged"),
])
def test_answers_that_cannot_be_applied_say_why(root, reply, message):
    with pytest.raises(EditError, match=message):
        function_edits(root, reply, SHOWN)


def test_prose_without_code_is_no_edit(root):
    assert function_edits(root, "I would add a and b.", SHOWN) == []
    assert function_edits(root, "```\nnot python at all (\n```", SHOWN) == []


def test_paths_outside_the_root_are_never_read(root):
    reply = "../secret.py\n```python\ndef leak():\n    return 1\n```"
    with pytest.raises(EditError, match="not one of the functions shown"):
        function_edits(root, reply, SHOWN)


def test_search_replace_blocks_are_left_to_their_parser(root):
    """A block's SEARCH part holds a def line; it is no function written back."""
    reply = ("calc.py\n```python\n<<<<<<< SEARCH\n    def add(self, a, b):\n=======\n"
             "    def add(self, a, b, c=0):\n>>>>>>> REPLACE\n```")
    assert function_edits(root, reply, SHOWN) == []


def test_the_example_path_or_a_made_up_one_does_not_hide_a_shown_function(root):
    for path in ("path/to/file.py", "src/calc.py"):
        reply = f'{path}\n```python\ndef scale(self, values, factor):\n    return [factor * v for v in values]\n```'
        assert rewrite(root, reply) == SOURCE.replace("v * factor", "factor * v")
        (root / "calc.py").write_text(SOURCE)


def test_a_definition_written_with_the_views_qualified_name_is_read(root):
    reply = ('calc.py\n```python\ndef Calc.scale(self, values, factor):\n'
             '    return [factor * v for v in values]\n```')
    assert rewrite(root, reply) == SOURCE.replace("v * factor", "factor * v")


def test_a_path_in_a_fence_of_its_own_names_the_next_fence(root):
    reply = ('```python\ncalc.py\n```python\ndef scale(self, values, factor):\n'
             '    return [factor * v for v in values]\n```')
    assert rewrite(root, reply) == SOURCE.replace("v * factor", "factor * v")
