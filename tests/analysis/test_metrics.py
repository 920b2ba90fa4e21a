"""Metric math on hand-built records with exact expected values."""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analysis.metrics import (
    derive,
    distribution,
    itl_distribution,
    itl_ms,
    loadgen_health,
    measure_window,
    offered_rate_rps,
    requests_frame,
    summarize_point,
)
from loadgen.records import empty_record, to_table

MS = 1_000_000  # ns per ms


def rec(i, phase="measure", status="ok", sched=None, sent=0, chunks=(), out=None, prompt=10, max_tokens=4, client=10):
    """One record; `sent` and `sched` in ms, `chunks` in ms after `sent`; done = last chunk + 1 ms."""
    sched = sent if sched is None else sched
    chunks = [(sent + c) * MS for c in chunks]
    return empty_record(
        load_point=0, request_id=str(i), worker=1, phase=phase, prompt_idx=i, endpoint="completions",
        max_tokens=max_tokens, prompt_tokens_client=client, t_scheduled_ns=sched * MS, t_sent_ns=sent * MS if sent is not None else None,
        t_first_token_ns=chunks[0] if chunks else None, t_last_token_ns=chunks[-1] if chunks else None,
        t_done_ns=(chunks[-1] + MS) if chunks else (sent * MS if sent is not None else None), chunk_ns=chunks, status=status,
        prompt_tokens=prompt if status == "ok" else None, output_tokens=out if out is not None else (len(chunks) or None),
        output_tokens_source="usage" if status == "ok" else None,
    )  # fmt: skip


def frame(records):
    return requests_frame(to_table(records))


def object_frame(records):
    """The frame the way the v1 runner built it: nullable ints and strings, chunk lists as Python objects."""

    def v1(t):
        return pd.Int64Dtype() if pa.types.is_integer(t) else pd.StringDtype() if pa.types.is_string(t) else None

    return to_table(records).to_pandas(types_mapper=v1)


def test_per_request_formulas():
    # sent at 1000 ms (scheduled 998), chunks at +20, +30, +45, +60 ms; done 1 ms after the last chunk.
    df = derive(frame([rec(0, sched=998, sent=1000, chunks=(20, 30, 45, 60))]))
    r = df.iloc[0]
    assert r["ttft_ms"] == 20.0
    assert r["e2e_ms"] == 61.0
    assert r["tpot_ms"] == pytest.approx((60 - 20) / 3)  # (t_last - t_first) / (N - 1)
    assert r["sched_lag_ms"] == 2.0
    assert r["n_chunks"] == 4


def test_differences_are_exact_at_large_monotonic_values():
    # 2**60 ns is far beyond float64's exact integers: subtracting in int64 first keeps the 1 ns
    base = 2**60
    r = empty_record(t_sent_ns=base, t_first_token_ns=base + 1, t_done_ns=base + 3, phase="measure", status="ok")
    df = derive(frame([r]))
    assert df.iloc[0]["ttft_ms"] == 1e-6 and df.iloc[0]["e2e_ms"] == 3e-6


def test_object_and_arrow_chunk_columns_give_the_same_metrics():
    records = [rec(0, sent=0, chunks=(5, 7, 12)), rec(1, status="error", sent=3, chunks=()), rec(2, sent=9, chunks=(4,))]
    a, b = derive(frame(records)), derive(object_frame(records))
    for col in ("ttft_ms", "e2e_ms", "tpot_ms", "sched_lag_ms", "n_chunks"):
        pd.testing.assert_series_equal(a[col], b[col])
    assert itl_ms(a["chunk_ns"]).tolist() == itl_ms(b["chunk_ns"]).tolist() == [2.0, 5.0]


def test_tpot_undefined_for_one_token_and_failed_requests_have_no_ttft():
    df = derive(frame([rec(0, sent=0, chunks=(5,), max_tokens=1), rec(1, status="error", sent=10, chunks=())]))
    assert pd.isna(df.iloc[0]["tpot_ms"])
    assert pd.isna(df.iloc[1]["ttft_ms"]) and pd.isna(df.iloc[1]["tpot_ms"])


def test_itl_pools_chunk_gaps_and_excludes_ttft():
    gaps = itl_ms([[0, 2 * MS, 5 * MS], [10 * MS, 11 * MS], [7], None])
    assert gaps.tolist() == [2.0, 3.0, 1.0]
    # only the selected requests' gaps
    assert itl_ms([[0, 2 * MS, 5 * MS], [10 * MS, 11 * MS]], np.array([False, True])).tolist() == [1.0]


