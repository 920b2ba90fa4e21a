"""Pareto frontier of tok/s per GPU against tok/s per user on hand-built points."""

from __future__ import annotations

import numpy as np

from analysis.pareto import frontier_mask, pareto_frontier
from tests.analysis.decision_tables import point, table


def test_frontier_mask_keeps_non_dominated_and_equal_points():
    x = np.array([1, 2, 3, 2, 1, 3, 0.5])
    y = np.array([9, 7, 2, 6, 9, 2, 1])
    # (2,6) dominated by (2,7); (0.5,1) by everything; (1,9) twice and (3,2) twice all kept
    assert frontier_mask(x, y).tolist() == [True, True, True, False, True, True, False]


def test_pareto_frontier_leaves_out_invalid_and_optionally_infeasible_points():
    rows = [
        point("A", load=1, tok_per_s_per_user=60.0, tok_per_s_per_gpu=100.0),
        point("A", load=2, tok_per_s_per_user=40.0, tok_per_s_per_gpu=180.0),
        point("B", load=1, tok_per_s_per_user=50.0, tok_per_s_per_gpu=90.0),  # dominated by A@1
        point("B", load=4, tok_per_s_per_user=20.0, tok_per_s_per_gpu=400.0, verdict="invalid"),
        point("B", load=2, tok_per_s_per_user=30.0, tok_per_s_per_gpu=250.0, attainment=0.5),
    ]
    f = pareto_frontier(table(rows))
    assert f["point_id"].tolist() == ["B@2", "A@2", "A@1"]  # sorted by tok/s per user
    f = pareto_frontier(table(rows), feasible_only=True)
    assert f["point_id"].tolist() == ["A@2", "A@1"]
