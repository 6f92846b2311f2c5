"""The RewardRanker reward model: one scalar score for (task text, candidate patch).

    folder = resolve_reranker(repo_root, settings.rerank.reranker, base)  # None: none trained
    reranker = open_reranker(folder, settings, agent_model)
    scores = reranker.score(task, [patch_a, patch_b])   # higher = more likely right

The model is the agent's base model loaded as a sequence classifier with one label
(`AutoModelForSequenceClassification(num_labels=1)`: a bias-free linear `score` head on the last
hidden state) plus a peft LoRA adapter trained with `task_type="SEQ_CLS"`, which puts the `score`
head in `modules_to_save`: the adapter folder holds the LoRA weights and the trained head, the base
stays as it is. The score is read at the last token, which `encode_candidate` makes the same
marker tokens for every candidate; transformers finds it as the rightmost token that is not the
pad id, so sequences are right-padded with a pad id that differs from that last token.

The head runs in float32 (its input is cast up), the base in bfloat16 where the device computes in it
natively (GPUs, AVX512-BF16/AMX CPUs), else in float32, as training has it by default.

A reranker folder is `.sera/reranker/<name>/`: peft's files, `card.json` (base spec, data,
training figures, loss, `threshold` once calibrated, `metrics` once evaluated) and `loss.png`.
sera.reranker.train trains it. torch, transformers and peft are imported inside functions.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from sera.errors import ModelError, SeraError
from sera.device import pick_device, precision_of, torch_dtype
from sera.models.local import transformers_folder
from sera.models.transformers_backend import load_tokenizer
from sera.paths import atomic_write_json, card_folders, rerankers_dir, resolve_card_folder
from sera.prompts import render_from

if TYPE_CHECKING:
    from sera.config import Settings

_TASK, _PATCH = "\x00sera-task\x00", "\x00sera-patch\x00"  # placeholders that split the template
MIN_ROOM = 32  # tokens max_tokens must leave for task + patch after the template's own
TASK_FLOOR = 0.25  # the task is cut first, but keeps at least this share of the room
SCORE_BATCH_TOKENS = 8192  # padded tokens in one scoring forward pass


# --- what the reranker reads --------------------------------------------------------------------

def encode_candidate(tokenizer: Any, task: str, patch: str, max_tokens: int) -> list[int]:
    """The token ids the reranker reads for one candidate: templates/reranker.txt as the user turn
    of the base's chat template (with its generation prompt), task and patch filled in.

    At most `max_tokens`: the task is cut first (its head kept, down to a quarter of the room
    left by the template), then the patch loses its tail. The template's own tokens are never cut,
    so every candidate ends with the same marker tokens, where the score is read.
    """
    return encode_candidates(tokenizer, task, [patch], max_tokens)[0]


def encode_candidates(tokenizer: Any, task: str, patches: Sequence[str],
                      max_tokens: int) -> list[list[int]]:
    """`encode_candidate` for several patches of one task (the template and task encoded once)."""
    prefix, middle, suffix = _frame(tokenizer)
    room = max_tokens - len(prefix) - len(middle) - len(suffix)
    if room < MIN_ROOM:
        raise SeraError(f"rerank.max_tokens = {max_tokens} leaves no room for the task and the "
                        f"patch (the reranker's prompt alone takes {max_tokens - room} tokens); "
                        f"raise it to at least {max_tokens - room + 256}")
    task_ids = _ids(tokenizer, task)
    encoded = []
    for patch_ids in _ids_of_each(tokenizer, patches):
        task_keep = min(len(task_ids), max(int(room * TASK_FLOOR), room - len(patch_ids)))
        patch_keep = room - task_keep
        encoded.append(prefix + task_ids[:task_keep] + middle + patch_ids[:patch_keep] + suffix)
    return encoded


def final_marker(tokenizer: Any) -> list[int]:
    """The tokens every encoded candidate ends with (the template after the patch)."""
    return _frame(tokenizer)[2]


def _frame(tokenizer: Any) -> tuple[list[int], list[int], list[int]]:
    """The template's tokens before the task, between task and patch, and after the patch."""
    text = render_from("sera.reranker", "reranker", task=_TASK, patch=_PATCH)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    prefix, _, rest = text.partition(_TASK)
    middle, _, suffix = rest.partition(_PATCH)
    return _ids(tokenizer, prefix), _ids(tokenizer, middle), _ids(tokenizer, suffix)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _ids_of_each(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [row if text else [] for row, text in zip(ids, texts)]


# --- the model ----------------------------------------------------------------------------------

def load_reward_base(folder: Path, tokenizer: Any, *, dtype: Any = None) -> Any:
    """The base model of `folder` as a one-label sequence classifier, its pad id set apart from
    the final marker (so the last-token pooling finds the marker), its head in float32; the
    rest in `dtype` (a torch dtype; None = float32)."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new `score` head is always reported as missing
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), num_labels=1, dtype=dtype or torch.float32)
    except Exception as error:  # transformers raises many kinds; all mean "not loadable here"
        raise ModelError(f"cannot load {folder} as the reranker's base: "
                         f"{' '.join(str(error).split())[:300]}; it must be a causal LM folder of "
                         f"an architecture transformers can load for sequence classification "
                         f"(Qwen2, Llama, Mistral, ...)") from error
    finally:
        hf_logging.set_verbosity(verbosity)
    if not isinstance(getattr(model, "score", None), torch.nn.Linear):
        raise ModelError(f"{folder} loads as {type(model).__name__}, which has no linear `score` "
                         f"head; use a Llama-style base (Qwen, Llama, Mistral) for the reranker")
    pad = _pad_id(tokenizer, model.config.pad_token_id)
    model.config.pad_token_id = pad
    model.config.get_text_config().pad_token_id = pad
    model.score.float()
    # bf16 hidden states meet a float32 head: cast them up. The hook travels with peft's copy.
    model.score.register_forward_pre_hook(lambda module, args: (args[0].float(), *args[1:]))
    return model.eval()


def _pad_id(tokenizer: Any, config_pad: int | None = None) -> int:
    """Any id but the marker's last token: the pooling takes the rightmost non-pad token."""
    last = final_marker(tokenizer)[-1]
    choices = (tokenizer.pad_token_id, config_pad, tokenizer.eos_token_id, 0, 1)
    return next(v for v in choices if isinstance(v, int) and v != last)


class LoraReranker:
    """A base model + LoRA reward model that scores candidate patches (the `Reranker` protocol).

    `load(folder)` reads a trained reranker folder; training builds one around its in-memory model
    (`LoraReranker(model, tokenizer, ...)`) to measure pair accuracy with the same code.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_tokens: int,
                 card: dict[str, Any] | None = None, name: str = "",
                 batch_tokens: int = SCORE_BATCH_TOKENS) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.card = card or {}
        self.name = name
        self.batch_tokens = batch_tokens
        self._shared: _SharedBase | None = None  # set by `sharing`: no model of its own

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def pad_id(self) -> int:
        """The id candidates are right-padded with (never the final marker's last token)."""
        if self._shared is not None:
            return self._shared.pad_id
        return int(self._model.config.pad_token_id)

    @property
    def shares_base(self) -> bool:
        """Whether it scores on the agent's own model (`sharing`) rather than a copy of its own."""
        return self._shared is not None

    @property
    def threshold(self) -> float | None:
        value = self.card.get("threshold")
        return None if value is None else float(value)

    @classmethod
    def load(cls, folder: Path, *, device: str = "auto", max_tokens: int | None = None,
             merge: bool | None = None, precision: str | None = None) -> "LoraReranker":
        """The reranker in `folder`, its base in `precision`; None = the dtype it was trained in
        (its card's; auto for cards older than that: bf16 where the device computes in it
        natively), so that it scores as when its threshold was calibrated. max_tokens None = as
        trained.

        merge None = merge the LoRA into float32 base weights (on CPU unmerged LoRA layers cost
        about a quarter more time per candidate; the scores move by ~1e-6), keep it apart from
        bfloat16 ones (merging would round the small LoRA update into bf16 weights).
        """
        import torch

        folder = Path(folder)
        card = read_card(folder)
        target = pick_device(device, "the reranker")
        dtype = torch_dtype(precision or precision_of(card.get("training", {}).get("dtype")),
                            target)
        base = _base_folder(card)
        tokenizer = load_tokenizer(base)
        model = _with_adapter(load_reward_base(base, tokenizer, dtype=dtype), folder)
        if merge is None:
            merge = dtype == torch.float32
        if merge:
            model = model.merge_and_unload()  # the trained `score` copy becomes the head
        limit = max_tokens or int(card.get("config", {}).get("max_tokens", 1024))
        return cls(model.to(target).eval(), tokenizer, max_tokens=limit, card=card,
                   name=folder.name)

    @classmethod
    def sharing(cls, chat_model: Any, folder: Path, *,
                max_tokens: int | None = None) -> "LoraReranker":
        """The reranker in `folder` on the agent's own transformers model (one base in memory
        serves both): its LoRA layers become one more adapter of `chat_model`, switched per call
        like the agent's, and its `score` head is applied here to the decoder's hidden state at
        the last token. `chat_model` must be the base the reranker was trained on."""
        folder = Path(folder)
        card = read_card(folder)
        limit = max_tokens or int(card.get("config", {}).get("max_tokens", 1024))
        reranker = cls(None, chat_model.tokenizer, max_tokens=limit, card=card, name=folder.name)
        reranker._shared = _SharedBase(chat_model, folder, _read_head(folder))
        return reranker

    def score(self, task: str, patches: Sequence[str]) -> list[float]:
        """One score per patch, in order; batched by length, in inference mode."""
        import torch
        if self._model is None and self._shared is None:
            raise ModelError(f"reranker {self.name} was closed; load it again")
        encoded = encode_candidates(self._tokenizer, task, patches, self.max_tokens)
        scores: list[float] = [0.0] * len(encoded)
        pad = self.pad_id
        device = self._shared.device if self._shared else next(self._model.parameters()).device
        with torch.inference_mode():
            for batch in length_batches(encoded, self.batch_tokens):
                input_ids, mask = collate([encoded[i] for i in batch], pad, device)
                values = (self._shared.scores(input_ids, mask) if self._shared else
                          self._model(input_ids=input_ids, attention_mask=mask).logits[:, 0])
                for index, value in zip(batch, values.float().tolist()):
                    scores[index] = value
        return scores

    def close(self) -> None:
        if self._shared is not None:  # the agent's model is the agent's to close
            self._shared = self._tokenizer = None
            return
        if self._model is None:
            return
        cuda = next(self._model.parameters()).device.type == "cuda"
        self._model = self._tokenizer = None
        gc.collect()
        if cuda:
            import torch
            torch.cuda.empty_cache()


class _SharedBase:
    """The reranker's scoring on a chat model's decoder: the hidden state at each candidate's
    last token (right padding: the last position of the mask) times the trained head."""

    def __init__(self, chat_model: Any, folder: Path, head: Any) -> None:
        self.chat_model, self.folder = chat_model, str(folder)
        chat_model.load_adapter(self.folder)  # fails here, not while scoring, when it does not fit
        self.head = head.to(chat_model.device)
        self.pad_id = _pad_id(chat_model.tokenizer)

    @property
    def device(self) -> Any:
        return self.chat_model.device

    def scores(self, input_ids: Any, mask: Any) -> Any:
        import torch
        hidden = self.chat_model.hidden_states(input_ids, mask, adapter=self.folder)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), mask.sum(dim=1) - 1]
        return last.float() @ self.head


