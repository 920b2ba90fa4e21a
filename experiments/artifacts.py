"""Writing a run's artifacts into its folder.

:func:`write_artifacts` turns what a run recorded (point results, the samplers' raw JSONL) into
the parquet files, each row carrying the identity columns (docs/identity.md), and finishes
run.json. What comes after (each point's decision, report.html) is experiments.postrun. The run
record itself (run.json, schema v2, and its reader) is the results contract, analysis.records.run.

Side effects: writes files in the run folder (run.json and parquet atomically, logs). No
processes, no network.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.records.atomic import atomic_path
from analysis.records.layout import point_file
from analysis.records.run import RunRecord, now_utc

log = logging.getLogger("servelab")


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
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)


def write_point_requests(record: RunRecord, result: Any, run_dir: Path) -> str:
    """The point's request rows, durable the moment it finished: ``points/<index>.requests.parquet``
    (identity columns included). Written before run.json records the point, so a point that
    run.json lists as finished always has its rows on disk; write_artifacts folds these files into
    requests.parquet at the end and removes them. Returns the file's path relative to the run."""
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


@dataclass
class Written:
    """The frames just written (requests with their derived columns; raw telemetry and scrapes),
    handed to what comes after the artifacts (experiments.postrun) so nothing is read twice."""

    requests: pd.DataFrame
    telemetry: pd.DataFrame
    engine_metrics: pd.DataFrame


def write_artifacts(record: RunRecord, results: list[Any], run_dir: Path, work: Path, cfg: Any) -> Written | None:
    """Write requests/telemetry/engine_metrics/loadgen parquet and the logs; finish run.json.

    The summaries come from analysis.run_summary (pure); this function only reads the raw JSONL
    and writes files. Never raises: a failure is noted in run.json and work/ is kept, so nothing
    recorded is lost (returns None then). Returns the frames written; experiments.postrun adds
    each point's decision and renders the report from them, then removes work/.
    """
    from analysis.run_summary import engine_metrics_summary, point_resources, telemetry_summary
    from loadgen.jsonl import read_jsonl

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
        return None
    record.artifacts.update(arts)
    finish(record, run_dir)
    return Written(requests=df, telemetry=tel, engine_metrics=raw)


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
