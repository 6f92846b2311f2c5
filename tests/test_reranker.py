"""The RewardRanker reranker on the tiny offline model: what it reads, the pairs it trains on, a
real training run that learns to put the right fix first, and finding a trained reranker again."""

from __future__ import annotations

import dataclasses

import hashlib
import json
import math
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a model hub

import pytest

from sera.config import Settings, replace_section
from sera.errors import SeraError
from sera.reranker.model import (LoraReranker, encode_candidate, encode_candidates, final_marker,
                                  list_rerankers, newest_reranker, open_reranker, read_card,
                                  resolve_reranker, update_reranker_card)
from tiny_models import build_tiny_model
from sera.paths import rerankers_dir
from sera.reranker.labels import LabeledPatch, TaskGroup
from sera.config import RerankTrainConfig
from sera.reranker.train import build_reward_model, make_pairs, pair_accuracy, train_reranker


def diff(module: str, function: str, old: str, new: str) -> str:
    return (f"diff --git a/src/{module}.py b/src/{module}.py\n--- a/src/{module}.py\n"
            f"+++ b/src/{module}.py\n@@ -1,3 +1,3 @@\n def {function}(a, b):\n"
            f"-    {old}\n+    {new}\n")


def task_group(module: str, function: str) -> TaskGroup:
    """A task whose right fix turns `a - b` into `a + b`; the wrong ones touch something else."""
    good = diff(module, function, "return a - b", "return a + b")
    wrong_doc = diff(module, function, '"""Return the sum of a and b."""', '"""Return a and b."""')
    wrong_print = diff(module, function, "print(a)", "print(b)")
    return TaskGroup(
        task_id=f"{module}.{function}",
        task=f"`{function}` in src/{module}.py returns the difference of a and b instead of their "
             f"sum.",
        reference=good,
        candidates=[LabeledPatch(wrong_doc, recall=0.0, source="rollout2"),
                    LabeledPatch(good, recall=1.0, source="reference"),
                    LabeledPatch(wrong_print, recall=0.0, source="other_task")])


TRAIN = [task_group(m, f) for m, f in [("calc", "add"), ("ops", "plus"), ("mathx", "total"),
                                       ("util", "combine"), ("app", "accumulate"),
                                       ("core", "merge")]]
HELDOUT = [task_group(m, f) for m, f in [("tools", "summed"), ("lib", "together"),
                                         ("main", "join")]]
# A task with one candidate makes no pair: it is scored but not trained on.
LONELY = TaskGroup("lonely", "Rename `x`.", reference="", candidates=[
    LabeledPatch(diff("misc", "rename", "x = 1", "y = 1"), recall=1.0)])
CONFIG = RerankTrainConfig(device="cpu", rank=8, alpha=16, dropout=0.0, lr=5e-3, epochs=8,
                           pairs_per_step=4, max_tokens=512, warmup_ratio=0.1, seed=0,
                           precision="fp32")  # the same on every CPU; bf16 is tested below


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return build_tiny_model()


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from sera.models.transformers_backend import load_tokenizer
    return load_tokenizer(tiny_dir)


def weights_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tiny_dir, tokenizer, tmp_path_factory):
    """Train once for the module; keep the untrained model (same seed) to compare weights with."""
    import torch
    torch.manual_seed(CONFIG.seed)
    start = build_reward_model(tiny_dir, tokenizer, CONFIG)
    initial = {k: v.detach().clone() for k, v in start.named_parameters()}
    trainable = {k for k, v in start.named_parameters() if v.requires_grad}
    untrained = LoraReranker(start.eval(), tokenizer, max_tokens=CONFIG.max_tokens)
    heldout_before = pair_accuracy(untrained, HELDOUT, min_gap=0.1)
    digest = weights_digest(tiny_dir)
    root = tmp_path_factory.mktemp("repo")
    out_dir = rerankers_dir(root) / "run-1"
    steps = []
    result = train_reranker(tiny_dir, TRAIN + [LONELY], out_dir, CONFIG, base_spec=f"transformers:{tiny_dir}",
                            min_gap=0.1, progress=steps.append)
    return {"result": result, "out_dir": out_dir, "root": root, "steps": steps,
            "initial": initial, "trainable": trainable, "heldout_before": heldout_before,
            "digest": digest}


