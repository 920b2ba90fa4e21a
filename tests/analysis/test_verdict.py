"""Each verdict reason from hand-built summaries, records and sample times."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.verdict import INFO, INVALID, VALID, WARN, gap_share, steadiness, verdict
from tests.analysis.decision_records import MS, frame, rec

S = 1_000_000_000


def summary(ok=200, **kw):
    base = {
        "requests": {"total": ok, "ok": ok, "error": 0, "timeout": 0, "cancelled": 0, "dropped": 0},
        "requests_all_phases": {"total": ok + 20},
        "loadgen": {"saturated": False, "saturation_reasons": []},
        "sched_lag_ms": {"p99": 1.0},
        "prompt_token_drift": {"requests": 0},
        "output_token_drift": {"requests": 0},
        "output_length_mismatches": 0,
    }
    for k, v in kw.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def kinds(v):
    return {r["kind"]: r["severity"] for r in v.reasons}


def test_clean_point_is_valid_and_notes_the_excluded_warmup():
    v = verdict(summary())
    assert v.status == VALID and kinds(v) == {"warmup_excluded": INFO}
    assert v.reasons[0]["message"] == "20 warmup requests excluded from the window"


def test_saturated_load_generator_is_invalid():
    # saturation reasons are analysis.notes.Note dicts, as analysis.metrics.loadgen_health writes them
    from analysis.notes import Note

    why = Note("loadgen", "cpu_saturated", "load generator CPU reached 80 % (> 60 %)").to_dict()
    v = verdict(summary(loadgen={"saturated": True, "saturation_reasons": [why]}))
    assert v.status == INVALID and kinds(v)["loadgen_saturated"] == INVALID
    assert "CPU reached 80 %" in v.reasons[0]["message"] and v.reasons[0]["source"] == "loadgen"


def test_overload_is_a_result_not_invalid():
    v = verdict(summary(ok=140, requests={"total": 200, "ok": 140, "timeout": 50, "error": 10}))
    assert v.status == WARN and kinds(v)["error_rate"] == WARN
    r = next(r for r in v.reasons if r["kind"] == "error_rate")
    assert r["value"] == pytest.approx(0.3) and "10 error, 50 timeout" in r["message"]


def test_malformed_requests_are_invalid():
    recs = [rec(i, sent=i, chunks=(1, 2)) for i in range(100)] + [rec(100 + i, sent=i, status="error", http=400) for i in range(5)]
    v = verdict(summary(ok=100, requests={"total": 105, "ok": 100, "error": 5}), requests=frame(recs))
    assert kinds(v)["client_errors"] == INVALID and "error_rate" not in kinds(v)


def test_client_drops_warn():
    v = verdict(summary(requests={"total": 210, "dropped": 10}))
    assert kinds(v)["client_drops"] == WARN and "traffic.max_inflight" in v.reasons[0]["message"]


def test_token_drift_warns():
    v = verdict(summary(prompt_token_drift={"requests": 10}))  # a file without the offset: all count
    assert kinds(v)["token_drift"] == WARN
    assert verdict(summary(output_length_mismatches=1)).status == VALID  # 1 of 200 is under the 1 % limit
    v = verdict(summary(output_length_mismatches=5))
    assert kinds(v)["token_drift"] == WARN and "5 replies shorter/longer than max_tokens" in v.reasons[0]["message"]


def test_a_constant_prompt_offset_and_the_output_recount_are_information_not_doubt():
    # every prompt one token longer on the server (BOS counted there only), and the recount of the
    # streamed text off on 40 replies while the server's usage matches max_tokens everywhere: the
    # newcomer's first run, which used to read "warn: lengths are not as planned"
    v = verdict(summary(prompt_token_drift={"requests": 200, "mean_server_minus_client": 1.0, "offset": 1,
                                            "requests_off_offset": 0},
                        output_token_drift={"requests": 40, "mean_server_minus_client": -2.5},
                        output_length_mismatches=0))  # fmt: skip
    assert v.status == VALID, v.reasons
    k = kinds(v)
    assert k["token_offset"] == INFO and k["output_recount"] == INFO and "token_drift" not in k
    msgs = {r["kind"]: r["message"] for r in v.reasons}
    assert "+1 token(s) per prompt" in msgs["token_offset"] and "40 of 200 replies" in msgs["output_recount"]
    # prompts off the offset are drift again
    v = verdict(summary(prompt_token_drift={"requests": 200, "offset": 1, "requests_off_offset": 7}))
    assert kinds(v)["token_drift"] == WARN and "beyond the constant offset of +1" in v.reasons[0]["message"]


def test_telemetry_gap_over_five_percent_of_the_window():
    t = np.concatenate([np.arange(0, 2.01, 0.2), np.arange(3.0, 10.01, 0.2)]) * S  # 1 s pause at 0.2 s sampling
    assert gap_share(t, 0, 10 * S, 0.2) == pytest.approx(0.08)  # (1.0 − 0.2) / 10
    v = verdict(summary(), window=(0, 10 * S), telemetry_t_ns=t, telemetry_interval_s=0.2,
                scrape_t_ns=np.arange(0, 11) * S, scrape_interval_s=1.0)  # fmt: skip
    assert kinds(v) == {"telemetry_gap": WARN, "warmup_excluded": INFO}
    assert gap_share(np.arange(0, 11) * S, 0, 10 * S, 1.0) == 0.0


def test_not_steady_when_the_halves_differ_significantly():
    fast = [rec(i, sent=i * 20, chunks=(5, 10)) for i in range(100)]  # 100 done in the first 2 s
    slow = [rec(100 + i, sent=2000 + i * 40, chunks=(5, 10)) for i in range(50)]  # 50 in the second 2 s
    df = frame(fast + slow)
    st = steadiness(df["t_done_ns"].to_numpy(dtype=np.int64), df["output_tokens"].to_numpy(dtype=float), 0, 4000 * MS)
    assert st["halves_change"] == pytest.approx((100 - 200) / 150)
    assert st["halves_z"] == pytest.approx((50 - 100) / np.sqrt(150))
    v = verdict(summary(ok=150), requests=df, window=(0, 4000 * MS))
    assert kinds(v)["not_steady"] == WARN and "-67%" in next(r for r in v.reasons if r["kind"] == "not_steady")["message"]
    even = frame([rec(i, sent=i * 20, chunks=(5, 10)) for i in range(200)])
    assert "not_steady" not in kinds(verdict(summary(), requests=even, window=(0, 4000 * MS)))


def test_completions_of_warmup_requests_count_in_the_first_half():
    """A steady 50 req/s with 600 ms latency over a 1 s warm-up and a 4 s window: counting only the
    window's own requests, the first half lost the 30 completions of warm-up requests and read as a
    throughput rise (+36 %, z = 2.4: not_steady); every completion inside the window counts."""
    warm = [rec(i, phase="warmup", sent=i * 20, chunks=(590, 599)) for i in range(50)]  # sent in [0, 1 s)
    meas = [rec(50 + i, sent=1000 + i * 20, chunks=(590, 599)) for i in range(200)]  # sent in [1 s, 5 s)
    df = frame(warm + meas)
    v = verdict(summary(ok=200), requests=df, window=(1000 * MS, 5000 * MS))
    assert "not_steady" not in kinds(v), v.reasons
    # the check itself, on the window's own requests only, shows the bias the verdict no longer has
    m = df[df["phase"] == "measure"]
    st = steadiness(m["t_done_ns"].to_numpy(dtype=np.int64), m["output_tokens"].to_numpy(dtype=float), 1000 * MS, 5000 * MS)
    assert st["halves_change"] > 0.2 and st["halves_z"] > 1.96


def test_a_ramp_is_a_significant_trend():
    # linear ramp of tokens per completion: halves differ, trend strongly significant
    recs = [rec(i, sent=i * 10, chunks=(1, 2), out=1 + i // 40) for i in range(400)]
    df = frame(recs)
    st = steadiness(df["t_done_ns"].to_numpy(dtype=np.int64), df["output_tokens"].to_numpy(dtype=float), 0, 4000 * MS)
    assert st["trend_change"] > 0.5 and st["trend_t"] > 2


def test_too_few_samples():
    assert kinds(verdict(summary(ok=5)))["too_few_samples"] == INVALID
    v = verdict(summary(ok=50))
    assert kinds(v)["too_few_samples"] == WARN and v.status == WARN


def test_no_warmup_warns():
    v = verdict(summary(requests_all_phases={"total": 200}))
    assert kinds(v)["no_warmup"] == WARN
    assert kinds(verdict(summary(), warmup_s=0))["no_warmup"] == WARN


def test_interrupted_point_is_invalid_and_all_reasons_are_kept():
    v = verdict(summary(ok=5, requests={"total": 8, "timeout": 3}), interrupted=True)
    assert v.status == INVALID
    assert set(kinds(v)) == {"interrupted", "error_rate", "too_few_samples", "warmup_excluded"}
    assert v.to_dict()["status"] == INVALID and all({"source", "kind", "message", "severity"} <= set(r) for r in v.reasons)


def _drift(recs, window_ms=20_000):
    from analysis.metrics import derive

    v = verdict(summary(ok=len(recs)), requests=derive(frame(recs)), window=(0, window_ms * MS))
    return next((r for r in v.reasons if r["kind"] == "drift"), None)


def test_drift_names_a_warm_up_that_was_too_short():
    g = np.random.default_rng(0)
    # 20 s at 10 req/s; TTFT 150 ms for the first 10 s (still warming), then 40 ms
    recs = [rec(i, sent=i * 100, chunks=(int((150 if i < 100 else 40) + g.integers(0, 10)), 200)) for i in range(200)]
    d = _drift(recs)
    assert d is not None and d["severity"] == WARN and "warm-up too short" in d["message"] and "TTFT p50" in d["message"]


def test_drift_names_an_engine_that_slowed_and_a_growing_queue():
    g = np.random.default_rng(1)
    slowed = [rec(i, sent=i * 100, chunks=(int((40 if i < 100 else 90) + g.integers(0, 10)), 200)) for i in range(200)]
    assert "engine slowed" in _drift(slowed)["message"]
    # every request waits longer than the one before: a queue that only grows
    growing = [rec(i, sent=i * 100, chunks=(20 + 15 * i, 30 + 15 * i)) for i in range(200)]
    assert "queue growing" in _drift(growing)["message"]


def test_no_drift_when_the_halves_agree_within_their_intervals():
    g = np.random.default_rng(2)
    steady = [rec(i, sent=int(i * 100 + g.integers(0, 50)), chunks=(int(40 + g.exponential(10)), 200)) for i in range(200)]
    assert _drift(steady) is None


def test_open_loop_throughput_that_follows_its_arrivals_is_steady():
    """Poisson arrivals put more requests in one half than the other by chance (the default run:
    106 and 123). Open loop the server serves what it is sent: completions that follow the sends
    are steady, however uneven the sends; closed loop the same change is not_steady."""
    first = [rec(i, sent=int(i * 2000 / 90), chunks=(30, 60)) for i in range(90)]
    second = [rec(90 + i, sent=2000 + int(i * 2000 / 130), chunks=(30, 60)) for i in range(130)]
    df = frame(first + second)
    closed = verdict(summary(ok=220), requests=df, window=(0, 4000 * MS))
    assert kinds(closed)["not_steady"] == WARN  # +36 %, z = 2.7
    opened = verdict(summary(ok=220), requests=df, window=(0, 4000 * MS), open_loop=True)
    assert "not_steady" not in kinds(opened), opened.reasons
    st = steadiness(df["t_done_ns"].to_numpy(dtype=np.int64), df["output_tokens"].to_numpy(dtype=float), 0, 4000 * MS,
                    offered_ns=(df["t_sent_ns"] + 61 * MS).to_numpy(dtype=np.int64))  # fmt: skip
    assert st["halves_z"] > 1.96 and abs(st["offered_z"]) < 1.0 and st["offered_change"] == pytest.approx(st["halves_change"], abs=0.05)


def test_open_loop_a_server_that_falls_behind_its_arrivals_is_not_steady():
    """Even sends (50 req/s), but from the middle on every reply takes 40 ms longer than the one
    before: completions fall behind what was sent, which the arrivals do not explain."""
    recs = [rec(i, sent=i * 20, chunks=(30, 60 if i < 100 else 60 + 40 * (i - 100))) for i in range(200)]
    v = verdict(summary(ok=200), requests=frame(recs), window=(0, 4000 * MS), open_loop=True)
    assert kinds(v)["not_steady"] == WARN, v.reasons
    assert "requests sent changed" in next(r for r in v.reasons if r["kind"] == "not_steady")["message"]


def test_open_loop_a_slower_half_that_was_sent_more_requests_is_load_not_drift():
    """The default run's false alarm: TTFT p50 103 -> 125 ms in a half that got more arrivals.
    Open loop that is what the load explains (info); the same halves with EVEN sends stay a drift."""
    from analysis.metrics import derive

    g = np.random.default_rng(3)
    # 20 s: 100 requests in the first 10 s at ~100 ms TTFT, 125 in the second at ~125 ms
    recs = [rec(i, sent=int(i * 10_000 / 100), chunks=(int(100 + g.integers(0, 6)), 300)) for i in range(100)]
    recs += [rec(100 + i, sent=10_000 + int(i * 10_000 / 125), chunks=(int(125 + g.integers(0, 6)), 300)) for i in range(125)]
    v = verdict(summary(ok=225), requests=derive(frame(recs)), window=(0, 20_000 * MS), open_loop=True)
    k = kinds(v)
    assert k.get("load_drift") == INFO and "drift" not in k, v.reasons
    r = next(r for r in v.reasons if r["kind"] == "load_drift")
    assert r["sent"] == [100, 125] and "100 -> 125" in r["message"] and "TTFT p50" in r["message"]
    closed = verdict(summary(ok=225), requests=derive(frame(recs)), window=(0, 20_000 * MS))
    assert kinds(closed).get("drift") == WARN
    # the same latencies with even sends: the engine slowed, whatever the loop
    even = [rec(i, sent=i * 100, chunks=(int((100 if i < 100 else 125) + g.integers(0, 6)), 300)) for i in range(200)]
    v = verdict(summary(ok=200), requests=derive(frame(even)), window=(0, 20_000 * MS), open_loop=True)
    assert kinds(v).get("drift") == WARN and "engine slowed" in next(r for r in v.reasons if r["kind"] == "drift")["message"]
