"""The overload test (analysis.overload) on simulated queues of the timing server's model (M/D/C
FIFO, Poisson arrivals): a growing queue is found, a steady one is not, over many seeds; the
Mann-Kendall p-values are exact. The looks follow experiments.economy: every `check_s` seconds
after the warmup, each seeing only the requests finished by then."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest

from analysis.overload import detect_overload, mann_kendall

MS = 1_000_000
S_MS, STREAMS = 95.0, 4  # 20 ms + 15 x 5 ms a request: capacity 4 / 0.095 s = 42.1 req/s
CAPACITY = STREAMS / (S_MS / 1000)


def records(rate: float, seed: int, warmup_s: float, duration_s: float, ttft_ms: float = 20.0) -> list[dict]:
    g = np.random.default_rng(seed)
    end = (warmup_s + duration_s) * 1000
    t = np.cumsum(g.exponential(1000 / rate, size=int(rate * end / 1000 * 1.5) + 20))
    free = [0.0] * STREAMS
    out = []
    for a in t[t < end]:
        st = max(a, heapq.heappop(free))
        heapq.heappush(free, st + S_MS)
        out.append({"phase": "warmup" if a < warmup_s * 1000 else "measure", "t_sent_ns": int(a * MS),
                    "t_first_token_ns": int((st + ttft_ms) * MS), "t_done_ns": int((st + S_MS) * MS), "status": "ok"})  # fmt: skip
    return out


def feasible(recs: list[dict], limit_ms: float) -> bool:
    """The full window's verdict at TTFT p99 <= limit, attainment >= 0.9 (analysis.slo's rule)."""
    tt = np.array([(r["t_first_token_ns"] - r["t_sent_ns"]) / MS for r in recs if r["phase"] == "measure"])
    return bool(np.percentile(tt, 99) <= limit_ms and (tt <= limit_ms).mean() >= 0.9)


def first_stop(
    rate: float, seed: int, *, warmup_s: float, duration_s: float, limit_ms: float, check_s: float = 1.0
):
    """(seconds into the window of the first look that stops the point or None, its full-window verdict)."""
    recs = records(rate, seed, warmup_s, duration_s)
    done = np.array([r["t_done_ns"] for r in recs])
    looks = int(duration_s / check_s) + 1
    for k in range(1, looks + 1):
        now = (warmup_s + k * check_s) * 1e9
        seen = [r for r, d in zip(recs, done, strict=True) if d <= now]
        v = detect_overload(seen, ttft_limit_ms=limit_ms, max_miss_share=0.01, window_requests=rate * duration_s,
                            looks=looks)  # fmt: skip
        if v.overloaded:
            return k * check_s, feasible(recs, limit_ms)
    return None, feasible(recs, limit_ms)


def test_mann_kendall_p_values_are_exact():
    """P(S >= s) by enumerating every order of 6 distinct values."""
    n = 6
    all_s = [mann_kendall(p)[0] for p in itertools.permutations(range(n))]
    for x in ([0, 1, 2, 3, 4, 5], [0, 2, 1, 3, 5, 4], [5, 4, 3, 2, 1, 0], [2, 0, 4, 1, 5, 3]):
        s, p = mann_kendall(x)
        assert p == pytest.approx(np.mean([v >= s for v in all_s]), abs=1e-12)
    assert mann_kendall(range(8)) == (28, pytest.approx(1 / 40320))
    assert mann_kendall([3, 3, 3, 3, 3, 3, 3, 3])[1] > 0.5  # no trend in a constant series (a closed loop)


def test_a_growing_queue_is_stopped_early():
    # twice the capacity: the queue grows by ~42 requests a second
    stops = [first_stop(2 * CAPACITY, s, warmup_s=1, duration_s=6, limit_ms=80)[0] for s in range(60)]
    found = [t for t in stops if t is not None]
    assert len(found) >= 57, stops  # 95 %
    assert np.median(found) <= 3.0  # half-way through the window at most, and then no drain


def test_a_steady_queue_at_high_load_is_not_stopped_and_no_feasible_point_ever_is():
    """Steady queues below the knee (80 % and 90 % of capacity, warmed up), 100 seeds each: never
    stopped at 80 %; at 90 % (the queue wanders for tens of seconds, so the trend test alone would
    fire: module doc) at most 5 %, and none of the stopped windows would have been feasible."""
    for util, limit, most in ((0.8, 300.0, 0), (0.9, 300.0, 5)):
        runs = [
            first_stop(util * CAPACITY, 1000 + s, warmup_s=8, duration_s=8, limit_ms=limit)
            for s in range(100)
        ]
        stopped = [f for t, f in runs if t is not None]
        assert len(stopped) <= most, (util, len(stopped))
        assert not any(stopped), "a window that would have met the SLO was stopped"
        assert sum(f for _, f in runs) >= 30  # the SLO is within reach at this load: the check has teeth


def test_no_stop_without_a_ttft_limit_or_before_enough_requests_finished():
    recs = records(2 * CAPACITY, 0, 1, 3)
    assert not detect_overload(recs, ttft_limit_ms=0, max_miss_share=0.01, window_requests=250).overloaded
    few = sorted(recs, key=lambda r: r["t_done_ns"])[:10]
    v = detect_overload(few, ttft_limit_ms=80, max_miss_share=0.01, window_requests=250)
    assert not v.overloaded
