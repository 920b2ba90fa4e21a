"""Runs one servelab run: preflight -> workload -> engine lease -> load points -> artifacts.

This module only sequences; each step lives in its own module:
  experiments.lease      launching (discover, preflight, plan, start, ready, samplers, teardown)
  experiments.measure    measuring one load point against a ready lease
  experiments.artifacts  writing the artifacts (the run record itself: analysis.records.run)
  experiments.postrun    each point's decision and the run report, after the artifacts
  engines.process        the one supervisor every child process starts through

A run is one engine launch followed by the load points of traffic.points, each recorded
separately. The artifacts are listed in results/README.md; identity fields in docs/identity.md.
Exit codes: 0 ok, 1 failed, 2 rejected by preflight, 130 cancelled (Ctrl-C / SIGTERM).

Side effects: creates the run folder and everything in it; starts and stops the engine, the
samplers and the load generator through the supervisor.
"""

from __future__ import annotations

import logging
import os
import shutil
import traceback
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.records import identity
from analysis.records.atomic import write_json_atomic
from analysis.records.layout import LAUNCH_PREFIX, boot_id
from analysis.records.plain import to_plain
from analysis.records.run import EXIT, RunRecord, read_run_json
from engines.process import EngineError, Supervisor, cancel_on_signal, shielded_teardown
from experiments import discover, hostbench, preflight, resume
from experiments.artifacts import with_identity, write_artifacts, write_parquet, write_point_requests
from experiments.lease import EngineLease, Rejected
from experiments.measure import PointInterrupted, PointPlan, PointResult, measure_point, slo_check
from experiments.postrun import after_artifacts
from experiments.progress import NullProgress
from experiments.quality import QUALITY_ROWS, is_baseline, quality_done, run_quality
from experiments.schedule import Schedule
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


def run_variant(cfg: RunConfig, variant_dir: Path, overrides: list[str] | None = None, *,
                progress: Any = None) -> int:  # fmt: skip
    """Measure what is missing of one variant into ``variant_dir/launch-<n>/`` (experiments.resume):
    points done by earlier launches are skipped, a variant whose latest launch failed is skipped
    unless ``retry_failed``, and nothing is launched when nothing is left. Writes variant.json (the
    sweep's status table reads it). Returns the exit code (module doc)."""
    variant_dir = Path(variant_dir)
    vid = identity.launch_key(cfg)
    try:
        with resume.variant_lock(variant_dir):
            history = resume.scan(variant_dir, vid)
            for line in resume.recover_stale(history):
                log.warning("resume: %s", line)
            for line in history.skipped_points:
                log.info("resume: %s", line)
            base = {"variant_id": vid, "engine": cfg.engine.name, "quant": cfg.quant.name, "model": cfg.model.name,
                    "gpu": f"{cfg.gpu.name} x{cfg.gpu.count}", "experiment": cfg.experiment_name,
                    "launches": len(history.launches)}  # fmt: skip
            if (why := history.failed_reason()) is not None and not cfg.retry_failed:
                log.error("variant %s failed in %s: %s; skipped (retry_failed=true measures it again)",
                          variant_dir.name, history.latest.path.name, why)  # fmt: skip
                _variant_status(variant_dir, base, "failed", f"earlier launch failed: {why}", history, None)
                return 1
            schedule = Schedule(cfg, history)
            gate = cfg.quality is not None and cfg.quality.enabled
            quality_pending = gate and not quality_done(variant_dir, cfg)
            if quality_pending and not is_baseline(cfg) and cfg.quality.launch_baseline:
                # this variant's own preflight first: one that will be refused launches no baseline
                # (its run below is refused with these problems in one line, as any other)
                if problems := EngineLease(cfg, variant_dir, variant_dir, Supervisor(guardian=False)).prepare():
                    log.info("quality: no baseline launched: this variant is refused (%s)", "; ".join(problems))
                else:
                    _ensure_baseline(cfg, variant_dir, overrides)
            if not schedule.pending() and not quality_pending:
                log.info("variant %s: all %d planned points were measured before (%s); nothing to launch "
                         "(resume=false measures them again as new repetitions)",
                         variant_dir.name, len(schedule.skipped), variant_dir)  # fmt: skip
                _variant_status(variant_dir, base, "ok", "complete: nothing left to measure", history, schedule)
                return 0
            if schedule.skipped:
                log.info("resume: %d point(s) measured by earlier launches are skipped", len(schedule.skipped))
            n = history.next_launch
            run_dir = variant_dir / f"{LAUNCH_PREFIX}{n}"
            code = run(cfg, run_dir, overrides, run_id=f"{variant_dir.name}-{n}", schedule=schedule, launch=n,
                       progress=progress)  # fmt: skip
            # The run's record is final; a signal now only ends the bookkeeping early (exit 130).
            try:
                if (variant_dir / ".hydra").is_dir():  # the config as composed for this launch (Hydra rewrites its own)
                    shutil.copytree(variant_dir / ".hydra", run_dir / ".hydra", dirs_exist_ok=True)
                s = read_run_json(run_dir / "run.json")
                status = {"ok": "ok", "rejected": "refused"}.get(s["status"], s["status"])
                history = resume.scan(variant_dir, vid)
                _variant_status(variant_dir, base | {"launches": len(history.launches)}, status,
                                (s.get("failure") or {}).get("reason"), history, schedule)  # fmt: skip
            except KeyboardInterrupt:
                log.warning("interrupted while recording the variant's status; the run record is complete")
                return 130
            return code
    except resume.VariantBusy as e:
        log.error("%s", e)
        return 1


