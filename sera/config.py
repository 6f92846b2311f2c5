"""Typed settings, one small dataclass per component, and where each value came from.

Precedence: defaults < `[tool.sera]` in pyproject.toml < `.sera/config.toml` < `SERA_<SECTION>_<FIELD>`
environment variables < command-line flags. A file section looks like:

    [tool.sera.model]          # in pyproject.toml; in .sera/config.toml write [model]
    spec = "openai:http://localhost:8000/v1#qwen"

`sera config` prints every effective value with its source. Each field is documented once, here.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from sera.errors import ConfigError, SeraError
from sera.device import DEVICES, PRECISIONS, pick_device


def derived_field(text: str, default: Any, setting: str) -> Any:
    """A field of a component's config that is not a setting of its own: the caller sets it from
    `setting` (one knob, one place); `sera config` and the files do not offer it."""
    return field(default=default, metadata={"doc": f"{text} (set from {setting})",
                                            "derived": setting})


def doc_field(text: str, default: Any) -> Any:
    """A dataclass field with its one-line documentation (what `sera config` prints); a list
    default gets a fresh copy per instance."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": text})
    return field(default=default, metadata={"doc": text})




@dataclass
class ModelConfig:
    spec: str = doc_field("which model: embedded, transformers:<dir>, llamacpp:<gguf>, "
                     "openai:<url>#<model>, scripted:<file> (see `sera models`)", "embedded")
    adapter: str = doc_field("adapter name in .sera/adapters or a path; '' = the base model", "")
    temperature: float = doc_field("sampling temperature of the agent (0 = greedy)", 0.6)
    max_tokens: int = doc_field("most tokens the model may write in one reply", 1024)
    context_tokens: int = doc_field("context window the engine allocates (prompt + reply)", 16384)
    threads: int = doc_field("CPU threads for in-process engines (0 = all cores)", 0)
    seed: int = doc_field("random seed for sampling (-1 = random)", -1)
    request_timeout: float = doc_field("seconds to wait for one reply from a server backend", 600.0)


@dataclass
class AgentConfig:
    max_steps: int = doc_field("most model replies in one rollout (SERA: 115)", 115)
    command_timeout: float = doc_field("seconds one bash command may run before it is killed (SERA: 300)",
                                  300.0)
    output_chars: int = doc_field("characters of one tool output shown to the model; the rest is clipped",
                             12000)
    max_malformed: int = doc_field("agent scaffold: stop after this many replies in a row without a "
                              "tool call that parses; 0 = no limit", 5)
    time_limit: float = doc_field("most seconds (wall clock) one rollout may run, both scaffolds: "
                             "a reply is cut when it is reached and the rollout ends with what "
                             "it changed so far; 0 = no limit", 600.0)
    token_budget: int = doc_field("most tokens (prompt + reply) one rollout may spend in total; 0 = no limit",
                             0)
    sandbox: str = doc_field("auto (bubblewrap when present), bwrap (required) or none", "auto")
    env_keep: str = doc_field("more environment variables agent commands and tests may see, names or "
                         "patterns separated by spaces (e.g. 'DATABASE_URL MYAPP_*'); by default "
                         "they get only locale, PATH and toolchain variables, never keys or "
                         "tokens", "")
    scaffold: str = doc_field("agent (the model drives the tools; for models that do that well), guided "
                         "(the harness localizes, the model edits; for small local models) or "
                         "auto: guided for the embedded models, else the scaffold the adapter in "
                         "use was trained in (its card), else agent", "auto")
    choose_locations: bool = doc_field("guided scaffold: before the edit, ask the model in one short "
                                  "request which of the located functions to change (a reply "
                                  "that names none keeps the ranked list)", False)
    edit_format: str = doc_field("guided scaffold: how the model writes its change: blocks "
                            "(SEARCH/REPLACE) or functions (the whole function written back, "
                            "swapped in by the harness)", "blocks")
    code_tokens: int = doc_field("most tokens of code the guided scaffold shows the model (on 2 CPU "
                            "cores the embedded 1.5B reads about 60 tokens a second)", 2048)
    test_command: str = doc_field("a fast test command that checks a patch: the guided scaffold's "
                             "check, the candidate filter of `sera solve` and the reranker's "
                             "labels (e.g. 'python -m pytest -x -q tests/unit'); '' = none, "
                             "'auto' = detect one from the repository's files", "auto")


