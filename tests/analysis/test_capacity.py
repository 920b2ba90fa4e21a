"""Capacity plan with hand-computed replicas, SLO-miss minutes and monthly dollars."""

from __future__ import annotations

import pytest

from analysis.capacity import (
    ReplicaPrices,
    demand,
    length_factor,
    plan,
    profile_from_times,
    replicas_for,
    spot_effective_usd_per_hour,
)


def test_replicas_formula():
    # 10 / (4 * 0.8) = 3.125 -> 4; /A=1 -> 4; N+1 -> 5
    assert replicas_for(10, 4, 0.8, 1.0, 1) == 5
    assert replicas_for(12, 4, 0.75) == 4  # exactly 4.0 (up to float error) stays 4
    assert replicas_for(10, 4, 0.8, 0.95) == 5  # ceil(4 / 0.95) = ceil(4.21)
    assert replicas_for(0, 4, 0.8, min_replicas=2) == 2


def test_spot_effective_price_and_length_factor():
    # 3 * (1 + 0.1 * 360 / 3600) = 3.03; with a_spot 0.8: + 0.2 * (10 - 3) = 1.4
    assert spot_effective_usd_per_hour(10, 3, 0.1, 360) == pytest.approx(3.03)
    assert spot_effective_usd_per_hour(10, 3, 0.1, 360, 0.8) == pytest.approx(4.43)
    assert length_factor(0.25, 2.0, 0.5) == pytest.approx(0.25 * 2 + 0.75 * 0.5)
    assert length_factor(None, 3.0, 2.0) == 2.0


def test_demand_sources():
    assert demand(None, None, 3600) is None
    d = demand(5.0, None, 3600)
    assert (d.peak_rps, d.profile_rps, d.bin_s, d.source) == (5.0, [5.0], 3600.0, "peak")
    assert demand(None, [1, 3, 2], 3600).peak_rps == 3.0
    assert profile_from_times([0, 1, 2, 10, 11], 10) == [0.3, 0.2]
    assert demand(None, None, 10, trace_times_s=[0, 1, 2, 10, 11]).source == "trace"


def test_plan_hand_computed():
    p = plan(
        variant_id="A", variant_label="vllm/a", knee_rps=4.0, demand=demand(None, [2, 10, 6, 2], 3600),
        prices=ReplicaPrices(on_demand=10.0, spot=3.0, reserved=6.0, spot_interruptions_per_hour=0.1),
        gpus_per_replica=2, engine_start_s=60.0, provisioning_s=300.0, rho_max=0.8, spare_replicas=1,
        measured_output_tokens=100.0, spot_share_max=0.4, spot_restart_s=360.0, benchmark_usd_per_1m=20.0,
    )  # fmt: skip
    # per replica 4 * 0.8 = 3.2 req/s: 2 -> 1+1, 10 -> 4+1, 6 -> 2+1, 2 -> 1+1
    assert p.replicas_per_bin == [2, 5, 3, 2]
    assert (p.replicas_peak, p.gpus_peak) == (5, 10)
    # the profile repeats 730 h / 4 h = 182.5 times a month
    assert p.monthly_usd["static_peak"] == pytest.approx(5 * 10 * 730)  # 36 500
    assert p.monthly_usd["autoscaled"] == pytest.approx(12 * 10 * 182.5)  # 21 900
    # reserved base 2 (the minimum): 2 * 6 * 730 + burst (0+3+1+0) * 10 * 182.5
    assert p.monthly_usd["reserved_base_on_demand_burst"] == pytest.approx(8760 + 7300)
    # spot: floor(0.4 * n) = 0, 2, 1, 0 of the burst 0, 3, 1, 0 at 3.03 $/h
    assert p.spot_effective_usd_per_hour == pytest.approx(3.03)
    assert p.monthly_usd["reserved_base_on_demand_burst_spot"] == pytest.approx(8760 + (10 + 2 * 3.03 + 3.03) * 182.5)
    assert p.spot_interruptions_per_month == pytest.approx(3 * 182.5 * 0.1)
    # scale-up 2 -> 5 at bin 1 takes 300 + 60 s; 10 req/s > 2 * 4: 6 SLO-miss minutes per 4 h
    assert p.scale_up_lag_s == 360.0
    assert p.slo_miss_minutes_per_day == pytest.approx(6 * 6)
    assert p.slo_miss_minutes_per_month == pytest.approx(6 * 182.5)
    assert p.requests_over_capacity_per_month == pytest.approx(10 * 360 * (1 - 8 / 10) * 182.5)
    # output tokens: (2+10+6+2) req/s * 3600 s * 100 tokens * 182.5 = 1314 M
    assert p.output_tokens_per_month == pytest.approx(1.314e9)
    assert p.realised_usd_per_1m["static_peak"] == pytest.approx(36500 / 1314)
    assert p.realised_usd_per_1m["autoscaled"] == pytest.approx(21900 / 1314)


def test_plan_peak_only_length_mix_and_missing_prices():
    p = plan(
        variant_id="A", variant_label="vllm/a", knee_rps=4.0, demand=demand(6.0, None, 3600),
        prices=ReplicaPrices(on_demand=2.0), gpus_per_replica=1, engine_start_s=30.0, provisioning_s=0.0,
        rho_max=1.0, prefill_share=0.5, measured_prompt_tokens=100, planned_prompt_tokens=100,
        measured_output_tokens=100, planned_output_tokens=200,
    )  # fmt: skip
    # f_len = 0.5 * 1 + 0.5 * 2 = 1.5: mu = 4 / 1.5 = 2.667 req/s; 6 / 2.667 = 2.25 -> 3
    assert p.length_factor == 1.5 and p.mu_rps == pytest.approx(4 / 1.5)
    assert p.replicas_peak == 3 and p.replicas_per_bin == [3]
    assert p.monthly_usd["static_peak"] == p.monthly_usd["autoscaled"] == pytest.approx(3 * 2 * 730)
    assert p.monthly_usd["reserved_base_on_demand_burst"] is None
    assert p.slo_miss_minutes_per_month == 0.0
    assert any("reserved" in n for n in p.notes) and any("spot" in n for n in p.notes)
