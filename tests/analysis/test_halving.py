"""The cannot-win rule (analysis.halving): which bound of a running variant's cost is compared
with which end of the best finished variant's interval, and when it may not be applied."""

from __future__ import annotations

import pytest

from analysis.halving import Measured, Rival, cannot_win, optimistic_tok_per_s

PRICE = 3.6  # $/h: $1e-3 per second, so $/1M = 1000 / tok/s
BEST = Rival("a", "A", usd_hi=10.0, usd=8.0, bound="interval")  # A's cost at capacity in [.., $10]/1M


def usd(tok_s: float) -> float:
    return PRICE / (3600 * tok_s) * 1e6


def test_it_stops_when_even_the_optimistic_cost_is_above_the_best_rivals_pessimistic_one():
    # infeasible at 30 req/s where it served 80 tok/s: capacity below 30, goodput <= 88 tok/s (+10 %)
    pts = [Measured(30.0, False, 80.0, 8.0)]
    h = cannot_win(pts, [BEST], usd_per_hour=PRICE, open_loop=True, hi=64)
    assert h.cannot_win and h.own_lower_usd == pytest.approx(usd(88.0)) and h.own_lower_usd > BEST.usd_hi
    assert h.rival == BEST and "cannot win" in h.reason and "$10/1M" in h.reason


def test_the_cost_at_the_best_feasible_load_so_far_is_not_the_bound():
    """Feasible at 10 req/s (80 tok/s: $12.5/1M there, above A's $10) but nothing infeasible yet
    below the top 64: its capacity may still be 64 req/s, where it would cost far less. The cost at
    its best feasible load is an UPPER bound of its cost at capacity: stopping on it would be wrong."""
    pts = [Measured(10.0, True, 80.0, 8.0)]
    assert usd(80.0) > BEST.usd_hi
    h = cannot_win(pts, [BEST], usd_per_hour=PRICE, open_loop=True, hi=64)
    assert not h.cannot_win
    assert h.own_tok_per_s_bound == pytest.approx(64 * 8 * 1.1)  # the top of its range, +10 %


def test_overlapping_intervals_never_stop_and_the_cheapest_rival_is_the_one_compared():
    pts = [Measured(30.0, False, 110.0, 8.0)]  # at least usd(121) = $8.26/1M: below A's $10
    assert not cannot_win(pts, [BEST], usd_per_hour=PRICE, open_loop=True, hi=64).cannot_win
    worse = Rival("b", "B", usd_hi=7.0, usd=6.0, bound="interval")
    h = cannot_win(pts, [BEST, worse], usd_per_hour=PRICE, open_loop=True, hi=64)
    assert h.cannot_win and h.rival == worse  # above B's $7: B is the best rival


def test_an_upper_bound_rival_counts_as_pessimistic_and_no_rival_or_price_means_no_stop():
    at_most = Rival("c", "C", usd_hi=5.0, usd=5.0, bound="at most")  # C's knee not reached: at most $5
    pts = [Measured(30.0, False, 80.0, 8.0)]
    h = cannot_win(pts, [at_most], usd_per_hour=PRICE, open_loop=True, hi=64)
    assert h.cannot_win and "upper bound" in h.reason
    assert not cannot_win(pts, [], usd_per_hour=PRICE, open_loop=True, hi=64).cannot_win
    assert not cannot_win(pts, [BEST], usd_per_hour=0.0, open_loop=True, hi=64).cannot_win


def test_a_closed_loop_has_no_bound_until_a_load_is_infeasible():
    feasible_only = [Measured(8.0, True, 200.0, 8.0)]
    assert optimistic_tok_per_s(feasible_only, open_loop=False, hi=64)[0] is None
    assert not cannot_win(feasible_only, [BEST], usd_per_hour=PRICE, open_loop=False, hi=64).cannot_win
    # then the most served up to the lowest infeasible load: higher loads are not used
    pts = [*feasible_only, Measured(16.0, False, 90.0, 8.0), Measured(32.0, False, 400.0, 8.0)]
    tps, basis = optimistic_tok_per_s(pts, open_loop=False, hi=64, slack=0.0)
    assert tps == 200.0 and "16" in basis
