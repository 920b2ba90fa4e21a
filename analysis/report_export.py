"""Exports written next to a report: summary.csv and one `vllm bench serve`-style JSON per point. Pure
except :func:`write_exports`.

summary.csv: one row per measured point (variant x load point x repetition), the columns of the
report's comparison table (:data:`CSV_COLUMNS`), the same numbers.

exports/<run_id>_point<index>.json: the metrics of one point under the key names that vLLM's
benchmark writes (vllm/benchmarks/serve.py of vllm 0.32.0: ``calculate_metrics`` and the
``result`` dict of ``benchmark``, ``process_one_metric`` for the mean/median/std/pNN keys),
computed the way vLLM computes them, over the point's measure-phase requests:
  completed              requests with status ok
  failed                 measure requests sent and not ok (error, timeout, cancelled); dropped ones
                         were never sent and are not counted (vLLM has no such state)
  duration               last done - first send of the measure-phase requests (s): vLLM's
                         benchmark_duration spans the first send to the last completion
  total_input_tokens     sum of the ok requests' prompt tokens (server usage)
  total_output_tokens    sum of the ok requests' output tokens (server usage)
  request_throughput     completed / duration
  output_throughput      total_output_tokens / duration
  total_token_throughput (total_input_tokens + total_output_tokens) / duration
  mean/median/std/pNN_ttft_ms   over ok requests: first content chunk - send (vLLM: ttft, the first
                         chunk carrying choices - the request's start)
  ..._e2el_ms            last content chunk - send: vLLM's `latency` is the last chunk carrying
                         choices - start (endpoint_request_func.py), not the stream's end, so this
                         is not servelab's E2E (stream end - send)
  ..._tpot_ms            (latency - ttft) / (output_tokens - 1) over ok requests with > 1 token:
                         vLLM's formula, which with that latency is servelab's TPOT
  ..._itl_ms             gaps between consecutive content chunks, pooled over ok requests (vLLM:
                         itl, the gaps between chunks carrying choices)
std is numpy's population std, percentiles numpy's linear ones, as in vLLM. Percentiles
exported: 90, 95, 99 (``--metric-percentiles 90,95,99``). Also the run's context under vLLM's
names (date, backend, model_id, tokenizer_id, num_prompts, request_rate, burstiness,
max_concurrency) and, under the key ``servelab``, the identity and servelab's own steady-window
figures, which differ in their window (docs/report.md).

Side effects: write_exports writes summary.csv and exports/*.json into the given folder.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.records.atomic import atomic_path

VLLM_PERCENTILES = (90, 95, 99)
# (servelab column, vLLM metric attribute name) for the latency keys mean_<x>_ms, median_..., std_..., pNN_...
VLLM_LATENCIES = (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2e", "e2el"))
CSV_COLUMNS = (
    "variant_label", "variant_id", "run_id", "point_id", "repetition", "load_value", "load_unit", "verdict",
    "feasible", "attainment", "goodput_rps", "output_tok_per_s", "tok_per_s_per_gpu", "tok_per_s_per_user",
    "ttft_p50", "ttft_p50_lo", "ttft_p50_hi", "ttft_p99", "ttft_p99_lo", "ttft_p99_hi",
    "tpot_p50", "tpot_p50_lo", "tpot_p50_hi", "tpot_p99", "tpot_p99_lo", "tpot_p99_hi",
    "e2e_p50", "e2e_p50_lo", "e2e_p50_hi", "e2e_p99", "e2e_p99_lo", "e2e_p99_hi",
    "usd_per_1m_goodput", "usd_per_1m_goodput_lo", "usd_per_1m_goodput_hi",
    "usd_per_1m_output", "usd_per_1m_output_lo", "usd_per_1m_output_hi", "j_per_output_token", "mbu",
    "is_operating_point", "is_chosen",
)  # fmt: skip


def _stats(values: np.ndarray, name: str) -> dict[str, float]:
    """mean/median/std/pNN_<name>_ms of values in ms, as vLLM's calculate_metrics (0 without values)."""
    v = values if values.size else np.zeros(1)
    out = {f"mean_{name}_ms": float(np.mean(v)), f"median_{name}_ms": float(np.median(v)), f"std_{name}_ms": float(np.std(v))}
    for p in VLLM_PERCENTILES:
        out[f"p{p}_{name}_ms"] = float(np.percentile(v, p))
    return out


def _gaps_ms(chunks: pd.Series) -> np.ndarray:
    """Pooled gaps between consecutive chunk times (ns lists) of each request, in ms."""
    parts = [np.diff(np.asarray(c, dtype=np.int64)) for c in chunks if c is not None and len(c) > 1]
    return (np.concatenate(parts) / 1e6) if parts else np.zeros(0)



def _burstiness(run: Mapping[str, Any], kind: str) -> float | None:
    """vLLM's `burstiness` (the gamma shape of the gaps): 1.0 for Poisson; workload=fitted sends gamma
    gaps of the trace's fitted shape whatever traffic.kind says (run.json trace.fitted.arrivals)."""
    if ((run.get("config") or {}).get("workload") or {}).get("kind") == "fitted":
        shape = (((run.get("trace") or {}).get("fitted") or {}).get("arrivals") or {}).get("gamma_shape")
        return float(shape) if shape is not None else None
    return 1.0 if kind == "poisson" else None