def test_itl_of_a_sliced_arrow_column():
    arr = pa.array([[0, 1], [0, 5 * 10**9, 5 * 10**9 + 2 * MS], [3, 4]], pa.list_(pa.int64())).slice(1, 1)
    assert itl_ms(arr).tolist() == [5000.0, 2.0]  # a slice: offsets point into the whole values buffer


def test_itl_distribution_matches_numpys_percentiles():
    rng = np.random.default_rng(3)
    lists = [np.cumsum(rng.integers(1, 40 * MS, int(k))).tolist() for k in rng.integers(0, 30, 200)]
    want = distribution(itl_ms(lists))
    got = itl_distribution(lists)
    assert got["count"] == want["count"]
    for k in ("mean", "min", "p50", "p90", "p95", "p99", "max"):
        assert got[k] == pytest.approx(want[k], rel=1e-12)


def test_distribution_uses_linear_percentiles():
    d = distribution([1.0, 2.0, 3.0, 4.0, 100.0])
    assert d["count"] == 5 and d["mean"] == 22.0 and d["min"] == 1.0 and d["max"] == 100.0
    assert d["p50"] == 3.0
    assert d["p90"] == pytest.approx(float(np.percentile([1, 2, 3, 4, 100], 90)))
    assert distribution([])["p99"] is None and distribution([])["count"] == 0
    assert distribution(pd.Series([1.0, None, 3.0], dtype="Float64"))["mean"] == 2.0


# One point: t0 = 0, warmup 1 s, duration 2 s, so the steady window is W = [1000 ms, 3000 ms), 2 s.
POINT = dict(kind="poisson", value=2.0, warmup_s=1.0, duration_s=2.0, t0_ns=0)


def point_records(last_tail_ms=200):
    return [
        # warmup, in flight at the window start: chunks at 900, 1000, 1100, 1200 -> 3 of 4 in W
        rec(0, phase="warmup", sent=500, chunks=(400, 500, 600, 700)),
        rec(1, sent=1000, chunks=(10, 20, 30, 40)),  # 1010..1040: all 4 in W; ttft 10, tpot 10
        rec(2, sent=1500, chunks=(30, 40, 50, 60), prompt=12),  # all 4 in W; ttft 30, tpot 10; prompt drift +2
        rec(3, status="error", sent=1800, chunks=()),
        rec(4, status="dropped", sent=None, sched=1900, chunks=()),
        # straddles the end: 8 tokens in 4 chunks at 2950, 3000, 3050, 2900 + tail -> 1 chunk in W = 2 tokens
        rec(5, sent=2900, chunks=(50, 100, 150, last_tail_ms), out=8, max_tokens=8),
    ]


def test_summary_of_a_load_point_over_the_steady_window():
    s = summarize_point(frame(point_records()), **POINT)
    assert s["requests"] == {"total": 5, "ok": 3, "error": 1, "timeout": 0, "cancelled": 0, "dropped": 1}
    assert s["requests_all_phases"]["total"] == 6
    assert s["error_rate"] == pytest.approx(2 / 5)
    assert (s["measure_window_t0_ns"], s["measure_window_t1_ns"]) == (1000 * MS, 3000 * MS)
    assert s["measure_window_s"] == 2.0
    # in W: 3 (request 0) + 4 + 4 + 8 x 1/4 (request 5) = 13 tokens
    assert s["window_generated_tokens"] == pytest.approx(13.0)
    assert s["output_tok_per_s"] == pytest.approx(6.5)
    # prompts of the requests whose first token arrived in W: 10 + 12 + 10 (request 0's came at 900 ms)
    assert s["window_prompt_tokens"] == 32
    assert s["total_tok_per_s"] == pytest.approx((13 + 32) / 2)
    # completions in W: requests 0 (1201 ms), 1 (1041), 2 (1561); request 5 ends at 3101 ms
    assert s["achieved_rate_rps"] == pytest.approx(1.5)
    # the old window, first measured send (1000 ms) -> last measured completion (3101 ms)
    assert s["drain_window_s"] == pytest.approx(2.101)
    assert s["generated_tokens"] == 16 and s["processed_prompt_tokens"] == 32  # measure phase, ok
    assert s["scheduled_rate_rps"] == 2.5  # 5 measure-phase arrivals over 2 s
    assert s["offered_rate_rps"] == 2.0 and s["concurrency"] is None
    assert s["load_value"] == 2.0 and s["load_unit"] == "req/s"
    assert s["ttft_ms"]["mean"] == 30.0 and s["ttft_ms"]["p50"] == 30.0
    assert s["tpot_ms"]["mean"] == pytest.approx((10 + 10 + 150 / 7) / 3)
    assert s["interactivity_tok_per_s"] == pytest.approx(1000 / ((20 + 150 / 7) / 3))
    assert s["e2e_ms"]["max"] == 201.0
    assert s["itl_ms"]["count"] == 9 and s["itl_ms"]["p50"] == 10.0 and s["itl_ms"]["max"] == 50.0
    assert s["sched_lag_ms"]["count"] == 4 and s["sched_lag_ms"]["max"] == 0.0
    assert s["output_length_mismatches"] == 0
    # one prompt of the three ok ones counted 2 more by the server: most share offset 0, so it is off it
    assert s["prompt_token_drift"] == {"requests": 1, "mean_server_minus_client": 2.0, "offset": 0,
                                       "requests_off_offset": 1}  # fmt: skip
    assert s["output_tokens_source"] == ["usage"]


