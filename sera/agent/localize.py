"""Localization, step 1 of the guided scaffold: which functions a task is about, and why.

Two signals, combined into one score per function (deterministic: ties break on path and line):

- a repository map in aider's spirit: tree-sitter gives each file's definitions (functions, and
  the classes that hold them) and references (identifier nodes, so strings and comments do not
  count); a file graph has an edge from a referencing file to the file defining the name, and a
  PageRank personalized toward the files and identifiers the task mentions ranks files, whose rank
  then flows along the edges to the definitions they use;
- lexical search of the task: traceback frames (`File "x.py", line 12, in f`, `x.py:12`,
  `at f (x.js:12:5)`), file paths, code identifiers (snake_case, CamelCase, dotted, `backticked`,
  called()), quoted error text, and plain words against function names and bodies (BM25 on the
  sub-words of identifiers).

The per-file index is cached per repository within the process and refreshed by file size and
modification time, so repeated calls on a large repository only re-read what changed.

Candidates of one task see different views of the ranking (`candidate_view`), so that sampling N
candidates explores N localizations rather than N temperatures of one: candidate 0 the best
`limit`, candidate 1 the next best without the top one, later candidates a draw from the best
2 x `limit` weighted by the square root of the score and seeded by the index. A decisive top
location stays in every view.
"""

from __future__ import annotations

import math
import os
import random
import re
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sera.agent.sourcecode import (Function, functions_in_source, grammar_of, list_source_files,
                                   read_source_file, tree_sitter_parser)

# Node kinds that are references (names used in code), where the grammar has them.
REFERENCE_KINDS = ("identifier", "property_identifier", "shorthand_property_identifier",
                   "field_identifier", "type_identifier", "package_identifier")

CONSTRUCTORS = frozenset({"__init__", "__new__", "constructor", "new"})
GRAMMAR_FAMILY = {"typescript": "javascript", "tsx": "javascript"}

# Score weights. Lexical evidence dominates; the graph breaks ties and carries vague tasks.
W_TRACEBACK_LAST = 12.0   # the frame where the error was raised
W_TRACEBACK = 8.0         # other frames of a traceback
W_NAMED_QUALIFIED = 9.0   # Class.method in the task
W_NAMED = 6.0             # a code identifier in the task equal to the function's name
W_NAMED_WORD = 1.5        # a plain word of the task equal to the function's name
W_NAMED_CLASS = 3.0       # a code identifier in the task equal to the method's class
W_ERROR_TEXT = 5.0        # the task's quoted/error text appears in the body
W_FILE_NAMED = 2.0        # the function's file is named in the task
W_USES_IDENT = 1.5        # per code identifier of the task used in the body (capped)
W_LEXICAL = 3.0           # BM25 of task words against sub-words, normalized to the best
W_RANK = 2.5              # definition rank from the graph, normalized to the best

# Views of the ranking for candidates after the first (candidate_view).
VIEW_POOL = 2             # views draw from the best VIEW_POOL x limit locations
DECISIVE = 2.0            # a top score at least this many times the runner-up's is in every view
VIEWS = ("top", "drop-top", "sample")  # candidate 0, candidate 1, candidates 2 and later

DAMPING = 0.85
PAGERANK_ITERATIONS = 100
PAGERANK_TOLERANCE = 1e-10

STOPWORDS = frozenset("""
a an and are as at be been but by can could do does did doesn don for from has have how i if in
into is it its it's not of on or our should so that the their them then there these this to too
was we were what when where which while who why will with would you your also only just more most
some such than very get gets got after before again all any both each few other same own out over
under up down off once here they he she him her his hers my me us no nor yes new old one two use
used uses using make makes made instead need needs fix fixed bug issue error problem wrong right
works work working broken fails failed failing happens seems like expected actual returns return
returned instead whenever always never sometimes still even now see saw way case cases line lines
file files function functions method methods code call calls called value values self none true
false null def class import
""".split())
EXTENSIONS = r"(?:py|pyi|[cm]?js|jsx|[cm]?ts|tsx|go|rs|java)"
TRACEBACK_PY = re.compile(r'File "([^"]+)", line (\d+)(?:, in ([\w.<>]+))?')
JS_FRAME = re.compile(r"\bat (?:(?:async )?([\w$.<>]+) \()?([^\s()'\"]+\." + EXTENSIONS
                      + r"):(\d+)(?::\d+)?\)?")