def _ensure_baseline(cfg: RunConfig, variant_dir: Path, overrides: list[str] | None) -> None:
    """quality=gate on a quantized variant whose experiment has no baseline quality rows: run the
    baseline (quant=<baseline_quant>, same everything else) first, as its own variant of the
    experiment, in a child `run.py` (its points too, so the speed-up has a measured reference)."""
    import subprocess
    import sys

    from experiments.quality import find_reference, prompt_items, sets_key
    from loadgen.quality_sets import QualitySetError

    q = cfg.quality
    try:
        key = sets_key(q, prompt_items(q))
    except QualitySetError:
        return  # the variant's own preflight refuses the bad prompt set in one line

    if find_reference(variant_dir.parent, cfg, key) is not None:
        return
    keep = [o for o in (overrides or []) if o.split("=", 1)[0].lstrip("+~") not in ("quant", "hydra.mode")]
    # the entry script that started this lab (run.py, or a wrapper that registers more engines)
    entry = next((a for a in sys.orig_argv[1:] if a.endswith(".py")), str(Path(__file__).resolve().parent.parent / "run.py"))
    argv = [sys.executable, entry, *keep, f"quant={q.baseline_quant}",
            f"experiment_name={cfg.experiment_name}", f"results_dir={cfg.results_dir}", "hydra.mode=RUN"]  # fmt: skip
    log.info("quality: no quant=%s baseline rows in %s; launching the baseline first: %s", q.baseline_quant,
             variant_dir.parent, " ".join(argv[1:]))  # fmt: skip
    rc = subprocess.run(argv, check=False).returncode
    if rc == 130:
        raise KeyboardInterrupt
    if rc != 0:
        log.error("quality: the baseline launch ended with exit %d; this variant's quality run will say no_baseline", rc)


def _variant_status(variant_dir: Path, base: dict[str, Any], status: str, reason: str | None,
                    history: resume.History, schedule: Schedule | None) -> None:  # fmt: skip
    d = {**base, "status": status, "reason": reason, "points_done": len(history.done),
         "schedule": schedule.state() if schedule is not None else None,
         "launch_dirs": [la.path.name for la in history.launches]}  # fmt: skip
    write_json_atomic(variant_dir / "variant.json", d)


