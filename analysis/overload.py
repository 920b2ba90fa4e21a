"""Is this load point's queue clearly growing? A trend test over the records seen so far. Pure.

An open-loop point past the engine's capacity never reaches a steady state: requests arrive
faster than they finish, the number in flight grows without bound and so does each request's
wait for its first token. Measuring such a point for its whole window, then draining its
backlog, spends engine-minutes on a verdict known early: infeasible. :func:`detect_overload`
says when it is known, by a test with a stated false-positive rate, not by a guessed threshold.

The test, over the point's requests that have finished so far (warmup ones included: a queue
grows from the point's first second, and a server at capacity finishes few requests, so the
trend is seen sooner; the past-SLO condition below counts the measure phase only):

  span      [t_a, t_c]: t_a the first send, t_c the latest send among the finished requests
            (requests sent after t_c have not finished: nothing is known of them yet)
  blocks    the finished requests in send order cut into B blocks of equal count (default 8);
            per block the median TTFT
            of its requests (a request that got no first token counts as +inf: it missed any
            limit) and the number in flight at the block's last send, counted from the finished records
            (sent at or before it, done after it). In-flight counts miss the requests still
            running now that were sent before t_c (at most the engine's concurrency): they bias
            the last blocks DOWN, against the trend, so the count is conservative.
  trend     Mann-Kendall on each block series: S = sum over pairs i<j of sign(x_j - x_i), and its
            exact one-sided p-value P(S >= s) under no trend (every order of B exchangeable values
            equally likely: S = B(B-1)/2 - 2 * inversions, the inversions Mahonian-distributed).
  past SLO  the last block's median TTFT is past the SLO's TTFT limit AND the measure-phase
            requests that already missed it (finished over the limit, or without a first token)
            outnumber what the SLO allows in the WHOLE window: max_miss_share (min(1 - attainment
            target, 1 - percentile/100)) of the window's request count, bounded above by
            mean + 3.09 sd (Poisson; the count exceeds it with probability 0.1 %). Requests still
            waiting are not counted, so the miss count is a lower bound.
  overload  both series rise (p_ttft <= a and p_inflight <= a) and the point is past its SLO,
            with at least `min_per_block` finished requests in every block. a = alpha / looks: the caller checks a point at most `looks` times
            (experiments.earlystop), so by Bonferroni the chance that a point with no trend is
            ever stopped is at most alpha (default 0.01), under the test's assumption that the
            block values are exchangeable when there is no trend.

Why the miss count as well: a queue at high but steady load has TTFT and in-flight counts that
wander slowly (near saturation the queue forgets its state over tens of seconds, far longer than
a block), so over a short window the block values are NOT exchangeable and the trend test alone
fires more often than alpha (measured: 1 % of steady windows at 90 % utilisation, 6 % at
95 %; 0 % at 80 %). The miss-count condition makes the stop sound whatever the trend test does:
a point is stopped only once the SLO can no longer be met over its window unless more requests
arrive than the 0.1 % bound; the trend test names the cause (a growing queue, not a slow but
steady one). The false-positive rate at high-but-steady load (an M/D/C queue at 80 % and 90 %
utilisation, below its knee) is measured over many seeds in tests/analysis/test_overload.py,
and docs/sweeps.md states it. Closed-loop points (a fixed
number of users) cannot grow a queue: their in-flight count is constant, its S is 0, and they
are never stopped early.

Side effects: none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

ALPHA = 0.01  # the chance that a point without a trend is stopped early at all (all looks together)
BLOCKS = 8  # B: 8 blocks give an exact one-sided p as small as 1/8! = 2.5e-5
MIN_PER_BLOCK = 2  # finished requests per block (equal-count blocks: 16 finished requests in all)
Z_COUNT = 3.09  # the window's request count bound: Poisson mean + z sd (one-sided 0.1 %)
PREFIX = "overloaded"  # a stop reason starts with it (experiments.earlystop, analysis.results read it)


@dataclass(frozen=True)
class OverloadVerdict:
    """The test's answer at one look: `overloaded`, why in one line, and its figures."""

    overloaded: bool
    reason: str
    stats: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=64)
def _inversions_cdf(n: int) -> tuple[float, ...]:
    """P(inversions <= k) for k = 0..n(n-1)/2 of a uniformly random permutation of n (Mahonian)."""
    counts = [1]
    for m in range(2, n + 1):  # adding the m-th element adds 0..m-1 inversions
        new = [0] * (len(counts) + m - 1)
        for k, c in enumerate(counts):
            for j in range(m):
                new[k + j] += c
        counts = new
    total = float(math.factorial(n))
    out, acc = [], 0
    for c in counts:
        acc += c
        out.append(acc / total)
    return tuple(out)


def mann_kendall(x: Iterable[float]) -> tuple[int, float]:
    """(S, exact one-sided p = P(S' >= S) under no trend) of a series; ties add 0 to S (and the
    p-value is then that of the untied series with S' >= S, slightly conservative)."""
    v = np.asarray(list(x), dtype=float)
    n = v.size
    if n < 3:
        return 0, 1.0
    d = v[None, :] - v[:, None]  # d[i, j] = x_j - x_i
    iu = np.triu_indices(n, 1)
    with np.errstate(invalid="ignore"):
        sgn = np.sign(d[iu])
    s = int(np.nansum(sgn))  # inf - inf (two failed blocks) counts as a tie
    pairs = n * (n - 1) // 2
    # S >= s  <=>  inversions <= (pairs - s) / 2
    k = math.floor((pairs - s) / 2 + 1e-9)
    if k < 0:
        return s, 0.0
    cdf = _inversions_cdf(n)
    return s, float(cdf[min(k, pairs)])


