"""The time-block bootstrap (analysis.blocks): exact weighted percentiles, the block length from
the data, joint replicates, and what resampling requests one by one misses."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import blocks as bl


def brute(values, index, counts, q):
    out = []
    for row in counts:
        s = np.concatenate([np.repeat(values[index == b], row[b]) for b in range(counts.shape[1])])
        out.append(np.percentile(s, q) if s.size else np.nan)
    return np.array(out)


@pytest.mark.parametrize("seed", range(12))
def test_weighted_percentile_is_numpys_percentile_of_the_built_sample(seed):
    g = np.random.default_rng(seed)
    n, b = int(g.integers(1, 400)), int(g.integers(1, 30))
    values = g.exponential(10, n).round(int(g.integers(0, 3)))  # ties on purpose
    index = g.integers(0, b, n)
    counts = bl.block_counts(b, 40, seed)
    for q in (0, 1, 50, 90, 99, 100):
        assert np.allclose(bl.weighted_percentile(values, index, counts, q), brute(values, index, counts, q), equal_nan=True)


def test_politis_white_reads_the_dependence_from_the_autocorrelation():
    g = np.random.default_rng(0)
    iid = g.normal(size=4000)
    ar = np.zeros(4000)
    for i in range(1, ar.size):
        ar[i] = 0.9 * ar[i - 1] + g.normal()
    assert bl.politis_white(iid) < 6 < 20 < bl.politis_white(ar)
    assert bl.politis_white(iid[:5]) is None


def test_blocks_are_never_shorter_than_a_request_stays_and_their_count_is_bounded():
    t = np.arange(1000) * 10_000_000  # a request every 10 ms for 10 s
    b = bl.make_blocks(t, np.full(1000, 500.0))  # each stays 0.5 s
    assert b.length_s == pytest.approx(b.span_s / b.n_blocks) and b.length_s >= 0.5 - 1e-9
    assert "mean E2E" in b.method and b.n_blocks == int(b.span_s // 0.5)
    short = bl.make_blocks(t[:50], np.full(50, 300.0))  # 0.49 s of sends: one stay is more than the window
    assert short.n_blocks == bl.MIN_BLOCKS and "too narrow" in short.notes[0]
    many = bl.make_blocks(np.arange(100_000) * 1_000_000, np.full(100_000, 1.0))
    assert many.n_blocks == bl.MAX_BLOCKS
    assert bl.make_blocks(t, None, block_s=2.0).n_blocks == bl.MIN_BLOCKS  # 5 blocks of 2 s: raised to the minimum


def uniform_point(n=600, seed=0):
    """Poisson sends over 60 s, all meeting the SLO, all 64 tokens: the case whose old interval had zero width."""
    g = np.random.default_rng(seed)
    t = np.sort(g.uniform(0, 60e9, n)).astype(np.int64)
    return t, np.full(n, 200.0)


def test_throughput_of_a_clean_uniform_point_has_a_real_interval_and_is_deterministic():
    t, e2e = uniform_point()
    b = bl.make_blocks(t, e2e)
    tok = np.full(t.size, 64.0)
    kw = dict(meets=np.ones(t.size, bool), target=0.9, sums={"tok_s": (tok, 640.0)}, n=500, seed=3)
    r = bl.point_replicates(b, **kw)
    lo, hi = np.quantile(r.throughput["tok_s"], [0.025, 0.975])
    assert lo < 640.0 < hi and (hi - lo) / 640.0 > 0.05  # arrivals per block vary: not zero width
    assert np.all(r.attainment == 1.0) and r.p_feasible == 1.0
    again = bl.point_replicates(b, **kw)
    assert np.array_equal(again.throughput["tok_s"], r.throughput["tok_s"])  # same records and seed: bit for bit


def test_replicates_are_joint_one_draw_moves_attainment_and_the_percentile_together():
    g = np.random.default_rng(1)
    t = np.sort(g.uniform(0, 30e9, 900)).astype(np.int64)
    slow = (t > 10e9) & (t < 14e9)  # a slow stretch: late requests and high TTFT in the same blocks
    ttft = np.where(slow, 400.0, 50.0) + g.exponential(5, t.size)
    meets = ttft <= 200
    b = bl.make_blocks(t, ttft + 100, block_s=1.0)
    th = bl.Threshold("ttft_ms", ttft, b.index, 90.0, 200.0)
    r = bl.point_replicates(b, meets=meets, target=0.85, thresholds=[th], n=400, seed=0)
    # replicates that drew more of the slow blocks have lower attainment AND a higher p90
    assert np.corrcoef(r.attainment, r.thresholds["ttft_ms"])[0, 1] < -0.5
    assert r.feasible.mean() == pytest.approx(r.p_feasible)
    assert np.array_equal(r.feasible, (r.attainment >= 0.85) & (r.thresholds["ttft_ms"] <= 200.0))


def test_blocks_see_the_correlation_that_request_by_request_resampling_misses():
    g = np.random.default_rng(2)
    n = 3000
    t = np.arange(n) * 20_000_000  # 60 s
    lat = np.zeros(n)
    for i in range(1, n):  # queueing: each latency carries most of the previous one
        lat[i] = 0.95 * lat[i - 1] + g.exponential(10)
    lat += 50
    blocks = bl.make_blocks(t, lat)
    per_request = bl.Blocks(np.minimum(np.arange(n) * bl.MAX_BLOCKS // n, bl.MAX_BLOCKS - 1), bl.MAX_BLOCKS,
                            60 / bl.MAX_BLOCKS, 60.0, None, "one request's worth")  # fmt: skip
    sd = {}
    for name, b in (("blocks", blocks), ("short", per_request)):
        th = bl.Threshold("e2e_ms", lat, b.index, 99.0, 1e9)
        sd[name] = bl.point_replicates(b, meets=np.ones(n, bool), target=0.9, thresholds=[th], n=400,
                                       seed=0).thresholds["e2e_ms"].std()  # fmt: skip
    assert blocks.lag_requests > 10 and sd["blocks"] > 1.3 * sd["short"]


def _tail_interval(values, seed, tail=True):
    """95 % interval of the p99 of iid `values` (one value per block: the plain bootstrap)."""
    b = values.size
    counts = bl.block_counts(b, 1000, seed)
    r = bl.BlockValues(values, np.arange(b), b).percentile(counts, 99, seed if tail else None)
    return np.percentile(r, 2.5), np.percentile(r, 97.5), r


def test_an_extreme_percentile_reaches_past_the_sample_maximum_and_is_deterministic():
    g = np.random.default_rng(3)
    x = 20 + g.exponential(10, 150)  # 1.5 values above the p99: "extreme"
    lo, hi, r = _tail_interval(x, 7)
    assert hi > x.max() >= _tail_interval(x, 7, tail=False)[1]  # the plain bootstrap never exceeds the maximum
    assert np.median(r) == pytest.approx(np.percentile(x, 99))  # centred on the sample's own p99
    assert np.array_equal(r, _tail_interval(x, 7)[2])  # same seed, same replicates, bit for bit
    assert not np.array_equal(r, _tail_interval(x, 8)[2])
    # not extreme (15 values above the p90): the exact bootstrap, tail seed or not
    c = bl.block_counts(150, 200, 1)
    v = bl.BlockValues(x, np.arange(150), 150)
    assert np.array_equal(v.percentile(c, 90, 5), v.percentile(c, 90))


def test_the_tail_fixes_the_coverage_of_a_p99_from_a_short_window():
    """The p99 of 150 values sits near the maximum, which a resample cannot exceed: the plain
    bootstrap's 95 % interval misses the true p99 far more often than 5 % of the time; the
    exponential tail brings it near its nominal level (an exponential tail, as a FIFO queue's
    waiting time has)."""
    g = np.random.default_rng(11)
    true_p99 = 20 + 10 * np.log(100)
    plain = tail = 0
    trials = 200
    for t in range(trials):
        x = 20 + g.exponential(10, 150)
        lo, hi, _ = _tail_interval(x, t, tail=False)
        plain += lo <= true_p99 <= hi
        lo, hi, _ = _tail_interval(x, t)
        tail += lo <= true_p99 <= hi
    assert plain / trials < 0.85
    assert 0.9 <= tail / trials <= 0.99
