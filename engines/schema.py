"""The engine layer's config schemas: what is launched and on what (conf/engine, quant, model, gpu,
placement). Typed and inert; the adapters (engines/*.py) turn them into a launch plan.

experiments.schema composes them into the run config and registers them in Hydra's ConfigStore;
their compatibility checks live in experiments.preflight.

Side effects: none.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    # A key over plain http to a host other than loopback is refused (it would cross the network
    # readable); true allows it on a network you trust (docs/security.md).
    allow_insecure: bool = False
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
