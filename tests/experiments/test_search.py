"""The load-point planners (experiments.sweeps.search) against synthetic curves with a known knee."""

from __future__ import annotations

import json
import math

import pytest

from experiments.sweeps.search import GridSearch, KneeSearch, SearchConfig, bracket, planner_for


def drive(planner, feasible):
    """Run `planner` to its end against feasible(load) -> bool; the loads it asked for, in order."""
    loads = []
    while (x := planner.next_load()) is not None:
        assert planner.next_load() == x  # asking again before observing gives the same load
        loads.append(x)
        planner.observe(x, feasible(x), "" if feasible(x) else "ttft_ms p99 too high")
        assert len(loads) <= 50, "the planner does not stop"
    return loads


def test_continuous_knee_within_tolerance_by_geometric_bisection():
    s = KneeSearch(1, 64, tolerance=0.05, probe_top=False)
    loads = drive(s, lambda x: x <= 23.7)
    st = s.state()
    assert st["status"] == "converged" and st["knee"] == max(x for x in loads if x <= 23.7)
    lo, hi = st["bracket"]
    assert lo <= 23.7 < hi and (hi - lo) / lo <= 0.05 + 1e-9  # the true knee is inside the final bracket
    assert (23.7 - st["knee"]) / 23.7 <= 0.05
    assert loads[0] == pytest.approx(8.0, rel=0.05)  # the geometric middle of [1, 64], not 32
    assert len(loads) <= 7 == s.worst_case_points()  # ceil(log2(88 leaves)): [1, 64] at 5 %
    assert all(x == float(f"{x:.4g}") for x in loads)  # proposed as measured: 4 significant digits


def test_integer_knee_is_exact_below_one_user_of_tolerance():
    s = KneeSearch(1, 64, integer=True, probe_top=False)
    loads = drive(s, lambda x: x <= 13)
    assert all(x == int(x) for x in loads)
    assert s.state()["knee"] == 13 and s.state()["bracket"] == [13, 14]  # 5 % of 13 < 1 user: exact
    assert loads == [26, 13, 19, 16, 14]
    assert len(loads) <= s.worst_case_points() == 6


def test_bracketing_keeps_the_knee_between_the_measured_ends():
    s = KneeSearch(1, 64, integer=True)
    knee = 37
    while (x := s.next_load()) is not None:
        s.observe(x, x <= knee)
        f, i = s.state()["bracket"]
        assert (f is None or f <= knee) and (i is None or i > knee)
        assert s.state()["status"] in ("bracketing", "bracketed", "converged")
    f, i = s.state()["bracket"]
    assert (f, i) == (37, 38)


@pytest.mark.parametrize(("lo", "hi", "integer", "worst"), [
    (1, 8, True, 4), (1, 16, True, 5), (1, 32, True, 6), (1, 64, True, 6), (1, 256, True, 7),
    (1, 2, False, 5), (10, 80, False, 6), (1, 64, False, 7),
])  # fmt: skip
def test_worst_case_points_is_the_information_bound(lo, hi, integer, worst):
    # pure bisection (probe_top=false) meets the bound; measuring the top early costs at most one more
    s = KneeSearch(lo, hi, integer=integer, probe_top=False)
    leaves = len(s.chain(None, None)) + 1
    assert s.worst_case_points() == worst == math.ceil(math.log2(leaves))
    knees = range(lo - 1, hi + 1) if integer else [lo * (hi / lo) ** (k / 200) for k in range(-2, 203)]
    used = [len(drive(KneeSearch(lo, hi, integer=integer, probe_top=False), lambda x, k=k: x <= k)) for k in knees]
    assert max(used) == worst
    top = KneeSearch(lo, hi, integer=integer)
    assert worst <= top.worst_case_points() <= worst + 1
    used = [len(drive(KneeSearch(lo, hi, integer=integer), lambda x, k=k: x <= k)) for k in knees]
    assert max(used) == top.worst_case_points()


