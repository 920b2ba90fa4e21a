"""Metric math on hand-built records with exact expected values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import derive, distribution, itl_ms, loadgen_health, summarize_point
from loadgen.records import empty_record, to_table

MS = 1_000_000  # ns per ms


def rec(i, phase="measure", status="ok", sched=0, sent=0, chunks=(), out=None, prompt=10, max_tokens=4, client=10):
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
    from experiments.runner import _nullable

    return to_table(records).to_pandas(types_mapper=_nullable)


def test_per_request_formulas():
    # sent at 1000 ms (scheduled 998), chunks at +20, +30, +45, +60 ms; done 1 ms after the last chunk.
    df = derive(frame([rec(0, sched=998, sent=1000, chunks=(20, 30, 45, 60))]))
    r = df.iloc[0]
    assert r["ttft_ms"] == 20.0
    assert r["e2e_ms"] == 61.0
    assert r["tpot_ms"] == pytest.approx((60 - 20) / 3)  # (t_last - t_first) / (N - 1)
    assert r["sched_lag_ms"] == 2.0
    assert r["n_chunks"] == 4


def test_tpot_undefined_for_one_token_and_failed_requests_have_no_ttft():
    df = derive(frame([rec(0, sent=0, chunks=(5,), max_tokens=1), rec(1, status="error", sent=10, chunks=())]))
    assert pd.isna(df.iloc[0]["tpot_ms"])
    assert pd.isna(df.iloc[1]["ttft_ms"]) and pd.isna(df.iloc[1]["tpot_ms"])


def test_itl_pools_chunk_gaps_and_excludes_ttft():
    gaps = itl_ms([[0, 2 * MS, 5 * MS], [10 * MS, 11 * MS], [7], None])
    assert gaps.tolist() == [2.0, 3.0, 1.0]


def test_distribution_uses_linear_percentiles():
    d = distribution([1.0, 2.0, 3.0, 4.0, 100.0])
    assert d["count"] == 5 and d["mean"] == 22.0 and d["min"] == 1.0 and d["max"] == 100.0
    assert d["p50"] == 3.0
    assert d["p90"] == pytest.approx(float(np.percentile([1, 2, 3, 4, 100], 90)))
    assert distribution([])["p99"] is None and distribution([])["count"] == 0


def test_summary_of_a_load_point():
    records = [
        rec(0, phase="warmup", sent=0, chunks=(10, 20, 30, 40)),  # excluded: warmup
        rec(1, sent=1000, chunks=(10, 20, 30, 40)),  # ttft 10, tpot 10, e2e 41
        rec(2, sent=1500, chunks=(30, 40, 50, 60), prompt=12),  # ttft 30, tpot 10, e2e 61; drift +2
        rec(3, status="error", sent=1800, chunks=()),
        rec(4, status="dropped", sent=None, chunks=()),
    ]
    s = summarize_point(frame(records), kind="poisson", value=2.0, warmup_s=1.0, duration_s=2.0)
    assert s["requests"] == {"total": 4, "ok": 2, "error": 1, "timeout": 0, "cancelled": 0, "dropped": 1}
    assert s["requests_all_phases"]["total"] == 5
    assert s["error_rate"] == 0.5
    # window: first measured send (1000 ms) -> last end of a sent request (the error, at 1800 ms)
    assert s["measure_window_s"] == pytest.approx(0.8)
    assert s["output_tokens"] == 8 and s["prompt_tokens"] == 22
    assert s["output_tok_per_s"] == pytest.approx(10.0)
    assert s["total_tok_per_s"] == pytest.approx(30 / 0.8)
    assert s["achieved_rate_rps"] == pytest.approx(2 / 0.8)
    assert s["scheduled_rate_rps"] == 2.0  # 4 measure-phase requests over 2 s
    assert s["ttft_ms"]["mean"] == 20.0 and s["ttft_ms"]["p50"] == 20.0
    assert s["tpot_ms"]["mean"] == pytest.approx(10.0)
    assert s["interactivity_tok_per_s"] == pytest.approx(100.0)
    assert s["e2e_ms"]["max"] == 61.0
    assert s["itl_ms"]["count"] == 6 and s["itl_ms"]["p50"] == 10.0
    assert s["output_length_mismatches"] == 0
    assert s["prompt_token_drift"] == {"requests": 1, "mean_server_minus_client": 2.0}
    assert s["offered_rate_rps"] == 2.0 and s["concurrency"] is None


def test_output_length_mismatch_is_counted():
    s = summarize_point(frame([rec(0, sent=0, chunks=(1, 2, 3), max_tokens=4)]), kind="concurrency", value=1,
                        warmup_s=0, duration_s=1)  # fmt: skip
    assert s["output_length_mismatches"] == 1
    assert s["concurrency"] == 1 and s["offered_rate_rps"] is None


def test_loadgen_health_flags_saturation():
    ok = loadgen_health([{"cpu_pct": 5, "lag_max_ms": 2, "lag_mean_ms": 0.1}], {"p99": 1.0})
    assert ok["saturated"] is False and ok["saturation_reasons"] == []
    bad = loadgen_health([{"cpu_pct": 75, "lag_max_ms": 80, "lag_mean_ms": 3}], {"p99": 12.0})
    assert bad["saturated"] is True and len(bad["saturation_reasons"]) == 3
    assert math.isclose(bad["cpu_pct_mean"], 75)