@dataclass
class SolveConfig:
    candidates: int = doc_field("candidate patches sampled per task, each in its own work copy", 3)
    parallel: int = doc_field("candidates run at once when the backend allows it (0 = one per candidate)",
                         0)
    time_limit: float = doc_field("most seconds (wall clock) one solve may run: a candidate gets at "
                             "most the time left (agent.time_limit caps each), one not started "
                             "when it is spent ends as time_limit without running; 0 = no limit",
                             1800.0)


@dataclass
class RerankConfig:
    reranker: str = doc_field("reranker name in .sera/reranker or a path; '' = the newest one trained "
                         "for the model in use; 'none' = do not score candidates", "")
    base: str = doc_field("model spec the reranker is trained on; '' = model.spec, so one base serves "
                     "agent and reranker (embedded:0.5b scores about 3x faster on a CPU)", "")
    max_tokens: int = doc_field("most tokens of task + patch the reranker reads; the task is cut first",
                           1024)
    rounds: int = doc_field("self-training rounds after the first training (RewardRanker: 2)", 2)
    samples: int = doc_field("candidates sampled per task in each self-training round and for the "
                        "held-out evaluation", 4)
    tasks: int = doc_field("most training tasks sampled in one self-training round", 20)
    hard_negatives: int = doc_field("top-scored failing candidates kept per task and round", 2)
    min_gap: float = doc_field("pairs are made only of candidates whose labels differ by at least this",
                          0.1)
    confidence: float = doc_field("the calibrated threshold is the lowest score above which at least "
                             "this share of held-out candidates were right", 0.5)
    policy_steps: int = doc_field("opt-in policy optimization of the agent's adapter against the "
                             "reranker (GRPO), in optimizer steps; 0 = off", 0)


@dataclass
class SpecializeConfig:
    teacher: str = doc_field("model spec of the teacher that generates data; '' = model.spec (local). "
                        "A server spec sends code off the machine: it must be named explicitly", "")
    functions: int = doc_field("starting functions sampled from the repository", 20)
    seed: int = doc_field("seed for sampling functions and directions", 0)
    recall_threshold: float = doc_field("soft verification: keep a rollout-2 solution when its line-level "
                                   "recall of rollout 1's patch is at least this (SERA: 0.5)", 0.5)
    self_check_attempts: int = doc_field("rollout-1 tries per function until the teacher's self-check "
                                    "says yes (SERA: 3)", 3)
    max_patch_lines: int = doc_field("drop patches with more changed lines than this (SERA: 40)", 40)
    max_answer_blocks: int = doc_field("drop rows with a reply of more SEARCH/REPLACE blocks than this: "
                                  "an adapter writes answers as long as the ones it learned from, "
                                  "and the reply limit cuts long ones off (0 = no limit)", 3)
    max_tool_output_tokens: int = doc_field("drop trajectories whose tool outputs average more tokens "
                                       "than this (SERA: 600)", 600)
    truncation_threshold: float = doc_field("keep a trajectory cut to the context only if it keeps at "
                                       "least this share of its messages (SERA: 0.95)", 0.95)
    context_tokens: int = doc_field("training context: longer trajectories are cut after their last "
                               "complete assistant turn (SERA: 32768)", 8192)
    history_tasks: int = doc_field("most commits of the repository's history turned into tasks "
                              "(small fixes; the newest are held out for evaluation)", 100)
    heldout_fraction: float = doc_field("share of history tasks held out for evaluation", 0.2)
    concurrency: int = doc_field("rollouts run at once against a teacher that allows it", 4)
    time_budget: float = doc_field("seconds after which no new rollout starts (0 = no limit)", 0.0)
    alpha: float = doc_field("share of repository rows in the training mix; the rest comes from "
                        "general_data (1.0 = repository only)", 1.0)
    general_data: str = doc_field("JSONL of general trajectories ({\"messages\": ...}) to mix in", "")
    price_per_million_in: float = doc_field("teacher price per million prompt tokens, for the report "
                                       "(0 = not shown)", 0.0)
    price_per_million_out: float = doc_field("teacher price per million completion tokens", 0.0)


