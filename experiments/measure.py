"""Measuring one load point against a ready engine lease. Returns a typed :class:`PointResult`.
:class:`Workload` is what every point of a run sends: its items, built (and checked against the
context) before any engine starts.

A point is: build its spec (pure, loadgen.driver.build_spec), run it in the load-generator
process (loadgen.driver.run_load_point) while the lease watches the engine, count the client
side tokens of what came back (post-run annotation), and summarise it (analysis.metrics).

Side effects: :class:`Workload` reads the tokenizer and the dataset or trace file; runs the load generator (a child of the run's supervisor) against the lease's
engine over loopback HTTP; the records stream into `work/`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.metrics import summarize_point
from analysis.records import identity
from analysis.records.run import PointRecord, RunRecord, load_unit
from experiments import preflight
from experiments.artifacts import nullable_dtype, write_point_requests
from experiments.economy import OverloadWatch
from experiments.lease import EngineLease, Rejected
from experiments.schema import RunConfig
from loadgen.dataset import DatasetError, load_sharegpt
from loadgen.driver import LoadInterrupted, LoadPointOutput, build_spec, run_load_point
from loadgen.records import to_table
from loadgen.tokenizer import annotate_client_counts, load_token_counter
from loadgen.trace import Trace, TraceError, read_trace, reuse_summary, trace_items, window_rows
from loadgen.workload import WorkloadError, WorkloadItem, build_items

log = logging.getLogger("servelab")


@dataclass
class PointResult:
    """One measured load point: its record in run.json and the raw output it came from."""

    record: PointRecord
    output: LoadPointOutput

    @property
    def index(self) -> int:
        return self.record.index


class PointInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM during a point; carries what was recorded up to then."""

    def __init__(self, result: PointResult) -> None:
        super().__init__("interrupted")
        self.result = result


@dataclass(frozen=True)
class PointPlan:
    """Which point to measure: its index in the run, load value and repetition."""

    index: int
    load_value: float
    repetition: int = 0


def measure_point(
    lease: EngineLease,
    point: PointPlan,
    *,
    items: list[Any],
    counter: Any,
    work: Path,
    traffic: Any | None = None,
    workload: Any | None = None,
    trace_times_s: list[float] | None = None,
    arrivals: Any | None = None,
) -> PointResult:
    """Run `point` against the open `lease` and summarise it.

    `arrivals`: the traffic settings the schedule is drawn from when they are not `traffic`'s
    (workload=fitted: gamma with the trace's fitted shape, Workload.arrivals); the point's identity
    and summary stay `traffic`'s.
    A crash of the engine stops the point at once (result.record.aborted says why); Ctrl-C
    raises PointInterrupted carrying the records received so far.
    """
    t = traffic if traffic is not None else lease.cfg.traffic
    w = workload if workload is not None else lease.cfg.workload
    assert lease.adapter is not None and lease.plan is not None
    spec = build_spec(
        load_point=point.index, load_value=float(point.load_value), traffic=arrivals if arrivals is not None else t,
        workload=w, items=items,
        base_url=lease.plan.base_url, model=lease.plan.served_model, extras_for=lease.adapter.request_extras,
        workdir=work, api_key_env=lease.plan.api_key_env, trace_times_s=trace_times_s,
        cpus=lease.placement.loadgen_cpus if lease.placement else None,
        realtime=bool(lease.placement and lease.placement.loadgen_realtime),
        sessions=[it.session for it in items if getattr(it, "session", None) is not None],
        max_model_len=preflight.context_limit(lease.cfg),
    )  # fmt: skip
    rec = PointRecord(
        index=point.index, point_id=identity.point_id(t, w, point.load_value), repetition=point.repetition,
        load_value=float(point.load_value), load_unit=load_unit(t.kind, w.kind),
    )  # fmt: skip
    log.info(
        "load point %d: %s %g %s for %.0f s (+%.0f s warmup)",
        point.index, t.kind, point.load_value, rec.load_unit, t.duration_s, t.warmup_s,
    )  # fmt: skip
    # economy.early_stop: a point whose queue clearly grows past the SLO is stopped (experiments.economy)
    watch = OverloadWatch(lease.cfg, index=point.index, load_value=point.load_value, work=work, traffic=t)

    def abort() -> str | None:
        return lease.failure_reason() or watch()

    try:
        out = run_load_point(spec, work, supervisor=lease.supervisor, abort=abort)
    except LoadInterrupted as e:
        rec.interrupted = True
        res = _finish(rec, e.output, counter, t, w)
        raise PointInterrupted(res) from None
    res = _finish(rec, out, counter, t, w)
    if watch.reason is not None and rec.aborted == watch.reason:
        # an overload stop is a finished, infeasible point, not a failure: resume keeps it, the
        # decision reads it as infeasible (analysis.results)
        rec.aborted, rec.stopped_early = None, watch.stopped_early()
    s = rec.summary
    log.info(
        "load point %d: ok %d/%d, TTFT p50 %s ms, TPOT p50 %s ms, %s output tok/s",
        point.index, s["requests"]["ok"], s["requests"]["total"], _fmt(s["ttft_ms"]["p50"]),
        _fmt(s["tpot_ms"]["p50"]), _fmt(s["output_tok_per_s"]),
    )  # fmt: skip
    return res


