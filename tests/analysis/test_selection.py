"""Selection on hand-built tables: cheapest valid feasible variant, ties, P(A<B), exclusions."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.selection import p_cheaper, select
from tests.analysis.decision_tables import point, table


def rows():
    return [
        # A: knee at 4 req/s, $1.00 [0.90, 1.10]
        point("A", load=2, attainment=1.0, usd=1.5), point("A", load=4, attainment=0.95, usd=1.0, boot=[0.9, 1.0, 1.1]),
        point("A", load=8, attainment=0.5, usd=0.8),
        # B: knee at 4, $1.05 [0.95, 1.20]: overlaps A -> tie
        point("B", load=4, attainment=0.92, usd=1.05, lo=0.95, hi=1.2, boot=[1.0, 1.05, 1.1]),
        point("B", load=8, attainment=0.6, usd=0.7),
        # C: $2.00 [1.80, 2.20]: runner-up by rank but not tied
        point("C", load=4, attainment=0.99, usd=2.0, gpu="l4", boot=[1.9, 2.0, 2.1]),
        point("C", load=8, attainment=0.5, usd=1.9, gpu="l4"),
        # D: every point invalid
        point("D", load=4, usd=0.1, verdict="invalid", reasons=[{"kind": "loadgen_saturated", "message": "CPU 95 %"}]),
        # E: misses the SLO everywhere
        point("E", load=1, attainment=0.5, usd=0.2), point("E", load=2, attainment=0.3, usd=0.1),
        # F: feasible but failed a quality gate
        point("F", load=4, attainment=1.0, usd=0.5, quality_gate=None),
    ]  # fmt: skip


def test_cheapest_valid_feasible_variant_with_tie_and_exclusions():
    sel = select(table(rows()), target=0.9, quality={"F": "accuracy 0.41 < 0.60"})
    assert sel.basis == "knee"
    assert [c.variant_id for c in sel.ranked] == ["A", "B", "C"]
    assert sel.chosen.usd == 1.0 and (sel.chosen.usd_lo, sel.chosen.usd_hi) == pytest.approx((0.9, 1.1))
    assert sel.runner_up.variant_id == "B"
    assert sel.tie and sel.tied == ["B"]
    p = {d["b"]: d["p_a_cheaper"] for d in sel.p_cheaper}
    # A=[0.9,1.0,1.1] vs B=[1.0,1.05,1.1]: a<b pairs 3 + 2 + 0, ties (1.0,1.0),(1.1,1.1) count half -> 6/9
    assert p["B"] == pytest.approx(6 / 9)
    assert p["C"] == 1.0
    ex = {e.variant_id: e.reasons for e in sel.excluded}
    assert set(ex) == {"D", "E", "F"}
    assert ex["D"][0]["kind"] == "invalid" and ex["D"][0]["verdict_reasons"][0]["kind"] == "loadgen_saturated"
    assert ex["E"][0]["kind"] == "infeasible" and ex["E"][0]["attainment"] == 0.5
    assert "every valid load" in ex["E"][0]["message"]
    assert ex["F"] == [{"kind": "quality", "message": "failed the quality gate: accuracy 0.41 < 0.60"}]


def test_no_tie_when_intervals_are_apart():
    r = [x for x in rows() if x["variant_id"] in ("A", "C")]
    sel = select(table(r), target=0.9)
    assert not sel.tie and sel.tied == [] and sel.chosen.variant_id == "A"


def test_at_a_requested_load():
    sel = select(table(rows()), target=0.9, load=3.0)
    # the point at >= 3 req/s is 4 for A, B, C, F; E has nothing that high
    assert [c.variant_id for c in sel.ranked] == ["F", "A", "B", "C"]
    assert sel.basis == "load >= 3 req/s"
    sel = select(table(rows()), target=0.9, load=6.0)
    ex = {e.variant_id: e.reasons[0]["kind"] for e in sel.excluded}
    assert ex["A"] == "infeasible" and ex["C"] == "infeasible" and sel.chosen is None


def test_unpriced_is_excluded():
    r = [point("A", load=4, usd=float("nan")), point("B", load=4, usd=2.0)]
    sel = select(table(r), target=0.9)
    assert sel.chosen.variant_id == "B"
    assert sel.excluded[0].reasons[0]["kind"] == "unpriced"


def test_p_cheaper_all_pairs():
    assert p_cheaper(np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0])) == pytest.approx(7 / 9)
    assert p_cheaper(None, np.array([1.0])) is None


def test_repetitions_widen_the_interval_with_run_to_run_spread():
    r = [point("A", load=4, usd=1.0, boot=np.full(200, 1.0), rep=0),
         point("A", load=4, usd=2.0, boot=np.full(200, 2.0), rep=1)]  # fmt: skip
    sel = select(table(r), target=0.9)
    c = sel.chosen
    assert c.usd == 1.5
    # resampling the two repetitions gives means 1.0, 1.5 and 2.0 -> the interval spans them
    assert c.usd_lo == 1.0 and c.usd_hi == 2.0
