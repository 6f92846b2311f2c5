"""`sera ...`: parse flags, call the packages, print. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sera import __version__
from sera.errors import SeraError


def _settings(args, flags: dict):
    from sera.config import load_settings
    return load_settings(args.repo_root, flags)


def _repo_root(path: str) -> Path:
    from sera.agent.workcopy import find_repo_root
    return find_repo_root(Path(path))


def _model_flags(args) -> dict:
    return {"model.spec": args.model, "model.adapter": args.adapter,
            "model.temperature": args.temperature, "agent.max_steps": args.max_steps}


def cmd_solve(args) -> int:
    from sera.agent.solve import check_request, solve
    from sera.models.registry import load_model

    settings = _settings(args, _model_flags(args) | {"solve.candidates": args.candidates})
    check_request(args.repo_root, args.task, settings)  # fail fast, before a slow model load
    _say_where_code_goes(settings.model.spec)
    _err(f"loading model {settings.model.spec} ...")
    model = load_model(settings.model.spec, settings.model)
    try:
        result = solve(args.repo_root, args.task, settings, model, on_step=_print_step)
    finally:
        model.close()
    _print_result(result)
    return 0


def _say_where_code_goes(spec: str) -> None:
    from urllib.parse import urlparse
    if spec.startswith("openai:"):
        host = urlparse(spec[len("openai:"):].split("#")[0]).hostname or "?"
        if host not in ("localhost", "127.0.0.1", "::1"):
            _err(f"note: the task and the code the agent reads are sent to {host}")


def _print_step(index: int, event) -> None:
    what = "unparsable reply" if event.call is None else event.call.name
    if event.call is not None and event.call.name == "bash":
        what += ": " + str(event.call.arguments.get("command", "")).replace("\n", " ")[:70]
    elif event.call is not None and event.call.name == "str_replace_editor":
        what += f": {event.call.arguments.get('command', '')} {event.call.arguments.get('path', '')}"
    _err(f"  candidate {index} step {event.step}: {what}")


def _print_result(result) -> None:
    for c in result.candidates:
        print(f"=== candidate {c.index}: {c.status} ({c.exit_message}); {c.steps} steps, "
              f"{c.prompt_tokens} tokens in, {c.completion_tokens} out, {c.seconds:.1f} s")
        print(c.patch.rstrip() if c.patch.strip() else "(no changes)")
    if not result.ranked:
        print("note: candidates are not ranked yet; they are listed in the order they finished")
    if result.sandbox_warning:
        _err(f"warning: {result.sandbox_warning}")
    print(f"run {result.run_id} saved in {result.run_dir}")
    if any(c.patch.strip() for c in result.candidates):
        first = next(c for c in result.candidates if c.patch.strip())
        print(f"apply one with: sera apply {result.run_id}:{first.index}   (undo with: sera undo)")


def cmd_apply(args) -> int:
    from sera.agent.apply import apply_candidate
    applied = apply_candidate(args.repo_root, args.target)
    how = " (3-way merge with your edits)" if applied.three_way else ""
    print(f"applied {applied.label}{how} to {', '.join(applied.files)}; undo with: sera undo")
    return 0


def cmd_undo(args) -> int:
    from sera.agent.apply import undo_last
    undone = undo_last(args.repo_root)
    print(f"undid {undone.label}: restored {', '.join(undone.files)}")
    return 0


def cmd_runs(args) -> int:
    from sera.agent.runs import list_runs
    runs = list_runs(args.repo_root)
    if not runs:
        print('no runs yet; start one with: sera solve "TASK"')
        return 0
    for run in runs:
        cands = run.get("candidates", [])
        with_patch = sum(1 for c in cands if c.get("patch", "").strip())
        task = run.get("task", "").replace("\n", " ")
        print(f"{run['id']}  {run.get('status', '?'):<11} {len(cands)} candidates "
              f"({with_patch} with changes)  {task[:60]}")
    return 0


def cmd_models(args) -> int:
    from sera.models.catalog import describe
    print(describe(args.repo_root))
    return 0


def cmd_config(args) -> int:
    settings = _settings(args, {})
    for key, value, doc, source in settings.items():
        print(f"{key} = {value!r}  [{source}]\n    {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sera", description="A coding agent that learns your "
                                     "repository on your machine and proposes patches.")
    parser.add_argument("--version", action="version", version=f"sera {__version__}")
    parser.add_argument("-C", "--repo", default=".", help="the repository (default: current folder)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    solve = sub.add_parser("solve", help="sample candidate patches for a task")
    solve.add_argument("task", help="what to change, in words (an issue text works)")
    solve.add_argument("-n", "--candidates", type=int, help="candidate patches to sample (default 3)")
    solve.add_argument("--model", help="model spec (default: embedded); see `sera models`")
    solve.add_argument("--adapter", help="adapter name in .sera/adapters or a folder")
    solve.add_argument("--temperature", type=float, help="sampling temperature (default 0.6)")
    solve.add_argument("--max-steps", type=int, help="step limit per candidate (default 115)")
    solve.set_defaults(func=cmd_solve)

    apply = sub.add_parser("apply", help="apply a candidate to your working tree")
    apply.add_argument("target", nargs="?", help="RUN[:CANDIDATE] (default: the last run's first)")
    apply.set_defaults(func=cmd_apply)
    sub.add_parser("undo", help="revert the last apply").set_defaults(func=cmd_undo)
    sub.add_parser("runs", help="list past runs").set_defaults(func=cmd_runs)
    sub.add_parser("models", help="list backends, embedded models and adapters").set_defaults(
        func=cmd_models)
    sub.add_parser("config", help="print the effective settings and their sources").set_defaults(
        func=cmd_config)
    return parser


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        needs_repo = args.command not in ("models", "config")
        args.repo_root = _repo_root(args.repo) if needs_repo else _optional_repo(args.repo)
        return args.func(args)
    except SeraError as error:
        _err(f"sera: error: {error}")
        return 1
    except KeyboardInterrupt:
        _err("sera: interrupted; work copies were removed and finished candidates saved")
        return 130


def _optional_repo(path: str) -> Path | None:
    try:
        return _repo_root(path)
    except SeraError:
        return None


if __name__ == "__main__":
    sys.exit(main())