def test_a_long_drain_tail_changes_the_drain_window_but_not_the_throughput():
    short = summarize_point(frame(point_records(last_tail_ms=200)), **POINT)
    long = summarize_point(frame(point_records(last_tail_ms=9000)), **POINT)
    assert long["drain_window_s"] == pytest.approx(10.901) and short["drain_window_s"] == pytest.approx(2.101)
    for k in ("output_tok_per_s", "total_tok_per_s", "achieved_rate_rps", "measure_window_s"):
        assert long[k] == short[k]


def test_window_is_cut_when_the_point_stopped_early_and_falls_back_without_t0():
    df = frame(point_records())
    assert measure_window(df, t0_ns=0, warmup_s=1.0, duration_s=2.0, t_end_ns=2000 * MS) == (1000 * MS, 2000 * MS)
    s = summarize_point(df, **{**POINT, "t_end_ns": 2000 * MS})
    assert s["measure_window_s"] == 1.0 and s["window_generated_tokens"] == pytest.approx(11.0)  # 3 + 4 + 4
    # without t0 the window starts at the first measure-phase intended send (request 1, 1000 ms)
    assert measure_window(df, t0_ns=None, warmup_s=1.0, duration_s=2.0) == (1000 * MS, 3000 * MS)
    assert measure_window(df, t0_ns=0, warmup_s=1.0, duration_s=0.0) is None


def test_offered_is_the_configured_rate_integrated_over_the_shape():
    assert offered_rate_rps("poisson", 4.0, warmup_s=5, duration_s=10) == 4.0
    ramp = NS(kind="ramp", start_fraction=0.5)
    # m(u) = 0.5 + 0.5u; measure window u in [5/20, 15/20] -> mean m = 0.75
    assert offered_rate_rps("constant", 4.0, warmup_s=5, duration_s=10, cooldown_s=5, shape=ramp) == pytest.approx(3.0)
    spike = {"kind": "spike", "spike_at": 0.5, "spike_width": 0.1, "spike_factor": 4.0}  # run.json form
    assert offered_rate_rps("poisson", 2.0, warmup_s=0, duration_s=10, shape=spike) == pytest.approx(2.0 * 1.3, rel=1e-4)
    assert offered_rate_rps("concurrency", 8, warmup_s=0, duration_s=10) is None
    assert offered_rate_rps("trace", 2.0, warmup_s=0, duration_s=10) is None


def test_scheduled_rate_counts_what_the_schedule_produced():
    # a ramp offers 3 req/s on average; the schedule happened to produce 5 measure arrivals in 2 s
    s = summarize_point(frame(point_records()), **{**POINT, "value": 4.0, "shape": NS(kind="ramp", start_fraction=0.5),
                                                     "warmup_s": 1.0, "duration_s": 2.0, "cooldown_s": 1.0})  # fmt: skip
    assert s["offered_rate_rps"] == pytest.approx(3.0) and s["scheduled_rate_rps"] == 2.5


def test_output_length_mismatch_is_counted():
    s = summarize_point(frame([rec(0, sent=0, chunks=(1, 2, 3), max_tokens=4)]), kind="concurrency", value=1,
                        warmup_s=0, duration_s=1, t0_ns=0)  # fmt: skip
    assert s["output_length_mismatches"] == 1
    assert s["concurrency"] == 1 and s["offered_rate_rps"] is None and s["load_unit"] == "users"


def test_a_constant_prompt_offset_is_found_and_only_prompts_off_it_count():
    # the server counts a BOS the client did not: 11 against 10 on every prompt, but one prompt at 14
    recs = [rec(i, sent=i, chunks=(1, 2), max_tokens=2, prompt=11, client=10) for i in range(4)]
    recs.append(rec(4, sent=4, chunks=(1, 2), max_tokens=2, prompt=14, client=10))
    s = summarize_point(frame(recs), kind="concurrency", value=1, warmup_s=0, duration_s=1, t0_ns=0)
    assert s["prompt_token_drift"] == {"requests": 5, "mean_server_minus_client": 1.6, "offset": 1,
                                       "requests_off_offset": 1}  # fmt: skip


