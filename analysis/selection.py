"""Selection: the cheapest valid variant that meets the SLO at the requested load. Pure.

Operating point of each variant:
  load = None   its capacity under the SLO (analysis.knee): the cost is the cost at capacity,
                usd_at_capacity = $/h / (goodput tok/s at the knee's crossing), with the interval of
                the joint time-block replicates (the capacity's uncertainty, the output-length
                spread, repetitions); the operating point named is the knee point. Where the knee
                was not reached the cost is an upper bound ("at most": the top load's cost).
  load = X      the lowest measured point with load_value >= X (same load unit): its
                usd_per_1m_goodput with the point's time-block interval
Cost metric: $ per 1M output tokens of SLO-meeting requests (goodput tokens).

A variant is excluded, with every reason that applies (kind + one human line):
  invalid      its operating point (or every point) has verdict invalid; the verdict reasons follow
  infeasible   no valid point meets the SLO (or the point at the requested load misses it)
  not_measured nothing measured at or above the requested load, or in another load unit
  unpriced     the operating point has no $/1M (no price for its GPU)
  quality      it failed a quality gate (hook: `quality` mapping or a `quality_gate` column)
  cannot_win   its knee search was stopped because even its optimistic cost at capacity was above
               the pessimistic cost of a variant measured before it (economy.halving,
               analysis.halving; `halted` mapping: variant_id -> the reason recorded in run.json)

Ranking is by the estimate; the chosen variant is the cheapest. Another candidate ties with it
when the two are equal within their intervals (lo_other <= hi_chosen), and every other candidate
whose cost is only an upper bound (its knee not reached: its true cost may lie anywhere below)
ties with it too. The result says so and lists them, and :func:`headline` declares no winner. P(A cheaper than B) compares the two variants' bootstrap replicates as independent
draws, over all pairs (a, b): P = mean[a < b] + 0.5 * mean[a == b]; it is None without replicates.

Side effects: none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from analysis.knee import Knee, knees
from analysis.points import as_float as _f
from analysis.points import pool_repetitions

METRIC = "usd_per_1m_goodput"


@dataclass(frozen=True)
class Candidate:
    variant_id: str
    variant_label: str
    point_id: str
    load_value: float
    load_unit: str
    usd: float
    usd_lo: float | None
    usd_hi: float | None
    verdict: str
    gpu_name: str
    gpu_count: int
    attainment: float | None = None
    goodput_rps: float | None = None
    tok_per_s_per_gpu: float | None = None
    capacity_rps: float | None = None  # at the knee basis: goodput req/s at the crossing
    capacity_rps_lo: float | None = None
    capacity_rps_hi: float | None = None
    knee_status: str | None = None  # analysis.knee status at the knee basis
    usd_bound: str = "estimate"  # "at most": the knee was not reached, the cost is an upper bound
    boot: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("boot")
        return d

    def scaled(self, m: float) -> Candidate:
        """The same candidate with every cost figure multiplied by m (sensitivity scenarios)."""
        return replace(
            self, usd=self.usd * m, usd_lo=None if self.usd_lo is None else self.usd_lo * m,
            usd_hi=None if self.usd_hi is None else self.usd_hi * m,
            boot=None if self.boot is None else np.asarray(self.boot) * m,
        )  # fmt: skip


@dataclass(frozen=True)
class Exclusion:
    variant_id: str
    variant_label: str
    reasons: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Selection:
    basis: str  # "knee" or "load >= X <unit>"
    metric: str
    ranked: list[Candidate]
    excluded: list[Exclusion]
    tie: bool = False
    tied: list[str] = field(default_factory=list)  # variant_ids tied with the chosen one
    p_cheaper: list[dict[str, Any]] = field(default_factory=list)  # chosen vs each other candidate

    @property
    def chosen(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    @property
    def runner_up(self) -> Candidate | None:
        return self.ranked[1] if len(self.ranked) > 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "headline": headline(self), "basis": self.basis, "metric": self.metric,
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "runner_up": self.runner_up.to_dict() if self.runner_up else None,
            "tie": self.tie, "tied": list(self.tied), "p_cheaper": list(self.p_cheaper),
            "ranked": [c.to_dict() for c in self.ranked], "excluded": [e.to_dict() for e in self.excluded],
        }  # fmt: skip


def p_cheaper(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """P(A < B) over all pairs of replicates (module doc); None when either has none."""
    if a is None or b is None:
        return None
    a = np.asarray(a, dtype=float)
    b = np.sort(np.asarray(b, dtype=float))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return None
    greater = b.size - np.searchsorted(b, a, side="right")  # b > a
    equal = np.searchsorted(b, a, side="right") - np.searchsorted(b, a, side="left")
    return float((greater + 0.5 * equal).sum() / (a.size * b.size))


def rank(candidates: Sequence[Candidate], excluded: Sequence[Exclusion] = (), *, basis: str = "knee",
         metric: str = METRIC) -> Selection:  # fmt: skip
    """Order candidates by cost, then find the ties with the cheapest and P(chosen cheaper)."""
    ranked = sorted(candidates, key=lambda c: (c.usd, c.usd_hi if c.usd_hi is not None else c.usd, c.variant_label))
    if not ranked:
        return Selection(basis=basis, metric=metric, ranked=[], excluded=list(excluded))
    best = ranked[0]
    # with replicates, a null end is open (the replicates reach past the measured range)
    best_hi = best.usd_hi if best.usd_hi is not None else (np.inf if best.boot is not None else best.usd)
    # an upper bound ("at most": knee not reached) says nothing of how low the cost goes: it
    # ties with the cheapest unless its bound already lies below the cheapest's low end
    probs = [{"a": best.variant_id, "b": c.variant_id, "p_a_cheaper": p_cheaper(best.boot, c.boot)} for c in ranked[1:]]

    def tied_with_best(c: Candidate) -> bool:
        if c.usd_bound == "at most":
            return True
        return (c.usd_lo if c.usd_lo is not None else (-np.inf if c.boot is not None else c.usd)) <= best_hi

    tied = [c.variant_id for c in ranked[1:] if tied_with_best(c)]
    return Selection(basis=basis, metric=metric, ranked=ranked, excluded=list(excluded), tie=bool(tied),
                     tied=tied, p_cheaper=probs)  # fmt: skip


def _usd(v: float | None) -> str:
    return "-" if v is None else f"${v:,.4g}"


def headline(sel: Selection, labels: Mapping[str, str] | None = None) -> str:
    """The decision in one line: the winner with its cost and capacity intervals, or why there is
    none (no variant meets the SLO; a tie, naming the variants whose knee was not reached)."""
    ch = sel.chosen
    if ch is None:
        return "No variant meets the SLO at any valid measured load: nothing to deploy."
    names = {c.variant_id: c.variant_label for c in sel.ranked} | dict(labels or {})
    p = next((x["p_a_cheaper"] for x in sel.p_cheaper if sel.runner_up and x["b"] == sel.runner_up.variant_id), None)
    p_txt = f"; P(cheaper) = {p:.2f}" if p is not None else ""
    unreached = [c for c in [ch, *(c for c in sel.ranked if c.variant_id in sel.tied)] if c.usd_bound == "at most"]
    if sel.tie:
        who = ", ".join([ch.variant_label, *(names[v] for v in sel.tied)])
        line = f"No winner: {who} cannot be told apart on cost (intervals overlap{p_txt})"
        if unreached and sel.basis == "knee":
            line += (f"; the knee of {', '.join(c.variant_label for c in unreached)} was not reached, so its cost at "
                     "capacity is only an upper bound: measure higher loads (search=knee with a higher search.hi)")  # fmt: skip
        return line + "."
    cost = f"{_usd(ch.usd)} [{_usd(ch.usd_lo)}, {_usd(ch.usd_hi)}] per 1M goodput tokens"
    if sel.basis == "knee":
        if ch.usd_bound == "at most":  # the knee not reached: bounds, not estimates
            cap = f" or less (knee not reached: capacity at least {ch.capacity_rps:.3g} req/s under the SLO)" \
                if ch.capacity_rps is not None else " or less (knee not reached)"  # fmt: skip
        elif ch.capacity_rps is not None:
            iv = (f" [{ch.capacity_rps_lo:.3g}, {ch.capacity_rps_hi:.3g}]"
                  if ch.capacity_rps_lo is not None and ch.capacity_rps_hi is not None else "")  # fmt: skip
            cap = f" at capacity, {ch.capacity_rps:.3g}{iv} req/s under the SLO"
        else:
            cap = ""
        return f"Deploy {ch.variant_label}: {cost}{cap}{p_txt.replace(';', ',')}."
    return f"Deploy {ch.variant_label}: {cost} at {ch.load_value:g} {ch.load_unit}{p_txt.replace(';', ',')}."


def _reasons_for_invalid(rows: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for r in rows.itertuples():
        out.append({"kind": "invalid", "message": f"point {r.load_value:g} {r.load_unit} is invalid",
                    "load_value": float(r.load_value), "verdict_reasons": list(r.verdict_reasons or [])})  # fmt: skip
    return out


def _infeasible_reason(r: Any, target: float | None) -> dict[str, Any]:
    att = float(r.attainment) if r.attainment is not None and not pd.isna(r.attainment) else None
    msg = f"misses the SLO at {r.load_value:g} {r.load_unit}"
    if att is not None:
        msg += f" (attainment {att:.3f}" + (f" < target {target:g})" if target is not None and att < target else ")")
    return {"kind": "infeasible", "message": msg, "load_value": float(r.load_value), "attainment": att}


def _knee_candidate(r: pd.Series, k: Knee, metric: str) -> Candidate:
    """The candidate at a variant's capacity: the knee point's row, the cost at capacity."""
    c = _candidate(r, metric)
    if k.usd_at_capacity is None:
        return c
    return replace(c, usd=float(k.usd_at_capacity), usd_lo=k.usd_at_capacity_lo, usd_hi=k.usd_at_capacity_hi,
                   boot=k.usd_at_capacity_boot, capacity_rps=k.capacity_rps, capacity_rps_lo=k.capacity_rps_lo,
                   capacity_rps_hi=k.capacity_rps_hi, knee_status=k.status,
                   usd_bound=k.usd_at_capacity_bound or "estimate")  # fmt: skip


def _candidate(r: pd.Series, metric: str) -> Candidate:
    lo, hi = r.get(f"{metric}_lo"), r.get(f"{metric}_hi")
    boot = r.get(f"{metric}_boot")
    return Candidate(
        variant_id=str(r["variant_id"]), variant_label=str(r["variant_label"]), point_id=str(r["point_id"]),
        load_value=float(r["load_value"]), load_unit=str(r["load_unit"]), usd=float(r[metric]),
        usd_lo=None if lo is None or pd.isna(lo) else float(lo), usd_hi=None if hi is None or pd.isna(hi) else float(hi),
        verdict=str(r["verdict"]), gpu_name=str(r["gpu_name"]), gpu_count=int(r["gpu_count"]),
        attainment=_f(r.get("attainment")), goodput_rps=_f(r.get("goodput_rps")),
        tok_per_s_per_gpu=_f(r.get("tok_per_s_per_gpu")), boot=None if boot is None else np.asarray(boot, dtype=float),
    )  # fmt: skip


def select(points: pd.DataFrame, *, target: float, limits: Mapping[str, float] | None = None,
           load: float | None = None, load_unit: str = "req/s", quality: Mapping[str, str | None] | None = None,
           metric: str = METRIC, seed: int = 0, knee_by_variant: Mapping[str, Knee] | None = None,
           halted: Mapping[str, str] | None = None) -> Selection:  # fmt: skip
    """Choose among the variants of `points` (the per-point table; repetitions are pooled here).

    target/limits are the SLO's attainment target and latency limits as analysis.knee takes them.
    """
    df = pool_repetitions(points, seed)
    kn = dict(knee_by_variant) if knee_by_variant is not None else knees(df, target, limits, pooled=True)
    basis = "knee" if load is None else f"load >= {load:g} {load_unit}"
    cands: list[Candidate] = []
    excl: list[Exclusion] = []
    for vid, g in df.groupby("variant_id", sort=False):
        vid = str(vid)
        label = str(g["variant_label"].iloc[0])
        reasons: list[dict[str, Any]] = []
        gate = (quality or {}).get(vid)
        if gate is None and "quality_gate" in g.columns:
            gate = next((q for q in g["quality_gate"] if isinstance(q, str) and q), None)
        if gate:
            reasons.append({"kind": "quality", "message": f"failed the quality gate: {gate}"})
        if (why := (halted or {}).get(vid)) is not None:  # halved: its search stopped before its knee
            reasons.append({"kind": "cannot_win", "message": f"knee search stopped: {why}"})
        row: pd.Series | None = None
        if load is None:
            k = kn.get(vid)
            if k is None or k.status == "no_valid_points":
                reasons += _reasons_for_invalid(g[g["verdict"] == "invalid"])
            elif k.status == "none_feasible":
                low = g[g["verdict"] != "invalid"].sort_values("load_value").iloc[0]
                r = _infeasible_reason(low, target)
                r["message"] = "misses the SLO at every valid load, the lowest " + r["message"].removeprefix("misses the SLO ")
                reasons.append(r)
            else:
                row = g[g["point_id"] == k.point_id].iloc[0]
        else:
            same = g[g["load_unit"] == load_unit]
            above = same[same["load_value"].astype(float) >= load].sort_values("load_value")
            if same.empty:
                reasons.append({"kind": "not_measured", "message": f"measured in {g['load_unit'].iloc[0]}, not {load_unit}"})
            elif above.empty:
                reasons.append({"kind": "not_measured", "message": f"nothing measured at or above {load:g} {load_unit} "
                                f"(highest {same['load_value'].max():g})"})  # fmt: skip
            else:
                r = above.iloc[0]
                if r["verdict"] == "invalid":
                    reasons += _reasons_for_invalid(above.iloc[:1])
                elif not bool(r["feasible"]):
                    reasons.append(_infeasible_reason(r, target))
                else:
                    row = r
        if row is not None and _f(row.get(metric)) is None:
            reasons.append({"kind": "unpriced", "message": f"no {metric} at {row['load_value']:g} {row['load_unit']} "
                            f"(no price for {row['gpu_name']}?)"})  # fmt: skip
        if reasons:
            excl.append(Exclusion(variant_id=vid, variant_label=label, reasons=reasons))
        elif row is not None:
            k = kn.get(vid)
            cands.append(_knee_candidate(row, k, metric) if load is None and k is not None else _candidate(row, metric))
    return rank(cands, excl, basis=basis, metric=metric)


