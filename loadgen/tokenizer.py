"""Loads the model's tokenizer for counting prompt tokens before a load starts.

Uses the `tokenizers` library directly (no transformers, no torch in the lab's venv).
Side effects: reads tokenizer.json from disk, or from the hub cache/network for a hub id.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class HFTokenCounter:
    """`encode` counts what the server counts for a completions prompt (specials such as BOS included)."""

    def __init__(self, tokenizer) -> None:  # tokenizers.Tokenizer
        self._tok = tokenizer
        special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
        vocab = tokenizer.get_vocab()
        # Plain vocabulary only: special tokens inside a prompt would be parsed as control tokens.
        # Byte-level pieces that are not whole UTF-8 characters would decode to U+FFFD; skip them.
        self._vocab_ids = sorted(
            i for s, i in vocab.items() if s not in special and "\ufffd" not in tokenizer.decode([i])
        )

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=True).ids

    def count_text(self, text: str) -> int:
        """Tokens of generated text (no special tokens added), to compare with usage.completion_tokens."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    @property
    def vocab_ids(self) -> Sequence[int]:
        return self._vocab_ids


def load_token_counter(name_or_path: str) -> HFTokenCounter:
    """From a folder holding tokenizer.json, or a hub id (needs the hub or its cache)."""
    from tokenizers import Tokenizer

    p = Path(name_or_path).expanduser()
    if p.is_dir():
        f = p / "tokenizer.json"
        if not f.exists():
            raise FileNotFoundError(f"{p} has no tokenizer.json; set model.tokenizer to a folder or hub id that has one")
        return HFTokenCounter(Tokenizer.from_file(str(f)))
    return HFTokenCounter(Tokenizer.from_pretrained(name_or_path))


def annotate_client_counts(records: list[dict], counter: HFTokenCounter) -> None:
    """Fill the post-run annotations (loadgen.records.ANNOTATION_FIELDS: output_tokens_client and
    token_drift) in place; run after a load point, never in the hot path.

    token_drift is True when the server's prompt count differs from the client's, or its output
    count differs from the client's count of the streamed text.
    """
    for r in records:
        text = r.get("output_text")
        if text:
            r["output_tokens_client"] = counter.count_text(text)
        drift = False
        if r.get("prompt_tokens") is not None and r.get("prompt_tokens_client") is not None:
            drift |= r["prompt_tokens"] != r["prompt_tokens_client"]
        if r.get("output_tokens_source") == "usage" and r.get("output_tokens_client") is not None:
            drift |= r["output_tokens"] != r["output_tokens_client"]
        r["token_drift"] = drift if r.get("status") == "ok" else None
