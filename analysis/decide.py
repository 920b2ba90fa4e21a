"""`python -m analysis.decide <results folder> [overrides]`: the decision from records only.

Composes conf/decide.yaml with Hydra-style overrides (slo=..., pricing=..., capacity.peak_rps=...),
refuses bad inputs with one line each (exit 2), builds the per-point table (analysis.results),
then the knee per variant, the Pareto frontier, the selection, the sensitivity tornado and the
capacity plan, writes a schema-versioned decision.json into the results folder and prints a
short table. Formulas and assumptions: docs/decision.md; decision.json carries them too.

Exit codes: 0 decided (also when no variant meets the SLO: that is a result), 2 bad input.
Side effects: reads the results folder and conf/; writes decision.json (atomically); prints.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from analysis.points import as_float as _f

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
DECISION_SCHEMA_VERSION = 1
EXIT_BAD_INPUT = 2


@dataclass
class SensitivityConfig:
    price_delta: float = 0.30
    output_ratios: list[float] = field(default_factory=lambda: [0.5, 2.0])
    spot_share: float = 0.5


@dataclass
class DecideConfig:
    """conf/decide.yaml: the groups the decision reads, plus its own settings."""

    slo: Any = None
    pricing: Any = None
    capacity: Any = None
    gpu: Any = None
    quality: Any = None
    select_load: float | None = None
    select_load_unit: str = "req/s"
    sensitivity: SensitivityConfig = field(default_factory=SensitivityConfig)
    n_boot: int = 1000
    seed: int = 0
    output: str | None = None
    whatif: Any = None  # conf/whatif/ (analysis.whatif.WhatIfConfig): the what-if section, docs/whatif.md


FORMULAS = {
    "attainment": "count(requests meeting every SLO threshold) / count(measure requests); errors, timeouts, drops are misses",
    "feasible": "attainment >= slo.attainment_target AND each threshold's percentile value <= its limit",
    "usd_per_1m_goodput": "G * P / (goodput_output_tok_per_s * 3600) * 1e6  (P = $/GPU-hour of the book's tier, G = GPUs billed)",
    "interval": "2.5 / 97.5 % percentiles of seeded bootstrap replicates; repetitions resampled hierarchically",
    "knee": "last feasible measured load before the first infeasible one; estimate x = x_lo + s_lo / (s_lo - s_hi) * (x_hi - x_lo) "
            "per constraint slack s (attainment - target, limit - value), the smallest x wins",
    "pareto": "p on the frontier iff no q with q.x >= p.x and q.y >= p.y, one strictly; x = tok/s per user, y = tok/s per GPU",
    "selection": "cheapest usd_per_1m_goodput at each variant's operating point among valid, feasible, priced variants; "
                 "tie when lo_other <= hi_chosen",
    "p_a_cheaper": "mean over all replicate pairs (a, b) of [a < b] + 0.5 [a == b]",
    "sensitivity": "cost x m_v per scenario: price 1 +- delta per GPU type; output length m = (s + (1 - s) k) / k; "
                   "spot m = ((1 - sigma) P_od + sigma P_spot_eff) / P_base (P_base: the book tier the points were priced at)",
    "mu": "conservative knee (interval low end, else measured knee) in req/s / f_len, f_len = s p'/p + (1 - s) o'/o",
    "replicas": "max(min_replicas, ceil(ceil(lambda / (mu * rho_max)) / availability) + spare_replicas); GPUs = replicas * G",
    "scale_up": "lag = provisioning_s + engine start; SLO-miss seconds min(lag, bin) when lambda_b > n_(b-1) * mu",
    "monthly_usd": "static = N_peak P_od H; autoscaled = sum n_b T P_od M; reserved = R P_res H + sum max(n_b - R, 0) T P_od M; "
                   "+ spot: burst part min(u_b, floor(share * n_b)) at P_spot_eff",
    "spot_effective": "P_spot (1 + f_int t_restart / 3600) + (1 - a_spot) (P_od - P_spot)",
    "realised_usd_per_1m": "monthly $ / (sum_b lambda_b T o' M / 1e6)",
    "quality": "analysis/quality.py: mean_llr = (1/N) sum (lp_v - lp_b); ppl_ratio = exp(-mean_llr); top1_agreement = "
               "share of baseline-continuation tokens the variant ranks first; exact_match_rate, first_divergence over "
               "greedy outputs; gate: estimate vs threshold (docs/quality.md)",
    "usd_per_1m_accepted": "usd_per_1m_goodput / task pass rate (only where a meaningful task set ran)",
}  # fmt: skip
ASSUMPTIONS = [
    "Throughput and $/1M use each point's measure window as analysis.metrics reports it (measure_window_s).",
    "Repetitions of one (variant_id, point_id): estimates averaged, latency percentiles the worst repetition.",
    "Invalid points are left out of knees, Pareto and selection; warn points are used and flagged.",
    "Knee interval: attainment replicates only; latency percentiles held at their estimates.",
    "Sensitivity and length-mix rescaling hold SLO feasibility and the operating point at their measured values; "
    "GPU time per request = prefill + decode with the measured prefill share.",
    "Capacity: demand piecewise constant per bin, profile periodic; reactive autoscaler; billing from provisioning start.",
    "Realised $/1M counts every served output token; benchmark $/1M only SLO-meeting (goodput) tokens.",
    "Spot restart time defaults to the engine's measured time_to_ready_s; spot price and interruption rate from the book.",
]


class BadInput(ValueError):
    pass


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    from experiments.schema import register_configs

    register_configs()
    ConfigStore.instance().store(name="_decide_schema", node=DecideConfig)
    from analysis.whatif import WhatIfConfig

    ConfigStore.instance().store(group="whatif", name="_whatif_schema", node=WhatIfConfig)


def compose(overrides: list[str]) -> DecideConfig:
    """conf/decide.yaml composed with `overrides`, as typed objects (raises BadInput)."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    _register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hcompose(config_name="decide", overrides=overrides)
        obj = OmegaConf.to_object(cfg)
    except Exception as e:  # noqa: BLE001 - Hydra/OmegaConf raise many types; one line for the user
        raise BadInput(f"invalid configuration: {str(e).splitlines()[0]}") from e
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(obj, DecideConfig)
    return obj


