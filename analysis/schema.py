"""The decision layer's config schemas (conf/slo, pricing, capacity, quality, decide.yaml) and the
checks of their values, one line per problem naming the fix.

The run config (experiments.schema) composes slo, pricing and quality from here; the decision
(analysis.decide) reads them all. :func:`register_decide_configs` puts the schemas that
conf/decide.yaml composes into Hydra's ConfigStore.

Side effects: :func:`register_decide_configs` writes into Hydra's global ConfigStore (nothing else).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CONF = Path(__file__).resolve().parent.parent / "conf"  # the config tree (conf/quant/ names the quant options)

@dataclass
class SloConfig:
    """Latency objectives per request, each at its own percentile; null threshold = not constrained.

    A request meets the SLO when it succeeded and meets every set threshold (DistServe's
    attainment); a point is feasible when the share of such requests is >= attainment_target
    and each metric's percentile is within its threshold (analysis.slo).
    """

    name: str = "interactive"
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    itl_ms: float | None = None  # per request: at most (100 - itl_percentile) % of its gaps above it
    e2e_ms: float | None = None
    percentile: float = 99.0  # default for every threshold without its own percentile
    ttft_percentile: float | None = None
    tpot_percentile: float | None = None
    itl_percentile: float | None = None
    e2e_percentile: float | None = None
    attainment_target: float = 0.9  # share of measured requests that must meet every threshold


@dataclass
class GpuPrice:
    """$ per GPU-hour (per instance-hour for cpu) of one GPU type in one price book; null = not offered/known."""

    on_demand: float | None = None
    spot: float | None = None
    reserved_1y: float | None = None
    reserved_3y: float | None = None
    owned: float | None = None  # total cost of ownership per hour (owned or colocated hardware)
    source: str = ""
    as_of: str = ""


PRICE_TIERS = ("on_demand", "spot", "reserved_1y", "reserved_3y", "owned")


@dataclass
class PricingConfig:
    """A price book: $/GPU-hour per GPU type (keyed by gpu option name) and tier, plus energy prices.

    `energy_included`: cloud prices already pay for power, so energy $ is reported beside the
    cost, never added; an owned/colocated book that prices hardware only sets it false and
    energy $ is added. `usd_per_hour`, when set, overrides the book for whatever GPU is
    planned (a quick re-price: `pricing.usd_per_hour=2.5`).
    """

    name: str = "cpu_vm"
    provider: str = ""
    tier: str = "on_demand"  # which column of `gpus` prices the run (PRICE_TIERS)
    usd_per_hour: float | None = None  # override, per GPU (per instance for cpu) hour
    gpus: dict[str, GpuPrice] = field(default_factory=dict)
    spot_interruptions_per_hour: float | None = None
    spot_interruptions_source: str = ""
    energy_included: bool = True
    usd_per_kwh: float = 0.15
    usd_per_kwh_source: str = ""
    pue: float = 1.3  # facility power / IT power
    pue_source: str = ""
    source: str = ""  # the book as a whole
    as_of: str = ""


@dataclass
class CapacityConfig:
    """Demand and fleet policy for the capacity plan of `python -m analysis.decide` (docs/decision.md).

    Demand is one of: peak_rps; profile_rps (one req/s value per profile_bin_s, e.g. 24 hourly
    values); trace_path (a loadgen trace, binned into profile_bin_s). null fields = not given.
    """

    name: str = "default"
    # null = plan when a peak, profile or trace is given; true = a plan is required; false = none
    plan: bool | None = None
    peak_rps: float | None = None
    profile_rps: list[float] | None = None
    profile_bin_s: float = 3600.0
    trace_path: str | None = None
    # Request-length mix of the planned traffic; null = as measured. Rescales the measured
    # per-replica rate by GPU time per request (prefill share x prompt ratio + decode share x output ratio).
    prompt_tokens_mean: float | None = None
    output_tokens_mean: float | None = None
    rho_max: float = 0.85  # highest planned utilisation of the measured SLO knee (burst headroom)
    availability: float = 1.0  # A: replicas = ceil(ceil(lambda / (mu * rho_max)) / A) + spare_replicas
    spare_replicas: int = 0  # N+1 = 1
    min_replicas: int = 1  # the autoscaler never goes below this
    provisioning_s: float = 300.0  # node provisioning before the engine starts (scale-up lag = this + time_to_ready_s)
    engine_start_s: float | None = None  # null = the engine's measured time_to_ready_s
    spot_share_max: float = 0.0  # most of the fleet (per bin) that may run on spot
    spot_interruptions_per_hour: float | None = None  # null = the price book's rate
    spot_restart_s: float | None = None  # null = the engine's measured time_to_ready_s
    spot_availability: float = 1.0  # share of the time spot capacity can be had; the rest is paid on demand
    reserved_replicas: int | None = None  # reserved commitment; null = the profile's minimum (the base)
    reserved_term: str = "1y"  # 1y | 3y
    hours_per_month: float = 730.0


@dataclass
class QualityConfig:
    """conf/quality/: the quality gate of quantization variants (experiments.quality, analysis.quality).

    After its load points, a launch with `enabled` runs the prompt sets greedily and, for a
    variant other than `baseline_quant`, scores the baseline's continuations teacher-forced
    (prompt log-probabilities). The baseline's rows are found in the same experiment folder, or
    the baseline is launched for the purpose first. The thresholds are applied by the decision.
    """

    name: str = "none"
    enabled: bool = False
    baseline_quant: str = "none"
    generic_path: str | None = None  # null = loadgen/data/quality/generic.jsonl (240 prompts)
    task_path: str | None = None  # null = loadgen/data/quality/tasks.jsonl (120 tasks); "" = no task set
    num_prompts: int | None = None  # first N of the generic set; null = all
    num_tasks: int | None = None  # first N of the task set; null = all
    max_new_tokens: int = 32  # greedy continuation per generic prompt (fixed length: EOS ignored)
    task_max_tokens: int = 16  # per task prompt, stopped at the first newline
    concurrency: int = 4  # requests in flight; > 1 batches them, which vLLM does not keep bit-identical
    request_timeout_s: float = 120.0
    top_logprobs: int = 5  # engines without prompt log-probabilities (measure generated_topk): top-k per generated token
    launch_baseline: bool = True  # no baseline rows in the experiment: launch quant=<baseline_quant> first
    # Decision: true = every quantized variant needs ok quality figures (else excluded "not measured");
    # false = the gate applies once the results hold any quality run (without any, the decision says so).
    require: bool = False
    # The gate (null = not applied); the decision compares the estimates (docs/quality.md)
    min_top1_agreement: float | None = 0.9
    max_ppl_ratio: float | None = 1.05
    max_task_accuracy_drop_points: float | None = 1.0
    min_exact_match_rate: float | None = None
    n_boot: int = 1000


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


def register_decide_configs() -> None:
    """Register the schemas conf/decide.yaml composes as `_<group>_schema` (and `_decide_schema`)."""
    from hydra.core.config_store import ConfigStore

    from analysis.whatif import WhatIfConfig
    from engines.schema import GpuConfig

    cs = ConfigStore.instance()
    for group, schema in (("slo", SloConfig), ("pricing", PricingConfig), ("capacity", CapacityConfig),
                          ("gpu", GpuConfig), ("quality", QualityConfig), ("whatif", WhatIfConfig)):  # fmt: skip
        cs.store(group=group, name=f"_{group}_schema", node=schema)
    cs.store(name="_decide_schema", node=DecideConfig)


def composition_error_line(ex: BaseException) -> str:
    """A setting Hydra could not compose (a value of the wrong type, an unknown option or key, bad
    override syntax), on one line: Hydra's first line, the options it lists (schemas left out) and
    the first line of the cause. Pure; run.py and analysis.decide print it."""
    text = str(ex)
    lines = [ln.strip() for ln in text.splitlines()]
    head = re.sub(r"^In '[^']*': ", "", lines[0] if lines else type(ex).__name__).rstrip(".")
    listed = next((i for i, ln in enumerate(lines) if ln.startswith("Available options in ")), None)
    if listed is not None:
        options = []
        for ln in lines[listed + 1:]:
            if not ln or ln.startswith("Config search path"):
                break
            if not ln.startswith("_"):
                options.append(ln)
        head += f"; {lines[listed].rstrip(':').lower()}: {', '.join(options)}"
    if type(ex).__name__ == "OverrideParseException":
        head = f"could not parse an override: {head}"
    cause = ex.__cause__
    if cause is not None and (first := str(cause).strip().splitlines()[:1]):
        head += f": {first[0].strip()}"
    return head


# -- checks ---------------------------------------------------------------------------------------
def unknown_settings(obj: Any, prefix: str = "") -> list[str]:
    """Keys a typed config carries that its schema does not define, one line each (`+traffic.foo=1`
    on a command line adds one, and nothing would read it); nested groups and dicts of entries too."""
    import dataclasses
    import difflib

    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return []
    names = [f.name for f in dataclasses.fields(obj)]
    out = []
    for key in vars(obj):
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {prefix}{near[0]}?" if near else f"the settings of {prefix.rstrip('.') or 'the top level'} are: {', '.join(names)}"
            out.append(f"{prefix}{key} is not a setting: drop it ({hint})")
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, dict):
            for k, item in v.items():
                out += unknown_settings(item, f"{prefix}{name}.{k}.")
        else:
            out += unknown_settings(v, f"{prefix}{name}.")
    return out


def _number(x: Any) -> bool:
    """A finite int or float (not a bool): NaN and infinity pass no range check."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def decision_problems(cfg: Any) -> list[str]:
    """Problems in the decision-layer inputs (`cfg.gpu`, `cfg.slo`, `cfg.pricing`), one line each naming the fix.

    Checked before any engine starts, so a run is never measured against a price or an SLO the
    decision layer would refuse afterwards.
    """
    out: list[str] = []
    g = cfg.gpu  # gpu.count is checked with the other plan checks in check()
    for f in ("memory_gib", "tdp_w", "memory_bandwidth_gb_per_s", "bf16_dense_tflops"):
        v = getattr(g, f, None)
        if v is not None and not (_number(v) and v > 0):
            out.append(f"gpu.{f} must be > 0 or null, got {v}")

    s = cfg.slo
    for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        v = getattr(s, m, None)
        if v is not None and not (_number(v) and v > 0):
            out.append(f"slo.{m} must be > 0 (or null = not constrained), got {v}")
    for f in ("percentile", "ttft_percentile", "tpot_percentile", "itl_percentile", "e2e_percentile"):
        v = getattr(s, f, None)
        if v is not None and not (_number(v) and 0 < v <= 100):
            out.append(f"slo.{f} must be in (0, 100], got {v}")
    if not (_number(s.attainment_target) and 0 < s.attainment_target <= 1):
        out.append(f"slo.attainment_target must be in (0, 1] (a share of requests), got {s.attainment_target}")

    p = cfg.pricing
    if p.tier not in PRICE_TIERS:
        out.append(f"pricing.tier={p.tier!r}: use one of {', '.join(PRICE_TIERS)}")
    if p.usd_per_hour is not None and not (_number(p.usd_per_hour) and p.usd_per_hour >= 0):
        out.append(f"pricing.usd_per_hour must be >= 0, got {p.usd_per_hour}")
    for gpu_name, entry in (p.gpus or {}).items():
        for tier in PRICE_TIERS:
            v = getattr(entry, tier)
            if v is not None and not (_number(v) and v >= 0):
                out.append(f"pricing.gpus.{gpu_name}.{tier} must be >= 0, got {v}")
    if not (_number(p.usd_per_kwh) and p.usd_per_kwh >= 0):
        out.append(f"pricing.usd_per_kwh must be >= 0, got {p.usd_per_kwh}")
    if not (_number(p.pue) and p.pue >= 1):
        out.append(f"pricing.pue must be >= 1 (facility power / IT power), got {p.pue}")
    if p.spot_interruptions_per_hour is not None and not (_number(p.spot_interruptions_per_hour)
                                                           and p.spot_interruptions_per_hour >= 0):
        out.append(f"pricing.spot_interruptions_per_hour must be >= 0, got {p.spot_interruptions_per_hour}")
    if p.usd_per_hour is None and p.tier in PRICE_TIERS:
        entry = (p.gpus or {}).get(g.name)
        if entry is None or getattr(entry, p.tier) is None:
            listed = ", ".join(k for k, e in (p.gpus or {}).items() if getattr(e, p.tier) is not None) or "none"
            out.append(
                f"pricing={p.name} has no {p.tier} price for gpu={g.name} (it prices: {listed}); "
                f"pick another pricing book or set pricing.usd_per_hour"
            )
    return out


