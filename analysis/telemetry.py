"""Telemetry math: GPU summaries, energy per token, engine /metrics series. Pure: no I/O.

Energy over a window [t0, t1] (all times monotonic ns, the requests' clock), per GPU, summed:
  counter  E = energy_j(last sample ≤ t1) − energy_j(first sample ≥ t0)      (NVML total-energy counter)
           the span between those two samples is reported as `span_s`
  power    E = ∫ power_w dt by the trapezoidal rule over the samples in [t0, t1]   (when no counter)
  j_per_output_token = E / Σ output tokens of the window's successful requests
Energy cost = E / 3.6e6 kWh × pricing.usd_per_kwh × PUE (the decision layer applies it).

Engine metrics: raw Prometheus samples are mapped to one name per concept per engine
(:data:`ENGINE_METRICS`, as each engine adapter declares them); gauges are summarised over the scrapes inside the window, counters as
their increase from the last scrape at or before t0 to the first scrape at or after t1
(:func:`counter_increase`): the scrapes inside a 3 s window at a 1 s interval span only about 2 s of
it, and which requests fall in that part depends on timing (a round-robin prefix workload then
reads 0 prefix-cache hits on one machine and 0.4 on another).
Gaps (no sample for more than 3 intervals) are :class:`analysis.notes.Note`s with their interval.
analysis.catalog lists every value these functions emit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.notes import Note
from engines import ADAPTERS

# concept -> Prometheus sample name, per engine: what each adapter declares (EngineAdapter.metric_names)
ENGINE_METRICS: dict[str, dict[str, str]] = {n: dict(a.metric_names) for n, a in ADAPTERS.items() if a.metric_names}
GAUGES = ("running", "waiting", "kv_usage_frac", "prefix_cache_hit_rate")


def _window(df: pd.DataFrame, t0: int | None, t1: int | None) -> pd.DataFrame:
    if t0 is not None:
        df = df[df["t_ns"] >= t0]
    if t1 is not None:
        df = df[df["t_ns"] <= t1]
    return df


def energy_j(samples: pd.DataFrame, t0_ns: int, t1_ns: int) -> dict[str, Any]:
    """Energy of all GPUs over [t0_ns, t1_ns]: from the energy counter where every GPU has one,
    else by integrating power. Returns {joules, method, span_s} (joules None without samples)."""
    w = _window(samples, t0_ns, t1_ns)
    if w.empty:
        return {"joules": None, "method": None, "span_s": None}
    total, spans = 0.0, []
    use_counter = "energy_j" in w and w.groupby("gpu")["energy_j"].apply(lambda s: s.notna().sum() >= 2).all()
    for _, g in w.sort_values("t_ns").groupby("gpu"):
        if use_counter:
            g = g[g["energy_j"].notna()]
            total += float(g["energy_j"].iloc[-1] - g["energy_j"].iloc[0])
        else:
            g = g[g["power_w"].notna()]
            if len(g) < 2:
                continue
            t = g["t_ns"].to_numpy(dtype=float) / 1e9
            p = g["power_w"].to_numpy(dtype=float)
            total += float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(t)))
        spans.append((int(g["t_ns"].iloc[-1]) - int(g["t_ns"].iloc[0])) / 1e9)
    if not spans:
        return {"joules": None, "method": None, "span_s": None}
    return {"joules": total, "method": "counter" if use_counter else "power", "span_s": max(spans)}


def summarize_gpu(samples: pd.DataFrame, t0_ns: int | None = None, t1_ns: int | None = None) -> dict[str, Any]:
    """Power (sum over GPUs per sampling round), memory, utilisation, temperature, throttling."""
    w = _window(samples, t0_ns, t1_ns)
    if w.empty:
        return {"samples": 0}
    # one sampling round = the same sample index across GPUs; round by order within each GPU
    w = w.sort_values("t_ns").assign(_round=lambda d: d.groupby("gpu").cumcount())
    power_rounds = w.groupby("_round")["power_w"].sum(min_count=1)
    return {
        "samples": int(len(w)),
        "gpus": int(w["gpu"].nunique()),
        "power_mean_w": float(power_rounds.mean()) if power_rounds.notna().any() else None,
        "power_peak_w": float(power_rounds.max()) if power_rounds.notna().any() else None,
        "mem_used_peak_gib": float(w["mem_used_bytes"].max() / 2**30) if w["mem_used_bytes"].notna().any() else None,
        "gpu_util_mean_pct": float(w["gpu_util_pct"].mean()) if w["gpu_util_pct"].notna().any() else None,
        "temp_max_c": float(w["temp_c"].max()) if w["temp_c"].notna().any() else None,
        "throttled_samples": int((w["throttle_reasons"].fillna(0).astype(int) & ~1).astype(bool).sum()),  # bit 0 = idle
        "sample_errors": int(w["errors"].notna().sum()) if "errors" in w else 0,
    }


def engine_series(raw: pd.DataFrame, engine: str) -> pd.DataFrame:
    """Raw scrape rows -> one row per scrape time with a column per known concept (summed over labels)."""
    names = ENGINE_METRICS.get(engine, {})
    if raw.empty or not names:
        return pd.DataFrame(columns=["t_ns"])
    inv = {v: k for k, v in names.items()}
    r = raw[raw["name"].isin(inv)]
    if r.empty:
        return pd.DataFrame(columns=["t_ns"])
    wide = r.assign(concept=r["name"].map(inv)).pivot_table(index="t_ns", columns="concept", values="value", aggfunc="sum")
    return wide.reset_index().rename_axis(columns=None)


def counter_increase(t_ns: Any, values: Any, t0_ns: int | None, t1_ns: int | None) -> float | None:
    """Increase of a cumulative counter over [t0, t1]: value(first scrape ≥ t1, else the last) −
    value(last scrape ≤ t0, else the first). Bracketing the window covers all of it (counters move
    when a request is scheduled or finishes, so the scrape after t1 holds the window's last ones);
    it may include up to one scrape interval either side. None with fewer than two scrapes."""
    t = np.asarray(t_ns, dtype=np.int64)
    v = np.asarray(values, dtype=float)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    i0 = 0 if t0_ns is None else max(int(np.searchsorted(t, t0_ns, side="right")) - 1, 0)
    i1 = len(t) - 1 if t1_ns is None else min(int(np.searchsorted(t, t1_ns, side="left")), len(t) - 1)
    if i1 <= i0:
        return None
    return float(v[i1] - v[i0])


def summarize_engine_metrics(series: pd.DataFrame, t0_ns: int | None = None, t1_ns: int | None = None) -> dict[str, Any]:
    """Peak/mean of gauges over the scrapes in [t0, t1] and the increase of counters over the
    window (:func:`counter_increase`: from the scrape before t0 to the scrape after t1)."""
    w = _window(series, t0_ns, t1_ns)
    if w.empty:
        return {"scrapes": 0}
    out: dict[str, Any] = {"scrapes": int(len(w))}
    for c in w.columns:
        if c == "t_ns":
            continue
        if c in GAUGES:
            v = w[c].dropna()
            if not v.empty:
                out[f"{c}_mean"], out[f"{c}_max"] = float(v.mean()), float(v.max())
        else:
            full = series[["t_ns", c]].dropna()
            inc = counter_increase(full["t_ns"], full[c], t0_ns, t1_ns)
            if inc is not None:
                out[f"{c}_increase"] = inc
    return out


def scrape_gaps(t_ns: Any, interval_s: float, *, source: str, factor: float = 3.0) -> list[Note]:
    """Gaps longer than `factor` × interval between consecutive sample times, as notes spanning
    [the sample before, the sample after]."""
    t = np.sort(np.unique(np.asarray(t_ns, dtype=np.int64)))
    if t.size < 2:
        return []
    d = np.diff(t) / 1e9
    return [
        Note(source, "gap", f"no sample for {d[k]:.2f} s after t_ns={int(t[k])}", t0_ns=int(t[k]), t1_ns=int(t[k + 1]))
        for k in np.nonzero(d > factor * interval_s)[0]
    ]


def summarize_cpu_telemetry(samples: pd.DataFrame, t_start_ns: int | None = None, t_end_ns: int | None = None) -> dict[str, Any]:
    """Mean/peak CPU % and peak RSS of the engine's process tree within [t_start_ns, t_end_ns]."""
    s = _window(samples, t_start_ns, t_end_ns)
    if s.empty:
        return {"samples": 0}
    return {
        "samples": int(len(s)),
        "engine_cpu_pct_mean": float(s["engine_cpu_pct"].mean()),
        "engine_cpu_pct_max": float(s["engine_cpu_pct"].max()),
        "engine_rss_peak_gib": float(s["engine_rss_bytes"].max() / 2**30),
        "system_cpu_pct_mean": float(s["system_cpu_pct"].mean()),
    }
