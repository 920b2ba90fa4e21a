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
