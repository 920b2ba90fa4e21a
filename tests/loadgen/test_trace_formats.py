"""The public trace formats: small files written in each published schema (Mooncake JSONL, Azure LLM
inference CSV, BurstGPT CSV; docs/traces.md cites each source), detected from their columns or
named, bad rows named by file and line, the zero-token rule, BurstGPT's filters, and Mooncake
prompts built block by block so that rows sharing hash_ids share exactly those token ids (checked
with the lab's real tokenizer, models/tiny-llama)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.prefix_blocks import BlockPrompts
from loadgen.trace import (
    TRACE_FORMATS,
    TraceError,
    TraceRow,
    load_trace,
    prefix_reuse,
    read_trace,
    trace_items,
    window_rows,
)
from loadgen.workload import WorkloadError
from tests.conftest import ROOT

# The first rows of kvcache-ai/Mooncake FAST25-release/traces/conversation_trace.jsonl (block size
# 512: 6758 tokens in 14 blocks, 7322 in 15, 2290 in 5), as published.
MOONCAKE = [
    {"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": list(range(14))},
    {"timestamp": 0, "input_length": 7322, "output_length": 490, "hash_ids": [0, *range(14, 28)]},
    {"timestamp": 3000, "input_length": 2290, "output_length": 316, "hash_ids": [0, 42, 43, 44, 45]},
    {"timestamp": 5999, "input_length": 1053, "output_length": 26, "hash_ids": [0, 773, 774]},
]
# The header and first rows of Azure/AzurePublicDataset data/AzureLLMInferenceTrace_conv.csv.
AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.2224670,879,55
"""
# HPMLL/BurstGPT README's schema (Timestamp in s, Model, Request tokens, Response tokens, Total
# tokens, Log Type), in the column order of data/BurstGPT_*.csv; a failure has Response tokens 0.
BURSTGPT = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,472,18,490,Conversation log
45,ChatGPT,1087,0,1087,Conversation log
118,GPT-4,417,276,693,API log
130,ChatGPT,1360,302,1662,API log
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def tok():
    from loadgen.tokenizer import load_token_counter

    path = ROOT / "models" / "tiny-llama"
    assert (path / "tokenizer.json").exists(), "run `bash scripts/setup.sh` (it builds models/tiny-llama)"
    return load_token_counter(str(path))


# -- detection and the three schemas ---------------------------------------------------------------


def test_mooncake_is_detected_by_hash_ids_and_its_timestamps_are_milliseconds(tmp_path):
    t = read_trace(write(tmp_path, "m.jsonl", jsonl(MOONCAKE)))
    assert t.format == "mooncake" and t.block_tokens == 512
    assert [(r.timestamp_s, r.input_tokens, r.output_tokens) for r in t.rows] == [
        (0.0, 6758, 500), (0.0, 7322, 490), (3.0, 2290, 316), (5.999, 1053, 26)]  # fmt: skip
    assert t.rows[2].hash_ids == (0, 42, 43, 44, 45)
    d = t.describe()
    assert d["rows"] == 4 and d["span_s"] == 5.999 and "kvcache-ai/Mooncake" in d["source"]
    # every row shares block 0 with the first: 3 of 4 reuse one block, an infinite cache serves 3 x 512 tokens
    pr = d["prefix_reuse"]
    assert pr["reuse_probability"] == 0.75 and pr["mean_shared_blocks"] == 0.75
    assert pr["ideal_hit_rate"] == pytest.approx(3 * 512 / (6758 + 7322 + 2290 + 1053))