PATH_LINE = re.compile(r"([\w./\\-]+\." + EXTENSIONS + r"):(\d+)\b")
PATH = re.compile(r"(?<![\w/.-])([\w.-]*[\w-]+(?:/[\w.-]+)*\." + EXTENSIONS + r")\b")
IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
DOTTED = re.compile(r"\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
BACKTICKED = re.compile(r"`([^`\n]+)`")
CALLED = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
QUOTED = re.compile(r"\"([^\"\n]{6,300})\"|'([^'\n]{6,300})'")
ERROR_LINE = re.compile(r"\b\w*(?:Error|Exception|Warning|panic)\b:\s*(.{6,300})")
WORD = re.compile(r"[a-z0-9]+")
SUBWORD = re.compile(r"[A-Z]+(?=[A-Z][a-z]|\d|\b|_)|[A-Z]?[a-z]+|[A-Z]+|\d+")


@dataclass
class Location:
    """A ranked function: where it is, how strongly the task points at it, and why."""

    path: str            # relative to the repository root, posix separators
    name: str            # qualified, e.g. Parser.parse
    start_line: int      # 1-based, inclusive
    end_line: int
    score: float
    reasons: list[str] = field(default_factory=list)


def changed_functions(path: str, text: str, ranges: list[tuple[int, int]],
                      reason: str) -> list[Location]:
    """The innermost functions of `text` (the file at `path`) that the 1-based (first, last) line
    ranges touch, in the order of the ranges, each once, scored 1.0 with `reason`: where a known
    change is, as the scaffold shows locations."""
    functions = functions_in_source(text.encode("utf-8"), path)
    found: list[Location] = []
    for first, last in ranges:
        inside = [f for f in functions if f.start_line <= last and first <= f.end_line]
        innermost = [f for f in inside if not any(
            g is not f and f.start_line <= g.start_line and g.end_line <= f.end_line
            for g in inside)]
        for function in innermost:
            if all(function.qualified_name != o.name for o in found):
                found.append(Location(path, function.qualified_name, function.start_line,
                                      function.end_line, 1.0, [reason]))
    return found


def changed_locations(path: str, text: str, ranges: list[tuple[int, int]],
                      reason: str) -> list[Location]:
    """Where known changes are, as the scaffold shows them: the innermost functions the ranges
    touch (changed_functions), then each range outside any function as an unnamed location
    (imports, constants, `__all__`), so that a view of them holds every changed line."""
    functions = changed_functions(path, text, ranges, reason)
    outside = [(first, last) for first, last in ranges
               if not any(f.start_line <= last and first <= f.end_line for f in functions)]
    return functions + [Location(path, "", first, last, 1.0, [reason]) for first, last in outside]


# ---------------------------------------------------------------------------------------------
# The per-file index


@dataclass
class _FunctionIndex:
    function: Function
    terms: Counter            # sub-words of the identifiers in the body (name included)
    name_terms: frozenset     # sub-words of the function's own name and of its class's
    scopes: frozenset         # names of the enclosing classes (and functions)
    identifiers: frozenset    # whole identifiers used in the body
    words: str                # the body's words, lowercase, single-spaced (error text search)


@dataclass
class _FileIndex:
    path: str
    family: str               # files reference each other only within a family (JS with TS)
    functions: list[_FunctionIndex]
    defines: frozenset        # function and class names defined here
    references: Counter       # identifier -> uses in the file


_cache: dict[str, dict[str, tuple[tuple[int, int], _FileIndex]]] = {}
_cache_lock = threading.Lock()
_reference_queries: dict[str, object] = {}


def _reference_cursor(grammar: str):
    from tree_sitter import Query, QueryCursor

    if grammar not in _reference_queries:
        language = tree_sitter_parser(grammar).language
        kinds = [kind for kind in REFERENCE_KINDS if language.id_for_node_kind(kind, True)]
        _reference_queries[grammar] = Query(language, " ".join(f"({k}) @ref" for k in kinds))
    return QueryCursor(_reference_queries[grammar])


def _subwords(identifier: str) -> list[str]:
    return [_stem(w.lower()) for w in SUBWORD.findall(identifier) if len(w) > 1]


def _stem(word: str) -> str:
    """A light plural/verb-ending fold so `invoices` meets `invoice` and `totals` meets `total`;
    a final e goes too, so `deleting` meets `delete` and `caches` meets `cache` (both `delet`,
    `cach`)."""
    word = _fold_ending(word)
    return word[:-1] if len(word) >= 4 and word.endswith("e") and not word.endswith("ee") else word


def _fold_ending(word: str) -> str:
    for suffix in ("ing", "ed"):
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and len(stem) >= 3 and re.search(r"[aeiouy]", stem):
            # cancelling -> cancel, added -> add, filling -> fill; not "red" or "thing"
            return stem[:-1] if len(stem) >= 5 and stem[-1] == stem[-2] != "s" else stem
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "es" and not word[:-2].endswith(("ch", "sh", "x", "ss", "z")):
                continue
            if suffix == "s" and word.endswith("ss"):
                continue
            return word[: -len(suffix)] + keep
    return word


def _index_file(repo_root: Path, rel: str) -> _FileIndex | None:
    grammar = grammar_of(rel)
    data = read_source_file(repo_root / rel) if grammar else None
    if data is None:
        return None
    try:
        tree = tree_sitter_parser(grammar).parse(data)
        captures = _reference_cursor(grammar).captures(tree.root_node).get("ref", [])
    except Exception:  # noqa: BLE001 - one odd file must not stop the index
        return None
    references = Counter(data[n.start_byte:n.end_byte].decode("utf-8", "replace")
                         for n in captures)
    functions = functions_in_source(data, rel)
    # A definition's own name is not a use of it.
    for name in [fn.name for fn in functions] + sorted(
            {scope for fn in functions for scope in fn.qualified_name.split(".")[:-1]}):
        references[name] -= 1
    references = +references
    text_lines = data.decode("utf-8", "replace").split("\n")
    header = _file_header(rel, text_lines, functions)
    if header is not None:  # imports and constants: a fix changes them too
        functions = [header, *functions]
    indexed = []
    defines: set[str] = set()
    for fn in functions:
        body = "\n".join(text_lines[fn.start_line - 1:fn.end_line])
        identifiers = IDENT.findall(body)
        scopes = fn.qualified_name.split(".")[:-1]
        # A method is named by its class too (wait_exponential.__call__ is about "exponential"),
        # though the class's name is not in the method's body.
        scope_terms = [t for scope in scopes for t in _subwords(scope)]
        terms = Counter(t for ident in identifiers for t in _subwords(ident))
        terms.update(set(scope_terms) - set(terms))
        indexed.append(_FunctionIndex(
            function=fn, terms=terms, name_terms=frozenset(_subwords(fn.name) + scope_terms),
            scopes=frozenset(scopes), identifiers=frozenset(identifiers),
            words=" ".join(WORD.findall(body.lower()))))
        if fn is not header:  # a region, not a definition: nothing for the graph
            defines.add(fn.name)
            defines.update(scopes)
    return _FileIndex(path=rel, family=GRAMMAR_FAMILY.get(grammar, grammar), functions=indexed,
                      defines=frozenset(defines), references=references)


TOP_OF_FILE = "(top of file)"
MIN_HEADER_LINES = 3   # code lines (not blank) before the first definition for a header region
MAX_HEADER_LINES = 60  # a longer header is cut: its first lines hold the imports


def _file_header(rel: str, lines: list[str], functions: list[Function]) -> Function | None:
    """The file's lines before its first definition (imports, constants, the module docstring)
    as one more location, named TOP_OF_FILE; None when there are too few of them."""
    first = min((fn.start_line for fn in functions), default=len(lines) + 1)
    # the first definition's own decorators and the class line above a method belong to it
    end = first - 1
    while end > 0 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith(
            ("@", "class ", "export ", "#", "//"))):
        end -= 1
    end = min(end, MAX_HEADER_LINES)
    if sum(1 for line in lines[:end] if line.strip()) < MIN_HEADER_LINES:
        return None
    return Function(path=rel, name=TOP_OF_FILE, qualified_name=TOP_OF_FILE,
                    language=grammar_of(rel) or "", start_line=1, end_line=end)


