"""Errors that reach a person: each message says what went wrong and what to do next.

Front ends (CLI, language server, TUI) show `str(error)` as it is, on one line, so write messages
for the user, never for the developer. Catch `SeraError` only where you can show it.
"""

from __future__ import annotations

import errno
import functools
from typing import Callable, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class SeraError(Exception):
    """A failure the user can act on; the message says how."""


class ConfigError(SeraError):
    """A setting is missing, misspelled or has a bad value."""


class RepositoryError(SeraError):
    """The folder is not a usable git repository (none, no commits, ...)."""


class ModelError(SeraError):
    """A model could not be loaded or did not answer (missing file, unreachable server, ...)."""


class ApplyError(SeraError):
    """A patch could not be applied to, or undone from, the user's working tree."""


class DiskError(SeraError):
    """A write failed for a reason the user fixes outside sera: a full disk or a folder it may not
    write. sera writes atomically or records first, so nothing was half-written."""


FULL_DISK = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def disk_error(error: OSError) -> DiskError | None:
    """The DiskError that `error` means for the user, or None when it is not about the disk."""
    if error.errno not in FULL_DISK | NOT_WRITABLE:
        return None
    where = f"cannot write {error.filename}" if error.filename else "cannot write to disk"
    remedy = "free some space" if error.errno in FULL_DISK else "make it writable"
    return DiskError(f"{where}: {error.strerror}; nothing was half-written: {remedy}, then run "
                     f"the command again (finished work is kept)")


def reports_disk_errors(function: Callable[P, R]) -> Callable[P, R]:
    """`function` with a full disk or an unwritable folder raised as DiskError, so every front
    end shows it as the message it is (the CLI, the language server, the TUI catch SeraError)."""
    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except OSError as error:
            converted = disk_error(error)
            if converted is None:
                raise
            raise converted from error
    return run
