"""A SQL results store: DuckDB views over every run folder under a results root (docs/store.md).

This module is the store's comparison and its command line: `compare(root, a, b)` puts two runs,
variants or experiments side by side, with which side is better by the metric catalog's
direction; `main` is the command over it and over `query`. The SQL views themselves
(`open_store`, `query`; `runs`, `points`, `requests`, ...) are built in experiments.store_views
and re-exported here, so `from experiments import store` gives both.

Side effects: as experiments.store_views (reads run.json and parquet files under the root only, writes nothing:
the connection is locked down and `query` runs read-only SQL);
`main` prints to stdout and stderr. CLI, exit 2 on bad input (one line):
  python -m experiments.store [--root results] [--format table|csv|json] query "SELECT ..."
  python -m experiments.store [--root results] [--format table|csv|json] compare A B
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from analysis.catalog import direction_of
from experiments.store_views import (
    EMPTY_COLUMNS,
    FILE_SCHEMA,
    IDENTITY,
    PARQUET_VIEWS,
    POINT_FILE_SUFFIX,
    POINT_SCHEMA,
    RUN_SCHEMA,
    StoreError,
    open_store,
    query,
    sql_literal,
)

__all__ = [
    "COMPARE_METRICS", "EMPTY_COLUMNS", "EXIT_BAD_INPUT", "FILE_SCHEMA", "IDENTITY", "INTERVALS", "KINDS", "PARQUET_VIEWS",
    "POINT_FILE_SUFFIX", "POINT_SCHEMA", "RUN_SCHEMA", "USABLE_STATUSES", "Selection", "StoreError", "compare", "main",
    "open_store", "query", "render", "render_compare", "resolve",
]  # fmt: skip

EXIT_BAD_INPUT = 2

# compare: the metrics shown per point, and those whose run.json carries an interval (decision lo/hi)
COMPARE_METRICS = ("ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99", "e2e_ms_p50", "e2e_ms_p99",
                   "output_tok_per_s", "achieved_rate_rps", "attainment", "goodput_rps", "usd_per_1m_output",
                   "usd_per_1m_goodput")  # fmt: skip
INTERVALS = {m: (f"{m}_lo", f"{m}_hi") for m in ("usd_per_1m_output", "usd_per_1m_goodput")}
KINDS = ("run", "variant", "label", "experiment")


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
    paths = ", ".join(sql_literal(p) for p in sel.paths)
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
