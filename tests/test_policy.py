"""Policy optimization against the reranker: tasks read from a real repository at the right commit,
the reward of known answers, and a short GRPO run on a tiny model that was taught to answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a model hub

import pytest

from conftest import GIT_IDENTITY
from sera.agent.guided import opening
from sera.errors import SeraError
from tiny_models import build_tiny_model
from sera.specialize.mining import mine_history
from sera.reranker.labels import LabeledPatch, TaskGroup
from sera.config import PolicyConfig
from sera.specialize.grpo import (PolicyTask, code_view, completion_patch, optimize_policy,
                                  policy_prompt, policy_tasks, reward)
from sera.config import TrainConfig
from sera.specialize.lora import train_lora

CALC = '''def add(a, b):
    """Return the sum of a and b."""
    return a - b


def scale(values, factor):
    return [v * factor for v in values]
'''
FIXED = CALC.replace("return a - b", "return a + b")
RIGHT = ("calc.py\n```python\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n"
         ">>>>>>> REPLACE\n```")
WRONG = RIGHT.replace("return a + b", "return b - a")
UNRELATED = ("calc.py\n```python\n<<<<<<< SEARCH\n    return [v * factor for v in values]\n"
             "=======\n    return [factor * v for v in values]\n>>>>>>> REPLACE\n```")
MISSING = RIGHT.replace("return a - b\n", "return a * b\n", 1)
MESSAGE = "Fix add: it subtracted b instead of adding it"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_IDENTITY}).stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """calc.py with a bug, then the commit that fixes it, then an unrelated later edit of calc.py
    (the task must still show the file as it was before the fix)."""
    root = tmp_path_factory.mktemp("policy") / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "calc.py").write_text(CALC)
    (root / "README.md").write_text("# calc\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    (root / "calc.py").write_text(FIXED)
    git(root, "commit", "-qam", MESSAGE)
    (root / "calc.py").write_text(FIXED + "\n\ndef double(x):\n    return 2 * x\n")
    git(root, "commit", "-qam", "Add double, a helper that doubles its argument")
    return root


@pytest.fixture(scope="module")
def task(project) -> PolicyTask:
    history = [t for t in mine_history(project) if t.message.startswith("Fix add")]
    tasks = policy_tasks(project, history)
    assert len(tasks) == 1
    return tasks[0]


# --- tasks and prompts --------------------------------------------------------------------

def test_history_tasks_show_the_files_before_the_commit(task):
    assert task.task.startswith(MESSAGE)
    assert task.files == {"calc.py": CALC}  # the parent's calc.py: no fix, no double()
    assert task.task_id.startswith("history-")
    assert "+    return a + b" in task.reference


def test_groups_and_svg_records_start_from_the_given_commit(project, task):
    head = git(project, "rev-parse", "HEAD").strip()
    group = TaskGroup("svg-00003", "add subtracts", reference=task.reference,
                      candidates=[LabeledPatch(task.reference, 1.0, source="reference")])
    record = {"index": 7, "issue": "add is wrong", "p1": task.reference, "status": "accepted"}
    no_issue = {"index": 8, "issue": None, "p1": task.reference}
    tasks = policy_tasks(project, [group, record, no_issue], commit=head)
    assert [t.task_id for t in tasks] == ["svg-00003", "svg-00007"]
    assert "def double(x)" in tasks[0].files["calc.py"]  # read at HEAD, as asked
    with pytest.raises(SeraError, match="commit="):
        policy_tasks(project, [group])


def test_new_files_are_not_shown_and_unreadable_tasks_are_skipped(project, task):
    head = git(project, "rev-parse", "HEAD").strip()
    new_file = ("diff --git a/util.py b/util.py\nnew file mode 100644\nindex 0000000..3b18e51\n"
                "--- /dev/null\n+++ b/util.py\n@@ -0,0 +1 @@\n+VALUE = 1\n")
    gone = task.reference.replace("calc.py", "gone.py")
    tasks = policy_tasks(project, [TaskGroup("new", "add util", task.reference + new_file),
                                   TaskGroup("gone", "fix gone", gone)], commit=head)
    assert [t.task_id for t in tasks] == ["new"]
    assert list(tasks[0].files) == ["calc.py"]


def test_prompt_is_the_guided_edit_request_with_numbered_lines(task):
    prompt = policy_prompt(task, PolicyConfig())
    assert prompt[:3] == opening("blocks")  # as solve's guided conversations begin
    system, user = prompt[0], prompt[-1]
    assert system["role"] == "system" and "SEARCH/REPLACE" in system["content"]
    assert user["role"] == "user" and MESSAGE in user["content"]
    assert "calc.py (lines 1-6: add)" in user["content"]  # the changed function, as solve shows
    assert "   3 |     return a - b" in user["content"]
    assert "v * factor" not in user["content"]  # nor a function the reference leaves alone


def test_changes_outside_functions_are_shown_with_the_lines_around():
    lines = [f"value_{n} = {n}" for n in range(1, 401)]
    text = "\n".join(lines) + "\n"
    reference = ("diff --git a/big.py b/big.py\n--- a/big.py\n+++ b/big.py\n"
                 "@@ -200,3 +200,3 @@\n value_200 = 200\n-value_201 = 201\n+value_201 = -1\n"
                 " value_202 = 202\n")
    view = code_view(PolicyTask("change 201", reference, {"big.py": text}),
                     PolicyConfig(code_tokens=400))
    assert view.startswith("big.py (lines 198-204)")  # the changed line 201, 3 lines around
    assert " 201 | value_201 = 201" in view and "value_100 " not in view
    assert len(view) <= 400 * 3


# --- the reward ----------------------------------------------------------------------------

def fond_of_wrong_answers(task_text: str, patches) -> list[float]:
    """A reranker at the edge of this test: it loves `b - a` and cares for nothing else."""
    return [10.0 if "+    return b - a" in patch else 0.0 for patch in patches]


def test_reward_orders_right_over_wrong_over_broken(task):
    config = PolicyConfig()
    right, wrong, unrelated, missing, prose = reward(
        task, [RIGHT, WRONG, UNRELATED, MISSING, "I would change add."], fond_of_wrong_answers,
        config)
    assert right.patch == task.reference  # the same patch, byte for byte, as the commit's
    assert right.recall == 1.0 and right.preference == 0.5 and right.value == 0.75
    assert 0.0 < unrelated.value < wrong.value < right.value  # even though the reranker loves it
    assert unrelated.recall == 0.0 and wrong.recall == 0.5  # the removed line still counts
    assert missing.patch is None and missing.value == config.fail_reward
    assert prose.patch is None and prose.value == config.fail_reward


def test_reward_asks_the_reranker_once_with_the_reference_last(task):
    calls = []

    def score(task_text, patches):
        calls.append((task_text, list(patches)))
        return [0.0] * len(patches)

    reward(task, [RIGHT, "no blocks", WRONG], score, PolicyConfig())
    assert len(calls) == 1 and calls[0][0] == task.task
    assert len(calls[0][1]) == 3 and calls[0][1][-1] == task.reference
    assert reward(task, ["no blocks"], score, PolicyConfig())[0].patch is None
    assert len(calls) == 1  # nothing applied: nothing to score


def test_reward_without_a_reranker_is_the_recall(task):
    right, wrong = reward(task, [RIGHT, WRONG], None, PolicyConfig())
    assert (right.value, wrong.value) == (1.0, 0.5)


def test_a_reranker_that_miscounts_is_refused(task):
    with pytest.raises(SeraError, match="every patch"):
        reward(task, [RIGHT], lambda text, patches: [1.0], PolicyConfig())


def test_blocks_that_change_nothing_give_no_patch(task):
    same = RIGHT.replace("return a + b", "return a - b")
    assert completion_patch(task, same) is None


# --- GRPO on a tiny model ------------------------------------------------------------------

def teach(folder: Path, out: Path, task: PolicyTask, prompt: list[dict],
          answers: list[str]) -> Path:
    """A copy of the tiny model fully trained to answer `prompt` with one of `answers`: a random
    model writes no block that applies, so every reward would be the same and GRPO would learn
    nothing. Taught, it samples the right fix, the wrong one, and now and then a block that does
    not apply. The teaching is checked, not hoped for: the loss must reach the floor of a choice
    between the answers, and most answers sampled from the taught model must apply (at a higher
    rate, 40 steps, the loss stopped at 0.05 and no sampled answer applied)."""
    import torch
    from sera.models.transformers_backend import load_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer(folder), load_causal_lm(folder)
    model.train()
    rows = []
    for answer in answers:
        prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}],
                                             tokenize=True, return_dict=True)["input_ids"]
        rows.append((full, [-100] * len(prefix) + full[len(prefix):]))
    width = max(len(tokens) for tokens, _ in rows)
    ids = torch.tensor([tokens + [0] * (width - len(tokens)) for tokens, _ in rows])
    labels = torch.tensor([marks + [-100] * (width - len(marks)) for _, marks in rows])
    mask = (torch.arange(width)[None, :] < torch.tensor([[len(t)] for t, _ in rows])).long()
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.03, f"the tiny model was not taught its answers (loss {loss.item():.3f})"
    model.eval()
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt")
    torch.manual_seed(0)
    samples = model.generate(**prompt_ids, do_sample=True, temperature=1.0, max_new_tokens=96,
                             num_return_sequences=8)
    answers_back = tokenizer.batch_decode(samples[:, prompt_ids["input_ids"].shape[1]:],
                                          skip_special_tokens=True)
    applied = sum(completion_patch(task, answer) is not None for answer in answers_back)
    assert applied >= 5, f"only {applied} of 8 answers of the taught model apply: {answers_back}"
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("*.safetensors", "*.gguf"))
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def optimized(task, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpo")
    config = PolicyConfig(steps=3, num_generations=4, max_completion_tokens=72, lr=2e-3,
                          device="cpu", seed=0)
    prompt = policy_prompt(task, config)
    base = teach(build_tiny_model(), tmp / "taught", task, prompt, [RIGHT, WRONG])
    sft = tmp / "sft"  # what `sera specialize` leaves: an SFT adapter with its card
    train_lora(base, [prompt + [{"role": "assistant", "content": RIGHT}]], sft,
               TrainConfig(max_steps=1, lr=1e-4, dropout=0.0, gradient_checkpointing=False,
                           device="cpu"))
    (sft / "card.json").write_text(json.dumps({"run": "run-1", "student": "transformers:tiny"}))
    reports: list[dict] = []
    result = optimize_policy(base, sft, tmp / "policy", [task], fond_of_wrong_answers, config,
                             student_spec="transformers:tiny", progress=reports.append)
    return result, reports, base, sft, tmp / "policy"


def test_grpo_steps_run_and_report(optimized):
    result, reports, *_ = optimized
    assert result.steps == 3 and len(result.rewards) == 3 and result.completions == 12
    assert [r["step"] for r in reports] == [1, 2, 3] and reports[-1]["steps"] == 3
    assert max(result.applied) > 0  # the taught model's blocks applied and were scored
    assert all(-1.0 <= r <= 0.75 for r in result.rewards)
    window = result.rewards[:1], result.rewards[-1:]
    assert (result.reward_before, result.reward_after) == (window[0][0], window[1][0])


def test_grpo_moves_the_lora_weights_and_not_the_base(optimized):
    result, _, _, sft, out = optimized
    from safetensors.torch import load_file
    assert result.lora_change > 0 and not result.base_changed
    before, after = (load_file(str(folder / "adapter_model.safetensors")) for folder in (sft, out))
    assert before.keys() == after.keys() and all("lora_" in name for name in after)
    assert any(not before[name].equal(after[name]) for name in after)


def test_the_policy_adapter_has_a_card_and_loads_back(optimized):
    result, _, base, sft, out = optimized
    from peft import PeftModel
    from sera.models.transformers_backend import load_causal_lm

    card = json.loads((out / "card.json").read_text())
    assert card["student"] == "transformers:tiny" and card["method"] == "grpo"
    assert card["parent"] == {"adapter": str(sft), "run": "run-1"}
    assert card["reward"] == [round(r, 5) for r in result.rewards]
    assert card["reward_before"] == round(result.reward_before, 5)
    assert card["config"]["num_generations"] == 4 and card["data"]["tasks"] == 1
    assert (out / "loss.png").is_file() and not (out / "ref").exists()  # TRL's KL copy left out
    model = PeftModel.from_pretrained(load_causal_lm(base), str(out))
    assert list(model.peft_config) == ["default"]


def test_bad_settings_and_no_tasks_are_refused(tmp_path):
    with pytest.raises(SeraError, match="num_generations"):
        PolicyConfig(num_generations=1).check()
    with pytest.raises(SeraError, match="micro_batch"):
        PolicyConfig(num_generations=4, micro_batch=3).check()
    with pytest.raises(SeraError, match="no task"):
        optimize_policy(build_tiny_model(), None, tmp_path / "out", [], None, PolicyConfig(),
                        student_spec="transformers:tiny")
