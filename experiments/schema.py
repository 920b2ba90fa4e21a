"""The run config: every group's schema composed into :class:`RunConfig`, registered once in
Hydra's ConfigStore.

Each layer keeps its own groups' schemas beside it: engine, quant, model, gpu and placement in
engines.schema; workload and traffic in loadgen.schema; slo, pricing, capacity and quality (and
the decision's own settings) in analysis.schema; telemetry here, search with its planner
(experiments.sweeps.search) and tune with its study (experiments.sweeps.tune). The YAML files under `conf/<group>/` hold the values and start with
`defaults: [_<group>_schema, _self_]`. Building or validating these objects touches no process,
network, file or GPU; compatibility checks live in :mod:`experiments.preflight`.

Side effects: :func:`register_configs` writes into Hydra's global ConfigStore (nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.schema import (
    PRICE_TIERS,
    CapacityConfig,
    GpuPrice,
    PricingConfig,
    QualityConfig,
    SloConfig,
    register_decide_configs,
)
from engines.schema import (
    EngineConfig,
    FigureSource,
    GpuConfig,
    ModelConfig,
    PlacementConfig,
    QuantConfig,
    SpeculativeConfig,
)
from loadgen.schema import ShapeConfig, TrafficConfig, WorkloadConfig

# The composed groups, importable from here as the run config's parts.
__all__ = [
    "GROUP_SCHEMAS", "PRICE_TIERS", "CapacityConfig", "EngineConfig", "FigureSource", "GpuConfig", "GpuPrice",
    "ModelConfig", "MonitorConfig", "PlacementConfig", "PricingConfig", "QualityConfig", "QuantConfig", "RunConfig", "ShapeConfig",
    "SloConfig", "SpeculativeConfig", "TelemetryConfig", "TrafficConfig", "WorkloadConfig", "register_configs",
]  # fmt: skip

# Group fields on RunConfig are typed Any: Hydra raises "Merge error: X is not a subclass
# of Y" when switching between sibling dataclass options of one group (hydra#1722). Each
# group node is still validated against its own schema by its YAML's defaults list, and
# experiments.config.to_run_config re-checks the concrete types after to_object().


@dataclass
class TelemetryConfig:
    """Which samplers run beside the load, and how often."""

    name: str = "auto"
    sampler: str = "auto"  # auto | cpu | nvml | off  (auto: nvml when a GPU is planned, else cpu)
    interval_s: float = 0.2
    scrape_engine_metrics: bool = True  # the engine's Prometheus /metrics, raw samples + known series
    metrics_interval_s: float = 1.0
    # one /metrics answer may be at most this long (16 MiB), read within max(metrics_interval_s, 1 s);
    # a longer or slower one is a failed scrape (recorded), not a stalled sampler
    max_scrape_bytes: int = 16 * 1024 * 1024


@dataclass
class MonitorConfig:
    """Live Prometheus metrics of a run (experiments.monitor, docs/monitoring.md); off unless port is set."""

    port: int | None = None  # monitor.port=9400 serves /metrics from the lab process while the run goes
    host: str = "127.0.0.1"  # where it listens (0.0.0.0: every interface)
    window_s: float = 10.0  # the sliding window of the rates, goodput, attainment and $/1M
    interval_s: float = 0.5  # how often the lab reads the generator's records (the sink flushes every 0.5 s)
    linger_s: float = 3.0  # keep serving this long after the last point, so a scraper sees the final figures
    scrape_interval_s: float = 1.0  # in the written prometheus.yml; the passive monitor's scrape period
    duration_s: float | None = None  # passive monitor only: stop after this long (null = until Ctrl-C)


@dataclass
class EconomyConfig:
    """Fewer engine-minutes for the same decision (docs/sweeps.md, "Early stop and halving"); off by default."""

    early_stop: bool = False  # stop an open-loop point whose queue clearly grows (analysis.overload): infeasible
    early_stop_alpha: float = 0.01  # the growth test's level per point, all its looks together
    early_stop_check_s: float = 0.5  # how often a running point's records are tested
    halving: bool = False  # stop a variant's knee search once it certainly costs more than a finished variant
    halving_slack: float = 0.1  # the variant's own measured throughput is raised by this share for its optimistic cost


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
    # Re-running the same command skips points already measured in results/ (experiments.sweeps.resume).
    # false: measure every point again, as new repetitions after the recorded ones.
    resume: bool = True
    # A variant whose latest launch failed is skipped (with its reason) unless this is true.
    retry_failed: bool = False
    # report.html + summary.csv + exports/ at the end of each run and sweep (python -m analysis.report
    # renders them later from the files alike); false saves ~2 s a run in long sweeps.
    report: bool = True
    # Which loads are measured: conf/search/ (grid = traffic.points; knee = adaptive, experiments.sweeps.search)
    search: Any = None
    # conf/quality/: agreement with the unquantized baseline after the load points (off by default)
    quality: Any = None
    # live Prometheus metrics while the run goes (monitor.port=<port>; off by default)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    # conf/tune/: a search over launch settings, one trial per launch (experiments.sweeps.tune; none = off)
    tune: Any = None
    # early stop of overloaded points and halving of variants that cannot win (off by default)
    economy: EconomyConfig = field(default_factory=EconomyConfig)


from experiments.sweeps.search import SearchConfig  # noqa: E402 - the search group's schema lives with the planner
from experiments.sweeps.tune import TuneConfig  # noqa: E402 - and the tune group's with the study

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
    "tune": TuneConfig,
}


def register_configs() -> None:
    """Register every schema in Hydra's ConfigStore as `_<group>_schema` (underscore: not a user choice)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    # ${servelab_variant_dir:} names a variant's results folder from its identity (hydra.run.dir,
    # hydra.sweep.subdir), so re-running a command finds what it measured before.
    OmegaConf.register_new_resolver("servelab_variant_dir", variant_dir_resolver, replace=True)
    # ${servelab_folder:${experiment_name}} refuses a name that would leave results_dir (`../x`)
    # before Hydra makes the run's folder (hydra.run.dir, hydra.sweep.dir): preflight comes too late.
    OmegaConf.register_new_resolver("servelab_folder", folder_name_resolver, replace=True)
    # ${servelab_cpu_or_gpu:${gpu.count},<on a CPU plan>,<on a GPU plan>}: presets whose variants
    # depend on the hardware planned (conf/experiment/quant_shootout.yaml)
    OmegaConf.register_new_resolver("servelab_cpu_or_gpu", lambda count, cpu, gpu: cpu if int(count) == 0 else gpu,
                                    replace=True)  # fmt: skip
    # The decision's groups (conf/decide.yaml: slo, pricing, capacity, gpu, quality, whatif) and its own schema
    register_decide_configs()
    cs = ConfigStore.instance()
    cs.store(name="_run_schema", node=RunConfig)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=f"_{group}_schema", node=schema)


class FolderNameError(ValueError):
    """experiment_name is not one folder name; its message is the preflight line."""


def folder_name_resolver(name: Any) -> str:
    from analysis.records.layout import experiment_name_problem

    if (line := experiment_name_problem(name if isinstance(name, str) else str(name))) is not None:
        raise FolderNameError(line)
    return str(name)


def variant_dir_resolver(*, _root_: Any) -> str:
    """``<engine>_<quant>_<variant_id>`` of the composed config (analysis.records.layout.variant_dir_name),
    with variant_id computed exactly as analysis.records.identity.launch_key does on the typed config."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from analysis.records.identity import launch_key
    from analysis.records.layout import variant_dir_name

    parts = {k: OmegaConf.to_object(_root_[k]) for k in ("engine", "model", "quant", "gpu", "placement")}
    ns = SimpleNamespace(**parts)
    return variant_dir_name(str(ns.engine.name), str(ns.quant.name), launch_key(ns))
