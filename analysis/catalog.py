"""The metric catalog: every metric servelab emits, with its unit, direction, formula and sources.

One table (:data:`METRICS`). Each entry names a value by where it lives:
  scope  "request"  a column that analysis.metrics.derive adds to requests.parquet
         "point"    a key of run.json → load_points[i].summary (summarize_point + point_resources)
         "run"      a key of run.json's `telemetry` / `engine_metrics` blocks (analysis.run_summary)
         "decision" a column of the decision's per-point table (decision.json → points[])
  block  the dict inside that holds it ("" = top level), so path = block.name
A distribution metric is a dict of count, mean, min, p50, p90, p95, p99, max (numpy's linear
percentiles). `sources` are the raw record fields, telemetry columns or config keys it derives from.
tests/analysis/test_catalog.py checks that the functions emit exactly these paths, and that
docs/metrics.md is what scripts/gen_metrics_doc.py renders from this table. `direction` is read
by experiments.store compare and by the report's comparison table (which side is better).

Side effects: none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from analysis.metrics import DISTRIBUTION_KEYS

SCOPES = ("request", "point", "run", "decision")
DIRECTIONS = ("lower", "higher", None)


@dataclass(frozen=True)
class Metric:
    name: str  # the key, with its unit as suffix where it has one (_ms _s _w _j _tok_per_s _rps _pct _gib)
    unit: str
    direction: str | None  # "lower" | "higher" is better; None: neither (a count, a setting, a context value)
    formula: str
    sources: tuple[str, ...]
    scope: str
    block: str = ""
    distribution: bool = False

    @property
    def path(self) -> str:
        return f"{self.block}.{self.name}" if self.block else self.name


# (name, unit, direction, formula, sources[, distribution]) rows, placed into blocks below.
_Row = tuple[Any, ...]

REQUEST: tuple[_Row, ...] = (
    ("ttft_ms", "ms", "lower", "(t_first_token_ns − t_sent_ns) / 1e6", ("t_first_token_ns", "t_sent_ns")),
    ("e2e_ms", "ms", "lower", "(t_done_ns − t_sent_ns) / 1e6", ("t_done_ns", "t_sent_ns")),
    ("tpot_ms", "ms", "lower",
     "(t_last_token_ns − t_first_token_ns) / 1e6 / (output_tokens − 1), for output_tokens ≥ 2. Equals vLLM's "
     "(E2E − TTFT)/(N − 1) with E2E taken at the last token", ("t_last_token_ns", "t_first_token_ns", "output_tokens")),
    ("sched_lag_ms", "ms", "lower", "(t_sent_ns − t_scheduled_ns) / 1e6: how late the load generator sent the request",
     ("t_sent_ns", "t_scheduled_ns")),
    ("n_chunks", "chunks", None, "len(chunk_ns): content chunks received (fewer than tokens when a chunk carries several)",
     ("chunk_ns",)),
)  # fmt: skip

_COUNTS = {"total": (None, "all"), "ok": ("higher", "status = ok"), "error": ("lower", "status = error"),
           "timeout": ("lower", "status = timeout"), "cancelled": ("lower", "status = cancelled"),
           "dropped": ("lower", "status = dropped (never sent: max_inflight reached)")}  # fmt: skip

W = "W = [measure_window_t0_ns, measure_window_t1_ns)"
POINT_TOP: tuple[_Row, ...] = (
    ("load_value", "load_unit", None, "traffic.points[i] as configured: req/s (open loop), users (concurrency) or "
     "speed-up (trace); `load_unit` names which", ("traffic.points", "traffic.kind")),
    ("offered_rate_rps", "req/s", None,
     "the configured rate: load_value × (1/duration_s) ∫ m(t/(warmup_s + duration_s + cooldown_s)) dt over "
     "t ∈ [warmup_s, warmup_s + duration_s), m = the traffic shape's multiplier (1 without a shape). None for "
     "concurrency (no rate) and trace (the trace is the schedule)",
     ("traffic.points", "traffic.shape", "traffic.warmup_s", "traffic.duration_s", "traffic.cooldown_s")),
    ("scheduled_rate_rps", "req/s", None,
     "count(measure-phase requests, dropped included) / duration_s: what the schedule (or the closed loop) produced",
     ("phase", "traffic.duration_s")),
    ("concurrency", "users", None, "load_value, closed loop only (None otherwise)", ("traffic.points",)),
    ("error_rate", "fraction", "lower", "(measure-phase requests − ok) / measure-phase requests; error, timeout, "
     "cancelled and dropped all count as not ok", ("status", "phase")),
    ("measure_window_s", "s", None,
     "|W|, the steady measure window W = [t0 + warmup_s, t0 + warmup_s + duration_s): the schedule's measure span, "
     "t0 = the point's start (generator meta t0_ns); cut at the generator's t_end_ns when the point stopped early; "
     "without t0 it starts at the earliest measure-phase t_scheduled_ns",
     ("t0_ns", "t_end_ns", "traffic.warmup_s", "traffic.duration_s", "t_scheduled_ns")),
    ("measure_window_t0_ns", "ns (monotonic)", None, "start of W (see measure_window_s)", ("t0_ns", "traffic.warmup_s")),
    ("measure_window_t1_ns", "ns (monotonic)", None, "end of W (see measure_window_s)",
     ("t0_ns", "traffic.warmup_s", "traffic.duration_s", "t_end_ns")),
    ("drain_window_s", "s", None,
     "max t_done_ns − min t_sent_ns over measure-phase requests that were sent: v1's window, which includes the "
     "drain tail after the last send; a diagnostic (drain_window_s − measure_window_s ≈ the tail), no rate uses it",
     ("t_done_ns", "t_sent_ns", "phase", "status")),
    ("achieved_rate_rps", "req/s", "higher", f"count(ok requests of any phase with t_done_ns in W) / |W|; {W}",
     ("t_done_ns", "status")),
    ("generated_tokens", "tokens", None,
     "Σ output_tokens over measure-phase ok requests: what the server generated (server usage; the chunk count "
     "without usage). The requested length is max_tokens per request, workload.output_tokens in the config",
     ("output_tokens", "phase", "status")),
    ("processed_prompt_tokens", "tokens", None, "Σ prompt_tokens (server usage) over measure-phase ok requests",
     ("prompt_tokens", "phase", "status")),
    ("window_generated_tokens", "tokens", None,
     "Σ over ok requests of any phase of output_tokens × (chunk_ns in W) / n_chunks: tokens counted where they "
     "arrived, so a request straddling a boundary adds only its in-window part (tokens spread evenly over chunks)",
     ("output_tokens", "chunk_ns", "t_first_token_ns", "t_last_token_ns", "status")),
    ("window_prompt_tokens", "tokens", None, "Σ prompt_tokens of ok requests (any phase) whose t_first_token_ns is in W",
     ("prompt_tokens", "t_first_token_ns", "status")),
    ("output_tok_per_s", "tok/s", "higher", "window_generated_tokens / measure_window_s",
     ("output_tokens", "chunk_ns", "t0_ns")),
    ("total_tok_per_s", "tok/s", "higher", "(window_generated_tokens + window_prompt_tokens) / measure_window_s",
     ("output_tokens", "prompt_tokens", "chunk_ns", "t0_ns")),
    ("ttft_ms", "ms", "lower", "ttft_ms of measure-phase ok requests", ("t_first_token_ns", "t_sent_ns"), True),
    ("tpot_ms", "ms", "lower", "tpot_ms of measure-phase ok requests (N ≥ 2)",
     ("t_last_token_ns", "t_first_token_ns", "output_tokens"), True),
    ("itl_ms", "ms", "lower",
     "every gap between consecutive chunk_ns of each measure-phase ok request, pooled (TTFT excluded). With "
     "several tokens per chunk, ITL ≠ TPOT", ("chunk_ns",), True),
    ("e2e_ms", "ms", "lower", "e2e_ms of measure-phase ok requests", ("t_done_ns", "t_sent_ns"), True),
    ("sched_lag_ms", "ms", "lower", "sched_lag_ms of measure-phase requests that were sent",
     ("t_sent_ns", "t_scheduled_ns"), True),
    ("interactivity_tok_per_s", "tok/s", "higher", "1000 / mean tpot_ms: the per-user decode speed",
     ("t_last_token_ns", "t_first_token_ns", "output_tokens")),
    ("output_length_mismatches", "requests", "lower",
     "measure-phase ok requests whose output_tokens ≠ max_tokens (only with workload.ignore_eos; should be 0)",
     ("output_tokens", "max_tokens")),
)  # fmt: skip

DRIFT: tuple[_Row, ...] = (
    ("requests", "requests", "lower", "measure-phase ok requests whose server count differs from the client's", ()),
    ("mean_server_minus_client", "tokens", None, "mean (server − client) count over those requests (0 when none)", ()),
)
PROMPT_OFFSET: tuple[_Row, ...] = (
    ("offset", "tokens", None, "the most common (server − client) prompt count (the smallest of ties; 0 when none): "
     "a constant that one side counts and the other does not (BOS, a chat template)", ()),
    ("requests_off_offset", "requests", "lower", "measure-phase ok requests whose (server − client) prompt count "
     "differs from offset: the drift the verdict's token_drift judges", ()),
)

LOADGEN: tuple[_Row, ...] = (
    ("cpu_pct_mean", "% of one core", "lower", "mean cpu_pct of the generator's once-a-second self-checks", ("loadgen.cpu_pct",)),
    ("cpu_pct_max", "% of one core", "lower", "max cpu_pct of the self-checks", ("loadgen.cpu_pct",)),
    ("loop_lag_max_ms", "ms", "lower", "worst event-loop stall: how late a 10 ms gevent sleep woke, max over the run",
     ("loadgen.lag_max_ms",)),
    ("loop_lag_mean_ms", "ms", "lower", "mean of the self-checks' mean stall", ("loadgen.lag_mean_ms",)),
    ("saturated", "flag", "lower",
     "cpu_pct_max > 60 or loop_lag_max_ms > 50 or sched_lag_ms p99 > 10: TTFT/ITL percentiles are then not "
     "trustworthy; the reasons are Notes in loadgen.saturation_reasons (kinds cpu_saturated, loop_stall, sched_lag)",
     ("loadgen.cpu_pct", "loadgen.lag_max_ms", "t_sent_ns", "t_scheduled_ns")),
)  # fmt: skip

ENERGY: tuple[_Row, ...] = (
    ("joules", "J", "lower",
     "Σ over GPUs of energy_j(last sample ≤ t1) − energy_j(first sample ≥ t0) over W (NVML's total-energy counter); "
     "without the counter, ∫ power_w dt by the trapezoidal rule over the samples in W", ("telemetry.energy_j", "telemetry.power_w")),
    ("span_s", "s", None, "time between the first and the last sample the energy used (longest over GPUs)", ("telemetry.t_ns",)),
    ("j_per_output_token", "J/token", "lower",
     "(joules / span_s) / output_tok_per_s: mean power over the sampled span ÷ the token rate of the same window",
     ("telemetry.energy_j", "telemetry.power_w", "output_tokens", "chunk_ns")),
)  # fmt: skip

SAMPLES: tuple[_Row, ...] = (("samples", "samples", None, "telemetry rows in the window", ("telemetry.t_ns",)),)
GPU: tuple[_Row, ...] = (
    ("gpus", "GPUs", None, "distinct GPUs sampled", ("telemetry.gpu",)),
    ("power_mean_w", "W", None, "mean over sampling rounds of Σ power_w over GPUs", ("telemetry.power_w",)),
    ("power_peak_w", "W", None, "max over sampling rounds of Σ power_w over GPUs", ("telemetry.power_w",)),
    ("mem_used_peak_gib", "GiB", None, "max mem_used_bytes / 2^30 of any GPU", ("telemetry.mem_used_bytes",)),
    ("gpu_util_mean_pct", "%", None, "mean gpu_util_pct over samples", ("telemetry.gpu_util_pct",)),
    ("temp_max_c", "°C", "lower", "max temp_c", ("telemetry.temp_c",)),
    ("throttled_samples", "samples", "lower", "samples whose throttle_reasons has a bit other than 0 (idle) set",
     ("telemetry.throttle_reasons",)),
    ("sample_errors", "samples", "lower", "samples with a failed NVML call (errors not null)", ("telemetry.errors",)),
)  # fmt: skip
CPU: tuple[_Row, ...] = (
    ("engine_cpu_pct_mean", "% of one core", None, "mean CPU of the engine's process tree", ("telemetry.engine_cpu_pct",)),
    ("engine_cpu_pct_max", "% of one core", None, "max CPU of the engine's process tree", ("telemetry.engine_cpu_pct",)),
    ("engine_rss_peak_gib", "GiB", None, "max RSS of the engine's process tree / 2^30", ("telemetry.engine_rss_bytes",)),
    ("system_cpu_pct_mean", "%", None, "mean whole-machine CPU", ("telemetry.system_cpu_pct",)),
)  # fmt: skip

_G = "gauge from the engine's /metrics, summed over label sets per scrape"
_C = "counter from /metrics: the scrape at or after the window's end − the scrape at or before its start"
ENGINE: tuple[_Row, ...] = (
    ("scrapes", "scrapes", None, "scrapes in the window", ("engine_metrics.t_ns",)),
    ("running_mean", "requests", None, f"mean of running ({_G})", ("vllm:num_requests_running", "sglang:num_running_reqs",
                                                                  "tgi_batch_current_size")),
    ("running_max", "requests", None, "max of running", ("vllm:num_requests_running", "sglang:num_running_reqs",
                                                        "tgi_batch_current_size")),
    ("waiting_mean", "requests", "lower", f"mean of waiting (queued; {_G})", ("vllm:num_requests_waiting",
                                                                             "sglang:num_queue_reqs", "tgi_queue_size")),
    ("waiting_max", "requests", "lower", "max of waiting", ("vllm:num_requests_waiting", "sglang:num_queue_reqs",
                                                           "tgi_queue_size")),
    ("kv_usage_frac_mean", "fraction", None, "mean KV-cache usage, a fraction in [0, 1] (vLLM's metric says perc "
     "but is a fraction)", ("vllm:kv_cache_usage_perc", "sglang:token_usage")),
    ("kv_usage_frac_max", "fraction", None, "peak KV-cache usage, a fraction in [0, 1]",
     ("vllm:kv_cache_usage_perc", "sglang:token_usage")),
    ("prefix_cache_hit_rate_mean", "fraction", "higher", "mean of the engine's own prefix-cache hit rate gauge",
     ("sglang:cache_hit_rate",)),
    ("prefix_cache_hit_rate_max", "fraction", "higher", "max of that gauge", ("sglang:cache_hit_rate",)),
    ("preemptions_total_increase", "preemptions", "lower", f"requests preempted ({_C})", ("vllm:num_preemptions_total",)),
    ("prefix_cache_hits_total_increase", "tokens", "higher", f"prefix-cache hits ({_C})", ("vllm:prefix_cache_hits_total",)),
    ("prefix_cache_queries_total_increase", "tokens", None, f"prefix-cache lookups ({_C})",
     ("vllm:prefix_cache_queries_total",)),
    ("generation_tokens_total_increase", "tokens", None, f"tokens the engine says it generated ({_C})",
     ("vllm:generation_tokens_total", "sglang:generation_tokens_total")),
)  # fmt: skip


# The decision's per-point columns (analysis.results.point_row; decision.json points[], and the subset
# experiments.postrun.DECISION_FIELDS in run.json load_points[i].summary.decision), at an SLO and a price book.
_B = "95 % seeded bootstrap interval"
DECISION = (
    ("verdict", "valid | warn | invalid", None, "whether the point's numbers can be trusted, with its reasons "
     "(analysis.verdict: window, samples, scrape gaps, load-generator health)", ("run.json", "requests.parquet")),
    ("feasible", "flag", "higher", "attainment >= slo.attainment_target AND each threshold's percentile value <= its limit",
     ("requests.parquet", "slo")),
    ("attainment", "fraction", "higher", "count(requests meeting every SLO threshold) / count(measure requests); "
     "errors, timeouts, drops are misses", ("requests.parquet", "slo")),
    ("goodput_rps", "req/s", "higher", "requests meeting every SLO threshold / measure window", ("requests.parquet", "slo")),
    ("goodput_output_tok_per_s", "tok/s", "higher", "output tokens of the requests meeting every SLO threshold / measure window",
     ("requests.parquet", "slo")),
    ("tok_per_s_per_gpu", "tok/s per GPU", "higher", "output_tok_per_s / GPUs billed (a CPU instance counts 1)",
     ("output_tok_per_s", "gpu")),
    ("tok_per_s_per_user", "tok/s per request", "higher", "interactivity_tok_per_s of the point", ("interactivity_tok_per_s",)),
    ("usd_per_1m_output", "$ per 1M tokens", "lower", "G * P / (output_tok_per_s * 3600) * 1e6 (P = $/GPU-hour of the "
     "book's tier or pricing.usd_per_hour, G = GPUs billed)", ("output_tok_per_s", "pricing")),
    ("usd_per_1m_output_lo", "$ per 1M tokens", "lower", f"{_B}, low end (the bootstrap's relative spread on the estimate)",
     ("requests.parquet", "pricing")),
    ("usd_per_1m_output_hi", "$ per 1M tokens", "lower", f"{_B}, high end", ("requests.parquet", "pricing")),
    ("usd_per_1m_goodput", "$ per 1M tokens", "lower", "G * P / (goodput_output_tok_per_s * 3600) * 1e6",
     ("goodput_output_tok_per_s", "pricing")),
    ("usd_per_1m_goodput_lo", "$ per 1M tokens", "lower", f"{_B}, low end", ("requests.parquet", "pricing")),
    ("usd_per_1m_goodput_hi", "$ per 1M tokens", "lower", f"{_B}, high end", ("requests.parquet", "pricing")),
    ("j_per_output_token", "J/token", "lower", "energy.j_per_output_token of the point (measured, or estimated from TDP)",
     ("energy.j_per_output_token",)),
    ("mbu", "fraction", "higher", "decode memory-bandwidth utilisation: measured decode tok/s ÷ the roofline's bound "
     "(analysis.roofline)", ("output_tok_per_s", "config.json", "host_bandwidth")),
    ("decode_bound_tok_per_s", "tok/s", None, "the roofline's decode bound at the measured batch and context",
     ("config.json", "host_bandwidth")),
)  # fmt: skip


def _place(rows: Iterable[_Row], scope: str, block: str = "") -> tuple[Metric, ...]:
    out = []
    for r in rows:
        name, unit, direction, formula, sources, *dist = r
        out.append(Metric(name, unit, direction, formula, tuple(sources), scope, block, bool(dist and dist[0])))
    return tuple(out)


def _counts(phases: str) -> tuple[_Row, ...]:
    return tuple((k, "requests", d, f"{phases} requests with {what}" if k != "total" else f"{phases} requests",
                  ("status", "phase")) for k, (d, what) in _COUNTS.items())  # fmt: skip


METRICS: tuple[Metric, ...] = (
    *_place(REQUEST, "request"),
    *_place(POINT_TOP, "point"),
    *_place(_counts("measure-phase"), "point", "requests"),
    *_place(_counts("all"), "point", "requests_all_phases"),
    *_place([(n, u, d, f"prompt: {f}", ("prompt_tokens", "prompt_tokens_client")) for n, u, d, f, _ in DRIFT + PROMPT_OFFSET],
            "point", "prompt_token_drift"),
    *_place([(n, u, d, f"output: {f}", ("output_tokens", "output_tokens_client")) for n, u, d, f, _ in DRIFT],
            "point", "output_token_drift"),
    *_place(LOADGEN, "point", "loadgen"),
    *_place(ENERGY, "point", "energy"),
    *_place(SAMPLES + GPU, "point", "gpu"),
    *_place(SAMPLES + CPU, "point", "cpu"),
    *_place(ENGINE, "point", "engine_metrics"),
    *_place((("samples", "samples", None, "telemetry rows of the whole run", ("telemetry.t_ns",)),), "run", "telemetry"),
    *_place(SAMPLES + GPU + CPU, "run", "telemetry.summary_during_load"),
    *_place((("scrapes", "scrapes", None, "distinct scrape times of the whole run", ("engine_metrics.t_ns",)),
             ("failed_scrapes", "scrapes", "lower", "scrapes that returned an error", ("engine_metrics.error",))),
            "run", "engine_metrics"),
    *_place(ENGINE, "run", "engine_metrics.summary_during_load"),
    *_place(DECISION, "decision"),
)  # fmt: skip

BLOCK_TITLES = {
    ("request", ""): "Per request: columns analysis.metrics.derive adds to requests.parquet",
    ("point", ""): "Per load point: run.json → load_points[i].summary",
    ("point", "requests"): "… .requests: measure-phase counts",
    ("point", "requests_all_phases"): "… .requests_all_phases: counts over warmup, measure and cooldown",
    ("point", "prompt_token_drift"): "… .prompt_token_drift",
    ("point", "output_token_drift"): "… .output_token_drift (when output_tokens_client was counted)",
    ("point", "loadgen"): "… .loadgen: could the load generator keep up?",
    ("point", "energy"): "… .energy (NVML sampler), over W",
    ("point", "gpu"): "… .gpu (NVML sampler), over W",
    ("point", "cpu"): "… .cpu (CPU sampler), over W",
    ("point", "engine_metrics"): "… .engine_metrics: the engine's /metrics over W",
    ("run", "telemetry"): "Per run: run.json → telemetry",
    ("run", "telemetry.summary_during_load"): "… telemetry.summary_during_load: the GPU or CPU rows above over all points",
    ("run", "engine_metrics"): "… run.json → engine_metrics",
    ("run", "engine_metrics.summary_during_load"): "… engine_metrics.summary_during_load: as per point, over all points",
    ("decision", ""): "Per load point of a decision, at an SLO and a price book: decision.json → points[] "
                      "(run.json → load_points[i].summary.decision: the same at the run's own slo and pricing)",
}


def by_path(scope: str) -> dict[str, Metric]:
    return {m.path: m for m in METRICS if m.scope == scope}


def direction_of(name: str) -> str | None:
    """Which way is better for a metric named as a point summary, the store or the decision name it:
    a catalogued point or decision metric, or a statistic of a catalogued distribution
    (ttft_ms_p99 -> ttft_ms); None = neither way, or not catalogued."""
    for scope in ("point", "decision"):
        if (m := by_path(scope).get(name)) is not None:
            return m.direction
    base, _, stat = name.rpartition("_")
    m = by_path("point").get(base)
    return m.direction if m is not None and m.distribution and stat in DISTRIBUTION_KEYS and stat != "count" else None


def emitted_paths(summary: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the values a summary dict emits: numbers, flags and None leaves, with a
    distribution dict counted once under its own path; text and lists (notes, names) are not metrics."""
    out: set[str] = set()
    for k, v in summary.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if set(v) == set(DISTRIBUTION_KEYS):
                out.add(path)
            else:
                out |= emitted_paths(v, path + ".")
        elif not isinstance(v, (str, list, tuple)):
            out.add(path)
    return out


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(intro: str) -> str:
    """docs/metrics.md: `intro` with its `<!-- catalog -->` line replaced by one table per block."""
    parts: list[str] = []
    for (scope, block), title in BLOCK_TITLES.items():
        rows = [m for m in METRICS if m.scope == scope and m.block == block]
        parts.append(f"### {title}\n\n| metric | unit | better | formula | from |\n|---|---|---|---|---|")
        for m in rows:
            formula = m.formula + (" — distribution: count, mean, min, p50, p90, p95, p99, max" if m.distribution else "")
            src = ", ".join(f"`{s}`" for s in m.sources) or "—"
            parts.append(f"| `{m.path}` | {_cell(m.unit)} | {m.direction or '—'} | {_cell(formula)} | {src} |")
        parts.append("")
    tables = "\n".join(parts).rstrip() + "\n"
    head, marker, tail = intro.partition("<!-- catalog -->\n")
    if not marker:
        raise ValueError("the metrics doc template has no '<!-- catalog -->' line")
    return head + tables + tail


