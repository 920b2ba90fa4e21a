"""Trace replay input: JSONL and CSV traces with their aliases, malformed input named by file and
line, prompts of the traced lengths, and the speed-up schedule built from the arrival times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.arrivals import trace_schedule
from loadgen.trace import TraceError, TraceRow, load_trace, trace_items


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def rows_of(path: Path) -> list[tuple[float, int, int]]:
    return [(r.timestamp_s, r.input_tokens, r.output_tokens) for r in load_trace(path)]


# -- reading -----------------------------------------------------------------------------------------


def test_jsonl_with_every_alias_in_file_order(tmp_path):
    p = write(tmp_path, "t.jsonl", jsonl(
        {"timestamp": 10.0, "input_tokens": 12, "output_tokens": 5},
        {"timestamp_s": 9.5, "input_length": 20, "output_length": 3},  # out of order: kept as written
        {"timestamp_ms": 10250, "input_tokens": "8", "output_tokens": 9.0, "extra": "ignored"},
    ) + "\n   \n")  # fmt: skip
    assert rows_of(p) == [(10.0, 12, 5), (9.5, 20, 3), (10.25, 8, 9)]


def test_the_first_time_key_present_wins(tmp_path):
    p = write(tmp_path, "t.jsonl", jsonl({"timestamp": None, "timestamp_ms": 1500, "input_tokens": 1, "output_tokens": 1}))
    assert rows_of(p) == [(1.5, 1, 1)]


def test_csv_with_header_and_aliases(tmp_path):
    p = write(tmp_path, "t.CSV", "timestamp_ms,input_length,output_length,note\n0,4,4,a\n500,6,2,b\n")
    assert rows_of(p) == [(0.0, 4, 4), (0.5, 6, 2)]


def test_any_other_suffix_is_read_as_jsonl(tmp_path):
    p = write(tmp_path, "trace.log", jsonl({"timestamp": 1, "input_tokens": 2, "output_tokens": 3}))
    assert rows_of(p) == [(1.0, 2, 3)]


def test_a_home_relative_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path, "t.jsonl", jsonl({"timestamp": 0, "input_tokens": 1, "output_tokens": 1}))
    assert len(load_trace("~/t.jsonl")) == 1


# -- malformed input names the file and the line -------------------------------------------------


GOOD = {"timestamp": 1, "input_tokens": 3, "output_tokens": 2}


@pytest.mark.parametrize(
    "text,where,needle",
    [
        (jsonl(GOOD) + '{"timestamp": 2, "input_tokens": 3\n', ":2:", "not valid JSON"),
        (jsonl(GOOD) + "\n" + "[1, 2, 3]\n", ":3:", "expected a JSON object per line"),  # blank lines still count
        (jsonl({"input_tokens": 3, "output_tokens": 2}), ":1:", "missing timestamp (one of timestamp, timestamp_s"),
        (jsonl({**GOOD, "timestamp": "noon"}), ":1:", "timestamp='noon' is not a number"),
        (jsonl({**GOOD, "timestamp_ms": [1]} | {"timestamp": None}), ":1:", "timestamp_ms=[1] is not a number"),
        (jsonl(GOOD, {**GOOD, "input_tokens": 0}), ":2:", "input_tokens=0 must be >= 1"),
        (jsonl({**GOOD, "output_length": -4} | {"output_tokens": ""}), ":1:", "output_length=-4 must be >= 1"),
        (jsonl({**GOOD, "input_tokens": "many"}), ":1:", "input_tokens='many' is not a whole number"),
        (jsonl({"timestamp": 1, "output_tokens": 2}), ":1:", "missing input_tokens or input_length"),
        (jsonl({"timestamp": 1, "input_tokens": 2}), ":1:", "missing output_tokens or output_length"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, text, where, needle):
    p = write(tmp_path, "bad.jsonl", text)
    with pytest.raises(TraceError) as e:
        load_trace(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}{where} ") and needle in msg and "\n" not in msg


@pytest.mark.parametrize(
    "text,where,needle",
    [
        ("timestamp,input_tokens,output_tokens\n0,4,4\n1,x,2\n", ":3:", "input_tokens='x' is not a whole number"),
        ("timestamp,input_tokens\n0,4\n", ":2:", "missing output_tokens or output_length"),
        ("time,input_tokens,output_tokens\n0,4,4\n", ":2:", "missing timestamp"),
        ("timestamp,input_tokens,output_tokens\n0,4,4\n,4,4\n", ":3:", "missing timestamp"),  # empty cell
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, text, where, needle):
    p = write(tmp_path, "bad.csv", text)
    with pytest.raises(TraceError) as e:
        load_trace(p)
    assert str(e.value).startswith(f"{p}{where} ") and needle in str(e.value)


def test_csv_line_numbers_count_blank_lines(tmp_path):
    p = write(tmp_path, "bad.csv", "timestamp,input_tokens,output_tokens\n0,4,4\n\n1,x,2\n")
    with pytest.raises(TraceError, match=r"bad\.csv:4: "):
        load_trace(p)


def test_a_non_finite_timestamp_is_refused(tmp_path):
    p = write(tmp_path, "bad.jsonl", '{"timestamp": NaN, "input_tokens": 3, "output_tokens": 2}\n')
    with pytest.raises(TraceError, match=r"bad\.jsonl:1: "):
        load_trace(p)


def test_a_fractional_length_is_refused(tmp_path):
    p = write(tmp_path, "bad.jsonl", '{"timestamp": 1, "input_tokens": 2.5, "output_tokens": 2}\n')
    with pytest.raises(TraceError, match="not a whole number"):
        load_trace(p)


@pytest.mark.parametrize("name,text", [("e.jsonl", ""), ("e.jsonl", "\n\n  \n"), ("e.csv", "timestamp,input_tokens,output_tokens\n")])
def test_a_trace_without_rows_is_refused(tmp_path, name, text):
    p = write(tmp_path, name, text)
    with pytest.raises(TraceError, match=f"^{p}: the trace has no rows$"):
        load_trace(p)


def test_a_missing_file_names_the_setting(tmp_path):
    with pytest.raises(TraceError, match=r"nope\.jsonl: trace file not found \(set traffic\.trace_path\)"):
        load_trace(tmp_path / "nope.jsonl")
    with pytest.raises(TraceError, match="trace file not found"):
        load_trace(tmp_path)  # a folder is not a trace


# -- items -------------------------------------------------------------------------------------------


def test_items_have_the_traced_lengths_and_are_seeded(tiny_tokenizer_dir):
    from loadgen.tokenizer import load_token_counter

    tok = load_token_counter(str(tiny_tokenizer_dir))
    rows = [TraceRow(0.0, 30, 7), TraceRow(1.0, 45, 2), TraceRow(1.0, 5, 1)]
    items = trace_items(tok, rows, seed=3)
    assert [(i.prompt_idx, i.prompt_tokens_client, i.max_tokens) for i in items] == [(0, 30, 7), (1, 45, 2), (2, 5, 1)]
    assert all(len(tok.encode(i.prompt)) == i.prompt_tokens_client for i in items)
    assert [i.prompt for i in trace_items(tok, rows, seed=3)] == [i.prompt for i in items]
    assert [i.prompt for i in trace_items(tok, rows, seed=4)] != [i.prompt for i in items]


# -- the speed-up schedule -----------------------------------------------------------------------------


def test_speed_up_divides_the_gaps_from_the_first_arrival():
    times = [100.0, 101.0, 102.0, 104.0]
    s = trace_schedule(times, speedup=2.0, warmup_s=0.5, duration_s=1.0, cooldown_s=0.5)
    assert [(a.offset_s, a.phase, a.prompt_idx) for a in s] == [
        (0.0, "warmup", 0), (0.5, "measure", 1), (1.0, "measure", 2),  # 2.0 s is past warmup+duration+cooldown
    ]  # fmt: skip
    same = trace_schedule(times, speedup=1.0, warmup_s=0.0, duration_s=10.0)
    assert [a.offset_s for a in same] == [0.0, 1.0, 2.0, 4.0]


def test_rows_out_of_order_are_sent_in_time_order_with_their_own_item():
    s = trace_schedule([5.0, 3.0, 4.0], speedup=1.0, warmup_s=0.0, duration_s=10.0)
    assert [(a.offset_s, a.prompt_idx) for a in s] == [(0.0, 1), (1.0, 2), (2.0, 0)]


def test_a_slow_down_stretches_the_trace_and_cuts_it_at_the_end():
    s = trace_schedule([0.0, 1.0, 2.0], speedup=0.5, warmup_s=0.0, duration_s=3.0)
    assert [(a.offset_s, a.phase) for a in s] == [(0.0, "measure"), (2.0, "measure")]


@pytest.mark.parametrize("speedup", [0.0, -1.0])
def test_a_speed_up_must_be_positive(speedup):
    with pytest.raises(ValueError, match="speed-up must be > 0"):
        trace_schedule([0.0], speedup=speedup, warmup_s=0.0, duration_s=1.0)


def test_an_empty_trace_schedules_nothing():
    assert trace_schedule([], speedup=1.0, warmup_s=0.0, duration_s=1.0) == []


def test_a_trace_file_replayed_end_to_end(tmp_path):
    p = write(tmp_path, "t.csv", "timestamp_ms,input_tokens,output_tokens\n1000,4,4\n1250,6,2\n1500,3,3\n3000,1,1\n")
    s = trace_schedule([r.timestamp_s for r in load_trace(p)], speedup=0.5, warmup_s=0.0, duration_s=2.0)
    assert [(a.offset_s, a.prompt_idx) for a in s] == [(0.0, 0), (0.5, 1), (1.0, 2)]