def capacity_problems(cap: Any) -> list[str]:
    """Bad capacity inputs, one line each naming the fix."""
    out = []
    has_demand = cap.peak_rps is not None or bool(cap.profile_rps) or bool(cap.trace_path)
    if cap.plan and not has_demand:
        out.append("capacity: a plan needs a peak: set capacity.peak_rps, capacity.profile_rps or capacity.trace_path")
    if cap.peak_rps is not None and not (_number(cap.peak_rps) and cap.peak_rps > 0):
        out.append(f"capacity.peak_rps={cap.peak_rps} must be > 0 (req/s at the peak), or null")
    if cap.profile_rps is not None:
        rates = list(cap.profile_rps)
        if not rates:
            out.append("capacity.profile_rps is empty: give one req/s per capacity.profile_bin_s, e.g. "
                       "capacity.profile_rps=[2,5,3], or null")  # fmt: skip
        elif bad := [v for v in rates if not (_number(v) and v >= 0)]:
            out.append(f"capacity.profile_rps={rates}: every rate must be a number >= 0 (req/s), not {bad[0]}")
        elif max(rates) == 0:
            out.append(f"capacity.profile_rps={rates} has no demand (every rate is 0): give the req/s of each "
                       "bin, e.g. capacity.profile_rps=[2,5,3], or null")  # fmt: skip
    if cap.trace_path is not None and not Path(cap.trace_path).is_file():
        out.append(f"capacity.trace_path={cap.trace_path!r}: no such file; give a loadgen trace (JSONL/CSV) or null")
    for name, lo_open, hi in (("rho_max", True, 1.0), ("availability", True, 1.0), ("spot_share_max", False, 1.0),
                              ("spot_availability", False, 1.0)):  # fmt: skip
        v = getattr(cap, name)
        if not (_number(v) and ((0 < v) if lo_open else (0 <= v)) and v <= hi):
            out.append(f"capacity.{name}={v} must be in {'(' if lo_open else '['}0, {hi:g}]")
    for name in ("profile_bin_s", "hours_per_month"):
        if not (_number(v := getattr(cap, name)) and v > 0):
            out.append(f"capacity.{name}={v} must be > 0")
    for name in ("provisioning_s", "spare_replicas", "min_replicas"):
        if not (_number(v := getattr(cap, name)) and v >= 0):
            out.append(f"capacity.{name}={v} must be >= 0")
    for name in ("engine_start_s", "spot_interruptions_per_hour", "spot_restart_s", "reserved_replicas"):
        v = getattr(cap, name)
        if v is not None and not (_number(v) and v >= 0):
            out.append(f"capacity.{name}={v} must be >= 0, or null (measured or the price book's)")
    for name in ("prompt_tokens_mean", "output_tokens_mean"):
        v = getattr(cap, name)
        if v is not None and not (_number(v) and v > 0):
            out.append(f"capacity.{name}={v} must be > 0 (tokens per request), or null (as measured)")
    if cap.reserved_term not in ("1y", "3y"):
        out.append(f"capacity.reserved_term={cap.reserved_term!r}: use 1y or 3y")
    return out