def test_resolution_of_a_10_point_grid_takes_4_points():
    # like with like: a geometric 10-point grid over [1, 64] resolves the knee to 64^(1/9) - 1 = 59 %
    assert KneeSearch(1, 64, tolerance=64 ** (1 / 9) - 1, integer=True, probe_top=False).worst_case_points() == 4


def test_none_feasible_stops_at_lo():
    s = KneeSearch(2, 64, integer=True)
    loads = drive(s, lambda x: False)
    st = s.state()
    assert st["status"] == "none_feasible" and st["knee"] is None and loads[-1] == 2
    assert st["bracket"] == [None, 2] and len(loads) <= s.worst_case_points()


def test_all_feasible_stops_at_hi_with_a_lower_bound():
    s = KneeSearch(0.5, 40.0)
    loads = drive(s, lambda x: True)
    st = s.state()
    assert st["status"] == "all_feasible" and st["knee"] == 40.0 and loads[-1] == 40.0
    assert any("lower bound" in n for n in st["notes"])


def test_budget_caps_the_points():
    s = KneeSearch(1, 64, integer=True, max_points=3)
    loads = drive(s, lambda x: x <= 8)
    st = s.state()
    assert loads == [26, 13, 6] and st["status"] == "budget_exhausted"
    assert st["knee"] == 6 and st["bracket"] == [6, 13] and st["worst_case_points"] == 3
    assert "after 3 measured points" in st["stop_rule"]


def test_non_monotone_trusts_the_lower_infeasible_point():
    s = KneeSearch(1, 64, integer=True)
    s.observe(16, True)
    s.observe(8, False, "noise")  # infeasible below a feasible load
    f, i, notes = bracket(s.observations)
    assert (f, i) == (None, 8) and "not used" in notes[0]
    nxt = s.next_load()
    assert 1 <= nxt < 8  # the search goes on below the infeasible point
    s.observe(nxt, True)
    s.observe(32, True)  # feasible above the lowest infeasible load: recorded, not used
    assert s.state()["bracket"][1] == 8 and s.state()["points"][-1]["load"] == 32
    # the same load seen both ways is pooled, not decided by its last verdict: mean 0.5 >= P_FEASIBLE
    assert bracket([]) == (None, None, [])
    t = KneeSearch(1, 64, integer=True)
    t.observe(10, True)
    t.observe(10, False)
    assert bracket(t.observations)[:2] == (10, None)
    assert t.state()["pooled"] == [{"load": 10, "measurements": 2, "p_feasible": 0.5, "feasible": True,
                                    "uncertain": True, "verdicts": [True, False]}]  # fmt: skip


def test_start_gallops_from_a_prior():
    s = KneeSearch(1, 64, integer=True, start=8)
    loads = drive(s, lambda x: x <= 13)
    assert loads[:2] == [8, 16] and s.state()["knee"] == 13
    assert len(loads) == 5 and s.worst_case_points() == 9  # good prior: cheaper; bad prior: dearer


def test_state_is_json_and_names_the_stop_rule():
    s = KneeSearch(1, 64, integer=True)
    assert s.state()["status"] == "not_started"
    drive(s, lambda x: x <= 13)
    st = json.loads(json.dumps(s.state(), allow_nan=False))
    assert "stop when" in st["stop_rule"] and "0.05" in st["stop_rule"] and "adjacent" in st["stop_rule"]
    assert [p["load"] for p in st["points"]] == [26, 13, 19, 16, 14]
    assert st["points"][0] == {"load": 26, "feasible": False, "reason": "ttft_ms p99 too high", "p_feasible": None}
    assert st["done"] and st["points_used"] == 5 and st["range"] == [1, 64]


def test_grid_yields_its_points_and_reports_like_analysis_knee():
    g = GridSearch([1, 2, 4, 8, 16])
    assert drive(g, lambda x: x <= 5) == [1, 2, 4, 8, 16]
    st = json.loads(json.dumps(g.state()))
    assert st["knee"] == 4 and st["bracket"] == [4, 8] and st["outcome"] == "bracketed" and st["done"]
    assert st["points_used"] == st["worst_case_points"] == 5 and "grid" in st["stop_rule"]


