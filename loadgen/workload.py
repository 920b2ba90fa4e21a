"""What is sent: workload items (prompts with their token counts), generated deterministically.

Pure: takes a tokenizer object (anything with ``encode(text) -> list[int]`` counting the tokens
the server will see, and ``decode(ids) -> str``) and a seed; returns plain dicts. Prompts are
built and counted *before* the load starts, so no tokenizer runs in the load generator's hot path.

Side effects: none.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class TokenCounter(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    @property
    def vocab_ids(self) -> Sequence[int]: ...


@dataclass(frozen=True)
class WorkloadItem:
    prompt_idx: int
    prompt: str
    prompt_tokens_client: int  # what `encode(prompt)` counts, specials (BOS) included
    max_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_idx": self.prompt_idx,
            "prompt": self.prompt,
            "prompt_tokens_client": self.prompt_tokens_client,
            "max_tokens": self.max_tokens,
        }


def fixed_length_prompt(tok: TokenCounter, n_tokens: int, rng: random.Random, max_iter: int = 50) -> tuple[str, int]:
    """A prompt of random vocabulary whose encoded length is `n_tokens` (or the closest reached).

    Decoding random ids and encoding the text again can merge or split tokens, so the id list
    is grown or cut until the round trip gives exactly `n_tokens`. Returns (text, count).
    """
    if n_tokens < 1:
        raise ValueError(f"prompt length must be >= 1 token, got {n_tokens}")
    vocab = tok.vocab_ids
    overhead = len(tok.encode(""))  # special tokens the tokenizer adds (e.g. BOS)
    ids = [rng.choice(vocab) for _ in range(max(n_tokens - overhead, 0))]
    text = tok.decode(ids)
    count = len(tok.encode(text))
    best = (abs(count - n_tokens), text, count)
    for _ in range(max_iter):
        if count == n_tokens:
            return text, count
        if count > n_tokens and ids:
            ids = ids[: max(len(ids) - (count - n_tokens), 0)]
        else:
            ids = ids + [rng.choice(vocab) for _ in range(n_tokens - count)]
        text = tok.decode(ids)
        count = len(tok.encode(text))
        best = min(best, (abs(count - n_tokens), text, count), key=lambda b: b[0])
    return best[1], best[2]


def synthetic_items(tok: TokenCounter, prompt_tokens: int, output_tokens: int, num_prompts: int, seed: int) -> list[WorkloadItem]:
    """`num_prompts` distinct prompts of `prompt_tokens` tokens, each asking for `output_tokens`."""
    if output_tokens < 1:
        raise ValueError(f"workload.output_tokens must be >= 1, got {output_tokens}")
    if num_prompts < 1:
        raise ValueError(f"workload.num_prompts must be >= 1, got {num_prompts}")
    rng = random.Random(seed)
    items = []
    for i in range(num_prompts):
        text, count = fixed_length_prompt(tok, prompt_tokens, rng)
        items.append(WorkloadItem(prompt_idx=i, prompt=text, prompt_tokens_client=count, max_tokens=output_tokens))
    return items


def request_body(item: dict[str, Any], endpoint: str, model: str, temperature: float, extras: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI-compatible JSON body for one workload item (streaming, usage requested)."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": item["max_tokens"],
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": item["prompt"]}]
    elif endpoint == "completions":
        body["prompt"] = item["prompt"]
    else:
        raise ValueError(f"workload.endpoint must be 'completions' or 'chat', got {endpoint!r}")
    body.update(extras)
    return body


ENDPOINT_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