def quality_threshold_problems(q: Any) -> list[str]:
    """Bad quality-gate thresholds, its bootstrap count and baseline (`q`: a QualityConfig), one line
    each: checked by the run's preflight (experiments.preflight) and by the decision, which applies them."""
    out: list[str] = []
    for k in ("min_top1_agreement", "min_exact_match_rate"):
        v = getattr(q, k)
        if v is not None and not (_number(v) and 0 <= v <= 1):
            out.append(f"quality.{k} must be in [0, 1] or null (not applied), got {v}")
    if q.max_ppl_ratio is not None and not (_number(q.max_ppl_ratio) and q.max_ppl_ratio > 0):
        out.append(f"quality.max_ppl_ratio must be > 0 or null (not applied), got {q.max_ppl_ratio}")
    if q.max_task_accuracy_drop_points is not None and not _number(q.max_task_accuracy_drop_points):
        out.append(f"quality.max_task_accuracy_drop_points must be a number (points) or null, got {q.max_task_accuracy_drop_points}")
    if not (isinstance(q.n_boot, int) and q.n_boot >= 1):
        out.append(f"quality.n_boot must be >= 1 (bootstrap replicates, e.g. 1000), got {q.n_boot}")
    quants = sorted(p.stem for p in (_CONF / "quant").glob("*.yaml"))
    if q.baseline_quant not in quants:
        out.append(f"quality.baseline_quant={q.baseline_quant!r} is not a quant option; use one of {', '.join(quants)} "
                   "(the unquantized one: none)")  # fmt: skip
    return out


