"""In-process chat with Hugging Face transformers (CPU float32), peft LoRA adapters per request.

`transformers:<arg>` where arg is a local model folder, a hub id (works where a hub is reachable, or
when the model is already in the local Hugging Face cache), or a `.gguf` file. transformers
dequantizes a GGUF to float32; the result is cached as safetensors under
`user_cache_dir()/dequantized/<name>-<hash of size and mtime>/`, so only the first load is slow
(`dequantize_gguf`, also used by training to get a trainable copy of the embedded model).

torch, transformers and peft are imported inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.base import Completion, Message
from sera.paths import user_cache_dir

if TYPE_CHECKING:
    import torch

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# Files a chat model needs from a hub repository (not every weight format or GGUF it also holds).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
# Encoded by AutoTokenizer and by tokenizer.json to see whether they agree (see load_tokenizer).
_TOKENIZER_PROBE = "def f(x):\n    return x  # 12345 héllo wörld\n\n\n    \t'll WE'RE <|im_end|>"


def load(arg: str, config: ModelConfig) -> "TransformersChatModel":
    """The registry's entry point: `transformers:<folder | hub-id | file.gguf>`."""
    folder = resolve_model_folder(arg)
    tokenizer = load_tokenizer(folder)
    model = load_causal_lm(folder)
    import torch
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if config.seed >= 0:
        # Seeded once, not per call: a run is reproducible, yet candidates sampled one after
        # another for the same prompt still differ.
        torch.manual_seed(config.seed)
    return TransformersChatModel(f"transformers:{arg}", model, tokenizer, config)