@dataclass
class BenchConfig:
    tasks: int = doc_field("newest eligible commits held out as `sera bench` tasks", 10)
    candidates: int = doc_field("candidate patches per task and configuration (the top-ranked one "
                           "is scored, the best one is the oracle)", 2)
    max_changed_lines: int = doc_field("a task's reference changes 1 to this many non-test lines", 20)
    test_command: str = doc_field("the command that runs a task's test files (pytest gets the files "
                             "and a JUnit report appended); '' = agent.test_command, else "
                             "detected", "")
    resamples: int = doc_field("bootstrap resamples of the confidence intervals of differences", 2000)
    oracle_view: bool = doc_field("guided scaffold: show the model the functions the reference "
                             "changes instead of the localizer's picks, to measure how far the "
                             "model gets when localization is perfect (SWE-bench's oracle "
                             "retrieval); a diagnosis, never a product configuration", False)


# Every linear projection of attention and MLP in Llama-style models (Qwen, Llama, Mistral, ...).
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraTraining:
    """What LoRA training of the agent (`train`) and of the reranker (`rerank_train`) share; each
    section has its own values."""

    SECTION: ClassVar[str] = ""  # its settings section
    WHAT: ClassVar[str] = "training"  # its name in messages

    rank: int = doc_field("LoRA rank r", 8)
    alpha: int = doc_field("LoRA alpha (the update is scaled by alpha / rank)", 16)
    dropout: float = doc_field("dropout on the LoRA input", 0.05)
    lr: float = doc_field("peak learning rate of AdamW", 2e-4)
    epochs: int = doc_field("passes over the training data (reshuffled each pass)", 2)
    max_seconds: float = doc_field("stop after the step that passes this many seconds of training and "
                                   "save what was learnt (0 = no limit; the schedule is not "
                                   "shortened)", 0.0)
    max_tokens: int = 4096  # each section derives it from its own setting (below)
    batch_tokens: int = doc_field("padded tokens in one forward pass (micro-batch)", 4096)
    target_modules: list[str] = doc_field("modules that get LoRA weights; 'all-linear' also works",
                                          ALL_PROJECTIONS)
    gradient_checkpointing: bool = doc_field("recompute activations in the backward pass: far less "
                                             "memory for long inputs, about 30% more time", True)
    seed: int = doc_field("seed of the initialisation, dropout and data order", 0)
    warmup_ratio: float = doc_field("share of the steps over which the learning rate rises from 0",
                                    0.05)
    schedule: str = doc_field("learning-rate decay after warmup: cosine or linear (to 0)", "cosine")
    weight_decay: float = doc_field("AdamW weight decay", 0.0)
    max_grad_norm: float = doc_field("gradient clipping norm (0 = no clipping)", 1.0)
    precision: str = doc_field("dtype of the frozen base model: fp32, bf16 or auto (bf16 on GPUs and "
                               "on CPUs that compute in it natively, AVX512-BF16 or AMX, where it "
                               "trains 2-3x as fast; else fp32)", "auto")
    device: str = doc_field("auto (a GPU when there is one), cpu or cuda", "auto")

    @classmethod
    def for_device(cls, device: str = "auto") -> Any:
        """Defaults for a CPU (small and quick) or a GPU (GPU_PROFILE's values of this section:
        METHODS.md's LoRA recipe for the agent, bigger micro-batches for the reranker)."""
        return _for_device(cls, cls.SECTION, device, cls.WHAT)

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise SeraError(f"training precision must be auto, fp32 or bf16, got "
                            f"{self.precision!r}")
        if self.schedule not in ("cosine", "linear"):
            raise SeraError(f"learning-rate schedule must be cosine or linear, got {self.schedule!r}")
        if min(self.rank, self.epochs, self.max_tokens, self.batch_tokens) < 1:
            raise SeraError("rank, epochs, max_tokens and batch_tokens must be >= 1")