def test_loadgen_health_flags_saturation_with_structured_notes():
    ok = loadgen_health([{"cpu_pct": 5, "lag_max_ms": 2, "lag_mean_ms": 0.1, "t_ns": 10**9}], {"p99": 1.0})
    assert ok["saturated"] is False and ok["saturation_reasons"] == []
    samples = [{"cpu_pct": 75, "lag_max_ms": 80, "lag_mean_ms": 3, "t_ns": 5 * 10**9},
               {"cpu_pct": 20, "lag_max_ms": 1, "lag_mean_ms": 1, "t_ns": 6 * 10**9}]  # fmt: skip
    bad = loadgen_health(samples, {"p99": 12.0})
    assert bad["saturated"] is True
    assert [n["kind"] for n in bad["saturation_reasons"]] == ["cpu_saturated", "loop_stall", "sched_lag"]
    assert {n["source"] for n in bad["saturation_reasons"]} == {"loadgen"}
    cpu = bad["saturation_reasons"][0]
    assert (cpu["t0_ns"], cpu["t1_ns"]) == (4 * 10**9, 5 * 10**9) and cpu["message"].startswith("load generator CPU reached 75 %")
    assert math.isclose(bad["cpu_pct_mean"], 47.5) and bad["loop_lag_mean_ms"] == 2.0


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 101])
def test_itl_distribution_is_exact_for_small_counts(n):
    gaps = [(k * 7919) % 13 + 1 for k in range(n)]  # repeated values, unsorted
    chunks = [np.cumsum([0, *gaps]) * MS]
    assert itl_distribution(chunks) == pytest.approx(distribution(np.asarray(gaps, dtype=float)), rel=1e-12)


def test_itl_distribution_is_exact_with_gaps_of_seconds():
    s = 10**9
    chunks = [[0, 5 * s, 5 * s + 2 * MS], [0, 1 * MS, 4 * MS]]  # a 5 s gap among ms ones: the histogram bins get wide, the ranks stay exact
    d = itl_distribution(chunks)
    assert d["count"] == 4 and d["max"] == 5000.0 and d["min"] == 1.0
    assert d["mean"] == pytest.approx((5000 + 2 + 1 + 3) / 4)


def test_window_counts_of_the_two_halves_add_up_to_the_window():
    from analysis.metrics import window_counts

    df = derive(frame(point_records()))
    ok = (df["status"] == "ok").to_numpy(dtype=bool)
    first, second = window_counts(df, ok, 1000 * MS, 2000 * MS), window_counts(df, ok, 2000 * MS, 3000 * MS)
    assert first == (pytest.approx(11.0), 22, 3) and second == (pytest.approx(2.0), 10, 0)


def test_a_frame_of_several_arrow_chunks_summarises_like_one():
    recs = point_records()
    one = summarize_point(frame(recs), **POINT)
    # row groups become chunks: the boundary falls between the straddling requests 0 and 5
    many = requests_frame(pa.concat_tables([to_table(recs[:1]), to_table(recs[1:4]), to_table(recs[4:])]))
    assert many["chunk_ns"].array.__arrow_array__().num_chunks == 3
    assert summarize_point(many, **POINT) == one


def test_itl_when_the_first_requests_have_no_chunks():
    # empty lists before the first one with chunks: its first value starts the flat buffer
    assert itl_ms([[], None, [0, 3 * MS, 4 * MS], [9 * MS, 11 * MS]]).tolist() == [3.0, 1.0, 2.0]
    assert itl_distribution([[], [0, 3 * MS, 4 * MS]])["mean"] == 2.0


def test_itl_distribution_is_exact_when_gaps_crowd_into_few_bins():
    # one 5 s gap makes each histogram bin 8.192 µs wide; the other gaps sit within 20 µs of 10 ms
    rng = np.random.default_rng(7)
    lists = [np.cumsum(10 * MS + rng.integers(0, 20_000, 50)).tolist() for _ in range(400)]
    lists.append([0, 5 * 10**9])
    want, got = distribution(itl_ms(lists)), itl_distribution(lists)
    assert got["count"] == want["count"] == 400 * 49 + 1
    for k in ("mean", "min", "p50", "p90", "p95", "p99", "max"):
        assert got[k] == pytest.approx(want[k], rel=1e-12), k
