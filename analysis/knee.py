"""The knee of each variant: the highest load that still meets the SLO, its interval, and the
cost at that capacity. Pure.

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
  interval    the 2.5 / 97.5 % points of the same crossing computed on each joint replicate of
              the points (analysis.blocks: attainment AND every threshold's percentile from one
              time-block draw; repetitions resampled too): per replicate the first infeasible
              point and the crossing are found again, so the bracket itself may move. A replicate
              infeasible already at the lowest load counts as below the range, one feasible at
              every load as above it; if that mass reaches past a percentile the end is None.
  capacity    goodput at the crossing, by linear interpolation in load between the bracketing
              points (per replicate, between that replicate's own bracket). Open loop (req/s):
                  capacity_rps = x_c * attainment(x_c);  G = capacity_rps * tokens per SLO-meeting request(x_c)
              (the offered rate is a design value: the arrivals a window happened to get do not
              enter a cost at a planned rate); closed loop (users): capacity_rps = goodput_rps(x_c),
              G = goodput_output_tok_per_s(x_c)
  cost at capacity  usd_at_capacity = K / G, K = usd_per_1m_goodput x goodput_output_tok_per_s
              at the knee point (= $/h x 1e6 / 3600, energy included where it is added), with
              the interval of the same replicates; a replicate above the range has an unbounded
              capacity and cost (-inf: the interval's low end is then None, "below anything
              measured"), one below it infinity (no capacity at any measured load)
status: bracketed | all_feasible (knee not reached: knee_load is a lower bound, estimate None, the
        cost at capacity is at most the cost at the highest load measured: `usd_at_capacity_bound`
        "at most") | none_feasible | no_valid_points. A table without replicates (built by hand)
        gets the knee point's own cost and interval (bound "knee point").

Side effects: none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import isotonic_regression

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
    capacity_rps: float | None = None  # goodput req/s at the crossing (module doc)
    capacity_rps_lo: float | None = None
    capacity_rps_hi: float | None = None
    usd_at_capacity: float | None = None  # $/1M goodput tokens at capacity (module doc)
    usd_at_capacity_lo: float | None = None
    usd_at_capacity_hi: float | None = None
    usd_at_capacity_bound: str | None = None  # "estimate" | "at most" (knee not reached) | "knee point" (no replicates)
    p_feasible_at_knee: float | None = None  # share of replicates feasible at knee_load
    invalid_points: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    usd_at_capacity_boot: np.ndarray | None = field(default=None, repr=False, compare=False)

    def conservative_load(self) -> float | None:
        """The knee's conservative end: the interval's low end, else the measured knee load."""
        return self.estimate_lo if self.estimate_lo is not None else self.knee_load

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("usd_at_capacity_boot")
        return d


def _slacks(df: pd.DataFrame, target: float, limits: Mapping[str, float], attainment: np.ndarray,
            values: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Each constraint's slack per point, on one scale: (attainment - target) / (1 - target) and
    (limit - value) / limit, so 0 is the SLO and 1 the best possible. `values` replaces the
    table's percentile columns (a replicate's); a missing percentile fails (-inf)."""
    out = {"attainment": (attainment - target) / max(1.0 - target, 1e-9)}
    for col, limit in limits.items():
        if col in df.columns:
            v = values[col] if values is not None and col in values else df[col].astype(float).to_numpy()
            out[col] = np.where(np.isnan(v), -np.inf, (limit - v) / limit)
    return out


def monotone(slacks: Mapping[str, np.ndarray], weights: np.ndarray) -> tuple[dict[str, np.ndarray], bool]:
    """Each slack made non-increasing in load by isotonic regression (weights: repetitions per
    point), and whether any point moved. The fit runs on slacks clipped to [-1, 1], so one wild
    point (a hiccup's p99 at ten times the limit) weighs no more than a plainly infeasible one;
    points the fit leaves alone keep their own value, so a curve that is already monotone is
    interpolated exactly as measured."""
    out, moved = {}, False
    for name, s in slacks.items():
        c = np.clip(s, -1.0, 1.0)
        f = isotonic_regression(c, weights=weights, increasing=False).x if len(c) > 1 else c
        pooled = ~np.isclose(f, c)
        moved |= bool(pooled.any())
        out[name] = np.where(pooled, f, s)
    return out, moved


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


