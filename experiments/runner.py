"""Runs one servelab run: preflight -> workload -> engine lease -> load points -> artifacts.

This module only sequences; each step lives in its own module:
  experiments.lease      launching (discover, preflight, plan, start, ready, samplers, teardown)
  experiments.measure    measuring one load point against a ready lease
  experiments.artifacts  the typed run record (run.json v2) and writing the artifacts
  engines.process        the one supervisor every child process starts through

A run is one engine launch followed by the load points of traffic.points, each recorded
separately. The artifacts are listed in results/README.md; identity fields in docs/identity.md.
Exit codes: 0 ok, 1 failed, 2 rejected by preflight, 130 cancelled (Ctrl-C / SIGTERM).

Side effects: creates the run folder and everything in it; starts and stops the engine, the
samplers and the load generator through the supervisor.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pandas as pd

from engines.process import EngineError, Supervisor, cancel_on_signal, shielded_teardown
from experiments import discover, hostbench, identity, preflight
from experiments.artifacts import EXIT, RunRecord, with_identity, write_artifacts, write_parquet
from experiments.config import to_plain
from experiments.lease import EngineLease, Rejected
from experiments.measure import PointInterrupted, PointPlan, PointResult, measure_point
from experiments.schema import RunConfig
from loadgen.dataset import DatasetError, load_sharegpt
from loadgen.tokenizer import load_token_counter
from loadgen.trace import TraceError, load_trace, trace_items
from loadgen.workload import WorkloadError, build_items

log = logging.getLogger("servelab")


class Workload:
    """The items of a run, built (and checked against the context) before any engine starts."""

    def __init__(self, cfg: RunConfig) -> None:
        self.counter = load_token_counter(cfg.model.tokenizer or cfg.model.path)
        w = cfg.workload
        self.trace_times_s: list[float] | None = None
        try:
            if cfg.traffic.kind == "trace":
                rows = load_trace(cfg.traffic.trace_path)  # preflight checked that it is set
                self.items = trace_items(self.counter, rows, w.seed)
                self.trace_times_s = [r.timestamp_s for r in rows]
            else:
                dataset = load_sharegpt(w.dataset_path) if w.kind == "sharegpt" else None
                self.items = build_items(w, self.counter, dataset)
        except (DatasetError, WorkloadError, TraceError) as e:
            raise Rejected([str(e)]) from None
        if too_long := preflight.context_problems(cfg, self.items):
            raise Rejected(too_long)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([it.to_dict() for it in self.items])


def run(cfg: RunConfig, run_dir: Path, overrides: list[str] | None = None) -> int:
    """Execute one run into `run_dir`; returns the exit code (see module doc)."""
    run_dir = Path(run_dir)
    work = run_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    record = RunRecord(
        run_id=run_dir.name, variant_id=identity.launch_key(cfg), experiment=cfg.experiment_name,
        config=to_plain(cfg), launch_fields=identity.launch_fields(cfg), overrides=list(overrides or []),
    )  # fmt: skip
    record.save(run_dir)
    results: list[PointResult] = []
    supervisor = Supervisor()
    lease = EngineLease(cfg, run_dir, work, supervisor)
    phase = "preflight"
    # The first SIGINT/SIGTERM cancels the run (KeyboardInterrupt); later ones only hurry the teardown.
    with cancel_on_signal(supervisor):
        try:
            record.provenance = discover.provenance()
            if problems := lease.prepare():
                raise Rejected(problems)
            record.placement = lease.placement.to_dict() if lease.placement is not None else None
            for w in lease.warnings:
                record.note("preflight", "warning", w)
            workload = Workload(cfg)
            if cfg.gpu.count == 0 and not lease.plan_is_external():
                # The CPU roofline needs the host's memory bandwidth: measured now, before the engine
                # competes for it, and recorded (never guessed).
                record.host_bandwidth = hostbench.copy_bandwidth()
            # What was sent, per prompt_idx: requests.parquet joins it on (run_id, prompt_idx).
            write_parquet(with_identity(workload.frame(), record.identity()), run_dir / "workload.parquet")
            record.artifacts["workload"] = "workload.parquet"

            phase = "engine_start"
            with lease:
                record.engine, record.telemetry, record.engine_metrics = lease.engine, lease.telemetry, lease.engine_metrics
                record.save(run_dir)
                phase = "measure"
                for i, value in enumerate(cfg.traffic.points):
                    try:
                        res = measure_point(
                            lease, PointPlan(i, float(value), cfg.repetition), items=workload.items,
                            counter=workload.counter, work=work, trace_times_s=workload.trace_times_s,
                        )  # fmt: skip
                    except PointInterrupted as e:
                        _add_point(record, results, e.result, lease)
                        raise
                    _add_point(record, results, res, lease)
                    record.save(run_dir)
                    if res.record.aborted:
                        raise lease.crash_error()
                phase = "teardown"
            record.status = "ok"
        except Rejected as e:
            for p in e.problems:
                log.error("preflight: %s", p)
            record.fail("rejected", "; ".join(e.problems), phase="preflight")
        except KeyboardInterrupt:
            log.warning("cancelled: tearing down and saving what was recorded")
            record.fail("cancelled", "interrupted by Ctrl-C or SIGTERM", phase=phase)
        except EngineError as e:
            log.error("%s\n--- engine log tail ---\n%s", e, e.log_tail)
            record.fail("failed", str(e), phase=phase, log_tail=e.log_tail, exit_code=e.exit_code)
        except Exception as e:  # noqa: BLE001 - any failure must still tear down and record
            log.error("run failed: %s: %s", type(e).__name__, e)
            log.debug("%s", traceback.format_exc())
            record.fail("failed", f"{type(e).__name__}: {e}", phase=phase, log_tail=traceback.format_exc(limit=8))
        finally:
            # A signal from here on never raises: it shortens the grace periods (the supervisor
            # "hurries", also when it came while the lease was closing) and marks the run cancelled.
            with shielded_teardown(supervisor):
                lease.close()
                supervisor.stop_all()
                if record.engine is None and lease.engine is not None:
                    record.engine = lease.engine  # the engine died or was cancelled while starting
                    record.telemetry, record.engine_metrics = lease.telemetry, lease.engine_metrics
                _cancel_if_signalled(record, supervisor)
                write_artifacts(record, results, run_dir, work, cfg)
                if _cancel_if_signalled(record, supervisor):
                    record.save(run_dir)
    return EXIT.get(record.status, 1)


def _cancel_if_signalled(record: RunRecord, supervisor: Supervisor) -> bool:
    """A signal during teardown cancels a run that would otherwise have ended ok."""
    if supervisor.hurrying and record.status in ("running", "ok"):
        record.fail("cancelled", "interrupted by Ctrl-C or SIGTERM during teardown", phase="teardown")
        return True
    return False


def _add_point(record: RunRecord, results: list[PointResult], res: PointResult, lease: EngineLease) -> None:
    """Keep a measured point and note what happened around it (problems, dead samplers)."""
    results.append(res)
    record.put_point(res.record)
    for p in res.record.problems:
        record.note("loadgen", "problem", f"load point {res.index}: {p}", res.record.t0_ns, res.record.t_end_ns)
    for name in lease.dead_samplers():
        record.note("telemetry", "sampler_died",
                    f"{name} sampler died during the run (see {name}.log); samples after that are missing")  # fmt: skip


__all__ = ["EXIT", "run"]