def _read_head(folder: Path) -> Any:
    """The trained `score` head of a reranker folder as a float32 vector [hidden]."""
    from safetensors.torch import load_file
    weights = load_file(str(Path(folder) / "adapter_model.safetensors"))
    heads = [v for k, v in weights.items() if k.endswith("score.weight")]
    if len(heads) != 1 or heads[0].shape[0] != 1:
        raise ModelError(f"{folder} holds no one-output `score` head; it must be a reranker that "
                         f"`sera specialize` trained")
    return heads[0][0].float()


def _with_adapter(model: Any, folder: Path) -> Any:
    from peft import PeftModel
    try:
        return PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except Exception as error:  # peft raises many kinds; all mean "not a reranker for this base"
        raise ModelError(f"cannot load the reranker in {folder}: "
                         f"{' '.join(str(error).split())[:300]}; it must be a folder that "
                         f"`sera specialize` trained for the base model named in its card.json"
                         ) from error


def _base_folder(card: dict[str, Any]) -> Path:
    """The base model's transformers folder: as trained when it is still there, else the spec's."""
    folder = Path(card.get("base_folder", ""))
    if card.get("base_folder") and (folder / "config.json").is_file():
        return folder
    if not card.get("base"):
        raise SeraError("the reranker's card.json names no base model; train it again with "
                        "`sera specialize .`")
    return transformers_folder(card["base"], purpose="reranker's base model")