def test_planner_for_builds_both():
    points = [1, 2, 4, 8, 16, 32, 64]
    assert isinstance(planner_for(None, points), GridSearch)
    assert isinstance(planner_for(SearchConfig(), points), GridSearch)
    k = planner_for(SearchConfig(kind="knee"), points, kind="concurrency")
    assert isinstance(k, KneeSearch) and k.integer and (k.lo, k.hi) == (1, 64)
    r = planner_for(SearchConfig(kind="knee", lo=0.5, hi=20, max_points=4), points, kind="poisson")
    assert not r.integer and (r.lo, r.hi, r.max_points) == (0.5, 20, 4)
    assert planner_for(SearchConfig(kind="knee", integer=True), points, kind="poisson").integer
    with pytest.raises(ValueError, match="needs a range"):
        planner_for(SearchConfig(kind="knee"), [4.0])
    with pytest.raises(ValueError, match="unknown search.kind"):
        planner_for(SearchConfig(kind="random"), points)


def test_bad_settings_are_refused():
    for kw in ({"lo": 0, "hi": 4}, {"lo": 5, "hi": 4}, {"lo": 1, "hi": 4, "tolerance": 0},
               {"lo": 1, "hi": 4, "max_points": 0}, {"lo": 1, "hi": 4, "start": 9}):  # fmt: skip
        with pytest.raises(ValueError):
            KneeSearch(**kw)
    with pytest.raises(ValueError):
        KneeSearch(0.2, 0.9, integer=True)  # no whole number of users in the range
    with pytest.raises(ValueError):
        GridSearch([])


def test_a_bracket_that_rounding_cannot_split_is_converged():
    # the reported loop: F = 15.37, I = 16.14 (5.01 % apart at 5 %); 15.37 x 1.05 = 16.1385 would be
    # measured as 16.14, the infeasible end itself, again and again
    for outcome in (True, False):
        s = KneeSearch(1.0, 32.0)
        s.observe(15.37, True)
        s.observe(16.14, False, "ttft_ms p99 too high")
        assert s.next_load() == 16.13  # rounded down: the one load left in between, then the end
        s.observe(16.13, outcome)
        assert s.status() == "converged" and s.next_load() is None
        assert s.state()["knee"] == (16.13 if outcome else 15.37)
    # a bracket one rounding unit wide has nothing to measure in between
    s = KneeSearch(1.0, 32.0, tolerance=1e-6)
    s.observe(16.13, True)
    s.observe(16.14, False)
    assert s.chain(16.13, 16.14) == [] and s.status() == "converged" and s.next_load() is None
    # the ends of the range are proposed as they are measured, too
    chain = KneeSearch(0.123456, 7.654321).chain(None, None)
    assert (chain[0], chain[-1]) == (0.1235, 7.654) and all(x == float(f"{x:.4g}") for x in chain)


@pytest.mark.parametrize("integer", [False, True])
def test_a_noisy_feasibility_oracle_never_keeps_the_search_going(integer):
    """Near the knee feasibility is a coin toss: whatever the outcomes, every probe lies strictly
    inside the open bracket, so the search ends within its own worst case, never proposes a load it
    measured, and finds the knee within the tolerance when the noise is confined to a narrow band."""
    import random

    lo, hi, knee = (1, 64, 23) if integer else (1.0, 64.0, 15.7)
    worst = KneeSearch(lo, hi, integer=integer).worst_case_points()
    close = 0
    for seed in range(300):
        rng = random.Random(seed)

        def feasible(x, rng=rng):  # certain far from the knee, random within 10 % of it
            p = 1.0 if x < knee * 0.9 else 0.0 if x > knee * 1.1 else 1.0 - (x - knee * 0.9) / (knee * 0.2)
            return rng.random() < p

        s = KneeSearch(lo, hi, integer=integer)
        loads = drive(s, feasible)
        assert len(loads) <= worst, (seed, loads)
        assert len(set(loads)) == len(loads), (seed, loads)
        st = s.state()
        assert st["status"] in ("converged", "none_feasible", "all_feasible"), (seed, st["status"])
        if st["knee"] is not None and abs(st["knee"] - knee) / knee <= 0.1 + s.tolerance:
            close += 1
    assert close >= 0.9 * 300  # the noise band is +-10 %: the knee found within it (+ tolerance)