def test_azure_is_detected_by_its_columns_and_its_date_times_keep_seven_digits(tmp_path):
    t = read_trace(write(tmp_path, "a.csv", AZURE))
    assert t.format == "azure" and [(r.input_tokens, r.output_tokens) for r in t.rows] == [(374, 44), (396, 109), (879, 55)]
    ts = t.times()
    assert ts[1] - ts[0] == pytest.approx(4.314579, abs=1e-6) and ts[2] - ts[1] == pytest.approx(0.227298, abs=1e-6)
    assert ts[0] == pytest.approx(1700158546.68059, abs=1e-6)  # 2023-11-16 18:15:46.68059 UTC
    # an offset is honoured; a date-time that is not one is named by line
    off = read_trace(write(tmp_path, "o.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 19:15:46.68059+01:00,1,1\n"))
    assert off.times()[0] == pytest.approx(ts[0], abs=1e-6)
    with pytest.raises(TraceError, match=r"bad\.csv:3: TIMESTAMP='16/11/2023' is not a date-time like 2023-11-16"):
        read_trace(write(tmp_path, "bad.csv", AZURE.splitlines()[0] + "\n" + AZURE.splitlines()[1] + "\n16/11/2023,3,4\n"))


def test_burstgpt_skips_failures_and_counts_them(tmp_path):
    t = read_trace(write(tmp_path, "b.csv", BURSTGPT))
    assert t.format == "burstgpt"
    assert [(r.timestamp_s, r.input_tokens, r.output_tokens) for r in t.rows] == [
        (5.0, 472, 18), (118.0, 417, 276), (130.0, 1360, 302)]  # fmt: skip
    assert t.skipped == {"Response tokens = 0 (nothing was generated: a failed request, or none to ask for)": 1}
    (note,) = t.notes()
    assert note.endswith("b.csv: 1 row(s) skipped: Response tokens = 0 (nothing was generated: a failed request, or none to ask for)")


def test_burstgpt_filters_by_model_and_log_type(tmp_path):
    p = write(tmp_path, "b.csv", BURSTGPT)
    t = read_trace(p, model="ChatGPT", log_type="API log")
    assert [r.timestamp_s for r in t.rows] == [130.0]
    assert t.filtered == {"traffic.trace_model=ChatGPT": 1, "traffic.trace_log_type=API log": 2}
    with pytest.raises(TraceError, match=r"no row has Model='GPT4' \(the file has: ChatGPT, GPT-4\); set traffic.trace_model"):
        read_trace(p, model="GPT4")
    with pytest.raises(TraceError, match="only apply to BurstGPT traces, and this file is read as azure"):
        read_trace(write(tmp_path, "a.csv", AZURE), model="GPT-4")


def test_servelab_format_keeps_working_and_a_named_format_must_match_the_columns(tmp_path):
    p = write(tmp_path, "s.csv", "timestamp,input_tokens,output_tokens\n0,4,4\n0.5,6,2\n")
    assert read_trace(p).format == "servelab" and len(load_trace(p)) == 2
    q = write(tmp_path, "s.jsonl", jsonl([{"timestamp": 1.5, "input_length": 3, "output_length": 2}]))
    assert read_trace(q).format == "servelab" and load_trace(q)[0].timestamp_s == 1.5  # seconds, not ms: no hash_ids
    with pytest.raises(TraceError, match=r"s\.csv:1: not an Azure LLM inference trace: no column TIMESTAMP, ContextTokens, "
                                         r"GeneratedTokens \(its header: timestamp, input_tokens, output_tokens\); set "
                                         "traffic.trace_format"):  # fmt: skip
        read_trace(p, "azure")
    with pytest.raises(TraceError, match=r"s\.jsonl:1: missing hash_ids"):
        read_trace(q, "mooncake")
    with pytest.raises(TraceError, match=r"^traffic\.trace_format='sharegpt' is unknown: use one of auto, servelab, mooncake, "
                                         r"azure, burstgpt$"):  # fmt: skip
        read_trace(p, "sharegpt")
    assert TRACE_FORMATS == ("auto", "servelab", "mooncake", "azure", "burstgpt")