class TransformersChatModel:
    """A causal LM and its tokenizer; LoRA adapters are loaded once each and switched per call."""

    def __init__(self, spec: str, model: Any, tokenizer: Any, config: ModelConfig) -> None:
        self.spec = spec
        self._model = model
        self._tokenizer = tokenizer
        self._config = config
        self._peft: Any = None  # the PeftModel wrapping self._model, once an adapter is used
        self._adapter_names: dict[str, str] = {}  # adapter folder + weights mtime -> peft name
        self._lock = threading.Lock()  # adapters are switched on the shared model: one call at a time
        self._stop_tokens = _terminator_ids(model, tokenizer)

    @property
    def concurrent(self) -> bool:
        return False

    def complete(self, messages: Sequence[Message], *, n: int = 1, adapter: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 1024,
                 stop: Sequence[str] | None = None,
                 cancel: threading.Event | None = None,
                 seed: int | None = None) -> list[Completion]:
        if self._model is None:
            raise ModelError(f"model {self.spec} was closed; load it again")
        stops = [s for s in (stop or []) if s]
        with self._lock:
            prompt_ids = self._encode(messages)
            budget = self._token_budget(prompt_ids.shape[1], max_tokens)
            start = time.perf_counter()
            if seed is not None:
                import torch
                torch.manual_seed(seed)  # under the lock: no other reply draws from it meanwhile
            with self._adapter_selected(adapter) as model:
                rows = self._generate(model, prompt_ids, n, temperature, budget, stops, cancel)
            seconds = time.perf_counter() - start
        return [self._completion(row, prompt_ids.shape[1], budget, stops, seconds) for row in rows]

    def close(self) -> None:
        self._model = self._peft = self._tokenizer = None
        self._adapter_names.clear()
        gc.collect()

    # --- the decoder, for a reward head on the same base (reranker/model.py) -------------------

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def device(self) -> Any:
        return next(self._model.parameters()).device

    def load_adapter(self, adapter: str) -> None:
        """Load `adapter` now (it is loaded on first use otherwise): a bad one fails here."""
        with self._lock:
            self._adapter_name(adapter)

    def hidden_states(self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor",
                      adapter: str | None = None) -> "torch.Tensor":
        """The decoder's last hidden states (after its final norm: what the LM head, or a reward
        head, reads), [batch, tokens, hidden], with `adapter` active. A reward adapter (peft task
        SEQ_CLS) adds its LoRA layers only: its head is the caller's to apply."""
        import torch
        if self._model is None:
            raise ModelError(f"model {self.spec} was closed; load it again")
        # inference_mode(False): an adapter loaded on first use must be made of normal tensors,
        # or peft cannot switch it later, even when the caller runs in inference mode
        with self._lock, torch.inference_mode(False), self._adapter_selected(adapter), \
                torch.inference_mode():
            decoder = getattr(self._model, self._model.base_model_prefix)
            return decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # --- prompt and generation ---------------------------------------------------------------

    def _encode(self, messages: Sequence[Message]) -> "torch.Tensor":
        if not getattr(self._tokenizer, "chat_template", None):
            raise ModelError(f"{self.spec} has no chat template; use an instruct/chat model "
                             f"(its tokenizer_config.json or chat_template.jinja carries one)")
        # tokenize=False gives the text; encoding it ourselves avoids the dict that
        # apply_chat_template(tokenize=True) returns in transformers 5.
        text = self._tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages], tokenize=False,
                                                   add_generation_prompt=True)
        return self._tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def _token_budget(self, prompt_tokens: int, max_tokens: int) -> int:
        room = self._config.context_tokens - prompt_tokens
        if room < 1:
            raise ModelError(f"the prompt has {prompt_tokens} tokens, which fills the context window "
                             f"of {self._config.context_tokens}; shorten the conversation or raise "
                             f"model.context_tokens")
        return max(1, min(max_tokens, room))

    def _generate(self, model: Any, prompt_ids: "torch.Tensor", n: int, temperature: float,
                  budget: int, stops: list[str],
                  cancel: threading.Event | None = None) -> list[list[int]]:
        """Generated token ids per sample (prompt removed)."""
        import torch
        from transformers import StoppingCriteriaList

        sampling = temperature > 0
        copies = n if sampling else 1  # greedy samples are all the same: compute one
        settings = self._generation_config(sampling, temperature, budget, copies)
        criteria = StoppingCriteriaList()
        if stops:
            criteria.append(_StopStrings(self._tokenizer, stops, prompt_ids.shape[1]))
        if cancel is not None:
            criteria.append(_WhenCancelled(cancel))
        with torch.inference_mode():
            output = model.generate(input_ids=prompt_ids,
                                    attention_mask=torch.ones_like(prompt_ids),
                                    generation_config=settings,
                                    stopping_criteria=criteria)
        rows = [row.tolist() for row in output[:, prompt_ids.shape[1]:]]
        return rows if sampling else rows * n

    def _generation_config(self, sampling: bool, temperature: float, budget: int,
                           copies: int) -> Any:
        import copy
        settings = copy.deepcopy(self._model.generation_config)
        settings.num_return_sequences = copies
        settings.max_new_tokens = budget
        settings.max_length = None
        settings.do_sample = sampling
        settings.pad_token_id = _pad_id(self._model, self._tokenizer)
        settings.eos_token_id = sorted(self._stop_tokens)
        if sampling:
            settings.temperature = temperature
        else:  # the model's sampling defaults would only draw warnings in greedy mode
            settings.temperature = settings.top_p = settings.top_k = None
        return settings

    def _completion(self, row: list[int], prompt_tokens: int, budget: int, stops: list[str],
                    seconds: float) -> Completion:
        end = next((i for i, t in enumerate(row) if t in self._stop_tokens), None)
        tokens = row if end is None else row[:end]
        text = self._tokenizer.decode(tokens, skip_special_tokens=True)
        cut = _first_stop(text, stops)
        if cut is not None:
            text, reason = text[:cut], "stop"
        elif end is not None:
            reason = "stop"
        else:
            reason = "length" if len(row) >= budget else "stop"
        used = len(row) if end is None else end + 1  # the end token was generated too
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=used,
                          seconds=seconds, finish_reason=reason)

    # --- adapters ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _adapter_selected(self, adapter: str | None):
        """Yield the model to generate with: the base (adapters disabled) or one adapter."""
        if adapter is None:
            if self._peft is None:
                yield self._model
            else:
                with self._peft.disable_adapter():
                    yield self._model
            return
        name = self._adapter_name(adapter)
        self._peft.set_adapter(name, inference_mode=True)  # frozen, no dropout
        yield self._peft

    def _adapter_name(self, adapter: str) -> str:
        folder = Path(adapter).expanduser().resolve()
        if not (folder / "adapter_config.json").is_file():
            raise ModelError(f"adapter {adapter!r} not found: pass the folder that holds "
                             f"adapter_config.json (a peft LoRA adapter, e.g. .sera/adapters/<name>)")
        # The weights' mtime is part of the key so an adapter retrained in place is reloaded.
        weights = [p.stat().st_mtime_ns for p in folder.glob("adapter_model.*")]
        key = f"{folder}:{max(weights, default=0)}"
        if key not in self._adapter_names:
            name = "sera_" + hashlib.sha1(key.encode()).hexdigest()[:12]
            self._load_adapter(folder, name)
            self._adapter_names[key] = name
        return self._adapter_names[key]

    def _load_adapter(self, folder: Path, name: str) -> None:
        try:
            if _adapter_task(folder) == "SEQ_CLS":
                self._load_lora_layers(folder, name)
            elif self._peft is None:
                from peft import PeftModel
                self._peft = PeftModel.from_pretrained(self._model, str(folder), adapter_name=name)
                self._peft.eval()
            else:
                self._peft.load_adapter(str(folder), adapter_name=name)
        except Exception as error:  # peft raises many kinds; all mean "not an adapter for this model"
            raise ModelError(f"cannot load adapter {folder}: {_one_line(error)}; it must be a peft "
                             f"LoRA adapter trained on the base model {self.spec}") from error

    def _load_lora_layers(self, folder: Path, name: str) -> None:
        """A reward adapter's LoRA layers as adapter `name` of this causal LM: its config as a
        causal LM adapter without modules_to_save (the `score` head, which this model lacks);
        the LoRA weights' names are the same in both tasks (the decoder is `model.model`)."""
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load_file
        config = json.loads((folder / "adapter_config.json").read_text("utf-8"))
        config.update(task_type="CAUSAL_LM", modules_to_save=None)
        lora = LoraConfig.from_peft_type(**config)
        if self._peft is None:
            self._peft = get_peft_model(self._model, lora, adapter_name=name)
        else:
            self._peft.add_adapter(name, lora)
        weights = {k: v for k, v in load_file(str(folder / "adapter_model.safetensors")).items()
                   if ".lora_" in k}
        result = set_peft_model_state_dict(self._peft, weights, adapter_name=name)
        missing = [k for k in result.missing_keys if f".{name}." in k]
        if missing or result.unexpected_keys:
            raise ModelError(f"the LoRA weights of {folder} do not fit {self.spec}: missing "
                             f"{missing[:3]}, unexpected {list(result.unexpected_keys)[:3]}")
        self._peft.eval()