@pytest.fixture(scope="module")
def loaded(trained):
    """Loaded back as trained: the LoRA layers kept apart from the base weights."""
    reranker = LoraReranker.load(trained["out_dir"], device="cpu", merge=False, precision="fp32")
    yield reranker
    reranker.close()


@pytest.fixture(scope="module")
def merged(trained):
    """Loaded back as `solve` loads it: in the dtype it was trained in (its card's float32), the
    LoRA merged into the base weights."""
    reranker = LoraReranker.load(trained["out_dir"], device="cpu")
    yield reranker
    reranker.close()


# --- what the reranker reads --------------------------------------------------------------------

def test_encoding_holds_task_and_patch_and_ends_with_the_marker(tokenizer):
    task, patch = TRAIN[0].task, TRAIN[0].reference
    ids = encode_candidate(tokenizer, task, patch, max_tokens=1024)
    text = tokenizer.decode(ids)
    assert task in text and patch in text and text.index(task) < text.index(patch)
    marker = final_marker(tokenizer)
    assert marker and ids[-len(marker):] == marker
    assert "yes or no" in tokenizer.decode(marker)  # the question comes after the patch


def test_a_long_candidate_loses_the_task_first_then_the_patch_tail(tokenizer):
    marker = final_marker(tokenizer)
    task = " ".join(f"step{i}" for i in range(400))
    patch = TRAIN[0].reference
    short = encode_candidate(tokenizer, task, patch, max_tokens=5000)
    cut = encode_candidate(tokenizer, task, patch, max_tokens=300)
    assert len(short) < 5000 and len(cut) == 300 and cut[-len(marker):] == marker
    text = tokenizer.decode(cut)
    assert patch in text  # the patch is whole: only the task was cut
    assert "step0 step1 step2" in text and "step399" not in text  # the task's head stays

    long_patch = patch + "".join(f"+    line_{i} = {i}\n" for i in range(400))
    both = tokenizer.decode(encode_candidate(tokenizer, task, long_patch, max_tokens=300))
    assert "step0 step1" in both and "step399" not in both  # a quarter of the room for the task
    assert "return a + b" in both and "line_399" not in both  # the patch's head stays
    assert both.endswith(tokenizer.decode(marker))
    with pytest.raises(SeraError, match="rerank.max_tokens"):
        encode_candidate(tokenizer, task, patch, max_tokens=40)
    # The batch form (what scoring uses) is the same function, candidate by candidate.
    patches = [patch, long_patch, ""]
    assert encode_candidates(tokenizer, task, patches, 300) == [
        encode_candidate(tokenizer, task, p, 300) for p in patches]


# --- pairs --------------------------------------------------------------------------------------

def group(task: str, *labels: tuple[str, float, bool | None]) -> TaskGroup:
    return TaskGroup(task, f"task {task}", reference="",
                     candidates=[LabeledPatch(p, recall=r, tests_passed=t) for p, r, t in labels])


def test_pairs_stay_within_a_task_and_respect_min_gap():
    groups = [group("a", ("a1", 1.0, None), ("a2", 0.95, None), ("a3", 0.2, None)),
              group("b", ("b1", 0.3, True), ("b2", 1.0, False), ("b3", 1.0, False)),
              group("c", ("c1", 0.5, None), ("c2", 0.5, None))]
    pairs = make_pairs(groups, min_gap=0.1)
    found = {(p.task, p.good, p.bad): round(p.margin, 6) for p in pairs}
    assert found == {("task a", "a1", "a3"): 0.8, ("task a", "a2", "a3"): 0.75,
                     # passing tests outrank recall: 0.3 + 1 beats 1.0
                     ("task b", "b1", "b2"): 0.3, ("task b", "b1", "b3"): 0.3}
    assert make_pairs(groups, min_gap=0.1) == pairs  # deterministic
    assert len(make_pairs(groups, min_gap=0.05)) == 5  # a1 > a2 (gap 0.05) now counts
    assert [p.good for p in make_pairs(groups, min_gap=0.8)] == ["a1"]
    duplicate = group("d", ("same", 1.0, None), ("same", 0.0, None))
    assert make_pairs([duplicate], min_gap=0.1) == []  # one patch cannot beat itself