@pytest.mark.parametrize("integer", [False, True])
def test_a_noisy_oracle_with_p_feasible_pools_and_ends_within_the_margin(integer):
    """Each measurement reads the load's margin to the SLO with noise, and says how sure it is
    (p_feasible, a logistic function of that reading: the bootstrap's share of feasible replicates).
    Over 300 seeds the search always ends within worst_case_points() + HARD_CAP_MARGIN, proposes a
    load twice only as a re-measure of an uncertain end of its final bracket, and pooling finds the
    knee within the tolerance more often than the last verdict did."""
    import random

    from experiments.sweeps import search

    lo, hi, knee = (1, 64, 23) if integer else (1.0, 64.0, 15.7)
    sigma = 0.03  # run-to-run spread of a measurement's reading, relative to the knee (3 %)
    bound = KneeSearch(lo, hi, integer=integer).worst_case_points() + search.HARD_CAP_MARGIN
    found = {True: 0, False: 0}
    used, capped = [], 0
    for seed in range(300):
        for with_p in (True, False):
            rng = random.Random(seed)
            s = KneeSearch(lo, hi, integer=integer)
            loads = []
            while (x := s.next_load()) is not None:
                if x in loads:  # the only way a load comes back: an uncertain end, re-measured
                    st = s.state()
                    assert st["status"] == "remeasuring" and x in st["bracket"], (seed, loads, x)
                    (p,) = [p for p in st["pooled"] if p["load"] == x]
                    assert search.P_UNCERTAIN_LO < p["p_feasible"] < search.P_UNCERTAIN_HI, (seed, p)
                    assert p["measurements"] < search.MAX_MEASUREMENTS_PER_LOAD
                loads.append(x)
                margin = (knee - x) / knee + rng.gauss(0, sigma)
                p_feasible = 1 / (1 + math.exp(-1.7 * margin / sigma))
                s.observe(x, p_feasible >= 0.5, "", p_feasible if with_p else None)
                assert len(loads) <= bound, (seed, loads)
            st = s.state()
            assert st["remeasures"] <= search.MAX_REMEASURES and len(st["anchors"]) <= search.MAX_ANCHORS
            assert st["points_used"] == len(loads)
            if not with_p:  # verdicts alone never look uncertain once: no load is measured twice
                assert len(set(loads)) == len(loads) and st["status"] in ("converged", "none_feasible", "all_feasible")
            else:  # a re-measure that flips a verdict reopens the bracket: the cap may stop what follows
                assert st["status"] in ("converged", "none_feasible", "all_feasible", "budget_exhausted"), (seed, st)
                used.append(len(loads))
                capped += st["status"] == "budget_exhausted"
            if st["knee"] is not None and abs(st["knee"] - knee) / knee <= s.tolerance:
                found[with_p] += 1
    # measured (300 seeds): pooling finds the knee within 5 % in 289/300 (continuous) and 298/300
    # (integer) searches, the last verdict alone in 254 and 275; the price is the margin: 9.75 of at
    # most 10 points (continuous), 7.81 of at most 9 (integer); 1 and 6 searches stopped by the cap
    assert found[True] >= 0.95 * 300 and found[True] > found[False], found
    assert max(used) <= bound and sum(used) / len(used) <= bound
    print(f"integer={integer}: knee within {s.tolerance:.0%} in {found[True]}/300 pooled, {found[False]}/300 by the "
          f"last verdict; points mean {sum(used) / len(used):.2f}, max {max(used)} (bound {bound}); capped {capped}")