def gpu_catalog(names: set[str]) -> dict[str, Any]:
    """conf/gpu/<name>.yaml for each name that has one (spec figures: tdp_w, bandwidth)."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    out = {}
    for n in sorted(names):
        if not (CONF / "gpu" / f"{n}.yaml").is_file():
            continue
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            out[n] = OmegaConf.to_object(hcompose(config_name="decide", overrides=[f"gpu={n}"])).gpu
        GlobalHydra.instance().clear()
    return out


def capacity_problems(cap: Any) -> list[str]:
    """Bad capacity inputs, one line each."""
    out = []
    has_demand = cap.peak_rps is not None or bool(cap.profile_rps) or bool(cap.trace_path)
    if cap.plan and not has_demand:
        out.append("capacity: a plan needs a peak: set capacity.peak_rps, capacity.profile_rps or capacity.trace_path")
    if cap.peak_rps is not None and cap.peak_rps <= 0:
        out.append(f"capacity.peak_rps={cap.peak_rps} must be > 0")
    if cap.profile_rps and any(v < 0 for v in cap.profile_rps):
        out.append("capacity.profile_rps has a negative rate")
    if cap.trace_path and not Path(cap.trace_path).is_file():
        out.append(f"capacity.trace_path={cap.trace_path}: no such file")
    for name, lo_open, hi in (("rho_max", True, 1.0), ("availability", True, 1.0), ("spot_share_max", False, 1.0),
                              ("spot_availability", False, 1.0)):  # fmt: skip
        v = getattr(cap, name)
        if not ((0 < v) if lo_open else (0 <= v)) or v > hi:
            out.append(f"capacity.{name}={v} must be in {'(' if lo_open else '['}0, {hi:g}]")
    for name in ("provisioning_s", "spare_replicas", "min_replicas", "profile_bin_s", "hours_per_month"):
        if getattr(cap, name) < 0 or (name in ("profile_bin_s", "hours_per_month") and getattr(cap, name) == 0):
            out.append(f"capacity.{name}={getattr(cap, name)} must be {'> 0' if name in ('profile_bin_s', 'hours_per_month') else '>= 0'}")
    for name in ("engine_start_s", "spot_interruptions_per_hour", "spot_restart_s", "reserved_replicas",
                 "prompt_tokens_mean", "output_tokens_mean"):  # fmt: skip
        v = getattr(cap, name)
        if v is not None and v < 0:
            out.append(f"capacity.{name}={v} must be >= 0")
    if cap.reserved_term not in ("1y", "3y"):
        out.append(f"capacity.reserved_term={cap.reserved_term!r}: use 1y or 3y")
    return out


def input_problems(cfg: DecideConfig, run_gpus: dict[str, int]) -> list[str]:
    """Every bad input (dec1's preflight.decision_problems per run GPU, plus the capacity group)."""
    from experiments.preflight import decision_problems

    out: list[str] = []
    for name, count in sorted(run_gpus.items()):
        g = SimpleNamespace(**{**vars(cfg.gpu), "name": name, "count": count}) if hasattr(cfg.gpu, "__dict__") else cfg.gpu
        for p in decision_problems(SimpleNamespace(slo=cfg.slo, pricing=cfg.pricing, gpu=g)):
            if p not in out:
                out.append(p)
    return out + capacity_problems(cfg.capacity)


def _limits(table, slo) -> dict[str, float]:
    """Knee constraints: the SLO's thresholds on the slo_<metric> columns the table carries."""
    from analysis.slo import thresholds

    return {f"slo_{t.metric}": t.limit_ms for t in thresholds(slo) if f"slo_{t.metric}" in table.columns}


def decide(results: Path, overrides: list[str]) -> tuple[dict[str, Any], Path]:
    """Everything the command does short of printing; returns (decision, path written)."""
    from analysis import knee, pareto, selection
    from analysis import results as res_mod
    from analysis.points import pool_repetitions
    from experiments.config import to_plain

    cfg = compose(overrides)
    runs = res_mod.load_runs(results)  # ResultsError: no runs
    run_gpus = {}
    for r in runs:
        if r.skipped is None:
            g = r.config.get("gpu") or {}
            run_gpus[str(g.get("name", "cpu"))] = int(g.get("count") or 0)
    problems = input_problems(cfg, run_gpus)
    problems += _whatif_problems(cfg)
    if problems:
        raise BadInput("\n".join(problems))
    catalog = {k: to_plain(v) for k, v in gpu_catalog(set(run_gpus)).items()}
    built = res_mod.build_table(results, slo=cfg.slo, pricing=cfg.pricing, gpu_catalog=catalog, n_boot=cfg.n_boot,
                                seed=cfg.seed)  # fmt: skip
    table = built.points
    pooled = pool_repetitions(table, cfg.seed)
    target = float(cfg.slo.attainment_target)
    limits = _limits(table, cfg.slo)
    kn = knee.knees(pooled, target, limits, pooled=True)
    front = pareto.pareto_frontier(pooled)
    qual = _quality(cfg, runs, pooled, kn)
    sel = selection.select(table, target=target, limits=limits, load=cfg.select_load, load_unit=cfg.select_load_unit,
                           seed=cfg.seed, knee_by_variant=kn, quality=qual["gate_failures"])  # fmt: skip
    _accepted(qual, sel, pooled, kn)

    op = {c.variant_id: pooled[(pooled["variant_id"] == c.variant_id) & (pooled["point_id"] == c.point_id)].iloc[0]
          for c in sel.ranked}  # fmt: skip
    torn, not_eval = _sensitivity(cfg, sel, op)
    capacity = _capacity(cfg, sel, kn, op)

    decision = {
        "schema_version": DECISION_SCHEMA_VERSION,
        "kind": "servelab.decision",
        "created_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": str(results),
        "overrides": list(overrides),
        "config": to_plain(cfg),
        "runs": [{"run_id": r.run_id, "path": str(r.path), "schema_version": r.summary.get("schema_version"),
                  "status": r.summary.get("status"), "variant_id": r.variant_id, "variant_label": r.variant_label,
                  "skipped": r.skipped} for r in runs],  # fmt: skip
        "points": res_mod.table_for_json(table),
        "point_details": res_mod._jsonable(built.details),
        "knees": [k.to_dict() for k in kn.values()],
        # search=knee: each launch's stop rule, bracket and the points it tried (run.json resume.knee_search)
        "searches": [{"variant_id": r.variant_id, "variant_label": r.variant_label, "run_id": r.run_id,
                      **r.summary["resume"]["knee_search"]} for r in runs
                     if r.skipped is None and ((r.summary.get("resume") or {}).get("knee_search"))],
        "pareto": res_mod.table_for_json(front[["variant_id", "variant_label", "point_id", "load_value", "load_unit",
                                                 "tok_per_s_per_user", "tok_per_s_per_gpu", "feasible"]]) if len(front) else [],
        "selection": sel.to_dict(),
        "sensitivity": {"rows": [r.to_dict() for r in torn], "not_evaluated": not_eval},
        "capacity": capacity,
        "quality": qual["section"],
        "formulas": FORMULAS,
        "assumptions": ASSUMPTIONS,
        "problems": built.problems,
    }  # fmt: skip
    decision["whatif"] = _whatif(cfg, decision, runs)
    decision = res_mod._jsonable(decision)
    out = Path(cfg.output) if cfg.output else Path(results) / "decision.json"
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(decision, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, out)
    return decision, out


def _quality(cfg: DecideConfig, runs: list[Any], pooled: Any, kn: dict[str, Any]) -> dict[str, Any]:
    """The quality gate over the results' quality runs (analysis.quality): per-variant figures, the
    variants that fail (for selection), speed-ups against the baseline."""
    from analysis import quality as aq
    from analysis import results as res_mod

    q = cfg.quality
    if q is None or not q.enabled:
        return {"gate_failures": {}, "section": {"applied": False, "why": "quality=none: decided on cost alone"}}
    qruns, rows_by_run = res_mod.load_quality(runs)
    variants: dict[str, dict[str, Any]] = {}
    labels: dict[str, str] = {}
    for r in runs:
        if r.skipped is None or r.variant_id in qruns:
            c = r.config
            variants.setdefault(r.variant_id, {"quant": (c.get("quant") or {}).get("name"),
                                               "model": (c.get("model") or {}).get("name"),
                                               "random_weights": bool((c.get("model") or {}).get("random_weights"))})  # fmt: skip
            labels.setdefault(r.variant_id, r.variant_label)
    quantized = sorted(labels[v] for v, x in variants.items() if x["quant"] != q.baseline_quant)
    if not qruns and not q.require:
        why = "no quality run in these results" + (f": {', '.join(quantized)} compared on cost alone "
                                                   "(run with quality=gate, e.g. experiment=quant_shootout)" if quantized else "")  # fmt: skip
        return {"gate_failures": {}, "section": {"applied": False, "why": why}}
    th = aq.Thresholds(min_top1_agreement=q.min_top1_agreement, max_ppl_ratio=q.max_ppl_ratio,
                       max_task_accuracy_drop_points=q.max_task_accuracy_drop_points,
                       min_exact_match_rate=q.min_exact_match_rate)  # fmt: skip
    res = aq.evaluate(variants, qruns, rows_by_run, th, baseline_quant=q.baseline_quant, n_boot=q.n_boot, seed=cfg.seed)
    knee_point = {v: (k.point_id if getattr(k, "point_id", None) else None) for v, k in kn.items()}
    rows = []
    for vid, r in res.items():
        d = r.to_dict()
        quant = variants[vid]["quant"]
        claim_key = aq.SEED_CLAIM_FOR.get(str(quant))
        base = r.baseline_variant_id if r.baseline_variant_id and r.baseline_variant_id != vid else None
        if base is None and quant != q.baseline_quant:  # not measured: the speed-up still has a baseline in the table
            base = next((v for v, x in variants.items() if x["quant"] == q.baseline_quant and x["model"] == variants[vid]["model"]), None)
        d.update(variant_label=labels.get(vid, vid), quant=quant, model=variants[vid]["model"],
                 seed_claim=aq.SEED_CLAIMS.get(claim_key) if claim_key else None,
                 speedup=aq.speedups(pooled, vid, base, knee_point) if base else None,
                 run_id=(qruns.get(vid) or {}).get("run_id"))  # fmt: skip
        rows.append(d)
    rows.sort(key=lambda d: (d["quant"] != q.baseline_quant, d["variant_label"]))
    failures = {vid: "; ".join(r.gate_reasons) for vid, r in res.items() if r.gate == "fail"}
    section = {"applied": True, "baseline_quant": q.baseline_quant, "thresholds": asdict(th),
               "compared": "estimates against the thresholds; intervals: 95 % bootstrap over prompts",
               "variants": rows}  # fmt: skip
    return {"gate_failures": failures, "section": section}


def _accepted(qual: dict[str, Any], sel: Any, pooled: Any, kn: dict[str, Any]) -> None:
    """$/1M goodput and $/1M accepted tokens per variant at its operating point (the selection's,
    else its knee: an excluded variant still shows what it would have cost)."""
    from analysis import quality as aq

    sec = qual["section"]
    if not sec.get("applied"):
        return
    usd = {c.variant_id: (c.usd, c.point_id) for c in sel.ranked}
    for d in sec["variants"]:
        u, pid = usd.get(d["variant_id"], (None, None))
        k = kn.get(d["variant_id"])
        if u is None and k is not None and getattr(k, "point_id", None):
            row = pooled[(pooled["variant_id"] == d["variant_id"]) & (pooled["point_id"] == k.point_id)]
            if len(row):
                u, pid = _f(row["usd_per_1m_goodput"].iloc[0]), k.point_id
        res = aq.QualityResult(variant_id=d["variant_id"], baseline_variant_id=None, measure=d["measure"],
                               task_n=d["task_n"], task_meaningful=d["task_meaningful"],
                               task_accuracy=aq.Figure(**d["task_accuracy"]) if d.get("task_accuracy") else None)  # fmt: skip
        d["usd_per_1m_goodput"] = u
        d["operating_point_id"] = pid
        d["usd_per_1m_accepted"], d["usd_per_1m_accepted_basis"] = aq.accepted_cost(u, res)
def _whatif_problems(cfg: DecideConfig) -> list[str]:
    from analysis import whatif_data

    return whatif_data.problems(cfg)


def _whatif(cfg: DecideConfig, decision: dict[str, Any], runs: list[Any]) -> dict[str, Any] | None:
    """The what-if table (analysis.whatif_data; None with whatif=none); a bad variant name is a BadInput."""
    from analysis import whatif_data

    try:
        return whatif_data.evaluate(cfg, decision, runs)
    except ValueError as e:
        raise BadInput(str(e)) from e


def _sensitivity(cfg: DecideConfig, sel: Any, op: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """Tornado rows over price per GPU type, output length and spot share, and what could not be evaluated."""
    from analysis import capacity as cap_mod
    from analysis import cost, sensitivity

    scenarios = sensitivity.price_scenarios(sel, cfg.sensitivity.price_delta)
    not_eval = []
    mix = sensitivity.output_mix_scenarios(sel, {v: _f(r.get("prefill_time_share")) for v, r in op.items()},
                                           tuple(cfg.sensitivity.output_ratios))  # type: ignore[arg-type]  # fmt: skip
    if not mix and sel.ranked:
        not_eval.append("output length: no measured prefill share for every candidate")
    prices = {}
    for c in sel.ranked:
        g = SimpleNamespace(name=c.gpu_name, count=c.gpu_count)
        base = _price(cost, cfg.pricing, g, None)
        od = _price(cost, cfg.pricing, g, "on_demand") or base
        sp = _price(cost, cfg.pricing, g, "spot")
        f_int = _first(cfg.capacity.spot_interruptions_per_hour, cfg.pricing.spot_interruptions_per_hour)
        restart = _first(cfg.capacity.spot_restart_s, _f(op[c.variant_id].get("time_to_ready_s")), 0.0)
        eff = (cap_mod.spot_effective_usd_per_hour(od, sp, f_int, restart, cfg.capacity.spot_availability)
               if od and sp is not None and f_int is not None else None)  # fmt: skip
        prices[c.variant_id] = (base, od, eff)
    spot = sensitivity.spot_scenarios(sel, prices, (0.0, cfg.sensitivity.spot_share))
    if not spot and sel.ranked:
        not_eval.append(f"spot share: pricing={cfg.pricing.name} lacks a spot price or interruption rate for a candidate")
    return sensitivity.tornado(sel, [*scenarios, *mix, *spot]), not_eval


def _capacity(cfg: DecideConfig, sel: Any, kn: dict[str, Any], op: dict[str, Any]) -> dict[str, Any] | None:
    """One capacity plan per ranked candidate, or None without a demand (or with capacity.plan=false)."""
    from analysis import capacity as cap_mod
    from analysis import cost
    from loadgen.trace import TraceError, load_trace

    c = cfg.capacity
    trace_times = None
    if c.trace_path:
        try:
            trace_times = [r.timestamp_s for r in load_trace(c.trace_path)]
        except TraceError as e:
            raise BadInput(f"capacity.trace_path: {e}") from e
    dem = cap_mod.demand(c.peak_rps, c.profile_rps, c.profile_bin_s, trace_times)
    if dem is None or c.plan is False:
        return None
    plans, skipped, notes = [], [], []
    for cand in sel.ranked:
        k, r = kn[cand.variant_id], op[cand.variant_id]
        if k.load_unit == "req/s":
            mu = k.conservative_load() if cfg.select_load is None else cand.load_value
        else:  # closed loop: the knee point's goodput in req/s
            mu = k.goodput_rps if cfg.select_load is None else cand.goodput_rps
        if not mu:
            skipped.append({"variant_id": cand.variant_id, "reason": "no req/s at the knee"})
            continue
        g = SimpleNamespace(name=cand.gpu_name, count=cand.gpu_count)
        units = cost.billed_units(g)
        od = _price(cost, cfg.pricing, g, "on_demand")
        if od is None:
            notes.append(f"{cand.variant_label}: pricing={cfg.pricing.name} has no on-demand price for {g.name}: "
                         f"its {cfg.pricing.tier} price stands in for on demand")  # fmt: skip
        prices = cap_mod.ReplicaPrices(
            on_demand=(od if od is not None else (_price(cost, cfg.pricing, g, None) or 0.0)) * units,
            spot=_mul(_price(cost, cfg.pricing, g, "spot"), units),
            reserved=_mul(_price(cost, cfg.pricing, g, f"reserved_{c.reserved_term}"), units),
            spot_interruptions_per_hour=cfg.pricing.spot_interruptions_per_hour, source=cfg.pricing.name,
        )  # fmt: skip
        ready = _f(r.get("time_to_ready_s")) or 0.0
        p = cap_mod.plan(
            variant_id=cand.variant_id, variant_label=cand.variant_label, knee_rps=float(mu), demand=dem,
            prices=prices, gpus_per_replica=int(cand.gpu_count), provisioning_s=c.provisioning_s,
            engine_start_s=c.engine_start_s if c.engine_start_s is not None else ready, rho_max=c.rho_max,
            availability=c.availability, spare_replicas=c.spare_replicas, min_replicas=c.min_replicas,
            prefill_share=_f(r.get("prefill_time_share")), measured_prompt_tokens=_f(r.get("prompt_tokens_mean")),
            measured_output_tokens=_f(r.get("output_tokens_mean")) or 1.0,
            planned_prompt_tokens=c.prompt_tokens_mean, planned_output_tokens=c.output_tokens_mean,
            spot_share_max=c.spot_share_max, spot_interruptions_per_hour=c.spot_interruptions_per_hour,
            spot_restart_s=c.spot_restart_s, spot_availability=c.spot_availability,
            reserved_replicas=c.reserved_replicas, hours_per_month=c.hours_per_month, benchmark_usd_per_1m=cand.usd,
        )  # fmt: skip
        plans.append(p.to_dict() | {"prices_usd_per_replica_hour": vars(prices)})
    return {"demand": vars(dem), "plans": plans, "skipped": skipped, "notes": notes}


def _price(cost_mod: Any, pricing: Any, gpu: Any, tier: str | None) -> float | None:
    """$/unit-hour of `gpu` in the book at `tier` (None = the book's own tier); None when missing."""
    try:
        return cost_mod.price_for(pricing, gpu, tier).usd_per_unit_hour
    except cost_mod.PriceMissing:
        return None


def _first(*vals: Any) -> Any:
    return next((v for v in vals if v is not None), None)


def _mul(v: float | None, k: int) -> float | None:
    return None if v is None else v * k



def _usd(v: Any) -> str:
    return "-" if v is None else f"${v:,.4g}" if abs(v) < 1000 else f"${v:,.0f}"


def summary_text(d: dict[str, Any], path: Path) -> str:
    """The short table the command prints."""
    sel = d["selection"]
    lines = [f"decision for {d['results']} (slo={d['config']['slo']['name']}, pricing={d['config']['pricing']['name']}, "
             f"basis {sel['basis']})"]  # fmt: skip
    ch, ru = sel["chosen"], sel["runner_up"]
    if ch is None:
        lines.append("chosen: none: no valid variant meets the SLO")
    else:
        lines.append(f"chosen:    {ch['variant_label']:<24} {_usd(ch['usd'])}/1M goodput tokens [{_usd(ch['usd_lo'])}, "
                     f"{_usd(ch['usd_hi'])}] at {ch['load_value']:g} {ch['load_unit']} ({ch['verdict']})")  # fmt: skip
    if ru is not None:
        p = next((x["p_a_cheaper"] for x in sel["p_cheaper"] if x["b"] == ru["variant_id"]), None)
        lines.append(f"runner-up: {ru['variant_label']:<24} {_usd(ru['usd'])}/1M [{_usd(ru['usd_lo'])}, {_usd(ru['usd_hi'])}] "
                     f"at {ru['load_value']:g} {ru['load_unit']}"
                     + (f"  P(chosen cheaper) = {p:.2f}" if p is not None else ""))  # fmt: skip
    if sel["tie"]:
        labels = {c["variant_id"]: c["variant_label"] for c in sel["ranked"]}
        lines.append("TIE: intervals overlap with " + ", ".join(labels[v] for v in sel["tied"]))
    cap = d.get("capacity")
    if cap and cap["plans"] and ch is not None:
        pl = next((p for p in cap["plans"] if p["variant_id"] == ch["variant_id"]), None)
        if pl:
            m = pl["monthly_usd"]
            hw = f"{pl['gpus_peak']} GPUs" if pl["gpus_per_replica"] else f"{pl['replicas_peak']} hosts"
            lines.append(f"capacity:  peak {pl['peak_rps']:g} req/s -> {pl['replicas_peak']} replicas ({hw}), "
                         f"mu {pl['mu_rps']:.3g} req/s per replica at rho_max {pl['rho_max']:g}")  # fmt: skip
            lines.append("monthly:   " + ", ".join(f"{k} {_usd(v) if v is not None else 'n/a (no price)'}"
                                                for k, v in m.items()))  # fmt: skip
            lines.append(f"           realised $/1M (autoscaled) {_usd(pl['realised_usd_per_1m']['autoscaled'])} vs benchmark "
                         f"{_usd(pl['benchmark_usd_per_1m'])}; SLO-miss {pl['slo_miss_minutes_per_month']:.0f} min/month")  # fmt: skip
    elif ch is not None:
        lines.append("capacity:  no plan (set capacity.peak_rps, capacity.profile_rps or capacity=example)")
    rows = d["sensitivity"]["rows"]
    flips = [f"{r['input']} ({r['low_setting']}: {_label(d, r['chosen_low'])}, {r['high_setting']}: {_label(d, r['chosen_high'])})"
             for r in rows if r["flips"]]  # fmt: skip
    tested = ", ".join(r["input"] for r in rows) or "nothing"
    lines.append("sensitivity: " + ("flips the choice: " + "; ".join(flips) if flips else f"no input flips the choice (tested: {tested})"))
    for n in d["sensitivity"]["not_evaluated"]:
        lines.append(f"             not evaluated: {n}")
    q = d.get("quality") or {}
    if not q.get("applied"):
        lines.append(f"quality:   not applied ({q.get('why', 'no quality section')})")
    for v in q.get("variants") or []:
        t1, pr = v.get("top1_agreement") or {}, v.get("ppl_ratio") or {}
        figs = (f"top-1 {t1['value']:.4f}" if t1.get("value") is not None else "top-1 n/a") + \
            (f", ppl ratio {pr['value']:.4f}" if pr.get("value") is not None else "")  # fmt: skip
        lines.append(f"quality:   {v['variant_label']:<24} {v['gate']:<9} {figs}"
                     + (f"  ({'; '.join(v['gate_reasons'])})" if v["gate_reasons"] else ""))  # fmt: skip
    for e in sel["excluded"]:
        lines.append(f"excluded:  {e['variant_label']:<24} " + "; ".join(f"{r['kind']}: {r['message']}" for r in e["reasons"]))
    lines += whatif_lines(d)
    lines.append(f"wrote {path}")
    return "\n".join(lines)


def whatif_lines(d: dict[str, Any]) -> list[str]:
    """One line per what-if row (decision.json whatif), for the printed summary."""
    w = d.get("whatif")
    if not w:
        return []
    out = [f"what-if:   volume {w['volume_source']}"]
    for r in w["rows"]:
        if r["status"] != "evaluated":
            out.append(f"           {r['technique']}: not evaluated: {r['why']}")
            continue
        saved = r["usd_per_month_saved"]
        money = f"{_usd(saved)}/month saved" if saved is not None else (
            f"{_usd(r['usd_per_1m_saved'])}/1M saved" if r.get("usd_per_1m_saved") is not None else "$/month n/a (no volume)")
        out.append(f"           {r['technique']}: {money}; {r['headline']}")
    return out


def _label(d: dict[str, Any], variant_id: str | None) -> str:
    return next((c["variant_label"] for c in d["selection"]["ranked"] if c["variant_id"] == variant_id), "none")


USAGE = "usage: python -m analysis.decide <results folder or run folder> [group=option | key=value ...]"


def main(argv: list[str] | None = None) -> int:
    from analysis.cost import PriceMissing
    from analysis.results import ResultsError

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE + "\n" + (__doc__ or ""))
        return 0 if args else EXIT_BAD_INPUT
    results, overrides = Path(args[0]), args[1:]
    try:
        d, path = decide(results, overrides)
    except (BadInput, ResultsError, PriceMissing) as e:
        for line in str(e).splitlines():
            print(f"decide: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summary_text(d, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
