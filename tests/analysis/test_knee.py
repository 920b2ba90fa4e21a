"""Knee per variant on hand-built tables: bracket, interpolation, interval, statuses."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.knee import crossing, knees, variant_knee
from analysis.points import pool_repetitions
from tests.analysis.decision_tables import point, table


def curve(attainments, ttft=None, boots=None, variant="A", loads=(1, 2, 4, 8), **kw):
    rows = []
    for i, (x, a) in enumerate(zip(loads, attainments, strict=True)):
        extra = {}
        if ttft is not None:
            extra["ttft_ms_p99"] = ttft[i]
        if boots is not None:
            extra["attainment_boot"] = np.asarray(boots[i], dtype=float)
        rows.append(point(variant, load=x, attainment=a, usd=10.0 / x, **extra, **kw))
    return table(rows)


def test_bracket_and_interpolated_attainment_crossing():
    k = variant_knee(curve([1.0, 0.99, 0.95, 0.5]), target=0.9)
    assert k.status == "bracketed"
    assert (k.knee_load, k.above_load) == (4.0, 8.0)
    # slack 0.05 at 4, -0.40 at 8: 4 + 4 * 0.05 / 0.45
    assert k.estimate == pytest.approx(4 + 4 * 0.05 / 0.45)
    assert k.binding == "attainment"
    assert k.usd_per_1m_goodput == 2.5 and k.usd_per_1m_goodput_lo == pytest.approx(2.25)
    assert (k.point_id, k.above_point_id) == ("A@4", "A@8")
    assert "no attainment replicates" in k.notes[0]


def test_threshold_binds_before_attainment():
    # attainment 0.95 at 8 still meets the target, but TTFT p99 550 > 500 does not
    df = curve([1.0, 0.99, 0.95, 0.95], ttft=[100, 200, 450, 550])
    df["feasible"] = [True, True, True, False]
    k = variant_knee(df, target=0.9, limits={"ttft_ms_p99": 500})
    assert k.estimate == pytest.approx(6.0) and k.binding == "ttft_ms_p99"
    # both cross: the lower crossing wins (attainment at 4.444 before TTFT at 6)
    df = curve([1.0, 0.99, 0.95, 0.5], ttft=[100, 200, 450, 550])
    k = variant_knee(df, target=0.9, limits={"ttft_ms_p99": 500})
    assert k.binding == "attainment" and k.estimate == pytest.approx(4 + 4 * 0.05 / 0.45)


def test_interval_from_attainment_replicates():
    a8 = [0.5] * 20 + [0.45] * 10 + [0.7] * 10  # crossings 4.444, 4.4, 4.8
    boots = [[1.0] * 40, [0.99] * 40, [0.95] * 40, a8]
    k = variant_knee(curve([1.0, 0.99, 0.95, 0.5], boots=boots), target=0.9)
    assert k.estimate_lo == pytest.approx(4.4)  # 2.5 % point, method "lower": sorted[floor(0.025 * 39)] = sorted[0]
    assert k.estimate_hi == pytest.approx(4.8)  # 97.5 %, "higher": sorted[ceil(0.975 * 39)] = sorted[39]
    assert k.conservative_load() == pytest.approx(4.4)


def test_replicates_below_the_range_leave_the_low_end_open():
    # 5 of 40 replicates miss the target at every load (1/8 > 2.5 %): below the range
    boots = [[0.8] * 5 + [1.0] * 35, [0.8] * 5 + [0.99] * 35, [0.8] * 5 + [0.95] * 35, [0.5] * 40]
    k = variant_knee(curve([1.0, 0.99, 0.95, 0.5], boots=boots), target=0.9)
    assert k.estimate_lo is None and k.estimate_hi == pytest.approx(4 + 4 * 0.05 / 0.45)
    assert k.conservative_load() == 4.0  # falls back to the measured knee
    assert any("below the lowest measured load" in n for n in k.notes)


def test_statuses_and_invalid_points_left_out():
    k = variant_knee(curve([1.0, 0.99, 0.95, 0.92]), target=0.9)
    assert k.status == "all_feasible" and k.knee_load == 8.0 and k.estimate is None
    assert "knee not reached" in k.notes[0]
    k = variant_knee(curve([0.5, 0.4, 0.3, 0.2]), target=0.9)
    assert k.status == "none_feasible" and k.knee_load is None
    df = curve([1.0, 0.99, 0.95, 0.5])
    df.loc[2, "verdict"] = "invalid"
    df.loc[2, "verdict_reasons"] = [[{"kind": "saturated"}]]
    k = variant_knee(df, target=0.9)
    assert (k.knee_load, k.above_load) == (2.0, 8.0)
    assert k.invalid_points == [{"point_id": "A@4", "load_value": 4.0, "reasons": [{"kind": "saturated"}]}]
    df["verdict"] = "invalid"
    assert variant_knee(df, target=0.9).status == "no_valid_points"


def test_feasible_again_above_an_infeasible_point_is_noted_and_fitted_monotone():
    # slacks on the SLO scale (attainment - 0.9) / 0.1: 1, -4, 0.5, -6; the fit runs on them clipped
    # to [-1, 1]: 1, -1, 0.5, -1 -> pool 2 and 4 req/s: -0.25 each -> crossing 1 + 1 / 1.25
    k = variant_knee(curve([1.0, 0.5, 0.95, 0.3]), target=0.9)
    assert (k.knee_load, k.above_load) == (1.0, 2.0)
    assert k.estimate == pytest.approx(1.8)
    assert "not monotone" in k.notes[0] and "feasible again at 4 req/s" in k.notes[0]


def test_one_noisy_point_below_the_knee_is_outvoted_by_its_neighbours():
    # 2 req/s missed the target once (0.88) between three clean loads: the monotone fit pools it with
    # 4 and 6 req/s ((-0.2 + 0.5 + 0.5) / 3 > 0), so the knee stays between 6 and 8 req/s
    k = variant_knee(curve([1.0, 0.88, 0.95, 0.95, 0.5], loads=(1, 2, 4, 6, 8)), target=0.9)
    assert (k.knee_load, k.above_load) == (6.0, 8.0) and 6.0 < k.estimate < 8.0
    # the old rule (first infeasible point) would have put it at 1 req/s
    assert k.estimate > 2.0


def test_a_latency_replicate_moves_the_interval_jointly_with_attainment():
    # attainment is safe everywhere; the TTFT p99 replicates at 4 req/s straddle the 500 ms limit in
    # 20 of 40 replicates: those cross between 2 and 4, the rest between 4 and 8
    df = curve([1.0, 1.0, 1.0, 1.0], ttft=[100, 200, 450, 900])
    df["slo_ttft_ms"] = [100.0, 200.0, 450.0, 900.0]
    df["attainment_boot"] = [np.ones(40)] * 4
    df["slo_ttft_ms_boot"] = [np.full(40, 100.0), np.full(40, 200.0), np.r_[np.full(20, 450.0), np.full(20, 600.0)],
                              np.full(40, 900.0)]  # fmt: skip
    df["feasible"] = [True, True, True, False]
    k = variant_knee(df, target=0.9, limits={"slo_ttft_ms": 500})
    assert k.binding == "slo_ttft_ms" and k.estimate == pytest.approx(4 + 4 * 50 / 450)
    # replicate crossing with 600 ms at 4: 2 + 2 * (300 / 400) = 3.5
    assert k.estimate_lo == pytest.approx(3.5) and k.estimate_hi == pytest.approx(4 + 4 * 50 / 450)
    # latency held at its estimate (the old interval) would have had zero width
    df2 = df.drop(columns=["slo_ttft_ms_boot"])
    k2 = variant_knee(df2, target=0.9, limits={"slo_ttft_ms": 500})
    assert k2.estimate_lo == k2.estimate_hi == pytest.approx(k.estimate)


def test_crossing_with_a_missing_percentile_fails_at_the_upper_point():
    status, i, x, binding = crossing(np.array([1.0, 2.0]), {"attainment": np.array([0.1, 0.1]),
                                                            "ttft": np.array([5.0, -np.inf])})  # fmt: skip
    assert (status, i, x, binding) == ("bracketed", 0, 1.0, "ttft")


def test_repetitions_pool_before_the_knee():
    rows = [point("A", load=1, attainment=1.0, rep=0), point("A", load=1, attainment=0.96, rep=1),
            point("A", load=2, attainment=0.88, rep=0), point("A", load=2, attainment=0.84, rep=1)]  # fmt: skip
    pooled = pool_repetitions(table(rows))
    assert len(pooled) == 2 and pooled["repetitions"].tolist() == [2, 2]
    assert pooled["attainment"].tolist() == pytest.approx([0.98, 0.86])
    k = knees(table(rows), target=0.9)["A"]
    assert k.estimate == pytest.approx(1 + 0.08 / 0.12)


def test_a_load_measured_twice_is_judged_by_its_mean_not_its_unluckier_window():
    """The knee search measures an uncertain load again to settle it: the decision pools the two by
    their mean (slo percentile and p_feasible), as the search does; the worst window alone would
    put the knee below a load the search found feasible. Shown columns keep the worst repetition."""
    slo = {"slo_ttft_ms": 80.0}
    rows = [point("A", load=10, slo_ttft_ms=40.0, p_feasible=1.0),
            point("A", load=20, slo_ttft_ms=86.0, p_feasible=0.35, feasible=False, rep=0, ttft_ms_p99=86.0),
            point("A", load=20, slo_ttft_ms=70.0, p_feasible=0.85, rep=1, ttft_ms_p99=70.0),
            point("A", load=30, slo_ttft_ms=160.0, p_feasible=0.0, feasible=False)]  # fmt: skip
    pooled = pool_repetitions(table(rows)).set_index("load_value")
    assert pooled.loc[20.0, "slo_ttft_ms"] == pytest.approx(78.0) and bool(pooled.loc[20.0, "feasible"])
    assert pooled.loc[20.0, "ttft_ms_p99"] == 86.0  # shown: the worst repetition
    k = knees(table(rows), target=0.9, limits=slo)["A"]
    # slack 2/80 at 20, -80/80 at 30: the crossing just above 20 (the worst window: below 20)
    assert k.status == "bracketed" and k.knee_load == 20.0 and k.estimate == pytest.approx(20 + 10 * 0.025 / 1.025)
    # mean p_feasible below one half: infeasible, though its mean percentile is within the limit
    rows[2]["p_feasible"] = 0.6
    assert not bool(pool_repetitions(table(rows)).set_index("load_value").loc[20.0, "feasible"])
    # a repetition infeasible for a reason its slacks do not show (stopped early) keeps the load infeasible
    rows[2].update(p_feasible=0.85, feasible=False)
    rows[1].update(slo_ttft_ms=70.0, feasible=True, p_feasible=0.9)
    k = knees(table(rows), target=0.9, limits=slo)["A"]
    assert k.knee_load == 10.0 and k.above_load == 20.0


def test_a_load_measured_three_times_is_judged_by_its_median_window():
    """Three windows of one load (a coverage search's: p99 TTFT 65.7, 76.8 and 129.8 ms against
    80 ms, two of three feasible). A window's p99 is skewed right, so their mean (90.8 ms) judged the
    load infeasible and put the knee below it; the knee is where the median window meets the
    limit, and so is the pooled percentile. Its replicates pool by the median of the draws."""
    from analysis.points import pool_boot

    slo = {"slo_ttft_ms": 80.0}
    rows = [point("A", load=10, slo_ttft_ms=40.0, p_feasible=1.0),
            point("A", load=20, slo_ttft_ms=65.7, p_feasible=0.9, rep=0, ttft_ms_p99=65.7),
            point("A", load=20, slo_ttft_ms=129.8, p_feasible=0.05, feasible=False, rep=1, ttft_ms_p99=129.8),
            point("A", load=20, slo_ttft_ms=76.8, p_feasible=0.6, rep=2, ttft_ms_p99=76.8),
            point("A", load=30, slo_ttft_ms=160.0, p_feasible=0.0, feasible=False)]  # fmt: skip
    pooled = pool_repetitions(table(rows)).set_index("load_value")
    assert pooled.loc[20.0, "slo_ttft_ms"] == pytest.approx(76.8) and pooled.loc[20.0, "ttft_ms_p99"] == 129.8
    k = knees(table(rows), target=0.9, limits=slo)["A"]
    assert k.status == "bracketed" and k.knee_load == 20.0 and k.estimate > 20.0
    b = [np.full(4, 65.7), np.full(4, 129.8), np.full(4, 76.8)]
    med, mean = pool_boot(b, 0, "median"), pool_boot(b, 0)
    assert set(np.round(med, 1)) <= {65.7, 76.8, 129.8} and not np.allclose(med, mean)


def test_an_invalid_repetition_does_not_take_its_loads_valid_ones_with_it():
    """A load measured twice whose second window was invalid (the generator saturated): the valid
    window still counts, so an infeasible load above the knee stays above it (before, the pooled
    load was invalid, left out, and the knee read "not reached" below it)."""
    slo = {"slo_ttft_ms": 80.0}
    rows = [point("A", load=10, slo_ttft_ms=40.0, p_feasible=1.0),
            point("A", load=15, slo_ttft_ms=82.0, p_feasible=0.45, feasible=False, rep=0),
            point("A", load=15, slo_ttft_ms=82.0, p_feasible=0.47, feasible=False, rep=1, verdict="invalid")]  # fmt: skip
    pooled = pool_repetitions(table(rows))
    assert pooled["verdict"].tolist() == ["valid", "valid"] and pooled["repetitions"].tolist() == [1, 1]
    k = knees(table(rows), target=0.9, limits=slo)["A"]
    assert k.status == "bracketed" and (k.knee_load, k.above_load) == (10.0, 15.0)
    rows[1]["verdict"] = "invalid"  # every repetition invalid: the load is left out
    k = knees(table(rows), target=0.9, limits=slo)["A"]
    assert k.status == "all_feasible" and [p["load_value"] for p in k.invalid_points] == [15.0]
