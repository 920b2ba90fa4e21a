"""A SQL results store: DuckDB views over every run folder under a results root (docs/store.md).

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
`query(root, sql)` runs SQL; `compare(root, a, b)` puts two runs, variants or experiments side by side.

Side effects: reads run.json files and parquet footers when the store opens, parquet files when
a query runs; writes nothing (the connection is in memory). CLI, exit 2 on bad input (one line):
  python -m experiments.store [--root results] [--format table|csv|json] query "SELECT ..."
  python -m experiments.store [--root results] [--format table|csv|json] compare A B
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.catalog import direction_of
from analysis.records.layout import find_runs
from analysis.records.run import read_run_json
from analysis.results import RunInfo, label_variants

EXIT_BAD_INPUT = 2
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

# compare: the metrics shown per point, and those whose run.json carries an interval (decision lo/hi)
COMPARE_METRICS = ("ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99", "e2e_ms_p50", "e2e_ms_p99",
                   "output_tok_per_s", "achieved_rate_rps", "attainment", "goodput_rps", "usd_per_1m_output",
                   "usd_per_1m_goodput")  # fmt: skip
INTERVALS = {m: (f"{m}_lo", f"{m}_hi") for m in ("usd_per_1m_output", "usd_per_1m_goodput")}
KINDS = ("run", "variant", "label", "experiment")


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
    return con


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
    files = "[" + ", ".join(_lit(p) for p in paths) + "]"
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


def _lit(s: str) -> str:
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


def _run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    try:
        cur = con.execute(sql)
        return cur.df() if cur.description else pd.DataFrame()
    except duckdb.Error as e:
        raise StoreError(_one_line(e)) from None


def _one_line(e: Exception) -> str:
    """DuckDB's message without its caret lines, on one line."""
    return " ".join(x.strip() for x in str(e).splitlines() if x.strip().strip("^"))


# -- comparing --------------------------------------------------------------------------------------
@dataclass
class Selection:
    """What one side of a comparison resolved to."""

    spec: str
    kind: str  # run | variant | label | experiment
    name: str
    paths: list[str]  # run folders
    left_out: list[str] = field(default_factory=list)  # run_ids not status ok

    def describe(self) -> str:
        n = len(self.paths) + len(self.left_out)
        out = f"{self.kind} {self.name}: {len(self.paths)} usable run(s) of {n}"
        return out + (f" ({len(self.left_out)} failed or rejected, left out: {', '.join(self.left_out)})" if self.left_out else "")


USABLE_STATUSES = ("ok", "cancelled", "running")


def resolve(con: duckdb.DuckDBPyConnection, spec: str, root: Path | None = None) -> Selection:
    """A run_id, variant_id (or a prefix of at least 6 hex digits), variant label, or experiment name
    or folder (relative to the root). `run:`, `variant:`, `label:`, `experiment:` pick one kind."""
    runs = con.execute("SELECT run_id, variant_id, variant_label, experiment, status, path, rel_path FROM runs").df()
    kind, _, rest = spec.partition(":")
    kinds, name = ((kind,), rest) if kind in KINDS and rest else (KINDS, spec)
    found: dict[str, tuple[str, pd.DataFrame]] = {}  # kind -> (resolved name, rows)
    for k in kinds:
        got = _match(runs, k, name, root)
        if got is not None:
            found[k] = got
    if not found:
        raise StoreError(f"no run_id, variant_id (>= 6 hex digits), variant label or experiment named {spec!r}; "
                         "list them: query \"SELECT run_id, variant_id, variant_label, experiment, rel_path FROM runs\"")  # fmt: skip
    distinct = {tuple(sorted(rows["path"])) for _, rows in found.values()}
    if len(distinct) > 1:
        what = " and ".join(f"{k} {resolved} ({len(rows)} run(s))" for k, (resolved, rows) in found.items())
        raise StoreError(f"{spec!r} is ambiguous: {what}; write " + " or ".join(f"{k}:{name}" for k in found))
    k, (resolved, rows) = next(iter(found.items()))
    # as the decision layer: finished points of ok and cancelled launches (a resumed sweep's first
    # launch is cancelled or, killed with -9, still "running"; its finished points count)
    usable = rows["status"].isin(USABLE_STATUSES)
    ok = rows[usable]
    sel = Selection(spec, k, resolved, sorted(ok["path"]), sorted(rows.loc[~usable, "run_id"]))
    if not sel.paths:
        raise StoreError(f"{spec!r} is {k} {resolved} but none of its {len(rows)} run(s) is usable (ok, cancelled or killed with finished points)")
    return sel


