"""SLO attainment, goodput and feasibility on hand-built records with exact expected values."""

from __future__ import annotations

import pytest

from analysis.schema import SloConfig
from analysis.slo import evaluate_point, itl_gaps, thresholds
from tests.analysis.decision_records import MS, frame, rec

CHAT = SloConfig(name="chat", ttft_ms=500, tpot_ms=50, percentile=99, attainment_target=0.5)


def point():
    return frame([
        rec(0, sent=0, chunks=(100, 120, 140, 160)),   # TTFT 100, TPOT 20, E2E 161: meets
        rec(1, sent=1000, chunks=(600, 700)),          # TTFT 600 > 500: miss
        rec(2, sent=2000, chunks=(50, 130)),           # TPOT 80 > 50: miss
        rec(3, sent=3000, status="error", http=500),   # failures are misses
        rec(4, sent=4000, status="timeout"),
        rec(5, sent=5000, status="dropped"),
        rec(6, sent=6000, chunks=(200,)),              # one token: no TPOT, meets
        rec(7, phase="warmup", sent=0, chunks=(900, 990)),  # excluded
    ])  # fmt: skip


def test_attainment_goodput_and_infeasibility_reasons():
    r = evaluate_point(point(), CHAT, window_s=10.0)
    assert (r.requests, r.requests_ok, r.requests_meeting) == (7, 4, 2)
    assert r.attainment == pytest.approx(2 / 7)
    assert r.goodput_rps == pytest.approx(0.2)
    assert r.goodput_output_tokens == 5  # 4 + 1
    assert r.goodput_output_tok_per_s == pytest.approx(0.5)
    assert r.goodput_total_tok_per_s == pytest.approx((5 + 20) / 10)
    ttft, tpot = r.thresholds
    # numpy linear p99 over ok requests: TTFT [50, 100, 200, 600] -> 200 + 0.97·400; TPOT [20, 80, 100] -> 80 + 0.98·20
    assert (ttft.metric, ttft.value_ms, ttft.samples, ttft.within, ttft.requests_meeting) == ("ttft_ms", pytest.approx(588.0), 4, False, 3)
    assert (tpot.metric, tpot.value_ms, tpot.samples, tpot.within, tpot.requests_meeting) == ("tpot_ms", pytest.approx(99.6), 3, False, 2)
    assert not r.feasible
    assert r.reasons == ("attainment 0.286 < target 0.5", "ttft_ms p99 = 588.0 ms > 500 ms", "tpot_ms p99 = 99.6 ms > 50 ms")


def test_feasible_when_attainment_and_every_percentile_are_within():
    df = frame([rec(i, sent=100 * i, chunks=(100, 120, 140)) for i in range(10)] + [rec(10, sent=2000, status="timeout")])
    r = evaluate_point(df, CHAT, window_s=5.0)
    assert r.attainment == pytest.approx(10 / 11)
    assert r.feasible and r.reasons == ()
    strict = SloConfig(name="strict", ttft_ms=500, tpot_ms=50, attainment_target=0.95)
    r2 = evaluate_point(df, strict, window_s=5.0)
    assert not r2.feasible and r2.reasons == ("attainment 0.909 < target 0.95",)


def test_no_slo_counts_every_ok_request():
    r = evaluate_point(point(), SloConfig(name="none"), window_s=10.0)
    assert r.requests_meeting == 4 and r.thresholds == ()
    assert r.attainment == pytest.approx(4 / 7)


def test_thresholds_use_their_own_percentile():
    slo = SloConfig(ttft_ms=200, e2e_ms=1000, e2e_percentile=95, percentile=90)
    assert [(t.metric, t.limit_ms, t.percentile) for t in thresholds(slo)] == [("ttft_ms", 200, 90), ("e2e_ms", 1000, 95)]


def test_itl_threshold_allows_the_percentile_share_of_slow_gaps():
    df = frame([rec(0, sent=0, chunks=(0, 10, 20, 200)), rec(1, sent=0, chunks=(0, 10, 20, 30))])  # gaps 10,10,180 / 10,10,10
    strict = evaluate_point(df, SloConfig(itl_ms=100, itl_percentile=100), window_s=1.0)
    assert strict.requests_meeting == 1  # the 180 ms gap breaks request 0
    loose = evaluate_point(df, SloConfig(itl_ms=100, itl_percentile=50, attainment_target=1.0), window_s=1.0)
    assert loose.requests_meeting == 2  # at most floor(3 · 0.5) = 1 gap may exceed
    (t,) = loose.thresholds
    assert t.samples == 6 and t.value_ms == pytest.approx(10.0)  # pooled median of [10,10,180,10,10,10]
    assert loose.feasible


def test_itl_gaps_are_per_request_and_skip_empty():
    df = frame([rec(0, chunks=(0, 2, 5)), rec(1, status="error"), rec(2, chunks=(7,)), rec(3, chunks=(10, 11))])
    gaps, owner = itl_gaps(df["chunk_ns"])
    assert gaps.tolist() == [2.0, 3.0, 1.0] and owner.tolist() == [0, 0, 3]


def test_window_falls_back_to_the_records_and_says_so():
    r = evaluate_point(point(), CHAT)
    # sent requests of the measure phase: first send 0 ms, last done 6000 + 200 + 1 ms (dropped one never sent)
    assert r.window_s == pytest.approx(6.201) and r.window_source.startswith("records")
    assert r.goodput_rps == pytest.approx(2 / 6.201)
    assert MS == 1_000_000


def test_no_measured_requests_is_infeasible():
    r = evaluate_point(frame([rec(0, phase="warmup", chunks=(1, 2))]), CHAT, window_s=1.0)
    assert r.attainment is None and not r.feasible and r.reasons[0] == "no measured requests"


def test_itl_gaps_read_arrow_backed_columns_without_python_lists():
    import pandas as pd
    import pyarrow as pa

    chunked = pa.chunked_array([pa.array([[0, 2 * MS, 5 * MS], None]), pa.array([[7 * MS], [10 * MS, 11 * MS]])])
    gaps, owner = itl_gaps(pd.Series(pd.arrays.ArrowExtensionArray(chunked)))
    assert gaps.tolist() == [2.0, 3.0, 1.0] and owner.tolist() == [0, 0, 3]
    one = pa.chunked_array([pa.array([[0, 4 * MS], [1 * MS, 2 * MS, 4 * MS]])])
    assert itl_gaps(pd.Series(pd.arrays.ArrowExtensionArray(one)))[0].tolist() == [4.0, 1.0, 2.0]