@dataclass
class TrainConfig(LoraTraining):
    """The agent's LoRA (the `train` stage)."""

    SECTION: ClassVar[str] = "train"
    max_tokens: int = derived_field("longest sequence in tokens; longer rows are cut (the caller "
                                    "should cut trajectories at a turn boundary first)", 4096,
                                    "specialize.context_tokens")
    max_steps: int = doc_field("exactly this many optimizer steps, cycling through the rows as needed "
                               "(0 = `epochs` passes)", 0)
    batch_size: int = doc_field("most examples in one micro-batch (0 = only batch_tokens limits)", 8)
    grad_accum: int = doc_field("micro-batches per optimizer step", 4)

    def check(self) -> None:
        super().check()
        if self.grad_accum < 1:
            raise SeraError("grad_accum must be >= 1")


@dataclass
class RerankTrainConfig(LoraTraining):
    """The reranker's LoRA and score head (the `reranker` stage)."""

    SECTION: ClassVar[str] = "rerank_train"
    WHAT: ClassVar[str] = "reranker training"
    lr: float = doc_field("peak learning rate of AdamW (LoRA weights and score head)", 1e-4)
    max_tokens: int = derived_field("most tokens of task + patch one candidate is read with (the "
                                    "task is cut first): the same as at solve time", 1024,
                                    "rerank.max_tokens")
    pairs_per_step: int = doc_field("pairs accumulated per optimizer step (a pair is never split "
                                    "across micro-batches)", 8)

    def check(self) -> None:
        super().check()
        if self.pairs_per_step < 1:
            raise SeraError("pairs_per_step must be >= 1")


@dataclass
class PolicyConfig:
    steps: int = derived_field("GRPO optimizer steps", 8, "rerank.policy_steps")
    lr: float = doc_field("learning rate of AdamW on the LoRA weights (constant)", 1e-5)
    num_generations: int = doc_field("answers sampled per task: the group GRPO compares (>= 2)", 4)
    tasks_per_step: int = doc_field("tasks per optimizer step (each with its whole group)", 1)
    micro_batch: int = doc_field("answers per forward/backward pass; the step's answers are "
                            "accumulated (activation memory grows with it)", 1)
    max_completion_tokens: int = doc_field("longest answer in tokens; longer ones are cut", 128)
    code_tokens: int = doc_field("room for the files in the prompt (about 3 characters a token)", 1024)
    temperature: float = doc_field("sampling temperature of the answers", 1.0)
    beta: float = doc_field("weight of the KL penalty to the starting adapter (0 = none, no "
                       "reference pass: cheaper)", 0.04)
    score_weight: float = doc_field("weight of the reranker's preference over the reference (0..1)",
                               0.5)
    recall_weight: float = doc_field("weight of the reference's line recall in the patch (0..1)", 0.5)
    fail_reward: float = doc_field("reward of an answer that does not parse, apply or change anything",
                              -1.0)
    rank: int = doc_field("LoRA rank of a fresh adapter (an existing adapter keeps its own)", 8)
    alpha: int = doc_field("LoRA alpha of a fresh adapter", 16)
    target_modules: list[str] = doc_field("modules a fresh adapter adapts", ALL_PROJECTIONS)
    gradient_checkpointing: bool = doc_field("recompute activations in the backward pass: without "
                                        "it one 1.3k-token answer of a 0.5B model holds about "
                                        "6 GB of activations", True)
    seed: int = derived_field("seed of sampling, task order and a fresh adapter", 0,
                              "specialize.seed")
    device: str = doc_field("auto (a GPU when there is one), cpu or cuda", "auto")

    def check(self) -> None:
        if self.num_generations < 2:
            raise SeraError("policy optimization needs num_generations >= 2: GRPO compares the "
                            "answers of one task with each other")
        if min(self.steps, self.tasks_per_step, self.micro_batch, self.max_completion_tokens,
               self.code_tokens) < 1:
            raise SeraError("steps, tasks_per_step, micro_batch, max_completion_tokens and "
                            "code_tokens must be >= 1")
        if (self.num_generations * self.tasks_per_step) % self.micro_batch:
            raise SeraError(f"micro_batch ({self.micro_batch}) must divide the answers of a step "
                            f"(num_generations x tasks_per_step = "
                            f"{self.num_generations * self.tasks_per_step})")
        if self.device not in ("auto", "cpu", "cuda"):
            raise SeraError(f"unknown policy device {self.device!r}; use auto, cpu or cuda")