def _repository_index(repo_root: Path) -> list[_FileIndex]:
    """The index of every source file (list_source_files), refreshed where files changed."""
    repo_root = Path(repo_root).resolve()
    key = str(repo_root)
    with _cache_lock:
        cached = dict(_cache.get(key, {}))
    fresh: dict[str, tuple[tuple[int, int], _FileIndex]] = {}
    for rel in list_source_files(repo_root):
        try:
            info = os.stat(repo_root / rel)
        except OSError:
            continue
        stamp = (info.st_mtime_ns, info.st_size)
        if rel in cached and cached[rel][0] == stamp:
            fresh[rel] = cached[rel]
            continue
        indexed = _index_file(repo_root, rel)
        if indexed is not None:
            fresh[rel] = (stamp, indexed)
    with _cache_lock:
        _cache[key] = fresh
    return [fresh[rel][1] for rel in sorted(fresh)]


def clear_cache() -> None:
    """Forget every repository's index (tests; a long-lived process after big changes)."""
    with _cache_lock:
        _cache.clear()


# ---------------------------------------------------------------------------------------------
# What the task says


@dataclass
class _Frame:
    path: str
    line: int
    name: str
    last: bool


@dataclass
class _Task:
    frames: list[_Frame]
    paths: list[str]
    identifiers: list[str]     # code-like: snake_case, CamelCase, dotted parts, backticked, called
    qualified: list[str]       # dotted names (Class.method)
    words: list[str]           # every other word, stemmed, no stopwords
    texts: list[str]           # error/quoted text, as lowercase single-spaced words


