"""The knee of each variant: the highest load that still meets the SLO. Pure.

Over one variant's points sorted by load (repetitions pooled, invalid points left out):
  knee_load   the last SLO-feasible measured load before the first infeasible one (a later
              feasible point above an infeasible one is noted, not used: the curve must hold
              at every load up to the knee)
  above_load  the first infeasible measured load (the bracket is [knee_load, above_load])
  estimate    where the SLO is crossed inside the bracket, by linear interpolation of each
              constraint's slack s(x) between the bracketing points:
                  x_c = x_lo + s_lo / (s_lo - s_hi) * (x_hi - x_lo)     estimate = min_c x_c
              slack: attainment - target, and for each latency threshold limit - value at the
              SLO percentile; the constraint with the smallest x_c is `binding`
  interval    the 2.5 / 97.5 % points of the same crossing computed on each bootstrap replicate
              of attainment (latency values held at their estimates). A replicate that is
              infeasible already at the lowest load counts as below the range, one feasible at
              every load as above it; if that mass reaches past a percentile the end is None.
status: bracketed | all_feasible (knee not reached: knee_load is a lower bound, estimate None)
        | none_feasible | no_valid_points.

Side effects: none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.points import ALPHA, pool_repetitions
from analysis.points import as_float as _f


@dataclass(frozen=True)
class Knee:
    variant_id: str
    variant_label: str
    load_unit: str
    status: str
    knee_load: float | None = None
    above_load: float | None = None
    estimate: float | None = None
    estimate_lo: float | None = None
    estimate_hi: float | None = None
    binding: str | None = None
    point_id: str | None = None  # the measured point at knee_load
    above_point_id: str | None = None  # the measured point at above_load
    goodput_rps: float | None = None
    tok_per_s_per_gpu: float | None = None
    usd_per_1m_goodput: float | None = None
    usd_per_1m_goodput_lo: float | None = None
    usd_per_1m_goodput_hi: float | None = None
    invalid_points: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def conservative_load(self) -> float | None:
        """The knee's conservative end: the interval's low end, else the measured knee load."""
        return self.estimate_lo if self.estimate_lo is not None else self.knee_load

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _slacks(df: pd.DataFrame, target: float, limits: Mapping[str, float], attainment: np.ndarray) -> dict[str, np.ndarray]:
    out = {"attainment": attainment - target}
    for col, limit in limits.items():
        if col in df.columns:
            v = df[col].astype(float).to_numpy()
            out[col] = np.where(np.isnan(v), -np.inf, limit - v)  # a missing percentile fails
    return out


def crossing(x: np.ndarray, slacks: Mapping[str, np.ndarray], feasible: np.ndarray | None = None
             ) -> tuple[str, int | None, float | None, str | None]:  # fmt: skip
    """(status, index of the knee point, interpolated crossing, binding constraint) of one curve.

    `feasible` overrides the per-point feasibility implied by the slacks (the evaluated
    `feasible` column may apply checks the slacks do not carry).
    """
    s = np.vstack(list(slacks.values()))
    names = list(slacks)
    ok = (s >= 0).all(axis=0) if feasible is None else np.asarray(feasible, dtype=bool)
    if not ok[0]:
        return "none_feasible", None, None, None
    bad = np.flatnonzero(~ok)
    if bad.size == 0:
        return "all_feasible", len(x) - 1, None, None
    hi = int(bad[0])
    lo = hi - 1
    best, binding = None, None
    for j, name in enumerate(names):
        s_lo, s_hi = s[j, lo], s[j, hi]
        if s_hi < 0 <= s_lo:
            xc = x[lo] + (x[hi] - x[lo]) * (s_lo / (s_lo - s_hi) if math.isfinite(s_hi) else 0.0)
            if best is None or xc < best:
                best, binding = float(xc), name
    if best is None:  # infeasible for a reason the slacks do not show: no interpolation
        best, binding = float(x[lo]), None
    return "bracketed", lo, best, binding


def _boot_interval(x, df, target, limits, boots) -> tuple[float | None, float | None]:
    n = min(len(b) for b in boots)
    att = np.stack([np.asarray(b, dtype=float)[:n] for b in boots])  # (points, n)
    est = np.empty(n)
    for b in range(n):
        status, _i, xc, _ = crossing(x, _slacks(df, target, limits, att[:, b]))
        est[b] = -np.inf if status == "none_feasible" else (np.inf if status == "all_feasible" else xc)
    lo = float(np.percentile(est, 100 * ALPHA / 2, method="lower"))
    hi = float(np.percentile(est, 100 * (1 - ALPHA / 2), method="higher"))
    return (lo if math.isfinite(lo) else None), (hi if math.isfinite(hi) else None)


def variant_knee(points: pd.DataFrame, target: float, limits: Mapping[str, float] | None = None) -> Knee:
    """Knee of ONE variant's points (repetitions already pooled); see the module doc."""
    limits = dict(limits or {})
    first = points.iloc[0]
    base = {"variant_id": str(first["variant_id"]), "variant_label": str(first["variant_label"]),
            "load_unit": str(first["load_unit"])}  # fmt: skip
    invalid = points[points["verdict"] == "invalid"]
    inv = [{"point_id": str(r.point_id), "load_value": float(r.load_value), "reasons": list(r.verdict_reasons or [])}
           for r in invalid.itertuples()]  # fmt: skip
    df = points[points["verdict"] != "invalid"].sort_values("load_value").reset_index(drop=True)
    if df.empty:
        return Knee(**base, status="no_valid_points", invalid_points=inv)
    x = df["load_value"].astype(float).to_numpy()
    slacks = _slacks(df, target, limits, df["attainment"].astype(float).to_numpy())
    status, i, est, binding = crossing(x, slacks, df["feasible"].astype(bool).to_numpy())
    notes = []
    if i is None:
        return Knee(**base, status=status, invalid_points=inv,
                    notes=[f"infeasible already at the lowest valid load {x[0]:g} {base['load_unit']}"])  # fmt: skip
    feas = df["feasible"].astype(bool).to_numpy()
    later = [float(v) for v in x[i + 1 :][feas[i + 1 :]]]
    if status == "bracketed" and later:
        notes.append(f"feasible again above the knee at {', '.join(f'{v:g}' for v in later)} "
                     f"{base['load_unit']} (not used)")  # fmt: skip
    if status == "all_feasible":
        notes.append(f"knee not reached: feasible at every measured load up to {x[-1]:g} {base['load_unit']}")
    lo = hi = None
    if "attainment_boot" in df.columns and df["attainment_boot"].map(lambda b: b is not None).all():
        lo, hi = _boot_interval(x, df, target, limits, list(df["attainment_boot"]))
        if status == "bracketed" and lo is None:
            notes.append("the interval's low end lies below the lowest measured load")
    elif status == "bracketed":
        notes.append("no attainment replicates: the estimate has no interval")
    k = df.iloc[i]
    return Knee(
        **base, status=status, knee_load=float(x[i]),
        above_load=float(x[i + 1]) if status == "bracketed" else None,
        estimate=est, estimate_lo=lo if status == "bracketed" else None,
        estimate_hi=hi if status == "bracketed" else None, binding=binding, point_id=str(k["point_id"]),
        above_point_id=str(df.iloc[i + 1]["point_id"]) if status == "bracketed" else None,
        goodput_rps=_f(k["goodput_rps"]), tok_per_s_per_gpu=_f(k["tok_per_s_per_gpu"]),
        usd_per_1m_goodput=_f(k["usd_per_1m_goodput"]), usd_per_1m_goodput_lo=_f(k["usd_per_1m_goodput_lo"]),
        usd_per_1m_goodput_hi=_f(k["usd_per_1m_goodput_hi"]), invalid_points=inv, notes=notes,
    )  # fmt: skip


def knees(points: pd.DataFrame, target: float, limits: Mapping[str, float] | None = None, *,
          pooled: bool = False, seed: int = 0) -> dict[str, Knee]:  # fmt: skip
    """Knee per variant_id (insertion order of the table). `pooled`: repetitions already pooled."""
    df = points if pooled else pool_repetitions(points, seed)
    return {str(vid): variant_knee(g, target, limits) for vid, g in df.groupby("variant_id", sort=False)}


