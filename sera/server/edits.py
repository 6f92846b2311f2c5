"""A planned apply or undo (apply.PlannedChange) as an LSP WorkspaceEdit, so the editor makes it:
buffers update, an unsaved buffer is edited in place, and the editor's own undo reverts it.

Changed files get line-level text edits (the lines the change replaces, nothing more, so the
cursor and marks elsewhere stay), versioned for documents open in the editor (the editor refuses
the edit if the buffer changed since sera read it); files the change creates or deletes get
create / delete operations, which need the client's `workspace.workspaceEdit.resourceOperations`.
A client without `documentChanges` (Neovim 0.7) gets the plain `changes` form: unversioned text
edits, no file operations. `workspace_edit` returns None when the change cannot be expressed for
this client (a file that is not UTF-8, a file to create or delete without the support for it):
the caller then writes the files on disk.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from lsprotocol import types
from pygls.uris import from_fs_path

UNITS = {types.PositionEncodingKind.Utf8: "utf-8", types.PositionEncodingKind.Utf16: "utf-16-le",
         types.PositionEncodingKind.Utf32: "utf-32-le"}
UNIT_BYTES = {"utf-8": 1, "utf-16-le": 2, "utf-32-le": 4}


def workspace_edit(repo: Path, before: dict[str, bytes | None], after: dict[str, bytes | None],
                   versions: dict[str, int], operations: set[str],
                   encoding: str = types.PositionEncodingKind.Utf16,
                   document_changes: bool = True) -> types.WorkspaceEdit | None:
    """The edit that turns `before` into `after` (path -> content, None: absent). `versions`:
    the editor's version of each open document; `operations`: the resource operations the client
    supports ("create", "delete"); `document_changes`: whether it takes that form."""
    if not document_changes:
        operations = set()
    changes: list = []
    for rel in before:
        old, new = before[rel], after[rel]
        if old == new:
            continue
        uri = from_fs_path(str(repo / rel))
        try:
            old_text = None if old is None else old.decode("utf-8")
            new_text = None if new is None else new.decode("utf-8")
        except UnicodeDecodeError:
            return None  # the editor's text model is Unicode: such a file is written on disk
        if old_text is None:
            if "create" not in operations:
                return None
            changes.append(types.CreateFile(uri=uri, options=types.CreateFileOptions(
                overwrite=False, ignore_if_exists=False)))
            old_text = ""
        if new_text is None:
            if "delete" not in operations:
                return None
            changes.append(types.DeleteFile(uri=uri, options=types.DeleteFileOptions(
                ignore_if_not_exists=True)))
            continue
        identifier = types.OptionalVersionedTextDocumentIdentifier(uri=uri,
                                                                   version=versions.get(rel))
        changes.append(types.TextDocumentEdit(text_document=identifier,
                                              edits=line_edits(old_text, new_text, encoding)))
    if not document_changes:
        return types.WorkspaceEdit(changes={c.text_document.uri: c.edits for c in changes})
    return types.WorkspaceEdit(document_changes=changes)


def line_edits(old: str, new: str, encoding: str = types.PositionEncodingKind.Utf16) -> list:
    """TextEdits replacing whole lines of `old` so that it reads `new` (ranges in `old`'s lines,
    not overlapping, in order, as the protocol wants them)."""
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    edits = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        edits.append(types.TextEdit(range=types.Range(start=_position(old_lines, i1, encoding),
                                                      end=_position(old_lines, i2, encoding)),
                                    new_text="".join(new_lines[j1:j2])))
    return edits


def _position(lines: list[str], index: int, encoding: str) -> types.Position:
    """The start of line `index`; past a last line without a newline, that line's end."""
    if index < len(lines) or not lines or lines[-1].endswith(("\n", "\r")):
        return types.Position(line=index, character=0)
    last = lines[-1]
    unit = UNITS.get(encoding, "utf-16-le")
    return types.Position(line=len(lines) - 1,
                          character=len(last.encode(unit, "surrogatepass")) // UNIT_BYTES[unit])