def test_training_without_any_pair_says_why(tiny_dir, tmp_path):
    flat = [group("a", ("a1", 0.5, None), ("a2", 0.5, None)), group("b", ("b1", 1.0, None))]
    with pytest.raises(SeraError, match="same label"):
        train_reranker(tiny_dir, flat, tmp_path / "r", CONFIG, base_spec="embedded")
    assert not (tmp_path / "r").exists()


# --- a real training run ------------------------------------------------------------------------

def test_training_puts_the_right_fix_first(trained, loaded):
    result = trained["result"]
    assert result.pairs == 12 and result.tasks == 6 and result.candidates == 18
    assert len(result.scores) == 7 and len(result.scores[-1]) == 1  # one list per group given
    assert result.accuracy_before < 0.9
    assert result.accuracy_after == 1.0
    assert result.steps == len(result.losses) == 24 == len(trained["steps"])  # 3 steps x 8 epochs
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.5 * first, result.losses
    # Tasks it never saw, of the same kind.
    assert pair_accuracy(loaded, HELDOUT, min_gap=0.1) > trained["heldout_before"]


def test_only_lora_and_the_score_head_train(trained, loaded, tiny_dir):
    initial, trainable = trained["initial"], trained["trainable"]
    assert trainable and all("lora_" in k or "score.modules_to_save" in k for k in trainable)
    assert weights_digest(tiny_dir) == trained["digest"]  # the base folder is untouched
    end = dict(loaded._model.named_parameters())
    assert set(end) == set(initial)
    lora = [k for k in initial if "lora_" in k]
    head = [k for k in initial if "score.modules_to_save" in k]
    # peft keeps the head it copied as `score.original_module`: unused, freshly drawn per load.
    base = [k for k in initial if k not in trainable and "score.original_module" not in k]
    assert lora and head and base
    assert all(not equal(initial[k], end[k]) for k in lora + head)
    assert all(equal(initial[k], end[k]) for k in base)
    from safetensors import safe_open
    with safe_open(str(trained["out_dir"] / "adapter_model.safetensors"), "pt") as saved:
        assert all("lora_" in k or k.endswith("score.weight") for k in saved.keys())


def equal(a, b) -> bool:
    import torch
    return torch.equal(a, b)


def test_loaded_back_it_scores_as_in_memory(trained, loaded, merged):
    from sera.models.base import Reranker
    assert isinstance(loaded, Reranker) and isinstance(merged, Reranker)
    assert loaded.name == "run-1" and loaded.threshold is None
    assert loaded.max_tokens == CONFIG.max_tokens
    # The score is read at the rightmost non-pad token: the pad id is never the marker's end.
    assert loaded.pad_id != final_marker(loaded.tokenizer)[-1]
    assert not any("lora_" in name for name, _ in merged._model.named_parameters())
    for group_, scores in zip(TRAIN, trained["result"].scores):
        patches = [c.patch for c in group_.candidates]
        assert loaded.score(group_.task, patches) == scores
        assert merged.score(group_.task, patches) == pytest.approx(scores, abs=1e-4)
    # Batched or one by one, each candidate gets its own score.
    one_by_one = [loaded.score(TRAIN[0].task, [c.patch])[0] for c in TRAIN[0].candidates]
    assert one_by_one == pytest.approx(trained["result"].scores[0], abs=1e-5)
    assert loaded.score(TRAIN[0].task, []) == []


