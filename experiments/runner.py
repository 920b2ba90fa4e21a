"""Runs one servelab run: preflight -> workload -> engine lease -> load points -> artifacts.

This module only sequences; each step lives in its own module:
  experiments.lease      launching (discover, preflight, plan, start, ready, samplers, teardown)
  experiments.measure    what comes before the engine (preflight, workload) and measuring one load point
  experiments.quality    the quality step (and the baseline it needs first)
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
import shutil
import traceback
from pathlib import Path
from typing import Any

from analysis.records import identity
from analysis.records.layout import LAUNCH_PREFIX, lab_stamp
from analysis.records.run import EXIT, RunRecord, read_run_json
from engines.auth import redact
from engines.process import EngineError, Supervisor, cancel_on_signal, shielded_teardown
from experiments import preflight, quality
from experiments.artifacts import write_artifacts
from experiments.lease import EngineLease, Rejected
from experiments.measure import (
    PointInterrupted,
    PointPlan,
    PointResult,
    keep_point,
    measure_point,
    prepare,
    slo_check,
)
from experiments.monitor import for_run as monitor_for_run
from experiments.postrun import after_artifacts
from experiments.progress import NullProgress
from experiments.schema import RunConfig
from experiments.secrets import redact_hydra_dir, redact_overrides
from experiments.sweeps import resume
from experiments.sweeps.callback import write_variant
from experiments.sweeps.halving import HalvingWatch
from experiments.sweeps.schedule import Schedule

log = logging.getLogger("servelab")


def run_variant(cfg: RunConfig, variant_dir: Path, overrides: list[str] | None = None, *,
                progress: Any = None) -> int:  # fmt: skip
    """Measure what is missing of one variant into ``variant_dir/launch-<n>/`` (experiments.sweeps.resume):
    points done by earlier launches are skipped, a variant whose latest launch failed is skipped
    unless ``retry_failed``, and nothing is launched when nothing is left. Writes variant.json (the
    sweep's status table reads it). Returns the exit code (module doc)."""
    variant_dir = Path(variant_dir)
    vid = identity.launch_key(cfg)
    redact_hydra_dir(variant_dir / ".hydra", cfg.engine.env)  # Hydra's copies of the config: no engine.env value
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
                write_variant(variant_dir, base, "failed", f"earlier launch failed: {why}", history, None)
                return 1
            if problems := preflight.plan_problems(cfg):
                for p in problems:
                    log.error("preflight: %s", p)
                write_variant(variant_dir, base, "refused", "; ".join(problems), history, None)
                return 2
            schedule = Schedule(cfg, history)
            halving = HalvingWatch(cfg, variant_dir, schedule.planner)
            if (cfg.resume and schedule.halted is None and schedule.pending()
                    and (why := halving.replay(history.done.values()))):  # fmt: skip
                # what earlier launches measured already shows it cannot win: no launch to search on;
                # the latest launch's run.json records it, so the decision excludes it (cannot_win)
                log.warning("halving: %s; its knee search stops before another launch", why)
                where = resume.record_halt(history, halving.state() | {"reason": why})
                schedule.halt(why, halving.state() | {"launch": where.parent.name if where else "no launch"})
            quality_pending = quality.pending(cfg, variant_dir)
            if quality_pending:  # quality=gate: the baseline first when the experiment has none
                quality.baseline_first(cfg, variant_dir, overrides, launch=run_variant, progress=progress)
            if not schedule.pending() and not quality_pending and schedule.halted is not None:
                why = f"its knee search was halved in {schedule.halted.get('launch')}: {schedule.halted['reason']}"
                log.info("variant %s: %s; nothing to launch (economy.halving=false searches on)", variant_dir.name, why)
                write_variant(variant_dir, base, "ok", f"complete: {why}", history, schedule)
                return 0
            if not schedule.pending() and not quality_pending:
                log.info("variant %s: all %d planned points were measured before (%s); nothing to launch "
                         "(resume=false measures them again as new repetitions)",
                         variant_dir.name, len(schedule.skipped), variant_dir)  # fmt: skip
                write_variant(variant_dir, base, "ok", "complete: nothing left to measure", history, schedule)
                return 0
            if schedule.skipped:
                log.info("resume: %d point(s) measured by earlier launches are skipped", len(schedule.skipped))
            n = history.next_launch
            run_dir = variant_dir / f"{LAUNCH_PREFIX}{n}"
            code = run(cfg, run_dir, overrides, run_id=f"{variant_dir.name}-{n}", schedule=schedule, launch=n,
                       progress=progress, halving=halving)  # fmt: skip
            # The run's record is final; a signal now only ends the bookkeeping early (exit 130).
            try:
                if (variant_dir / ".hydra").is_dir():  # the config as composed for this launch (Hydra rewrites its own)
                    shutil.copytree(variant_dir / ".hydra", run_dir / ".hydra", dirs_exist_ok=True)
                s = read_run_json(run_dir / "run.json")
                status = {"ok": "ok", "rejected": "refused"}.get(s["status"], s["status"])
                history = resume.scan(variant_dir, vid)
                write_variant(variant_dir, base | {"launches": len(history.launches)}, status,
                                (s.get("failure") or {}).get("reason"), history, schedule)  # fmt: skip
            except KeyboardInterrupt:
                log.warning("interrupted while recording the variant's status; the run record is complete")
                return 130
            return code
    except resume.VariantBusy as e:
        log.error("%s", e)
        return 1


def run(cfg: RunConfig, run_dir: Path, overrides: list[str] | None = None, *, run_id: str | None = None,
        schedule: Schedule | None = None, launch: int | None = None, progress: Any = None,
        halving: HalvingWatch | None = None) -> int:  # fmt: skip
    """Execute one launch into `run_dir`: the points of `schedule` (default: every point of the
    grid, nothing skipped); returns the exit code (see module doc)."""
    run_dir = Path(run_dir)
    work = run_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    schedule = schedule if schedule is not None else Schedule(cfg)
    record = RunRecord(
        run_id=run_id or run_dir.name, variant_id=identity.launch_key(cfg), experiment=cfg.experiment_name,
        config=identity.redacted_config(cfg), launch_fields=identity.launch_fields(cfg),
        overrides=redact_overrides(overrides or []),
        lab=lab_stamp(), launch=launch,
    )  # fmt: skip
    record.resume = schedule.state()
    record.save(run_dir)
    # economy.halving: the variants measured before this one (run_dir's variant folder's siblings)
    if halving is None:  # run_variant passes the one that replayed the earlier launches' points
        halving = HalvingWatch(cfg, run_dir.parent, schedule.planner)
    halving.prepare()  # the rivals are read before the engine starts
    results: list[PointResult] = []
    supervisor = Supervisor()
    progress = progress if progress is not None else NullProgress()
    lease = EngineLease(cfg, run_dir, work, supervisor, progress=progress)
    monitor = monitor_for_run(cfg, record, run_dir, work)  # live metrics when monitor.port is set
    phase = "preflight"
    # The first SIGINT/SIGTERM cancels the run (KeyboardInterrupt); later ones only hurry the teardown.
    with cancel_on_signal(supervisor):
        try:
            monitor.start()  # a monitor.port that cannot be served is refused here, before the engine
            workload = prepare(cfg, lease, record, run_dir)  # preflight, workload, host bandwidth
            phase = "engine_start"
            t = cfg.traffic
            progress.job(f"{cfg.engine.name}/{cfg.quant.name}", schedule.planned_count(), warmup_s=t.warmup_s,
                         duration_s=t.duration_s, cooldown_s=t.cooldown_s, repetition=schedule.reps[0],
                         repetitions=len(schedule.reps))  # fmt: skip
            with lease:
                record.engine, record.telemetry, record.engine_metrics = lease.engine, lease.telemetry, lease.engine_metrics
                record.save(run_dir)
                monitor.engine_ready(lease.plan)  # prometheus.yml next to the results
                phase = "measure"
                i = 0
                while (nxt := schedule.next()) is not None:
                    value, rep = nxt
                    progress.point_started(i, max(schedule.planned_count(), i + 1), f"{t.kind} {value:g}",
                                           repetition=rep - schedule.reps[0], repetitions=len(schedule.reps))  # fmt: skip
                    monitor.point_started(i, value)
                    try:
                        res = measure_point(
                            lease, PointPlan(i, value, rep), items=workload.items,
                            counter=workload.counter, work=work, trace_times_s=workload.trace_times_s,
                            arrivals=workload.arrivals,
                        )  # fmt: skip
                    except PointInterrupted as e:
                        monitor.point_finished(i, e.result.record.summary.get("measure_window_s"))
                        keep_point(record, results, e.result, lease, run_dir)
                        raise
                    monitor.point_finished(i, res.record.summary.get("measure_window_s"))
                    progress.point_finished(None)  # measure_point logged the summary line
                    res.record.search = slo_check(res, cfg.slo)
                    keep_point(record, results, res, lease, run_dir)
                    check = res.record.search
                    schedule.observe(value, rep, check["feasible"], "; ".join(check["reasons"]),
                                     p_feasible=check.get("p_feasible"))  # fmt: skip
                    if (why := halving.observe(value, check["feasible"], res.record.summary)) is not None:
                        log.warning("halving: %s; its knee search stops here", why)
                        schedule.halt(why, halving.state())
                    record.resume = schedule.state()
                    record.save(run_dir)
                    if res.record.aborted:
                        raise lease.crash_error()
                    i += 1
                if cfg.quality is not None and cfg.quality.enabled:
                    phase = "quality"
                    quality.quality_phase(lease, cfg, run_dir, record, progress=progress)
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
            key = cfg.engine.api_key_env  # an error's text may quote a request header: never the key
            why = redact(f"{type(e).__name__}: {e}", key)
            log.error("run failed: %s", why)
            log.debug("%s", redact(traceback.format_exc(), key))
            record.fail("failed", why, phase=phase, log_tail=redact(traceback.format_exc(limit=8), key))
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
                monitor.stop(linger_s=cfg.monitor.linger_s if record.status == "ok" and not supervisor.hurrying else 0.0)
    return EXIT.get(record.status, 1)


def _cancel_if_signalled(record: RunRecord, supervisor: Supervisor) -> bool:
    """A signal during teardown cancels a run that would otherwise have ended ok."""
    if supervisor.hurrying and record.status in ("running", "ok"):
        record.fail("cancelled", "interrupted by Ctrl-C or SIGTERM during teardown", phase="teardown")
        return True
    return False


__all__ = ["EXIT", "run", "run_variant"]