def decide_problems(cfg: Any) -> list[str]:
    """The decision's own settings (DecideConfig: select_load, sensitivity, n_boot) and keys that no
    schema defines, one line each naming the fix. Its groups' values are checked by
    decision_problems, capacity_problems, quality_threshold_problems and analysis.whatif.config_problems."""
    from analysis.records.run import LOAD_UNITS

    out: list[str] = unknown_settings(cfg)
    if cfg.select_load is not None and not (_number(cfg.select_load) and cfg.select_load > 0):
        out.append(f"select_load must be > 0 (a load in select_load_unit) or null (each variant's knee), got {cfg.select_load}")
    units = tuple(dict.fromkeys(("req/s", "sessions/s", *LOAD_UNITS.values())))
    if cfg.select_load_unit not in units:
        out.append(f"select_load_unit={cfg.select_load_unit!r}: use one of {', '.join(units)}")
    sens = cfg.sensitivity
    if not (_number(sens.price_delta) and 0 < sens.price_delta < 1):
        out.append(f"sensitivity.price_delta must be in (0, 1) (the price's +- share, e.g. 0.3), got {sens.price_delta}")
    ratios = list(sens.output_ratios)
    if len(ratios) != 2 or not all(_number(r) and r > 0 for r in ratios):
        out.append(f"sensitivity.output_ratios={ratios} must be two factors > 0 (low, high), e.g. "
                   "sensitivity.output_ratios=[0.5,2.0]")  # fmt: skip
    if not (_number(sens.spot_share) and 0 <= sens.spot_share <= 1):
        out.append(f"sensitivity.spot_share must be in [0, 1] (a share of the fleet), got {sens.spot_share}")
    if not (isinstance(cfg.n_boot, int) and not isinstance(cfg.n_boot, bool) and cfg.n_boot >= 1):
        out.append(f"n_boot must be >= 1 (bootstrap replicates per point, e.g. 1000), got {cfg.n_boot}")
    if cfg.output:  # null or empty: <results folder>/decision.json
        path = Path(cfg.output)
        if path.is_dir():
            out.append(f"output={cfg.output} is a folder; give a file path, e.g. output={path / 'decision.json'}, or null")
        elif not path.parent.is_dir():
            out.append(f"output={cfg.output}: the folder {path.parent} does not exist; create it, or give another "
                       "path, or null (<results folder>/decision.json)")  # fmt: skip
    return out
