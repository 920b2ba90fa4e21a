"""Metrics derived from raw request records and telemetry samples. Pure: no I/O, no processes.

Notation for one request (all times `time.monotonic_ns()`, see loadgen.records):
  t_sched  intended send time      t_sent   request written      t_first  first content chunk
  t_last   last content chunk      t_done   stream finished      N        output tokens (server usage)
Formulas (docs/metrics.md has the same table):
  ttft_ms          = (t_first − t_sent) / 1e6
  e2e_ms           = (t_done − t_sent) / 1e6
  tpot_ms          = (t_last − t_first) / 1e6 / (N − 1)    [= (E2E − TTFT)/(N − 1) with E2E at the last token; N ≥ 2]
  itl_ms           = every gap between consecutive content chunks, pooled over requests
  sched_lag_ms     = (t_sent − t_sched) / 1e6              [how late the load generator sent it]
  interactivity_tok_per_s = 1000 / tpot_ms                 [per-user decode speed]
Throughput uses the measure window W = [min t_sent, max t_done] over measure-phase requests that were sent:
  output_tok_per_s = Σ N (ok, measure) / W;  total_tok_per_s = Σ (prompt + N) (ok, measure) / W
  achieved_rate_rps = count(ok, measure) / W
Percentiles are numpy's linear interpolation over the measure-phase, status=ok requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from loadgen.records import DROPPED, MEASURE, OK, STATUSES

PERCENTILES = (50, 90, 95, 99)

# Flags from measurements of Locust on 2 cores (../shared/reference/locust.md): past these the
# generator's TTFT/ITL percentiles stop being trustworthy.
LOADGEN_CPU_LIMIT_PCT = 60.0
LOADGEN_LOOP_LAG_LIMIT_MS = 50.0
SCHED_LAG_P99_LIMIT_MS = 10.0


def distribution(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, mean, min, p50/p90/p95/p99, max of `values` (NaN dropped); None fields when empty."""
    a = np.asarray([v for v in values if v is not None], dtype=float)
    a = a[~np.isnan(a)]
    out: dict[str, float | int | None] = {"count": int(a.size)}
    if a.size == 0:
        out.update({"mean": None, "min": None, **{f"p{p}": None for p in PERCENTILES}, "max": None})
        return out
    out["mean"] = float(a.mean())
    out["min"] = float(a.min())
    for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    out["max"] = float(a.max())
    return out


def _ms(a: pd.Series, b: pd.Series) -> pd.Series:
    return (a.astype("Float64") - b.astype("Float64")) / 1e6


