"""The load generator's config schemas: what is sent (conf/workload) and when (conf/traffic).
Typed and inert; loadgen.workload builds the items and loadgen.spec the schedule from them.

experiments.schema composes them into the run config and registers them in Hydra's ConfigStore.

Side effects: none.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WorkloadConfig:
    """What is sent: which prompts, how long, how many output tokens, which endpoint.

    Built by loadgen.workload.build_items; lengths are counted with the model's tokenizer.
    """

    name: str = "synthetic_fixed"
    kind: str = "synthetic"  # synthetic | sharegpt | shared_prefix | paraphrase | sessions | fitted
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
    # kind=sessions (loadgen.sessions): conversations. Each of `num_prompts` planned sessions has
    # `turns` turns; a turn sends the whole history (system prompt, earlier user messages, the
    # engine's actual earlier replies) plus a new user message of prompt_* tokens and asks for
    # output_* tokens, then the session thinks for think_s (think_dist: fixed | exponential).
    turns: int = 4
    think_s: float = 1.0
    think_dist: str = "exponential"
    system_prompt_tokens: int = 0  # 0: no system prompt
    system_prompts: int = 1  # distinct system prompts, shared round robin across sessions
    # Start each session at a random turn 0..turns-1 with a synthetic earlier history already in
    # context, so a short window is not all first turns (docs/workloads.md: steady state).
    steady_state: bool = False
    session_shape: str = "chat"  # chat | agent (each step after the first appends a tool result)
    tool_result_tokens: int = 64  # agent: length of each appended tool result
    fan_out: int = 1  # agent: parallel requests per step sharing the context (the first reply is kept)
    # kind=fitted: num_prompts items drawn from the lengths (and Mooncake prefix reuse) of
    # traffic.trace_path, sent with gamma arrivals of the trace's fitted shape at traffic.points req/s;
    # trace rows outside prompt_min..prompt_max / output_min..output_max are left out of the fit.


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
    # The trace replayed by kind=trace, or fitted by workload=fitted (docs/traces.md).
    trace_path: str | None = None
    # Its format: auto (from its columns) | servelab (timestamp, input_tokens, output_tokens) |
    # mooncake (JSONL: timestamp ms, input_length, output_length, hash_ids) | azure (CSV: TIMESTAMP,
    # ContextTokens, GeneratedTokens) | burstgpt (CSV: Timestamp, Model, Request tokens, Response tokens, ...)
    trace_format: str = "auto"
    trace_block_tokens: int = 512  # mooncake: tokens per hash_ids block (512 in Mooncake's published traces)
    # burstgpt: keep only the rows of this Model (e.g. ChatGPT, GPT-4) / Log Type (Conversation log,
    # API log); null = every row
    trace_model: str | None = None
    trace_log_type: str | None = None
    # Distributed load: workers > 1 runs a Locust master plus this many local worker processes;
    # remote_workers more may connect from other machines to master_bind:master_port with
    # `python -m loadgen.locust_runner --role worker --master-host <this host> --master-port <port>
    # --token-env <worker_token_env> --target-url <engine URL> --out-dir <folder>` (docs/cluster.md).
    workers: int = 1
    remote_workers: int = 0
    master_bind: str = "127.0.0.1"  # set to this machine's address (or 0.0.0.0) for remote workers
    master_port: int = 0  # 0 = a free port (local workers only)
    # NAME of the environment variable holding the token master and workers share (remote workers
    # need it: `--token-env` of the same name on their side); null = a fresh one per point for
    # local workers. The value is never written (docs/security.md).
    worker_token_env: str | None = None
    request_timeout_s: float = 300.0  # total per request (headers, stream and all)
    # Caps on what an endpoint may send (docs/security.md): a request over one is recorded as an
    # error naming the cap, its connection is closed, and the load point goes on.
    max_sse_line_bytes: int = 1_048_576  # one SSE line (1 MiB); a longer one is never buffered whole
    max_error_body_bytes: int = 4096  # of a non-200 answer's body (its first 300 characters are recorded)
    max_output_text_chars: int = 4_194_304  # generated text kept per request (4 Mi characters)
    max_inflight: int = 1024  # open loop: requests beyond this are recorded as dropped, never delayed
    seed: int = 0
    drain_timeout_s: float = 120.0  # after the last send, wait this long for in-flight requests
    # Priority change for the load-generator process (os.nice; negative = higher, needs root).
    # Measured: no effect where the kernel groups processes by session (autogroup), because the
    # generator runs in its own session; placement.loadgen_priority=realtime is what helps.
    loadgen_nice: int = 0
