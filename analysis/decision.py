"""The decision pipeline: from a results folder and a typed decision config to decision.json.

:func:`run_decision` builds the per-point table (analysis.results), then the knee per variant,
the Pareto frontier, the selection, the quality gate, the sensitivity tornado, the capacity plan
and the what-if section, and writes a schema-versioned decision.json (atomically). It takes the
config as typed objects (analysis.schema.DecideConfig), so a caller that already holds a
composed config (the end of a sweep) decides in its own process; `python -m analysis.decide`
(analysis.decide) is the command-line way in. Formulas and assumptions: docs/decision.md;
decision.json carries them too.

Side effects: reads the results folder and conf/ (:func:`load_option`); writes decision.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from analysis.points import as_float as _f
from analysis.records.atomic import write_json_atomic
from analysis.records.plain import jsonable, to_plain
from analysis.schema import DecideConfig, capacity_problems, decision_problems, quality_threshold_problems

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
DECISION_SCHEMA_VERSION = 1


FORMULAS = {
    "attainment": "count(requests meeting every SLO threshold) / count(measure requests); errors, timeouts, drops are misses",
    "feasible": "attainment >= slo.attainment_target AND each threshold's percentile value <= its limit",
    "usd_per_1m_goodput": "G * P / (goodput_output_tok_per_s * 3600) * 1e6  (P = $/GPU-hour of the book's tier, G = GPUs billed)",
    "interval": "2.5 / 97.5 % percentiles of seeded time-block bootstrap replicates (analysis.blocks: the measure window "
                "in blocks as long as the dependence, drawn with replacement; attainment, every threshold's percentile and "
                "the throughput from one draw); repetitions resampled hierarchically",
    "usd_at_capacity": "K / G(x_c); K = usd_per_1m_goodput * goodput_output_tok_per_s at the knee point ($/h * 1e6 / 3600), "
                       "G(x_c) = goodput tok/s interpolated in load at the SLO crossing x_c; per replicate the same on its own "
                       "bracket; knee not reached: at most the top load's cost",
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
    "Repetitions of one (variant_id, point_id): estimates averaged, the latency at the SLO percentile by its median; feasible when "
    "their mean p_feasible is >= 0.5; latency columns shown are the worst repetition.",
    "Invalid points are left out of knees, Pareto and selection; warn points are used and flagged.",
    "Knee interval: joint replicates of attainment and every threshold's percentile, per time block (analysis.blocks); "
    "it includes which requests a window served, their correlation, output lengths and repetitions; it excludes drift "
    "beyond the window, price uncertainty (see sensitivity) and client measurement error.",
    "Selection at the knee compares the cost at capacity; a variant whose knee was not reached has only an upper bound, "
    "so it ties with the cheapest (no winner is declared on it).",
    "Sensitivity and length-mix rescaling hold SLO feasibility and the operating point at their measured values; "
    "GPU time per request = prefill + decode with the measured prefill share.",
    "Capacity: demand piecewise constant per bin, profile periodic; reactive autoscaler; billing from provisioning start.",
    "Realised $/1M counts every served output token; benchmark $/1M only SLO-meeting (goodput) tokens.",
    "Spot restart time defaults to the engine's measured time_to_ready_s; spot price and interruption rate from the book.",
]


class BadInput(ValueError):
    """A decision input that cannot be used (one line per problem)."""


def load_option(group: str, option: str, schema: type) -> Any:
    """conf/<group>/<option>.yaml as a typed `schema` object, read without Hydra (its defaults list,
    `_<group>_schema` + `_self_`, is exactly this merge): used for the catalog and for defaults."""
    from omegaconf import OmegaConf

    raw = OmegaConf.load(CONF / group / f"{option}.yaml")
    values = {k: v for k, v in OmegaConf.to_container(raw).items() if k != "defaults"}  # type: ignore[union-attr]
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def default_config(**groups: Any) -> DecideConfig:
    """conf/decide.yaml as typed objects, without Hydra and without overrides; `groups` (slo=...,
    pricing=..., quality=..., any DecideConfig field) replace its values. What
    `python -m analysis.decide <folder>` composes, for a caller that holds the groups already."""
    from omegaconf import OmegaConf

    from analysis.schema import CapacityConfig, PricingConfig, QualityConfig, SloConfig
    from analysis.whatif import WhatIfConfig
    from engines.schema import GpuConfig

    schemas = {"slo": SloConfig, "pricing": PricingConfig, "capacity": CapacityConfig, "gpu": GpuConfig,
               "quality": QualityConfig, "whatif": WhatIfConfig}  # fmt: skip
    raw = OmegaConf.to_container(OmegaConf.load(CONF / "decide.yaml"))
    assert isinstance(raw, dict)
    options = {k: v for entry in raw.pop("defaults", []) if isinstance(entry, dict) for k, v in entry.items()}
    own = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DecideConfig), raw))
    assert isinstance(own, DecideConfig)
    for group, option in options.items():
        if group not in groups:
            setattr(own, group, load_option(group, str(option), schemas[group]))
    for k, v in groups.items():
        setattr(own, k, v)
    return own


def gpu_catalog(names: set[str]) -> dict[str, Any]:
    """conf/gpu/<name>.yaml for each name that has one (spec figures: tdp_w, bandwidth)."""
    from engines.schema import GpuConfig

    return {n: load_option("gpu", n, GpuConfig) for n in sorted(names) if (CONF / "gpu" / f"{n}.yaml").is_file()}


def input_problems(cfg: DecideConfig, run_gpus: dict[str, int]) -> list[str]:
    """Every bad input (analysis.schema.decision_problems per run GPU, the capacity group, the
    quality gate's thresholds when the gate is applied, the decision's own settings)."""
    out: list[str] = []
    for name, count in sorted(run_gpus.items()):
        g = SimpleNamespace(**{**vars(cfg.gpu), "name": name, "count": count}) if hasattr(cfg.gpu, "__dict__") else cfg.gpu
        for p in decision_problems(SimpleNamespace(slo=cfg.slo, pricing=cfg.pricing, gpu=g)):
            if p not in out:
                out.append(p)
    quality = cfg.quality if cfg.quality is not None and cfg.quality.enabled else None
    from analysis.schema import decide_problems

    out += capacity_problems(cfg.capacity) + (quality_threshold_problems(quality) if quality is not None else [])
    return out + decide_problems(cfg)


def knee_limits(table, slo) -> dict[str, float]:
    """Knee constraints: the SLO's thresholds on the slo_<metric> columns the table carries."""
    from analysis.slo import thresholds

    return {f"slo_{t.metric}": t.limit_ms for t in thresholds(slo) if f"slo_{t.metric}" in table.columns}