def _match(runs: pd.DataFrame, kind: str, name: str, root: Path | None) -> tuple[str, pd.DataFrame] | None:
    """(what `name` resolved to, its runs) for one kind; None when it names nothing of that kind."""
    if kind == "run":
        rows = runs[runs["run_id"] == name]
        if len(rows) > 1:  # sweeps restart job numbers: 0_vllm_awq can exist in several sweep folders
            raise StoreError(f"run_id {name!r} names {len(rows)} run folders ({', '.join(rows['rel_path'])}); "
                             "give the folder instead (experiment:<folder>)")  # fmt: skip
        return (name, rows) if len(rows) else None
    if kind == "variant":
        vid = runs["variant_id"].fillna("")
        hit = runs[(vid == name) | (vid.str.startswith(name) if len(name) >= 6 else False)]
        ids = sorted(set(hit["variant_id"]))
        if len(ids) > 1:
            raise StoreError(f"variant prefix {name!r} matches {len(ids)} variants ({', '.join(ids)}); give more digits")
        return (f"{ids[0]} ({hit['variant_label'].iloc[0]})", hit) if ids else None
    if kind == "label":
        rows = runs[runs["variant_label"] == name]
        return (f"{name} ({rows['variant_id'].iloc[0]})", rows) if len(rows) else None
    folder = name.strip("/")
    if root is not None and Path(name).is_dir():  # a path as typed, e.g. results/exp
        try:
            folder = Path(name).resolve().relative_to(root).as_posix()
        except ValueError:
            pass
    rel = runs["rel_path"]
    rows = runs[(runs["experiment"] == name) | (rel == folder) | rel.str.startswith(folder + "/")]
    return (name, rows) if len(rows) else None


def _side(con: duckdb.DuckDBPyConnection, sel: Selection) -> pd.DataFrame:
    """Per (variant, point): mean, min, max and count across repetitions of each compared metric; for a
    single measurement, its interval where run.json has one."""
    cols = ", ".join(f"p.{c}" for c in (*COMPARE_METRICS, *[x for lh in INTERVALS.values() for x in lh]))
    paths = ", ".join(_lit(p) for p in sel.paths)
    df = con.execute(f"""SELECT r.variant_id, r.variant_label, p.point_id, p.load_value, p.load_unit, {cols}
                         FROM points p JOIN runs r ON r.path = p.run_path
                         WHERE p.run_path IN ({paths}) AND p.complete""").df()  # fmt: skip
    out = []
    for (vid, pid), g in df.groupby(["variant_id", "point_id"], sort=False, dropna=False):
        row: dict[str, Any] = {"variant_id": vid, "variant_label": g["variant_label"].iloc[0], "point_id": pid,
                               "load_value": g["load_value"].iloc[0], "load_unit": g["load_unit"].iloc[0]}  # fmt: skip
        for m in COMPARE_METRICS:
            v = g[m].dropna()
            row[m] = (v.mean() if len(v) else math.nan, len(v))
            if len(v) >= 2:  # repetitions: their spread is the range
                row[m] += (v.min(), v.max(), "range")
            elif len(v) == 1 and m in INTERVALS and g[INTERVALS[m][0]].notna().iloc[0] and g[INTERVALS[m][1]].notna().iloc[0]:
                row[m] += (g[INTERVALS[m][0]].iloc[0], g[INTERVALS[m][1]].iloc[0], "interval")
            else:
                row[m] += (math.nan, math.nan, None)
        out.append(row)
    if not out:
        raise StoreError(f"{sel.spec!r} ({sel.kind} {sel.name}) has no finished load points in its ok or cancelled runs")
    return pd.DataFrame(out).sort_values(["variant_label", "load_value"], kind="stable").reset_index(drop=True)


