"""Tiny offline models for tests: a Qwen2-shaped causal LM, its LoRA adapters and its GGUF.

Nothing here downloads. `build_tiny_model()` trains a byte-level BPE tokenizer on a built-in corpus
with Qwen2's own normalizer, splitting regex and decoder (so `AutoTokenizer`, which rebuilds a
qwen2 tokenizer from its vocabulary with Qwen2's pipeline, and `PreTrainedTokenizerFast`, which
reads tokenizer.json, load the same tokenizer), adds the Qwen special and tool tokens and the
Qwen2.5 ChatML chat template, and saves a randomly initialised 2-layer Qwen2 model next to it.
Everything is seeded: two builds give byte-identical weights and tokenizer.

    model_dir = build_tiny_model()                      # cached per process
    adapter = make_random_lora(model_dir, tmp / "lora")  # changes the model's answers
    gguf_file = build_tiny_gguf(model_dir)              # the same weights as an F32 GGUF
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path

# Qwen2's pre-tokenizer regex (transformers' models/qwen2/tokenization_qwen2.py, PRETOKENIZE_REGEX).
QWEN2_SPLIT_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                     r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Added but not special, as in Qwen2.5: decoding with skip_special_tokens keeps the tool tags.
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

# The Qwen2.5 (and Qwen2.5-Coder) Instruct chat template, verbatim.
QWEN25_CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# What the tokenizer learns from: the kind of text an agent reads and writes.
_CORPUS = r'''
def add(a: int, b: int) -> int:
    """Return the sum of a and b."""
    return a + b


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def increment(self, step: int = 1) -> int:
        self.value += step
        return self.value


def read_config(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                yield key.strip(), value.strip()


import os
import sys
from pathlib import Path

if __name__ == "__main__":
    print(add(1, 2))
    sys.exit(0)

def test_add():
    assert add(2, 3) == 5
    assert add(-1, 1) == 0

$ git status --short
 M src/app.py
$ python -m pytest tests -q
3 passed in 0.12s
$ ls -la src
$ grep -rn "def main" src/

diff --git a/src/app.py b/src/app.py
--- a/src/app.py
+++ b/src/app.py
@@ -1,4 +1,4 @@
-def greet(name):
-    return "Hello " + name
+def greet(name: str) -> str:
+    return f"Hello, {name}!"

<|im_start|>system
You are a helpful coding assistant. Use the tools to inspect and edit the repository.<|im_end|>
<|im_start|>user
Fix the failing test in tests/test_app.py and make sure all tests pass.<|im_end|>
<|im_start|>assistant
I will look at the test first.
<tool_call>
{"name": "bash", "arguments": {"command": "python -m pytest tests/test_app.py -q"}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
FAILED tests/test_app.py::test_greet - AssertionError: assert 'Hello bob' == 'Hello, bob!'
</tool_response><|im_end|>
<|im_start|>assistant
The function greet is missing a comma. Let me view the file.
<tool_call>
{"name": "str_replace_editor", "arguments": {"command": "view", "path": "src/app.py"}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
     1	def greet(name):
     2	    return "Hello " + name
</tool_response><|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "str_replace_editor", "arguments": {"command": "str_replace", "path": "src/app.py", "old_str": "return \"Hello \" + name", "new_str": "return f\"Hello, {name}!\""}}
</tool_call><|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "submit", "arguments": {}}
</tool_call><|im_end|>

import json
import subprocess
from dataclasses import dataclass, field


@dataclass
class Task:
    """One unit of work: a title, its status and the files it touches."""

    title: str
    done: bool = False
    files: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"title": self.title, "done": self.done, "files": self.files})


def run(command: list[str], timeout: float = 30.0) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"command timed out after {timeout} seconds") from None
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or "command failed")
    return result.stdout


def parse_numbers(text: str) -> list[float]:
    values = []
    for word in text.split():
        try:
            values.append(float(word))
        except ValueError:
            continue
    return values


async def fetch_all(urls, session):
    results = {}
    for url in urls:
        async with session.get(url) as response:
            results[url] = await response.text()
    return results


function sum(values) {
  let total = 0;
  for (const value of values) {
    total += value;
  }
  return total;
}

export default class Stack {
  constructor() { this.items = []; }
  push(item) { this.items.push(item); }
  pop() { return this.items.pop(); }
  get size() { return this.items.length; }
}

Traceback (most recent call last):
  File "src/app.py", line 12, in <module>
    main()
  File "src/app.py", line 8, in main
    value = int(sys.argv[1])
IndexError: list index out of range
TypeError: unsupported operand type(s) for +: 'int' and 'str'
KeyError: 'name'
ModuleNotFoundError: No module named 'requests'

User: How do I reverse a list in Python?
Assistant: Use slicing, items[::-1], or call items.reverse() to reverse it in place.
User: Why does my loop never end?
Assistant: The condition never becomes false; check that the counter is updated inside the loop.
User: Please rename the variable and update every usage.
Assistant: Done. I searched the repository for every reference and changed each one.

The quick brown fox jumps over the lazy dog. Tests pass now; the change is small and safe.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14 -7
Punctuation: ( ) [ ] { } < > = == != <= >= + - * / % ** // -> : ; , . " ' ` # @ ! ? & | ^ ~ \ _
'''


_lock = threading.Lock()
_built: dict[str, Path] = {}  # cache key -> finished folder, for this process
_temp_root: Path | None = None


def build_tiny_model(out_dir: Path | None = None) -> Path:
    """A tiny Qwen2 chat model folder (config, safetensors, tokenizer, chat template); seconds.

    With `out_dir`, builds there (or reuses a finished build there); without, in a temporary folder
    removed when the process exits. Either way the result is cached for the rest of the process.
    """
    with _lock:
        target = Path(out_dir) if out_dir is not None else _process_temp_dir() / "tiny-qwen2"
        key = str(target.resolve())
        if key in _built and _is_finished(target):
            return target
        if not _is_finished(target):
            _build_atomically(target, _write_tiny_model)
        _built[key] = target
        return target


def make_random_lora(model_dir: Path, out_dir: Path, r: int = 4, seed: int = 0) -> Path:
    """A peft LoRA adapter for `model_dir` whose lora_B is random (not zero), so it changes answers.

    Targets every linear layer of the attention and the MLP, like a real training run would.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                        "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts lora_B at zero, which would be a no-op adapter
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    out_dir = Path(out_dir)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def build_tiny_gguf(model_dir: Path | None = None, out_path: Path | None = None) -> Path:
    """The tiny model as an F32 GGUF file (llama.cpp's qwen2 layout, tokenizer and chat template).

    Default: `tiny-qwen2-f32.gguf` inside the model folder (from_pretrained ignores it there).
    Loadable by transformers (`gguf_file=`) and by llama.cpp.
    """
    model_dir = Path(model_dir) if model_dir is not None else build_tiny_model()
    out_path = Path(out_path) if out_path is not None else model_dir / "tiny-qwen2-f32.gguf"
    with _lock:
        if not out_path.is_file():
            tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
            try:
                _write_gguf(model_dir, tmp)
                os.replace(tmp, out_path)
            finally:
                tmp.unlink(missing_ok=True)
    return out_path