def _adapter_task(folder: Path) -> str | None:
    try:
        return json.loads((folder / "adapter_config.json").read_text("utf-8")).get("task_type")
    except (OSError, ValueError):
        return None


class _StopStrings:
    """Stop a sample as soon as its recent text contains a stop string (per row of the batch)."""

    def __init__(self, tokenizer: Any, stops: list[str], prompt_tokens: int) -> None:
        self._tokenizer = tokenizer
        self._stops = stops
        self._prompt_tokens = prompt_tokens
        # A stop string of k characters spans at most 4k byte-level tokens; the rest is margin.
        self._window = 4 * max(len(s) for s in stops) + 8

    def __call__(self, input_ids: "torch.Tensor", scores: Any, **kwargs: Any) -> "torch.Tensor":
        import torch
        start = max(self._prompt_tokens, input_ids.shape[1] - self._window)
        tails = self._tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        return torch.tensor([_first_stop(t, self._stops) is not None for t in tails],
                            dtype=torch.bool, device=input_ids.device)


class _WhenCancelled:
    """Stop every sample at the next token once `cancel` is set."""

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel

    def __call__(self, input_ids: "torch.Tensor", scores: Any, **kwargs: Any) -> "torch.Tensor":
        import torch
        return torch.full((input_ids.shape[0],), self._cancel.is_set(), dtype=torch.bool,
                          device=input_ids.device)


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _terminator_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a reply: the model's eos ids, the tokenizer's eos, and the pad id."""
    ids: set[int] = set()
    for value in (model.generation_config.eos_token_id, model.config.eos_token_id,
                  tokenizer.eos_token_id, _pad_id(model, tokenizer)):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids


def _pad_id(model: Any, tokenizer: Any) -> int | None:
    for value in (model.generation_config.pad_token_id, tokenizer.pad_token_id,
                  tokenizer.eos_token_id):
        if isinstance(value, int):
            return value
    return None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# --- finding and loading the model ------------------------------------------------------------

def resolve_model_folder(arg: str) -> Path:
    """The local folder to load for `arg`: the folder itself, a hub snapshot, or a GGUF's cache."""
    if not arg.strip():
        raise ModelError("the transformers backend needs a model: --model transformers:/path/to/model "
                         "(a folder with config.json), a hub id, or a .gguf file")
    path = Path(arg).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json; pass the folder that holds the model's "
                             f"config.json, tokenizer and weights")
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path} is a file but not a .gguf; pass a model folder or a .gguf file")
        return dequantize_gguf(path)
    if arg.lower().endswith(".gguf") or not _HUB_ID.match(arg) or arg.startswith("."):
        raise ModelError(f"model {arg!r} not found: no such file or folder; check the path "
                         f"(--model transformers:/path/to/model)")
    return _hub_snapshot(arg)