def derive(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of the records with per-request metric columns added (formulas in the module doc).

    Columns: ttft_ms, e2e_ms, tpot_ms, sched_lag_ms, n_chunks. Undefined values are <NA>
    (e.g. TPOT of a one-token reply, TTFT of a failed request).
    """
    out = df.copy()
    out["ttft_ms"] = _ms(out["t_first_token_ns"], out["t_sent_ns"])
    out["e2e_ms"] = _ms(out["t_done_ns"], out["t_sent_ns"])
    n = out["output_tokens"].astype("Float64")
    decode_ms = _ms(out["t_last_token_ns"], out["t_first_token_ns"])
    out["tpot_ms"] = (decode_ms / (n - 1)).where(n >= 2)
    out["sched_lag_ms"] = _ms(out["t_sent_ns"], out["t_scheduled_ns"])
    out["n_chunks"] = out["chunk_ns"].map(lambda c: 0 if c is None else len(c)).astype("Int64")
    return out


def itl_ms(chunk_lists: Iterable[Sequence[int] | None]) -> np.ndarray:
    """Pooled gaps (ms) between consecutive content chunks of each request; TTFT excluded."""
    gaps = [np.diff(np.asarray(c, dtype=np.int64)) / 1e6 for c in chunk_lists if c is not None and len(c) >= 2]
    return np.concatenate(gaps) if gaps else np.zeros(0)


def _col(df: pd.DataFrame, name: str) -> list[float]:
    return [float(v) for v in df[name].dropna().tolist()]


def summarize_point(
    records: pd.DataFrame,
    *,
    kind: str,
    value: float,
    warmup_s: float,
    duration_s: float,
    lag_samples: Sequence[dict[str, Any]] = (),
    ignore_eos: bool = True,
) -> dict[str, Any]:
    """Summary of one load point from its raw records (all phases; only `measure` is summarised).

    `lag_samples` are the load generator's once-a-second self-measurements (loop lag, CPU %).
    """
    df = derive(records) if "ttft_ms" not in records.columns else records
    counts_all = {s: int((df["status"] == s).sum()) for s in STATUSES}
    m = df[df["phase"] == MEASURE]
    counts = {s: int((m["status"] == s).sum()) for s in STATUSES}
    ok = m[m["status"] == OK]
    sent = m[m["status"] != DROPPED]

    window_s = None
    if len(sent) and sent["t_sent_ns"].notna().any():
        window_s = (int(sent["t_done_ns"].max()) - int(sent["t_sent_ns"].min())) / 1e9
    out_tokens = int(ok["output_tokens"].fillna(0).sum())
    prompt_tokens = int(ok["prompt_tokens"].fillna(0).sum())

    tpot = distribution(_col(ok, "tpot_ms"))
    summary: dict[str, Any] = {
        "kind": kind,
        "value": value,
        # open loop: what the schedule actually offered in the measure window (shapes make it differ from `value`)
        "offered_rate_rps": (len(m) / duration_s) if kind != "concurrency" and duration_s > 0 else None,
        "concurrency": int(value) if kind == "concurrency" else None,
        "requests": {"total": int(len(m)), **counts},
        "requests_all_phases": {"total": int(len(df)), **counts_all},
        "error_rate": (len(m) - counts[OK]) / len(m) if len(m) else None,
        "measure_window_s": window_s,
        "scheduled_rate_rps": (len(m) / duration_s) if duration_s > 0 else None,
        "achieved_rate_rps": (counts[OK] / window_s) if window_s else None,
        "output_tokens": out_tokens,
        "prompt_tokens": prompt_tokens,
        "output_tok_per_s": (out_tokens / window_s) if window_s else None,
        "total_tok_per_s": ((out_tokens + prompt_tokens) / window_s) if window_s else None,
        "ttft_ms": distribution(_col(ok, "ttft_ms")),
        "tpot_ms": tpot,
        "itl_ms": distribution(itl_ms(ok["chunk_ns"].tolist()).tolist()),
        "e2e_ms": distribution(_col(ok, "e2e_ms")),
        "sched_lag_ms": distribution(_col(sent, "sched_lag_ms")),
        "interactivity_tok_per_s": (1000.0 / tpot["mean"]) if tpot["mean"] else None,
        "output_tokens_source": sorted(set(ok["output_tokens_source"].dropna().tolist())),
    }
    if ignore_eos:
        wrong = ok[ok["output_tokens"].astype("Float64") != ok["max_tokens"].astype("Float64")]
        summary["output_length_mismatches"] = int(len(wrong))
    drift = ok[ok["prompt_tokens"].notna() & (ok["prompt_tokens"] != ok["prompt_tokens_client"])]
    summary["prompt_token_drift"] = {
        "requests": int(len(drift)),
        "mean_server_minus_client": float((drift["prompt_tokens"] - drift["prompt_tokens_client"]).mean())
        if len(drift)
        else 0.0,
    }
    if "output_tokens_client" in ok.columns:
        od = ok[ok["output_tokens_client"].notna() & (ok["output_tokens_source"] == "usage")
                & (ok["output_tokens"] != ok["output_tokens_client"])]  # fmt: skip
        summary["output_token_drift"] = {
            "requests": int(len(od)),
            "mean_server_minus_client": float((od["output_tokens"] - od["output_tokens_client"]).mean()) if len(od) else 0.0,
        }
    summary["loadgen"] = loadgen_health(lag_samples, summary["sched_lag_ms"])
    return summary


def loadgen_health(lag_samples: Sequence[dict[str, Any]], sched_lag: dict[str, Any]) -> dict[str, Any]:
    """Whether the load generator kept up: CPU, event-loop lag and schedule lag against limits."""
    cpu = [s["cpu_pct"] for s in lag_samples if s.get("cpu_pct") is not None]
    lag = [s["lag_max_ms"] for s in lag_samples if s.get("lag_max_ms") is not None]
    reasons = []
    cpu_max = max(cpu) if cpu else None
    lag_max = max(lag) if lag else None
    if cpu_max is not None and cpu_max > LOADGEN_CPU_LIMIT_PCT:
        reasons.append(f"load generator CPU reached {cpu_max:.0f} % (> {LOADGEN_CPU_LIMIT_PCT:.0f} %)")
    if lag_max is not None and lag_max > LOADGEN_LOOP_LAG_LIMIT_MS:
        reasons.append(f"event-loop stall of {lag_max:.0f} ms (> {LOADGEN_LOOP_LAG_LIMIT_MS:.0f} ms)")
    p99 = sched_lag.get("p99")
    if p99 is not None and p99 > SCHED_LAG_P99_LIMIT_MS:
        reasons.append(f"schedule lag p99 {p99:.1f} ms (> {SCHED_LAG_P99_LIMIT_MS:.0f} ms)")
    return {
        "cpu_pct_mean": float(np.mean(cpu)) if cpu else None,
        "cpu_pct_max": cpu_max,
        "loop_lag_max_ms": lag_max,
        "loop_lag_mean_ms": float(np.mean([s["lag_mean_ms"] for s in lag_samples])) if lag_samples else None,
        "saturated": bool(reasons),
        "saturation_reasons": reasons,
    }


def summarize_cpu_telemetry(samples: pd.DataFrame, t_start_ns: int | None = None, t_end_ns: int | None = None) -> dict[str, Any]:
    """Mean/peak CPU % and peak RSS of the engine's process tree within [t_start_ns, t_end_ns]."""
    s = samples
    if t_start_ns is not None:
        s = s[s["t_ns"] >= t_start_ns]
    if t_end_ns is not None:
        s = s[s["t_ns"] <= t_end_ns]
    if s.empty:
        return {"samples": 0}
    return {
        "samples": int(len(s)),
        "engine_cpu_pct_mean": float(s["engine_cpu_pct"].mean()),
        "engine_cpu_pct_max": float(s["engine_cpu_pct"].max()),
        "engine_rss_peak_gib": float(s["engine_rss_bytes"].max() / 2**30),
        "system_cpu_pct_mean": float(s["system_cpu_pct"].mean()),
    }
