"""Stage 1, functions: parse the repository and sample the starting functions.

    sera specialize . --stage functions

Reads every source file git does not ignore (tests, vendored and generated files skipped), keeps
functions whose name has exactly one definition, and samples `specialize.functions` of them with
`specialize.seed`. Writes `functions.json`.
"""

from __future__ import annotations

from dataclasses import asdict

from sera.errors import SeraError
from sera.paths import atomic_write_json
from sera.agent.sourcecode import extract_functions, list_source_files, sample_functions


def run(run) -> dict:
    config = run.settings.specialize
    advance = run.bar("parsing", None)
    seen = {"files": 0}

    def progress(done: int, total: int) -> None:
        seen["files"] = total
        advance(0, completed=done, total=total)

    found = extract_functions(run.repo_root, progress=progress)
    if not found:
        _explain_nothing_found(run)
    sampled = sample_functions(found, config.functions, config.seed)
    atomic_write_json(run.dir / "functions.json", [asdict(fn) for fn in sampled])
    run.say(f"functions: {len(found)} with a unique name in {seen['files']} files, {len(sampled)} sampled")
    return {"files": seen["files"], "functions": len(found), "sampled": len(sampled)}


def _explain_nothing_found(run) -> None:
    if not list_source_files(run.repo_root):
        raise SeraError("no Python, JavaScript, TypeScript, Go, Rust or Java source files found "
                        "(tests, vendored, generated and ignored files are skipped); sera "
                        "specialize needs source code to learn from")
    raise SeraError("no function with a unique name found in the source files; sera specialize "
                    "starts from functions")
