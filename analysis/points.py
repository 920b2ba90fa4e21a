"""The per-point table the across-runs decision works on, and pooling of repetitions. Pure.

One row per (run_id, variant_id, point_id, repetition), built by analysis.results from a
results folder through the per-point functions (analysis.slo, cost, confidence, verdict).
Column contract (DESIGN "decision-layer inputs"): REQUIRED below. OPTIONAL columns are used
when present:
  attainment_boot       np.ndarray, seeded bootstrap replicates of attainment (knee interval)
  slo_<metric>_ms       the metric at the SLO's percentile (knee interpolation on thresholds)
  prefill_time_share    share of GPU time spent in prefill (length-mix rescaling)
  prompt_tokens_mean, output_tokens_mean   per ok request, measured
  quality_gate          None, or why the variant failed a quality gate (a later issue)

:func:`pool_repetitions` turns repeated measurements of one (variant_id, point_id) into one
row: estimates are the mean over repetitions (the latency at the SLO percentile: the median), the latency columns shown (ttft_ms_p99, ...) the
worst repetition, and bootstrap replicates are re-drawn hierarchically (pick repetitions with
replacement, then take each pick's own replicate), so the interval carries run-to-run spread as
well as the spread within each run.

The latency at the SLO percentile (slo_<metric>_ms, what the knee's slacks use) is the MEDIAN over
repetitions (their replicates pooled by the median of the draws), the reading of the knee's own
definition: the load where a window meets the SLO half the time, i.e. where the median window's
percentile meets the limit. A window's p99 is skewed to the right (one burst lifts it far above
the limit, nothing lowers it as far below), so the mean of three windows (65.7, 76.8, 129.8 ms
against an 80 ms limit: two of three feasible, a search of benchmarks/coverage.py) judged such a
load infeasible and put the knee below it. For two repetitions the
median is the mean. `feasible` follows the same reading: a load measured more
than once is feasible when the mean of its p_feasible (the share of each measurement's time-block
replicates meeting the SLO) is at least P_FEASIBLE, the rule the knee search pools with
(experiments.sweeps.search). Near the knee a window's feasibility is a coin with some bias: the
worst of two windows (the old rule) judged the load by its unluckier window, so every load the
search measured again to settle it came out infeasible more often than not, and the knee sat low
(9 % in benchmarks/coverage_grid.py --search). Where a repetition lacks p_feasible, `feasible`
stays "every repetition feasible".

Side effects: none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.confidence import interval

REQUIRED = (
    "variant_id", "variant_label", "run_id", "point_id", "repetition", "load_value", "load_unit",
    "offered_rate_rps", "gpu_name", "gpu_count", "verdict", "verdict_reasons", "feasible", "attainment",
    "goodput_rps", "output_tok_per_s", "goodput_output_tok_per_s", "tok_per_s_per_gpu", "tok_per_s_per_user",
    "usd_per_1m_output", "usd_per_1m_output_lo", "usd_per_1m_output_hi", "usd_per_1m_goodput",
    "usd_per_1m_goodput_lo", "usd_per_1m_goodput_hi", "usd_per_1m_goodput_boot", "ttft_ms_p99",
    "tpot_ms_p99", "e2e_ms_p99", "time_to_ready_s",
)  # fmt: skip
VERDICT_ORDER = {"valid": 0, "warn": 1, "invalid": 2}
# Share of bootstrap mass outside the reported interval (95 % intervals throughout; the interval
# itself is analysis.confidence.interval).
ALPHA = 0.05
# A load measured more than once is feasible when its mean p_feasible is at least this (the knee
# search's experiments.sweeps.observations.P_FEASIBLE, the same rule).
P_FEASIBLE = 0.5


def detail_key(run_id: Any, point_id: Any, repetition: Any) -> str:
    """The key of one measurement's details in decision.json `point_details`: a load measured twice
    in one launch is two repetitions, so the repetition is part of it."""
    return f"{run_id}/{point_id}/{int(repetition or 0)}"


def missing_columns(points: pd.DataFrame) -> list[str]:
    """REQUIRED columns absent from `points` (empty list = usable)."""
    return [c for c in REQUIRED if c not in points.columns]


def pool_boot(boots: Sequence[np.ndarray | None], seed: int = 0, how: str = "mean") -> np.ndarray | None:
    """Hierarchical bootstrap of the mean (how="median": the median; how="max": the worst) over
    repetitions (see module doc); None if any is missing.

    Replicate b = mean (median, max) over R draws (with replacement) of repetition r_j's replicate b. With
    one repetition the replicates are returned unchanged. The draws depend only on (seed, R, n), so
    every column of one point pools the same picks: the joint replicates stay joint.
    """
    if not boots or any(b is None for b in boots):
        return None
    arrs = [np.asarray(b, dtype=float) for b in boots]
    if len(arrs) == 1:
        return arrs[0]
    n = min(a.size for a in arrs)
    vals = np.stack([a[:n] for a in arrs])  # (R, n)
    r = len(arrs)
    pick = np.random.default_rng(seed).integers(0, r, size=(n, r))
    drawn = vals[pick, np.arange(n)[:, None]]
    if how == "max":
        return drawn.max(axis=1)
    return np.median(drawn, axis=1) if how == "median" else drawn.mean(axis=1)


def _worst_verdict(vs: Sequence[str]) -> str:
    return max(vs, key=lambda v: VERDICT_ORDER.get(v, 2))


def pool_repetitions(points: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per (variant_id, point_id): repetitions pooled (module doc); adds `repetitions`, `run_ids`.

    feasible = mean p_feasible >= P_FEASIBLE (every repetition feasible where one lacks
    p_feasible); verdict = the worst; verdict_reasons = all of them. Invalid repetitions are left
    out where the load has a valid (or warn) one; a load with only invalid ones stays invalid.
    """
    rows = []
    for (_vid, _pid), g in points.groupby(["variant_id", "point_id"], sort=False):
        g = g.sort_values("repetition")
        if "verdict" in g.columns and 0 < (ok := g["verdict"] != "invalid").sum() < len(g):
            # an invalid repetition is left out, as an invalid point is left out of knees; one invalid
            # window (the load generator saturated, say) must not take its load's valid ones with it
            g = g[ok]
        first = g.iloc[0]
        row = first.to_dict()
        row["repetitions"] = int(len(g))
        row["run_ids"] = list(dict.fromkeys(g["run_id"]))
        if len(g) > 1:
            for c in g.columns:
                if c in REQUIRED and c.endswith(("_lo", "_hi", "_boot")):
                    continue
                col = g[c]
                if c.endswith("_boot"):
                    row[c] = pool_boot(list(col), seed, "median" if c.startswith("slo_") else "mean")
                elif c.startswith("slo_") and pd.api.types.is_numeric_dtype(col.dtype):
                    row[c] = float(col.median()) if col.notna().any() else None  # module doc: the median window
                elif c.startswith(("ttft_ms", "tpot_ms", "e2e_ms", "itl_ms")):
                    row[c] = float(col.max()) if col.notna().any() else None  # shown: the worst repetition
                elif c in ("feasible",):
                    row[c] = _pooled_feasible(g)
                elif c == "infeasible_other":  # analysis.knee: any repetition judged so
                    row[c] = bool(col.astype(bool).any())
                elif c == "verdict":
                    row[c] = _worst_verdict(list(col))
                elif c == "verdict_reasons":
                    row[c] = [r for rs in col for r in (rs or [])]
                elif c == "quality_gate":
                    row[c] = next((q for q in col if isinstance(q, str) and q), None)
                elif pd.api.types.is_bool_dtype(col.dtype):
                    row[c] = bool(col.all())
                elif pd.api.types.is_numeric_dtype(col.dtype) and c not in ("repetition", "gpu_count"):
                    row[c] = float(col.mean()) if col.notna().any() else None
            for base in ("usd_per_1m_goodput", "usd_per_1m_output"):
                boot = pool_boot(list(g[f"{base}_boot"]), seed) if f"{base}_boot" in g else None
                if boot is not None:
                    row[f"{base}_boot"] = boot
                    row[f"{base}_lo"], row[f"{base}_hi"] = interval(boot)
                else:  # no replicates: the envelope of the repetitions' own intervals
                    row[f"{base}_lo"] = _nanmin(g[f"{base}_lo"])
                    row[f"{base}_hi"] = _nanmax(g[f"{base}_hi"])
        rows.append(row)
    return pd.DataFrame(rows, columns=[*points.columns, "repetitions", "run_ids"])


def _pooled_feasible(g: pd.DataFrame) -> bool:
    """One load's repetitions pooled (module doc): mean p_feasible >= P_FEASIBLE, else all feasible."""
    p = pd.to_numeric(g["p_feasible"], errors="coerce") if "p_feasible" in g.columns else None
    if p is None or p.isna().any():
        return bool(g["feasible"].all())
    return bool(p.mean() >= P_FEASIBLE)


def _nanmin(s: pd.Series) -> float | None:
    return float(s.min()) if s.notna().any() else None


def _nanmax(s: pd.Series) -> float | None:
    return float(s.max()) if s.notna().any() else None


def as_float(v: Any) -> float | None:
    """`v` as a float, or None when it is missing, not a number, or NaN (for JSON and table cells)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f
