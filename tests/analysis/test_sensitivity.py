"""Sensitivity (tornado) on a hand-built selection: which input flips the choice."""

from __future__ import annotations

import pytest

from analysis.selection import select
from analysis.sensitivity import (
    output_length_multiplier,
    output_mix_scenarios,
    price_scenarios,
    spot_scenarios,
    tornado,
)
from tests.analysis.decision_tables import point, table


def selection():
    # A on h100 at $1.00, B on l4 at $1.20: intervals apart (+-2 %)
    rows = [point("A", load=4, usd=1.0, lo=0.98, hi=1.02, gpu="h100"),
            point("B", load=4, usd=1.2, lo=1.18, hi=1.22, gpu="l4")]  # fmt: skip
    return select(table(rows), target=0.9)


def test_price_of_one_gpu_type_flips_the_choice():
    sel = selection()
    rows = {r.input: r for r in tornado(sel, price_scenarios(sel, 0.30))}
    h = rows["price of h100"]
    # A at +30 % costs 1.30 > B's 1.20: flips to B; at -30 % A stays
    assert (h.chosen_low, h.chosen_high, h.flips) == ("A", "B", True)
    assert (h.usd_low, h.usd_high) == pytest.approx((0.7, 1.3)) and h.swing_usd == pytest.approx(0.6)
    l4 = rows["price of l4"]
    # B at -30 % costs 0.84 < 1.00: flips to B; A's own cost does not move
    assert (l4.chosen_low, l4.chosen_high, l4.flips, l4.swing_usd) == ("B", "A", True, 0.0)
    order = [r.input for r in tornado(sel, price_scenarios(sel, 0.30))]
    assert order == ["price of h100", "price of l4"]  # both flip; the larger swing first


def test_output_length_multiplier_and_mix_scenario():
    # prefill share 0.5: twice the output length -> (0.5 + 0.5 * 2) / 2 = 0.75
    assert output_length_multiplier(0.5, 2.0) == 0.75
    assert output_length_multiplier(0.0, 2.0) == 1.0  # all decode: cost per output token unchanged
    sel = selection()
    sc = output_mix_scenarios(sel, {"A": 0.0, "B": 0.6})
    # B at x2: 1.2 * (0.6 + 0.4 * 2) / 2 = 0.84 < 1.0 -> flips; at x0.5: 1.2 * (0.6 + 0.2) / 0.5 = 1.92
    (r,) = tornado(sel, sc)
    assert (r.input, r.low_setting, r.high_setting) == ("output length", "x0.5", "x2")
    assert (r.chosen_low, r.chosen_high, r.flips) == ("A", "B", True)
    assert output_mix_scenarios(sel, {"A": 0.1}) == []  # B's share unknown: not evaluated


def test_spot_share_scenario():
    sel = selection()
    # A: on demand 10 $/h, effective spot 8; B: 10 and 2. At sigma 0.5: A x0.9 = 0.90, B x0.6 = 0.72 -> B
    sc = spot_scenarios(sel, {"A": (10.0, 10.0, 8.0), "B": (10.0, 10.0, 2.0)}, shares=(0.0, 0.5))
    (r,) = tornado(sel, sc)
    assert (r.chosen_low, r.chosen_high, r.flips) == ("A", "B", True)
    assert r.usd_high == pytest.approx(0.9)
    assert spot_scenarios(sel, {"A": (10.0, 10.0, None), "B": (10.0, 10.0, 2.0)}) == []
    # points priced at spot already (an aws_spot book): sigma 0 means all on demand, m = P_od / P_base
    (r,) = tornado(sel, spot_scenarios(sel, {"A": (4.0, 10.0, 4.0), "B": (2.0, 10.0, 2.0)}, shares=(0.0, 1.0)))
    assert (r.usd_low, r.usd_high) == pytest.approx((2.5, 1.0))