def collate(sequences: Sequence[list[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    """Right-padded input ids and attention mask."""
    import torch
    width = max(len(s) for s in sequences)
    ids = [s + [pad_id] * (width - len(s)) for s in sequences]
    mask = [[1] * len(s) + [0] * (width - len(s)) for s in sequences]
    return (torch.tensor(ids, device=device), torch.tensor(mask, device=device))


def length_batches(encoded: list[list[int]], batch_tokens: int) -> list[list[int]]:
    """Indices of `encoded`, longest first, grouped so that each batch's padded size fits."""
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    batches: list[list[int]] = []
    for index in order:
        # Longest first: the batch's width is its first member's length.
        if batches and len(encoded[batches[-1][0]]) * (len(batches[-1]) + 1) <= batch_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


# --- reranker folders ---------------------------------------------------------------------------

def read_card(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    if not (folder / "card.json").is_file() or not (folder / "adapter_config.json").is_file():
        raise SeraError(f"{folder} is not a reranker folder (it needs card.json and "
                        f"adapter_config.json); `sera specialize .` trains one")
    try:
        return json.loads((folder / "card.json").read_text("utf-8"))
    except ValueError as error:
        raise SeraError(f"{folder / 'card.json'} is not valid JSON ({error}); train the reranker "
                        f"again with `sera specialize .`") from None


def update_reranker_card(folder: Path, **fields: Any) -> dict[str, Any]:
    """Add or replace top-level fields of a reranker's card.json (threshold, metrics, ...)."""
    card = read_card(folder)
    card.update(fields)
    atomic_write_json(Path(folder) / "card.json", card)
    return card


def list_rerankers(repo_root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, card) of every reranker of the repository, newest first (card time, then mtime)."""
    return card_folders(rerankers_dir(repo_root))


def newest_reranker(repo_root: Path, base_spec: str) -> Path | None:
    """The newest reranker trained on `base_spec` (a reranker fits only the base it was trained
    on)."""
    return resolve_reranker(repo_root, "", base_spec)


def resolve_reranker(repo_root: Path, name: str, base_spec: str) -> Path | None:
    """'' -> the newest reranker for `base_spec` (None if there is none); 'none' -> None;
    a name in .sera/reranker/ or a folder -> that reranker."""
    return resolve_card_folder(rerankers_dir(repo_root), name, kind="reranker",
                               fits=lambda card: card.get("base") == base_spec,
                               accepts=lambda folder: (folder / "card.json").is_file(),
                               none_means="turns scoring off")


def open_reranker(folder: Path, settings: "Settings", agent_model: Any = None) -> LoraReranker:
    """The reranker in `folder` (as `resolve_reranker` found it), on `agent_model` when it can
    share that model's base."""
    if can_share(agent_model, read_card(folder)):
        return LoraReranker.sharing(agent_model, folder, max_tokens=settings.rerank.max_tokens)
    return LoraReranker.load(folder, max_tokens=settings.rerank.max_tokens)


def can_share(agent_model: Any, card: dict[str, Any]) -> bool:
    """Whether `agent_model` is the reranker's base, in-process with its decoder at hand (the
    transformers backend; llama.cpp and servers give no hidden states to put the head on)."""
    return (agent_model is not None and hasattr(agent_model, "hidden_states")
            and getattr(agent_model, "spec", None) == card.get("base"))