def _pairs(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[str | None, str | None]]:
    """Which variant of A faces which of B: one variant on a side faces every variant of the other;
    otherwise the same variant_id, then the same label; the rest face nothing."""
    va, vb = list(dict.fromkeys(a["variant_id"])), list(dict.fromkeys(b["variant_id"]))
    if len(va) == 1 or len(vb) == 1:
        return [(x, y) for x in va for y in vb]
    la = dict(zip(a["variant_id"], a["variant_label"], strict=True))
    lb = dict(zip(b["variant_id"], b["variant_label"], strict=True))
    pairs, left = [], list(vb)
    for x in va:
        y = x if x in left else next((y for y in left if lb[y] == la[x]), None)
        pairs.append((x, y))
        if y is not None:
            left.remove(y)
    return pairs + [(None, y) for y in left]


def compare(root: str | Path, a: str, b: str) -> pd.DataFrame:
    """Two runs, variants or experiments side by side: one row per (variant pair, load point, metric).

    Points match by point_id, else by load value and unit. Columns: variant_a/b (labels), load_value,
    load_unit, matched_by, metric, a, a_lo, a_hi, n_a, b, b_lo, b_hi, n_b, delta (b - a), delta_pct,
    better (a | b | same: which side is better by the metric catalog's direction; None when the
    metric has none or a side is missing), overlap (yes | no | n/a), overlap_basis. a/b are means over repetitions; lo/hi are the min/max
    across repetitions ("range") or, for one measurement, run.json's interval ("interval").
    `.attrs["a"]`, `.attrs["b"]` say what each side resolved to.
    """
    con = open_store(root)
    try:
        root = Path(root).resolve()
        sa, sb = resolve(con, a, root), resolve(con, b, root)
        da, db = _side(con, sa), _side(con, sb)
    finally:
        con.close()
    rows = []
    for va, vb in _pairs(da, db):
        pa_ = da[da["variant_id"] == va] if va is not None else da.iloc[0:0]
        pb_ = db[db["variant_id"] == vb] if vb is not None else db.iloc[0:0]
        for ra, rb, how in _match_points(pa_, pb_):
            for m in COMPARE_METRICS:
                rows.append(_metric_row(ra, rb, how, m, pa_, pb_))
    out = pd.DataFrame(rows)
    out.attrs.update(a=sa.describe(), b=sb.describe())
    return out


def _match_points(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[Any, Any, str]]:
    """(A point, B point, how matched): by point_id, then by (load_value, load_unit); unmatched alone."""
    out, used = [], set()
    for _, ra in a.iterrows():
        hit = b.index[(b["point_id"] == ra["point_id"]) & ~b.index.isin(list(used))]
        how = "point_id"
        if not len(hit):
            hit = b.index[(b["load_value"] == ra["load_value"]) & (b["load_unit"] == ra["load_unit"]) & ~b.index.isin(list(used))]
            how = "load_value"
        if len(hit):
            used.add(hit[0])
            out.append((ra, b.loc[hit[0]], how))
        else:
            out.append((ra, None, "only in A"))
    out += [(None, rb, "only in B") for i, rb in b.iterrows() if i not in used]
    return out