@pytest.mark.parametrize(
    "name,text,where,what",
    [
        ("m.jsonl", jsonl([MOONCAKE[0], {**MOONCAKE[2], "input_length": 2561}]), 2,
         "hash_ids has 5 block(s), which hold 2049..2560 tokens at traffic.trace_block_tokens=512, but input_length=2561; "
         "fix the row's hash_ids, or set traffic.trace_block_tokens"),
        ("m.jsonl", jsonl([{**MOONCAKE[0], "input_length": 6656}]), 1, "hash_ids has 14 block(s), which hold 6657..7168"),
        ("m.jsonl", jsonl([{**MOONCAKE[0], "hash_ids": [1, "x"]}]), 1, "hash_ids=[1, 'x'] must be a list of integers"),
        ("m.jsonl", jsonl([{**MOONCAKE[0], "output_length": 2.5}]), 1, "output_length=2.5 is not a whole number"),
        ("m.jsonl", jsonl([{**MOONCAKE[0], "timestamp": "soon"}]), 1, "timestamp='soon' is not a number"),
        ("a.csv", AZURE + "2023-11-16 18:15:52,-3,4\n", 5, "ContextTokens=-3 must be >= 0"),
        ("a.csv", AZURE + "2023-11-16 18:15:52,,4\n", 5, "missing ContextTokens"),
        ("b.csv", BURSTGPT + "140,ChatGPT,12.5,3,15.5,API log\n", 6, "Request tokens='12.5' is not a whole number"),
        ("b.csv", BURSTGPT + "nan,ChatGPT,12,3,15,API log\n", 6, "Timestamp='nan' is not a finite number"),
    ],
)  # fmt: skip
def test_a_bad_row_names_the_file_and_line(tmp_path, name, text, where, what):
    p = write(tmp_path, name, text)
    with pytest.raises(TraceError) as e:
        read_trace(p)
    assert str(e.value).startswith(f"{p}:{where}: {what}") and "\n" not in str(e.value), e.value


def test_the_block_size_is_a_setting(tmp_path):
    rows = [{"timestamp": 0, "input_length": 100, "output_length": 4, "hash_ids": [7, 8]}]
    p = write(tmp_path, "m.jsonl", jsonl(rows))
    assert read_trace(p, block_tokens=64).rows[0].hash_ids == (7, 8)
    with pytest.raises(TraceError, match=r"2 block\(s\), which hold 513..1024 tokens at traffic.trace_block_tokens=512"):
        read_trace(p)


def test_zero_tokens_in_a_public_format_are_skipped_and_a_trace_of_nothing_is_refused(tmp_path):
    p = write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,0,5\n2023-11-16 18:15:47,3,0\n")
    with pytest.raises(TraceError, match=r"a\.csv: the trace has no rows to send \(.*1 row\(s\) skipped: ContextTokens = 0 "
                                         r"\(no prompt to send\); .*1 row\(s\) skipped: GeneratedTokens = 0"):  # fmt: skip
        read_trace(p)
    m = write(tmp_path, "m.jsonl", jsonl([MOONCAKE[0], {**MOONCAKE[1], "output_length": 0}]))
    assert len(read_trace(m).rows) == 1 and sum(read_trace(m).skipped.values()) == 1


def test_prefix_reuse_counts_leading_blocks_and_the_distance_to_the_last_row_sharing_them():
    ids = [[1, 2, 3], [1, 2, 4], [5], [1, 2, 4, 6], [1, 9], [5, 7]]
    r = prefix_reuse(ids, [300, 300, 50, 350, 150, 180], 100)
    assert r.shared_blocks == (0, 2, 0, 3, 1, 1)
    assert r.distance == (0, 1, 0, 2, 1, 3)  # row 3 shares [1, 2, 4] with row 1; row 4 shares [1] with row 3
    assert r.shared_tokens == (0, 200, 0, 300, 100, 50)  # row 5: block 5 held 50 tokens in row 2, the only earlier one
    s = r.summary()
    assert s["reuse_probability"] == pytest.approx(4 / 6) and s["ideal_hit_rate"] == pytest.approx(650 / 1330)


