"""$ per million tokens, the input/output split and energy, with exact expected values."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.cost import (
    ENERGY_FROM_TDP,
    ENERGY_MEASURED,
    PriceMissing,
    billed_units,
    phase_split,
    point_cost,
    price_for,
    usd_per_1m,
)
from analysis.metrics import derive
from analysis.schema import GpuPrice, PricingConfig
from engines.schema import GpuConfig
from engines.vllm import VLLM_DECODE_SUM, VLLM_PREFILL_SUM
from experiments.config import to_run_config
from tests.analysis.decision_records import frame, rec
from tests.conftest import compose

S = 1_000_000_000  # ns per s


def book(**kw):
    base = {"name": "test", "gpus": {"h100_sxm_80g": GpuPrice(on_demand=2.0, spot=0.5, source="s", as_of="2026-01-01")},
            "usd_per_kwh": 0.1, "pue": 1.5}  # fmt: skip
    return PricingConfig(**{**base, **kw})


H100x2 = GpuConfig(name="h100_sxm_80g", count=2, tdp_w=700)


def test_price_comes_from_the_book_tier_and_override():
    p = price_for(book(), H100x2)
    assert (p.usd_per_unit_hour, p.units, p.usd_per_hour, p.tier, p.source, p.as_of) == (2.0, 2, 4.0, "on_demand", "s", "2026-01-01")
    assert price_for(book(tier="spot"), H100x2).usd_per_hour == 1.0
    assert price_for(book(usd_per_hour=3.0), GpuConfig(name="b200_180g", count=1)).usd_per_hour == 3.0
    with pytest.raises(PriceMissing, match="pricing=test has no on_demand price for gpu=l4_24g"):
        price_for(book(), GpuConfig(name="l4_24g", count=1))
    with pytest.raises(PriceMissing, match="no reserved_1y price"):
        price_for(book(tier="reserved_1y"), H100x2)
    assert billed_units(GpuConfig(name="cpu", count=0)) == 1  # a CPU plan bills one host


def test_real_books_price_the_catalog_gpus():
    aws = to_run_config(compose(["pricing=aws_on_demand", "gpu=h100_sxm_80g"]))
    assert price_for(aws.pricing, aws.gpu).usd_per_hour == 8.60
    spot = to_run_config(compose(["pricing=aws_spot", "gpu=h100_sxm_80g"]))
    assert price_for(spot.pricing, spot.gpu).usd_per_hour == 3.79 and spot.pricing.tier == "spot"
    default = to_run_config(compose())
    assert price_for(default.pricing, default.gpu).usd_per_hour == 0.10  # cpu_vm prices the embedded default


def test_usd_per_1m_formula():
    # G · P / (tok/s · 3600) · 1e6: $4/h at 1e6 tokens per hour -> $4 per 1M
    assert usd_per_1m(4.0, 1e6 / 3600) == pytest.approx(4.0)
    assert usd_per_1m(4.0, 0) is None and usd_per_1m(4.0, None) is None


def test_point_cost_and_split_never_charge_the_full_cost_twice():
    c = point_cost(price=price_for(book(), H100x2), window_s=3600, output_tokens=1_000_000, prompt_tokens=3_000_000,
                   goodput_output_tokens=500_000, split={"prefill_share": 0.25, "method": "ttft_tpot"})  # fmt: skip
    assert c["usd_window"] == pytest.approx(4.0)
    assert c["usd_per_1m_output"] == pytest.approx(4.0)
    assert c["usd_per_1m_total"] == pytest.approx(1.0)
    assert c["usd_per_1m_goodput"] == pytest.approx(8.0)
    s = c["split"]
    assert s["method"] == "ttft_tpot"
    assert s["usd_per_1m_input_split"] == pytest.approx(1.0 / 3)  # $1 of GPU time over 3M prompt tokens
    assert s["usd_per_1m_output_split"] == pytest.approx(3.0)  # $3 over 1M output tokens
    # the two parts add up to the window's cost, once
    assert s["usd_per_1m_input_split"] * 3 + s["usd_per_1m_output_split"] * 1 == pytest.approx(c["usd_window"])


def test_energy_is_reported_for_cloud_and_added_only_for_owned():
    kw = {"window_s": 3600, "output_tokens": 1_000_000, "prompt_tokens": 0, "energy_j": 3.6e6}  # 1 kWh
    cloud = point_cost(price=price_for(book(), H100x2), **kw)
    e = cloud["energy"]
    assert (e["method"], e["j_per_output_token"], e["kwh_per_1m_output"]) == (ENERGY_MEASURED, 3.6, pytest.approx(1.0))
    assert e["usd_energy_per_1m_output"] == pytest.approx(1.0 * 1.5 * 0.1)  # kWh · PUE · $/kWh
    assert e["added_to_cost"] is False and cloud["usd_per_1m_output"] == pytest.approx(4.0)
    owned = point_cost(price=price_for(book(energy_included=False), H100x2), **kw)
    assert owned["energy"]["added_to_cost"] is True
    assert owned["usd_per_1m_output_hardware"] == pytest.approx(4.0)
    assert owned["usd_per_1m_output"] == pytest.approx(4.15)


def test_energy_falls_back_to_tdp_and_says_so():
    c = point_cost(price=price_for(book(), H100x2), window_s=3600, output_tokens=1_000_000, prompt_tokens=0, tdp_w=700, devices=2)
    e = c["energy"]
    assert e["method"] == ENERGY_FROM_TDP and e["joules"] == pytest.approx(700 * 2 * 3600)
    assert e["j_per_output_token"] == pytest.approx(5.04)
    cpu = point_cost(price=price_for(book(usd_per_hour=0.1), GpuConfig()), window_s=60, output_tokens=10, prompt_tokens=0)
    assert cpu["energy"]["method"] is None and cpu["energy"]["j_per_output_token"] is None


def test_split_from_vllm_phase_timers_over_the_window():
    rows = []
    for t, pre, dec in ((0, 0.0, 0.0), (10, 1.0, 4.0), (20, 3.0, 9.0), (30, 7.0, 20.0)):
        for label, share in (('{"engine": "0"}', 0.5), ('{"engine": "1"}', 0.5)):  # two label sets, summed
            rows += [{"t_ns": t * S, "name": VLLM_PREFILL_SUM, "labels": label, "value": pre * share},
                     {"t_ns": t * S, "name": VLLM_DECODE_SUM, "labels": label, "value": dec * share}]  # fmt: skip
    raw = pd.DataFrame(rows)
    # window 5..15 s: from the last scrape at or before 5 s (t=0) to the first at or after 15 s (t=20)
    s = phase_split(derive(frame([rec(0, chunks=(1, 2))])), engine_metrics=raw, engine="vllm", t0_ns=5 * S, t1_ns=15 * S)
    assert (s["method"], s["prefill_s"], s["decode_s"], s["prefill_share"]) == ("engine_phase_time", 3.0, 9.0, 0.25)


def test_split_from_ttft_and_tpot_when_the_engine_has_no_timers():
    df = derive(frame([rec(0, chunks=(100, 120, 140, 160)), rec(1, sent=5, status="error")]))  # TTFT 100 ms, TPOT 20 ms x 3
    for kw in ({}, {"engine": "sglang", "engine_metrics": pd.DataFrame({"t_ns": [0], "name": ["x"], "value": [1.0]}), "t0_ns": 0, "t1_ns": 1}):
        s = phase_split(df, **kw)
        assert s["method"] == "ttft_tpot"
        assert (s["prefill_s"], s["decode_s"]) == (pytest.approx(0.1), pytest.approx(0.06))
        assert s["prefill_share"] == pytest.approx(0.625)