def vllm_point_json(point_requests: pd.DataFrame, *, summary: Mapping[str, Any], run: Mapping[str, Any],
                    ident: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """vLLM bench serve's result keys for one point (module doc). `point_requests`: the point's rows of
    requests.parquet (any phase; chunk_ns needed for ITL); `summary`: its run.json point summary;
    `run`: run.json; `ident`: run_id, variant_id, variant_label, point_id, repetition, index."""
    m = point_requests[point_requests["phase"] == "measure"]
    sent = m[m["t_sent_ns"].notna()]
    ok = m[m["status"] == "ok"]
    t_first = sent["t_sent_ns"].min() if len(sent) else None
    t_last = sent["t_done_ns"].max() if len(sent) and sent["t_done_ns"].notna().any() else None
    dur = (int(t_last) - int(t_first)) / 1e9 if t_first is not None and t_last is not None else None
    n_in = int(ok["prompt_tokens"].fillna(0).sum()) if "prompt_tokens" in ok else 0
    out_tok = ok["output_tokens"].astype("Float64").fillna(0).to_numpy(dtype=float)
    n_out = int(out_tok.sum())
    cfg = run.get("config") or {}
    traffic = cfg.get("traffic") or {}
    kind = str(traffic.get("kind") or "")
    model = cfg.get("model") or {}
    started = run.get("started_at_utc")
    try:
        date = datetime.fromisoformat(str(started)).strftime("%Y%m%d-%H%M%S") if started else None
    except ValueError:
        date = None
    load = float(ident.get("load_value") or summary.get("load_value") or 0.0)
    res: dict[str, Any] = {
        "date": date,
        "backend": (cfg.get("engine") or {}).get("name"),
        "label": ident.get("variant_label"),
        "model_id": model.get("served_name") or model.get("name"),
        "tokenizer_id": model.get("tokenizer") or model.get("path"),
        "num_prompts": int(len(sent)),
        "request_rate": load if kind not in ("concurrency", "steps", "trace") else "inf",
        "burstiness": _burstiness(run, kind),
        "max_concurrency": int(load) if kind == "concurrency" else None,
        "duration": dur,
        "completed": int(len(ok)),
        "failed": int(len(sent) - len(ok)),
        "total_input_tokens": n_in,
        "total_output_tokens": n_out,
        "request_throughput": len(ok) / dur if dur else None,
        "output_throughput": n_out / dur if dur else None,
        "total_token_throughput": (n_in + n_out) / dur if dur else None,
    }
    def ns(col: str) -> np.ndarray:
        return ok[col].astype("Float64").to_numpy(dtype=float, na_value=np.nan) if col in ok else np.full(len(ok), np.nan)

    sent_ns, first_ns, last_ns = ns("t_sent_ns"), ns("t_first_token_ns"), ns("t_last_token_ns")
    ttft = (first_ns - sent_ns) / 1e6  # vLLM: first chunk with choices - start
    latency = (last_ns - sent_ns) / 1e6  # vLLM: last chunk with choices - start (not the stream's end)
    multi = (out_tok > 1) & np.isfinite(latency) & np.isfinite(ttft)
    tpot = (latency[multi] - ttft[multi]) / (out_tok[multi] - 1)
    res.update(_stats(ttft[np.isfinite(ttft)], "ttft"))
    res.update(_stats(tpot, "tpot"))
    if "chunk_ns" in ok:
        res.update(_stats(_gaps_ms(ok["chunk_ns"]), "itl"))
    res.update(_stats(latency[np.isfinite(latency)], "e2el"))
    res["servelab"] = {
        **{k: ident.get(k) for k in ("run_id", "variant_id", "variant_label", "point_id", "repetition", "index")},
        "load_value": load, "load_unit": summary.get("load_unit") or ident.get("load_unit"), "traffic_kind": kind,
        "measure_window_s": summary.get("measure_window_s"),
        "steady_window_output_tok_per_s": summary.get("output_tok_per_s"),
        "steady_window_request_rate_rps": summary.get("achieved_rate_rps"),
        "note": "vLLM key names and formulas over the measure-phase requests; servelab's steady-window "
                "throughput (the report's numbers) is under steady_window_*; docs/report.md has the mapping",
    }  # fmt: skip
    return _clean(res)


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    return v


def safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "x"


def csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def write_exports(folder: Path, rows: Sequence[Mapping[str, Any]], points_json: Mapping[str, dict[str, Any]]) -> list[Path]:
    """summary.csv (rows) and exports/<name>.json (points_json: name -> dict) into `folder`; the
    exports/ folder is replaced as a whole so a point that no longer exists leaves no file."""
    folder = Path(folder)
    written = []
    with atomic_path(folder / "summary.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow([csv_value(r.get(c)) for c in CSV_COLUMNS])
    written.append(folder / "summary.csv")
    new = folder / "exports.tmp"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    for name, d in points_json.items():
        (new / f"{safe_name(name)}.json").write_text(json.dumps(d, indent=2, allow_nan=False) + "\n")
    old = folder / "exports"
    shutil.rmtree(old, ignore_errors=True)
    new.rename(old)
    written.append(old)
    return written
