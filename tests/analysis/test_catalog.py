"""The metric catalog is complete, well-formed, and docs/metrics.md is generated from it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.catalog import DIRECTIONS, METRICS, SCOPES, by_path, emitted_paths, render_markdown
from analysis.metrics import derive, summarize_point
from analysis.run_summary import engine_metrics_summary, point_resources, telemetry_summary
from analysis.telemetry import ENGINE_METRICS
from tests.analysis.test_metrics import POINT, frame, point_records

ROOT = Path(__file__).resolve().parents[2]
S = 1_000_000_000


def test_entries_are_well_formed_and_unique():
    keys = [(m.scope, m.path) for m in METRICS]
    assert len(keys) == len(set(keys))
    for m in METRICS:
        assert m.scope in SCOPES and m.direction in DIRECTIONS, m
        assert m.unit and m.formula and isinstance(m.sources, tuple), m
        if m.unit in ("ms", "s", "W", "J", "GiB", "tok/s", "req/s"):  # the unit is in the name
            suffix = {"ms": "_ms", "s": "_s", "W": "_w", "J": "joules", "GiB": "_gib", "tok/s": "_tok_per_s",
                      "req/s": "_rps"}[m.unit]  # fmt: skip
            assert m.name.endswith(suffix), m


def test_request_metrics_are_the_columns_derive_adds():
    raw = frame(point_records())
    added = set(derive(raw).columns) - set(raw.columns)
    assert added == set(by_path("request"))


def nvml_rows():
    return pd.DataFrame([
        {"t_ns": k * S // 2 + g, "gpu": g, "power_w": 100.0, "energy_j": 50.0 * k, "mem_used_bytes": 2**30,
         "gpu_util_pct": 50.0, "temp_c": 60.0, "throttle_reasons": 0, "errors": None}
        for k in range(10) for g in (0, 1)
    ])  # fmt: skip


def cpu_rows():
    return pd.DataFrame([{"t_ns": k * S // 2, "engine_cpu_pct": 150.0, "engine_rss_bytes": 2**31, "system_cpu_pct": 90.0}
                         for k in range(10)])  # fmt: skip


def every_concept():
    """Raw /metrics rows naming every concept of every engine, at 0.5 s for 5 s."""
    names = {n for per_engine in ENGINE_METRICS.values() for n in per_engine.values()}
    return pd.DataFrame([{"t_ns": k * S // 2, "name": n, "labels": "{}", "value": float(k), "error": None}
                         for k in range(10) for n in sorted(names)])  # fmt: skip


def series_with_every_concept():
    from analysis.telemetry import engine_series

    vllm = engine_series(every_concept(), "vllm")
    sglang = engine_series(every_concept(), "sglang")
    return vllm.merge(sglang[["t_ns", *(c for c in sglang.columns if c not in vllm.columns)]], on="t_ns")


def test_point_summary_emits_exactly_the_catalogued_point_metrics():
    lag = [{"t_ns": 2 * S, "cpu_pct": 10.0, "lag_max_ms": 1.0, "lag_mean_ms": 0.5}]
    recs = frame(point_records())
    recs["output_tokens_client"] = recs["output_tokens"]
    base = summarize_point(recs, **POINT, lag_samples=lag)
    series = series_with_every_concept()
    gpu = {**base, **point_resources(base, nvml_rows(), "nvml", series)}
    cpu = {**base, **point_resources(base, cpu_rows(), "cpu", series)}
    catalogued = set(by_path("point"))
    assert emitted_paths(gpu) | emitted_paths(cpu) == catalogued, (
        f"emitted, not catalogued: {sorted((emitted_paths(gpu) | emitted_paths(cpu)) - catalogued)}; "
        f"catalogued, not emitted: {sorted(catalogued - emitted_paths(gpu) - emitted_paths(cpu))}"
    )
    assert gpu["energy"]["j_per_output_token"] is not None and "gpu" in gpu and "cpu" in cpu


def test_run_summaries_emit_exactly_the_catalogued_run_metrics():
    span = (0, 5 * S)
    tel = {f"telemetry.{p}" for p in emitted_paths(telemetry_summary(nvml_rows(), "nvml", 0.5, span))}
    tel |= {f"telemetry.{p}" for p in emitted_paths(telemetry_summary(cpu_rows(), "cpu", 0.5, span))}
    em, _ = engine_metrics_summary(every_concept(), "vllm", 0.5, span)
    em_sg, _ = engine_metrics_summary(every_concept(), "sglang", 0.5, span)
    eng = {f"engine_metrics.{p}" for p in emitted_paths(em) | emitted_paths(em_sg)}
    assert tel | eng == set(by_path("run"))


def test_docs_metrics_md_is_generated_from_the_catalog():
    want = render_markdown((ROOT / "docs" / "_metrics_intro.md").read_text())
    have = (ROOT / "docs" / "metrics.md").read_text()
    assert have == want, "docs/metrics.md differs from the catalog: run `python scripts/gen_metrics_doc.py` and commit it"


def test_every_metric_is_in_the_doc():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    assert all(f"`{m.path}`" in doc for m in METRICS)
