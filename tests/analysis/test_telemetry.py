"""Energy math, GPU summaries and engine-metric series on hand-made samples (exact values)."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.notes import Note
from analysis.telemetry import (
    counter_increase,
    energy_j,
    engine_series,
    scrape_gaps,
    summarize_engine_metrics,
    summarize_gpu,
)

S = 1_000_000_000  # ns per s


def gpu_rows(with_energy=True):
    rows = []
    for k in range(5):  # t = 0..4 s, 2 GPUs
        for g in (0, 1):
            rows.append({"t_ns": k * S + g, "gpu": g, "power_w": 100.0 + 100 * g + 10 * k,
                         "energy_j": (1000.0 * (g + 1) + 150 * k) if with_energy else None,
                         "mem_used_bytes": (10 + k) * 2**30, "gpu_util_pct": 50 + g * 10, "temp_c": 60 + k,
                         "throttle_reasons": 1 if k < 4 else 4, "errors": None})  # fmt: skip
    return pd.DataFrame(rows)


def test_energy_from_the_counter():
    e = energy_j(gpu_rows(), 1 * S, 3 * S + 5)
    # per GPU 150 J/s over the samples at 1 s and 3 s -> 300 J each
    assert e == {"joules": 600.0, "method": "counter", "span_s": pytest.approx(2.0)}


def test_energy_by_integrating_power_when_no_counter():
    e = energy_j(gpu_rows(with_energy=False), 0, 4 * S + 5)
    # GPU0 power 100..140 W over 4 s: trapezoid = 480 J; GPU1 200..240 W: 880 J
    assert e["method"] == "power" and e["joules"] == pytest.approx(1360.0)


def test_energy_without_samples():
    assert energy_j(gpu_rows(), 10 * S, 11 * S)["joules"] is None


def test_gpu_summary():
    s = summarize_gpu(gpu_rows(), 0, 4 * S + 5)
    assert s["gpus"] == 2 and s["samples"] == 10
    assert s["power_mean_w"] == pytest.approx(340.0)  # rounds sum both GPUs: 300, 320, ..., 380
    assert s["power_peak_w"] == pytest.approx(380.0)
    assert s["mem_used_peak_gib"] == 14.0 and s["gpu_util_mean_pct"] == 55.0 and s["temp_max_c"] == 64.0
    assert s["throttled_samples"] == 2  # idle bit (1) does not count; reason 4 does


def raw_scrapes():
    rows = []
    for k, (run, wait, kv, pre) in enumerate([(0, 0, 0.0, 5), (3, 1, 0.25, 5), (4, 2, 0.5, 7), (1, 0, 0.1, 8)]):
        t = k * S
        rows += [
            {"t_ns": t, "name": "vllm:num_requests_running", "labels": '{"engine":"0"}', "value": float(run)},
            {"t_ns": t, "name": "vllm:num_requests_waiting", "labels": '{"engine":"0"}', "value": float(wait)},
            {"t_ns": t, "name": "vllm:kv_cache_usage_perc", "labels": '{"engine":"0"}', "value": kv},
            {"t_ns": t, "name": "vllm:num_preemptions_total", "labels": '{"engine":"0"}', "value": float(pre)},
            {"t_ns": t, "name": "vllm:unrelated", "labels": "{}", "value": 9.0},
        ]
    return pd.DataFrame(rows)


def test_engine_series_and_summary():
    series = engine_series(raw_scrapes(), "vllm")
    assert list(series.columns) == ["t_ns", "kv_usage_frac", "preemptions_total", "running", "waiting"]
    s = summarize_engine_metrics(series, 1 * S, 3 * S)
    assert s["scrapes"] == 3 and s["running_max"] == 4.0 and s["waiting_max"] == 2.0
    assert s["running_mean"] == pytest.approx(8 / 3)
    assert s["kv_usage_frac_max"] == 0.5 and s["preemptions_total_increase"] == 3.0
    assert "kv_usage_peak_pct" not in s  # one concept, one name: the fraction
    assert engine_series(raw_scrapes(), "endpoint").empty


def test_counter_increase_brackets_the_window_with_the_scrapes_outside_it():
    # preemptions 5, 5, 7, 8 at 0..3 s; a window [1.5 s, 2.5 s] holds one scrape (7): the increase
    # runs from the scrape before it (1 s: 5) to the one after it (3 s: 8), not 7 - 7 = 0
    series = engine_series(raw_scrapes(), "vllm")
    s = summarize_engine_metrics(series, int(1.5 * S), int(2.5 * S))
    assert s["scrapes"] == 1 and s["preemptions_total_increase"] == 3.0 and s["running_max"] == 4.0
    assert counter_increase([0, S, 2 * S], [1.0, 4.0, 9.0], None, None) == 8.0
    assert counter_increase([2 * S, 0, S], [9.0, 1.0, 4.0], S, int(1.5 * S)) == 5.0  # unsorted input: 4 -> 9
    assert counter_increase([0], [1.0], 0, S) is None  # one scrape: no increase


def test_scrape_gaps_are_notes_spanning_the_gap():
    (gap,) = scrape_gaps([0, 1 * S, 2 * S, 7 * S], 1.0, source="telemetry")
    assert gap == Note("telemetry", "gap", "no sample for 5.00 s after t_ns=2000000000", t0_ns=2 * S, t1_ns=7 * S)
    assert Note.from_dict(gap.to_dict()) == gap
    assert scrape_gaps([0], 1.0, source="telemetry") == []