# What a GPU changes of the training defaults (METHODS.md's recipe for the agent's LoRA; bf16 and
# bigger micro-batches for the reranker). Applied where a setting was left at its default.
GPU_PROFILE: dict[str, Any] = {
    "train.rank": 32, "train.alpha": 128, "train.lr": 5e-5, "train.epochs": 3,
    "train.batch_tokens": 32768, "train.batch_size": 16, "train.grad_accum": 8,
    "rerank_train.batch_tokens": 32768,
    "rerank_train.pairs_per_step": 16,
}


def _for_device(cls: type, section: str, device: str, what: str) -> Any:
    """`cls` with its defaults for `device` (auto: the one torch sees; a GPU is not required
    for cuda here: training says so when it starts)."""
    if device not in DEVICES:
        raise SeraError(f"unknown device {device!r} for {what}; use auto, cpu or cuda")
    device = pick_device(device, what) if device == "auto" else device
    config = cls(device=device)
    if device == "cuda":
        for key, value in GPU_PROFILE.items():
            if key.startswith(section + "."):
                setattr(config, key.partition(".")[2], value)
    if section == "train" and device == "cuda":
        config.max_tokens = 32768
    return config


def apply_device_profile(settings: "Settings") -> str:
    """The device training will run on ("cpu" or "cuda", from train.device); on a GPU, the
    GPU_PROFILE values of the settings still at their defaults (source "gpu profile")."""
    device = pick_device(settings.train.device, "training")
    if device == "cuda":
        for key, value in GPU_PROFILE.items():
            if settings.sources.get(key, "default") == "default":
                section, _, name = key.partition(".")
                setattr(getattr(settings, section), name, value)
                settings.sources[key] = "gpu profile"
    return device