def test_only_rows_inside_the_longest_window_are_built(tmp_path):
    p = write(tmp_path, "s.jsonl", jsonl([{"timestamp": t, "input_tokens": 3, "output_tokens": 2} for t in (10, 11, 40, 12)]))
    rows, beyond = window_rows(read_trace(p), min_speedup=2.0, window_s=10.0)  # (t - 10) / 2 < 10: t < 30
    assert [r.timestamp_s for r in rows] == [10, 11, 12] and beyond == 1


# -- Mooncake prompts, token-exact with the real tokenizer ----------------------------------------


def test_rows_sharing_hash_ids_share_exactly_those_leading_token_ids(tok):
    b = 64
    rows = [TraceRow(0.0, 3 * b + 10, 4, (1, 2, 3, 4)),  # 4 blocks, the last 10 tokens
            TraceRow(0.1, 3 * b + 40, 4, (1, 2, 3, 9)),  # shares 3 blocks with row 0
            TraceRow(0.2, 2 * b, 4, (1, 2)),  # exactly 2 full blocks: a prefix of both
            TraceRow(0.3, b + 1, 4, (5, 2)),  # block 2 at another place: no shared prefix
            TraceRow(0.4, 2 * b + 5, 4, (1, 2, 3))]  # the last block partial: its first 5 tokens of block 3  # fmt: skip
    items = trace_items(tok, rows, seed=0, block_tokens=b)
    enc = [tok.encode(it.prompt) for it in items]
    assert [len(e) for e in enc] == [r.input_tokens for r in rows] == [it.prompt_tokens_client for it in items]
    assert enc[0][: 3 * b] == enc[1][: 3 * b] and enc[0][3 * b] != enc[1][3 * b]
    assert enc[2] == enc[0][: 2 * b] and enc[4] == enc[0][: 2 * b + 5]
    assert enc[3][0] == enc[0][0] and enc[3][1] != enc[0][1]  # the BOS only
    assert enc[0][0] == tok.encode("")[0]  # lengths count the BOS, as the server does
    # the same block id has the same words at every later position, and the seed changes them
    assert trace_items(tok, rows, seed=0, block_tokens=b) == items
    assert trace_items(tok, rows, seed=1, block_tokens=b)[0].prompt != items[0].prompt


def test_mooncake_file_to_items(tmp_path, tok):
    p = write(tmp_path, "m.jsonl", jsonl([
        {"timestamp": 0, "input_length": 300, "output_length": 8, "hash_ids": [0, 1, 2]},
        {"timestamp": 20, "input_length": 280, "output_length": 8, "hash_ids": [0, 1, 3]},
    ]))  # fmt: skip
    t = read_trace(p, block_tokens=128)
    a, b = (tok.encode(it.prompt) for it in trace_items(tok, list(t.rows), 0, t.block_tokens))
    assert len(a) == 300 and len(b) == 280 and a[:256] == b[:256] and a[256] != b[256]


def test_a_tokenizer_that_cannot_keep_blocks_exact_is_refused(tiny_tokenizer_dir):
    from loadgen.tokenizer import load_token_counter

    # the tests' 400-entry tokenizer knows ten words: too few to build distinct blocks
    with pytest.raises(WorkloadError, match="too few to build block prompts"):
        BlockPrompts(load_token_counter(str(tiny_tokenizer_dir)), 16, 0)


@pytest.mark.parametrize("name,fmt,options", [("mooncake_sample.jsonl", "mooncake", {"block_tokens": 64}),
                                              ("azure_sample.csv", "azure", {}), ("burstgpt_sample.csv", "burstgpt", {})])
def test_the_sample_traces_read_as_their_format_and_fit_the_embedded_context(name, fmt, options):
    """tests/data/*_sample.*: synthetic files in each published schema, for trying the formats (docs/traces.md)."""
    t = read_trace(ROOT / "tests" / "data" / name, **options)
    assert t.format == fmt and len(t.rows) >= 195
    assert max(r.input_tokens + r.output_tokens for r in t.rows) <= 1024