def _finish(rec: PointRecord, out: LoadPointOutput, counter: Any, t: Any, w: Any) -> PointResult:
    annotate_client_counts(out.records, counter)  # post-run annotation, never in the hot path
    rec.t0_ns, rec.t_end_ns = out.meta.get("t0_ns"), out.meta.get("t_end_ns")
    rec.aborted = getattr(out, "aborted", None)
    rec.clock_offsets = out.meta.get("clock_offsets")
    rec.problems = list(out.problems)
    df = to_table(out.records).to_pandas(types_mapper=nullable_dtype)
    rec.summary = summarize_point(
        df, kind=t.kind, value=rec.load_value, warmup_s=t.warmup_s, duration_s=t.duration_s,
        t0_ns=rec.t0_ns, t_end_ns=rec.t_end_ns, cooldown_s=t.cooldown_s, shape=t.shape,
        lag_samples=out.lag, ignore_eos=w.ignore_eos,
    )  # fmt: skip
    return PointResult(record=rec, output=out)


def slo_check(result: PointResult, slo: Any) -> dict[str, Any]:
    """The point's SLO feasibility as the decision layer computes it (analysis.slo.evaluate_point
    over the point's request rows and its steady window), for the knee search and for resume.
    A point stopped early (engine died, or its queue grew past the SLO: experiments.economy) is
    infeasible whatever its rows say."""
    from analysis.results import p_feasible
    from analysis.slo import evaluate_point
    from experiments.artifacts import requests_frame

    frame = requests_frame([result])
    window = result.record.summary.get("measure_window_s")
    res = evaluate_point(frame, slo, window_s=window)
    reasons = list(res.reasons)
    p = p_feasible(frame, slo, window_s=window) if res.requests else None
    if result.record.aborted:
        reasons.insert(0, f"stopped early: {result.record.aborted}")
        p = 0.0
    elif result.record.stopped_early:  # the queue grew past the SLO (experiments.economy): infeasible
        reasons.insert(0, f"stopped early: {result.record.stopped_early['reason']}")
        p = 0.0
    # p_feasible: how sure the verdict is (the share of time-block replicates meeting the SLO)
    return {"slo": res.slo_name, "feasible": not reasons, "attainment": res.attainment, "reasons": reasons,
            "p_feasible": p}  # fmt: skip


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def keep_point(record: RunRecord, results: list[PointResult], res: PointResult, lease: EngineLease,
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


def prepare(cfg: RunConfig, lease: EngineLease, record: RunRecord, run_dir: Path) -> Workload:
    """Everything before the engine starts: provenance, the lease's preflight (Rejected with its
    problems), the placement and warnings into `record`, the workload (built and checked), the
    host's memory bandwidth for a CPU plan, and workload.parquet."""
    from experiments import discover, hostbench
    from experiments.artifacts import with_identity, write_parquet

    record.provenance = discover.provenance()
    # a locally built model's source (package, version, file, sha256, licence): run.json provenance.model
    record.provenance["model"] = discover.model_provenance(cfg.model.path)
    if problems := lease.prepare():
        raise Rejected(problems)
    record.placement = lease.placement.to_dict() if lease.placement is not None else None
    for w in lease.warnings:
        record.note("preflight", "warning", w)
    workload = Workload(cfg)
    record.trace = workload.trace
    for n in workload.notes:
        record.note("workload", "trace", n)
    if cfg.gpu.count == 0 and not lease.plan_is_external():
        # The CPU roofline needs the host's memory bandwidth: measured now, before the engine
        # competes for it, and recorded (never guessed).
        record.host_bandwidth = hostbench.copy_bandwidth()
    # What was sent, per prompt_idx: requests.parquet joins it on (run_id, prompt_idx).
    write_parquet(with_identity(workload.frame(), record.identity()), run_dir / "workload.parquet")
    record.artifacts["workload"] = "workload.parquet"
    return workload


class Workload:
    """The items of a run, built (and checked against the context) before any engine starts.

    A trace (traffic=trace, or workload=fitted) is read with the traffic.trace_* settings; what
    run.json records about it is `trace` (loadgen.trace.Trace.describe, and the fit), the rows it
    left out are `notes`. workload=fitted also sets `arrivals`: the traffic settings its schedule
    is drawn from (gamma with the fitted shape at each point's rate).
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.counter = load_token_counter(cfg.model.tokenizer or cfg.model.path)
        w = cfg.workload
        self.trace_times_s: list[float] | None = None
        self.arrivals: Any | None = None
        self.trace: dict[str, Any] | None = None
        self.notes: list[str] = []
        try:
            if cfg.traffic.kind == "trace":
                self._replay(cfg)
            elif w.kind == "fitted":
                self._fitted(cfg)
            else:
                dataset = load_sharegpt(w.dataset_path) if w.kind == "sharegpt" else None
                self.items = build_items(w, self.counter, dataset)
        except (DatasetError, WorkloadError, TraceError) as e:
            raise Rejected([str(e)]) from None
        if too_long := preflight.context_problems(cfg, self.items):
            raise Rejected(too_long)

    def _read(self, cfg: RunConfig) -> Trace:
        t = cfg.traffic
        trace = read_trace(t.trace_path, t.trace_format, block_tokens=t.trace_block_tokens, model=t.trace_model,
                           log_type=t.trace_log_type)  # fmt: skip  # preflight checked that the path is set
        self.notes += trace.notes()
        return trace

    @staticmethod
    def _fits(cfg: RunConfig, lengths: list[tuple[int, int]]) -> None:
        """The context rule on lengths before any prompt is built (a long trace is refused at once)."""
        if too_long := preflight.context_problems(cfg, [WorkloadItem(i, "", a, b) for i, (a, b) in enumerate(lengths)]):
            raise Rejected(too_long)

    def _replay(self, cfg: RunConfig) -> None:
        t = cfg.traffic
        trace = self._read(cfg)
        smallest = smallest_load(cfg)
        rows, beyond = window_rows(trace, smallest, t.warmup_s + t.duration_s + t.cooldown_s)
        if beyond:
            self.notes.append(f"{trace.path}: {beyond} of {len(trace.rows)} rows arrive after the window at the smallest "
                              f"speed-up {smallest:g}: never sent, so not built")  # fmt: skip
        self._fits(cfg, [(r.input_tokens, r.output_tokens) for r in rows])
        self.items = trace_items(self.counter, rows, cfg.workload.seed, trace.block_tokens)
        self.trace_times_s = [r.timestamp_s for r in rows]
        self.trace = trace.describe() | {"rows_built": len(rows), "smallest_speedup": smallest}
        if trace.block_tokens is not None:  # the reuse among the rows that can be sent (the file's is prefix_reuse)
            self.trace["prefix_reuse_built"] = reuse_summary(rows, trace.block_tokens)

    def _fitted(self, cfg: RunConfig) -> None:
        from loadgen.fitted import fit_trace, fitted_items

        w = cfg.workload
        trace = self._read(cfg)
        fit = fit_trace(trace, (w.prompt_min, w.prompt_max), (w.output_min, w.output_max))
        if fit.left_out:
            self.notes.append(f"workload=fitted: {fit.left_out} of {fit.left_out + len(fit.pairs)} trace rows lie "
                              "outside workload.prompt_min..prompt_max or output_min..output_max: left out of the fit")  # fmt: skip
        self._fits(cfg, list(fit.pairs))
        self.items, generated = fitted_items(fit, self.counter, w.num_prompts, w.seed)
        self.arrivals = dataclasses.replace(cfg.traffic, kind="gamma", burstiness=fit.shape)
        a = fit.arrivals
        self.notes.append(
            f"workload=fitted: gamma arrivals of shape k={fit.shape:.3g} fitted to {trace.path} (method of moments; its "
            f"recorded rate {a['recorded_rate_rps']:.3g} req/s), sent at traffic.points req/s"
        )
        self.trace = trace.describe() | {"fitted": fit.figures() | {"generated": generated}}

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([it.to_dict() for it in self.items])


def smallest_load(cfg: RunConfig) -> float:
    """The smallest load value the run may measure: its points, and a knee search's lower end."""
    loads = [float(v) for v in cfg.traffic.points]
    sc = getattr(cfg, "search", None)
    if sc is not None and sc.kind == "knee" and sc.lo is not None:
        loads.append(float(sc.lo))
    return min(loads)