def test_an_uncertain_end_is_measured_again_and_pooled(monkeypatch):
    from experiments.sweeps import search

    s = KneeSearch(1, 64, integer=True)
    for load, ok, p in ((26, False, 0.0), (13, True, 1.0), (14, False, 0.45)):
        s.observe(load, ok, "", p)
    # [13, 14] meets the stop rule, but 14 is a coin toss: measured again before stopping
    assert s.status() == "remeasuring" and s.next_load() == 14
    s.observe(14, True, "", 0.75)  # pooled (0.45 + 0.75) / 2 = 0.6: feasible, not the last verdict alone
    st = s.state()
    assert st["bracket"] == [14, 26] and st["status"] == "bracketed" and st["remeasures"] == 1
    assert {"load": 14, "measurements": 2, "p_feasible": 0.6, "feasible": True, "uncertain": True,
            "verdicts": [False, True]} in st["pooled"]  # fmt: skip
    nxt = s.next_load()
    assert 14 < nxt < 26  # the bracket reopened: bisection goes on, never onto a measured load
    while (x := s.next_load()) is not None:
        s.observe(x, x <= 15, "", 1.0 if x <= 15 else 0.0)
    st = s.state()
    assert st["status"] == "converged" and st["knee"] == 15 and st["points_used"] <= st["point_cap"] == 10
    assert "14 measured 2 times (infeasible, feasible): pooled p_feasible 0.60, feasible" in st["notes"]
    assert st["stopped"].startswith("converged: [15, 16] meets the stop rule") and "1 of them measuring" in st["stopped"]
    assert "(0.1, 0.9) is measured again" in st["stop_rule"] and "at most 10 points" in st["stop_rule"]
    # per load at most MAX_MEASUREMENTS_PER_LOAD, in all at most HARD_CAP_MARGIN re-measures
    p_of = {1: 1.0, 2: 0.7, 3: 0.2, 4: 0.0}  # 2 and 3 stay uncertain however often they are measured
    s = KneeSearch(1, 4, integer=True)
    loads = []
    while (x := s.next_load()) is not None:
        loads.append(x)
        s.observe(x, x <= 2, "", p_of[x])
    st = s.state()
    # 1: the anchor below the uncertain F = 2; then the re-measures, the end measured fewer times first
    assert loads == [2, 4, 3, 1, 2, 3] and st["remeasures"] == 2 == search.MAX_REMEASURES and st["anchors"] == [1]
    assert st["status"] == "converged" and st["knee"] == 2
    assert "still uncertain: 2 (p_feasible 0.70), 3 (p_feasible 0.20)" in st["stopped"]
    assert any("stopped at the margin of 2 re-measures" in n for n in st["notes"])
    monkeypatch.setattr(search, "MAX_REMEASURES", 5)  # a wider margin: the per-load cap stops it
    monkeypatch.setattr(search, "HARD_CAP_MARGIN", 6)
    s = KneeSearch(1, 4, integer=True)
    loads = []
    while (x := s.next_load()) is not None:
        loads.append(x)
        s.observe(x, x <= 2, "", p_of[x])
    assert loads == [2, 4, 3, 1, 2, 3, 2, 3] and s.remeasures() == 4 < search.MAX_REMEASURES
    assert {p["load"]: p["measurements"] for p in s.state()["pooled"]} == {2: 3, 4: 1, 3: 3, 1: 1}
    assert sum("3 measurements of it" in n for n in s.state()["notes"]) == 2


