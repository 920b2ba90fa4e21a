"""Capacity at the SLO with its interval, and choices made on it: two truly equal servers tie, two
whose capacities differ by a fifth do not. The records are the timing server's queue model
(tests/support/mdc.py: Poisson arrivals, C FIFO streams), measured on a grid and judged by the
whole per-point pipeline (analysis.results.point_row, analysis.knee, analysis.selection)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis.cost import Price
from analysis.knee import knees
from analysis.results import point_row
from analysis.schema import SloConfig
from analysis.selection import p_cheaper, select
from tests.support.mdc import simulate

SLO = SloConfig(name="t", ttft_ms=80.0, tpot_ms=1000.0, percentile=90.0, attainment_target=0.9)
LIMITS = {"slo_ttft_ms": 80.0, "slo_tpot_ms": 1000.0}
PRICE = Price(1.0, 1, "on_demand", "test", "cpu", "test", "2026-12-07", True, 0.1, 1.0)
GPU = SimpleNamespace(name="cpu", count=0, tdp_w=None)
LOADS = (16, 20, 24, 28, 32, 36, 40, 44)


def variant_rows(label: str, seed: int, streams: int = 4) -> list[dict]:
    rows = []
    for j, x in enumerate(LOADS):
        df, s = simulate(float(x), streams=streams, duration_s=20.0, seed=seed * 100 + j)
        ident = {"variant_id": label, "variant_label": label, "run_id": f"run-{label}", "point_id": f"{label}@{x}",
                 "repetition": 0, "load_value": float(x), "load_unit": "req/s", "time_to_ready_s": 1.0,
                 "started_at_utc": "2026-12-07T00:00:00+00:00"}  # fmt: skip
        rows.append(point_row(df, s, slo=SLO, price=PRICE, gpu=GPU, ident=ident, n_boot=1000, seed=seed)[0])
    return rows


def choose(rows: list[dict]):
    table = pd.DataFrame(rows)
    return select(table, target=0.9, limits=LIMITS, knee_by_variant=knees(table, 0.9, LIMITS)), table


@pytest.fixture(scope="module")
def pairs():
    equal = [choose(variant_rows("a", 2 * i + 1) + variant_rows("b", 2 * i + 2)) for i in range(5)]
    apart = [choose(variant_rows("four", 20 + 2 * i) + variant_rows("five", 21 + 2 * i, streams=5)) for i in range(2)]
    return equal, apart


def test_truly_equal_servers_tie_with_p_near_a_half(pairs):
    equal, _ = pairs
    ties = [sel.tie for sel, _t in equal]
    # P(a cheaper than b) in the order the variants were named (not ranked): for two draws of one
    # server it must not lean either way. Each pair swings with the grid bracket each draw's knee
    # landed in (a coarse grid: the crossing is interpolated inside it), so the mean over pairs is
    # what is near 0.5, not each one.
    p_ab = []
    for _sel, table in equal:
        kn = knees(table, 0.9, LIMITS)
        p_ab.append(p_cheaper(kn["a"].usd_at_capacity_boot, kn["b"].usd_at_capacity_boot))
    assert all(ties), (ties, p_ab)  # equal within their intervals: no winner declared
    assert 0.3 <= np.mean(p_ab) <= 0.7, p_ab
    for sel, _t in equal:
        assert sel.to_dict()["headline"].startswith("No winner:")


def test_a_fifth_more_capacity_is_told_apart(pairs):
    _, apart = pairs
    for sel, _table in apart:
        assert sel.chosen.variant_id == "five" and not sel.tie
        assert sel.p_cheaper[0]["p_a_cheaper"] >= 0.95
        five, four = sel.ranked[0], sel.ranked[1]
        # the capacities themselves are apart: each interval excludes the other's estimate
        assert five.capacity_rps_lo > four.capacity_rps and four.capacity_rps_hi < five.capacity_rps
        assert sel.to_dict()["headline"].startswith("Deploy five:")
        # the cost compared is the cost at capacity, with an interval around it
        assert five.usd_lo < five.usd < five.usd_hi and five.usd_bound == "estimate"


def test_a_grid_below_the_knee_reports_an_upper_bound_and_never_a_winner():
    low = [r for r in variant_rows("a", 7) if r["load_value"] <= 20] + \
        [r for r in variant_rows("b", 8, streams=5) if r["load_value"] <= 20]  # fmt: skip
    sel, _ = choose(low)
    assert all(c.usd_bound == "at most" and c.knee_status == "all_feasible" for c in sel.ranked)
    assert sel.tie and "was not reached" in sel.to_dict()["headline"]
