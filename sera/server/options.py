"""What the language server's clients send: settings (from `sera lsp` flags, initializationOptions,
workspace/didChangeConfiguration and each command's own options) and the commands' arguments."""

from __future__ import annotations

from typing import Any

from sera.config import load_settings
from sera.errors import SeraError
from sera.specialize.presets import PRESETS

# Short option names a client may use, and the setting each one sets (dotted keys work too).
OPTIONS = {
    "scaffold": "agent.scaffold",
    "candidates": "solve.candidates",
    "model": "model.spec",
    "adapter": "model.adapter",
    "reranker": "rerank.reranker",
    "temperature": "model.temperature",
    "max_steps": "agent.max_steps",
    "test_command": "agent.test_command",
}
REQUEST_KEYS = ("task", "uri", "preset")  # the parts of a request that are not settings


def settings_flags(options: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """{"scaffold": "guided", "solve.parallel": 1} -> {"agent.scaffold": "guided", ...}."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise SeraError(f"sera: {where} must be an object of settings, e.g. "
                        f'{{"scaffold": "guided", "candidates": 2}}')
    flags = {}
    for key, value in options.items():
        if key in REQUEST_KEYS:
            continue
        if key in OPTIONS:
            flags[OPTIONS[key]] = value
        elif "." in key:
            flags[key] = value
        else:
            raise SeraError(f"sera: unknown option {key!r} in {where}; options: "
                            f"{', '.join(OPTIONS)} or any dotted setting that `sera config` lists")
    return flags


def valid_options(options: Any, where: str) -> tuple[dict[str, Any], list[str]]:
    """The options that are valid settings, and a line for each that is not (the key named):
    a client's settings are taken but for the bad ones, which it is told about."""
    if options is None:
        return {}, []
    if not isinstance(options, dict):
        return {}, [f"sera: {where} must be an object of settings, e.g. "
                    f'{{"scaffold": "guided", "candidates": 2}}; none of them was applied']
    good, problems = {}, []
    for key, value in options.items():
        if value is None:  # a setting the client leaves unset
            continue
        try:
            load_settings(None, settings_flags({key: value}, where))
        except SeraError as error:
            problems.append(f"sera: {where}: {key} = {value!r} is not valid "
                            f"({str(error).removeprefix('sera: ')}); the other settings are applied")
            continue
        good[key] = value
    return good, problems


def solve_request(args: tuple[Any, ...]) -> dict[str, Any]:
    """sera.solve's arguments: ["the task"] or [{"task": ..., "uri": ..., option: value}]."""
    if len(args) == 1 and isinstance(args[0], str):
        return {"task": args[0]}
    if len(args) == 1 and isinstance(args[0], dict) and isinstance(args[0].get("task"), str):
        return dict(args[0])
    raise SeraError('sera.solve takes one argument: the task as a string, or an object '
                    '{"task": "...", "uri": "file:///...", "scaffold": "guided", "candidates": 3}')


def specialize_request(args: tuple[Any, ...]) -> dict[str, Any]:
    """sera.specialize's arguments: [] or [{"uri": ..., "preset": "demo", option: value}]."""
    if not args:
        return {}
    if len(args) == 1 and isinstance(args[0], dict):
        preset = args[0].get("preset")
        if preset is not None and preset not in PRESETS:
            raise SeraError(f"sera.specialize: unknown preset {preset!r}; presets: "
                            f"{', '.join(PRESETS)} (or none for the default budget)")
        return dict(args[0])
    raise SeraError('sera.specialize takes no argument, or an object {"uri": "file:///...", '
                    '"preset": "demo"} with any sera settings')


def uri_argument(command: str, uri: Any) -> str | None:
    """A command's "uri" option: a string (file:///...) or absent."""
    if uri is None or isinstance(uri, str):
        return uri
    raise SeraError(f'{command}: "uri" must be a file URI string such as "file:///path/to/file.py", '
                    f"not {type(uri).__name__} {str(uri)[:40]}")


def uri_option(command: str, args: tuple[Any, ...]) -> str | None:
    """The "uri" of a command taking [] or [{"uri": "file:///..."}] (sera.undo, sera.runs)."""
    if args and isinstance(args[0], dict):
        return uri_argument(command, args[0].get("uri"))
    return None


def target_argument(command: str, args: tuple[Any, ...]) -> tuple[str | None, str | None]:
    """(target, uri) of sera.preview / sera.apply: [] (the last run's top candidate),
    ["RUN:CANDIDATE"] or [{"target": "RUN:CANDIDATE", "uri": ...}]."""
    if not args:
        return None, None
    if len(args) == 1 and isinstance(args[0], str):
        return args[0], None
    if len(args) == 1 and isinstance(args[0], dict) and \
            isinstance(args[0].get("target"), (str, type(None))):
        return args[0].get("target"), uri_argument(command, args[0].get("uri"))
    raise SeraError(f'{command} takes no argument (the last run\'s top candidate), "RUN:CANDIDATE", '
                    f'or {{"target": "RUN:CANDIDATE", "uri": "file:///..."}}')
