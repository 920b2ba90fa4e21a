"""What the reports show, assembled from decision.json and the run folders (the view model).

Reads only what the lab wrote: run.json (analysis.records.run.read_run_json), the request rows
(analysis.records.layout.request_files: requests.parquet, or a killed run's points/*.requests.parquet),
telemetry.parquet, engine_metrics.parquet, workload.parquet, engine.log, and decision.json. No
number is computed here that the decision layer already computed: the comparison rows are the
decision's per-point rows (or, for a run report, the per-point decision the run recorded);
only the figures' raw series (request times, samples) and the vLLM-format exports are read
from the records. docs/report.md maps every shown number to its source.

Side effects: reads files; writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from analysis.catalog import direction_of
from analysis.notes import note_text
from analysis.points import as_float as _f

# requests.parquet columns the report reads (chunk_ns only for the ITL export; never output_text)
REPORT_COLUMNS = (
    "load_point", "point_id", "repetition", "phase", "status", "t_sent_ns", "t_first_token_ns", "t_last_token_ns",
    "t_done_ns", "ttft_ms", "tpot_ms", "e2e_ms", "prompt_tokens", "output_tokens", "chunk_ns",
)  # fmt: skip
# Engines the lab has no /metrics mapping for (analysis.telemetry.ENGINE_METRICS): their series are
# recognised by the suffix vLLM uses, whatever the prefix (e.g. the test engine's fake:...).
SUFFIX_CONCEPTS = {"num_requests_running": "running", "num_requests_waiting": "waiting", "kv_cache_usage_perc": "kv_usage_frac"}
LOG_TAIL_LINES = 40
PROMPT_SAMPLES = 3
PROMPT_CHARS = 400


@dataclass
class RunData:
    """One run folder, read for the report."""

    path: Path
    summary: dict[str, Any]
    requests: pd.DataFrame = field(default_factory=pd.DataFrame)
    telemetry: pd.DataFrame | None = None
    engine: pd.DataFrame | None = None  # t_ns + concept columns (running, waiting, kv_usage_frac)
    prompts: list[str] = field(default_factory=list)
    replies: list[dict[str, str]] = field(default_factory=list)  # quality.parquet: prompt, reply (answer)
    log_tail: str | None = None

    @property
    def run_id(self) -> str:
        return str(self.summary.get("run_id") or self.path.name)


# -- reading -------------------------------------------------------------------------------------
def engine_concepts(raw: pd.DataFrame | None, engine: str) -> pd.DataFrame | None:
    """Raw /metrics rows -> t_ns + running / waiting / kv_usage_frac (analysis.telemetry's mapping,
    else by the metric name's suffix, module doc); None without any of them."""
    from analysis.telemetry import engine_series

    if raw is None or raw.empty or "name" not in raw:
        return None
    raw = raw[raw["name"].notna()]
    s = engine_series(raw, engine)
    if len(s.columns) <= 1:
        suffix = raw["name"].astype(str).str.rsplit(":", n=1).str[-1]
        r = raw.assign(concept=suffix.map(SUFFIX_CONCEPTS)).dropna(subset=["concept"])
        if r.empty:
            return None
        s = r.pivot_table(index="t_ns", columns="concept", values="value", aggfunc="sum").reset_index()
        s = s.rename_axis(columns=None)
    keep = ["t_ns", *[c for c in ("running", "waiting", "kv_usage_frac") if c in s.columns]]
    return s[keep].sort_values("t_ns") if len(keep) > 1 else None


def _read_parquet(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame | None:
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        names = pq.read_schema(path).names
        cols = None if columns is None else [c for c in columns if c in names]
        return pq.read_table(path, columns=cols).to_pandas()
    except (OSError, ValueError) as e:  # a truncated or foreign file: the report goes on without it
        return pd.DataFrame({"_error": [f"{path.name}: {e}"]}).iloc[0:0]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 64_000) -> str | None:
    if not path.is_file():
        return None
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def load_run(path: Path, *, summary: dict[str, Any] | None = None, requests: pd.DataFrame | None = None,
             telemetry: pd.DataFrame | None = None, engine_metrics: pd.DataFrame | None = None) -> RunData:  # fmt: skip
    """A run folder for the report; frames already in memory (the end of a run) are used as given."""
    from analysis.records.layout import request_files
    from analysis.records.run import read_run_json
    from analysis.results import read_requests

    path = Path(path)
    s = summary if summary is not None else read_run_json(path / "run.json")
    if requests is None:
        files = request_files(path)
        frames = [read_requests(f, REPORT_COLUMNS) for f in files]
        requests = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (frames[0] if frames else pd.DataFrame())
    if telemetry is None:
        telemetry = _read_parquet(path / "telemetry.parquet")
    if engine_metrics is None:
        engine_metrics = _read_parquet(path / "engine_metrics.parquet", ["t_ns", "name", "value"])
    engine = engine_concepts(engine_metrics, str(((s.get("config") or {}).get("engine") or {}).get("name") or ""))
    return RunData(path=path, summary=s, requests=requests if requests is not None else pd.DataFrame(),
                   telemetry=telemetry if telemetry is not None and not telemetry.empty else None, engine=engine,
                   prompts=prompts_of(path), replies=replies_of(path), log_tail=log_tail(path / "engine.log"))  # fmt: skip


def prompts_of(run_dir: Path) -> list[str]:
    """The first prompts the run sent (workload.parquet), each cut to PROMPT_CHARS: shown as text."""
    wl = _read_parquet(Path(run_dir) / "workload.parquet", ["prompt_idx", "prompt"])
    if wl is None or "prompt" not in wl:
        return []
    return [str(p)[:PROMPT_CHARS] + ("…" if len(str(p)) > PROMPT_CHARS else "")
            for p in wl.sort_values("prompt_idx")["prompt"].head(PROMPT_SAMPLES)]  # fmt: skip


def replies_of(run_dir: Path) -> list[dict[str, str]]:
    """Example replies of the run's quality run (quality.parquet, greedy): the first generic prompts and
    the first tasks with their expected answer, each cut to PROMPT_CHARS; shown as text (escaped)."""
    q = _read_parquet(Path(run_dir) / "quality.parquet", ["set", "prompt_key", "prompt", "gen_text", "answer", "error"])
    if q is None or q.empty or "gen_text" not in q:
        return []

    def cut(t: Any) -> str:
        t = "" if t is None else str(t)
        return t[:PROMPT_CHARS] + ("…" if len(t) > PROMPT_CHARS else "")

    out = []
    for name in ("generic", "tasks"):
        ok = q["error"].isna() if "error" in q else True
        rows = q[(q.get("set") == name) & ok]
        if name == "tasks" and "prompt_key" in rows:  # one task of each kind (the key's prefix: arithmetic-..., capital-...)
            rows = rows.groupby(rows["prompt_key"].astype(str).str.rsplit("-", n=1).str[0], sort=False).head(1)
        for r in rows.head(PROMPT_SAMPLES if name == "generic" else 2 * PROMPT_SAMPLES).itertuples():
            answer = getattr(r, "answer", None)
            answer = None if answer is None or (isinstance(answer, float) and pd.isna(answer)) else answer
            out.append({"set": name, "prompt": cut(r.prompt), "reply": cut(r.gen_text),
                        "answer": None if answer is None else str(answer)})  # fmt: skip
    return out


# -- the comparison rows -------------------------------------------------------------------------
BASE_FIELDS = (
    "variant_id", "variant_label", "run_id", "point_id", "repetition", "load_value", "load_unit", "verdict",
    "verdict_reasons", "feasible", "feasibility_reasons", "attainment", "goodput_rps", "output_tok_per_s",
    "tok_per_s_per_gpu", "tok_per_s_per_user", "usd_per_1m_goodput", "usd_per_1m_goodput_lo", "usd_per_1m_goodput_hi",
    "usd_per_1m_output", "usd_per_1m_output_lo", "usd_per_1m_output_hi", "j_per_output_token", "mbu",
    "gpu_name", "gpu_count",
)  # fmt: skip
LATENCY = ("ttft", "tpot", "e2e")
# The comparison table's numeric columns (row keys) and the catalogued metric each shows: the metric
# catalog's `direction` (analysis.catalog) says which side of a column is better.
COMPARISON_METRICS = {
    "attainment": "attainment", "goodput_rps": "goodput_rps", "output_tok_per_s": "output_tok_per_s",
    "ttft_p50": "ttft_ms_p50", "ttft_p99": "ttft_ms_p99", "tpot_p50": "tpot_ms_p50", "tpot_p99": "tpot_ms_p99",
    "e2e_p50": "e2e_ms_p50", "e2e_p99": "e2e_ms_p99", "usd_per_1m_goodput": "usd_per_1m_goodput",
    "usd_per_1m_output": "usd_per_1m_output", "j_per_output_token": "j_per_output_token", "mbu": "mbu",
}  # fmt: skip


def comparison_directions() -> dict[str, str]:
    """Comparison-table column -> "lower" | "higher" (which side is better), read from the metric
    catalog; a column whose metric has no direction is left out."""
    return {k: d for k, m in COMPARISON_METRICS.items() if (d := direction_of(m)) is not None}


def best_cells(rows: Sequence[Mapping[str, Any]], directions: Mapping[str, str]) -> dict[str, list[int]]:
    """Column -> indices of the rows that hold its best value among the variants' operating points
    (rows marked `is_operating_point`), best by `directions`; no column where fewer than two
    variants have an operating point with a value in it (there is nothing to compare)."""
    ops = [i for i, r in enumerate(rows) if r.get("is_operating_point")]
    out: dict[str, list[int]] = {}
    for col, d in directions.items():
        vals = [(i, v) for i in ops if (v := _f(rows[i].get(col))) is not None]
        if len({rows[i]["variant_id"] for i, _ in vals}) < 2:
            continue
        best = min(v for _, v in vals) if d == "lower" else max(v for _, v in vals)
        out[col] = [i for i, v in vals if v == best]
    return out


def _latencies(out: dict[str, Any], ci: Mapping[str, Any] | None, point_summary: Mapping[str, Any] | None) -> None:
    """p50/p99 of TTFT, TPOT, E2E: the decision's bootstrap estimate and interval where it has one,
    else the run.json point summary's percentile (no interval)."""
    for m in LATENCY:
        for p in ("p50", "p99"):
            c = (ci or {}).get(f"{m}_ms_{p}") or {}
            est = _f(c.get("estimate"))
            if est is None:
                est = _f(((point_summary or {}).get(f"{m}_ms") or {}).get(p))
            out[f"{m}_{p}"] = est
            out[f"{m}_{p}_lo"], out[f"{m}_{p}_hi"] = _f(c.get("lo")), _f(c.get("hi"))
            if c.get("warning"):
                out.setdefault("ci_warnings", []).append(str(c["warning"]))


def point_index(summaries: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(run_id, point_id, repetition) -> the run.json load point (index, summary, window)."""
    out = {}
    for rid, s in summaries.items():
        for lp in s.get("load_points") or []:
            out[(rid, str(lp.get("point_id")), int(lp.get("repetition") or 0))] = lp
    return out


def rows_from_decision(decision: Mapping[str, Any], summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per measured point of decision.json (its `points`), with the latency intervals of
    `point_details` (keyed run_id/point_id/repetition: every measurement its own)."""
    from analysis.points import detail_key

    pts = decision.get("points") or []
    keys = [detail_key(r["run_id"], r["point_id"], r.get("repetition")) for r in pts]
    idx = point_index(summaries)
    rows = []
    for r, k in zip(pts, keys, strict=True):
        out = {f: r.get(f) for f in BASE_FIELDS}
        lp = idx.get((str(r["run_id"]), str(r["point_id"]), int(r.get("repetition") or 0))) or {}
        ci = (decision.get("point_details") or {}).get(k, {}).get("latency_ci")
        _latencies(out, ci, lp.get("summary"))
        out["index"] = lp.get("index")
        rows.append(out)
    return rows


def variant_label_of(summary: Mapping[str, Any]) -> str:
    cfg = summary.get("config") or {}
    return f"{(cfg.get('engine') or {}).get('name', '?')}/{(cfg.get('quant') or {}).get('name', '?')}"


def load_label(value: Any, unit: str) -> str:
    return f"{float(value):g} {unit}" if value is not None else "?"


def rows_from_run(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per load point of run.json: its summary and the per-point decision the run recorded
    (experiments.postrun.add_point_decisions: the same numbers as analysis.decide on the folder)."""
    from analysis.records.run import load_unit

    kind = ((summary.get("config") or {}).get("traffic") or {}).get("kind")
    rows = []
    for lp in sorted(summary.get("load_points") or [], key=lambda p: p["index"]):
        s = lp.get("summary") or {}
        d = s.get("decision") or {}
        value = lp.get("load_value", lp.get("value"))
        out: dict[str, Any] = {f: d.get(f) for f in BASE_FIELDS}
        out.update(variant_id=summary.get("variant_id"), variant_label=variant_label_of(summary),
                   run_id=summary.get("run_id"), point_id=lp.get("point_id"), repetition=lp.get("repetition") or 0,
                   load_value=value, load_unit=lp.get("load_unit") or load_unit(kind), index=lp["index"])  # fmt: skip
        if out["output_tok_per_s"] is None:
            out["output_tok_per_s"] = _f(s.get("output_tok_per_s"))
        if out["tok_per_s_per_user"] is None:
            out["tok_per_s_per_user"] = _f(s.get("interactivity_tok_per_s"))
        if out["j_per_output_token"] is None:
            out["j_per_output_token"] = _f((s.get("energy") or {}).get("j_per_output_token"))
        out["verdict_reasons"] = out["verdict_reasons"] or []
        out["feasibility_reasons"] = out["feasibility_reasons"] or []
        _latencies(out, d.get("latency_ci"), s)
        rows.append(out)
    return rows


def run_knee(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's own knee over its rows, as analysis.knee defines it on measured points: the last
    SLO-feasible valid load before the first infeasible one (no interpolation here)."""
    valid = sorted([r for r in rows if r.get("verdict") not in (None, "invalid")], key=lambda r: float(r["load_value"]))
    knee = None
    for r in valid:
        if not r.get("feasible"):
            return {"knee_load": knee["load_value"] if knee else None, "above_load": r["load_value"],
                    "status": "bracketed" if knee else "none_feasible", "row": knee}  # fmt: skip
        knee = r
    return {"knee_load": knee["load_value"] if knee else None, "above_load": None,
            "status": "all_feasible" if knee else "no_valid_points", "row": knee}  # fmt: skip


# -- text helpers --------------------------------------------------------------------------------
def slo_text(slo: Mapping[str, Any] | None) -> str:
    """'TTFT p99 ≤ 500 ms, TPOT p99 ≤ 50 ms; ≥ 90 % of requests meet every threshold'."""
    from analysis.slo import thresholds

    if not slo:
        return "no SLO recorded"
    th = thresholds(SimpleNamespace(**{k: slo.get(k) for k in (
        "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "percentile", "ttft_percentile", "tpot_percentile", "itl_percentile",
        "e2e_percentile")}))  # fmt: skip
    parts = [f"{t.metric.removesuffix('_ms').upper()} p{t.percentile:g} ≤ {t.limit_ms:g} ms" for t in th]
    tgt = _f(slo.get("attainment_target"))
    att = f"≥ {tgt * 100:g} % of requests meet every threshold" if tgt is not None else ""
    return f"{slo.get('name', '?')}: " + (", ".join(parts) or "no latency threshold") + (f"; {att}" if att else "")


def slo_limits(slo: Mapping[str, Any] | None) -> dict[str, Any]:
    s = dict(slo or {})
    return {k: s.get(k) for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "percentile", "ttft_percentile",
                                  "tpot_percentile", "e2e_percentile")}  # fmt: skip


def engine_options(summary: Mapping[str, Any]) -> list[str]:
    """The launch settings that were set (not null / empty), as key=value: what to deploy with."""
    lf = summary.get("launch_fields") or {}
    skip = {"name", "launcher", "image", "base_url", "api_key_env", "env"}
    out = []
    eng = lf.get("engine") or {}
    for k, v in eng.items():
        if k in skip or v in (None, [], {}, ""):
            continue
        if k == "speculative":
            if (v or {}).get("method"):
                out.append("speculative=" + json.dumps({kk: vv for kk, vv in v.items() if vv is not None}))
            continue
        out.append(f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}")
    if eng.get("launcher") not in (None, "native"):
        out.append(f"launcher={eng['launcher']}" + (f" image={eng['image']}" if eng.get("image") else ""))
    for k, v in (lf.get("quant") or {}).items():
        if k != "name" and v not in (None, "auto"):
            out.append(f"quant.{k}={v}")
    return out


def differing_settings(launch: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """variant_id -> the launch settings (key=value, flattened) in which the variants differ: what
    distinguishes each one from the others (analysis.results labels variants by the same rule)."""
    from analysis.results import flatten

    flat = {vid: flatten(dict(lf)) for vid, lf in launch.items()}
    keys = sorted({k for f in flat.values() for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flat.values()}) > 1]
    return {vid: [f"{k}={f.get(k)}" for k in differ] for vid, f in flat.items()}


def gpu_text(summary: Mapping[str, Any]) -> str:
    g = (summary.get("config") or {}).get("gpu") or {}
    prov = (summary.get("provenance") or {}).get("gpu") or {}
    if int(g.get("count") or 0) == 0:
        cpu = (summary.get("provenance") or {}).get("cpu_model")
        return "no GPU: CPU host" + (f" ({cpu}, {summary['provenance'].get('cpu_count')} cores)" if cpu else "")
    names = sorted({x.get("name") for x in prov.get("gpus") or [] if x.get("name")})
    txt = f"{g.get('name')} × {g.get('count')}"
    if names:
        txt += " · seen: " + ", ".join(names)
    if prov.get("driver_version"):
        txt += f" · driver {prov['driver_version']}, CUDA {prov.get('cuda_driver_version', '?')}"
    return txt


def usd(v: Any) -> str:
    v = _f(v)
    if v is None:
        return "—"
    return f"${v:,.4g}" if abs(v) < 1000 else f"${v:,.0f}"


def usd_ci(v: Any, lo: Any, hi: Any) -> str:
    s = usd(v)
    if _f(lo) is not None and _f(hi) is not None:
        s += f" [{usd(lo)}, {usd(hi)}]"
    return s


# -- provenance and validity ---------------------------------------------------------------------
def provenance(run: RunData | None, summary: Mapping[str, Any], label: str = "", skipped: str | None = None) -> dict[str, Any]:
    """What a reviewer needs to reproduce or trust one run (its folder's files, no derived numbers)."""
    eng = summary.get("engine") or {}
    prov = summary.get("provenance") or {}
    cfg = summary.get("config") or {}
    return {
        "run_id": summary.get("run_id") or (run.run_id if run else "?"),
        "label": label or variant_label_of(summary), "status": summary.get("status"), "skipped": skipped,
        "path": str(run.path) if run else "",
        "started": summary.get("started_at_utc"), "finished": summary.get("finished_at_utc"),
        "engine": " ".join(str(x) for x in (eng.get("name") or (cfg.get("engine") or {}).get("name"), eng.get("dist"),
                                            eng.get("version")) if x) or "—",
        "argv": " ".join(str(a) for a in ((eng.get("plan") or {}).get("argv") or [])),
        "time_to_ready_s": eng.get("time_to_ready_s"),
        "quant": (cfg.get("quant") or {}).get("name"), "effective_quant": eng.get("effective_quant"),
        "gpu": gpu_text(summary),
        "git": (str(prov.get("git_sha") or "?")[:12] + (" (dirty)" if prov.get("git_dirty") else "")) if prov else "—",
        "python": prov.get("python"), "platform": prov.get("platform"), "lab_version": prov.get("lab_version"),
        "packages": prov.get("packages") or {}, "engine_packages": eng.get("packages") or {},
        "placement": (summary.get("placement") or {}).get("reason"),
        "host_bandwidth": summary.get("host_bandwidth"),
        "model": model_source_text(prov.get("model")),
        "config_json": json.dumps(cfg, indent=2, sort_keys=True, default=str),
        "overrides": summary.get("overrides") or [],
        "prompts": run.prompts if run else [], "replies": run.replies if run else [], "log_tail": run.log_tail if run else None,
    }  # fmt: skip


def model_source_text(m: Any) -> str | None:
    """One line on where a locally built model came from (run.json provenance.model), or None."""
    if not isinstance(m, Mapping) or not m.get("package"):
        return None
    parts = [f"{m.get('model') or '?'}: {m.get('file') or '?'} from {m.get('index') or 'PyPI'} "
             f"{m['package']}=={m.get('version') or '?'}"]  # fmt: skip
    if m.get("file_sha256"):
        parts.append(f"sha256 {str(m['file_sha256'])[:16]}…")
    if m.get("license"):
        parts.append(f"licence {m['license']}")
    if m.get("transform"):
        parts.append(str(m["transform"]))
    return " · ".join(parts)


def run_validity(summary: Mapping[str, Any], where: str) -> list[dict[str, str]]:
    """run.json's own notes, failure, telemetry and scrape gaps."""
    out = []
    if summary.get("failure"):
        out.append({"where": where, "severity": "invalid", "message": f"run {summary.get('status')}: "
                    f"{summary['failure'].get('reason')}"})  # fmt: skip
    for n in summary.get("notes") or []:
        out.append({"where": where, "severity": "warn", "message": note_text(n)})
    for block in ("telemetry", "engine_metrics"):
        for n in (summary.get(block) or {}).get("gaps") or []:
            out.append({"where": where, "severity": "info", "message": f"{block}: {note_text(n)}"})
    for lp in summary.get("load_points") or []:
        s = lp.get("summary") or {}
        lbl = f"{where} · {load_label(lp.get('load_value', lp.get('value')), lp.get('load_unit') or '')}".rstrip()
        if lp.get("interrupted") or lp.get("aborted"):
            out.append({"where": lbl, "severity": "invalid",
                        "message": f"point not finished: {lp.get('aborted') or 'interrupted'}"})  # fmt: skip
        for p in lp.get("problems") or []:
            out.append({"where": lbl, "severity": "warn", "message": str(p)})
        lg = s.get("loadgen") or {}
        if lg.get("saturated"):
            out.append({"where": lbl, "severity": "warn", "message": "the load generator may have distorted TTFT/ITL "
                        "percentiles: " + "; ".join(note_text(n) for n in lg.get("saturation_reasons") or [])})  # fmt: skip
        if s.get("output_length_mismatches"):
            out.append({"where": lbl, "severity": "warn", "message": f"{s['output_length_mismatches']} successful "
                        "requests returned a different number of tokens than max_tokens"})  # fmt: skip
    return out


def row_validity(rows: Sequence[Mapping[str, Any]], with_variant: bool) -> list[dict[str, str]]:
    out = []
    for r in rows:
        where = (f"{r['variant_label']} · " if with_variant else "") + load_label(r.get("load_value"), r.get("load_unit") or "")
        if int(r.get("repetition") or 0):
            where += f" · rep {r['repetition']}"
        for v in r.get("verdict_reasons") or []:
            out.append({"where": where, "severity": str(v.get("severity") or r.get("verdict") or "warn") if isinstance(v, dict)
                        else str(r.get("verdict") or "warn"), "message": note_text(v)})  # fmt: skip
        for m in r.get("feasibility_reasons") or []:
            out.append({"where": where, "severity": "SLO", "message": str(m)})
        for w in dict.fromkeys(r.get("ci_warnings") or []):
            out.append({"where": where, "severity": "info", "message": w})
    return out


SEVERITY_ORDER = {"invalid": 0, "excluded": 1, "warn": 2, "SLO": 3, "info": 4}


def sort_validity(items: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(items, key=lambda x: SEVERITY_ORDER.get(x["severity"], 5))


# -- figures' inputs -----------------------------------------------------------------------------
def point_windows(summary: Mapping[str, Any], label_of: Any = None) -> list[dict[str, Any]]:
    out = []
    for lp in sorted(summary.get("load_points") or [], key=lambda p: p["index"]):
        v = lp.get("load_value", lp.get("value"))
        lbl = label_of(lp) if label_of else f"#{lp['index']} {load_label(v, lp.get('load_unit') or '')}"
        out.append({"label": lbl, "t0_ns": lp.get("t0_ns"), "t_end_ns": lp.get("t_end_ns")})
    return out


def timeline_origin(summary: Mapping[str, Any], requests: pd.DataFrame) -> int | None:
    t0 = min((int(p["t0_ns"]) for p in summary.get("load_points") or [] if p.get("t0_ns")), default=None)
    if t0 is None and len(requests) and "t_sent_ns" in requests and requests["t_sent_ns"].notna().any():
        t0 = int(requests["t_sent_ns"].dropna().min())
    return t0


def ok_values(requests: pd.DataFrame, mask: Any, col: str) -> np.ndarray:
    if not len(requests) or col not in requests:
        return np.zeros(0)
    m = requests[mask & (requests["phase"] == "measure") & (requests["status"] == "ok")]
    return m[col].astype("Float64").dropna().to_numpy(dtype=float)


def turn_series_of_run(summary: Mapping[str, Any], labels: Mapping[int, str], palette: Sequence[str]) -> list[dict[str, Any]]:
    """Per load point of a run with multi-turn sessions: {label, color, by_turn} for the turn plot
    (run.json summary.sessions.by_turn); [] when no point had sessions."""
    out = [{"label": labels.get(p["index"], f"#{p['index']}"), "color": palette[k % len(palette)],
            "by_turn": ((p.get("summary") or {}).get("sessions") or {}).get("by_turn")}
           for k, p in enumerate(summary.get("load_points") or [])]  # fmt: skip
    return out if any(x["by_turn"] for x in out) else []


def turn_series_at(summaries: Mapping[str, Any], ops: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                   labels: Mapping[str, str], colors: Mapping[str, str]) -> list[dict[str, Any]]:  # fmt: skip
    """Per variant at its operating point (`ops`: variant -> (point_id, why)), its turn series where
    the point's traffic was multi-turn."""
    series = []
    for vid, (pid, _why) in ops.items():
        row = next((r for r in rows if r["variant_id"] == vid and r["point_id"] == pid), None)
        s = summaries.get(row["run_id"]) if row else None
        lp = next((p for p in (s or {}).get("load_points") or [] if p.get("point_id") == pid), None)
        by_turn = (((lp or {}).get("summary") or {}).get("sessions") or {}).get("by_turn")
        if by_turn and row is not None:
            series.append({"label": f"{labels.get(vid, vid)} @ {load_label(row['load_value'], row['load_unit'])}",
                           "color": colors.get(vid), "by_turn": by_turn})  # fmt: skip
    return series