@dataclass
class Settings:
    model: ModelConfig = field(default_factory=ModelConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    solve: SolveConfig = field(default_factory=SolveConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    specialize: SpecializeConfig = field(default_factory=SpecializeConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rerank_train: RerankTrainConfig = field(default_factory=RerankTrainConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sources: dict[str, str] = field(default_factory=dict, repr=False)

    def items(self):
        """(dotted key, value, doc, source) for every setting, in declaration order."""
        for section in _sections():
            obj = getattr(self, section)
            for f in fields(obj):
                if "derived" in f.metadata:
                    continue  # set from the one setting it names, when the stage runs
                key = f"{section}.{f.name}"
                yield key, getattr(obj, f.name), f.metadata["doc"], self.sources.get(key, "default")


# The range of each numeric setting (inclusive; None = open), checked after every layer is applied,
# so a bad value fails before anything is loaded, whichever layer it came from.
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "model.temperature": (0, None), "model.max_tokens": (1, None),
    "model.context_tokens": (512, None), "model.threads": (0, None),
    "model.request_timeout": (1, None),
    "agent.max_steps": (1, None), "agent.command_timeout": (1, None),
    "agent.output_chars": (100, None), "agent.token_budget": (0, None),
    "agent.max_malformed": (0, None), "agent.time_limit": (0, None),
    "agent.code_tokens": (64, None),
    "solve.candidates": (1, None), "solve.parallel": (0, None), "solve.time_limit": (0, None),
    "rerank.max_tokens": (16, None), "rerank.rounds": (0, None), "rerank.samples": (1, None),
    "rerank.tasks": (1, None), "rerank.hard_negatives": (0, None), "rerank.min_gap": (0, None),
    "rerank.confidence": (0, 1), "rerank.policy_steps": (0, None),
    "specialize.functions": (0, None), "specialize.recall_threshold": (0, 1),
    "specialize.self_check_attempts": (1, None), "specialize.max_patch_lines": (1, None),
    "specialize.max_tool_output_tokens": (1, None), "specialize.truncation_threshold": (0, 1),
    "specialize.context_tokens": (512, None), "specialize.history_tasks": (0, None),
    "specialize.heldout_fraction": (0, 1), "specialize.concurrency": (1, None),
    "specialize.time_budget": (0, None), "specialize.alpha": (0, 1),
    "specialize.price_per_million_in": (0, None), "specialize.price_per_million_out": (0, None),
    "bench.tasks": (1, None), "bench.candidates": (1, None), "bench.max_changed_lines": (1, None),
    "bench.resamples": (1, None),
    **{f"{section}.{name}": (1, None) for section in ("train", "rerank_train")
       for name in ("rank", "alpha", "epochs", "batch_tokens")},
    **{f"{section}.{name}": (0, 1) for section in ("train", "rerank_train")
       for name in ("dropout", "warmup_ratio")},
    "train.grad_accum": (1, None), "train.batch_size": (0, None), "train.max_steps": (0, None),
    "train.lr": (0, None), "rerank_train.lr": (0, None), "rerank_train.pairs_per_step": (1, None),
    "policy.num_generations": (2, None), "policy.tasks_per_step": (1, None),
    "policy.micro_batch": (1, None), "policy.max_completion_tokens": (1, None),
    "policy.code_tokens": (1, None), "policy.lr": (0, None), "policy.temperature": (0, None),
}


def _check_bounds(settings: "Settings") -> None:
    for key, value, _, source in settings.items():
        low, high = BOUNDS.get(key, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            allowed = (f"at least {low:g}" if high is None else f"between {low:g} and {high:g}")
            raise ConfigError(f"setting {key} = {value!r} ({source}) must be {allowed}")


def _sections() -> list[str]:
    return [f.name for f in fields(Settings) if f.name != "sources"]


def _coerce(key: str, value: Any, target_type: type) -> Any:
    try:
        if target_type is list:  # TOML gives a list; the environment and flags "a,b,c"
            return [str(v).strip() for v in (value if isinstance(value, list)
                                             else str(value).split(","))]
        if target_type is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return target_type(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {key} = {value!r} is not a valid {target_type.__name__}; "
                          f"fix it in the place `sera config` lists for it") from None


def _apply(settings: Settings, table: dict[str, Any], source: str) -> None:
    for section, values in table.items():
        if section not in _sections() or not isinstance(values, dict):
            raise ConfigError(f"unknown settings section [{section}] in {source}; "
                              f"valid sections: {', '.join(_sections())}")
        obj = getattr(settings, section)
        known = {f.name: f for f in fields(obj)}
        for name, value in values.items():
            if name not in known:
                raise ConfigError(f"unknown setting {section}.{name} in {source}; valid: "
                                  f"{', '.join(n for n, f in known.items() if 'derived' not in f.metadata)}")
            if "derived" in known[name].metadata:
                raise ConfigError(f"{section}.{name} in {source} is not a setting of its own: it "
                                  f"follows {known[name].metadata['derived']}; set that instead")
            ftype = list if known[name].default is dataclasses.MISSING else \
                type(known[name].default)
            setattr(obj, name, _coerce(f"{section}.{name}", value, ftype))
            settings.sources[f"{section}.{name}"] = source


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML ({e}); fix or remove it") from None


def load_settings(repo_root: Path | None = None, flags: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Settings for `repo_root`, layering files, environment and `flags` ({"model.spec": ...})."""
    settings = Settings()
    environ = os.environ if environ is None else environ
    if repo_root is not None:
        pyproject = Path(repo_root) / "pyproject.toml"
        if pyproject.is_file():
            table = _read_toml(pyproject).get("tool", {}).get("sera", {})
            _apply(settings, table, "pyproject.toml [tool.sera]")
        local = Path(repo_root) / ".sera" / "config.toml"
        if local.is_file():
            _apply(settings, _read_toml(local), ".sera/config.toml")
    for section in _sections():
        for f in fields(getattr(settings, section)):
            var = f"SERA_{section}_{f.name}".upper()
            if var in environ:
                _apply(settings, {section: {f.name: environ[var]}}, f"env {var}")
    for key, value in (flags or {}).items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        _apply(settings, {section: {name: value}}, f"flag --{name.replace('_', '-')}")
    _check_bounds(settings)
    settings.train.check()
    settings.rerank_train.check()
    return settings


def replace_section(settings: Settings, section: str, **changes: Any) -> Settings:
    """A copy of `settings` with some fields of one section changed (for programmatic callers)."""
    new = dataclasses.replace(settings, sources=dict(settings.sources))
    setattr(new, section, dataclasses.replace(getattr(settings, section), **changes))
    return new