def _parse_task(task: str) -> _Task:
    frames: list[_Frame] = []
    for m in TRACEBACK_PY.finditer(task):
        frames.append(_Frame(m.group(1), int(m.group(2)), m.group(3) or "", False))
    for m in JS_FRAME.finditer(task):
        frames.append(_Frame(m.group(2), int(m.group(3)), (m.group(1) or "").split(".")[-1], False))
    framed = {(f.path, f.line) for f in frames}
    for m in PATH_LINE.finditer(task):
        if (m.group(1), int(m.group(2))) not in framed:
            frames.append(_Frame(m.group(1), int(m.group(2)), "", False))
    if frames:
        # Python prints the innermost frame last, JavaScript first; mark the raising frame.
        innermost = frames[-1] if TRACEBACK_PY.search(task) else frames[0]
        innermost.last = True

    paths = list(dict.fromkeys(m.group(1) for m in PATH.finditer(task)))
    # Text without traceback file references, so file names are not read as identifiers.
    prose = PATH.sub(" ", TRACEBACK_PY.sub(" ", task))

    strong: list[str] = []
    qualified: list[str] = []
    for m in BACKTICKED.finditer(prose):
        strong.extend(IDENT.findall(m.group(1)))
        qualified.extend(DOTTED.findall(m.group(1)))
    for dotted in DOTTED.findall(prose):
        qualified.append(dotted)
        strong.extend(dotted.split("."))
    strong.extend(CALLED.findall(prose))
    for ident in IDENT.findall(prose):
        if "_" in ident.strip("_") or re.search(r"[a-z][A-Z]", ident) or (
                re.match(r"[A-Z][a-z]+[A-Z]", ident)):
            strong.append(ident)
    strong = [s for s in dict.fromkeys(strong) if len(s) > 1 and s.lower() not in STOPWORDS]
    qualified = [q for q in dict.fromkeys(qualified)
                 if not re.fullmatch(r"[\w.]*\." + EXTENSIONS, q)]

    words = []
    for ident in IDENT.findall(prose):
        words.extend(_subwords(ident))
    words = [w for w in dict.fromkeys(words) if w not in STOPWORDS and len(w) > 2]

    texts = []
    for m in ERROR_LINE.finditer(task):
        texts.append(m.group(1))
    for m in QUOTED.finditer(task):
        text = m.group(1) or m.group(2)
        if not re.fullmatch(r"[\w./\\-]+\." + EXTENSIONS, text):
            texts.append(text)
    texts = [t for t in dict.fromkeys(" ".join(WORD.findall(t.lower())) for t in texts)
             if len(t.split()) >= 2]
    return _Task(frames, paths, strong, qualified, words, texts)


def _match_path(mentioned: str, files: list[str]) -> list[str]:
    """Repository files a mentioned path (absolute, relative, or a bare file name) refers to."""
    mentioned = mentioned.replace("\\", "/").lstrip("./")
    exact = [f for f in files if f == mentioned]
    if exact:
        return exact
    # /home/u/proj/pkg/mod.py names pkg/mod.py; mod.py names every mod.py (rarely ambiguous).
    return [f for f in files if mentioned.endswith("/" + f) or f.endswith("/" + mentioned)
            or PurePosixPath(f).name == mentioned]


