"""The run record (run.json, schema v2) and writing a run's artifacts into its folder.

:class:`RunRecord` is the typed form of run.json; :func:`read_run_json` reads v2 files and
upgrades v1 files (written before the identity fields existed) to the same shape, so every
reader sees one schema. :func:`write_artifacts` turns what a run recorded (point results, the
samplers' raw JSONL) into the parquet files, each row carrying the identity columns
(docs/identity.md), then renders report.html.

Side effects: writes files in the run folder (run.json atomically, parquet, logs, report) and
removes the run's work/ folder once everything in it is in parquet. No processes, no network.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from experiments import identity

log = logging.getLogger("servelab")

RUN_SCHEMA_VERSION = 2
STATUSES = ("running", "ok", "failed", "rejected", "cancelled")
EXIT = {"ok": 0, "failed": 1, "rejected": 2, "cancelled": 130}


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Failure:
    """Why a run did not finish. `phase`: preflight | engine_start | measure | teardown | artifacts."""

    reason: str
    phase: str | None = None
    log_tail: str | None = None
    exit_code: int | None = None


@dataclass
class EngineRecord:
    """The launched server: what was found, the exact plan, and how it went."""

    name: str
    dist: str | None = None
    version: str | None = None
    checked_against: str = ""
    python: str | None = None
    binaries: dict[str, str] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None  # also its process-group id
    time_to_ready_s: float | None = None
    effective_quant: str | None = None
    effective_dtype: str | None = None  # the dtype the engine says it computes in (e.g. bfloat16)
    exit_code: int | None = None


@dataclass
class PointRecord:
    """One load point of the run: identity, window on the monotonic clock, and its summary."""

    index: int
    point_id: str
    repetition: int
    load_value: float
    load_unit: str  # req/s | users | x speed-up
    t0_ns: int | None = None
    t_end_ns: int | None = None
    interrupted: bool = False  # Ctrl-C / SIGTERM while it ran
    aborted: str | None = None  # why it was stopped early (e.g. the engine died), None = ran to the end
    clock_offsets: dict[str, Any] | None = None  # remote workers: offset to the master's clock
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    # The in-run SLO check the sweep planner used ({feasible, reasons, slo}); resume replays it.
    search: dict[str, Any] | None = None


@dataclass
class RunRecord:
    """run.json. Written at the start (status=running) and rewritten atomically as the run goes."""

    run_id: str
    variant_id: str
    experiment: str
    config: dict[str, Any]
    launch_fields: dict[str, Any]
    overrides: list[str] = field(default_factory=list)
    schema_version: int = RUN_SCHEMA_VERSION
    status: str = "running"
    failure: Failure | None = None
    started_at_utc: str = field(default_factory=now_utc)
    finished_at_utc: str | None = None
    # One (monotonic, wall) pair: wall = wall_s + (t_ns - monotonic_ns) / 1e9 for any t_*_ns.
    clock: dict[str, Any] = field(
        default_factory=lambda: {"monotonic_ns": time.monotonic_ns(), "wall_s": time.time(), "source": "CLOCK_MONOTONIC"}
    )
    provenance: dict[str, Any] | None = None
    # The lab process writing this record ({pid, boot_id}): a later run of the same command tells
    # from it whether a run.json still saying "running" belongs to a dead process (experiments.resume).
    lab: dict[str, Any] | None = None
    # Sweeps: which launch of the variant this is, and what earlier launches had already measured.
    launch: int | None = None
    resume: dict[str, Any] | None = None
    engine: EngineRecord | None = None
    placement: dict[str, Any] | None = None
    # CPU plans: the host's measured memory bandwidth (experiments.hostbench), the roofline's input
    host_bandwidth: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    engine_metrics: dict[str, Any] | None = None
    load_points: list[PointRecord] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)  # analysis.notes.Note.to_dict() rows
    artifacts: dict[str, str] = field(default_factory=dict)
    # quality=gate: the summary of this launch's quality run (experiments.quality; rows in quality.parquet)
    quality: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, run_dir: Path) -> None:
        write_json_atomic(Path(run_dir) / "run.json", self.to_dict())

    def fail(self, status: str, reason: str, *, phase: str | None = None, log_tail: str | None = None,
             exit_code: int | None = None) -> None:  # fmt: skip
        assert status in STATUSES, status
        self.status = status
        self.failure = Failure(reason=reason, phase=phase, log_tail=log_tail, exit_code=exit_code)

    def note(self, source: str, kind: str, message: str, t0_ns: int | None = None, t1_ns: int | None = None) -> None:
        """Add a structured note (the same fields as analysis.notes.Note) unless an equal one exists."""
        n = {"source": source, "kind": kind, "message": message, "t0_ns": t0_ns, "t1_ns": t1_ns}
        if n not in self.notes:
            self.notes.append(n)

    def point(self, index: int) -> PointRecord | None:
        return next((p for p in self.load_points if p.index == index), None)

    def put_point(self, p: PointRecord) -> None:
        self.load_points[:] = sorted([q for q in self.load_points if q.index != p.index] + [p], key=lambda q: q.index)

    def identity(self) -> dict[str, str]:
        return {"run_id": self.run_id, "variant_id": self.variant_id}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# -- reading --------------------------------------------------------------------------------------
def read_run_json(path: Path) -> dict[str, Any]:
    """run.json as a v2 dict: v2 as written; v1 upgraded (identity fields derived, notes structured)."""
    path = Path(path)
    if path.is_dir():
        path = path / "run.json"
    d = json.loads(path.read_text())
    v = d.get("schema_version", 1)
    if v == RUN_SCHEMA_VERSION:
        return d
    if v != 1:
        raise ValueError(f"{path}: run.json schema_version {v} is newer than this servelab reads ({RUN_SCHEMA_VERSION})")
    return upgrade_v1(d)


class _Obj(dict):
    """A config dict readable as attributes (identity functions take config objects)."""

    def __getattr__(self, k: str) -> Any:
        v = self.get(k)
        return _Obj(v) if isinstance(v, dict) else v


def upgrade_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A v1 run.json dict in the v2 shape. Identity fields are recomputed from its config."""
    out = dict(d)
    cfg = _Obj(d.get("config") or {})
    out["schema_version"] = RUN_SCHEMA_VERSION
    out["upgraded_from"] = 1
    out["launch_fields"] = identity.launch_fields(cfg)
    out["variant_id"] = identity.stable_hash(out["launch_fields"])
    kind = (cfg.traffic or {}).get("kind")
    unit = load_unit(kind)
    pts = []
    for p in d.get("load_points") or []:
        value = float(p.get("value", p.get("load_value", 0.0)))
        q = {k: v for k, v in p.items() if k != "value"}
        q.update(
            # v1 recorded no repetition: None, so a reader can number repeated runs (e.g. by start time)
            load_value=value, load_unit=unit, repetition=None, aborted=None, clock_offsets=None, problems=[],
            point_id=identity.point_id(cfg.traffic, cfg.workload, value),
        )  # fmt: skip
        pts.append(q)
    out["load_points"] = pts
    out["notes"] = [n if isinstance(n, dict) else {"source": "run", "kind": "note", "message": str(n), "t0_ns": None,
                                                    "t1_ns": None} for n in d.get("notes") or []]  # fmt: skip
    if out.get("failure"):
        out["failure"] = {"phase": None, "exit_code": None, **out["failure"]}
    out.setdefault("placement", None)
    out.setdefault("host_bandwidth", None)
    return out


