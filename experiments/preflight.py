"""Pure compatibility checks run before anything is launched.

Each problem is one line that names the fix. An empty list means the run may start.
Side effects: none (all machine facts arrive in `facts`).
"""

from __future__ import annotations

from engines import ADAPTERS
from engines.base import EngineAdapter, HostFacts
from experiments.schema import PRICE_TIERS, RunConfig
from loadgen import workload
from loadgen.arrivals import CLOSED_LOOP_KINDS, OPEN_LOOP_KINDS, SHAPES
from loadgen.workload import ENDPOINT_PATHS

TELEMETRY_SAMPLERS = ("auto", "cpu", "nvml", "off")
QUANT_METHODS = (None, "fp8", "awq", "gptq", "int8", "int4")
SPECULATIVE_METHODS = (None, "ngram", "draft")
# Checkpoint formats that satisfy a method that needs a pre-quantized checkpoint.
CHECKPOINTS_FOR = {
    "awq": ("awq",),
    "gptq": ("gptq",),
    "int8": ("int8", "w8a8", "compressed-tensors"),
    "int4": ("int4", "awq", "gptq", "compressed-tensors"),
}


def _looks_like_path(p: str) -> bool:
    """Explicit filesystem paths; `org/name` could be a hub id, so it is left to the engine."""
    return p.startswith(("/", "./", "../", "~"))