# ---------------------------------------------------------------------------------------------
# The graph


def _pagerank(nodes: list[str], edges: dict[str, dict[str, float]],
              personalization: dict[str, float]) -> dict[str, float]:
    """PageRank by power iteration; dangling nodes and teleports go to `personalization`
    (uniform when empty)."""
    if not nodes:
        return {}
    total = sum(personalization.values())
    teleport = ({n: personalization.get(n, 0.0) / total for n in nodes} if total > 0
                else {n: 1.0 / len(nodes) for n in nodes})
    out_weight = {n: sum(edges.get(n, {}).values()) for n in nodes}
    rank = dict(teleport)
    for _ in range(PAGERANK_ITERATIONS):
        dangling = sum(rank[n] for n in nodes if out_weight[n] == 0)
        new = {n: (1 - DAMPING) * teleport[n] + DAMPING * dangling * teleport[n] for n in nodes}
        for source in nodes:
            if out_weight[source]:
                share = DAMPING * rank[source] / out_weight[source]
                for target, weight in edges[source].items():
                    new[target] += share * weight
        delta = sum(abs(new[n] - rank[n]) for n in nodes)
        rank = new
        if delta < PAGERANK_TOLERANCE:
            break
    return rank


def _graph(files: list[_FileIndex], mentioned: set[str]):
    """Edges referencing file -> defining file, weighted as aider does: sqrt of the uses, more
    for names the task mentions and long specific names, less for private and widely defined ones.
    Returns (edges, per-edge identifier weights for spreading rank to definitions)."""
    definers: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in files:
        for name in f.defines:
            definers[(f.family, name)].append(f.path)
    edges: dict[str, dict[str, float]] = defaultdict(dict)
    by_name: dict[str, list[tuple[str, str, float]]] = defaultdict(list)  # source -> (target, name, w)
    for f in files:
        for name, uses in f.references.items():
            targets = definers.get((f.family, name))
            if not targets:
                continue
            weight = math.sqrt(uses)
            if name in mentioned:
                weight *= 10
            elif len(name) >= 8 and ("_" in name or re.search(r"[a-z][A-Z]", name)):
                weight *= 3
            if name.startswith("_"):
                weight *= 0.1
            if len(targets) > 5:
                weight *= 0.1
            weight /= len(targets)
            for target in targets:
                if target == f.path:
                    continue
                edges[f.path][target] = edges[f.path].get(target, 0.0) + weight
                by_name[f.path].append((target, name, weight))
    return edges, by_name


# ---------------------------------------------------------------------------------------------
# Ranking


@dataclass
class _Scored:
    """One function's score for a task, and the reasons behind it."""

    index: _FunctionIndex
    score: float
    reasons: list[str]


def _rank(repo_root: Path, task: str) -> list[_Scored]:
    """Every indexed function of the repository scored for `task` (the module says how)."""
    files = _repository_index(repo_root)
    if not files:
        return []
    parsed = _parse_task(task)
    paths = [f.path for f in files]
    named_files: set[str] = set()
    for mentioned in parsed.paths + [fr.path for fr in parsed.frames]:
        named_files.update(_match_path(mentioned, paths))
    mentioned_names = set(parsed.identifiers) | {fr.name for fr in parsed.frames if fr.name}
    definition_rank = _definition_rank(files, paths, named_files, mentioned_names)
    best_rank = max(definition_rank.values(), default=0.0) or 1.0
    functions = [fi for f in files for fi in f.functions]
    lexical = _lexical(functions, parsed.words)
    best_lexical = max((hit[0] for hit in lexical if hit), default=0.0) or 1.0
    name_count = Counter(fi.function.name for fi in functions)
    scored = []
    for fi, hit in zip(functions, lexical):
        score, reasons = _evidence(fi, parsed, named_files, mentioned_names, name_count)
        if hit:
            score += W_LEXICAL * hit[0] / best_lexical
            reasons.append("matches words of the task: " + ", ".join(hit[1][:5]))
        fn = fi.function
        rank = definition_rank.get((fn.path, fn.name), 0.0)
        if fn.name in CONSTRUCTORS and "." in fn.qualified_name:
            rank += definition_rank.get((fn.path, fn.qualified_name.split(".")[-2]), 0.0) / 2
        score += W_RANK * rank / best_rank
        if rank and (rank / best_rank >= 0.2 or not reasons):
            reasons.append(f"central in the repository map (PageRank {rank:.3f})")
        if not reasons:
            reasons.append("no direct evidence: ranked by position in the repository")
        scored.append(_Scored(fi, score, reasons))
    return scored