def _hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a hub model: from the cache, else downloaded where a hub is reachable."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except Exception:
        pass  # not cached: try the hub below
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        why = "HF_HUB_OFFLINE is set"
    else:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
        except Exception as error:
            why = _one_line(error)
    raise ModelError(f"model id {repo_id!r} could not be found locally (not a folder, not in the "
                     f"Hugging Face cache) and could not be downloaded ({why}); pass a local model "
                     f"folder or .gguf file instead: --model transformers:/path/to/model")


def dequantize_gguf(gguf_path: Path) -> Path:
    """A float32 safetensors copy of a GGUF model, made once and cached in the user cache."""
    gguf_path = Path(gguf_path).expanduser().resolve()
    stat = gguf_path.stat()
    digest = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = user_cache_dir() / "dequantized" / f"{gguf_path.stem}-{digest}"
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_dequantized(gguf_path, tmp)
        (tmp / ".complete").write_text("ok\n")
        if target.exists() and not (target / ".complete").is_file():
            shutil.rmtree(target)  # not ours to keep: copies only ever appear complete
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first; its copy is as good
            if not (target / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_dequantized(gguf_path: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = str(gguf_path.parent), gguf_path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    except Exception as error:
        raise ModelError(f"transformers cannot read {gguf_path}: {_one_line(error)}; use a GGUF of "
                         f"an architecture transformers supports, or run it with "
                         f"--model llamacpp:{gguf_path}") from error
    # Rebuilt from a GGUF the config has no `architectures` and carries the GGUF quantization
    # config; as saved, the copy must look like a plain float32 model (peft, training, reload).
    model.config.architectures = [type(model).__name__]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer as tokenizer.json defines it.

    Trap: for some model types (qwen2 among them) AutoTokenizer rebuilds the tokenizer from the
    vocabulary with that model type's own pre-tokenizer, which differs from a custom one in
    tokenizer.json. When the two encode a probe differently, tokenizer.json wins.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:
        raise ModelError(f"cannot load the tokenizer in {folder}: {_one_line(error)}; the folder "
                         f"needs tokenizer.json or the model's tokenizer files") from error
    if (folder / "tokenizer.json").is_file():
        exact = PreTrainedTokenizerFast.from_pretrained(str(folder))
        probe = _TOKENIZER_PROBE
        if tokenizer(probe, add_special_tokens=False)["input_ids"] != \
                exact(probe, add_special_tokens=False)["input_ids"]:
            return exact
    return tokenizer


def load_causal_lm(folder: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    except Exception as error:
        raise ModelError(f"cannot load the model in {folder}: {_one_line(error)}; it must be a "
                         f"causal language model folder (config.json + safetensors)") from error
    return model.eval()