# -- live series (Prometheus), exported by experiments.monitor from analysis.live ------------------
SERIES_PREFIX = "servelab_"
_RUN_LABELS = ("variant_id", "run_id", "point_id")
_ENGINE_LABELS = ("variant_id", "run_id", "target")
_WIN = "over the sliding window (now − monitor.window_s, now], requests placed at t_done_ns (a dropped one at t_scheduled_ns)"
_PT = "over the point so far: measure-phase requests received / |W| so far (min(now − first measure arrival, duration_s); " \
      "the summary's measure_window_s once the point is over)"


@dataclass(frozen=True)
class Series:
    """One exported Prometheus series: full name (prefix and _total included), type, unit, labels,
    formula, where it is exported (run | passive | both) and the catalog metric it is the live
    counterpart of ((scope, path) in METRICS, or None)."""

    name: str
    kind: str  # counter | gauge | histogram
    unit: str
    labels: tuple[str, ...]
    formula: str
    where: str = "run"
    mirrors: tuple[str, str] | None = None


_S = Series
_P = SERIES_PREFIX
SERIES: tuple[Series, ...] = (
    _S(_P + "run_info", "gauge", "1", ("variant_id", "run_id", "experiment", "variant", "slo", "pricing"),
       "1 while the run's exporter serves: which experiment, variant (engine/quant model gpu xN), SLO and price book"),
    _S(_P + "usd_per_hour", "gauge", "USD/hour", ("variant_id", "run_id"),
       "G · P: the price book's $/GPU-hour (per instance-hour for gpu=cpu) × GPUs billed (analysis.cost.price_for)",
       "both"),
    _S(_P + "slo_threshold_seconds", "gauge", "s", ("variant_id", "run_id", "metric", "percentile"),
       "the run's SLO limit of each set threshold (slo.ttft_ms, tpot_ms, itl_ms, e2e_ms) / 1e3, at its percentile: "
       "the lines a latency panel draws"),
    _S(_P + "slo_attainment_target_ratio", "gauge", "ratio", ("variant_id", "run_id"), "slo.attainment_target"),
    _S(_P + "load_point_value", "gauge", "load_unit", (*_RUN_LABELS, "load_unit", "point_index"),
       "traffic.points[i] as configured", mirrors=("point", "load_value")),
    _S(_P + "phase", "gauge", "flag", (*_RUN_LABELS, "phase"),
       "1 for the point's current phase (starting | warmup | measure | cooldown | done), 0 for the others: the phase "
       "of the latest scheduled request received"),
    _S(_P + "point_active", "gauge", "flag", _RUN_LABELS, "1 while the point's load generator runs"),
    _S(_P + "requests_total", "counter", "requests", (*_RUN_LABELS, "status", "phase"),
       "records received, by status and phase", mirrors=("point", "requests_all_phases.total")),
    _S(_P + "output_tokens_total", "counter", "tokens", (*_RUN_LABELS, "phase"),
       "Σ output_tokens of ok requests, by phase", mirrors=("point", "generated_tokens")),
    _S(_P + "goodput_requests_total", "counter", "requests", (*_RUN_LABELS, "phase"),
       "requests meeting every SLO threshold (analysis.slo.meets_mask), by phase"),
    _S(_P + "goodput_output_tokens_total", "counter", "tokens", (*_RUN_LABELS, "phase"),
       "Σ output_tokens of the requests meeting every SLO threshold, by phase"),
    _S(_P + "ttft_seconds", "histogram", "s", (*_RUN_LABELS, "phase"),
       "ttft_ms / 1e3 of ok requests; buckets analysis.live.REQUEST_LATENCY_BUCKETS_S", mirrors=("point", "ttft_ms")),
    _S(_P + "tpot_seconds", "histogram", "s", (*_RUN_LABELS, "phase"),
       "tpot_ms / 1e3 of ok requests (N ≥ 2); buckets analysis.live.TOKEN_LATENCY_BUCKETS_S", mirrors=("point", "tpot_ms")),
    _S(_P + "itl_seconds", "histogram", "s", (*_RUN_LABELS, "phase"),
       "every gap between consecutive chunk_ns of ok requests / 1e9; buckets analysis.live.TOKEN_LATENCY_BUCKETS_S",
       mirrors=("point", "itl_ms")),
    _S(_P + "e2e_seconds", "histogram", "s", (*_RUN_LABELS, "phase"),
       "e2e_ms / 1e3 of ok requests; buckets analysis.live.REQUEST_LATENCY_BUCKETS_S", mirrors=("point", "e2e_ms")),
    _S(_P + "output_tokens_per_second", "gauge", "tokens/s", _RUN_LABELS,
       f"Σ output_tokens of ok requests / window_s, {_WIN}", mirrors=("point", "output_tok_per_s")),
    _S(_P + "goodput_requests_per_second", "gauge", "requests/s", _RUN_LABELS,
       f"requests meeting the SLO / window_s, {_WIN}", mirrors=("decision", "goodput_rps")),
    _S(_P + "goodput_output_tokens_per_second", "gauge", "tokens/s", _RUN_LABELS,
       f"Σ output_tokens of requests meeting the SLO / window_s, {_WIN}", mirrors=("decision", "goodput_output_tok_per_s")),
    _S(_P + "slo_attainment_ratio", "gauge", "ratio", _RUN_LABELS,
       f"requests meeting the SLO / requests (every status), {_WIN}", mirrors=("decision", "attainment")),
    _S(_P + "usd_per_1m_goodput_tokens", "gauge", "USD per 1M tokens", _RUN_LABELS,
       "(G · P + energy $/h when the book excludes energy) / (goodput_output_tokens_per_second · 3600) · 1e6",
       mirrors=("decision", "usd_per_1m_goodput")),
    _S(_P + "usd_per_1m_output_tokens", "gauge", "USD per 1M tokens", _RUN_LABELS,
       "(G · P + energy $/h when the book excludes energy) / (output_tokens_per_second · 3600) · 1e6",
       mirrors=("decision", "usd_per_1m_output")),
    _S(_P + "joules_per_output_token", "gauge", "J/token", _RUN_LABELS,
       "Σ over GPUs of the NVML energy counter's increase / its span, over the window ÷ output_tokens_per_second "
       "(only where NVML is sampled)", mirrors=("point", "energy.j_per_output_token")),
    _S(_P + "gpu_power_watts", "gauge", "W", _RUN_LABELS, "Σ over GPUs of the latest power_w (NVML only)",
       mirrors=("point", "gpu.power_mean_w")),
    _S(_P + "point_goodput_requests_per_second", "gauge", "requests/s", _RUN_LABELS,
       f"measure-phase requests meeting the SLO / |W|, {_PT}", mirrors=("decision", "goodput_rps")),
    _S(_P + "point_goodput_output_tokens_per_second", "gauge", "tokens/s", _RUN_LABELS,
       f"Σ output_tokens of measure-phase requests meeting the SLO / |W|, {_PT}",
       mirrors=("decision", "goodput_output_tok_per_s")),
    _S(_P + "point_slo_attainment_ratio", "gauge", "ratio", _RUN_LABELS,
       "measure-phase requests meeting the SLO / measure-phase requests received", mirrors=("decision", "attainment")),
    _S(_P + "point_usd_per_1m_goodput_tokens", "gauge", "USD per 1M tokens", _RUN_LABELS,
       "G · P / (point_goodput_output_tokens_per_second · 3600) · 1e6: run.json's usd_per_1m_goodput once the point "
       "is over. The hardware price only: with a book that excludes energy (energy_included: false) run.json also adds "
       "the measured energy's $, and this figure is lower by that share",
       mirrors=("decision", "usd_per_1m_goodput")),
    _S(_P + "point_measure_elapsed_seconds", "gauge", "s", _RUN_LABELS, f"|W| so far, {_PT}",
       mirrors=("point", "measure_window_s")),
    _S(_P + "schedule_lag_seconds", "gauge", "s", _RUN_LABELS,
       f"p99 of sched_lag_ms / 1e3 of the requests sent, {_WIN}", mirrors=("point", "sched_lag_ms")),
    _S(_P + "loop_lag_seconds", "gauge", "s", _RUN_LABELS,
       "max over generator processes of the latest self-check's lag_max_ms / 1e3 (once a second)",
       mirrors=("point", "loadgen.loop_lag_max_ms")),
    _S(_P + "loadgen_saturated", "gauge", "flag", _RUN_LABELS,
       "1 when loop_lag > 50 ms or the generator's CPU > 60 % (latest self-check) or schedule_lag_seconds > 10 ms: "
       "the verdict's saturation flag, live", mirrors=("point", "loadgen.saturated")),
    _S(_P + "requests_dropped", "gauge", "flag", _RUN_LABELS,
       "1 when any request of the point was dropped (max_inflight reached): the verdict's dropped-requests flag, live",
       mirrors=("point", "requests.dropped")),
    # the engine's own /metrics: the passive monitor, and during a run from the lab's engine_metrics.jsonl
    _S(_P + "engine_output_tokens_per_second", "gauge", "tokens/s", _ENGINE_LABELS,
       "Σ increases of the engine's generation-tokens counter / Σ scrape intervals, over the window's "
       "intervals without a counter reset", "both", ("point", "engine_metrics.generation_tokens_total_increase")),
    _S(_P + "engine_requests_per_second", "gauge", "requests/s", _ENGINE_LABELS,
       "the same rate of the engine's finished-requests counter (vllm:request_success_total, sglang:num_requests_total)",
       "both"),
    _S(_P + "engine_usd_per_1m_output_tokens", "gauge", "USD per 1M tokens", _ENGINE_LABELS,
       "G · P / (engine_output_tokens_per_second · 3600) · 1e6: what the deployment costs per output token at the "
       "observed rate", "both", ("decision", "usd_per_1m_output")),
    _S(_P + "engine_idle_ratio", "gauge", "ratio", _ENGINE_LABELS,
       "Σ length of the window's scrape intervals whose both ends saw 0 running requests / Σ length of all", "both"),
    _S(_P + "engine_running_requests", "gauge", "requests", _ENGINE_LABELS,
       "running requests at the latest scrape (summed over label sets)", "both", ("point", "engine_metrics.running_mean")),
    _S(_P + "engine_waiting_requests", "gauge", "requests", _ENGINE_LABELS,
       "queued requests at the latest scrape", "both", ("point", "engine_metrics.waiting_mean")),
    _S(_P + "engine_kv_cache_usage_ratio", "gauge", "ratio", _ENGINE_LABELS,
       "KV-cache usage at the latest scrape, a fraction in [0, 1]", "both", ("point", "engine_metrics.kv_usage_frac_mean")),
    _S(_P + "engine_up", "gauge", "flag", _ENGINE_LABELS, "1 when the latest scrape succeeded and parsed", "both"),
    _S(_P + "engine_output_tokens_total", "counter", "tokens", _ENGINE_LABELS,
       "Σ increases of the generation-tokens counter since the monitor started, intervals with a reset left out", "both"),
    _S(_P + "engine_requests_total", "counter", "requests", _ENGINE_LABELS,
       "Σ increases of the finished-requests counter since the monitor started, intervals with a reset left out", "both"),
    _S(_P + "engine_counter_resets_total", "counter", "resets", _ENGINE_LABELS,
       "scrape intervals in which a counter went down (the engine restarted): gaps, not filled", "both"),
    _S(_P + "engine_gap_seconds_total", "counter", "s", _ENGINE_LABELS, "Σ length of those intervals", "both"),
    _S(_P + "engine_scrapes_total", "counter", "scrapes", (*_ENGINE_LABELS, "result"),
       "scrapes of the engine's /metrics, result ok | error (failed, refused or malformed)", "both"),
    _S(_P + "engine_malformed_scrapes_total", "counter", "scrapes", _ENGINE_LABELS,
       "scrapes whose text did not parse as the Prometheus exposition format", "passive"),
    _S(_P + "engine_ttft_seconds", "histogram", "s", _ENGINE_LABELS,
       "the engine's TTFT histogram (vllm:time_to_first_token_seconds, sglang:...) re-aggregated: Σ over label sets "
       "of each bucket's increase since the monitor started, with the engine's own buckets", "both"),
    _S(_P + "engine_tpot_seconds", "histogram", "s", _ENGINE_LABELS,
       "the engine's per-request TPOT histogram (vllm:request_time_per_output_token_seconds, ...), re-aggregated the "
       "same way", "both"),
)  # fmt: skip


def render_series_markdown(intro: str) -> str:
    """docs/monitoring.md: `intro` with its `<!-- series -->` line replaced by the table of SERIES."""
    rows = ["| series | type | unit | labels | formula | live counterpart of | where |", "|---|---|---|---|---|---|---|"]
    for s in SERIES:
        mirror = f"`{s.mirrors[1]}` ({s.mirrors[0]})" if s.mirrors else "—"
        rows.append(f"| `{s.name}` | {s.kind} | {_cell(s.unit)} | {', '.join(s.labels)} | {_cell(s.formula)} | "
                    f"{mirror} | {s.where} |")  # fmt: skip
    head, marker, tail = intro.partition("<!-- series -->\n")
    if not marker:
        raise ValueError("the monitoring doc template has no '<!-- series -->' line")
    return head + "\n".join(rows) + "\n" + tail