def check(cfg: RunConfig, adapter: EngineAdapter | None, facts: HostFacts | None) -> list[str]:
    out: list[str] = []
    if cfg.engine.name not in ADAPTERS:
        out.append(f"engine={cfg.engine.name}: no adapter; known engines: {', '.join(sorted(ADAPTERS))}")
    if adapter is not None and facts is not None:
        out += adapter.problems(facts)
        if facts.port_in_use:
            out.append(f"engine.port={cfg.engine.port} is already in use on {cfg.engine.host}; pick another or 0 (a free port)")
    if adapter is not None and cfg.workload.endpoint not in adapter.usage_endpoints:
        out.append(
            f"engine={adapter.name} streams token usage only on {', '.join(adapter.usage_endpoints)}; "
            f"set workload.endpoint={adapter.usage_endpoints[0]}"
        )

    m = cfg.model
    if facts is not None and not facts.model_is_local:
        if m.built_by:
            out.append(f"model={m.name}: folder {m.path} is missing; build it with `{m.built_by}`")
        elif _looks_like_path(m.path):
            out.append(f"model={m.name}: model.path {m.path} does not exist; pass an existing folder or a hub id")

    q = cfg.quant
    if q.method not in QUANT_METHODS:
        out.append(f"quant.method={q.method!r}: use one of {', '.join(str(x) for x in QUANT_METHODS)}")
    if adapter is not None and adapter.needs_checkpoint():
        ok = CHECKPOINTS_FOR.get(q.method or "", (q.method,))
        if m.checkpoint_quant not in ok:
            stored = m.checkpoint_quant or "full precision"
            out.append(
                f"quant={q.name} needs a {q.method} checkpoint of model={m.name}, but {m.path} is {stored}: "
                f"add conf/model_quant/{m.name}_{q.name}.yaml setting model.path and model.checkpoint_quant"
            )
    e = cfg.engine
    if e.tensor_parallel_size < 1:
        out.append(f"engine.tensor_parallel_size must be >= 1, got {e.tensor_parallel_size}")
    elif cfg.gpu.count > 0 and e.tensor_parallel_size > cfg.gpu.count:
        out.append(
            f"engine.tensor_parallel_size={e.tensor_parallel_size} is larger than gpu.count={cfg.gpu.count}; "
            "lower it or plan more GPUs"
        )
    if e.gpu_memory_fraction is not None and not 0 < e.gpu_memory_fraction <= 1:
        out.append(f"engine.gpu_memory_fraction must be in (0, 1], got {e.gpu_memory_fraction}")
    sp = e.speculative
    if sp.method not in SPECULATIVE_METHODS:
        out.append(f"engine.speculative.method={sp.method!r}: use ngram, draft or null")
    elif sp.method == "draft" and not sp.draft_model:
        out.append("engine.speculative.method=draft needs engine.speculative.draft_model (a path or hub id)")
    if sp.method and sp.num_tokens < 1:
        out.append(f"engine.speculative.num_tokens must be >= 1, got {sp.num_tokens}")

    w = cfg.workload
    if w.endpoint not in ENDPOINT_PATHS:
        out.append(f"workload.endpoint={w.endpoint!r}: use one of {', '.join(ENDPOINT_PATHS)}")
    wp = workload.config_problems(w)
    out += wp
    limit = context_limit(cfg)
    prompt_hi, output_hi = workload.token_bounds(w) if not wp else (None, None)
    # Unbounded lengths (normal/lognormal without a max, a ShareGPT file) are checked on the
    # built items instead, by the runner, before the engine starts.
    if limit and prompt_hi is not None and output_hi is not None and prompt_hi + output_hi > limit:
        out.append(
            f"workload needs up to {prompt_hi}+{output_hi} tokens but the context limit is {limit}; "
            f"lower {workload.LENGTH_FIX[w.kind]} or raise engine.max_model_len"
        )

    t = cfg.traffic
    kinds = OPEN_LOOP_KINDS + CLOSED_LOOP_KINDS
    if t.kind not in kinds:
        out.append(f"traffic.kind={t.kind!r}: use one of {', '.join(kinds)}")
    if not t.points:
        out.append("traffic.points is empty: give at least one load point, e.g. traffic.points=[4]")
    for v in t.points:
        if v <= 0:
            out.append(f"traffic.points: {v} is not > 0")
        elif t.kind in CLOSED_LOOP_KINDS and float(v) != int(v):
            out.append(f"traffic.points: {v} is not a whole number of users (traffic.kind={t.kind})")
    if t.duration_s <= 0:
        out.append(f"traffic.duration_s must be > 0, got {t.duration_s}")
    if t.warmup_s < 0:
        out.append(f"traffic.warmup_s must be >= 0, got {t.warmup_s}")
    if t.kind == "trace" and not t.trace_path:
        out.append("traffic.kind=trace needs traffic.trace_path (a JSONL or CSV trace)")
    if t.kind == "gamma" and t.burstiness <= 0:
        out.append(f"traffic.burstiness must be > 0, got {t.burstiness}")
    if t.cooldown_s < 0 or t.think_time_s < 0:
        out.append("traffic.cooldown_s and traffic.think_time_s must be >= 0")
    sh = t.shape
    if sh.kind is not None:
        if sh.kind not in SHAPES:
            out.append(f"traffic.shape.kind={sh.kind!r}: use one of {', '.join(SHAPES)} or null")
        elif t.kind == "trace":
            out.append("traffic.shape does not apply to a trace (its times are replayed); set traffic.shape.kind=null")
        elif sh.kind == "steps" and sh.steps < 1:
            out.append(f"traffic.shape.steps must be >= 1, got {sh.steps}")
        elif sh.kind == "spike" and (sh.spike_factor <= 0 or not 0 <= sh.spike_at < 1 or sh.spike_width <= 0):
            out.append("traffic.shape: spike_factor > 0, 0 <= spike_at < 1 and spike_width > 0 are needed")
        elif sh.kind in ("ramp", "diurnal") and not 0 <= (sh.start_fraction if sh.kind == "ramp" else sh.min_fraction) <= 1:
            out.append("traffic.shape: start_fraction / min_fraction must be within [0, 1]")
    if t.workers < 1 or t.remote_workers < 0:
        out.append("traffic.workers must be >= 1 and traffic.remote_workers >= 0")
    if t.remote_workers > 0:
        if t.master_port == 0:
            out.append("traffic.remote_workers needs a fixed traffic.master_port that the other machines can reach")
        if t.master_bind in ("127.0.0.1", "localhost", "::1"):
            out.append("traffic.remote_workers: set traffic.master_bind to this machine's address (or 0.0.0.0)")
    if t.max_inflight < 1:
        out.append(f"traffic.max_inflight must be >= 1, got {t.max_inflight}")

    tel = cfg.telemetry
    if tel.sampler not in TELEMETRY_SAMPLERS:
        out.append(f"telemetry.sampler={tel.sampler!r}: use one of {', '.join(TELEMETRY_SAMPLERS)}")
    if tel.interval_s <= 0:
        out.append(f"telemetry.interval_s must be > 0, got {tel.interval_s}")
    out += decision_problems(cfg)
    return out


