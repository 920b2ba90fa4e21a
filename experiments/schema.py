"""Typed, inert configuration schemas for servelab, registered in Hydra's ConfigStore.

Every config group (`engine`, `quant`, `model`, ...) has one dataclass here; the YAML files
under `conf/<group>/` hold the values and start with `defaults: [_<group>_schema, _self_]`.
Building or validating these objects touches no process, network, file or GPU; compatibility
checks live in :mod:`experiments.preflight`.

Side effects: :func:`register_configs` writes into Hydra's global ConfigStore (nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Group fields on RunConfig are typed Any: Hydra raises "Merge error: X is not a subclass
# of Y" when switching between sibling dataclass options of one group (hydra#1722). Each
# group node is still validated against its own schema by its YAML's defaults list, and
# experiments.config.to_run_config re-checks the concrete types after to_object().


@dataclass
class SpeculativeConfig:
    """Speculative decoding, engine-neutral. method null = off."""

    method: str | None = None  # null | ngram | draft
    num_tokens: int = 4  # tokens proposed per step
    draft_model: str | None = None  # method=draft: the draft model's path or hub id
    prompt_lookup_max: int | None = None  # method=ngram: longest n-gram to match (engine default if null)
    prompt_lookup_min: int | None = None


@dataclass
class EngineConfig:
    """How to start one serving engine. The adapter named by `name` turns this into argv."""

    name: str = "vllm"
    # native: the engine's own command; docker: `docker run` of `image` (TGI)
    launcher: str = "native"
    image: str | None = None
    # engine=endpoint only: base URL of an already-running OpenAI-compatible server, and the
    # NAME of the environment variable holding its API key (the key is never written anywhere).
    base_url: str | None = None
    api_key_env: str | None = None
    # Interpreter that has the engine installed; null = discover (.venvs/<engine>[-cpu], then
    # the lab's own python). Lets each engine live in its own venv.
    python: str | None = None
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port at launch
    ready_timeout_s: float = 600.0
    stop_timeout_s: float = 20.0  # SIGTERM -> wait this long -> SIGKILL the process group
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"
    dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int | None = None  # most sequences batched at once (vLLM --max-num-seqs)
    tensor_parallel_size: int = 1
    gpu_memory_fraction: float | None = None  # share of GPU memory the engine may take; null = engine default
    prefix_caching: bool | None = None  # null = engine default
    chunked_prefill: bool | None = None  # null = engine default
    continuous_batching: bool | None = None  # null = engine default; false only where the engine allows it
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    enforce_eager: bool = False
    # CPU build only: GiB reserved for the KV cache (VLLM_CPU_KVCACHE_SPACE; 0 = engine default).
    cpu_kvcache_space_gib: int = 2
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class QuantConfig:
    """Engine-neutral description of a quantization choice; adapters translate it to flags."""

    name: str = "none"
    # Engine-neutral method: null (serve as stored) | fp8 | awq | gptq | int8 | int4
    method: str | None = None
    bits: int | None = None
    # Whether a method needs a checkpoint already quantized with it depends on the engine
    # (vLLM loads W8A8 checkpoints; TGI/transformers quantize INT8 at load time with
    # bitsandbytes), so the adapter decides; conf/model_quant/<model>_<quant>.yaml points
    # model.path at such a checkpoint.
    # Explicit engine kernel (e.g. vLLM awq_marlin). null = let the engine pick from the checkpoint,
    # which avoids forcing a slower kernel by accident.
    kernel: str | None = None
    kv_cache_dtype: str = "auto"  # auto | fp8 | fp8_e4m3 | fp8_e5m2
    # Weights cast to this dtype at load (bfloat16 | float16), e.g. quant=bf16 of a float32
    # checkpoint; null = engine.dtype (the checkpoint's own dtype under "auto").
    weight_dtype: str | None = None


@dataclass
class ModelConfig:
    """What is served. `path` is a local folder or a hub id."""

    name: str = "tiny_llama"
    path: str = "models/tiny-llama"
    served_name: str | None = None  # name the OpenAI API exposes; null = `name`
    tokenizer: str | None = None  # null = `path`
    # Set when the lab builds this model itself (scripts/setup.sh); preflight then names the
    # setup command when the folder is missing.
    built_by: str | None = None
    # Quantization method the checkpoint at `path` is stored in (null = full precision);
    # set by conf/model_quant/<model>_<quant>.yaml for pre-quantized checkpoints.
    checkpoint_quant: str | None = None
    max_context_tokens: int = 2048
    params_b: float | None = None  # billions of parameters, for capacity math later
    # Random (untrained) weights: quality figures against a baseline are still measured, but a
    # task set's accuracy is meaningless and is not shown or gated (analysis.quality).
    random_weights: bool = False


@dataclass
class WorkloadConfig:
    """What is sent: which prompts, how long, how many output tokens, which endpoint.

    Built by loadgen.workload.build_items; lengths are counted with the model's tokenizer.
    """

    name: str = "synthetic_fixed"
    kind: str = "synthetic"  # synthetic | sharegpt | shared_prefix | paraphrase
    endpoint: str = "completions"  # completions | chat
    # Prompt length (kind=synthetic): the fixed value, or the mean of prompt_dist.
    prompt_tokens: int = 128
    prompt_dist: str = "fixed"  # fixed | uniform | normal | lognormal
    # uniform: half-width; normal: standard deviation; lognormal: sigma of the underlying normal
    # (its mu is set so the mean stays prompt_tokens). Ignored for fixed.
    prompt_spread: float = 0.0
    # Draws are clipped to prompt_min..prompt_max (null = no upper bound). kind=sharegpt: prompts
    # outside these bounds are skipped (a prompt cannot be clipped).
    prompt_min: int = 1
    prompt_max: int | None = None
    # Output length, sent as max_tokens with ignore_eos, so every reply has exactly this.
    # kinds synthetic, shared_prefix, paraphrase: drawn like the prompt length, from these four.
    # kind=sharegpt: the dataset reply's token count, clipped to output_min..output_max.
    output_tokens: int = 64
    output_dist: str = "fixed"
    output_spread: float = 0.0
    output_min: int = 1
    output_max: int | None = None
    ignore_eos: bool = True
    temperature: float = 0.0
    num_prompts: int = 256  # distinct prompts cycled through (kind=paraphrase: num_clusters x paraphrases_per_cluster)
    seed: int = 0
    # kind=sharegpt: a ShareGPT JSON file (list of {"conversations": [{"from", "value"}, ...]}).
    dataset_path: str | None = None
    # kind=shared_prefix: item i uses prefix group i % num_groups; prefix_tokens (specials
    # included) are identical within a group, followed by a distinct suffix of suffix_tokens.
    num_groups: int = 4
    prefix_tokens: int = 512
    suffix_tokens: int = 32
    # kind=paraphrase: clusters of differently worded questions with one meaning (built-in topics).
    num_clusters: int = 16
    paraphrases_per_cluster: int = 4


@dataclass
class ShapeConfig:
    """Time-varying load: multiplies each point's rate (open loop) or users (closed loop) by m(u),
    u = elapsed / (warmup + duration + cooldown). Formulas in loadgen.arrivals.shape_multiplier."""

    kind: str | None = None  # null | ramp | steps | spike | diurnal
    start_fraction: float = 0.1  # ramp: m(0)
    steps: int = 4  # steps: number of equal stairs up to the full value
    spike_at: float = 0.5  # spike: start, as a fraction of the run
    spike_width: float = 0.1  # spike: length, as a fraction of the run
    spike_factor: float = 4.0  # spike: multiplier during the spike
    min_fraction: float = 0.2  # diurnal: trough as a fraction of the peak


@dataclass
class TrafficConfig:
    """When requests are sent: the arrival process and the load points of one engine launch."""

    name: str = "poisson"
    kind: str = "poisson"  # poisson | constant | gamma | trace | concurrency
    # One load point per entry: requests/s for poisson/constant/gamma, users for concurrency,
    # speed-up factors for trace. All points run against the same engine launch, one after another.
    points: list[float] = field(default_factory=lambda: [4.0])
    duration_s: float = 60.0  # measured window per load point
    warmup_s: float = 5.0  # before the measured window; recorded with phase=warmup
    cooldown_s: float = 0.0  # load continues after the measured window (phase=cooldown), so its tail is not an idle server
    burstiness: float = 1.0  # gamma: shape k (1 = Poisson, < 1 burstier)
    think_time_s: float = 0.0  # concurrency: pause of each user between its requests
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    trace_path: str | None = None  # trace: JSONL/CSV with timestamp, input_tokens, output_tokens
    # Distributed load: workers > 1 runs a Locust master plus this many local worker processes;
    # remote_workers more may connect from other machines to master_bind:master_port with
    # `python -m loadgen.locust_runner --role worker --master-host <this host> --master-port <port>`.
    workers: int = 1
    remote_workers: int = 0
    master_bind: str = "127.0.0.1"  # set to this machine's address (or 0.0.0.0) for remote workers
    master_port: int = 0  # 0 = a free port (local workers only)
    request_timeout_s: float = 300.0
    max_inflight: int = 1024  # open loop: requests beyond this are recorded as dropped, never delayed
    seed: int = 0
    drain_timeout_s: float = 120.0  # after the last send, wait this long for in-flight requests
    # Priority change for the load-generator process (os.nice; negative = higher, needs root).
    # Measured: no effect where the kernel groups processes by session (autogroup), because the
    # generator runs in its own session; placement.loadgen_priority=realtime is what helps.
    loadgen_nice: int = 0


@dataclass
class FigureSource:
    """Where one catalog number comes from: the document or measurement, and its date."""

    source: str = ""
    as_of: str = ""  # ISO date of the source (or of reading it, when the source is undated)


@dataclass
class GpuConfig:
    """The accelerator the run is planned for. count 0 = CPU only.

    The spec figures feed the roofline (memory bandwidth), the energy estimate when no power
    is measured (TDP) and the compute ridge (BF16). `sources` names the origin and date of each
    figure, keyed by field name. For `cpu` the memory bandwidth is measured on the host by
    experiments.hostbench, never taken from here.
    """

    name: str = "cpu"
    count: int = 0
    memory_gib: float | None = None  # per device
    tdp_w: float | None = None  # board power limit per device
    label: str = ""  # the product, e.g. "NVIDIA H100 SXM5 80GB"
    memory_bandwidth_gb_per_s: float | None = None  # spec peak per device, 1 GB = 1e9 bytes
    bf16_dense_tflops: float | None = None  # dense (no sparsity) BF16 tensor peak per device
    sources: dict[str, FigureSource] = field(default_factory=dict)


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
class TelemetryConfig:
    """Which samplers run beside the load, and how often."""

    name: str = "auto"
    sampler: str = "auto"  # auto | cpu | nvml | off  (auto: nvml when a GPU is planned, else cpu)
    interval_s: float = 0.2
    scrape_engine_metrics: bool = True  # the engine's Prometheus /metrics, raw samples + known series
    metrics_interval_s: float = 1.0


@dataclass
class PlacementConfig:
    """Which cores the engine, its CPU compute threads, the load generator, the telemetry samplers
    and the lab may use. Planned by experiments.placement.plan_placement; recorded in run.json.

    mode auto: the first `loadgen_cores` cores go to the load generator, the samplers and the
    lab, the rest to the engine's process tree; a CPU build's OMP threads bind there (a GPU plan
    sets no binding). On 2 cores the engine keeps both cores when the generator can run at
    realtime priority, else core 1 only. mode none: nothing pinned, normal priority (the engine
    picks its own threads, as before). mode manual: the lists below, as given.
    """

    name: str = "auto"
    mode: str = "auto"  # auto | none | manual
    # auto: cores set apart for the load generator, samplers and lab (the lowest-numbered ones);
    # null = one, plus one per extra Locust worker (traffic.workers) on machines with spare cores.
    loadgen_cores: int | None = None
    # manual: core ids. telemetry_cpus and lab_cpus null = loadgen_cpus; omp_cpus null = engine_cpus.
    engine_cpus: list[int] | None = None
    loadgen_cpus: list[int] | None = None
    telemetry_cpus: list[int] | None = None
    lab_cpus: list[int] | None = None
    # CPU builds: the cores the engine's OMP compute threads bind to (one thread per core);
    # must lie within engine_cpus. null = auto's choice (manual: engine_cpus).
    omp_cpus: list[int] | None = None
    # OMP_WAIT_POLICY for the engine's OMP threads: passive (sleep when idle), active (spin),
    # null = the OMP runtime's default.
    omp_wait_policy: str | None = None
    # realtime: the load generator runs under SCHED_RR priority 1 where the lab may set it (root,
    # CAP_SYS_NICE or an RLIMIT_RTPRIO): its few % of CPU then never queue behind the engine, the
    # samplers or other programs on its cores. Falls back to normal, with a note, elsewhere.
    loadgen_priority: str = "realtime"  # realtime | normal


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
class RunConfig:
    """The whole run: one engine launch followed by one or more load points."""

    engine: Any = None
    quant: Any = None
    model: Any = None
    workload: Any = None
    traffic: Any = None
    gpu: Any = None
    slo: Any = None
    pricing: Any = None
    telemetry: Any = None
    placement: Any = None
    experiment_name: str = "default"
    results_dir: str = "results"
    # 0-based repetition of the same (variant, point) measurement: the first one this run plans.
    repetition: int = 0
    # How many times each point is measured (repetitions repetition .. repetition+N-1), interleaved
    # across the points of one launch: rep 0 of every point, then rep 1 of every point, ...
    repetitions: int = 1
    # Re-running the same command skips points already measured in results/ (experiments.resume).
    # false: measure every point again, as new repetitions after the recorded ones.
    resume: bool = True
    # A variant whose latest launch failed is skipped (with its reason) unless this is true.
    retry_failed: bool = False
    # report.html + summary.csv + exports/ at the end of each run and sweep (python -m analysis.report
    # renders them later from the files alike); false saves ~2 s a run in long sweeps.
    report: bool = True
    # Which loads are measured: conf/search/ (grid = traffic.points; knee = adaptive, experiments.search)
    search: Any = None
    # conf/quality/: agreement with the unquantized baseline after the load points (off by default)
    quality: Any = None


from experiments.search import SearchConfig  # noqa: E402 - the search group's schema lives with the planner

GROUP_SCHEMAS: dict[str, type] = {
    "engine": EngineConfig,
    "quant": QuantConfig,
    "model": ModelConfig,
    "workload": WorkloadConfig,
    "traffic": TrafficConfig,
    "gpu": GpuConfig,
    "slo": SloConfig,
    "pricing": PricingConfig,
    "telemetry": TelemetryConfig,
    "placement": PlacementConfig,
    "search": SearchConfig,
    "quality": QualityConfig,
}


def register_configs() -> None:
    """Register every schema in Hydra's ConfigStore as `_<group>_schema` (underscore: not a user choice)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    # ${servelab_variant_dir:} names a variant's results folder from its identity (hydra.run.dir,
    # hydra.sweep.subdir), so re-running a command finds what it measured before.
    OmegaConf.register_new_resolver("servelab_variant_dir", variant_dir_resolver, replace=True)
    # ${servelab_cpu_or_gpu:${gpu.count},<on a CPU plan>,<on a GPU plan>}: presets whose variants
    # depend on the hardware planned (conf/experiment/quant_shootout.yaml)
    OmegaConf.register_new_resolver("servelab_cpu_or_gpu", lambda count, cpu, gpu: cpu if int(count) == 0 else gpu,
                                    replace=True)  # fmt: skip
    cs = ConfigStore.instance()
    cs.store(name="_run_schema", node=RunConfig)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=f"_{group}_schema", node=schema)
    # Decision-layer group (conf/capacity/), composed by analysis.decide, not part of a run.
    cs.store(group="capacity", name="_capacity_schema", node=CapacityConfig)


def variant_dir_resolver(*, _root_: Any) -> str:
    """``<engine>_<quant>_<variant_id>`` of the composed config (experiments.resume.variant_dir_name),
    with variant_id computed exactly as experiments.identity.launch_key does on the typed config."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from experiments.identity import launch_key
    from experiments.resume import variant_dir_name

    parts = {k: OmegaConf.to_object(_root_[k]) for k in ("engine", "model", "quant", "gpu", "placement")}
    ns = SimpleNamespace(**parts)
    return variant_dir_name(str(ns.engine.name), str(ns.quant.name), launch_key(ns))
