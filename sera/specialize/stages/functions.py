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
from sera.specialize.functions import extract_functions, list_source_files, sample_functions


def run(run) -> dict:
    config = run.settings.specialize
    files = list_source_files(run.repo_root)
    if not files:
        raise SeraError("no Python, JavaScript, TypeScript, Go, Rust or Java source files found "
                        "(tests, vendored, generated and ignored files are skipped); sera "
                        "specialize needs source code to learn from")
    advance = run.bar("parsing", len(files))
    found = extract_functions(run.repo_root, files, progress=lambda done, total: advance(0, completed=done))
    if not found:
        raise SeraError(f"no function with a unique name found in {len(files)} source files; "
                        f"sera specialize starts from functions")
    sampled = sample_functions(found, config.functions, config.seed)
    atomic_write_json(run.dir / "functions.json", [asdict(fn) for fn in sampled])
    run.say(f"functions: {len(files)} files, {len(found)} functions with a unique name, "
            f"{len(sampled)} sampled")
    return {"files": len(files), "functions": len(found), "sampled": len(sampled)}