def test_on_the_agents_model_it_scores_the_same_without_a_second_base(trained, loaded, tiny_dir,
                                                                       tmp_path):
    """One base in memory serves agent and reranker: the reranker's LoRA joins the agent's model
    as one more adapter; scores match the reranker loaded on its own; the agent still answers
    with the base and with its own adapter."""
    from sera.config import ModelConfig, TrainConfig
    from sera.models.registry import load_model
    from sera.specialize.lora import train_lora

    spec = f"transformers:{tiny_dir}"
    agent = load_model(spec, ModelConfig(spec=spec))
    sft = tmp_path / "sft"
    train_lora(tiny_dir, [[{"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "hello"}]], sft,
               TrainConfig(max_steps=1, lr=1e-2, device="cpu", gradient_checkpointing=False))
    messages = [{"role": "user", "content": "hi"}]
    try:
        base_before = agent.complete(messages, max_tokens=8)[0].text
        tuned_before = agent.complete(messages, adapter=str(sft), max_tokens=8)[0].text
        settings = replace_section(Settings(), "model", spec=spec)
        shared = settings_reranker(trained["root"], settings, agent_model=agent)
        assert shared.shares_base and not loaded.shares_base
        params = sum(p.numel() for p in agent._model.parameters())
        for group_ in TRAIN[:3]:
            patches = [c.patch for c in group_.candidates]
            assert shared.score(group_.task, patches) == pytest.approx(
                loaded.score(group_.task, patches), abs=1e-4)
        lora = sum(p.numel() for n, p in agent._model.named_parameters() if "lora_" in n)
        assert sum(p.numel() for p in agent._model.parameters()) - params <= lora  # no new base
        assert agent.complete(messages, max_tokens=8)[0].text == base_before
        assert agent.complete(messages, adapter=str(sft), max_tokens=8)[0].text == tuned_before
        shared.close()
        assert agent.complete(messages, max_tokens=8)[0].text == base_before  # not closed
        other = settings_reranker(trained["root"], settings, agent_model=load_model(
            "scripted:" + str(write_replies(tmp_path)), ModelConfig()))
        assert other is None or not other.shares_base  # no decoder to share: a copy of its own
        if other is not None:
            other.close()
    finally:
        agent.close()


def write_replies(tmp_path: Path) -> Path:
    path = tmp_path / "replies.json"
    path.write_text(json.dumps(["ok"]))
    return path


def test_card_records_data_training_and_calibration(trained, tiny_dir):
    out_dir = trained["out_dir"]
    card = json.loads((out_dir / "card.json").read_text())
    assert card["base"] == f"transformers:{tiny_dir}" and card["base_folder"] == str(tiny_dir)
    assert card["data"] == {"tasks": 6, "candidates": 18, "pairs": 12, "min_gap": 0.1}
    assert card["config"]["lr"] == CONFIG.lr and len(card["loss"]) == 24
    assert card["training"]["steps"] == 24 and card["training"]["pairs_per_second"] > 0
    assert card["training"]["pair_accuracy_after"] == 1.0 and card["training"]["dtype"] == "float32"
    assert card["threshold"] is None and card["metrics"] == {} and card["created"]
    assert (out_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_for_device_defaults():
    cpu, gpu = RerankTrainConfig.for_device("cpu"), RerankTrainConfig.for_device("cuda")
    assert (cpu.rank, cpu.alpha, cpu.lr, cpu.epochs, cpu.pairs_per_step) == (8, 16, 1e-4, 2, 8)
    assert (cpu.precision, gpu.precision, gpu.device) == ("auto", "auto", "cuda")
    assert cpu.max_tokens == gpu.max_tokens == Settings().rerank.max_tokens
    with pytest.raises(SeraError):
        RerankTrainConfig.for_device("tpu")


def test_training_in_bf16_on_a_cpu_learns_the_pairs_too(tiny_dir, tmp_path):
    """The base in bfloat16 (native on AVX512-BF16/AMX CPUs, emulated elsewhere), its float32
    head fed through the cast-up hook."""
    config = dataclasses.replace(CONFIG, precision="bf16")
    result = train_reranker(tiny_dir, TRAIN, tmp_path / "bf16", config,
                            base_spec=f"transformers:{tiny_dir}", min_gap=0.1)
    assert result.accuracy_after == 1.0 > result.accuracy_before
    assert sum(result.losses[-3:]) < 0.5 * sum(result.losses[:3]), result.losses
    assert read_card(tmp_path / "bf16")["training"]["dtype"] == "bfloat16"
    # Loaded back, it follows its card into bf16, keeps its LoRA apart (merging would round it
    # away) and scores as in memory.
    reranker = LoraReranker.load(tmp_path / "bf16", device="cpu")
    try:
        assert any("lora_" in name for name, _ in reranker._model.named_parameters())
        for group_, scores in zip(TRAIN, result.scores):
            assert reranker.score(group_.task, [c.patch for c in group_.candidates]) == scores
    finally:
        reranker.close()


# --- finding a reranker -------------------------------------------------------------------------

def fake_reranker_folder(root: Path, name: str, base: str, created: str) -> Path:
    folder = rerankers_dir(root) / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "card.json").write_text(json.dumps({"base": base, "created": created}))
    return folder


def test_resolve_picks_the_newest_for_the_base_and_names_the_known_ones(tmp_path):
    old = fake_reranker_folder(tmp_path, "r-old", "embedded", "2025-01-01T10:00:00")
    new = fake_reranker_folder(tmp_path, "r-new", "embedded", "2025-02-01T10:00:00")
    other = fake_reranker_folder(tmp_path, "r-other", "embedded:0.5b", "2025-03-01T10:00:00")
    (rerankers_dir(tmp_path) / ".r-tmp.x").mkdir()  # an unfinished training run
    assert [f.name for f, _ in list_rerankers(tmp_path)] == ["r-other", "r-new", "r-old"]
    assert newest_reranker(tmp_path, "embedded") == new
    assert resolve_reranker(tmp_path, "", "embedded") == new
    assert resolve_reranker(tmp_path, "", "embedded:0.5b") == other
    assert resolve_reranker(tmp_path, "", "llamacpp:/x.gguf") is None
    assert resolve_reranker(tmp_path, "none", "embedded") is None
    assert resolve_reranker(tmp_path, "r-old", "embedded") == old.resolve()
    assert resolve_reranker(tmp_path, str(old), "whatever") == old.resolve()
    with pytest.raises(SeraError, match="r-other, r-new, r-old"):
        resolve_reranker(tmp_path, "r-missing", "embedded")
    with pytest.raises(SeraError, match="none yet"):
        resolve_reranker(tmp_path / "empty", "r-missing", "embedded")
    update_reranker_card(old, threshold=0.25, metrics={"auc": 0.8})
    card = json.loads((old / "card.json").read_text())
    assert card == {"base": "embedded", "created": "2025-01-01T10:00:00", "threshold": 0.25,
                    "metrics": {"auc": 0.8}}


def test_the_reranker_follows_the_settings(trained, tiny_dir):
    root = trained["root"]
    settings = replace_section(Settings(), "model", spec=f"transformers:{tiny_dir}")
    reranker = settings_reranker(root, replace_section(settings, "rerank", max_tokens=256))
    try:
        assert reranker.name == "run-1" and reranker.max_tokens == 256
        assert math.isfinite(reranker.score(TRAIN[0].task, [TRAIN[0].reference])[0])
    finally:
        reranker.close()
    with pytest.raises(Exception, match="closed"):
        reranker.score("x", ["y"])
    reranker.close()  # twice is fine
    assert settings_reranker(root, Settings()) is None  # none trained for the embedded model
    assert settings_reranker(root, replace_section(settings, "rerank", reranker="none")) is None
    # rerank.base wins over model.spec: one base can serve any agent model
    based = replace_section(Settings(), "rerank", base=f"transformers:{tiny_dir}")
    other = settings_reranker(root, based)
    assert other is not None and other.name == "run-1"
    other.close()


def test_a_calibrated_threshold_is_read_from_the_card(trained, tmp_path):
    import shutil
    folder = shutil.copytree(trained["out_dir"], tmp_path / "calibrated")
    update_reranker_card(folder, threshold=0.5, metrics={"auc": 0.9})
    reranker = LoraReranker.load(folder, device="cpu")
    try:
        assert reranker.threshold == 0.5 and reranker.card["metrics"] == {"auc": 0.9}
        assert reranker.card["data"]["pairs"] == 12  # the rest of the card is kept
    finally:
        reranker.close()


def settings_reranker(root, settings, agent_model=None):
    """The reranker a solve session opens for `settings` (as Session.load does), or None."""
    folder = resolve_reranker(root, settings.rerank.reranker,
                              settings.rerank.base or settings.model.spec)
    return None if folder is None else open_reranker(folder, settings, agent_model)