def _metric_row(ra: Any, rb: Any, how: str, m: str, da: pd.DataFrame, db: pd.DataFrame) -> dict[str, Any]:
    nan4 = (math.nan, 0, math.nan, math.nan, None)
    a_mean, n_a, a_lo, a_hi, a_basis = ra[m] if ra is not None else nan4
    b_mean, n_b, b_lo, b_hi, b_basis = rb[m] if rb is not None else nan4
    delta = b_mean - a_mean
    pct = delta / a_mean * 100 if a_mean and not math.isnan(a_mean) else math.nan
    if a_basis and b_basis:
        overlap = "yes" if a_lo <= b_hi and b_lo <= a_hi else "no"
        basis = a_basis if a_basis == b_basis else f"{a_basis}/{b_basis}"
    else:
        overlap, basis = "n/a", None
    ref = ra if ra is not None else rb
    better = direction_of(m)
    if better is None or math.isnan(delta):
        side = None
    else:
        side = "same" if delta == 0 else ("b" if (delta < 0) == (better == "lower") else "a")
    return {"variant_a": ra["variant_label"] if ra is not None else (da["variant_label"].iloc[0] if len(da) else None),
            "variant_b": rb["variant_label"] if rb is not None else (db["variant_label"].iloc[0] if len(db) else None),
            "load_value": ref["load_value"], "load_unit": ref["load_unit"], "matched_by": how, "metric": m,
            "a": a_mean, "a_lo": a_lo, "a_hi": a_hi, "n_a": n_a, "b": b_mean, "b_lo": b_lo, "b_hi": b_hi, "n_b": n_b,
            "delta": delta, "delta_pct": pct, "better": side, "overlap": overlap, "overlap_basis": basis}  # fmt: skip


# -- CLI --------------------------------------------------------------------------------------------
USAGE = ("usage: python -m experiments.store [--root results] [--format table|csv|json] "
         "{query \"SELECT ...\" | compare A B}")  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        print(f"store: {message}; {USAGE}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    def common(p: argparse.ArgumentParser, default: Any) -> None:
        # --root/--format before or after the subcommand: the subcommand's copy only counts when given
        # (SUPPRESS), so each parser gets its own actions; shared `parents` would share the defaults
        p.add_argument("--root", default=default or "results", help="results folder (default: results)")
        p.add_argument("--format", choices=("table", "csv", "json"), default=default or "table")

    p = _Parser(prog="python -m experiments.store", description=(__doc__ or "").split("\n", 1)[0])
    common(p, None)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    q = sub.add_parser("query", help="run SQL over the views (runs, points, requests, ...)")
    common(q, argparse.SUPPRESS)
    q.add_argument("sql")
    c = sub.add_parser("compare", help="two runs, variants or experiments side by side")
    common(c, argparse.SUPPRESS)
    c.add_argument("a")
    c.add_argument("b")
    return p


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return json.dumps(json.loads(df.to_json(orient="records", date_format="iso", default_handler=str)), indent=1)
    if df.empty:
        return f"(0 rows) {', '.join(map(str, df.columns))}"
    return df.to_string(index=False, max_colwidth=60)


def render_compare(df: pd.DataFrame) -> str:
    """compare()'s frame as text: one block per variant pair, numbers to 4 significant digits."""
    blocks = []
    for (va, vb), g in df.groupby(["variant_a", "variant_b"], sort=False, dropna=False):
        t = g.drop(columns=["variant_a", "variant_b"]).copy()
        for c in ("a", "a_lo", "a_hi", "b", "b_lo", "b_hi", "delta", "load_value"):
            t[c] = [f"{v:.4g}" if pd.notna(v) else "" for v in t[c]]
        t["delta_pct"] = [f"{v:+.1f}%" if pd.notna(v) else "" for v in t["delta_pct"]]
        t["overlap_basis"] = t["overlap_basis"].fillna("")
        t["better"] = t["better"].fillna("")
        blocks.append(f"A {va}  vs  B {vb}\n" + t.to_string(index=False))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, one line from _Parser.error)
        return int(e.code or 0)
    try:
        if args.cmd == "query":
            print(render(query(args.root, args.sql), args.format))
            return 0
        df = compare(args.root, args.a, args.b)
    except StoreError as e:
        print(f"store: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # what each side resolved to: on stdout with a table, on stderr with csv/json (stdout stays parseable)
    head = f"A = {df.attrs['a']}\nB = {df.attrs['b']}"
    if args.format != "table":
        print(head, file=sys.stderr)
        print(render(df, args.format))
        return 0
    print(head + "\n\n" + render_compare(df))
    print("\ndelta = B - A; overlap: A's and B's lo..hi intersect (interval: run.json's interval of one "
          "measurement; range: min..max across repetitions; n/a: no interval)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
