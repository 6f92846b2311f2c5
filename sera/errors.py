"""Errors that reach a person: each message says what went wrong and what to do next.

Front ends (CLI, language server, TUI) show `str(error)` as it is, on one line, so write messages
for the user, never for the developer. Catch `SeraError` only where you can show it.
"""


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
