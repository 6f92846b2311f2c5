"""A stand-in for the `vllm` package at the edge of sera's vLLM backend (tests only): the offline
API's shapes (LLM, SamplingParams, outputs), recording what sera asks of it. Each conversation is
answered with its last user message reversed, per sample; `LLM.entered` counts concurrent calls."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

engines: list["LLM"] = []


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    max_tokens: int = 16
    stop: list = field(default_factory=list)
    seed: int | None = None


@dataclass
class CompletionOutput:
    text: str
    token_ids: list
    finish_reason: str


@dataclass
class RequestOutput:
    prompt_token_ids: list
    outputs: list


class LLM:
    def __init__(self, model: str, **options):
        self.model, self.options = model, options
        self.calls: list[dict] = []
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()
        self.delay = 0.05
        engines.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None):
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.calls.append({"messages": messages, "sampling_params": sampling_params,
                               "lora_request": lora_request})
            time.sleep(self.delay)
            return [self._answer(conversation, params)
                    for conversation, params in zip(messages, sampling_params)]
        finally:
            with self.lock:
                self.inside -= 1

    @staticmethod
    def _answer(conversation, params) -> RequestOutput:
        last = conversation[-1]["content"]
        words = last.split()
        outputs = [CompletionOutput(f"{last[::-1]} #{i}", list(range(len(words) + 1)),
                                    "length" if len(words) >= params.max_tokens else "stop")
                   for i in range(params.n)]
        return RequestOutput(prompt_token_ids=list(range(sum(len(m["content"].split())
                                                             for m in conversation))),
                             outputs=outputs)
