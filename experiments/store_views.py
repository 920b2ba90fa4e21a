"""The SQL views of the results store: DuckDB over every run folder under a results root (docs/store.md).

`open_store(root)` returns an in-memory DuckDB connection with these views:

- `runs`, `points`: one row per run.json / per `load_points[]` entry, built from the run.json
  files (read through analysis.records.run.read_run_json, so v1 files get the v2 identity)
  into small in-memory tables: they are metadata, a few rows per run.
- `requests`, `telemetry`, `engine_metrics`, `loadgen`, `workload`: views over the parquet
  files where they lie (read_parquet over the file list, union_by_name): nothing is copied.
  `requests` also reads `<run folder>/points/*.requests.parquet` (the per-point files a run
  keeps until its requests.parquet is written) for run folders without a readable
  requests.parquet only, so no request is counted twice.
- `files`: every parquet file found, its kind, run folder, row count and whether a view reads it.

All join on the identity fields `run_id, variant_id, point_id, repetition` (docs/identity.md).
`query(root, sql)` runs SQL over them. Comparing two runs, variants or experiments, and the
command line, are in experiments.store, which also re-exports this module's public names.

Locked down (docs/store.md, docs/security.md): once the views are made the connection reads files
under the results root only, loads no extension and its settings are locked; `query` runs
read-only statements only (SELECT, including DESCRIBE/SHOW/SUMMARIZE/VALUES, and EXPLAIN).

Side effects: reads run.json files and parquet footers when the store opens, parquet files when
a query runs; writes nothing (the connection is in memory).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.records.layout import find_runs
from analysis.records.run import read_run_json
from analysis.results import RunInfo, label_variants

IDENTITY = ("run_id", "variant_id", "point_id", "repetition")
# parquet views: file name in a run folder -> whether its rows belong to load points
# (point_id/repetition; workload rows are shared by every point of the run: run_id, variant_id only)
PARQUET_VIEWS = {"requests": True, "telemetry": True, "engine_metrics": True, "loadgen": True, "workload": False}
POINT_FILE_SUFFIX = ".requests.parquet"  # <run folder>/points/<anything>.requests.parquet
# What an empty parquet view has, so queries over a kind no run wrote still bind.
EMPTY_COLUMNS = {
    "requests": {"load_point": "BIGINT", "phase": "VARCHAR", "status": "VARCHAR", "ttft_ms": "DOUBLE",
                 "tpot_ms": "DOUBLE", "e2e_ms": "DOUBLE", "output_tokens": "BIGINT"},
    "telemetry": {"load_point": "BIGINT", "t_ns": "BIGINT", "sampler": "VARCHAR"},
    "engine_metrics": {"load_point": "BIGINT", "t_ns": "BIGINT", "name": "VARCHAR", "labels": "VARCHAR",
                       "value": "DOUBLE"},
    "loadgen": {"load_point": "BIGINT", "t_ns": "BIGINT"},
    "workload": {"prompt_idx": "BIGINT"},
}  # fmt: skip

_TS = pa.timestamp("us", tz="UTC")
RUN_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("variant_id", pa.string()), ("variant_label", pa.string()), ("experiment", pa.string()),
    ("status", pa.string()), ("failure_phase", pa.string()), ("failure_reason", pa.string()),
    ("engine_name", pa.string()), ("engine_version", pa.string()), ("quant_name", pa.string()),
    ("model_name", pa.string()), ("gpu_name", pa.string()), ("gpu_count", pa.int64()),
    ("started_at_utc", _TS), ("finished_at_utc", _TS), ("time_to_ready_s", pa.float64()), ("n_points", pa.int64()),
    ("schema_version", pa.int64()), ("upgraded_from", pa.int64()), ("path", pa.string()), ("rel_path", pa.string()),
])  # fmt: skip
# point summary (analysis.metrics.summarize_point) -> points column: latency percentiles
_PCTL = [(f"{m}_{q}", m, q) for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms") for q in ("p50", "p99")]
_SUMMARY = ("offered_rate_rps", "achieved_rate_rps", "measure_window_s", "error_rate", "output_tok_per_s",
            "total_tok_per_s", "interactivity_tok_per_s")  # fmt: skip
_DECISION_FLOAT = ("attainment", "goodput_rps", "goodput_output_tok_per_s", "usd_per_1m_output", "usd_per_1m_output_lo",
                   "usd_per_1m_output_hi", "usd_per_1m_goodput", "usd_per_1m_goodput_lo",
                   "usd_per_1m_goodput_hi")  # fmt: skip
POINT_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("variant_id", pa.string()), ("point_id", pa.string()), ("repetition", pa.int64()),
    ("load_point", pa.int64()), ("load_value", pa.float64()), ("load_unit", pa.string()),
    ("t0_ns", pa.int64()), ("t_end_ns", pa.int64()), ("complete", pa.bool_()), ("interrupted", pa.bool_()),
    ("aborted", pa.string()), ("problems", pa.list_(pa.string())),
    ("requests_total", pa.int64()), ("requests_ok", pa.int64()),
    *[(c, pa.float64()) for c in _SUMMARY], *[(c, pa.float64()) for c, _, _ in _PCTL],
    ("energy_j", pa.float64()), ("j_per_output_token", pa.float64()),
    ("slo", pa.string()), ("pricing", pa.string()), ("verdict", pa.string()),
    ("verdict_reason_kinds", pa.list_(pa.string())), ("feasible", pa.bool_()),
    *[(c, pa.float64()) for c in _DECISION_FLOAT],
    ("run_path", pa.string()),
])  # fmt: skip
FILE_SCHEMA = pa.schema([
    ("kind", pa.string()), ("path", pa.string()), ("run_path", pa.string()), ("run_id", pa.string()),
    ("variant_id", pa.string()), ("rows", pa.int64()), ("used", pa.bool_()), ("why_not", pa.string()),
])  # fmt: skip

class StoreError(ValueError):
    """Bad input to the store (one clear line, naming the fix)."""


# -- opening ----------------------------------------------------------------------------------------
def open_store(root: str | Path = "results") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views over `root` (a results folder or one run folder).

    The file lists are taken now: files written after this call are seen by the next open_store.
    """
    root = Path(root)
    if not root.is_dir():
        raise StoreError(f"no such folder {root}: pass --root <results folder>")
    root = root.resolve()
    infos = _read_runs(root)
    files = _find_files(root, {str(i.path): i for i in infos})
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")  # timestamps print the same on every machine
    _table(con, "runs", [_run_row(i, root) for i in infos], RUN_SCHEMA)
    _table(con, "points", _point_rows(infos), POINT_SCHEMA)
    _table(con, "files", files, FILE_SCHEMA)
    for name, per_point in PARQUET_VIEWS.items():
        kinds = {name, "requests_point"} if name == "requests" else {name}
        try:
            _parquet_view(con, name, [f["path"] for f in files if f["used"] and f["kind"] in kinds], per_point)
        except duckdb.Error as e:  # e.g. a column with types DuckDB cannot unify across files
            con.close()
            raise StoreError(f"cannot read the {name} files under {root}: {_one_line(e)}") from None
    lock_down(con, root)
    return con