def _definition_rank(files: list[_FileIndex], paths: list[str], named_files: set[str],
                     mentioned_names: set[str]) -> dict[tuple[str, str], float]:
    """(path, name) -> rank of the definition: the file graph's PageRank, personalized toward
    named files and files defining mentioned identifiers, spread over the definitions each file
    uses (aider's ranked definitions), plus a share to its own definitions so a file nobody
    references still ranks its functions."""
    edges, by_name = _graph(files, mentioned_names)
    personalization = {p: 1.0 for p in named_files}
    for f in files:
        hits = len(f.defines & mentioned_names)
        if hits:
            personalization[f.path] = personalization.get(f.path, 0.0) + hits
    file_rank = _pagerank(paths, edges, personalization)
    definition_rank: dict[tuple[str, str], float] = defaultdict(float)
    for f in files:
        out = by_name.get(f.path, [])
        total = sum(w for _, _, w in out)
        for target, name, weight in out:
            definition_rank[(target, name)] += file_rank[f.path] * weight / total
        for name in f.defines:
            definition_rank[(f.path, name)] += 0.1 * file_rank[f.path] / max(len(f.defines), 1)
    return definition_rank


def _lexical(functions: list[_FunctionIndex],
             words: list[str]) -> list[tuple[float, list[str]] | None]:
    """BM25 of the task's words over each function's sub-words: (score, the words matched), or
    None where nothing matched; aligned with `functions`."""
    doc_freq: Counter = Counter()
    for fi in functions:
        doc_freq.update(fi.terms.keys())
    count = len(functions)
    average_length = (sum(sum(fi.terms.values()) for fi in functions) / count) if count else 1.0

    def idf(term: str) -> float:
        return math.log(1 + (count - doc_freq[term] + 0.5) / (doc_freq[term] + 0.5))

    hits: list[tuple[float, list[str]] | None] = []
    for fi in functions:
        length = sum(fi.terms.values()) or 1
        score = 0.0
        matched = []
        for word in words:
            tf = fi.terms.get(word, 0)
            if not tf:
                continue
            boost = 2.0 if word in fi.name_terms else 1.0
            score += boost * idf(word) * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / average_length))
            matched.append(word)
        hits.append((score, matched) if score else None)
    return hits


def _evidence(fi: _FunctionIndex, parsed: _Task, named_files: set[str],
              mentioned_names: set[str], name_count: Counter) -> tuple[float, list[str]]:
    """The score and reasons from what the task says outright: traceback frames, names of the
    function or its class, files, error text, identifiers it uses."""
    fn = fi.function
    score = 0.0
    reasons: list[str] = []
    for frame in parsed.frames:
        if fn.path in _match_path(frame.path, [fn.path]) and \
                fn.start_line <= frame.line <= fn.end_line:
            # Nested functions: the innermost containing one is meant; its name confirms it.
            innermost = not frame.name or frame.name.split(".")[-1] == fn.name
            weight = W_TRACEBACK_LAST if frame.last else W_TRACEBACK
            score += weight if innermost else weight / 3
            reasons.append(f"in a traceback line {frame.line}"
                           + (" (where the error was raised)" if frame.last else ""))
    if any(q == fn.qualified_name or q.endswith("." + fn.qualified_name)
           for q in parsed.qualified) and "." in fn.qualified_name:
        score += W_NAMED_QUALIFIED
        reasons.append(f"named in the task ({fn.qualified_name})")
    elif fn.name in parsed.identifiers or any(fn.name == fr.name for fr in parsed.frames):
        score += W_NAMED / math.sqrt(name_count[fn.name])
        reasons.append("named in the task")
    elif _stem(fn.name.lower()) in parsed.words and len(fn.name) > 2:
        score += W_NAMED_WORD
        reasons.append(f"its name is a word of the task: {fn.name}")
    named_scopes = sorted(fi.scopes & set(parsed.identifiers))
    if named_scopes:
        score += W_NAMED_CLASS
        reasons.append(f"its class is named in the task ({named_scopes[0]})")
    if fn.path in named_files:
        score += W_FILE_NAMED
        reasons.append(f"in a file the task names ({fn.path})")
    texts = [t for t in parsed.texts if _text_in(t, fi.words)]
    if texts:
        score += W_ERROR_TEXT
        reasons.append(f"contains the task's error text: {texts[0]!r}")
    used = sorted(n for n in mentioned_names if n in fi.identifiers and n != fn.name)
    if used:
        score += W_USES_IDENT * min(len(used), 3)
        reasons.append("uses identifiers the task mentions: " + ", ".join(used[:5]))
    return score, reasons


