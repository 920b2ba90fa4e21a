"""Pareto frontier of throughput per GPU against throughput per user (InferenceX's chart). Pure.

A point is on the frontier when no other point is at least as good on both axes and strictly
better on one (both axes: higher is better):
    dominated(p)  <=>  exists q: q.x >= p.x and q.y >= p.y and (q.x > p.x or q.y > p.y)
x = tok_per_s_per_user (interactivity), y = tok_per_s_per_gpu. Invalid points are left out;
`feasible_only` also leaves out points that miss the SLO. Points without both values are left out.
Equal points are all kept. The frontier is returned sorted by x ascending (y then descends).

Side effects: none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

X = "tok_per_s_per_user"
Y = "tok_per_s_per_gpu"


def frontier_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated points of (x, y), both maximised. O(n log n)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.size
    keep = np.zeros(n, dtype=bool)
    # Sweep from the highest x down; a point survives when its y beats every y seen at a
    # strictly higher x, and it is the highest y among the points with its own x.
    order = np.lexsort((-y, -x))
    best_y_higher_x = -np.inf
    i = 0
    while i < n:
        j = i
        while j < n and x[order[j]] == x[order[i]]:
            j += 1
        group = order[i:j]
        gmax = y[group].max()
        for k in group:
            keep[k] = y[k] == gmax and y[k] > best_y_higher_x
        best_y_higher_x = max(best_y_higher_x, gmax)
        i = j
    return keep


def pareto_frontier(points: pd.DataFrame, *, x: str = X, y: str = Y, feasible_only: bool = False) -> pd.DataFrame:
    """Rows of `points` on the frontier (module doc), sorted by `x`, with their original index."""
    df = points[points["verdict"] != "invalid"]
    if feasible_only:
        df = df[df["feasible"].astype(bool)]
    df = df[df[x].notna() & df[y].notna()]
    if df.empty:
        return df
    mask = frontier_mask(df[x].to_numpy(dtype=float), df[y].to_numpy(dtype=float))
    return df[mask].sort_values([x, y], ascending=[True, False])