def _interp(x: np.ndarray, y: np.ndarray, lo: int, xc: float) -> float:
    """y at load xc on the line through points lo and lo + 1 (y at lo where the two coincide)."""
    if lo + 1 >= len(x) or x[lo + 1] == x[lo]:
        return float(y[lo])
    return float(y[lo] + (y[lo + 1] - y[lo]) * (xc - x[lo]) / (x[lo + 1] - x[lo]))


def _boots(df: pd.DataFrame, col: str, n: int) -> np.ndarray | None:
    """(points, n) replicates of column `col`, or None when a point lacks them."""
    if col not in df.columns or not df[col].map(lambda b: b is not None and np.size(b) > 0).all():
        return None
    return np.stack([np.asarray(b, dtype=float)[:n] for b in df[col]])


def at_capacity(x: np.ndarray, i: int, xc: float, att: np.ndarray, rps: np.ndarray, good: np.ndarray,
                open_loop: bool) -> tuple[float, float]:  # fmt: skip
    """(capacity in SLO-meeting req/s, goodput output tok/s) at the crossing xc in bracket (i, i+1).

    Open loop (load in req/s, the offered rate a design value): capacity = xc x attainment(xc), and
    tok/s = capacity x output tokens per SLO-meeting request at xc (each interpolated in load), so
    the count of arrivals a window happened to get does not enter a cost at a planned rate. Closed
    loop (users): the measured goodput req/s and tok/s, interpolated in load.
    """
    if not open_loop:
        return _interp(x, rps, i, xc), _interp(x, good, i, xc)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(rps > 0, good / np.where(rps > 0, rps, 1.0), np.nan)
    lo, hi = tpr[i], tpr[i + 1] if i + 1 < len(tpr) else np.nan
    if np.isnan(lo) or np.isnan(hi):
        t = lo if not np.isnan(lo) else hi
    else:
        t = _interp(x, tpr, i, xc)
    cap = xc * _interp(x, att, i, xc)
    return cap, cap * t


def _replicates(x: np.ndarray, df: pd.DataFrame, target: float, limits: Mapping[str, float], k_usd: float | None,
                weights: np.ndarray, extra: np.ndarray | None) -> dict[str, np.ndarray] | None:  # fmt: skip
    """Per joint replicate: the crossing (-inf below the range, +inf above it), capacity in req/s
    and cost at capacity (module doc); None without attainment replicates."""
    if "attainment_boot" not in df.columns or not df["attainment_boot"].map(lambda b: b is not None).all():
        return None
    n = min(np.size(b) for b in df["attainment_boot"])
    att = _boots(df, "attainment_boot", n)
    thr = {c: _boots(df, f"{c}_boot", n) for c in limits if c in df.columns}
    good = _boots(df, "goodput_output_tok_per_s_boot", n)
    rps = _boots(df, "goodput_rps_boot", n)
    open_loop = str(df["load_unit"].iloc[0]) == "req/s"
    xs, cap, usd = np.empty(n), np.full(n, np.nan), np.full(n, np.nan)
    for b in range(n):
        vals = {c: v[:, b] for c, v in thr.items() if v is not None}
        raw = _slacks(df, target, limits, att[:, b], vals)
        if extra is not None:
            raw["evaluation"] = extra
        sl, _moved = monotone(raw, weights)
        status, i, xc, _ = crossing(x, sl)
        if status == "none_feasible":
            xs[b], usd[b] = -np.inf, np.inf
            continue
        if status == "all_feasible":  # capacity above the range: its cost could lie below any measured
            xs[b], cap[b], usd[b] = np.inf, np.inf, -np.inf
            continue
        else:
            xs[b] = xc
            if rps is not None and good is not None:
                cap[b], g = at_capacity(x, i, xc, att[:, b], rps[:, b], good[:, b], open_loop)
            else:
                g = np.nan
        usd[b] = (k_usd / g if g > 0 else np.inf) if k_usd is not None and np.isfinite(g) else np.nan
    return {"crossing": xs, "capacity_rps": cap, "usd": usd}


