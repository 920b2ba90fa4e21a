"""Seeded bootstrap intervals: exact reproducibility, agreement with brute-force resampling,
coverage on a known distribution, repetition spread and the too-few-samples warning."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.confidence import (
    bootstrap,
    goodput_ci,
    interval,
    latency_cis,
    min_samples,
    percentile_ci,
    percentile_replicates,
    rng,
    too_few_warning,
)
from analysis.points import pool_boot, pool_repetitions
from tests.analysis.decision_tables import point, table


def sample(n, seed=7):
    return np.random.default_rng(seed).exponential(1.0, n)


def test_same_seed_same_replicates_bit_for_bit():
    x = sample(500)
    for stat in ("p99", "p50", "mean", "sum", np.median):
        a, b = bootstrap(x, stat, n=200, seed=3), bootstrap(x, stat, n=200, seed=3)
        assert np.array_equal(a, b), stat
        assert not np.array_equal(a, bootstrap(x, stat, n=200, seed=4)), stat
    assert percentile_ci(x, 90, seed=1) == percentile_ci(x, 90, seed=1)


def test_order_statistic_method_matches_brute_force_resampling():
    x = sample(300)
    fast = percentile_replicates(x, 90, 20_000, rng(1))
    idx = np.random.default_rng(2).integers(0, x.size, size=(20_000, x.size))
    slow = np.percentile(x[idx], 90, axis=1)
    # two independent Monte-Carlo estimates of the same bootstrap distribution
    assert fast.mean() == pytest.approx(slow.mean(), rel=0.01)
    assert fast.std() == pytest.approx(slow.std(), rel=0.05)
    assert np.quantile(fast, [0.025, 0.975]) == pytest.approx(np.quantile(slow, [0.025, 0.975]), rel=0.02)


def test_mean_and_sum_paths_agree_with_the_sample():
    x = np.array([1.0, 2.0, 2.0, 5.0])
    m = bootstrap(x, "mean", n=20_000, seed=0)
    assert m.mean() == pytest.approx(2.5, rel=0.01)
    assert set(np.unique(bootstrap(x, "sum", n=2000, seed=0) % 1)) == {0.0}  # sums of resampled integers


def test_constant_values_give_a_zero_width_interval():
    ci = percentile_ci(np.full(200, 42.0), 99)
    assert (ci["estimate"], ci["lo"], ci["hi"], ci["warning"]) == (42.0, 42.0, 42.0, None)


def test_coverage_of_the_median_of_an_exponential():
    true_median = np.log(2)
    hits = 0
    for trial in range(200):
        x = np.random.default_rng(1000 + trial).exponential(1.0, 200)
        ci = percentile_ci(x, 50, n=400, seed=trial)
        hits += ci["lo"] <= true_median <= ci["hi"]
    assert 0.88 <= hits / 200 <= 0.99  # nominal 0.95


def test_too_few_values_for_the_percentile_warns():
    assert (min_samples(99), min_samples(90), min_samples(50)) == (100, 10, 2)
    assert percentile_ci(sample(50), 99, what="ttft_ms")["warning"] == (
        "ttft_ms p99 from 50 values (< 100): the interval is not trustworthy"
    )
    assert too_few_warning(100, 99) is None
    assert percentile_ci(sample(50), 50)["warning"] is None


def test_repetitions_put_run_to_run_spread_into_the_interval():
    a, b = 10 + 0.01 * sample(400, 1), 20 + 0.01 * sample(400, 2)
    single = percentile_ci(a, 50)
    assert single["hi"] - single["lo"] < 0.01
    both = percentile_ci([a, b], 50, n=2000)
    assert both["estimate"] == pytest.approx((np.percentile(a, 50) + np.percentile(b, 50)) / 2)
    assert both["lo"] < 10.1 and both["hi"] > 19.9  # resampling the two runs spans both


def test_goodput_and_cost_intervals():
    n = 1000
    meets = np.arange(n) % 10 != 0  # 900 meet
    tok = np.full(n, 10)
    out = goodput_ci([{"meets": meets, "output_tokens": tok, "window_s": 100.0}], usd_per_hour=3.6, n=500, seed=0)
    g = out["goodput_rps"]
    assert g["estimate"] == pytest.approx(9.0) and g["lo"] < 9.0 < g["hi"]
    assert out["output_tok_per_s"]["estimate"] == pytest.approx(100.0)
    assert out["output_tok_per_s"]["lo"] == out["output_tok_per_s"]["hi"] == pytest.approx(100.0)  # N and tokens fixed
    # $0.10 for the window over 9000 goodput tokens -> $11.11 per 1M
    c = out["usd_per_1m_goodput"]
    assert c["estimate"] == pytest.approx(0.1 / 9000 * 1e6) and c["lo"] < c["estimate"] < c["hi"]
    assert c["replicates"].shape == (500,)
    again = goodput_ci([{"meets": meets, "output_tokens": tok, "window_s": 100.0}], usd_per_hour=3.6, n=500, seed=0)
    assert np.array_equal(again["usd_per_1m_goodput"]["replicates"], c["replicates"])


def test_latency_cis_names_each_metric_and_percentile():
    rep = {"ttft_ms": sample(300), "tpot_ms": sample(300, 8), "e2e_ms": np.append(sample(300, 9), np.nan)}
    out = latency_cis([rep], n=100)
    assert sorted(out) == sorted(f"{m}_p{q}" for m in ("ttft_ms", "tpot_ms", "e2e_ms") for q in (50, 90, 99))
    assert out["e2e_ms_p50"]["estimate"] == pytest.approx(np.percentile(rep["e2e_ms"][:-1], 50))
    assert interval(np.array([np.nan])) == (None, None)


def test_pooled_repetitions_use_the_one_interval_function():
    # analysis.points pools repetitions' cost replicates and takes their interval with this module's
    # interval (np.quantile); it had its own np.percentile copy, which differed in the last digit.
    g = np.random.default_rng(3)
    boots = [g.gamma(4.0, 0.5, 400), g.gamma(4.0, 0.6, 400)]
    rows = [point("A", load=1, usd=2.0, rep=r, boot=b) for r, b in enumerate(boots)]
    pooled = pool_repetitions(table(rows)).iloc[0]
    assert (pooled["usd_per_1m_goodput_lo"], pooled["usd_per_1m_goodput_hi"]) == interval(pool_boot(boots, 0))
    assert interval(None) == (None, None)
