"""Traffic profiles: gamma arrivals, time-varying shapes, cooldown, think time, trace replay."""

from __future__ import annotations

import json
import statistics
from types import SimpleNamespace as NS

import pytest

from loadgen.arrivals import arrival_offsets, open_loop_schedule, shape_multiplier, trace_schedule
from loadgen.driver import build_spec, run_load_point
from loadgen.schema import ShapeConfig, TrafficConfig, WorkloadConfig
from loadgen.trace import TraceError, load_trace, trace_items
from loadgen.workload import WorkloadItem

pytestmark = pytest.mark.serial  # measures timing: alone, in scripts/test.sh's second pass (see pyproject markers)


def shape(kind, **kw):
    base = dict(kind=kind, start_fraction=0.1, steps=4, spike_at=0.5, spike_width=0.1, spike_factor=4.0, min_fraction=0.2)
    return NS(**{**base, **kw})


def test_gamma_has_the_mean_rate_and_burstiness_sets_the_spread():
    for k in (0.25, 1.0, 4.0):
        t = arrival_offsets("gamma", 100.0, 400.0, seed=3, burstiness=k)
        gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
        mean = statistics.fmean(gaps)
        cv = statistics.pstdev(gaps) / mean
        assert mean == pytest.approx(0.01, rel=0.05)
        assert cv == pytest.approx(1 / k**0.5, rel=0.1)  # coefficient of variation 1/sqrt(k)


def test_shape_multipliers_are_exact():
    assert [shape_multiplier(shape("ramp"))(u) for u in (0, 0.5, 1)] == [0.1, 0.55, 1.0]
    assert [shape_multiplier(shape("steps"))(u) for u in (0, 0.24, 0.25, 0.6, 0.99, 1.0)] == [0.25, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [shape_multiplier(shape("spike"))(u) for u in (0.49, 0.5, 0.59, 0.6)] == [1.0, 4.0, 4.0, 1.0]
    d = shape_multiplier(shape("diurnal"))
    assert (d(0), d(0.5), d(1)) == (pytest.approx(0.2), pytest.approx(1.0), pytest.approx(0.2))
    assert shape_multiplier(None)(0.3) == 1.0 and shape_multiplier(shape(None))(0.3) == 1.0
    with pytest.raises(ValueError, match="traffic.shape.kind"):
        shape_multiplier(shape("sawtooth"))


def test_thinning_follows_the_shape():
    # ramp 0.1 -> 1 of 50 req/s over 200 s: expected counts per half are 50*(0.1*100 + 0.45*100 ... )
    t = arrival_offsets("poisson", 50.0, 200.0, seed=1, multiplier=shape_multiplier(shape("ramp")))
    first = sum(1 for x in t if x < 100)
    second = len(t) - first
    # integral of 50*(0.1+0.9u) over each half: 50*100*(0.1+0.9*0.25)=1625 and 50*100*(0.1+0.9*0.75)=3875
    assert first == pytest.approx(1625, rel=0.08) and second == pytest.approx(3875, rel=0.08)
    c = arrival_offsets("constant", 10.0, 10.0, seed=0, multiplier=shape_multiplier(shape("spike")))
    in_spike = [x for x in c if 5.0 <= x < 6.0]
    assert len(in_spike) == pytest.approx(40, abs=1)  # 4 x 10 req/s for one second


def test_cooldown_phase_is_scheduled_after_the_measure_window():
    s = open_loop_schedule("constant", 2.0, warmup_s=1.0, duration_s=1.0, num_prompts=1, seed=0, cooldown_s=1.0)
    assert [(a.offset_s, a.phase) for a in s] == [
        (0.0, "warmup"), (0.5, "warmup"), (1.0, "measure"), (1.5, "measure"), (2.0, "cooldown"), (2.5, "cooldown"),
    ]  # fmt: skip


def test_trace_loading_and_replay(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"timestamp": 100.0, "input_tokens": 12, "output_tokens": 5},
        {"timestamp": 101.0, "input_length": 20, "output_length": 3},
        {"timestamp_ms": 103500, "input_tokens": 8, "output_tokens": 9},
    ]) + "\n")  # fmt: skip
    rows = load_trace(f)
    assert [(r.timestamp_s, r.input_tokens, r.output_tokens) for r in rows] == [(100.0, 12, 5), (101.0, 20, 3), (103.5, 8, 9)]
    s = trace_schedule([r.timestamp_s for r in rows], speedup=2.0, warmup_s=0.5, duration_s=1.0)
    assert [(a.offset_s, a.phase, a.prompt_idx) for a in s] == [(0.0, "warmup", 0), (0.5, "measure", 1)]  # 1.75 s is past the end
    csv = tmp_path / "t.csv"
    csv.write_text("timestamp,input_tokens,output_tokens\n0,4,4\n0.5,6,2\n")
    assert len(load_trace(csv)) == 2