def lock_down(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """After the views are made: the connection may read files under `root` only (no other file,
    no network, no database to attach), loads and installs no extension, and its configuration
    cannot be changed back (lock_configuration). Results folders may come from others
    (docs/security.md): a query is SQL over them, never a way to the rest of the machine."""
    folder = str(root).rstrip("/") + "/"
    for stmt in (f"SET allowed_directories = [{sql_literal(folder)}]",
                 "SET enable_external_access = false",
                 "SET autoinstall_known_extensions = false",
                 "SET autoload_known_extensions = false",
                 "SET allow_community_extensions = false",
                 "SET lock_configuration = true"):  # fmt: skip
        con.execute(stmt)


def _read_runs(root: Path) -> list[RunInfo]:
    """RunInfo per run folder (analysis.results' reader and labels); unreadable run.json kept, marked."""
    infos = []
    for p in find_runs(root):
        try:
            s = read_run_json(p / "run.json")
        except (OSError, ValueError) as e:  # JSONDecodeError and a newer schema are ValueErrors
            infos.append(RunInfo(p, {}, "", skipped=f"unreadable run.json: {' '.join(str(e).split())}"))
            continue
        infos.append(RunInfo(p, s, str(s.get("variant_id") or "")))
    label_variants(infos)
    return infos


def _find_files(root: Path, runs: dict[str, RunInfo]) -> list[dict[str, Any]]:
    """Every *.parquet under root with its kind and run folder; `used` says whether a view reads it."""
    out = []
    for f in sorted(root.rglob("*.parquet")):
        if f.parent.name == "points" and f.name.endswith(POINT_FILE_SUFFIX):
            kind, run_dir = "requests_point", f.parent.parent
        elif f.stem in PARQUET_VIEWS:
            kind, run_dir = f.stem, f.parent
        else:
            kind, run_dir = None, f.parent
        info = runs.get(str(run_dir))
        row = {"kind": kind, "path": str(f), "run_path": str(run_dir), "run_id": info.run_id if info else None,
               "variant_id": (info.variant_id or None) if info else None, "rows": None, "used": kind is not None,
               "why_not": None if kind else "not a known artifact name"}  # fmt: skip
        if kind:
            try:  # the footer only; a file being written (or cut short by a kill) would fail every query
                row["rows"] = pq.read_metadata(f).num_rows
            except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad footer
                row.update(used=False, why_not=f"unreadable: {' '.join(str(e).split())}")
        out.append(row)
    whole = {r["run_path"] for r in out if r["kind"] == "requests" and r["used"]}
    for r in out:
        if r["kind"] == "requests_point" and r["used"] and r["run_path"] in whole:
            r.update(used=False, why_not="superseded by the run's requests.parquet")
    return out


def _run_row(info: RunInfo, root: Path) -> dict[str, Any]:
    s, cfg = info.summary, info.config
    eng, fail = s.get("engine") or {}, s.get("failure") or {}
    rel = info.path.relative_to(root).as_posix() if info.path != root else "."
    return {
        "run_id": info.run_id, "variant_id": info.variant_id or None, "variant_label": info.variant_label or None,
        "experiment": s.get("experiment"), "status": s.get("status") if s else "unreadable",
        "failure_phase": fail.get("phase"), "failure_reason": fail.get("reason") if s else info.skipped,
        "engine_name": eng.get("name") or (cfg.get("engine") or {}).get("name"), "engine_version": eng.get("version"),
        "quant_name": (cfg.get("quant") or {}).get("name"), "model_name": (cfg.get("model") or {}).get("name"),
        "gpu_name": (cfg.get("gpu") or {}).get("name"), "gpu_count": _int((cfg.get("gpu") or {}).get("count")),
        "started_at_utc": _ts(s.get("started_at_utc")), "finished_at_utc": _ts(s.get("finished_at_utc")),
        "time_to_ready_s": _num(eng.get("time_to_ready_s")), "n_points": len(s.get("load_points") or []),
        "schema_version": _int(s.get("schema_version")), "upgraded_from": _int(s.get("upgraded_from")),
        "path": str(info.path), "rel_path": rel,
    }  # fmt: skip


def _point_rows(infos: list[RunInfo]) -> list[dict[str, Any]]:
    rows = []
    for info in infos:
        for p in info.summary.get("load_points") or []:
            s = p.get("summary") or {}
            d = s.get("decision") or {}
            req = s.get("requests") or {}
            interrupted, aborted, t_end = bool(p.get("interrupted")), p.get("aborted"), _int(p.get("t_end_ns"))
            row = {
                "run_id": info.run_id, "variant_id": info.variant_id or None, "point_id": p.get("point_id"),
                "repetition": _int(p.get("repetition")), "load_point": _int(p.get("index")),
                "load_value": _num(p.get("load_value")), "load_unit": p.get("load_unit"), "t0_ns": _int(p.get("t0_ns")),
                "t_end_ns": t_end, "interrupted": interrupted, "aborted": aborted,
                # run.json has no `complete` yet: ran to its end = has an end, not interrupted, not aborted
                "complete": p["complete"] if "complete" in p else (t_end is not None and not interrupted and not aborted),
                "problems": [str(x) for x in p.get("problems") or []],
                "requests_total": _int(req.get("total")), "requests_ok": _int(req.get("ok")),
                **{k: _num(s.get(k)) for k in _SUMMARY},
                **{c: _num((s.get(m) or {}).get(q)) for c, m, q in _PCTL},
                "energy_j": _num((s.get("energy") or {}).get("joules")),
                "j_per_output_token": _num((s.get("energy") or {}).get("j_per_output_token")),
                "slo": d.get("slo"), "pricing": d.get("pricing"), "verdict": d.get("verdict"),
                "verdict_reason_kinds": [str(r.get("kind")) for r in d.get("verdict_reasons") or [] if isinstance(r, dict)],
                "feasible": d.get("feasible") if isinstance(d.get("feasible"), bool) else None,
                **{k: _num(d.get(k)) for k in _DECISION_FLOAT},
                "run_path": str(info.path), "_started": info.summary.get("started_at_utc") or "", "_ok": info.summary.get("status") == "ok",
            }  # fmt: skip
            rows.append(row)
    # v1 run.json recorded no repetition: the order of ok runs per (variant, point) by start time, as
    # analysis.results numbers them for the decision (points of other runs stay null)
    todo = [r for r in rows if r["repetition"] is None and r["_ok"]]
    if todo:
        seen: dict[tuple[Any, Any], int] = {}
        for r in sorted((r for r in rows if r["_ok"]), key=lambda r: (r["_started"], r["run_id"])):
            k = (r["variant_id"], r["point_id"])
            if r["repetition"] is None:
                r["repetition"] = seen.get(k, 0)
            seen[k] = seen.get(k, 0) + 1
    return rows


def _table(con: duckdb.DuckDBPyConnection, name: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    """In-memory table `_<name>` from the metadata rows and the view `name` over it."""
    t = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    con.register("_arrow", t)
    con.execute(f"CREATE TABLE _{name} AS SELECT * FROM _arrow")
    con.unregister("_arrow")
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}")


def _parquet_view(con: duckdb.DuckDBPyConnection, name: str, paths: list[str], per_point: bool) -> None:
    """The view `name` over the files, identity columns first.

    v1 files carry no identity columns: run_id/variant_id then come from the run folder's run.json
    and point_id/repetition from its load point (`load_point` = the point's index). v2 rows keep
    what they carry (coalesce), so a telemetry row between points keeps its null point_id.
    """
    ident = list(IDENTITY if per_point else IDENTITY[:2])
    if not paths:
        empty = {c: ("BIGINT" if c == "repetition" else "VARCHAR") for c in ident} | EMPTY_COLUMNS[name]
        cols = ", ".join(f"NULL::{t} AS {c}" for c, t in empty.items())
        con.execute(f"CREATE VIEW {name} AS SELECT {cols}, NULL::VARCHAR AS filename WHERE false")
        return
    files = "[" + ", ".join(sql_literal(p) for p in paths) + "]"
    con.execute(f"CREATE VIEW _{name}_files AS SELECT * FROM read_parquet({files}, union_by_name = true, filename = true)")
    have = {r[0] for r in con.execute(f"DESCRIBE _{name}_files").fetchall()}
    sel = [f"coalesce(r.{c}, f.{c})" if c in have else f"f.{c}" for c in ("run_id", "variant_id")]
    join = "LEFT JOIN _files f ON f.path = r.filename"
    if per_point:
        if "load_point" in have:  # the run's load point by its index, for rows that carry no identity
            join += " LEFT JOIN _points p ON p.run_path = f.run_path AND p.load_point = r.load_point"
            sel += [f"coalesce(r.{c}, p.{c})" if c in have else f"p.{c}" for c in ("point_id", "repetition")]
        else:
            sel += [f"r.{c}" if c in have else f"NULL::{t}" for c, t in (("point_id", "VARCHAR"), ("repetition", "BIGINT"))]
    keep = [c for c in ident if c in have]
    star = "r.*" + (f" EXCLUDE ({', '.join(keep)})" if keep else "")
    cols = ", ".join(f"{e} AS {c}" for e, c in zip(sel, ident, strict=True))
    con.execute(f"CREATE VIEW {name} AS SELECT {cols}, {star} FROM _{name}_files r {join}")


def sql_literal(s: str) -> str:
    """`s` as a SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _int(v: Any) -> int | None:
    f = _num(v)
    return int(f) if f is not None else None


def _ts(v: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(v)) if v else None
    except ValueError:
        return None


# -- querying ---------------------------------------------------------------------------------------
def query(root: str | Path, sql: str) -> pd.DataFrame:
    """The result of `sql` over the store at `root` (empty frame for statements that return nothing).

    Bad SQL raises StoreError with DuckDB's message on one line.
    """
    con = open_store(root)
    try:
        return _run_sql(con, sql)
    finally:
        con.close()


READ_ONLY_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})


def _run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    try:
        kinds = [s.type for s in con.extract_statements(sql)]
    except duckdb.Error as e:
        raise StoreError(_one_line(e)) from None
    if bad := [k for k in kinds if k not in READ_ONLY_STATEMENTS]:
        raise StoreError(f"query runs read-only SQL only (SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); "
                         f"got {', '.join(sorted({k.name for k in bad}))}")  # fmt: skip
    try:
        cur = con.execute(sql)
    except duckdb.Error as e:
        raise StoreError(_one_line(e)) from None
    if cur is None:  # empty, or only comments: DuckDB runs nothing and returns no cursor
        raise StoreError(f"no SQL statement in {sql!r}; give one, e.g. query \"SELECT run_id, status FROM runs\"")
    try:
        return cur.df() if cur.description else pd.DataFrame()
    except duckdb.Error as e:
        raise StoreError(_one_line(e)) from None


def _one_line(e: Exception) -> str:
    """DuckDB's message without its caret lines, on one line."""
    return " ".join(x.strip() for x in str(e).splitlines() if x.strip().strip("^"))
