"""Line-level recall (METHODS.md step 6): changed lines of hand-made patches, and properties."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from sera.diff import changed_lines
from sera.specialize.recall import line_recall

FIX = """\
diff --git a/calc.py b/calc.py
index 1111111..2222222 100644
--- a/calc.py
+++ b/calc.py
@@ -1,4 +1,4 @@
 def add(a, b):
-    return a - b
+    return a + b
 
 
"""


def test_a_simple_fix_has_two_changed_lines_with_their_signs():
    assert changed_lines(FIX) == ["-    return a - b", "+    return a + b"]
    assert len(changed_lines(FIX)) == 2


def test_lines_that_look_like_headers_inside_a_hunk_are_changes():
    # A removed "-- comment" reads "--- comment", an added "++counter" reads "+++counter".
    patch = """\
diff --git a/q.sql b/q.sql
--- a/q.sql
+++ b/q.sql
@@ -1,2 +1,3 @@
--- old comment
+-- new comment
+++counter
 select 1;
"""
    assert changed_lines(patch) == ["--- old comment", "+-- new comment", "+++counter"]


def test_blank_changes_and_no_newline_markers_are_excluded():
    patch = """\
diff --git a/a.txt b/a.txt
--- a/a.txt
+++ b/a.txt
@@ -1,3 +1,4 @@
-
-   \t
+x
+
 kept
-last
\\ No newline at end of file
+last
"""
    assert changed_lines(patch) == ["+x", "-last", "+last"]


def test_git_metadata_lines_are_not_changes():
    patch = """\
diff --git a/old.py b/new.py
similarity index 90%
rename from old.py
rename to new.py
index 1111111..2222222
--- a/old.py
+++ b/new.py
@@ -1 +1 @@
-x = 1
+x = 2
diff --git a/run.sh b/run.sh
old mode 100644
new mode 100755
diff --git a/gone.py b/gone.py
deleted file mode 100644
index 3333333..0000000
--- a/gone.py
+++ /dev/null
@@ -1,2 +0,0 @@
-print("bye")
--- not a header: a removed line
diff --git a/new.txt b/new.txt
new file mode 100644
index 0000000..4444444
--- /dev/null
+++ b/new.txt
@@ -0,0 +1 @@
+hello
diff --git a/logo.png b/logo.png
Binary files a/logo.png and b/logo.png differ
diff --git a/icon.bin b/icon.bin
new file mode 100644
index 0000000..5555555
GIT binary patch
literal 12
-TcmZQzU|?ZoU|?VY0RR91

literal 0
HcmV?d00001

"""
    assert changed_lines(patch) == ["-x = 1", "+x = 2", '-print("bye")',
                                    "--- not a header: a removed line", "+hello"]


def test_plain_unified_diffs_without_git_lines_are_parsed_by_hunk_counts():
    patch = """\
--- a/one.py
+++ b/one.py
@@ -1,2 +1,2 @@
-a = 1
+a = 2
 b = 3
--- a/two.py
+++ b/two.py
@@ -5 +5 @@
--- dashes
+++ pluses
"""
    assert changed_lines(patch) == ["-a = 1", "+a = 2", "--- dashes", "+++ pluses"]


def test_hunks_without_counts_end_at_the_next_file_header():
    patch = """\
--- a/one.py
+++ b/one.py
@@
-a = 1
+a = 2
--- removed dashes
--- a/two.py
+++ b/two.py
@@
+b = 1
"""
    assert changed_lines(patch) == ["-a = 1", "+a = 2", "--- removed dashes", "+b = 1"]


def test_crlf_lines_keep_their_carriage_return_and_blank_ones_are_dropped():
    patch = "--- a/w.txt\n+++ b/w.txt\n@@ -1,2 +1,2 @@\n-a\r\n+b\r\n-\r\n+ \r\n"
    assert changed_lines(patch) == ["-a\r", "+b\r"]


def test_recall_counts_each_line_of_p2_once():
    p1 = _patch([("-", "x = 1"), ("+", "x = 2"), ("+", "x = 2")])
    p2 = _patch([("-", "x = 1"), ("+", "x = 2")])
    assert line_recall(p1, p2) == 2 / 3
    assert line_recall(p2, p1) == 1.0


def test_recall_is_exact_and_keeps_the_sign():
    p1 = _patch([("+", "return a + b")])
    assert line_recall(p1, _patch([("-", "return a + b")])) == 0.0
    assert line_recall(p1, _patch([("+", "return a + b ")])) == 0.0
    assert line_recall(p1, _patch([("+", "return a + b")])) == 1.0


def test_recall_of_a_patch_without_changes_is_none():
    assert line_recall("", FIX) is None
    assert line_recall(_patch([("+", "   "), ("-", "")]), FIX) is None
    assert line_recall(FIX, "") == 0.0


# --- properties ----------------------------------------------------------------------------

Hunk = list[tuple[str, str]]  # (" ", "+" or "-", content)

# Contents rich in the characters that make lines look like headers.
contents = st.text(alphabet="-+@ \tab\\", max_size=6)
hunks = st.lists(st.tuples(st.sampled_from(" +-"), contents), min_size=1, max_size=6)
files = st.lists(st.lists(hunks, min_size=1, max_size=3), min_size=1, max_size=3)


def _patch(hunk: Hunk) -> str:
    return _render([[hunk]])


def _render(patch_files: list[list[Hunk]], git_lines: bool = True) -> str:
    out = []
    for number, file_hunks in enumerate(patch_files):
        if git_lines:
            out += [f"diff --git a/f{number} b/f{number}", "index 1111111..2222222 100644"]
        out += [f"--- a/f{number}", f"+++ b/f{number}"]
        for hunk in file_hunks:
            old = sum(1 for sign, _ in hunk if sign != "+")
            new = sum(1 for sign, _ in hunk if sign != "-")
            out.append(f"@@ -1,{old} +1,{new} @@")
            out += [sign + text for sign, text in hunk]
    return "\n".join(out) + "\n"


def _expected(patch_files: list[list[Hunk]]) -> list[str]:
    return [sign + text for file_hunks in patch_files for hunk in file_hunks
            for sign, text in hunk if sign != " " and text.strip()]


@given(files, st.booleans())
def test_changed_lines_are_exactly_the_signed_non_blank_lines(patch_files, git_lines):
    assert changed_lines(_render(patch_files, git_lines)) == _expected(patch_files)


@given(files, files)
def test_recall_is_a_share(first, second):
    recall = line_recall(_render(first), _render(second))
    if _expected(first):
        assert recall is not None and 0.0 <= recall <= 1.0
    else:
        assert recall is None


@given(files)
def test_a_patch_fully_recalls_itself(patch_files):
    patch = _render(patch_files)
    assert line_recall(patch, patch) == (1.0 if _expected(patch_files) else None)


@settings(max_examples=50)
@given(files, files, st.randoms(use_true_random=False))
def test_recall_depends_only_on_the_multisets_of_lines(first, second, rng: random.Random):
    wanted, available = Counter(_expected(first)), Counter(_expected(second))
    recall = line_recall(_render(first), _render(second))
    if wanted:
        assert recall == sum((wanted & available).values()) / sum(wanted.values())
    # Reordering P2's files and hunks changes nothing.
    shuffled = [list(file_hunks) for file_hunks in second]
    rng.shuffle(shuffled)
    for file_hunks in shuffled:
        rng.shuffle(file_hunks)
    assert line_recall(_render(first), _render(shuffled)) == recall