@pytest.mark.parametrize(
    "content,needle",
    [
        ('{"timestamp": 1, "input_tokens": 3, "output_tokens": 2}\n{"timestamp": 2, "input_tokens": 3\n', ":2: not valid JSON"),
        ('{"input_tokens": 3, "output_tokens": 2}\n', ":1: missing timestamp"),
        ('{"timestamp": 1, "input_tokens": 0, "output_tokens": 2}\n', ":1: input_tokens=0 must be >= 1"),
        ('{"timestamp": "x", "input_tokens": 3, "output_tokens": 2}\n', ":1: timestamp='x' is not a number"),
        ("", "has no rows"),
    ],
)
def test_malformed_trace_names_file_and_line(tmp_path, content, needle):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(TraceError) as e:
        load_trace(f)
    assert str(e.value).startswith(str(f)) and needle in str(e.value)


def test_trace_items_have_the_traced_lengths(tiny_tokenizer_dir):
    from loadgen.tokenizer import load_token_counter
    from loadgen.trace import TraceRow

    tok = load_token_counter(str(tiny_tokenizer_dir))
    items = trace_items(tok, [TraceRow(0, 30, 7), TraceRow(1, 45, 2)], seed=0)
    assert [(len(tok.encode(i.prompt)), i.max_tokens) for i in items] == [(30, 7), (45, 2)]


ITEMS = [WorkloadItem(i, f"p{i}", 3, 6) for i in range(3)]


def closed_spec(url, tmp_path, users, **kw):
    tr = dict(kind="concurrency", request_timeout_s=20, drain_timeout_s=20, max_inflight=64, warmup_s=0.5, duration_s=2.0)
    tr.update(kw)
    return build_spec(load_point=0, load_value=users, traffic=TrafficConfig(**tr), workload=WorkloadConfig(),
                      items=ITEMS, base_url=url, model="m", extras_for=lambda n: {}, workdir=tmp_path)  # fmt: skip


def test_closed_loop_think_time_and_cooldown(timing_server, tmp_path):
    url, _ = timing_server(ttft_ms=5, itl_ms=2)
    out = run_load_point(closed_spec(url, tmp_path, 1, think_time_s=0.3, cooldown_s=0.6), tmp_path)
    recs = sorted(out.records, key=lambda r: r["t_sent_ns"])
    assert {r["status"] for r in recs} == {"ok"}
    gaps = [(b["t_sent_ns"] - a["t_done_ns"]) / 1e9 for a, b in zip(recs, recs[1:], strict=False)]
    assert min(gaps) >= 0.3  # one user: the next request waits the think time
    assert [r["phase"] for r in recs][-1] == "cooldown" and "measure" in {r["phase"] for r in recs}


def test_closed_loop_steps_shape_raises_users_over_time(timing_server, tmp_path):
    url, _ = timing_server(ttft_ms=20, itl_ms=20)  # ~120 ms per request
    out = run_load_point(closed_spec(url, tmp_path, 4, warmup_s=0.0, duration_s=4.0, shape=ShapeConfig(kind="steps", steps=2)),
                         tmp_path)  # fmt: skip
    recs = out.records
    t0 = min(r["t_sent_ns"] for r in recs)

    def concurrency_at(t_s):
        t = t0 + t_s * 1e9
        return sum(1 for r in recs if r["t_sent_ns"] <= t < r["t_done_ns"])

    early = max(concurrency_at(x / 10) for x in range(2, 15))
    late = max(concurrency_at(x / 10) for x in range(28, 38))
    assert early <= 2 and late == 4  # half the users in the first stair, all of them in the second