def decision_problems(cfg: RunConfig) -> list[str]:
    """Problems in the decision-layer inputs (gpu, slo, pricing), one line each naming the fix.

    Checked before any engine starts, so a run is never measured against a price or an SLO the
    decision layer would refuse afterwards.
    """
    out: list[str] = []
    g = cfg.gpu
    if g.count < 0:
        out.append(f"gpu.count must be >= 0 (0 = CPU only), got {g.count}")
    for f in ("memory_gib", "tdp_w", "memory_bandwidth_gb_per_s", "bf16_dense_tflops"):
        v = getattr(g, f, None)
        if v is not None and v <= 0:
            out.append(f"gpu.{f} must be > 0 or null, got {v}")

    s = cfg.slo
    for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        v = getattr(s, m, None)
        if v is not None and v <= 0:
            out.append(f"slo.{m} must be > 0 (or null = not constrained), got {v}")
    for f in ("percentile", "ttft_percentile", "tpot_percentile", "itl_percentile", "e2e_percentile"):
        v = getattr(s, f, None)
        if v is not None and not 0 < v <= 100:
            out.append(f"slo.{f} must be in (0, 100], got {v}")
    if not 0 < s.attainment_target <= 1:
        out.append(f"slo.attainment_target must be in (0, 1] (a share of requests), got {s.attainment_target}")

    p = cfg.pricing
    if p.tier not in PRICE_TIERS:
        out.append(f"pricing.tier={p.tier!r}: use one of {', '.join(PRICE_TIERS)}")
    if p.usd_per_hour is not None and p.usd_per_hour < 0:
        out.append(f"pricing.usd_per_hour must be >= 0, got {p.usd_per_hour}")
    for gpu_name, entry in (p.gpus or {}).items():
        for tier in PRICE_TIERS:
            v = getattr(entry, tier)
            if v is not None and v < 0:
                out.append(f"pricing.gpus.{gpu_name}.{tier} must be >= 0, got {v}")
    if p.usd_per_kwh < 0:
        out.append(f"pricing.usd_per_kwh must be >= 0, got {p.usd_per_kwh}")
    if p.pue < 1:
        out.append(f"pricing.pue must be >= 1 (facility power / IT power), got {p.pue}")
    if p.spot_interruptions_per_hour is not None and p.spot_interruptions_per_hour < 0:
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


def context_limit(cfg: RunConfig) -> int | None:
    """The tightest context length the run is planned with (engine.max_model_len, model.max_context_tokens)."""
    limits = [x for x in (cfg.engine.max_model_len, cfg.model.max_context_tokens) if x]
    return min(limits) if limits else None


def warnings(cfg: RunConfig, adapter: EngineAdapter | None) -> list[str]:
    """Things that do not stop the run but change what its numbers mean (recorded in run.json notes)."""
    out = []
    if adapter is not None and cfg.workload.ignore_eos and not adapter.forces_output_length:
        out.append(
            f"engine={adapter.name} cannot force the output length (no ignore_eos): replies may stop at EOS "
            "before max_tokens; output_tokens records what was generated"
        )
    w = cfg.workload
    for f in ("prompt", "output"):
        dist = getattr(w, f"{f}_dist")
        ignored = w.kind != "synthetic" and (f == "prompt" or w.kind == "sharegpt")
        if dist != "fixed" and ignored:
            out.append(f"workload.{f}_dist={dist} has no effect with workload.kind={w.kind}; set it to fixed")
        elif dist == "fixed" and getattr(w, f"{f}_spread"):
            out.append(f"workload.{f}_spread is ignored because workload.{f}_dist=fixed")
    if adapter is not None and adapter.name == "endpoint" and cfg.telemetry.sampler != "off":
        out.append("engine=endpoint: the server runs elsewhere, so no engine process telemetry is sampled")
    return out


def telemetry_kind(cfg: RunConfig) -> str | None:
    """The sampler that will run: nvml for a GPU plan, cpu otherwise (auto); None when off."""
    s = cfg.telemetry.sampler
    if s == "off":
        return None
    if s == "auto":
        s = "nvml" if cfg.gpu.count > 0 else "cpu"
    return s