def run(cfg: RunConfig, run_dir: Path, overrides: list[str] | None = None, *, run_id: str | None = None,
        schedule: Schedule | None = None, launch: int | None = None, progress: Any = None) -> int:  # fmt: skip
    """Execute one launch into `run_dir`: the points of `schedule` (default: every point of the
    grid, nothing skipped); returns the exit code (see module doc)."""
    run_dir = Path(run_dir)
    work = run_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    schedule = schedule if schedule is not None else Schedule(cfg)
    record = RunRecord(
        run_id=run_id or run_dir.name, variant_id=identity.launch_key(cfg), experiment=cfg.experiment_name,
        config=to_plain(cfg), launch_fields=identity.launch_fields(cfg), overrides=list(overrides or []),
        lab={"pid": os.getpid(), "boot_id": boot_id()}, launch=launch,
    )  # fmt: skip
    record.resume = schedule.state()
    record.save(run_dir)
    results: list[PointResult] = []
    supervisor = Supervisor()
    progress = progress if progress is not None else NullProgress()
    lease = EngineLease(cfg, run_dir, work, supervisor, progress=progress)
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
            t = cfg.traffic
            progress.job(f"{cfg.engine.name}/{cfg.quant.name}", schedule.planned_count(), warmup_s=t.warmup_s,
                         duration_s=t.duration_s, cooldown_s=t.cooldown_s, repetition=schedule.reps[0],
                         repetitions=len(schedule.reps))  # fmt: skip
            with lease:
                record.engine, record.telemetry, record.engine_metrics = lease.engine, lease.telemetry, lease.engine_metrics
                record.save(run_dir)
                phase = "measure"
                i = 0
                while (nxt := schedule.next()) is not None:
                    value, rep = nxt
                    progress.point_started(i, max(schedule.planned_count(), i + 1), f"{t.kind} {value:g}",
                                           repetition=rep - schedule.reps[0], repetitions=len(schedule.reps))  # fmt: skip
                    try:
                        res = measure_point(
                            lease, PointPlan(i, value, rep), items=workload.items,
                            counter=workload.counter, work=work, trace_times_s=workload.trace_times_s,
                        )  # fmt: skip
                    except PointInterrupted as e:
                        _add_point(record, results, e.result, lease, run_dir)
                        raise
                    progress.point_finished(None)  # measure_point logged the summary line
                    res.record.search = slo_check(res, cfg.slo)
                    _add_point(record, results, res, lease, run_dir)
                    schedule.observe(value, rep, res.record.search["feasible"], "; ".join(res.record.search["reasons"]))
                    record.resume = schedule.state()
                    record.save(run_dir)
                    if res.record.aborted:
                        raise lease.crash_error()
                    i += 1
                if cfg.quality is not None and cfg.quality.enabled:
                    phase = "quality"
                    log.info("quality: the gate's prompt sets against %s/%s", cfg.engine.name, cfg.quant.name)
                    record.quality = run_quality(lease, cfg, run_dir, record, experiment_dir=run_dir.parent.parent,
                                                 progress=progress)  # fmt: skip
                    if (run_dir / QUALITY_ROWS).is_file():
                        record.artifacts["quality"] = QUALITY_ROWS
                    record.save(run_dir)
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
                record.resume = schedule.state()
                if (written := write_artifacts(record, results, run_dir, work, cfg)) is not None:
                    after_artifacts(record, run_dir, work, cfg, written)
                if _cancel_if_signalled(record, supervisor):
                    record.save(run_dir)
    return EXIT.get(record.status, 1)


def _cancel_if_signalled(record: RunRecord, supervisor: Supervisor) -> bool:
    """A signal during teardown cancels a run that would otherwise have ended ok."""
    if supervisor.hurrying and record.status in ("running", "ok"):
        record.fail("cancelled", "interrupted by Ctrl-C or SIGTERM during teardown", phase="teardown")
        return True
    return False


def _add_point(record: RunRecord, results: list[PointResult], res: PointResult, lease: EngineLease,
               run_dir: Path) -> None:  # fmt: skip
    """Keep a measured point (its rows durable on disk before run.json lists it) and note what
    happened around it (problems, dead samplers)."""
    results.append(res)
    record.put_point(res.record)
    try:
        write_point_requests(record, res, run_dir)
    except Exception as e:  # noqa: BLE001 - the rows are still in memory and in work/; say so
        record.note("artifacts", "point_write_failed", f"load point {res.index}: rows not written yet: {e}")
    for p in res.record.problems:
        record.note("loadgen", "problem", f"load point {res.index}: {p}", res.record.t0_ns, res.record.t_end_ns)
    for name in lease.dead_samplers():
        record.note("telemetry", "sampler_died",
                    f"{name} sampler died during the run (see {name}.log); samples after that are missing")  # fmt: skip


__all__ = ["EXIT", "run", "run_variant"]
