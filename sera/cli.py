"""`sera ...`: parse flags, call the packages, print. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sera.agent.apply import apply_candidate, undo_last
from sera.agent.runs import find_run, list_runs
from sera.agent.session import Session, where_code_goes
from sera.agent.summary import location_lines, ordering_notes, rank_line, step_line, top_candidate
from sera.agent.workcopy import find_repo_root
from sera.build import build_id
from sera.config import load_settings
from sera.errors import SeraError, disk_error
from sera.models import serve
from sera.models.catalog import describe
from sera.models.registry import load_model
from sera.specialize.bench import (add_configs, find_bench, format_report, new_bench, parse_config,
                                   run_bench)
from sera.specialize.progress import StageBars
from sera.specialize.run import STAGES, outcome, resume_run, run_stages, start_run
from sera.specialize.stages.reranker import evaluate_run


def _settings(args, flags: dict):
    return load_settings(args.repo_root, flags)


def _repo_root(path: str) -> Path:
    return find_repo_root(Path(path))


def _model_flags(args) -> dict:
    return {"model.spec": args.model, "model.adapter": args.adapter,
            "model.temperature": args.temperature, "agent.max_steps": args.max_steps,
            "agent.scaffold": args.scaffold}


def cmd_solve(args) -> int:

    settings = _settings(args, _solve_flags(args))
    session = Session()
    try:
        result = session.solve(args.repo_root, args.task, settings, on_step=_print_step,
                               on_note=lambda note: _err(f"  {note}"))
    finally:
        session.close()
    _print_result(result)
    for note in ordering_notes(result, reranker_off=settings.rerank.reranker == "none"):
        (_err if note.startswith("warning:") else print)(note)
    if result.sandbox_warning:
        _err(f"warning: {result.sandbox_warning}")
    _print_next_steps(result, args.repo_root)
    return 0


def _print_step(index: int, event) -> None:
    _err(f"  candidate {index} step {event.step}: {step_line(event)}")


def _print_result(result) -> None:
    for c in result.candidates:
        print(f"=== candidate {c.index}: {c.status} ({c.exit_message}); {c.steps} steps, "
              f"{c.prompt_tokens} tokens in, {c.completion_tokens} out, {c.seconds:.1f} s")
        if c.rank is not None:
            print(f"  {rank_line(c)}")
        for line in location_lines(c):
            print(f"  {line}")
        if c.duplicate_of is not None:
            print(f"(the same patch as candidate {c.duplicate_of})")
        else:
            print(c.patch.rstrip() if c.patch.strip() else "(no changes)")


def _print_next_steps(result, repo_root: Path) -> None:
    print(f"run {result.run_id} saved in {result.run_dir}")
    first = top_candidate(result.candidates)
    if first is not None:
        sera = _sera_command(repo_root)
        print(f"apply the top one with: {sera} apply {result.run_id}:{first.index}")
        print(f"undo that with:         {sera} undo")


def _sera_command(repo_root: Path) -> str:
    """This sera as a command that works as typed in the current folder: `sera` when the one on
    PATH is this one, else its full path (the quickstart's venv is not on PATH); with -C REPO when
    the current folder is not in the repository (the quickstart's demo repository)."""
    import shlex
    command = _this_sera()
    if not Path.cwd().resolve().is_relative_to(Path(repo_root).resolve()):
        command += f" -C {shlex.quote(str(repo_root))}"
    return command


def _this_sera() -> str:
    import shlex
    import shutil
    launched = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if launched is None or launched.name != "sera":  # python -m sera.cli, or called in-process
        return f"{shlex.quote(sys.executable)} -m sera.cli"
    on_path = shutil.which("sera")
    return "sera" if on_path and Path(on_path).resolve() == launched else shlex.quote(str(launched))


def cmd_lsp(args) -> int:
    from sera.server.server import serve
    serve(_solve_flags(args), Path(args.repo).resolve())
    return 0


def cmd_tui(args) -> int:
    run_id = _run_to_open(args.repo_root, args.run)  # a wrong --run fails here, not in the app
    _require_terminal()
    from sera.tui.app import run_app
    run_app(args.repo_root, _solve_flags(args), run_id=run_id)
    return 0


def _run_to_open(repo_root: Path, run_id: str | None) -> str | None:
    """The full id of the run `--run` names (the lookup `sera apply RUN` uses), checked before
    the app starts, so a typo is one line on the terminal instead of an app with nothing in it."""
    if run_id is None:
        return None
    return find_run(repo_root, run_id)["id"]


def _require_terminal() -> None:
    """The app reads keys from stdin and draws on stdout; without a terminal there (a pipe,
    /dev/null) Textual spins on a core instead of failing, so refuse before it starts."""
    if not all(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stdout)):
        raise SeraError("sera tui needs a terminal: run it in one, or use `sera solve` for scripts")


def _solve_flags(args) -> dict:
    """The settings flags of sera solve, lsp and tui (the flags given; in the language server and
    the TUI each solve may change them)."""
    flags = _model_flags(args) | {"solve.candidates": args.candidates,
                                  "rerank.reranker": args.reranker}
    return {key: value for key, value in flags.items() if value is not None}


def cmd_specialize(args) -> int:

    if args.resume is not None:
        run = resume_run(args.repo_root, args.resume or None)
        if args.no_train:  # from now on this run goes without training, whoever resumes it
            run.manifest["options"]["no_train"] = True
            run.save()
        _err(f"resuming {run.id}")
    else:
        flags = {k: v for k, v in _specialize_flags(args).items() if v is not None}
        run = start_run(args.repo_root, args.preset, flags,
                        {"no_reranker": args.no_reranker, "no_train": args.no_train})
        settings = run.settings
        teacher = settings.specialize.teacher or settings.model.spec
        note = where_code_goes(teacher)
        if note:
            _err(note)
        _err(f"specialize run {run.id}: teacher {teacher}, student {settings.model.spec}")
    try:
        _run_with_progress(run, args.stage)
    except KeyboardInterrupt:
        _err(f"interrupted; continue with: sera specialize --resume {run.id}")
        raise
    finally:
        run.close()
    for line in outcome(run):
        print(line)
    return 0


def _specialize_flags(args) -> dict:
    return {"model.spec": args.model, "specialize.teacher": args.teacher,
            "specialize.functions": args.functions, "agent.max_steps": args.max_steps,
            "specialize.time_budget": args.time_budget, "specialize.alpha": args.alpha,
            "specialize.general_data": args.general_data, "specialize.seed": args.seed,
            "specialize.recall_threshold": args.recall_threshold,
            "specialize.concurrency": args.concurrency, "agent.scaffold": args.scaffold,
            "rerank.rounds": args.rounds, "rerank.policy_steps": args.policy_steps,
            "train.epochs": args.epochs, "train.rank": args.rank, "train.alpha": args.lora_alpha,
            "train.lr": args.lr}


def _run_with_progress(run, stage) -> None:
    if not sys.stdout.isatty():  # a log file: bars as lines, each percent with the time left
        run.progress = StageBars(lambda bar, line: print(line, flush=True))
        run_stages(run, only=stage)
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    columns = [TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, transient=False) as progress:
        run.progress, run.say = progress, progress.console.print
        run_stages(run, only=stage)


def cmd_eval(args) -> int:
    result = evaluate_run(args.repo_root, args.run, args.reranker or "")
    metrics = result["metrics"]
    print(f"run {result['run']}, reranker {result['reranker']}: {metrics['tasks']} held-out tasks, "
          f"{'/'.join(map(str, metrics['candidates']))} candidates each (from {result['pool']})")
    print(f"{'method':<10} {'solved':>7} {'recall@1':>9}")
    for method, label in (("top1", "top-1"), ("random", "random"), ("majority", "majority"),
                          ("oracle", "oracle")):
        shares = metrics[method] or {"solved": float("nan"), "recall": float("nan")}
        print(f"{label:<10} {shares['solved']:>7.3f} {shares['recall']:>9.3f}")
    print(f"AUC {_maybe(metrics['auc'])} (per task {_maybe(metrics['auc_per_task'])} over "
          f"{metrics['auc_tasks']} tasks); threshold {_maybe(metrics['threshold'])} "
          f"(confidence {result['confidence']:g})")
    return 0


def cmd_bench(args) -> int:
    configs = dict(parse_config(text) for text in args.config) if args.config else None
    if args.resume is not None:
        folder = find_bench(args.repo_root, args.resume or None)
        _err(f"resuming bench {folder.name}")
        if configs:  # more configurations, scored on the same tasks
            add_configs(args.repo_root, folder, configs, note=_err)
    else:
        flags = {key: value for key, value in {
            "bench.tasks": args.tasks, "bench.candidates": args.candidates,
            "solve.candidates": args.candidates, "model.spec": args.model,
            "agent.scaffold": args.scaffold, "bench.test_command": args.test_command,
            "agent.max_steps": args.max_steps}.items() if value is not None}
        settings = _settings(args, flags)
        flags.setdefault("solve.candidates", settings.bench.candidates)
        folder = new_bench(args.repo_root, settings, flags, configs, note=_err)
        _err(f"bench {folder.name}: continue it after a stop with: sera bench --resume {folder.name}")
    try:
        report = run_bench(args.repo_root, folder, note=_err)
    except KeyboardInterrupt:
        _err(f"interrupted; continue with: sera bench --resume {folder.name}")
        raise
    print(format_report(report))
    print(f"report: {folder / 'report.json'}")
    return 0


def _maybe(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def cmd_apply(args) -> int:
    applied = apply_candidate(args.repo_root, args.target)
    how = " (3-way merge with your edits)" if applied.three_way else ""
    print(f"applied {applied.label}{how} to {', '.join(applied.files)}; undo with: sera undo")
    return 0


def cmd_undo(args) -> int:
    undone = undo_last(args.repo_root)
    print(f"undid {undone.label}: restored {', '.join(undone.files)}")
    return 0


def cmd_runs(args) -> int:
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


def cmd_serve(args) -> int:
    serve.check_exposure(args.host, args.api_key)
    adapters = serve.served_adapters(args.repo_root, args.adapters) if args.repo_root else {}
    if args.engine == "vllm":
        if not args.model:
            raise SeraError("--engine vllm needs --model: a model folder or hub id, e.g. "
                            "Qwen/Qwen2.5-Coder-7B-Instruct")
        import torch
        command = serve.vllm_command(args.model, adapters, args.host, args.port, args.api_key,
                                     torch.cuda.device_count())
        _err("running: " + " ".join(command))
        return serve.serve_vllm(command)
    spec = args.model or "embedded"
    if not spec.startswith(("embedded", "llamacpp:")):
        raise SeraError(f"--engine llamacpp serves a GGUF model (embedded, embedded:0.5b or "
                        f"llamacpp:<file.gguf>), not {spec!r}; --engine vllm serves the others "
                        f"on a GPU")
    settings = load_settings(args.repo_root, {"model.spec": spec})
    _err(f"loading {spec} ...")
    model = load_model(spec, settings.model)

    def ready(server) -> None:
        names = ", ".join(adapters) or "none"
        print(f"serving {spec} as {serve.BASE_NAME} (adapters: {names}) at {server.url}", flush=True)
        print(f"use it with: --model openai:{server.url}#{serve.BASE_NAME} (an adapter: "
              f"--adapter NAME){'; clients set SERA_OPENAI_API_KEY' if args.api_key else ''}",
              flush=True)
    try:
        serve.serve_llamacpp(model, adapters, args.host, args.port, args.api_key, ready)
    finally:
        model.close()
    _err("stopped")
    return 0


def cmd_models(args) -> int:
    print(describe(args.repo_root))
    return 0


def cmd_config(args) -> int:
    settings = _settings(args, {})
    for key, value, doc, source in settings.items():
        print(f"{key} = {value!r}  [{source}]\n    {doc}")
    return 0


def _add_solve_flags(parser) -> None:
    """The model, scaffold and ranking flags of sera solve, lsp and tui."""
    parser.add_argument("-n", "--candidates", type=int, help="candidate patches to sample (default 3)")
    parser.add_argument("--model", help="model spec (default: embedded); see `sera models`")
    parser.add_argument("--adapter", help="adapter name in .sera/adapters or a folder (default: the "
                        "newest trained for the model; none: the base model)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default 0.6)")
    parser.add_argument("--max-steps", type=int, help="step limit per candidate (default 115)")
    parser.add_argument("--scaffold", choices=["auto", "agent", "guided"],
                        help="agent: the model drives the tools; guided: the harness localizes and "
                        "the model edits (auto: guided for the embedded models, else what the "
                        "adapter's card says)")
    parser.add_argument("--reranker", metavar="NAME|none", help="reranker in .sera/reranker or a "
                        "folder (default: the newest trained for the model; none: order by filters "
                        "and votes only)")


class _PrintVersion(argparse.Action):
    """--version: the build is looked up only when asked (it runs git on sera's own source)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"sera {build_id()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sera", description="A coding agent that learns your "
                                     "repository on your machine and proposes patches.")
    parser.add_argument("--version", action=_PrintVersion, nargs=0,
                        help="show sera's version (with its commit when run from a checkout)")
    parser.add_argument("-C", "--repo", default=".", help="the repository (default: current folder)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # -C after the command too (`sera runs -C PATH`); given there, it wins over one given before.
    here = argparse.ArgumentParser(add_help=False)
    here.add_argument("-C", "--repo", default=argparse.SUPPRESS,
                      help="the repository (default: current folder)")

    def command(name, **kwargs):
        return sub.add_parser(name, parents=[here], **kwargs)

    solve = command("solve", help="sample candidate patches for a task")
    solve.add_argument("task", help="what to change, in words (an issue text works)")
    _add_solve_flags(solve)
    solve.set_defaults(func=cmd_solve)

    lsp = command("lsp", help="the language server, over stdio (for VS Code, Neovim, ...)")
    _add_solve_flags(lsp)
    lsp.set_defaults(func=cmd_lsp)
    tui = command("tui", help="the terminal app: solve, preview, apply, undo and specialize")
    _add_solve_flags(tui)
    tui.add_argument("--run", help="open this solve run (id or prefix) instead of a new task")
    tui.set_defaults(func=cmd_tui)

    _add_specialize(command("specialize", help="teach the agent this repository (SVG + LoRA)"))
    _add_eval(command("eval", help="compare the reranker with random choice, majority vote and "
                                   "the oracle on a specialize run's held-out tasks"))
    _add_bench(command("bench", help="measure the agent on the repository's own newest commits "
                                     "(their tests where they have them, else line recall)"))
    _add_serve(command("serve", help="the model behind an OpenAI-compatible server, the "
                                     "repository's adapters chosen per request by name"))
    apply = command("apply", help="apply a candidate to your working tree")
    apply.add_argument("target", nargs="?", help="RUN[:CANDIDATE] (default: the last finished "
                       "run's top-ranked candidate)")
    apply.set_defaults(func=cmd_apply)
    command("undo", help="revert the last apply").set_defaults(func=cmd_undo)
    command("runs", help="list past runs").set_defaults(func=cmd_runs)
    command("models", help="list backends, embedded models and adapters").set_defaults(
        func=cmd_models)
    command("config", help="print the effective settings and their sources").set_defaults(
        func=cmd_config)
    return parser


def _add_specialize(spec) -> None:
    spec.add_argument("path", nargs="?", help="the repository (default: -C or the current folder)")
    spec.add_argument("--preset", help="demo, laptop or gpu (explicit flags win)")
    spec.add_argument("--teacher", help="model spec that generates the data (default: --model); "
                      "a server spec sends the repository's code to it")
    spec.add_argument("--model", help="the local model to fine-tune (default: embedded)")
    spec.add_argument("--functions", type=int, help="starting functions to sample (default 20)")
    spec.add_argument("--max-steps", type=int, help="agent step limit per rollout")
    spec.add_argument("--scaffold", choices=["auto", "agent", "guided"],
                      help="scaffold of the rollouts (auto: guided for the embedded models, else "
                           "what the adapter's card says, else agent)")
    spec.add_argument("--time-budget", type=float, help="seconds after which no rollout starts")
    spec.add_argument("--concurrency", type=int, help="rollouts at once against a server teacher")
    spec.add_argument("--recall-threshold", type=float, help="soft verification threshold r (0.5)")
    spec.add_argument("--alpha", type=float, help="share of repository rows in the training mix")
    spec.add_argument("--general-data", help="JSONL of general trajectories to mix in")
    spec.add_argument("--seed", type=int, help="sampling seed")
    spec.add_argument("--epochs", type=int, help="training epochs (CPU default 2)")
    spec.add_argument("--rank", type=int, help="LoRA rank (CPU default 8, GPU 32)")
    spec.add_argument("--lora-alpha", type=int, help="LoRA alpha (CPU default 16, GPU 128)")
    spec.add_argument("--lr", type=float, help="learning rate (CPU default 2e-4, GPU 5e-5)")
    spec.add_argument("--no-train", action="store_true",
                      help="generate data only (no adapter, no reranker)")
    spec.add_argument("--no-reranker", action="store_true", help="train no reranker")
    spec.add_argument("--rounds", type=int, help="reranker self-training rounds (default 2)")
    spec.add_argument("--policy-steps", type=int, metavar="N",
                      help="opt-in: optimize the agent against the reranker with N GRPO steps, "
                           "then mine hard negatives again (0 = off; about 5 min a step for the "
                           "embedded 0.5B on 2 CPU cores)")
    spec.add_argument("--stage", choices=STAGES, help="run only this stage")
    spec.add_argument("--resume", nargs="?", const="", metavar="RUN",
                      help="continue the newest unfinished run (or RUN)")
    spec.set_defaults(func=cmd_specialize)


def _add_eval(evaluate) -> None:
    evaluate.add_argument("run", nargs="?", help="specialize run id or prefix (default: the "
                          "newest with held-out candidates)")
    evaluate.add_argument("--reranker", help="reranker name in .sera/reranker or a folder "
                          "(default: the newest)")
    evaluate.set_defaults(func=cmd_eval)


def _add_bench(bench) -> None:
    bench.add_argument("--tasks", type=int, help="newest eligible commits to hold out (default 10)")
    bench.add_argument("-n", "--candidates", type=int, help="candidates per task (default 2)")
    bench.add_argument("--config", action="append", metavar="NAME[:KEY=VALUE,...]",
                       help="a configuration to compare (repeatable): base, adapter, "
                            "adapter+reranker, or your own, e.g. small:model.spec=embedded:0.5b "
                            "(default: base, plus adapter and adapter+reranker when trained)")
    bench.add_argument("--model", help="model spec for every configuration (default: embedded)")
    bench.add_argument("--scaffold", choices=["auto", "agent", "guided"],
                       help="scaffold for every configuration")
    bench.add_argument("--max-steps", type=int, help="step limit per candidate")
    bench.add_argument("--test-command", help="runs a task's test files (default: detected)")
    bench.add_argument("--resume", nargs="?", const="", metavar="BENCH",
                       help="continue the newest bench (or BENCH) where it stopped; with "
                            "--config, also score these configurations on its tasks")
    bench.set_defaults(func=cmd_bench)


def _add_serve(serve) -> None:
    serve.add_argument("--engine", choices=["llamacpp", "vllm"], default="llamacpp",
                       help="llamacpp (CPU, a GGUF model; default) or vllm (GPU)")
    serve.add_argument("--model", help="llamacpp: embedded[:0.5b] or llamacpp:<file.gguf> "
                       "(default: embedded); vllm: a model folder or hub id")
    serve.add_argument("--adapters", default="all",
                       help="all (default), none, or NAME,... of the repository's adapters")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; another needs --api-key)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    serve.add_argument("--api-key", default=os.environ.get("SERA_SERVE_API_KEY", ""),
                       help="required from clients (Authorization: Bearer KEY); default "
                            "$SERA_SERVE_API_KEY")
    serve.set_defaults(func=cmd_serve)


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    # sera shows its own progress; the model libraries' bars ("Loading weights", transformers'
    # "Converting and de-quantizing GGUF tensors", plain tqdm) would garble a log, a progress
    # display or the TUI. Read when huggingface_hub is first imported, and by every tqdm bar.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    args = build_parser().parse_args(argv)
    try:
        needs_repo = args.command not in ("models", "config", "lsp", "serve")
        where = getattr(args, "path", None) or args.repo
        args.repo_root = _repo_root(where) if needs_repo else _optional_repo(where)
        return args.func(args)
    except SeraError as error:
        _err(f"sera: error: {error}")
        return 1
    except KeyboardInterrupt:
        _err("sera: interrupted; work copies were removed and finished work saved")
        return 130
    except OSError as error:  # a write outside the entry points that report it themselves
        converted = disk_error(error)
        if converted is None:
            raise
        _err(f"sera: error: {converted}")
        return 1


def _optional_repo(path: str) -> Path | None:
    try:
        return _repo_root(path)
    except SeraError:
        return None


if __name__ == "__main__":
    sys.exit(main())
