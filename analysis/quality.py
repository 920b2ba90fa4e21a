"""Quality of a variant against its unquantized baseline, from the raw rows of quality runs. Pure.

A quality run (experiments.quality) stores, per prompt of a fixed set, raw engine outputs only:
the greedy continuation it generated (token ids, their log-probabilities) and, when the engine
has prompt log-probabilities, the log-probability and rank it gives to each token of the
*baseline's* greedy continuation appended to the prompt (teacher forcing). Every figure below is
derived from those rows here, so it can be recomputed from quality.parquet.

Notation: prompt i, positions j = 0 .. n_i - 1 of the baseline's continuation b_i,
lp_v(i, j) / lp_b(i, j) the variant's / baseline's log-probability of b_i[j] given the prompt and
b_i[:j], rank_v(i, j) its rank in the variant's distribution (1 = the variant's top-1 token),
N = sum_i n_i, g_i / g'_i the baseline's / variant's greedy continuations.

  mean_llr            (1/N) sum_ij (lp_v(i, j) - lp_b(i, j))              nats per token; 0 = same
  ppl_ratio           exp(-(1/N) sum lp_v) / exp(-(1/N) sum lp_b) = exp(-mean_llr)
  top1_agreement      (1/N) #{(i, j): rank_v(i, j) = 1}: where the variant's top-1 is the baseline's
  exact_match_rate    (1/P) #{i: g'_i = g_i} over the P prompts (token ids, all max_new_tokens)
  first_divergence    (1/P) sum_i d_i, d_i = first j with g'_i[j] != g_i[j], = len(g_i) when equal
  task_accuracy       (1/T) #{task prompts whose extracted answer equals the known answer}
  task_accuracy_drop_points   100 * (task_accuracy_baseline - task_accuracy_variant)

Measure `generated_topk` (an engine without prompt log-probabilities that returns the top-k of
each generated token: SGLang, TGI): the variant's own greedy run is read up to its first
divergence d_i from b_i (token strings). There the variant's context equals the baseline's, so
for j < d_i lp_v(i, j) is the variant's log-probability of its own token (= b_i[j], rank 1) and at
j = d_i it is the entry of b_i[d_i] in the variant's top-k (rank > 1). Over those positions
(n_i = d_i + 1, or len(b_i) without a divergence):
  top1_agreement      sum_i min(d_i, len b_i) / sum_i n_i: the geometric estimate of the share of
                      positions whose top-1 agrees (consistent when disagreements are independent)
  mean_llr, ppl_ratio as above over the same positions; when b_i[d_i] is outside the variant's
                      top-k its log-probability is bounded above by the k-th (`censored`): mean_llr
                      is then an upper bound and ppl_ratio a lower bound, and the result says so.

Intervals: 95 % percentile bootstrap over prompts (a prompt's positions are resampled together,
since they are correlated), `n_boot` replicates from a seeded PCG64 generator; for the ratios the
baseline is resampled with the same prompt indices (paired).
Which measure was used is stated per variant: `prompt_logprobs` (teacher forced, all figures),
`generated_topk` (above), `text` (greedy text only: exact match and first divergence).

The gate (conf/quality/): a variant fails when a figure is outside its threshold; the estimate is
compared (the interval is reported beside it). A variant that should have been gated but has no
quality figures fails with `not measured`, so an untested quantization is never recommended.

Side effects: none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.confidence import interval, rng
from analysis.schema import QualityConfig

MEASURES = ("prompt_logprobs", "generated_topk", "text")
# The seeds' accuracy claims, quoted where the report shows what was measured beside them
# (../shared/seeds/002_400661b782f52eab.txt; no primary source: cost-and-capacity.md "Seed claims").
SEED_CLAIMS = {
    "fp8": {"speedup": 2.3, "accuracy_drop_pct": 0.8, "source": "seed 002_400661b782f52eab.txt: "
            "\"FP8 ... 2.3x speedup with a negligible 0.8% drop in accuracy\""},
    "int4": {"speedup": 3.7, "accuracy_drop_pct": 1.5, "source": "seed 002_400661b782f52eab.txt: "
             "\"INT4 ... 3.7x ... accuracy drop around 1.5%\""},
}  # fmt: skip
# AWQ/GPTQ are 4-bit weight methods: the seed's INT4 claim is the one that applies to them.
SEED_CLAIM_FOR = {"fp8": "fp8", "fp8_kv": "fp8", "int8": "fp8", "int4": "int4", "awq": "int4", "gptq": "int4"}


@dataclass
class Figure:
    """One quality figure: estimate and 95 % bootstrap interval."""

    value: float | None
    lo: float | None = None
    hi: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QualityResult:
    """A variant's figures against its baseline, and the gate's verdict."""

    variant_id: str
    baseline_variant_id: str | None
    measure: str | None
    n_prompts: int = 0
    n_tokens: int = 0
    mean_llr: Figure | None = None
    ppl_ratio: Figure | None = None
    top1_agreement: Figure | None = None
    exact_match_rate: Figure | None = None
    first_divergence: Figure | None = None
    max_new_tokens: int | None = None
    task_n: int = 0
    task_accuracy: Figure | None = None
    task_accuracy_baseline: float | None = None
    task_accuracy_drop_points: Figure | None = None
    task_meaningful: bool = True
    task_note: str | None = None
    baseline_self_top1: float | None = None  # the baseline's own rank-1 share (1.0 unless ties / non-determinism)
    gate: str = "not_gated"  # pass | fail | not_gated
    gate_reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d


def _lists(col: pd.Series) -> list[np.ndarray]:
    return [np.asarray(v if v is not None else [], dtype=float) for v in col]


def _boot_idx(n: int, n_boot: int, seed: int) -> np.ndarray:
    return rng(seed).integers(0, n, size=(n_boot, n)) if n else np.zeros((0, 0), dtype=int)


def _fig(est: float | None, reps: np.ndarray | None) -> Figure:
    if est is None or (isinstance(est, float) and not math.isfinite(est)):
        return Figure(None)
    lo, hi = interval(reps) if reps is not None and reps.size else (None, None)
    return Figure(float(est), lo, hi)


def teacher_forced(variant: pd.DataFrame, baseline: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """mean_llr, ppl_ratio, top1_agreement (module doc) over the prompts both rows have.

    `variant` and `baseline` rows carry prompt_key, tf_logprobs, tf_ranks (the same reference
    continuation in both); prompts whose lengths differ (a truncated response) are left out."""
    b = baseline.set_index("prompt_key")
    rows = []
    for r in variant.itertuples():
        if r.prompt_key not in b.index or r.tf_logprobs is None:
            continue
        lb = np.asarray(b.at[r.prompt_key, "tf_logprobs"], dtype=float)
        lv = np.asarray(r.tf_logprobs, dtype=float)
        rv = np.asarray(r.tf_ranks, dtype=float)
        rb = np.asarray(b.at[r.prompt_key, "tf_ranks"], dtype=float)
        if lv.size == 0 or lv.size != lb.size:
            continue
        rows.append((lv.sum(), lb.sum(), float((rv == 1).sum()), float((rb == 1).sum()), lv.size))
    if not rows:
        return {"n_prompts": 0, "n_tokens": 0}
    out = _llr_stats([(a, b_, t1, n) for a, b_, t1, _, n in rows], n_boot, seed)
    out["baseline_self_top1"] = float(sum(r[3] for r in rows) / sum(r[4] for r in rows))
    return out


def _llr_stats(rows: list[tuple[float, float, float, int]], n_boot: int, seed: int) -> dict[str, Any]:
    """mean_llr, ppl_ratio, top1_agreement from per-prompt (sum lp_v, sum lp_b, top-1 count, n)."""
    a = np.asarray(rows, dtype=float)
    sv, sb, t1, n = a.T

    def stats(ix: np.ndarray | slice) -> tuple[Any, Any, Any]:
        nn = n[ix].sum(axis=-1)
        llr = (sv[ix].sum(axis=-1) - sb[ix].sum(axis=-1)) / nn
        return llr, np.exp(-llr), t1[ix].sum(axis=-1) / nn

    llr, ppl, top1 = stats(slice(None))
    r_llr, r_ppl, r_top1 = stats(_boot_idx(len(rows), n_boot, seed))
    return {"n_prompts": len(rows), "n_tokens": int(n.sum()), "mean_llr": _fig(float(llr), r_llr),
            "ppl_ratio": _fig(float(ppl), r_ppl), "top1_agreement": _fig(float(top1), r_top1)}  # fmt: skip


def generated_topk(variant: pd.DataFrame, baseline: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """mean_llr, ppl_ratio, top1_agreement of the `generated_topk` measure (module doc) over the
    prompts both rows have: gen_tokens, gen_logprobs (both) and gen_top_logprobs_json (variant)."""
    import json

    b = baseline.set_index("prompt_key")
    rows: list[tuple[float, float, float, int]] = []
    censored = 0
    for r in variant.itertuples():
        if r.prompt_key not in b.index:
            continue
        bt, blp = b.at[r.prompt_key, "gen_tokens"], b.at[r.prompt_key, "gen_logprobs"]
        vt, vlp, vtop = r.gen_tokens, r.gen_logprobs, getattr(r, "gen_top_logprobs_json", None)
        if any(not isinstance(x, (list, tuple, np.ndarray)) for x in (bt, blp, vt, vlp)) or not isinstance(vtop, str):
            continue
        bt, vt, blp, vlp = list(bt), list(vt), np.asarray(blp, dtype=float), np.asarray(vlp, dtype=float)
        if not bt or len(blp) != len(bt) or len(vlp) != len(vt):
            continue
        top = json.loads(vtop)
        d = first_divergence(vt, bt)
        if d < len(bt) and d >= len(vt):  # the variant stopped early: only the shared positions
            m, lv_d = d, None
        elif d < len(bt):
            m = d + 1
            k = top[d] if d < len(top) else {}
            if not k:  # no top-k at the divergence: this prompt cannot be scored
                continue
            lv_d = k.get(bt[d])
            if lv_d is None:
                censored += 1
                lv_d = min(k.values())
        else:
            m, lv_d = len(bt), None
        if m == 0:
            continue
        sv = float(vlp[: min(d, m)].sum()) + (float(lv_d) if lv_d is not None and m > d else 0.0)
        rows.append((sv, float(blp[:m].sum()), float(min(d, m)), m))
    if not rows:
        return {"n_prompts": 0, "n_tokens": 0}
    out = _llr_stats(rows, n_boot, seed)
    out["censored"] = censored
    return out


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int:
    """First index where the two sequences differ; len(b) when a equals b (b = the baseline's)."""
    for j, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return j
    return len(b) if len(a) >= len(b) else len(a)


def free_running(variant: pd.DataFrame, baseline: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """exact_match_rate and first_divergence (module doc) over the prompts both rows have."""
    b = baseline.set_index("prompt_key")
    em, dv, lens = [], [], []
    for r in variant.itertuples():
        if r.prompt_key not in b.index:
            continue
        gb = gv = None
        for col in ("gen_token_ids", "gen_tokens"):  # token ids, else token strings (generated_topk)
            ib, iv = (b.at[r.prompt_key, col], getattr(r, col)) if col in b.columns else (None, None)
            if isinstance(ib, (list, tuple, np.ndarray)) and isinstance(iv, (list, tuple, np.ndarray)):
                gb, gv = list(ib), list(iv)
                break
        if gb is None or gv is None:  # a text-only engine: characters of the greedy text
            gb, gv = list(str(b.at[r.prompt_key, "gen_text"] or "")), list(str(r.gen_text or ""))
        em.append(float(gv == gb))
        dv.append(float(first_divergence(gv, gb)))
        lens.append(len(gb))
    if not em:
        return {}
    em_a, dv_a = np.asarray(em), np.asarray(dv)
    idx = _boot_idx(len(em), n_boot, seed + 1)
    return {"exact_match_rate": _fig(float(em_a.mean()), em_a[idx].mean(axis=1)),
            "first_divergence": _fig(float(dv_a.mean()), dv_a[idx].mean(axis=1)),
            "max_new_tokens": int(max(lens))}  # fmt: skip


def normalise_answer(text: str) -> str:
    """The answer a task response gives: its first line, stripped of spaces and a final period, lower case."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line.strip().rstrip(".").strip().lower()


def task_correct(text: str, answer: str) -> bool:
    """Exact score of one task response (module doc): normalised first line == normalised answer."""
    return normalise_answer(text) == normalise_answer(answer)


def task_scores(rows: pd.DataFrame) -> np.ndarray:
    return np.asarray([float(task_correct(t, a)) for t, a in zip(rows["gen_text"], rows["answer"], strict=True)])


def tasks(variant: pd.DataFrame, baseline: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """task_accuracy and its drop against the baseline, paired over the task prompts both ran."""
    b = baseline.set_index("prompt_key")
    v = variant[variant["prompt_key"].isin(b.index)]
    if v.empty:
        return {}
    sv = task_scores(v)
    sb = task_scores(b.loc[v["prompt_key"]].reset_index())
    idx = _boot_idx(len(sv), n_boot, seed + 2)
    drop = 100 * (sb.mean() - sv.mean())
    return {"task_n": int(len(sv)), "task_accuracy": _fig(float(sv.mean()), sv[idx].mean(axis=1)),
            "task_accuracy_baseline": float(sb.mean()),
            "task_accuracy_drop_points": _fig(float(drop), 100 * (sb[idx].mean(axis=1) - sv[idx].mean(axis=1)))}  # fmt: skip


def compare(variant: pd.DataFrame, baseline: pd.DataFrame, *, variant_id: str, baseline_variant_id: str,
            task_meaningful: bool = True, n_boot: int = 1000, seed: int = 0) -> QualityResult:  # fmt: skip
    """Every figure of one variant against its baseline (rows of both quality runs, both sets)."""
    def all_(df: pd.DataFrame, m: str) -> bool:
        return bool(df.get("measure", pd.Series(dtype=str)).eq(m).all()) and not df.empty

    # both runs must have read the same thing; otherwise the figures both have (text)
    measure = next((m for m in ("prompt_logprobs", "generated_topk") if all_(variant, m) and all_(baseline, m)), "text")
    out = QualityResult(variant_id=variant_id, baseline_variant_id=baseline_variant_id, measure=measure)
    gv, gb = variant[variant["set"] == "generic"], baseline[baseline["set"] == "generic"]
    if measure == "prompt_logprobs":
        tf = teacher_forced(gv, gb, n_boot, seed)
        for k, val in tf.items():
            setattr(out, k, val)
    elif measure == "generated_topk":
        gt = generated_topk(gv, gb, n_boot, seed)
        cens = gt.pop("censored", 0)
        for k, val in gt.items():
            setattr(out, k, val)
        out.notes.append("the engine has no prompt log-probabilities: log-likelihood and top-1 figures from the top-k "
                         "of generated tokens, over the positions up to each prompt's first divergence (docs/quality.md)")  # fmt: skip
        if cens:
            out.notes.append(f"at {cens} divergence(s) the baseline's token was outside the variant's top-k: its "
                             "log-probability is bounded by the k-th, so mean_llr is an upper bound and ppl_ratio a lower bound")  # fmt: skip
    else:
        out.notes.append("the engine has no prompt log-probabilities: text agreement only (exact match, first divergence)")
    fr = free_running(gv, gb, n_boot, seed)
    for k, val in fr.items():
        setattr(out, k, val)
    out.n_prompts = max(out.n_prompts, int(len(gv)))
    tv, tb = variant[variant["set"] == "tasks"], baseline[baseline["set"] == "tasks"]
    out.task_meaningful = task_meaningful
    if not tv.empty and not tb.empty:
        if task_meaningful:
            for k, val in tasks(tv, tb, n_boot, seed).items():
                setattr(out, k, val)
        else:
            out.task_n = int(len(tv))
            out.task_note = ("random weights: task accuracy is not meaningful (it measures nothing a user would "
                             "get), so no number is shown and the task threshold is not applied")  # fmt: skip
    return out


@dataclass
class Thresholds:
    """conf/quality/ thresholds; null = not applied. Defaults: analysis.schema.QualityConfig's."""

    min_top1_agreement: float | None = QualityConfig.min_top1_agreement
    max_ppl_ratio: float | None = QualityConfig.max_ppl_ratio
    max_task_accuracy_drop_points: float | None = QualityConfig.max_task_accuracy_drop_points
    min_exact_match_rate: float | None = QualityConfig.min_exact_match_rate


def gate(res: QualityResult, th: Thresholds | Mapping[str, Any]) -> QualityResult:
    """Set res.gate / res.gate_reasons from the thresholds (estimates compared; module doc)."""
    t = th if isinstance(th, Thresholds) else Thresholds(**{k: th.get(k) for k in asdict(Thresholds()) if k in th})
    reasons: list[str] = []

    def check(name: str, fig: Figure | None, limit: float | None, low: bool, fmt: str = ".4f") -> None:
        if limit is None:
            return
        if fig is None or fig.value is None:
            reasons.append(f"{name} not measured (measure {res.measure}), threshold {limit:{fmt}}")
            return
        bad = fig.value < limit if low else fig.value > limit
        if bad:
            reasons.append(f"{name} {fig.value:{fmt}} {'<' if low else '>'} {'min' if low else 'max'} {limit:{fmt}}")

    check("top1_agreement", res.top1_agreement, t.min_top1_agreement, low=True)
    check("ppl_ratio", res.ppl_ratio, t.max_ppl_ratio, low=False)
    check("exact_match_rate", res.exact_match_rate, t.min_exact_match_rate, low=True)
    if res.task_meaningful and res.task_n:
        check("task_accuracy_drop_points", res.task_accuracy_drop_points, t.max_task_accuracy_drop_points,
              low=False, fmt=".2f")  # fmt: skip
    res.gate = "fail" if reasons else "pass"
    res.gate_reasons = reasons
    return res


def not_measured(variant_id: str, why: str) -> QualityResult:
    """A variant the gate applies to but that has no quality figures: it fails with the reason."""
    return QualityResult(variant_id=variant_id, baseline_variant_id=None, measure=None, gate="fail",
                         gate_reasons=[f"quality not measured: {why}"])  # fmt: skip


def accepted_cost(usd_per_1m: float | None, res: QualityResult | None) -> tuple[float | None, str]:
    """$ per 1M accepted tokens = $/1M goodput / task pass rate, where a meaningful task set ran.

    Returns (value or None, basis line)."""
    if usd_per_1m is None:
        return None, "no $/1M"
    if res is None or not res.task_n:
        return None, "no task set was run"
    if not res.task_meaningful:
        return None, "not meaningful for random weights (no task pass rate)"
    acc = res.task_accuracy.value if res.task_accuracy else None
    if not acc:
        return None, "task pass rate is 0"
    return usd_per_1m / acc, f"$/1M goodput / task pass rate {acc:.3f}"


def _at(df: pd.DataFrame, vid: str, point_id: str | None, col: str) -> float | None:
    if df is None or df.empty or col not in df.columns:
        return None
    g = df[(df["variant_id"] == vid) & ((df["point_id"] == point_id) if point_id is not None else True)]
    if g.empty:
        return None
    v = g[col].iloc[0]
    return None if v is None or pd.isna(v) else float(v)


def speedups(pooled: pd.DataFrame, vid: str, base_vid: str, knee_point: Mapping[str, str | None]) -> dict[str, Any]:
    """Speed-up of a variant over its baseline measured in the same experiment:
      capacity   tok_per_s_per_gpu at the variant's knee / the baseline's at its knee (SLO capacity)
      tpot_p99   baseline tpot_ms_p99 / variant tpot_ms_p99 at the lowest load both measured (same point_id)
    None where a side is missing (no knee: nothing met the SLO)."""
    out: dict[str, Any] = {"capacity": None, "tpot_p99": None, "tpot_point_id": None}
    kv, kb = knee_point.get(vid), knee_point.get(base_vid)
    if kv is not None and kb is not None:
        a, b = _at(pooled, vid, kv, "tok_per_s_per_gpu"), _at(pooled, base_vid, kb, "tok_per_s_per_gpu")
        out["capacity"] = a / b if a and b else None
    if pooled is not None and not pooled.empty:
        pv = pooled[pooled["variant_id"] == vid]
        pb = pooled[pooled["variant_id"] == base_vid]
        common = pv.merge(pb, on="point_id", suffixes=("_v", "_b"))
        if not common.empty and "tpot_ms_p99_v" in common.columns:
            r = common.sort_values("load_value_v").iloc[0]
            if r["tpot_ms_p99_v"] and r["tpot_ms_p99_b"] and not pd.isna(r["tpot_ms_p99_v"]) and not pd.isna(r["tpot_ms_p99_b"]):
                out["tpot_p99"] = float(r["tpot_ms_p99_b"]) / float(r["tpot_ms_p99_v"])
                out["tpot_point_id"] = str(r["point_id"])
    return out


def evaluate(variants: Mapping[str, Mapping[str, Any]], qruns: Mapping[str, Mapping[str, Any]],
             rows_by_run: Mapping[str, pd.DataFrame], thresholds: Thresholds, *, baseline_quant: str = "none",
             n_boot: int = 1000, seed: int = 0) -> dict[str, QualityResult]:  # fmt: skip
    """Each variant's QualityResult (gated) from its newest quality run.

    variants: variant_id -> {"quant", "model", "random_weights"}; qruns: variant_id -> the newest
    quality.json summary of that variant (status ok preferred); rows_by_run: run_id -> its
    quality.parquet rows. A variant with quant != baseline_quant is gated: it fails `not measured`
    without an ok quality run or its baseline's rows. Baselines are reported (gate not_gated)."""
    out: dict[str, QualityResult] = {}
    for vid, v in variants.items():
        s = qruns.get(vid)
        if v.get("quant") == baseline_quant:
            if s is not None and s.get("status") == "ok":
                r = QualityResult(variant_id=vid, baseline_variant_id=vid, measure=s.get("measure"),
                                  n_prompts=int(s.get("n_generic") or 0), task_n=int(s.get("n_tasks") or 0),
                                  task_meaningful=not v.get("random_weights"), notes=["the baseline"])  # fmt: skip
                rows = rows_by_run.get(str(s.get("run_id")))
                if rows is not None and not rows.empty:
                    own = rows[rows["set"] == "generic"]
                    tf = teacher_forced(own, own, n_boot, seed) if s.get("measure") == "prompt_logprobs" else {}
                    r.baseline_self_top1 = tf.get("baseline_self_top1")
                    r.n_tokens = int(tf.get("n_tokens") or 0)
                    t = rows[rows["set"] == "tasks"]
                    if not t.empty and r.task_meaningful:
                        sc = task_scores(t)
                        idx = _boot_idx(len(sc), n_boot, seed + 2)
                        r.task_accuracy = _fig(float(sc.mean()), sc[idx].mean(axis=1))
                out[vid] = r
            continue
        if s is None:
            out[vid] = not_measured(vid, "no quality run for this variant (run it with quality=gate)")
            continue
        if s.get("status") != "ok":
            out[vid] = not_measured(vid, f"its quality run ended {s.get('status')}: {s.get('reason') or ''}".rstrip(": "))
            continue
        ref = s.get("reference") or {}
        rows, base = rows_by_run.get(str(s.get("run_id"))), rows_by_run.get(str(ref.get("run_id")))
        if rows is None or base is None:
            out[vid] = not_measured(vid, f"quality rows of {s.get('run_id')} or of its baseline {ref.get('run_id')} are missing")
            continue
        r = compare(rows, base, variant_id=vid, baseline_variant_id=str(ref.get("variant_id")),
                    task_meaningful=not v.get("random_weights"), n_boot=n_boot, seed=seed)  # fmt: skip
        out[vid] = gate(r, thresholds)
    return out


__all__ = ["MEASURES", "SEED_CLAIMS", "SEED_CLAIM_FOR", "Figure", "QualityResult", "Thresholds", "accepted_cost",
           "compare", "first_divergence", "free_running", "gate", "not_measured", "task_correct", "tasks",
           "teacher_forced"]  # fmt: skip
