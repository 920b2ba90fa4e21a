"""Pure compatibility checks run before anything is launched.

Each problem is one line that names the fix. An empty list means the run may start.
Side effects: none (all machine facts arrive in `facts`), except parser_problems, which runs the
engine's own argument parser in one child process of the engine's interpreter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from analysis.records.layout import experiment_name_problem
from analysis.schema import decision_problems, quality_threshold_problems, unknown_settings
from engines import ADAPTERS, argcheck
from engines.auth import insecure_key_problem
from engines.base import EngineAdapter, HostFacts
from experiments.economy import economy_problems
from experiments.schema import RunConfig
from loadgen import workload
from loadgen.arrivals import CLOSED_LOOP_KINDS, OPEN_LOOP_KINDS, SHAPES
from loadgen.openai_api import ENDPOINT_PATHS
from loadgen.trace import TRACE_FORMATS
from loadgen.workload import WorkloadItem

TELEMETRY_SAMPLERS = ("auto", "cpu", "nvml", "off")
QUANT_METHODS = (None, "fp8", "awq", "gptq", "int8", "int4")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
SPECULATIVE_METHODS = (None, "ngram", "draft")
LAUNCHERS = ("native", "docker")
# search settings a grid never reads (null = not given)
KNEE_ONLY = ("lo", "hi", "start", "expand_to", "max_points")
# Weight dtypes every adapter can pass on (vLLM's --dtype choices; the others accept a subset or ignore it).
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# Flags the lab sets itself from engine.host/engine.port: a second copy in extra_args would make the
# engine listen where the lab does not look.
LAB_FLAGS = ("--host", "--hostname", "--port")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Checkpoint formats that satisfy a method that needs a pre-quantized checkpoint.
CHECKPOINTS_FOR = {
    "awq": ("awq",),
    "gptq": ("gptq",),
    "int8": ("int8", "w8a8", "compressed-tensors"),
    "int4": ("int4", "awq", "gptq", "compressed-tensors"),
}
# Formats a stored checkpoint may declare in model.checkpoint_quant (null = full precision).
CHECKPOINT_FORMATS = ("fp8", *dict.fromkeys(f for fs in CHECKPOINTS_FOR.values() for f in fs))


def _looks_like_path(p: str) -> bool:
    """Explicit filesystem paths; `org/name` could be a hub id, so it is left to the engine."""
    return p.startswith(("/", "./", "../", "~"))


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _positive(x: Any) -> bool:
    return _number(x) and x > 0


def _at_least(x: Any, lo: float) -> bool:
    return _number(x) and x >= lo


def engine_problems(cfg: RunConfig, adapter: EngineAdapter | None = None) -> list[str]:
    """Range and form of every engine.* option, one line each naming the fix ([] = fine). Pure.

    What any engine needs; which options an engine does not support is its adapter's `problems`.
    """
    e, out = cfg.engine, []
    if e.launcher not in LAUNCHERS:
        out.append(f"engine.launcher={e.launcher!r}: use native or docker")
    elif e.launcher == "docker" and adapter is not None and "docker" not in adapter.binaries:
        out.append(f"engine.launcher=docker: engine={adapter.name} has no docker launcher; use engine.launcher=native")
    if e.base_url is not None and e.name != "endpoint":
        out.append(f"engine.base_url only applies to engine=endpoint (engine={e.name} is launched here); "
                   "set engine.base_url=null, or engine=endpoint")  # fmt: skip
    if e.image is not None and not e.image.strip():
        out.append("engine.image is empty: name an image or set it to null (the engine's default image)")
    if e.api_key_env is not None and not _ENV_NAME.fullmatch(e.api_key_env):
        # The value is not echoed: it may be the key itself, pasted by mistake.
        out.append("engine.api_key_env must be the NAME of an environment variable (letters, digits, _), not the key")
    if (line := insecure_key_problem(e.base_url, e.api_key_env, e.allow_insecure)) is not None:
        out.append(line)
    if e.python is not None and not e.python.strip():
        out.append("engine.python is empty: give the engine's interpreter or null (discover it)")
    if not e.host.strip() or "://" in e.host or any(c.isspace() for c in e.host):
        out.append(f"engine.host={e.host!r} must be a host name or address, e.g. 127.0.0.1 (a URL goes in engine.base_url)")
    if not (isinstance(e.port, int) and 0 <= e.port <= 65535):
        out.append(f"engine.port must be 0..65535 (0 = a free port), got {e.port}")
    for name in ("ready_timeout_s", "stop_timeout_s"):
        if not _positive(getattr(e, name)):
            out.append(f"engine.{name} must be > 0 (seconds), got {getattr(e, name)}")
    if not e.health_path.startswith("/"):
        out.append(f"engine.health_path must start with '/', e.g. /health, got {e.health_path!r}")
    if e.metrics_path is not None and not e.metrics_path.startswith("/"):
        out.append(f"engine.metrics_path must start with '/' (or be null: no scrape), got {e.metrics_path!r}")
    if e.dtype not in DTYPES:
        out.append(f"engine.dtype={e.dtype!r}: use one of {', '.join(DTYPES)}")
    if e.max_model_len is not None:
        if e.max_model_len < 1:
            out.append(f"engine.max_model_len must be >= 1 or null (the model's own limit), got {e.max_model_len}")
        elif cfg.model.max_context_tokens >= 1 and e.max_model_len > cfg.model.max_context_tokens:
            out.append(
                f"engine.max_model_len={e.max_model_len} is above model.max_context_tokens="
                f"{cfg.model.max_context_tokens}; lower it (or raise model.max_context_tokens if the model allows more)"
            )
    if e.max_num_seqs is not None and e.max_num_seqs < 1:
        out.append(f"engine.max_num_seqs must be >= 1 or null (the engine's default), got {e.max_num_seqs}")
    if e.tensor_parallel_size < 1:
        out.append(f"engine.tensor_parallel_size must be >= 1, got {e.tensor_parallel_size}")
    elif cfg.gpu.count > 0 and e.tensor_parallel_size > cfg.gpu.count:
        out.append(
            f"engine.tensor_parallel_size={e.tensor_parallel_size} is larger than gpu.count={cfg.gpu.count}; "
            "lower it or plan more GPUs"
        )
    if e.gpu_memory_fraction is not None and not (_number(e.gpu_memory_fraction) and 0 < e.gpu_memory_fraction <= 1):
        out.append(f"engine.gpu_memory_fraction must be in (0, 1] or null, got {e.gpu_memory_fraction}")
    sp = e.speculative
    if sp.method not in SPECULATIVE_METHODS:
        out.append(f"engine.speculative.method={sp.method!r}: use ngram, draft or null")
    elif sp.method == "draft" and not sp.draft_model:
        out.append("engine.speculative.method=draft needs engine.speculative.draft_model (a path or hub id)")
    if sp.method and sp.num_tokens < 1:
        out.append(f"engine.speculative.num_tokens must be >= 1, got {sp.num_tokens}")
    lookup = {n: getattr(sp, n) for n in ("prompt_lookup_min", "prompt_lookup_max")}
    for n, v in lookup.items():
        if v is not None and v < 1:
            out.append(f"engine.speculative.{n} must be >= 1 or null (the engine's default), got {v}")
    lo, hi = lookup.values()
    if lo is not None and hi is not None and 1 <= hi < lo:
        out.append(f"engine.speculative.prompt_lookup_min={lo} is above prompt_lookup_max={hi}; swap or lower it")
    # settings of one method given with another are never read: say so rather than run without them
    if sp.draft_model is not None and sp.method != "draft":
        out.append(f"engine.speculative.draft_model only applies with engine.speculative.method=draft (method="
                   f"{sp.method}); set the method or drop draft_model")  # fmt: skip
    if sp.method != "ngram" and (given := [f"engine.speculative.{n}" for n, v in lookup.items() if v is not None]):
        out.append(f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} with "
                   f"engine.speculative.method=ngram (method={sp.method}); "
                   "set the method or drop them")  # fmt: skip
    if not _at_least(e.cpu_kvcache_space_gib, 0):
        out.append(f"engine.cpu_kvcache_space_gib must be >= 0 (0 = the engine's default), got {e.cpu_kvcache_space_gib}")
    for arg in e.extra_args:
        if not arg.strip():
            out.append(f"engine.extra_args={list(e.extra_args)} has an empty argument; drop it")
        elif (flag := arg.split("=", 1)[0]) in LAB_FLAGS:
            out.append(f"engine.extra_args sets {flag}, which the lab sets itself: use engine.host/engine.port instead")
    if bad := [k for k in e.env if not _ENV_NAME.fullmatch(k)]:
        out.append(f"engine.env: {', '.join(map(repr, bad))} is not an environment variable name (letters, digits, _)")
    return out


def search_problems(cfg: RunConfig) -> list[str]:
    """search=knee needs a range it can bisect and a positive tolerance."""
    sc = getattr(cfg, "search", None)
    if sc is None:
        return []
    out: list[str] = []
    if sc.kind not in ("grid", "knee"):
        return [f"search.kind={sc.kind!r} is unknown; use search=grid or search=knee"]
    for k in ("lo", "hi", "start", "expand_to"):
        v = getattr(sc, k, None)
        if v is not None and not _positive(v):
            out.append(f"search.{k} must be > 0 (a load) or null, got {v}")
    if not (_number(sc.tolerance) and 0 < sc.tolerance < 1):
        out.append(f"search.tolerance must be in (0, 1) (relative width of the final bracket), got {sc.tolerance}")
    if sc.max_points is not None and sc.max_points < 2:
        out.append(f"search.max_points must be >= 2 (a bracket needs two loads) or null, got {sc.max_points}")
    if sc.kind == "grid" and (given := [f"search.{k}" for k in KNEE_ONLY if getattr(sc, k, None) is not None]):
        out.append(f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} with search=knee "
                   "(search=grid measures traffic.points); "
                   "add search=knee or drop them")  # fmt: skip
    if sc.kind == "knee" and not out:
        pts = [float(v) for v in cfg.traffic.points]
        lo = sc.lo if sc.lo is not None else min(pts, default=None)
        hi = sc.hi if sc.hi is not None else max(pts, default=None)
        if lo is None or hi is None or not lo < hi:
            out.append(f"search=knee needs a range lo < hi (got lo={lo}, hi={hi}): set search.lo and search.hi, "
                       "or give two traffic.points (the range's ends)")  # fmt: skip
        elif sc.start is not None and not lo <= sc.start <= hi:
            out.append(f"search.start={sc.start} lies outside the range [{lo}, {hi}]: set it inside, or null")
        elif getattr(sc, "expand_to", None) is not None and sc.expand_to < hi:
            out.append(f"search.expand_to={sc.expand_to} is below hi={hi}: set it above hi (how far the range may "
                       "widen), or null (never)")  # fmt: skip
    return out


def quality_problems(cfg: RunConfig) -> list[str]:
    """quality=gate: its prompt sets exist and parse, counts and thresholds are in range."""
    q = getattr(cfg, "quality", None)
    if q is None or not q.enabled:
        return []
    from loadgen import quality_sets

    out: list[str] = []
    for name, path, answers in (("generic_path", q.generic_path or quality_sets.GENERIC_PATH, False),
                                ("task_path", quality_sets.TASK_PATH if q.task_path is None else q.task_path, True)):  # fmt: skip
        if path == "":
            continue
        try:
            quality_sets.load_set(path, need_answers=answers)
        except quality_sets.QualitySetError as e:
            out.append(f"quality.{name}: {e}")
    for k in ("num_prompts", "num_tasks"):
        v = getattr(q, k)
        if v is not None and not (isinstance(v, int) and v >= 1):
            out.append(f"quality.{k} must be >= 1 or null (all), got {v}")
    for k in ("max_new_tokens", "task_max_tokens", "concurrency", "top_logprobs"):
        if not (isinstance(getattr(q, k), int) and getattr(q, k) >= 1):
            out.append(f"quality.{k} must be an integer >= 1, got {getattr(q, k)}")
    if not _positive(q.request_timeout_s):
        out.append(f"quality.request_timeout_s must be > 0 (seconds), got {q.request_timeout_s}")
    out += quality_threshold_problems(q)
    if q.baseline_quant == cfg.quant.name and cfg.quant.method is not None:
        out.append(f"quality.baseline_quant={q.baseline_quant} is a quantized variant; the baseline must be unquantized (none)")
    return out


def folder_problems(cfg: RunConfig) -> list[str]:
    """experiment_name and results_dir name the folders the run writes into."""
    out: list[str] = []
    if (line := experiment_name_problem(cfg.experiment_name)) is not None:
        out.append(line)
    if not cfg.results_dir.strip():
        out.append("results_dir is empty: give the folder results go to, e.g. results_dir=results")
    return out


def monitor_problems(cfg: RunConfig) -> list[str]:
    """monitor.* settings (live metrics, experiments.monitor); whether the port is free is checked
    when the exporter binds it, still before the engine starts."""
    m, out = cfg.monitor, []
    if m.port is not None and (isinstance(m.port, bool) or not isinstance(m.port, int) or not 1 <= m.port <= 65535):
        out.append(f"monitor.port must be 1..65535 (or null: no live metrics), got {m.port!r}")
    for name in ("window_s", "interval_s", "scrape_interval_s"):
        if not _positive(getattr(m, name)):
            out.append(f"monitor.{name} must be > 0, got {getattr(m, name)!r}")
    if m.duration_s is not None and not _positive(m.duration_s):
        out.append(f"monitor.duration_s must be > 0 (or null: until Ctrl-C), got {m.duration_s!r}")
    if not _at_least(m.linger_s, 0):
        out.append(f"monitor.linger_s must be >= 0, got {m.linger_s!r}")
    if not str(m.host).strip():
        out.append("monitor.host is empty: give the address to listen on, e.g. monitor.host=127.0.0.1")
    return out


def parser_problems(cfg: RunConfig, adapter: EngineAdapter | None, facts: HostFacts | None,
                    supervisor: Any = None) -> list[str]:  # fmt: skip
    """The planned command line parsed by the engine's own parser (engines.argcheck), where the
    engine's venv is present: one line naming the option it rejects, e.g. a misspelled flag in
    engine.extra_args, instead of an engine that exits a minute later ([] = accepted, or nothing
    to ask). NOT pure: one child process of facts.engine_python (importing vLLM: 20-45 s on 2
    cores), started by `supervisor` (the run's engines.process.Supervisor; None: one of its own),
    so the lease asks it last, only when every other check passed."""
    if adapter is None or facts is None or adapter.name not in argcheck.PARSED_ENGINES:
        return []
    plan = adapter.launch_plan(cfg.engine.port or 8000, facts)  # any valid port: launch picks a free one
    line = argcheck.plan_rejection(adapter, plan, facts, supervisor=supervisor)
    return [line] if line else []


def plan_problems(cfg: RunConfig) -> list[str]:
    """What keeps the points of a launch from being planned (repetitions, the points, the search):
    checked before the schedule is built, so a bad setting is one line, never a traceback or a run
    that measures nothing. The same lines come again from check()."""
    out: list[str] = []
    if cfg.repetitions < 1:
        out.append(f"repetitions must be >= 1 (how many times each point is measured), got {cfg.repetitions}")
    if not cfg.traffic.points:
        out.append("traffic.points is empty: give at least one load point, e.g. traffic.points=[4]")
    return out + search_problems(cfg)


def check(cfg: RunConfig, adapter: EngineAdapter | None, facts: HostFacts | None) -> list[str]:
    """Every problem of the planned run, one line each naming the fix ([] = it may start). Pure."""
    out: list[str] = unknown_settings(cfg)
    if cfg.engine.name not in ADAPTERS:
        out.append(f"engine.name={cfg.engine.name!r} has no adapter; known engines: {', '.join(sorted(ADAPTERS))} "
                   "(engine=<name>)")  # fmt: skip
    out += engine_problems(cfg, adapter)
    if adapter is not None and facts is not None:
        out += [p for p in adapter.problems(facts) if p not in out]  # an adapter may repeat a range line
        if facts.port_in_use:
            out.append(f"engine.port={cfg.engine.port} is already in use on {cfg.engine.host}; pick another or 0 (a free port)")
    if adapter is not None and cfg.workload.endpoint in ENDPOINT_PATHS and cfg.workload.endpoint not in adapter.usage_endpoints:
        out.append(
            f"engine={adapter.name} streams token usage only on {', '.join(adapter.usage_endpoints)}; "
            f"set workload.endpoint={adapter.usage_endpoints[0]}"
        )

    if cfg.gpu.count < 0:
        out.append(f"gpu.count must be >= 0 (0 = CPU only), got {cfg.gpu.count}")
    out += monitor_problems(cfg)
    out += economy_problems(cfg)  # experiments.economy: early stop and halving
    if cfg.repetition < 0:
        out.append(f"repetition must be >= 0 (0 = the first measurement of a point), got {cfg.repetition}")
    if cfg.repetitions < 1:
        out.append(f"repetitions must be >= 1 (how many times each point is measured), got {cfg.repetitions}")
    out += folder_problems(cfg)
    out += search_problems(cfg)
    out += quality_problems(cfg)

    m = cfg.model
    if not m.path.strip():
        out.append("model.path is empty: give a local folder or a hub id")
    if m.served_name is not None and not m.served_name.strip():
        out.append("model.served_name is empty: give the name the API should expose or null (model.name)")
    if m.tokenizer is not None and not m.tokenizer.strip():
        out.append("model.tokenizer is empty: give a tokenizer folder or hub id, or null (the model's own)")
    if m.checkpoint_quant not in (None, *CHECKPOINT_FORMATS):
        out.append(f"model.checkpoint_quant={m.checkpoint_quant!r}: use one of {', '.join(CHECKPOINT_FORMATS)} "
                   "or null (full precision)")  # fmt: skip
    if not (isinstance(m.max_context_tokens, int) and m.max_context_tokens >= 1):
        out.append(f"model.max_context_tokens must be >= 1 (the model's context length), got {m.max_context_tokens}")
    if m.params_b is not None and not _positive(m.params_b):
        out.append(f"model.params_b must be > 0 (billions of parameters) or null, got {m.params_b}")
    if facts is not None and not facts.model_is_local:
        if m.built_by:
            out.append(f"model={m.name}: folder {m.path} is missing; build it with `{m.built_by}`")
        elif _looks_like_path(m.path):
            out.append(f"model={m.name}: model.path {m.path} does not exist; pass an existing folder or a hub id")

    q = cfg.quant
    wd = getattr(q, "weight_dtype", None)
    if wd not in (None, "bfloat16", "float16"):
        out.append(f"quant.weight_dtype={wd!r}: use bfloat16, float16 or null")
    elif wd is not None and cfg.engine.dtype not in ("auto", wd):
        out.append(f"quant={q.name} casts the weights to {wd} but engine.dtype={cfg.engine.dtype}: drop engine.dtype")
    if q.method not in QUANT_METHODS:
        out.append(f"quant.method={q.method!r}: use one of {', '.join(str(x) for x in QUANT_METHODS)}")
    if q.bits is not None and not 1 <= q.bits <= 16:
        out.append(f"quant.bits must be 1..16 or null, got {q.bits}")
    if q.kernel is not None and not q.kernel.strip():
        out.append("quant.kernel is empty: name the engine's kernel, e.g. quant.kernel=awq_marlin, or null (the engine picks)")
    if q.kv_cache_dtype not in KV_CACHE_DTYPES:
        out.append(f"quant.kv_cache_dtype={q.kv_cache_dtype!r}: use one of {', '.join(KV_CACHE_DTYPES)}")
    if adapter is not None and adapter.needs_checkpoint():
        ok = CHECKPOINTS_FOR.get(q.method or "", (q.method,))
        if m.checkpoint_quant not in ok:
            stored = m.checkpoint_quant or "full precision"
            out.append(
                f"quant={q.name} needs a {q.method} checkpoint of model={m.name}, but {m.path} is {stored}: "
                f"add conf/model_quant/{m.name}_{q.name}.yaml setting model.path and model.checkpoint_quant"
            )
    w = cfg.workload
    if w.endpoint not in ENDPOINT_PATHS:
        out.append(f"workload.endpoint={w.endpoint!r}: use one of {', '.join(ENDPOINT_PATHS)}")
    out += workload.config_problems(w)
    if not _at_least(w.temperature, 0):
        out.append(f"workload.temperature must be >= 0 (0 = greedy), got {w.temperature}")
    out += context_problems(cfg)

    t = cfg.traffic
    kinds = OPEN_LOOP_KINDS + CLOSED_LOOP_KINDS
    if t.kind not in kinds:
        out.append(f"traffic.kind={t.kind!r}: use one of {', '.join(kinds)}")
    if not t.points:
        out.append("traffic.points is empty: give at least one load point, e.g. traffic.points=[4]")
    pts = list(t.points)
    if bad := [v for v in pts if not _positive(v)]:
        out.append(f"traffic.points={pts}: {bad[0]} is not > 0; every point is a finite rate, user count or speed-up "
                   "> 0, e.g. traffic.points=[1,2,4]")  # fmt: skip
    elif t.kind in CLOSED_LOOP_KINDS and (bad := [v for v in pts if float(v) != int(v)]):
        out.append(f"traffic.points={pts}: {bad[0]} is not a whole number of users (traffic.kind={t.kind}); "
                   "e.g. traffic.points=[1,2,4]")  # fmt: skip
    for name in ("duration_s", "request_timeout_s", "drain_timeout_s"):
        if not _positive(getattr(t, name)):
            out.append(f"traffic.{name} must be > 0 (seconds), got {getattr(t, name)}")
    for name in ("warmup_s", "cooldown_s", "think_time_s"):
        if not _at_least(getattr(t, name), 0):
            out.append(f"traffic.{name} must be >= 0 (seconds), got {getattr(t, name)}")
    if t.kind == "trace" and not t.trace_path:
        out.append("traffic.kind=trace needs traffic.trace_path (a JSONL or CSV trace)")
    out += trace_problems(cfg)
    if t.kind == "gamma" and not _positive(t.burstiness):
        out.append(f"traffic.burstiness must be > 0 (1 = Poisson, < 1 burstier), got {t.burstiness}")
    sh = t.shape
    if sh.kind is not None:
        if sh.kind not in SHAPES:
            out.append(f"traffic.shape.kind={sh.kind!r}: use one of {', '.join(SHAPES)} or null")
        elif t.kind == "trace":
            out.append("traffic.shape does not apply to a trace (its times are replayed); set traffic.shape.kind=null")
        elif sh.kind == "steps" and sh.steps < 1:
            out.append(f"traffic.shape.steps must be >= 1, got {sh.steps}")
        elif sh.kind == "spike":
            if not _positive(sh.spike_factor):
                out.append(f"traffic.shape.spike_factor must be > 0, got {sh.spike_factor}")
            if not (_number(sh.spike_at) and 0 <= sh.spike_at < 1):
                out.append(f"traffic.shape.spike_at must be in [0, 1) (a fraction of the run), got {sh.spike_at}")
            if not (_number(sh.spike_width) and 0 < sh.spike_width <= 1):
                out.append(f"traffic.shape.spike_width must be in (0, 1] (a fraction of the run), got {sh.spike_width}")
        elif sh.kind in ("ramp", "diurnal"):
            name = "start_fraction" if sh.kind == "ramp" else "min_fraction"
            if not (_number(v := getattr(sh, name)) and 0 <= v <= 1):
                out.append(f"traffic.shape.{name} must be within [0, 1], got {v}")
    if t.workers < 1:
        out.append(f"traffic.workers must be >= 1, got {t.workers}")
    if t.remote_workers < 0:
        out.append(f"traffic.remote_workers must be >= 0, got {t.remote_workers}")
    if not 0 <= t.master_port <= 65535:
        out.append(f"traffic.master_port must be 0..65535 (0 = a free port), got {t.master_port}")
    if not -20 <= t.loadgen_nice <= 19:
        out.append(f"traffic.loadgen_nice must be -20..19 (os.nice; negative needs root), got {t.loadgen_nice}")
    if not t.master_bind.strip() or "://" in t.master_bind or any(c.isspace() for c in t.master_bind):
        out.append(f"traffic.master_bind={t.master_bind!r} must be an address to listen on, e.g. 127.0.0.1 or 0.0.0.0")
    if t.remote_workers > 0:
        if t.master_port == 0:
            out.append("traffic.remote_workers needs a fixed traffic.master_port that the other machines can reach")
        if t.master_bind in ("127.0.0.1", "localhost", "::1"):
            out.append("traffic.remote_workers: set traffic.master_bind to this machine's address (or 0.0.0.0)")
        if t.worker_token_env is None:
            out.append("traffic.remote_workers needs traffic.worker_token_env: the NAME of a variable holding a token "
                       "the workers also name (--token-env); without it any machine could join (docs/security.md)")  # fmt: skip
    if t.worker_token_env is not None and not _ENV_NAME.fullmatch(t.worker_token_env):
        out.append("traffic.worker_token_env must be the NAME of an environment variable (letters, digits, _), "
                   "not the token")  # fmt: skip
    if t.max_inflight < 1:
        out.append(f"traffic.max_inflight must be >= 1, got {t.max_inflight}")
    for name, lo, unit in (("max_sse_line_bytes", 1024, "bytes"), ("max_error_body_bytes", 300, "bytes"),
                           ("max_output_text_chars", 1, "characters")):  # fmt: skip
        if getattr(t, name) < lo:
            out.append(f"traffic.{name} must be >= {lo} ({unit}; a cap on what the endpoint may send), "
                       f"got {getattr(t, name)}")  # fmt: skip

    tel = cfg.telemetry
    if tel.sampler not in TELEMETRY_SAMPLERS:
        out.append(f"telemetry.sampler={tel.sampler!r}: use one of {', '.join(TELEMETRY_SAMPLERS)}")
    for name in ("interval_s", "metrics_interval_s"):
        if not _positive(getattr(tel, name)):
            out.append(f"telemetry.{name} must be > 0 (seconds), got {getattr(tel, name)}")
    if tel.max_scrape_bytes < 1024:
        out.append(f"telemetry.max_scrape_bytes must be >= 1024 (a cap on one /metrics answer), got {tel.max_scrape_bytes}")
    out += decision_problems(cfg)
    return out


# Traffic kinds workload=fitted can draw its gamma arrivals for: the open-loop rates.
FITTED_TRAFFIC = ("poisson", "gamma")


def trace_problems(cfg: RunConfig) -> list[str]:
    """traffic.trace_* settings, and what workload=fitted needs (its trace, a rate traffic). Pure:
    the file itself is read (and a bad row named) when the workload is built, before the engine starts."""
    t, w, out = cfg.traffic, cfg.workload, []
    if t.trace_format not in TRACE_FORMATS:
        out.append(f"traffic.trace_format={t.trace_format!r}: use one of {', '.join(TRACE_FORMATS)} (auto = from its columns)")
    if not (isinstance(t.trace_block_tokens, int) and t.trace_block_tokens >= 1):
        out.append(f"traffic.trace_block_tokens must be >= 1 (tokens per hash_ids block of a Mooncake trace; 512 in "
                   f"Mooncake's published traces), got {t.trace_block_tokens}")  # fmt: skip
    for name, examples in (("trace_model", "ChatGPT or GPT-4"), ("trace_log_type", "'Conversation log' or 'API log'")):
        v = getattr(t, name)
        if v is None:
            continue
        if not v.strip():
            out.append(f"traffic.{name} is empty: give a value of the BurstGPT column ({examples}) or null (every row)")
        elif t.trace_format not in ("auto", "burstgpt"):
            out.append(f"traffic.{name} only applies to BurstGPT traces (traffic.trace_format={t.trace_format}); "
                       "set it to null, or traffic.trace_format=burstgpt")  # fmt: skip
    if w.kind == "fitted":
        if not t.trace_path:
            out.append("workload=fitted needs traffic.trace_path: the trace whose shape is fitted (any traffic.trace_format)")
        if t.kind not in FITTED_TRAFFIC:
            out.append(f"workload=fitted sends gamma arrivals of the trace's fitted shape at traffic.points req/s, so "
                       f"traffic.kind={t.kind} does not apply: use traffic=poisson or traffic=gamma "
                       "(traffic=trace replays the trace itself)")  # fmt: skip
    return out


def context_problems(cfg: RunConfig, items: Sequence[WorkloadItem] | None = None) -> list[str]:
    """The one context-length rule: a request's prompt + max_tokens must fit the context limit.

    Called twice with the same rule and wording: by :func:`check` without `items` (the workload's
    configured upper bounds; nothing is said when they are not known before building: normal or
    lognormal lengths without a max, ShareGPT without prompt_max, a trace), and by the runner
    with the built items, before the engine starts. Pure; [] = everything fits.
    """
    limit = context_limit(cfg)
    if not limit:
        return []
    if items is None:
        # A trace sends its own lengths, not the workload's; bad workload settings are reported by check().
        if cfg.traffic.kind == "trace" or workload.config_problems(cfg.workload):
            return []
        prompt_hi, output_hi = workload.token_bounds(cfg.workload)
        if prompt_hi is None or output_hi is None or prompt_hi + output_hi <= limit:
            return []
        return [f"workload needs up to {prompt_hi}+{output_hi} tokens but the context limit is {limit}; {_context_fix(cfg)}"]
    too_long = [it for it in items if it.prompt_tokens_client + it.max_tokens > limit]
    if not too_long:
        return []
    worst = max(too_long, key=lambda it: it.prompt_tokens_client + it.max_tokens)
    return [
        f"{len(too_long)} workload item(s) need more than the context limit of {limit} tokens (item {worst.prompt_idx}: "
        f"{worst.prompt_tokens_client}+{worst.max_tokens}); {_context_fix(cfg)}"
    ]


def _context_fix(cfg: RunConfig) -> str:
    """How to make requests fit: shorter requests, or a longer context where the model allows it."""
    lengths = (
        "the trace's input_tokens/output_tokens" if cfg.traffic.kind == "trace"
        else workload.LENGTH_FIX.get(cfg.workload.kind, "the workload lengths")
    )  # fmt: skip
    e, model_limit = cfg.engine.max_model_len, cfg.model.max_context_tokens
    if e and (model_limit < 1 or e < model_limit):
        return f"lower {lengths} or raise engine.max_model_len"
    return f"lower {lengths} (model.max_context_tokens={model_limit} is the model's own limit)"


def context_limit(cfg: RunConfig) -> int | None:
    """The tightest context length the run is planned with (engine.max_model_len, model.max_context_tokens)."""
    limits = [x for x in (cfg.engine.max_model_len, cfg.model.max_context_tokens) if x and x > 0]
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
        ignored = w.kind != "synthetic" and (f == "prompt" or w.kind in ("sharegpt", "fitted"))
        if dist != "fixed" and ignored:
            out.append(f"workload.{f}_dist={dist} has no effect with workload.kind={w.kind}; set it to fixed")
        elif dist == "fixed" and getattr(w, f"{f}_spread"):
            out.append(f"workload.{f}_spread is ignored because workload.{f}_dist=fixed")
    t = cfg.traffic
    if w.kind == "fitted" and t.kind in FITTED_TRAFFIC:
        if t.kind == "gamma":
            out.append(f"traffic.burstiness={t.burstiness} is not read with workload=fitted: the gamma shape is fitted "
                       "from the trace (run.json trace.fitted.arrivals)")  # fmt: skip
        window = t.warmup_s + t.duration_s + t.cooldown_s
        most = max((float(v) for v in t.points if _positive(v)), default=0.0) * window
        if most > w.num_prompts:
            out.append(f"workload=fitted: about {most:.0f} requests at the highest point but workload.num_prompts="
                       f"{w.num_prompts} items, so items repeat and a prefix cache serves the repeats whole; raise "
                       "workload.num_prompts for a faithful hit rate")  # fmt: skip
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
