"""Function sampling throughput: `extract_functions` against a bare tree-sitter parse of the same files.

    python bench/bench_sampling.py [--files 2000] [--keep DIR]

Builds a synthetic git repository (Python, TypeScript, JavaScript, Go, Rust and Java files of about
150 lines each, plus tests and vendored files that the sampler must skip), then times, in the same
run: `list_source_files`; a bare parse of the listed files (read + parse, one Parser per grammar,
one process, no queries, no filtering); `extract_functions` as shipped (its own git listing
included; a process pool on machines with more than one core); and `extract_functions` held to
one process. Prints files/s and the ratios to the bare parse (> 1 = faster than the bare parse).

Each is timed in several interleaved rounds; the best and the median wall time are shown, since a
shared machine's load drifts, and the CPU seconds spent (this process and its children). On a
machine whose cores are busy with other work a pool cannot beat one process; the CPU ratio still
shows what the queries and filtering cost on top of the parse.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sera.agent import sourcecode as fx  # noqa: E402

ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
       "GIT_COMMITTER_EMAIL": "b@b"}


def python_file(i: int) -> str:
    parts = [f'"""Module {i}."""\n\nimport os\n\n']
    for c in range(3):
        parts.append(f"class Widget{i}_{c}:\n    def __init__(self, size):\n        self.size = size\n\n")
        for m in range(5):
            parts.append(f"    def method_{i}_{c}_{m}(self, items):\n        total = 0\n"
                         f"        for item in items:\n            if item > {m}:\n"
                         f"                total += item * self.size\n        return total\n\n")
    for f in range(5):
        parts.append(f"def helper_{i}_{f}(path):\n    with open(path) as handle:\n"
                     f"        return [line.strip() for line in handle if line]\n\n\n")
    return "".join(parts)


def typescript_file(i: int) -> str:
    parts = ["import { x } from './x';\n\n"]
    for c in range(2):
        parts.append(f"export class Service{i}_{c}<T> {{\n  private items: T[] = [];\n"
                     f"  constructor(private readonly name: string) {{}}\n")
        for m in range(6):
            parts.append(f"  method{i}_{c}_{m}(value: T, limit: number): T[] {{\n"
                         f"    if (this.items.length > limit) {{ return this.items.slice(0, {m}); }}\n"
                         f"    this.items.push(value);\n    return this.items;\n  }}\n")
        parts.append("}\n\n")
    for f in range(6):
        parts.append(f"export const handler{i}_{f} = async (req: Request): Promise<number> => {{\n"
                     f"  const body = await req.json();\n  return body.count + {f};\n}};\n\n")
    return "".join(parts)


def javascript_file(i: int) -> str:
    parts = []
    for f in range(12):
        parts.append(f"function compute{i}_{f}(list, fn) {{\n  const out = [];\n"
                     f"  for (const item of list) {{\n    if (fn(item)) out.push(item * {f});\n  }}\n"
                     f"  return out;\n}}\n\n")
    parts.append(f"module.exports = {{ compute{i}_0 }};\n")
    return "".join(parts)


def go_file(i: int) -> str:
    parts = [f"package pkg{i % 50}\n\nimport \"fmt\"\n\ntype Store{i} struct {{ items []int }}\n\n"]
    for m in range(6):
        parts.append(f"func (s *Store{i}) Method{i}_{m}(n int) (int, error) {{\n"
                     f"\tif n < 0 {{\n\t\treturn 0, fmt.Errorf(\"negative %d\", n)\n\t}}\n"
                     f"\ts.items = append(s.items, n)\n\treturn len(s.items), nil\n}}\n\n")
    for f in range(6):
        parts.append(f"func Helper{i}_{f}(values []int) int {{\n\ttotal := 0\n"
                     f"\tfor _, v := range values {{\n\t\ttotal += v * {f}\n\t}}\n\treturn total\n}}\n\n")
    return "".join(parts)


def rust_file(i: int) -> str:
    parts = [f"use std::collections::HashMap;\n\npub struct Cache{i} {{ map: HashMap<String, u32> }}\n\n"
             f"impl Cache{i} {{\n"]
    for m in range(6):
        parts.append(f"    pub fn method_{i}_{m}(&mut self, key: &str) -> Option<u32> {{\n"
                     f"        let value = self.map.get(key).copied()?;\n"
                     f"        self.map.insert(key.to_string(), value + {m});\n"
                     f"        Some(value)\n    }}\n\n")
    parts.append("}\n\n")
    for f in range(6):
        parts.append(f"pub fn helper_{i}_{f}(values: &[u32]) -> u32 {{\n"
                     f"    values.iter().filter(|v| **v > {f}).sum()\n}}\n\n")
    return "".join(parts)


def java_file(i: int) -> tuple[str, str]:
    parts = [f"package com.example;\n\nimport java.util.List;\n\npublic class Repo{i} {{\n"
             f"    private final List<String> names;\n\n"
             f"    public Repo{i}(List<String> names) {{\n        this.names = names;\n    }}\n\n"]
    for m in range(12):
        parts.append(f"    public int method{i}_{m}(String prefix) {{\n        int count = 0;\n"
                     f"        for (String name : names) {{\n            if (name.startsWith(prefix)) {{\n"
                     f"                count += {m};\n            }}\n        }}\n"
                     f"        return count;\n    }}\n\n")
    parts.append("}\n")
    return f"Repo{i}.java", "".join(parts)


def make_repo(root: Path, n_files: int, seed: int = 0) -> None:
    """n_files source files in the six languages, 5% of them tests and 5% vendored (skipped)."""
    rng = random.Random(seed)
    writers = [("py", python_file)] * 4 + [("ts", typescript_file)] * 2 + [("js", javascript_file),
               ("go", go_file), ("rs", rust_file), ("java", None)]
    for i in range(n_files):
        ext, write = rng.choice(writers)
        folder = "vendor/lib" if i % 20 == 1 else "tests" if i % 20 == 2 else f"src/pkg{i % 100}"
        if ext == "java":
            name, text = java_file(i)
        else:
            name, text = f"mod{i}.{ext}", write(i)
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=ENV)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=ENV)


def bare_parse(root: Path, files: list[str]) -> None:
    from tree_sitter import Language, Parser

    parsers: dict[str, Parser] = {}
    for rel in files:
        _, grammar = fx.LANGUAGE_BY_EXTENSION[Path(rel).suffix]
        if grammar not in parsers:
            module, function = fx.GRAMMAR_MODULES[grammar]
            parsers[grammar] = Parser(Language(getattr(__import__(module), function)()))
        parsers[grammar].parse((root / rel).read_bytes())


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the pool's workers, git)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn, *args):
    """(wall seconds, CPU seconds, result). CPU time shows the work done even when other
    programs share the cores; wall time alone then says little about a pool of processes."""
    start, start_cpu = time.perf_counter(), cpu_seconds()
    result = fn(*args)
    return time.perf_counter() - start, cpu_seconds() - start_cpu, result


def extract_in_one_process(root: Path) -> list[fx.Function]:
    """The same call as shipped, held to one process."""
    shipped = fx._worker_count
    fx._worker_count = lambda: 1
    try:
        return fx.extract_functions(root)
    finally:
        fx._worker_count = shipped


def run(n_files: int, keep: Path | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = keep or Path(tmp) / "repo"
        if not (root / ".git").exists():
            root.mkdir(parents=True, exist_ok=True)
            make_repo(root, n_files)
        else:
            print(f"reusing {root} (--files ignored)")
        files = fx.list_source_files(root)
        megabytes = sum((root / f).stat().st_size for f in files) / 1e6
        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        results = {}
        runs = {"list": (fx.list_source_files, root), "bare": (bare_parse, root, files),
                "pool": (fx.extract_functions, root), "single": (extract_in_one_process, root)}
        # Interleaved rounds: on a shared machine the load drifts; each round sees the same drift.
        for _ in range(repeat):
            for name, (fn, *args) in runs.items():
                wall, used, results[name] = timed(fn, *args)
                times.setdefault(name, []).append(wall)
                cpu.setdefault(name, []).append(used)
        assert results["pool"] == results["single"]
        report(files, megabytes, results["pool"], times, cpu)


def report(files: list[str], megabytes: float, found: list, times: dict, cpu: dict) -> None:
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    best_cpu = {name: min(values) for name, values in cpu.items()}
    print(f"{len(files)} source files listed ({megabytes:.1f} MB), {len(found)} functions kept; "
          f"wall: best (median) of {len(times['bare'])} interleaved rounds")
    rows = [("list_source_files", "list"), ("bare parse, 1 process", "bare"),
            (f"extract_functions, {fx._worker_count()} process(es)", "pool"),
            ("extract_functions, 1 process", "single")]
    for label, name in rows:
        line = (f"{label + ':':<38}{best[name]:6.2f} s ({median[name]:.2f})  cpu {best_cpu[name]:5.2f} s"
                f"  {len(files) / best[name]:6.0f} files/s")
        if name in ("pool", "single"):
            line += (f"  ratio to bare parse: wall {best['bare'] / best[name]:.2f}"
                     f" ({median['bare'] / median[name]:.2f}), cpu {best_cpu['bare'] / best_cpu[name]:.2f}")
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="source files in the synthetic repository")
    parser.add_argument("--keep", type=Path,
                        help="build (or reuse) the repository here instead of a temp dir")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; best and median shown")
    args = parser.parse_args()
    run(args.files, args.keep, args.repeat)


if __name__ == "__main__":
    main()