def load_unit(traffic_kind: str | None) -> str:
    return {"concurrency": "users", "steps": "users", "trace": "x speed-up"}.get(traffic_kind or "", "req/s")


# -- writing --------------------------------------------------------------------------------------
def with_identity(df: pd.DataFrame, ident: dict[str, Any]) -> pd.DataFrame:
    """`df` with the identity columns first (constant ones broadcast; existing columns kept)."""
    out = df.copy()
    for i, (k, v) in enumerate(ident.items()):
        if k in out.columns:
            out = out.drop(columns=[k])
        out.insert(i, k, v)
    return out


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Atomically: a reader (or a resume after kill -9) sees the whole file or none of it."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    os.replace(tmp, path)


def write_point_requests(record: RunRecord, result: Any, run_dir: Path) -> str:
    """The point's request rows, durable the moment it finished: ``points/<index>.requests.parquet``
    (identity columns included). Written before run.json records the point, so a point that
    run.json lists as finished always has its rows on disk; write_artifacts folds these files into
    requests.parquet at the end and removes them. Returns the file's path relative to the run."""
    from experiments.resume import point_file

    rel = point_file(result.index)
    (Path(run_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
    write_parquet(point_identity_columns(requests_frame([result]), record), Path(run_dir) / rel)
    return rel


def point_identity_columns(df: pd.DataFrame, record: RunRecord, by: str = "load_point") -> pd.DataFrame:
    """Adds point_id and repetition to rows that carry a load-point index in column `by`."""
    pid = {p.index: p.point_id for p in record.load_points}
    rep = {p.index: p.repetition for p in record.load_points}
    lp = df[by].astype("Int64")
    out = with_identity(df, record.identity())
    out.insert(2, "point_id", pd.array([pid.get(int(i)) if pd.notna(i) else None for i in lp], dtype="string"))
    out.insert(3, "repetition", pd.array([rep.get(int(i)) if pd.notna(i) else None for i in lp], dtype="Int64"))
    return out


def point_of_time(t_ns: pd.Series, record: RunRecord) -> pd.Series:
    """The load point whose [t0_ns, t_end_ns] holds each timestamp (<NA> between points)."""
    out = pd.Series(pd.NA, index=t_ns.index, dtype="Int64")
    for p in record.load_points:
        if p.t0_ns is None or p.t_end_ns is None:
            continue
        out[(t_ns >= p.t0_ns) & (t_ns <= p.t_end_ns)] = p.index
    return out


def copy_logs(run_dir: Path, work: Path, arts: dict[str, str]) -> None:
    """engine.log stays in the run folder; the load generator's and samplers' logs move out of work/."""
    for name in ("engine.log", "loadgen.log", "telemetry.log", "engine_metrics.log"):
        src = run_dir / name if name == "engine.log" else work / name
        if src.exists() and (name in ("engine.log", "loadgen.log") or src.stat().st_size > 0):
            if src.parent != run_dir:
                shutil.copyfile(src, run_dir / name)
            arts[name.replace(".", "_")] = name


def requests_frame(results: list[Any]) -> pd.DataFrame:
    """Every point's raw records as one frame with the fixed schema and the derived columns."""
    from analysis.metrics import derive
    from loadgen.records import to_table

    recs = [r for res in results for r in res.output.records]
    return derive(to_table(recs).to_pandas(types_mapper=nullable_dtype))


def nullable_dtype(t: pa.DataType) -> Any:
    """Arrow -> pandas nullable dtypes, so missing ints stay <NA> instead of turning into floats."""
    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    if pa.types.is_string(t):
        return pd.StringDtype()
    return None


def write_artifacts(record: RunRecord, results: list[Any], run_dir: Path, work: Path, cfg: Any) -> pd.DataFrame:
    """Write requests/telemetry/engine_metrics/loadgen parquet, logs and report.html; finish run.json.

    The summaries come from analysis.run_summary (pure); this function only reads the raw JSONL
    and writes files. Never raises: a failure is noted in run.json and work/ is kept, so nothing
    recorded is lost. Returns the requests frame (derived columns included).
    """
    from analysis.run_summary import engine_metrics_summary, point_resources, telemetry_summary
    from loadgen.driver import read_jsonl

    arts: dict[str, str] = {}
    df = pd.DataFrame()
    tel = pd.DataFrame()
    raw = pd.DataFrame()
    try:
        df = requests_frame(results)
        write_parquet(point_identity_columns(df, record), run_dir / "requests.parquet")
        arts["requests"] = "requests.parquet"
        shutil.rmtree(run_dir / "points", ignore_errors=True)  # now all in requests.parquet
        span = measure_span(record)

        tel = pd.DataFrame(read_jsonl(work / "telemetry.jsonl"))
        kind = (record.telemetry or {}).get("sampler")
        if not tel.empty:
            write_parquet(_timed_identity(tel, record), run_dir / "telemetry.parquet")
            arts["telemetry"] = "telemetry.parquet"
        if record.telemetry is not None and (kind or not tel.empty):
            record.telemetry.update(telemetry_summary(tel, kind, cfg.telemetry.interval_s, span))

        raw = pd.DataFrame(read_jsonl(work / "engine_metrics.jsonl"))
        em, series = engine_metrics_summary(raw, cfg.engine.name, cfg.telemetry.metrics_interval_s, span)
        if not raw.empty:
            write_parquet(_timed_identity(raw, record), run_dir / "engine_metrics.parquet")
            arts["engine_metrics"] = "engine_metrics.parquet"
        if record.engine_metrics is not None:
            record.engine_metrics.update(em)
        for p in record.load_points:  # energy, J/token, cpu/gpu, engine metrics over each point's window
            p.summary.update(point_resources(p.summary, tel, kind, series))

        lag = pd.DataFrame([{"load_point": r.index, **s} for r in results for s in r.output.lag])
        if not lag.empty:
            write_parquet(point_identity_columns(lag, record), run_dir / "loadgen.parquet")
            arts["loadgen"] = "loadgen.parquet"
        copy_logs(run_dir, work, arts)
    except Exception as e:  # noqa: BLE001 - keep work/ so nothing is lost, and say so
        log.error("could not write artifacts (raw JSONL kept in %s): %s", work, e)
        record.note("artifacts", "write_failed", f"artifact writing failed: {type(e).__name__}: {e}; raw data in work/")
        record.artifacts.update(arts)
        finish(record, run_dir)
        return df
    record.artifacts.update(arts)
    finish(record, run_dir)
    if record.status == "ok" and record.load_points:
        add_point_decisions(record, run_dir, cfg)
        record.save(run_dir)
    if not getattr(cfg, "report", True):
        log.info("report=false: no report.html (python -m analysis.report %s renders it later)", run_dir)
        shutil.rmtree(work, ignore_errors=True)
        return df
    try:  # the run report and its exports (summary.csv, exports/*.json), from the files just written
        from analysis.report import write_run_report

        record.artifacts.update(report="report.html", summary_csv="summary.csv", exports="exports/")
        record.save(run_dir)  # the report's provenance shows run.json as it will stay
        write_run_report(run_dir, summary=record.to_dict(), requests=df, telemetry=tel if not tel.empty else None,
                         engine_metrics=raw)  # fmt: skip
    except Exception as e:  # noqa: BLE001
        log.error("could not render report.html: %s", e)
        for k in ("report", "summary_csv", "exports"):
            record.artifacts.pop(k, None)
        record.note("artifacts", "report_failed", f"report rendering failed: {type(e).__name__}: {e}")
        record.save(run_dir)
    shutil.rmtree(work, ignore_errors=True)  # everything in it is now in the parquet files
    return df


# What the single-run report shows of the decision layer for each point (analysis.points columns),
# plus `latency_ci` (the TTFT/TPOT/E2E percentile intervals of analysis.confidence.latency_cis).
DECISION_FIELDS = (
    "verdict", "verdict_reasons", "feasible", "feasibility_reasons", "attainment", "goodput_rps",
    "goodput_output_tok_per_s", "output_tok_per_s", "tok_per_s_per_gpu", "tok_per_s_per_user",
    "usd_per_1m_output", "usd_per_1m_output_lo", "usd_per_1m_output_hi", "usd_per_1m_goodput",
    "usd_per_1m_goodput_lo", "usd_per_1m_goodput_hi", "j_per_output_token", "mbu", "decode_bound_tok_per_s",
)  # fmt: skip


def add_point_decisions(record: RunRecord, run_dir: Path, cfg: Any) -> None:
    """Each point's verdict, SLO attainment and $/1M at the run's own slo and pricing, computed
    from the files just written exactly as `python -m analysis.decide <run folder>` does
    (analysis.results.build_table), into summary["decision"]. A failure is a note, not an error."""
    from analysis import results
    from experiments.config import to_plain

    try:
        table = results.build_table(run_dir, slo=cfg.slo, pricing=cfg.pricing,
                                    gpu_catalog={cfg.gpu.name: to_plain(cfg.gpu)})  # fmt: skip
        rows = {(r["point_id"], r["repetition"]): r for r in results.table_for_json(table.points)}
        # details are keyed run_id/point_id: a point measured twice in this run has no interval of its own there
        reps = pd.Series([k[0] for k in rows]).value_counts()
        lat = {pid: results._jsonable((table.details.get(f"{record.run_id}/{pid}") or {}).get("latency_ci"))
               for pid, n in reps.items() if n == 1}  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the measurement stands without its verdicts
        log.warning("per-point decision not computed: %s: %s", type(e).__name__, e)
        record.note("decision", "not_computed", f"per-point verdicts and $/1M not computed: {type(e).__name__}: {e}")
        return
    for p in record.load_points:
        if (row := rows.get((p.point_id, p.repetition))) is not None:
            p.summary["decision"] = {
                "slo": cfg.slo.name, "pricing": cfg.pricing.name, **{k: row.get(k) for k in DECISION_FIELDS},
                "latency_ci": lat.get(p.point_id),
            }  # fmt: skip


def measure_span(record: RunRecord) -> tuple[int | None, int | None]:
    """[first point start, last point end] on the monotonic clock (None when no point ran)."""
    start = min((p.t0_ns for p in record.load_points if p.t0_ns), default=None)
    end = max((p.t_end_ns for p in record.load_points if p.t_end_ns), default=None)
    return start, end


def _timed_identity(df: pd.DataFrame, record: RunRecord) -> pd.DataFrame:
    """Identity columns for time-stamped rows (telemetry, scrapes): the point is found by time."""
    out = df.copy()
    out["load_point"] = point_of_time(out["t_ns"].astype("Int64"), record)
    return point_identity_columns(out, record)


def finish(record: RunRecord, run_dir: Path) -> None:
    record.finished_at_utc = now_utc()
    record.save(run_dir)