def _ends(r: np.ndarray) -> tuple[float | None, float | None]:
    """2.5 % ("lower") and 97.5 % ("higher") points of replicates that may be infinite."""
    r = r[~np.isnan(r)]
    if r.size == 0:
        return None, None
    lo = float(np.percentile(r, 100 * ALPHA / 2, method="lower"))
    hi = float(np.percentile(r, 100 * (1 - ALPHA / 2), method="higher"))
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
    weights = (df["repetitions"].astype(float).to_numpy() if "repetitions" in df.columns
               else np.ones(len(df)))  # fmt: skip
    raw = _slacks(df, target, limits, df["attainment"].astype(float).to_numpy())
    # a point the evaluation judged infeasible for a reason the slacks do not carry (stopped early);
    # judged per repetition before pooling where knees() could (a pooled row's `feasible` is its
    # mean p_feasible, which may disagree with its mean slacks near the SLO without any such reason)
    if "infeasible_other" in df.columns:
        extra_bad = df["infeasible_other"].astype(bool).to_numpy()
    else:
        extra_bad = ~df["feasible"].astype(bool).to_numpy() & (np.vstack(list(raw.values())).min(axis=0) >= 0)
    extra = np.where(extra_bad, -1.0, 1.0) if extra_bad.any() else None
    if extra is not None:
        raw["evaluation"] = extra
    slacks, moved = monotone(raw, weights)
    status, i, est, binding = crossing(x, slacks)
    notes = []
    feas = df["feasible"].astype(bool).to_numpy()
    if moved:
        ups = [f"{v:g}" for j, v in enumerate(x) if feas[j] and not feas[:j].all()]
        notes.append("measured feasibility is not monotone in load"
                     + (f" (feasible again at {', '.join(ups)} {base['load_unit']} above an infeasible load)" if ups else "")
                     + ": the knee rests on a monotone (isotonic) fit of every point's slacks")  # fmt: skip
    if i is None:
        return Knee(**base, status=status, invalid_points=inv,
                    notes=[*notes, f"infeasible already at the lowest valid load {x[0]:g} {base['load_unit']}"])  # fmt: skip
    if status == "all_feasible":
        notes.append(f"knee not reached: feasible at every measured load up to {x[-1]:g} {base['load_unit']}")
    k = df.iloc[i]
    k_usd = None
    if _f(k.get("usd_per_1m_goodput")) is not None and _f(k.get("goodput_output_tok_per_s")):
        k_usd = float(k["usd_per_1m_goodput"]) * float(k["goodput_output_tok_per_s"])  # $/h x 1e6 / 3600
    reps = _replicates(x, df, target, limits, k_usd, weights, extra)
    lo = hi = None
    cap = cap_lo = cap_hi = usd = usd_lo = usd_hi = None
    if reps is not None:
        lo, hi = _ends(reps["crossing"])
        cap_lo, cap_hi = _ends(reps["capacity_rps"])
        usd_lo, usd_hi = _ends(reps["usd"])
        if status == "bracketed" and lo is None:
            notes.append("the interval's low end lies below the lowest measured load")
        if status == "bracketed" and hi is None:
            notes.append("the interval's high end lies above the highest measured load")
    elif status == "bracketed":
        notes.append("no attainment replicates: the estimate has no interval")
    if status == "bracketed" and reps is None:  # hand-built tables: the knee point's own cost
        cap, usd, bound = _f(k.get("goodput_rps")), _f(k.get("usd_per_1m_goodput")), "knee point"
        usd_lo, usd_hi = _f(k.get("usd_per_1m_goodput_lo")), _f(k.get("usd_per_1m_goodput_hi"))
    elif status == "bracketed":
        col = lambda c: df[c].astype(float).to_numpy()  # noqa: E731
        cap, g = at_capacity(x, i, est, col("attainment"), col("goodput_rps"), col("goodput_output_tok_per_s"),
                             base["load_unit"] == "req/s")  # fmt: skip
        usd = k_usd / g if k_usd is not None and g and np.isfinite(g) else None
        bound = "estimate"
    else:  # all feasible: capacity at least the top load's, cost at most its cost
        cap, usd, bound = _f(k.get("goodput_rps")), _f(k.get("usd_per_1m_goodput")), "at most"
        usd_lo, usd_hi = _f(k.get("usd_per_1m_goodput_lo")), _f(k.get("usd_per_1m_goodput_hi"))  # the top point's
    p_feas = None
    if "p_feasible" in df.columns and _f(k.get("p_feasible")) is not None:
        p_feas = float(k["p_feasible"])
    boot = reps["usd"] if reps is not None else None
    if (status == "all_feasible" or reps is None) and "usd_per_1m_goodput_boot" in df.columns and k.get("usd_per_1m_goodput_boot") is not None:
        boot = np.asarray(k["usd_per_1m_goodput_boot"], dtype=float)
    return Knee(
        **base, status=status, knee_load=float(x[i]),
        above_load=float(x[i + 1]) if status == "bracketed" else None,
        estimate=est, estimate_lo=lo if status == "bracketed" else None,
        estimate_hi=hi if status == "bracketed" else None, binding=binding, point_id=str(k["point_id"]),
        above_point_id=str(df.iloc[i + 1]["point_id"]) if status == "bracketed" else None,
        goodput_rps=_f(k["goodput_rps"]), tok_per_s_per_gpu=_f(k["tok_per_s_per_gpu"]),
        usd_per_1m_goodput=_f(k["usd_per_1m_goodput"]), usd_per_1m_goodput_lo=_f(k["usd_per_1m_goodput_lo"]),
        usd_per_1m_goodput_hi=_f(k["usd_per_1m_goodput_hi"]),
        capacity_rps=_f(cap), capacity_rps_lo=cap_lo if status == "bracketed" else _f(k.get("goodput_rps_lo")),
        capacity_rps_hi=cap_hi if status == "bracketed" else None,
        usd_at_capacity=_f(usd), usd_at_capacity_lo=usd_lo, usd_at_capacity_hi=usd_hi, usd_at_capacity_bound=bound,
        p_feasible_at_knee=p_feas, invalid_points=inv, notes=notes, usd_at_capacity_boot=boot,
    )  # fmt: skip


def _infeasible_other(points: pd.DataFrame, target: float, limits: Mapping[str, float]) -> np.ndarray:
    """Per measurement: judged infeasible although every slack meets the SLO (stopped early, say)."""
    att = points["attainment"].astype(float).to_numpy()
    slack = np.vstack(list(_slacks(points, target, limits, att).values())).min(axis=0)
    return ~points["feasible"].astype(bool).to_numpy() & (np.nan_to_num(slack, nan=-1.0) >= 0)


def knees(points: pd.DataFrame, target: float, limits: Mapping[str, float] | None = None, *,
          pooled: bool = False, seed: int = 0) -> dict[str, Knee]:  # fmt: skip
    """Knee per variant_id (insertion order of the table). `pooled`: repetitions already pooled."""
    if not pooled:
        points = points.assign(infeasible_other=_infeasible_other(points, target, dict(limits or {})))
    df = points if pooled else pool_repetitions(points, seed)
    return {str(vid): variant_knee(g, target, limits) for vid, g in df.groupby("variant_id", sort=False)}


