"""Changes made by an editor: line-level TextEdits that turn one text into another (property
test, the editor's application being test_lsp.apply_text_edits), and the planned apply and undo
(apply.EditorApply) against unsaved buffers, with the same record `sera undo` uses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types

from conftest import CALC, git
from sera.agent.apply import EditorApply, undo_last
from sera.errors import ApplyError
from sera.server.edits import line_edits, workspace_edit
from test_lsp import apply_text_edits

FIX = """diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,6 +1,6 @@
 def add(a, b):
     \"\"\"Return the sum of a and b.\"\"\"
-    return a - b
+    return a + b
 
 
 def scale(values, factor):
"""

lines = st.lists(st.sampled_from(["a", "b", "é", "😀x", "", "  c"]), max_size=8)


@settings(max_examples=300, deadline=None)
@given(old=lines, new=lines, old_end=st.sampled_from(["", "\n"]),
       new_end=st.sampled_from(["", "\n"]))
def test_line_edits_turn_one_text_into_the_other(old, new, old_end, new_end):
    before = "\n".join(old) + (old_end if old else "")
    after = "\n".join(new) + (new_end if new else "")
    edits = line_edits(before, after)
    assert apply_text_edits(before, edits) == after
    starts = [(e.range.start.line, e.range.start.character) for e in edits]
    assert starts == sorted(starts)


def test_a_text_that_is_not_utf8_or_a_file_to_create_without_support_is_left_to_the_disk(tmp_path):
    assert workspace_edit(tmp_path, {"a.py": b"\xff\n"}, {"a.py": b"x\n"}, {}, {"create"}) is None
    assert workspace_edit(tmp_path, {"n.py": None}, {"n.py": b"x\n"}, {}, set()) is None
    edit = workspace_edit(tmp_path, {"n.py": None}, {"n.py": b"x\n"}, {}, {"create"})
    assert isinstance(edit.document_changes[0], types.CreateFile)


def test_planned_apply_works_on_the_buffer_and_undo_keeps_later_edits(repo):
    unsaved = (CALC + "# typed, not saved\n").encode()
    with EditorApply(repo, {"calc.py": unsaved}) as job:
        change = job.plan_apply(FIX, "the fix")
        job.done()
    assert change.after["calc.py"] == unsaved.replace(b"a - b", b"a + b")
    assert (repo / "calc.py").read_text() == CALC  # planned, not written: the editor writes
    with EditorApply(repo, {"calc.py": change.after["calc.py"] + b"# more\n"}) as job:
        undo = job.plan_undo()
        job.done()
    assert undo.after["calc.py"] == unsaved + b"# more\n"  # the later edit stays
    with pytest.raises(ApplyError, match="nothing to undo"):
        undo_last(repo)


def test_a_plan_left_without_done_records_nothing(repo):
    with EditorApply(repo) as job:
        job.plan_apply(FIX, "the fix")
    with pytest.raises(ApplyError, match="nothing to undo"):
        undo_last(repo)


def test_an_applied_fix_is_not_planned_twice(repo):
    (repo / "calc.py").write_text(CALC.replace("a - b", "a + b"))
    with EditorApply(repo) as job, pytest.raises(ApplyError, match="already applied"):
        job.plan_apply(FIX, "the fix")


def test_the_cli_undoes_an_apply_the_editor_made_and_saved(repo):
    with EditorApply(repo) as job:
        change = job.plan_apply(FIX, "the fix")
        (repo / "calc.py").write_bytes(change.after["calc.py"])  # the editor saved it
        job.done()
    assert undo_last(repo).files == ["calc.py"]
    assert (repo / "calc.py").read_text() == CALC
    assert git(repo, "status", "--porcelain", "calc.py") == ""


def test_a_client_without_document_changes_gets_plain_text_edits(tmp_path):
    edit = workspace_edit(tmp_path, {"a.py": b"x = 1\n"}, {"a.py": b"x = 2\n"}, {"a.py": 3},
                          {"create"}, document_changes=False)
    assert edit.document_changes is None and list(edit.changes.values())[0][0].new_text == "x = 2\n"
    # creating a file needs document changes
    assert workspace_edit(tmp_path, {"n.py": None}, {"n.py": b"x\n"}, {}, {"create"},
                          document_changes=False) is None