def window_requests_hi(expected: float, z: float = Z_COUNT) -> float:
    """Upper bound of a window's request count when `expected` arrive on average (Poisson:
    expected + z * sqrt(expected); one-sided 0.1 % at z = 3.09)."""
    return expected + z * math.sqrt(max(expected, 0.0))


def detect_overload(records: Iterable[Mapping[str, Any]], *, ttft_limit_ms: float, max_miss_share: float,
                    window_requests: float, looks: int = 1, alpha: float = ALPHA, blocks: int = BLOCKS,
                    min_per_block: int = MIN_PER_BLOCK) -> OverloadVerdict:  # fmt: skip
    """The test of the module doc over the finished records of one point so far (raw loadgen
    records: phase, t_sent_ns, t_first_token_ns, t_done_ns, status). `looks`: how many times the
    caller may ask about this point (the per-look level is alpha / looks). `max_miss_share`: the
    largest share of the window's requests the SLO lets miss the TTFT limit (min(1 - attainment
    target, 1 - percentile / 100)); `window_requests`: how many the measure window is expected to
    send (rate x duration)."""
    if not ttft_limit_ms or ttft_limit_ms <= 0 or looks < 1 or window_requests <= 0:
        return OverloadVerdict(False, "no TTFT limit or no expected window: the overload test needs both")
    sent, first, done, measure = [], [], [], []
    for r in records:
        if r.get("t_sent_ns") is None or r.get("t_done_ns") is None:
            continue  # dropped (never sent) or torn
        sent.append(float(r["t_sent_ns"]))
        done.append(float(r["t_done_ns"]))
        ft = r.get("t_first_token_ns")
        first.append(float(ft) if ft is not None and r.get("status") in (None, "ok") else math.nan)
        measure.append(r.get("phase", "measure") == "measure")
    if not sent:
        return OverloadVerdict(False, "no finished requests yet")
    ts, tf, td, m = (np.asarray(a) for a in (sent, first, done, measure))
    ttft_ms = np.where(np.isfinite(tf), (tf - ts) / 1e6, np.inf)
    if not m.any():
        return OverloadVerdict(False, "no finished measure-phase request yet")
    t_a, t_c = float(ts.min()), float(ts.max())
    if t_c <= t_a:
        return OverloadVerdict(False, "too few finished requests")
    # equal-count blocks in send order: a server at capacity finishes few requests, and equal
    # widths would leave a block empty while its neighbours are full
    order = np.argsort(ts, kind="stable")
    med, inflight, counts = [], [], []
    for chunk in np.array_split(order, blocks):
        counts.append(int(chunk.size))
        med.append(float(np.median(ttft_ms[chunk])) if chunk.size else math.nan)
        end = float(ts[chunk].max()) if chunk.size else t_a
        inflight.append(int(((ts <= end) & (td > end)).sum()))
    stats: dict[str, Any] = {"blocks": blocks, "span_s": (t_c - t_a) / 1e9, "per_block": counts,
                             "ttft_median_ms": [round(v, 3) for v in med], "inflight": inflight,
                             "alpha": alpha, "looks": looks, "ttft_limit_ms": float(ttft_limit_ms)}  # fmt: skip
    if min(counts) < min_per_block:
        return OverloadVerdict(
            False, f"too few finished requests per block ({min(counts)} < {min_per_block})", stats
        )
    s_t, p_t = mann_kendall(med)
    s_q, p_q = mann_kendall(inflight)
    level = alpha / looks
    last = med[-1]
    stats |= {"s_ttft": s_t, "p_ttft": p_t, "s_inflight": s_q, "p_inflight": p_q, "level": level}
    # misses so far: finished measure-phase requests over the limit (or without a first token)
    misses = int((m & (ttft_ms > ttft_limit_ms)).sum())
    allowed = max_miss_share * window_requests_hi(window_requests)
    stats |= {"misses": misses, "misses_allowed": round(allowed, 1)}
    rising = p_t <= level and p_q <= level
    past = last > ttft_limit_ms and misses > allowed
    if rising and past:
        last_txt = "no first token" if math.isinf(last) else f"{last:.0f} ms"
        return OverloadVerdict(True, (
            f"{PREFIX}: the queue grows: median TTFT per block rising (Mann-Kendall S = {s_t}, p = {p_t:.2g}) "
            f"to {last_txt} > the SLO's {ttft_limit_ms:g} ms, requests in flight rising {inflight[0]} -> "
            f"{inflight[-1]} (S = {s_q}, p = {p_q:.2g}), each p <= {level:.2g} = alpha {alpha:g} / {looks} looks, "
            f"over {stats['span_s']:.1f} s of sends; {misses} requests already missed the limit, more than the "
            f"SLO allows in the whole window ({allowed:.0f})"), stats)  # fmt: skip
    why = (
        "no rising trend"
        if not rising
        else f"latest median TTFT {last:.0f} ms within the limit"
        if last <= ttft_limit_ms
        else f"{misses} misses so far, the SLO allows {allowed:.0f} in the window"
    )
    return OverloadVerdict(False, why, stats)


def is_overload_stop(reason: str | None) -> bool:
    """Whether a point's stop reason is this test's (not an engine failure)."""
    return bool(reason) and str(reason).startswith(PREFIX)


__all__ = [
    "ALPHA",
    "BLOCKS",
    "MIN_PER_BLOCK",
    "PREFIX",
    "OverloadVerdict",
    "detect_overload",
    "is_overload_stop",
    "mann_kendall",
]