# --- building blocks -------------------------------------------------------------------------

def _process_temp_dir() -> Path:
    global _temp_root
    if _temp_root is None:
        _temp_root = Path(tempfile.mkdtemp(prefix="sera-tiny-model-"))
        atexit.register(shutil.rmtree, _temp_root, True)
    return _temp_root


def _is_finished(folder: Path) -> bool:
    return (folder / ".complete").is_file()


def _build_atomically(target: Path, write) -> None:
    """Build into a sibling temp folder, then rename: a crash never leaves a half-built model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        (tmp / ".complete").write_text("ok\n")
        if target.exists():  # an unfinished earlier attempt
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _train_tokenizer():
    """Byte-level BPE with Qwen2's normalizer, splitting regex and decoder; ~1k tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=1280, min_frequency=1, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([_CORPUS, QWEN25_CHAT_TEMPLATE], trainer=trainer)
    # Added after training so they sit at the end of the vocabulary, as in Qwen.
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    return tokenizer


def _write_tiny_model(folder: Path) -> None:
    import torch
    from transformers import (GenerationConfig, PreTrainedTokenizerFast, Qwen2Config,
                              Qwen2ForCausalLM)

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_train_tokenizer(),
                                        eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN25_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(folder))
    endoftext, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=True,
        # Larger than the usual 0.02 so logits are peaked: greedy answers do not hinge on
        # rounding, which keeps comparisons across engines (transformers, llama.cpp) stable.
        initializer_range=0.1,
        bos_token_id=endoftext, eos_token_id=im_end, pad_token_id=endoftext,
        architectures=["Qwen2ForCausalLM"])
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext)
    model.save_pretrained(str(folder))


def _write_gguf(model_dir: Path, path: Path) -> None:
    import gguf
    import json
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text())
    chat_template = json.loads((model_dir / "tokenizer_config.json").read_text()).get(
        "chat_template") or (model_dir / "chat_template.jinja").read_text()

    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("tiny-qwen2")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_gguf_tokenizer(writer, tokenizer_json, config, chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, config["num_hidden_layers"])
    for hf_name, array in sorted(load_file(str(model_dir / "model.safetensors")).items()):
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name}")
        writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _rope_theta(config: dict) -> float:
    # transformers 5 may store it under rope_parameters instead of at the top level
    if "rope_theta" in config:
        return float(config["rope_theta"])
    return float((config.get("rope_parameters") or {}).get("rope_theta", 1_000_000.0))


def _add_gguf_tokenizer(writer, tokenizer_json: dict, config: dict, chat_template: str) -> None:
    import gguf

    vocab: dict[str, int] = dict(tokenizer_json["model"]["vocab"])
    added = {t["content"]: t for t in tokenizer_json["added_tokens"]}
    vocab.update({content: t["id"] for content, t in added.items()})
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    types = [(gguf.TokenType.CONTROL if added[t]["special"] else gguf.TokenType.USER_DEFINED)
             if t in added else gguf.TokenType.NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template)