def test_an_uncertain_lowest_feasible_load_gets_one_anchor_below_it():
    """Bisection with probe_top measures the middle, then hi, then creeps up: the bracket's feasible
    end F is often the lowest load measured. Where F is not sure (p_feasible < P_ANCHOR), a replicate
    in which F fails has nothing feasible below it, and the knee's interval is open below; so one
    load F / (1 + tolerance)^2 is measured before stopping, and none where F, or a load below it, is sure."""
    from experiments.sweeps import search

    def run(p_of_f: float, lower=()):
        s = KneeSearch(10.0, 44.0)
        for x, ok, p in lower:
            s.observe(x, ok, "", p)
        loads = []
        while (x := s.next_load()) is not None:
            loads.append(x)
            ok = x <= 20.69
            s.observe(x, ok, "", (p_of_f if x == 20.69 else 1.0) if ok else 0.0)
        return s, loads

    s, loads = run(0.8)
    st = s.state()
    a = round(20.69 / 1.05**2, 2)  # 18.77
    assert loads[0] == 20.69 and a in loads and st["anchors"] == [a]
    assert set(loads[loads.index(a) + 1 :]) == {20.69}  # the anchor first, then F's re-measures (p 0.8: uncertain)
    assert st["status"] == "converged" and st["knee"] == 20.69 and f"anchor below the bracket: {a:g}" in st["stopped"]
    assert len(loads) <= s.point_cap() == s.worst_case_points() + search.HARD_CAP_MARGIN
    assert "anchor" in st["stop_rule"]
    for p_f, lower in ((0.99, ()), (0.8, ((15.0, True, 1.0),))):  # F sure, or a sure load below it: no anchor
        s, loads = run(p_f, lower)
        assert s.state()["anchors"] == [] and a not in loads, (p_f, lower, loads)
    # without p_feasible (verdicts only) every measurement counts as sure: no anchor
    s = KneeSearch(10.0, 44.0)
    assert all(x != a for x in drive(s, lambda x: x <= 20.69)) and s.state()["anchors"] == []


def test_without_max_points_a_hard_cap_still_holds():
    s = KneeSearch(1, 64, integer=True)
    cap = s.point_cap()
    assert cap == s.worst_case_points() + 3  # 2 re-measures, 1 anchor
    s.observe(40, False)
    for k in range(1, cap):  # replayed from elsewhere: feasible above the infeasible 40, never used
        s.observe(40 + k, True)
    assert s.state()["bracket"] == [None, 40]
    assert s.status() == "budget_exhausted" and s.next_load() is None
    assert "a margin of 3" in s.state()["notes"][-1]


def test_a_feasible_top_is_known_after_two_points():
    # the capacity review's case: [16, 32] users, knee above 32 - bisection crept up 16, 24, 28, 30,
    # 31, 32 (six points); measuring the top early says "all feasible" after the first probe and hi
    s = KneeSearch(16, 32, integer=True)
    loads = drive(s, lambda x: True)
    assert len(loads) == 2 and loads[-1] == 32 and s.state()["status"] == "all_feasible"
    assert len(drive(KneeSearch(16, 32, integer=True, probe_top=False), lambda x: True)) == 5
    # a knee inside the range is still found, within the tolerance
    s = KneeSearch(1.0, 64.0)
    drive(s, lambda x: x <= 23.7)
    assert s.state()["status"] == "converged" and (23.7 - s.state()["knee"]) / 23.7 <= 0.05


def test_expand_to_widens_a_feasible_range_by_doubling():
    s = KneeSearch(1, 16, integer=True, expand_to=100)
    loads = drive(s, lambda x: x <= 45)
    st = s.state()
    assert 32 in loads and 64 in loads and 100 not in loads  # 16 -> 32 -> 64 (infeasible), then bisection
    assert 45 * 0.95 <= st["knee"] <= 45 and st["range"] == [1, 64] and st["status"] == "converged"
    assert any("widened from hi = 16 to 64" in n for n in st["notes"]) and "expand_to = 100" in st["stop_rule"]
    assert len(loads) <= s.worst_case_points()
    s = KneeSearch(1, 16, integer=True, expand_to=100)
    loads = drive(s, lambda x: True)
    assert loads[-1] == 100 and s.state()["status"] == "all_feasible"  # capped at expand_to
    with pytest.raises(ValueError, match="below hi"):
        KneeSearch(1, 16, integer=True, expand_to=8)
