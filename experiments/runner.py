"""Runs one servelab run: preflight -> engine launch -> load points -> artifacts.

This is the only layer that sequences side effects. A run is one engine launch followed by
one or more load points (traffic.points), each recorded separately under the same launch.

Artifacts in the run folder (Hydra's output dir):
  run.json            run summary (status, provenance, engine, per-point summaries); written at the
                      start with status=running and rewritten at the end, atomically
  requests.parquet    one row per request, all load points (raw timestamps + derived columns)
  workload.parquet    the workload items sent (prompt, lengths, group/cluster), joined on prompt_idx
  telemetry.parquet   sampler rows (cpu or nvml), same monotonic clock as the requests
  engine_metrics.parquet  raw samples of the engine's Prometheus /metrics (name, labels, value, t_ns)
  loadgen.parquet     the load generator's once-a-second self-check (loop lag, CPU %)
  report.html         self-contained report
  engine.log          engine stdout+stderr;  loadgen.log  load generator output
  work/               raw JSONL as it streamed in; removed once the parquet files are written
Exit codes: 0 ok, 1 failed, 2 rejected by preflight, 130 cancelled (Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.metrics import derive, summarize_cpu_telemetry, summarize_point
from analysis.report import render_report
from analysis.telemetry import energy_j, engine_series, scrape_gaps, summarize_engine_metrics, summarize_gpu
from engines import ADAPTERS
from engines.base import LaunchPlan
from engines.process import EngineError, EngineProcess, free_port, wait_http_ready
from experiments import discover, preflight
from experiments.config import to_plain
from experiments.placement import placement_problems, plan_placement, realtime_permitted
from experiments.schema import RunConfig
from experiments.telemetry import SamplerProcess
from loadgen.dataset import DatasetError, load_sharegpt
from loadgen.driver import LoadInterrupted, LoadPointOutput, build_spec, read_jsonl, run_load_point
from loadgen.records import REQUEST_SCHEMA, to_table
from loadgen.tokenizer import annotate_client_counts, load_token_counter
from loadgen.trace import TraceError, load_trace, trace_items
from loadgen.workload import WorkloadError, build_items, context_problem

log = logging.getLogger("servelab")

RUN_SCHEMA_VERSION = 1
EXIT = {"ok": 0, "failed": 1, "rejected": 2, "cancelled": 130}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class Run:
    """State of one run while it executes; `summary` is what run.json holds."""

    def __init__(self, cfg: RunConfig, run_dir: Path, overrides: list[str] | None = None) -> None:
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.work = self.dir / "work"
        self.points: list[dict[str, Any]] = []
        self.outputs: list[LoadPointOutput] = []
        self.summary: dict[str, Any] = {
            "schema_version": RUN_SCHEMA_VERSION,
            "run_id": self.dir.name,
            "experiment": cfg.experiment_name,
            "status": "running",
            "failure": None,
            "started_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "finished_at_utc": None,
            # One (monotonic, wall) pair: wall = wall_s + (t_ns - monotonic_ns) / 1e9 for any t_*_ns.
            "clock": {"monotonic_ns": time.monotonic_ns(), "wall_s": time.time(), "source": "CLOCK_MONOTONIC"},
            "overrides": list(overrides or []),
            "config": to_plain(cfg),
            "provenance": None,
            "engine": None,
            "placement": None,
            "telemetry": None,
            "engine_metrics": None,
            "load_points": [],
            "notes": [],
            "artifacts": {},
        }

    # -- bookkeeping ---------------------------------------------------------------------------
    def save(self) -> None:
        write_json_atomic(self.dir / "run.json", self.summary)

    def fail(self, status: str, reason: str, log_tail: str | None = None) -> None:
        self.summary["status"] = status
        self.summary["failure"] = {"reason": reason, "log_tail": log_tail}

    def _reject(self, problems: list[str]) -> int:
        for p in problems:
            log.error("preflight: %s", p)
        self.fail("rejected", "; ".join(problems))
        return EXIT["rejected"]

    # -- the run -------------------------------------------------------------------------------
    def execute(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(exist_ok=True)
        self.save()
        cfg = self.cfg
        engine_proc: EngineProcess | None = None
        samplers: dict[str, SamplerProcess] = {}
        # Placement (issue 8 item 8): the lab's own affinity is changed below and restored at the
        # end, so a sweep (-m) that runs several runs in one process starts each from the same set.
        lab_affinity = os.sched_getaffinity(0)
        try:
            self.summary["provenance"] = discover.provenance()
            adapter_cls = ADAPTERS.get(cfg.engine.name)
            adapter = adapter_cls(cfg.engine, cfg.model, cfg.quant, cfg.gpu, cfg.workload) if adapter_cls else None
            facts = (
                discover.host_facts(adapter, cfg.engine, cfg.gpu.count, cfg.model.path) if adapter else None
            )
            problems = preflight.check(cfg, adapter, facts)
            problems += placement_problems(cfg.placement, sorted(lab_affinity), cfg.traffic.workers)
            if problems:
                return self._reject(problems)
            assert adapter is not None and facts is not None
            self.summary["notes"] += preflight.warnings(cfg, adapter)

            # The workload is built before the engine starts: a bad tokenizer or dataset costs no
            # start-up time, and is rejected like a preflight problem.
            counter = load_token_counter(cfg.model.tokenizer or cfg.model.path)
            w = cfg.workload
            trace_times = None
            try:
                if cfg.traffic.kind == "trace":
                    rows = load_trace(cfg.traffic.trace_path)  # type: ignore[arg-type]  # preflight checked it
                    items = trace_items(counter, rows, w.seed)
                    trace_times = [r.timestamp_s for r in rows]
                else:
                    dataset = load_sharegpt(w.dataset_path) if w.kind == "sharegpt" else None
                    items = build_items(w, counter, dataset)
            except (DatasetError, WorkloadError, TraceError) as e:
                return self._reject([str(e)])
            if too_long := context_problem(items, preflight.context_limit(cfg), w.kind):
                return self._reject([too_long])
            # What was sent, per prompt_idx (prompt text, lengths, prefix group, paraphrase cluster):
            # requests.parquet joins it on (prompt_idx), so cache studies need no re-run.
            pq.write_table(pa.Table.from_pylist([it.to_dict() for it in items]), self.dir / "workload.parquet")
            self.summary["artifacts"]["workload"] = "workload.parquet"

            port = cfg.engine.port or free_port(cfg.engine.host)
            placement = plan_placement(
                cfg.placement, sorted(lab_affinity), engine=adapter.name, gpu_planned=cfg.gpu.count > 0,
                workers=cfg.traffic.workers, realtime_allowed=realtime_permitted(),
            )  # fmt: skip
            self.summary["placement"] = placement.to_dict()
            self.summary["notes"] += list(placement.notes)
            plan = (
                adapter.launch_plan(port, facts, placement=placement)
                if adapter.name == "vllm" else adapter.launch_plan(port, facts)
            )  # fmt: skip
            self.summary["engine"] = {
                "name": adapter.name,
                "dist": facts.engine_dist,
                "version": facts.engine_version,
                "checked_against": adapter.checked_against,
                "python": facts.engine_python if adapter.dists else None,
                "binaries": dict(facts.binaries),
                "packages": dict(facts.engine_packages),
                "plan": plan.to_dict(),
                "time_to_ready_s": None,
                "effective_quant": None,
                "exit_code": None,
            }
            self.save()

            if plan.external:
                log.info("benchmarking the running server at %s", plan.base_url)
                ready_s = wait_http_ready(plan.base_url + plan.health_path, plan.ready_timeout_s, _auth_headers(plan))
            else:
                engine_proc = EngineProcess(plan, self.dir / "engine.log")
                # The child inherits the lab's affinity at fork, so the whole engine tree starts
                # on its cores (until the Supervisor takes `cpus=`).
                if placement.engine_cpus is not None:
                    os.sched_setaffinity(0, placement.engine_cpus)
                try:
                    engine_proc.start()
                finally:
                    os.sched_setaffinity(0, placement.lab_cpus or lab_affinity)
                assert engine_proc.proc is not None
                self.summary["engine"]["pid"] = engine_proc.proc.pid  # also its process-group id
                log.info("waiting for %s %s at %s", adapter.name, facts.engine_version or "", plan.base_url)
                ready_s = engine_proc.wait_ready()
            self.summary["engine"]["time_to_ready_s"] = ready_s
            log.info("engine ready after %.1f s", ready_s)

            kind = preflight.telemetry_kind(cfg) if engine_proc is not None else None
            self.summary["telemetry"] = {"sampler": kind, "interval_s": cfg.telemetry.interval_s}
            if kind:
                assert engine_proc is not None and engine_proc.proc is not None
                samplers["telemetry"] = SamplerProcess(
                    kind, engine_proc.proc.pid, self.work / "telemetry.jsonl", cfg.telemetry.interval_s
                )
            if cfg.telemetry.scrape_engine_metrics and plan.metrics_path and not plan.api_key_env:
                url = plan.base_url + plan.metrics_path
                self.summary["engine_metrics"] = {"url": url, "interval_s": cfg.telemetry.metrics_interval_s}
                samplers["engine_metrics"] = SamplerProcess(
                    "metrics", 0, self.work / "engine_metrics.jsonl", cfg.telemetry.metrics_interval_s, url=url
                )
            for sp in samplers.values():
                if placement.telemetry_cpus is not None:
                    os.sched_setaffinity(0, placement.telemetry_cpus)
                try:
                    sp.start()
                finally:
                    os.sched_setaffinity(0, placement.lab_cpus or lab_affinity)

            t = cfg.traffic
            for i, value in enumerate(t.points):
                spec = build_spec(
                    load_point=i, point_value=float(value), traffic=t, workload=w, items=items,
                    base_url=plan.base_url, model=plan.served_model, extras_for=adapter.request_extras,
                    workdir=self.work, api_key_env=plan.api_key_env, trace_times_s=trace_times,
                )  # fmt: skip
                if placement.loadgen_cpus is not None:
                    spec["cpu_affinity"] = list(placement.loadgen_cpus)
                spec["realtime"] = placement.loadgen_realtime
                unit = {"concurrency": "users", "trace": "x speed-up"}.get(t.kind, "req/s")
                log.info(
                    "load point %d/%d: %s %g %s for %.0f s (+%.0f s warmup)",
                    i + 1, len(t.points), t.kind, value, unit, t.duration_s, t.warmup_s,
                )  # fmt: skip
                try:
                    out = run_load_point(spec, self.work)
                except LoadInterrupted as e:
                    self.outputs.append(e.output)
                    self.points.append({"index": i, "value": float(value), "spec_mode": spec["mode"]})
                    raise
                annotate_client_counts(out.records, counter)
                self.outputs.append(out)
                self.points.append({"index": i, "value": float(value), "spec_mode": spec["mode"]})
                for p in out.problems:
                    self.summary["notes"].append(f"load point {i}: {p}")
                s = self._summarize_point(i)
                log.info(
                    "load point %d: ok %d/%d, TTFT p50 %s ms, TPOT p50 %s ms, %s output tok/s",
                    i, s["requests"]["ok"], s["requests"]["total"], _fmt(s["ttft_ms"]["p50"]),
                    _fmt(s["tpot_ms"]["p50"]), _fmt(s["output_tok_per_s"]),
                )  # fmt: skip
                for name, sp in samplers.items():
                    if not sp.alive() and f"{name} sampler died" not in " ".join(self.summary["notes"]):
                        self.summary["notes"].append(
                            f"{name} sampler died during the run (see {sp.out.with_suffix('.log').name}); "
                            "samples after that are missing"
                        )
            self.summary["status"] = "ok"
            return EXIT["ok"]
        except KeyboardInterrupt:
            log.warning("cancelled: tearing down and saving what was recorded")
            self.fail("cancelled", "interrupted by Ctrl-C or SIGTERM")
            return EXIT["cancelled"]
        except EngineError as e:
            log.error("%s\n--- engine log tail ---\n%s", e, e.log_tail)
            self.fail("failed", str(e), e.log_tail)
            return EXIT["failed"]
        except Exception as e:  # noqa: BLE001 - any failure must still tear down and record
            log.error("run failed: %s: %s", type(e).__name__, e)
            log.debug("%s", traceback.format_exc())
            self.fail("failed", f"{type(e).__name__}: {e}", traceback.format_exc(limit=8))
            return EXIT["failed"]
        finally:
            # Teardown runs even if a second Ctrl-C arrives while it is running.
            with _shielded():
                os.sched_setaffinity(0, lab_affinity)
                for sp in samplers.values():
                    sp.stop()
                if engine_proc is not None:
                    code = engine_proc.stop()
                    if self.summary["engine"] is not None:
                        self.summary["engine"]["exit_code"] = code
                        self.summary["engine"]["effective_quant"] = adapter.effective_quant(engine_proc.log_text())
                self._write_artifacts()

    # -- artifacts -----------------------------------------------------------------------------
    def _records_df(self) -> pd.DataFrame:
        recs = [r for out in self.outputs for r in out.records]
        return to_table(recs).to_pandas(types_mapper=_nullable) if recs else to_table([]).to_pandas(types_mapper=_nullable)

    def _summarize_point(self, i: int) -> dict[str, Any]:
        cfg = self.cfg
        out = self.outputs[i]
        df = to_table(out.records).to_pandas(types_mapper=_nullable)
        s = summarize_point(
            df, kind=cfg.traffic.kind, value=self.points[i]["value"], warmup_s=cfg.traffic.warmup_s,
            duration_s=cfg.traffic.duration_s, lag_samples=out.lag, ignore_eos=cfg.workload.ignore_eos,
        )  # fmt: skip
        entry = {
            "index": i,
            "value": self.points[i]["value"],
            "t0_ns": out.meta.get("t0_ns"),
            "t_end_ns": out.meta.get("t_end_ns"),
            "interrupted": out.interrupted,
            "summary": s,
        }
        pts = self.summary["load_points"]
        pts[:] = [p for p in pts if p["index"] != i] + [entry]
        return s

    def _write_artifacts(self) -> None:
        arts: dict[str, str] = {}
        try:
            for i in range(len(self.outputs)):
                if not any(p["index"] == i for p in self.summary["load_points"]):
                    self._summarize_point(i)  # an interrupted point is summarised with what it has
            df = derive(self._records_df())
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), self.dir / "requests.parquet")
            arts["requests"] = "requests.parquet"

            tel = pd.DataFrame(read_jsonl(self.work / "telemetry.jsonl"))
            if not tel.empty:
                pq.write_table(pa.Table.from_pandas(tel, preserve_index=False), self.dir / "telemetry.parquet")
                arts["telemetry"] = "telemetry.parquet"
                self.summary["telemetry"].update(self._telemetry_summary(tel))
            elif self.summary.get("telemetry") and self.summary["telemetry"].get("sampler"):
                self.summary["telemetry"]["gaps"] = ["no telemetry samples were recorded"]

            raw = pd.DataFrame(read_jsonl(self.work / "engine_metrics.jsonl"))
            series = pd.DataFrame(columns=["t_ns"])
            if not raw.empty:
                pq.write_table(pa.Table.from_pandas(raw, preserve_index=False), self.dir / "engine_metrics.parquet")
                arts["engine_metrics"] = "engine_metrics.parquet"
                series = engine_series(raw[raw["name"].notna()], self.cfg.engine.name)
                start, end = self._load_span()
                em = self.summary["engine_metrics"]
                em.update({
                    "scrapes": int(raw["t_ns"].nunique()),
                    "failed_scrapes": int(raw["error"].notna().sum()),
                    "known_series": [c for c in series.columns if c != "t_ns"],
                    "gaps": scrape_gaps(raw["t_ns"], self.cfg.telemetry.metrics_interval_s),
                    "summary_during_load": summarize_engine_metrics(series, start, end),
                })  # fmt: skip
            elif self.summary.get("engine_metrics"):
                self.summary["engine_metrics"]["gaps"] = ["no /metrics scrape was recorded"]
            self._per_point_resources(df, tel, series)

            lag = pd.DataFrame(
                [{"load_point": i, **s} for i, out in enumerate(self.outputs) for s in out.lag]
            )
            if not lag.empty:
                pq.write_table(pa.Table.from_pandas(lag, preserve_index=False), self.dir / "loadgen.parquet")
                arts["loadgen"] = "loadgen.parquet"
            for name in ("engine.log", "loadgen.log", "telemetry.log", "engine_metrics.log"):
                src = self.dir / name if name == "engine.log" else self.work / name
                if src.exists() and (name in ("engine.log", "loadgen.log") or src.stat().st_size > 0):
                    if src.parent != self.dir:
                        shutil.copyfile(src, self.dir / name)
                    arts[name.replace(".", "_")] = name
        except Exception as e:  # noqa: BLE001 - keep work/ so nothing is lost, and say so
            log.error("could not write artifacts (raw JSONL kept in %s): %s", self.work, e)
            self.summary["notes"].append(f"artifact writing failed: {type(e).__name__}: {e}; raw data in work/")
            self.summary["artifacts"] = {**self.summary["artifacts"], **arts}
            self._finish()
            return
        self.summary["artifacts"] = {**self.summary["artifacts"], **arts}
        self._finish()
        try:
            html = render_report(self.summary, df, tel if not tel.empty else None)
            (self.dir / "report.html").write_text(html)
            self.summary["artifacts"]["report"] = "report.html"
            self.save()
        except Exception as e:  # noqa: BLE001
            log.error("could not render report.html: %s", e)
            self.summary["notes"].append(f"report rendering failed: {type(e).__name__}: {e}")
            self.save()
        shutil.rmtree(self.work, ignore_errors=True)  # everything in it is now in the parquet files

    def _load_span(self) -> tuple[int | None, int | None]:
        pts = self.summary["load_points"]
        start = min((p["t0_ns"] for p in pts if p.get("t0_ns")), default=None)
        end = max((p["t_end_ns"] for p in pts if p.get("t_end_ns")), default=None)
        return start, end

    def _telemetry_summary(self, tel: pd.DataFrame) -> dict[str, Any]:
        start, end = self._load_span()
        kind = self.summary["telemetry"]["sampler"]
        # gaps per device: NVML writes one row per GPU per round
        times = tel[tel["gpu"] == tel["gpu"].min()]["t_ns"] if kind == "nvml" else tel["t_ns"]
        during = summarize_gpu(tel, start, end) if kind == "nvml" else summarize_cpu_telemetry(tel, start, end)
        out = {"samples": int(len(tel)), "gaps": scrape_gaps(times, self.cfg.telemetry.interval_s), "summary_during_load": during}
        if kind == "nvml" and "errors" in tel and tel["errors"].notna().any():
            out["errors"] = sorted(set(tel["errors"].dropna().tolist()))[:10]
        return out

    def _per_point_resources(self, df: pd.DataFrame, tel: pd.DataFrame, series: pd.DataFrame) -> None:
        """Energy (J, J/output token) and engine metrics over each point's measure window."""
        for p in self.summary["load_points"]:
            m = df[(df["load_point"] == p["index"]) & (df["phase"] == "measure") & df["t_sent_ns"].notna()]
            if m.empty:
                continue
            t0, t1 = int(m["t_sent_ns"].min()), int(m["t_done_ns"].max())
            s = p["summary"]
            if not tel.empty and self.summary["telemetry"].get("sampler") == "nvml":
                e = energy_j(tel, t0, t1)
                tokens = s.get("output_tokens") or 0
                e["j_per_output_token"] = e["joules"] / tokens if e["joules"] is not None and tokens else None
                s["energy"] = e
                s["gpu"] = summarize_gpu(tel, t0, t1)
            elif not tel.empty:
                s["cpu"] = summarize_cpu_telemetry(tel, t0, t1)
            if not series.empty:
                s["engine_metrics"] = summarize_engine_metrics(series, t0, t1)

    def _finish(self) -> None:
        self.summary["finished_at_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.save()


def _auth_headers(plan: LaunchPlan) -> dict[str, str]:
    """Authorization header from the variable named by plan.api_key_env (read now, never stored)."""
    if not plan.api_key_env:
        return {}
    key = os.environ.get(plan.api_key_env)
    if not key:
        raise EngineError(f"environment variable {plan.api_key_env} (engine.api_key_env) is not set")
    return {"Authorization": f"Bearer {key}"}


def _nullable(t: pa.DataType) -> Any:
    """Arrow -> pandas nullable dtypes, so missing ints stay <NA> instead of turning into floats."""
    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    if pa.types.is_string(t):
        return pd.StringDtype()
    return None


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


@contextlib.contextmanager
def _shielded():
    """Ignore SIGINT while tearing down, so a second Ctrl-C cannot leave an orphan engine."""
    import signal

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def run(cfg: RunConfig, run_dir: Path, overrides: list[str] | None = None) -> int:
    """Execute one run into `run_dir`; returns the exit code (see module doc)."""
    return Run(cfg, run_dir, overrides).execute()


__all__ = ["EXIT", "REQUEST_SCHEMA", "run"]
