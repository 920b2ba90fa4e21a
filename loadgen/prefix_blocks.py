"""Prompts built block by block, so that prompts sharing leading block ids share exactly those tokens.

A Mooncake trace row names the blocks of its prompt (`hash_ids`, one per `block_tokens` tokens,
the last one partial); two rows with the same leading ids had the same leading tokens. Here each
block id gets its own fixed sequence of token ids, and a prompt is its blocks' sequences one after
the other, so the engine's prefix cache sees the reuse the trace recorded.

Token-exact, not merely text-equal: decoding ids and encoding the text again can merge tokens
across a boundary (BPE), which would move every later block. So the prompts are made of *words*:
vocabulary entries that decode to one space and letters (" house") and encode back to exactly
themselves. A byte-level BPE tokenizer (GPT-2, Llama 3, Qwen, the lab's tiny model) splits text
before every space, so a run of such words encodes to exactly their ids, whatever the neighbours.
Each prompt is encoded once more and compared id for id (:meth:`BlockPrompts.item`): a tokenizer
that breaks the rule is refused with a :class:`~loadgen.workload.WorkloadError`, never used inexactly.

Lengths count what the server counts: the tokenizer's specials (BOS) included, as everywhere in
the lab. The first block of a prompt therefore holds `block_tokens` minus the specials in words,
every later block `block_tokens`, the last one the rest: prompts that share k leading block ids
share exactly their first k x block_tokens token ids (BOS included).

Pure given the tokenizer; seeded by `seed` (the same id gives the same words in every prompt).
Side effects: none.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from loadgen.workload import TokenCounter, WorkloadError, WorkloadItem

POOL_SIZE = 4096  # words kept (more than enough: two blocks start alike with probability 1/POOL_SIZE)
MIN_POOL = 64


class BlockPrompts:
    """Builds block prompts for one tokenizer, block size and seed (module doc)."""

    def __init__(self, tok: TokenCounter, block_tokens: int, seed: int, pool_size: int = POOL_SIZE) -> None:
        if block_tokens < 1:
            raise WorkloadError(f"traffic.trace_block_tokens must be >= 1, got {block_tokens}")
        self.tok, self.block, self.seed = tok, int(block_tokens), seed
        self.specials = list(tok.encode(""))
        self.lead = self._lead()
        self.words: list[int] = []
        self.text: dict[int, str] = {}
        order = list(tok.vocab_ids)
        random.Random(f"{seed}:words").shuffle(order)
        for i in order:
            t = tok.decode([i])
            if len(t) >= 3 and t[0] == " " and t[1:].isascii() and t[1:].isalpha() and self._plain(t) == [i]:
                self.words.append(i)
                self.text[i] = t
                if len(self.words) >= pool_size:
                    break
        if len(self.words) < MIN_POOL:
            raise WorkloadError(
                f"the tokenizer has only {len(self.words)} single-token words (' ' + letters), too few to build "
                "block prompts whose shared blocks stay token-exact; a Mooncake trace needs a byte-level BPE tokenizer"
            )
        self._cache: dict[int, list[int]] = {}

    def _lead(self) -> int:
        """How many of the specials come before the text (BOS) rather than after it (EOS)."""
        probe = self.tok.encode("a")
        for k in range(len(self.specials) + 1):
            if probe[:k] == self.specials[:k] and probe[len(probe) - (len(self.specials) - k):] == self.specials[k:] \
                    and len(probe) > len(self.specials):  # fmt: skip
                return k
        return len(self.specials)

    def _plain(self, text: str) -> list[int]:
        """`text`'s ids without the specials."""
        ids = self.tok.encode(text)
        return ids[self.lead : len(ids) - (len(self.specials) - self.lead)]

    def block_ids(self, hash_id: int) -> list[int]:
        """The `block_tokens` word ids of block `hash_id` (the same in every prompt)."""
        ids = self._cache.get(hash_id)
        if ids is None:
            ids = random.Random(f"{self.seed}:block:{hash_id}").choices(self.words, k=self.block)
            self._cache[hash_id] = ids
        return ids

    def layout(self, n_blocks: int, n_tokens: int) -> list[int]:
        """Words taken from each of `n_blocks` blocks for a prompt of `n_tokens` tokens (specials included)."""
        overhead = len(self.specials)
        words = max(n_tokens - overhead, 1)  # an empty prompt is not sent: one word at least
        out = []
        for k in range(n_blocks):
            cap = self.block - overhead if k == 0 else self.block
            take = max(min(cap, words), 0) if k < n_blocks - 1 else words
            out.append(take)
            words -= take
        return out

    def ids(self, hash_ids: Sequence[int], n_tokens: int) -> list[int]:
        """The prompt's word ids (specials not included)."""
        out: list[int] = []
        for h, take in zip(hash_ids, self.layout(len(hash_ids), n_tokens), strict=True):
            out += self.block_ids(h)[:take]
        return out

    def item(self, idx: int, hash_ids: Sequence[int], n_tokens: int, max_tokens: int) -> WorkloadItem:
        """Workload item `idx`: the prompt of `hash_ids` with `n_tokens` tokens, checked id for id."""
        if not hash_ids:
            raise WorkloadError(f"item {idx}: a block prompt needs at least one block id")
        ids = self.ids(hash_ids, n_tokens)
        if len(ids) != max(n_tokens - len(self.specials), 1):
            raise WorkloadError(f"item {idx}: {len(hash_ids)} block(s) of {self.block} tokens cannot hold {n_tokens} tokens")
        text = "".join(self.text[i] for i in ids)
        enc = self.tok.encode(text)
        want = self.specials[: self.lead] + ids + self.specials[self.lead :]
        if enc != want:
            at = next((k for k, (a, b) in enumerate(zip(enc, want, strict=False)) if a != b), min(len(enc), len(want)))
            raise WorkloadError(
                f"item {idx}: the block prompt does not encode back to its own tokens (first difference at token "
                f"{at} of {len(want)}): this tokenizer merges across words; block prompts need a byte-level BPE tokenizer"
            )
        return WorkloadItem(prompt_idx=idx, prompt=text, prompt_tokens_client=len(enc), max_tokens=max_tokens)