def _text_in(text: str, body_words: str) -> bool:
    """Error text found in a body: whole, or three consecutive words of it (messages are usually
    formatted from a literal with values filled in)."""
    if text in body_words:
        return True
    words = text.split()
    return any(" ".join(words[i:i + 3]) in body_words for i in range(len(words) - 2)
               if sum(len(w) for w in words[i:i + 3]) >= 10)


def localize(repo_root: Path, task: str, limit: int = 5) -> list[Location]:
    """The `limit` functions most likely to need changing for `task`, best first, each with
    its score and the reasons behind it. [] for a repository without supported source files."""
    scored = _rank(Path(repo_root), task)
    order = sorted(scored, key=lambda s: (-round(s.score, 9), s.index.function.path,
                                          s.index.function.start_line,
                                          s.index.function.qualified_name))
    return [Location(path=s.index.function.path, name=s.index.function.qualified_name,
                     start_line=s.index.function.start_line, end_line=s.index.function.end_line,
                     score=round(s.score, 4), reasons=s.reasons) for s in order[:max(limit, 0)]]


# ---------------------------------------------------------------------------------------------
# Views for candidates


@dataclass
class View:
    """The locations one candidate is shown, and how they were picked from the ranking."""

    locations: list[Location]  # best first
    variant: str               # top, drop-top or sample (VIEWS); top when there was no choice
    ranks: list[int]           # 1-based ranks of `locations` in the whole ranking
    pinned: bool               # the top location was decisive and kept in the view

    def meta(self, candidate: int) -> dict:
        return {"candidate": candidate, "variant": self.variant, "ranks": self.ranks,
                "pinned": self.pinned}


def candidate_view(repo_root: Path, task: str, candidate: int = 0, limit: int = 5) -> View:
    """The locations candidate number `candidate` of a task is shown (see pick_view)."""
    return pick_view(localize(repo_root, task, limit=VIEW_POOL * limit), candidate, limit)


def pick_view(ranked: list[Location], candidate: int, limit: int) -> View:
    """Candidate 0: the `limit` best of `ranked`. Candidate 1: the next best, without the top one.
    Candidates 2+: `limit` drawn from `ranked` with weights sqrt(score) (flatter than the scores,
    so lower ranks get a chance), seeded by the index, and never the same set as candidate 0's. A top location scoring at least DECISIVE times the
    runner-up (a raising traceback frame, a function the task names) is kept in every view; the
    variants then apply to the rest. Deterministic; the view is in rank order."""
    variant = VIEWS[min(max(candidate, 0), len(VIEWS) - 1)]
    pinned = len(ranked) > 1 and ranked[0].score >= DECISIVE * max(ranked[1].score, 1e-9)
    first = 1 if pinned else 0
    pool = list(range(first, len(ranked)))
    need = max(limit - first, 0)
    if len(pool) <= need:
        variant = "top"  # nothing to choose from
    if variant == "top":
        chosen = pool[:need]
    elif variant == "drop-top":
        chosen = pool[1:need + 1]
    else:
        chosen = _weighted_draw(ranked, pool, need, random.Random(f"view:{candidate}"))
    ranks = sorted(([0] if pinned and limit > 0 else []) + chosen)
    return View([ranked[i] for i in ranks], variant, [i + 1 for i in ranks], pinned)


def _weighted_draw(ranked: list[Location], pool: list[int], need: int,
                   rng: random.Random) -> list[int]:
    """`need` of `pool` without replacement, weights w = sqrt(score) (Efraimidis-Spirakis keys
    u^(1/w)); when that is exactly the best `need`, the last of them gives way to the best key
    left out."""
    keys = {i: rng.random() ** (1.0 / max(ranked[i].score, 1e-3) ** 0.5) for i in pool}
    by_key = sorted(pool, key=lambda i: (-keys[i], i))
    chosen = by_key[:need]
    if 0 < need < len(pool) and sorted(chosen) == pool[:need]:
        chosen = pool[:need - 1] + [by_key[need]]
    return sorted(chosen)
