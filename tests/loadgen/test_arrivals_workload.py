"""Arrival schedules and workload generation: deterministic, correct shape, clear errors."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from loadgen.arrivals import arrival_offsets, open_loop_schedule
from loadgen.openai_api import choice_text, request_body, sse_payload
from loadgen.workload import fixed_length_prompt, synthetic_items


def test_constant_is_evenly_spaced():
    assert arrival_offsets("constant", 4.0, 1.0, seed=0) == [0.0, 0.25, 0.5, 0.75]


def test_poisson_is_seeded_and_has_the_right_rate():
    a = arrival_offsets("poisson", 50.0, 200.0, seed=1)
    assert a == arrival_offsets("poisson", 50.0, 200.0, seed=1)
    assert a != arrival_offsets("poisson", 50.0, 200.0, seed=2)
    assert all(0 < x < 200.0 for x in a) and a == sorted(a)
    # 10,000 expected arrivals: the count is within 4 standard deviations (sqrt(10000) = 100).
    assert abs(len(a) - 10_000) < 400


def test_phases_are_fixed_by_intended_time():
    s = open_loop_schedule("constant", 2.0, warmup_s=1.0, duration_s=2.0, num_prompts=3, seed=0)
    assert [(x.offset_s, x.phase, x.prompt_idx) for x in s] == [
        (0.0, "warmup", 0), (0.5, "warmup", 1), (1.0, "measure", 2), (1.5, "measure", 0),
        (2.0, "measure", 1), (2.5, "measure", 2),
    ]  # fmt: skip


@pytest.mark.parametrize("kind,rate", [("poisson", 0.0), ("constant", -1.0), ("bursty", 1.0)])
def test_bad_arrivals_are_refused(kind, rate):
    with pytest.raises(ValueError):
        arrival_offsets(kind, rate, 1.0, 0)


class WordTok:
    """Whitespace 'tokenizer' with a BOS, whose decode/encode round trip is exact."""

    words = [f"w{i}" for i in range(50)]

    def encode(self, text: str) -> list[int]:
        return [0] + [self.words.index(w) + 1 for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.words[i - 1] for i in ids)

    @property
    def vocab_ids(self) -> Sequence[int]:
        return range(1, 51)


def test_fixed_length_prompt_counts_specials():
    text, n = fixed_length_prompt(WordTok(), 10, random.Random(0))
    assert n == 10 and len(text.split()) == 9  # BOS + 9 words


def test_synthetic_items_with_a_real_bpe_tokenizer(tiny_tokenizer_dir):
    from loadgen.tokenizer import load_token_counter

    tok = load_token_counter(str(tiny_tokenizer_dir))
    items = synthetic_items(tok, prompt_tokens=40, output_tokens=8, num_prompts=5, seed=3)
    assert [len(tok.encode(i.prompt)) for i in items] == [40] * 5
    assert [i.prompt_tokens_client for i in items] == [40] * 5
    assert len({i.prompt for i in items}) == 5
    assert items == synthetic_items(tok, prompt_tokens=40, output_tokens=8, num_prompts=5, seed=3)


def test_request_body_streams_with_usage():
    b = request_body("hi", 4, "completions", "m", 0.0, {"ignore_eos": True})
    assert b == {"model": "m", "max_tokens": 4, "temperature": 0.0, "stream": True,
                 "stream_options": {"include_usage": True}, "prompt": "hi", "ignore_eos": True}  # fmt: skip
    assert request_body("hi", 4, "chat", "m", 0.0, {})["messages"] == [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="endpoint"):
        request_body("hi", 4, "embeddings", "m", 0.0, {})


def test_sse_helpers_read_data_lines_and_both_chunk_kinds():
    assert sse_payload(b'data: {"a": 1}\r\n') == b'{"a": 1}'
    assert sse_payload(b"data:[DONE]\n") == b"[DONE]"
    assert sse_payload(b"\n") is None and sse_payload(b": keep-alive\n") is None and sse_payload(b"event: x\n") is None
    assert choice_text({"text": "hi"}, chat=False) == "hi"
    assert choice_text({"delta": {"content": "hi"}}, chat=True) == "hi"
    assert choice_text({"delta": {"role": "assistant"}}, chat=True) is None  # role-only first chat chunk
    assert choice_text({"delta": None}, chat=True) is None


def test_client_token_counts_and_drift_flag():
    from loadgen.tokenizer import annotate_client_counts

    class Words:
        def count_text(self, text: str) -> int:
            return len(text.split())

    recs = [
        {"status": "ok", "output_text": "a b c", "output_tokens": 3, "output_tokens_source": "usage",
         "prompt_tokens": 10, "prompt_tokens_client": 10},
        {"status": "ok", "output_text": "a b", "output_tokens": 3, "output_tokens_source": "usage",
         "prompt_tokens": 10, "prompt_tokens_client": 10},
        {"status": "ok", "output_text": "a", "output_tokens": 1, "output_tokens_source": "usage",
         "prompt_tokens": 12, "prompt_tokens_client": 10},
        {"status": "error", "output_text": "", "output_tokens": None, "output_tokens_source": None,
         "prompt_tokens": None, "prompt_tokens_client": 10},
    ]  # fmt: skip
    annotate_client_counts(recs, Words())
    assert [r.get("output_tokens_client") for r in recs] == [3, 2, 1, None]
    assert [r["token_drift"] for r in recs] == [False, True, True, None]
