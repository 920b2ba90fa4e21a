"""How the servelab sweeper (hydra_plugins/servelab_sweeper) plans jobs around engine launches. Pure.

Engines take minutes to start, so a sweep must not launch one variant twice. A Hydra job is one
variant (one launch, experiments.runner.run_variant); what a launch measures lives inside the
job: ``traffic.points`` (the loads) and ``repetitions``. This sweeper turns the sweeps a user
naturally writes into that shape before Hydra's basic sweeper makes the cartesian product:

- ``traffic.points=[1],[2],[4]`` (a sweep over single-point lists) becomes one job per variant
  with ``traffic.points=[1,2,4]``;
- ``repetition=0,1,2`` becomes ``repetition=0 repetitions=3`` (the runner interleaves them);
- the remaining swept keys are ordered launch-level first (engine, quant, model, gpu, placement
  and their fields), so jobs of one variant are adjacent; a sweep over other point-level settings
  (e.g. ``traffic.duration_s=10,30``) still launches once per job, and the sweeper says so.

The sweeper itself must live in the hydra_plugins package (Hydra only instantiates plugins from
there); everything else is BasicSweeper's (batches, multirun.yaml, launchers such as submitit).
:func:`sweep_position` tells a running job where it stands in its sweep (index, count), for the
progress display.

Side effects: none (the sweeper logs the notes); :func:`sweep_position` reads the sweep's
multirun.yaml.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.types import Override

log = logging.getLogger("servelab")

# Keys whose values change what a launch measures, not the launched server (analysis.records.identity).
POINT_LEVEL_PREFIXES = ("traffic", "workload", "slo", "pricing", "telemetry", "search", "repetition",
                        "repetitions", "resume", "retry_failed", "experiment_name", "results_dir")  # fmt: skip


def is_point_level(key: str) -> bool:
    head = key.lstrip("+~").split(".", 1)[0].split("@", 1)[0]
    return head in POINT_LEVEL_PREFIXES


def _merge_points(values: list[Any]) -> str | None:
    """`[1],[2],[4]` -> "[1,2,4]" when every swept value is a list (the loads of one launch)."""
    if not values or not all(isinstance(v, list) for v in values):
        return None
    merged: list[Any] = []
    for v in values:
        merged.extend(x for x in v if x not in merged)
    return "[" + ",".join(str(x) for x in merged) + "]"


def plan_overrides(overrides: list[Override]) -> tuple[list[str], list[str]]:
    """(overrides for BasicSweeper, notes): merged point/repetition sweeps, launch-level keys first."""
    out_launch: list[str] = []
    out_point: list[str] = []
    notes: list[str] = []
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            (out_point if is_point_level(key) else out_launch).append(f"{key}={o.get_value_element_as_str()}")
            continue
        if o.is_discrete_sweep():
            values = list(o.sweep_iterator())
            strings = list(o.sweep_string_iterator())
            if key == "traffic.points" and (merged := _merge_points(values)) is not None:
                out_point.append(f"traffic.points={merged}")
                notes.append(f"traffic.points={','.join(strings)} measured as traffic.points={merged} in one launch per variant")
                continue
            if key == "repetition" and all(isinstance(v, int) for v in values):
                reps = sorted(set(values))
                if reps == list(range(reps[0], reps[0] + len(reps))):
                    out_point += [f"repetition={reps[0]}", f"repetitions={len(reps)}"]
                    notes.append(f"repetition={','.join(strings)} measured as repetitions={len(reps)} in one launch per variant")
                    continue
            if is_point_level(key):
                notes.append(f"{key} is swept across jobs: each of its values launches the engine again "
                             "(sweep loads with traffic.points and repeats with repetitions to launch once)")  # fmt: skip
        text = f"{key}={','.join(o.sweep_string_iterator())}" if o.is_discrete_sweep() else o.input_line or ""
        (out_point if is_point_level(key) else out_launch).append(text)
    return out_launch + out_point, notes


# -- the position of this job in a Hydra sweep ---------------------------------------------------------
@dataclass(frozen=True)
class SweepPosition:
    job_index: int  # hydra.job.num, 0-based
    job_count: (
        int | None
    )  # None when it cannot be worked out (another sweeper, glob() sweeps, no multirun.yaml)
    sequential: bool  # the jobs run one after another (basic launcher, or max_batch_size=1)


def sweep_position(hc: Any) -> SweepPosition | None:
    """Where the job whose Hydra config is `hc` (HydraConfig.get()) stands in its sweep; None outside one.

    The count is worked out the way Hydra's BasicSweeper does (the product of the swept values of
    hydra.sweeper.params and the command-line overrides), from the multirun.yaml the sweeper saved
    in the sweep folder."""
    try:
        mode = getattr(hc.mode, "name", hc.mode)
        if str(mode) != "MULTIRUN":
            return None
        # One after another: the basic launcher, or any launcher handed one job at a time
        # (hydra.sweeper.max_batch_size=1, as docs/cluster.md asks for submitit's local executor).
        sweeper = hc.get("sweeper") or {}
        sequential = str(hc.launcher.get("_target_", "")).endswith("BasicLauncher") or (
            sweeper.get("max_batch_size") == 1
        )
        return SweepPosition(
            int(hc.job.num), _sweep_size(Path(str(hc.sweep.dir)) / "multirun.yaml"), sequential
        )
    except Exception as e:  # noqa: BLE001 - best effort: progress without a position is still progress
        log.debug("sweep position unknown: %s", e)
        return None


def hydra_sweep_position() -> SweepPosition | None:
    """sweep_position() of the running Hydra job, or None (no Hydra, not a multirun)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return sweep_position(HydraConfig.get()) if HydraConfig.initialized() else None
    except Exception:  # noqa: BLE001 - see sweep_position
        return None


def _sweep_size(multirun_yaml: Path) -> int | None:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    if not multirun_yaml.is_file():
        return None
    cfg = OmegaConf.load(multirun_yaml)
    target = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
    if not target.endswith(("BasicSweeper", "ServelabSweeper")):
        return None
    if target.endswith("ServelabSweeper") and OmegaConf.select(cfg, "tune.params", default=None):
        return int(OmegaConf.select(cfg, "tune.n_trials", default=0) or 0) or None  # a search: a job per trial, at most
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(
        OmegaConf.select(cfg, "hydra.overrides.task", default=[])
    )
    overrides = OverridesParser.create().parse_overrides(args)
    if target.endswith("ServelabSweeper"):  # it folds point sweeps into one job per variant first
        overrides = OverridesParser.create().parse_overrides(plan_overrides(overrides)[0])
    return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
