"""Run-level and per-point resource summaries: the metric math the runner used to hold. Pure.

- :func:`telemetry_summary`: the sampler's rows over the whole load span, and its gaps (on one
  GPU's rows for NVML, which writes one row per GPU per round: gaps are per device).
- :func:`engine_metrics_summary`: the engine's /metrics scrapes, mapped to concepts, and gaps.
- :func:`point_resources`: energy, J per output token, GPU or CPU use and engine metrics over
  one point's steady measure window (analysis.metrics.measure_window, stored in its summary).
analysis.catalog lists every value they emit. Gaps and missing data are Note dicts.

Side effects: none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from analysis.metrics import measure_window
from analysis.notes import Note
from analysis.telemetry import (
    energy_j,
    engine_series,
    scrape_gaps,
    summarize_cpu_telemetry,
    summarize_engine_metrics,
    summarize_gpu,
)

__all__ = ["engine_metrics_summary", "load_span", "measure_window", "point_resources", "telemetry_summary"]


def load_span(load_points: Iterable[Mapping[str, Any]]) -> tuple[int | None, int | None]:
    """[earliest start, latest end] of the load points (their generators' t0_ns / t_end_ns)."""
    pts = list(load_points)
    start = min((p["t0_ns"] for p in pts if p.get("t0_ns")), default=None)
    end = max((p["t_end_ns"] for p in pts if p.get("t_end_ns")), default=None)
    return start, end


def telemetry_summary(
    tel: pd.DataFrame, kind: str | None, interval_s: float, span: tuple[int | None, int | None]
) -> dict[str, Any]:
    """samples, gaps (Note dicts), summary_during_load (GPU or CPU over `span`), NVML errors."""
    if tel.empty:
        return {"samples": 0, "gaps": [Note("telemetry", "no_samples", "no telemetry samples were recorded").to_dict()]}
    start, end = span
    times = tel[tel["gpu"] == tel["gpu"].min()]["t_ns"] if kind == "nvml" else tel["t_ns"]
    during = summarize_gpu(tel, start, end) if kind == "nvml" else summarize_cpu_telemetry(tel, start, end)
    out: dict[str, Any] = {
        "samples": int(len(tel)),
        "gaps": [n.to_dict() for n in scrape_gaps(times, interval_s, source="telemetry")],
        "summary_during_load": during,
    }
    if kind == "nvml" and "errors" in tel and tel["errors"].notna().any():
        out["errors"] = sorted(set(tel["errors"].dropna().tolist()))[:10]
    return out


def engine_metrics_summary(
    raw: pd.DataFrame, engine: str, interval_s: float, span: tuple[int | None, int | None]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """(summary, concept series) of the raw /metrics rows: scrapes, failed scrapes, the concepts
    found, gaps (Note dicts) and gauges/counters over `span`."""
    if raw.empty:
        note = Note("engine_metrics", "no_samples", "no /metrics scrape was recorded")
        return {"gaps": [note.to_dict()]}, pd.DataFrame(columns=["t_ns"])
    series = engine_series(raw[raw["name"].notna()], engine)
    summary = {
        "scrapes": int(raw["t_ns"].nunique()),
        "failed_scrapes": int(raw["error"].notna().sum()) if "error" in raw else 0,
        "known_series": [c for c in series.columns if c != "t_ns"],
        "gaps": [n.to_dict() for n in scrape_gaps(raw["t_ns"], interval_s, source="engine_metrics")],
        "summary_during_load": summarize_engine_metrics(series, *span),
    }
    return summary, series


def point_resources(
    point_summary: Mapping[str, Any], tel: pd.DataFrame, sampler_kind: str | None, series: pd.DataFrame
) -> dict[str, Any]:
    """Blocks to merge into one point's summary: `energy` + `gpu` (NVML) or `cpu`, and
    `engine_metrics`, each over the point's measure window [measure_window_t0_ns, _t1_ns].

    J per output token = (joules / span_s) / output_tok_per_s: the GPUs' mean power over the
    sampled span divided by the token rate of the same window, so the sampling grid (first
    sample after t0, last before t1) does not bias it the way joules / window tokens would.
    """
    t0, t1 = point_summary.get("measure_window_t0_ns"), point_summary.get("measure_window_t1_ns")
    if t0 is None or t1 is None:
        return {}
    out: dict[str, Any] = {}
    if not tel.empty and sampler_kind == "nvml":
        e = energy_j(tel, t0, t1)
        rate = point_summary.get("output_tok_per_s")
        ok = e["joules"] is not None and e["span_s"] and rate
        e["j_per_output_token"] = e["joules"] / e["span_s"] / rate if ok else None
        out["energy"] = e
        out["gpu"] = summarize_gpu(tel, t0, t1)
    elif not tel.empty:
        out["cpu"] = summarize_cpu_telemetry(tel, t0, t1)
    if not series.empty:
        out["engine_metrics"] = summarize_engine_metrics(series, t0, t1)
    return out