def run_decision(results: Path, cfg: DecideConfig, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], Path]:
    """The decision over the results folder `results` at the typed config `cfg` (slo, pricing,
    capacity, quality, whatif and the decision's own settings); writes decision.json (cfg.output,
    else <results>/decision.json) and returns (decision, path written). `overrides` are recorded
    as given (the command line that asked for it). Raises BadInput, ResultsError, PriceMissing."""
    from analysis import knee, pareto, selection
    from analysis import results as res_mod
    from analysis.points import pool_repetitions

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
    limits = knee_limits(table, cfg.slo)
    kn = knee.knees(pooled, target, limits, pooled=True)
    front = pareto.pareto_frontier(pooled)
    qual = _quality(cfg, runs, pooled, kn)
    sel = selection.select(table, target=target, limits=limits, load=cfg.select_load, load_unit=cfg.select_load_unit,
                           seed=cfg.seed, knee_by_variant=kn, quality=qual["gate_failures"],
                           halted=halted_variants(runs))  # fmt: skip
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
        "point_details": jsonable(built.details),
        "knees": [k.to_dict() for k in kn.values()],
        # search=knee: each launch's stop rule, bracket and the points it tried (run.json resume.knee_search)
        "searches": [{"variant_id": r.variant_id, "variant_label": r.variant_label, "run_id": r.run_id,
                      **r.summary["resume"]["knee_search"]} for r in runs
                     if r.skipped is None and ((r.summary.get("resume") or {}).get("knee_search"))],
        "pareto": res_mod.table_for_json(front[["variant_id", "variant_label", "point_id", "load_value", "load_unit",
                                                 "tok_per_s_per_user", "tok_per_s_per_gpu", "feasible"]]) if len(front) else [],
        "selection": sel.to_dict(),
        "intervals": res_mod.INTERVALS,
        "sensitivity": {"rows": [r.to_dict() for r in torn], "not_evaluated": not_eval},
        "capacity": capacity,
        "quality": qual["section"],
        "formulas": FORMULAS,
        "assumptions": ASSUMPTIONS,
        "problems": built.problems,
    }  # fmt: skip
    decision["whatif"] = _whatif(cfg, decision, runs)
    decision = jsonable(decision)
    out = Path(cfg.output) if cfg.output else Path(results) / "decision.json"
    write_json_atomic(out, decision, allow_nan=False, default=None)
    return decision, out


def halted_variants(runs: list[Any]) -> dict[str, str]:
    """variant_id -> why economy.halving stopped its knee search (run.json resume.halving of its
    latest usable launch); a variant whose latest launch was not halted is not listed."""
    out: dict[str, str] = {}
    for r in runs:  # load_runs lists a variant's launches in order: the latest one decides
        if r.skipped is not None:
            continue
        h = (r.summary.get("resume") or {}).get("halving")
        if h and h.get("reason"):
            out[r.variant_id] = str(h["reason"])
        else:
            out.pop(r.variant_id, None)
    return out


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
