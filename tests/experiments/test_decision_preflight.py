"""Decision-layer inputs (gpu, slo, pricing) are refused before any engine starts, one line each."""

from __future__ import annotations

import subprocess
import sys

import pytest

from experiments import preflight
from experiments.config import to_run_config
from tests.conftest import ROOT, compose


def problems(overrides):
    return preflight.decision_problems(to_run_config(compose(overrides)))


def test_every_shipped_gpu_slo_and_default_pricing_is_accepted():
    assert problems([]) == []
    for o in ("slo=interactive", "slo=code_completion", "slo=batch", "slo=none", "gpu=h100_sxm_80g pricing=aws_on_demand",
              "gpu=h200_141g pricing=aws_spot", "gpu=h100_pcie_80g pricing=runpod_secure", "gpu=h200_141g pricing=semianalysis_tco",
              "gpu=h100_sxm_80g pricing=lambda_on_demand", "gpu=b200_180g pricing.usd_per_hour=8"):  # fmt: skip
        assert problems(o.split()) == [], o


@pytest.mark.parametrize(
    "overrides,line",
    [
        (["slo.ttft_ms=-1"], "slo.ttft_ms must be > 0 (or null = not constrained), got -1.0"),
        (["slo.itl_ms=0"], "slo.itl_ms must be > 0 (or null = not constrained), got 0.0"),
        (["slo.percentile=150"], "slo.percentile must be in (0, 100], got 150.0"),
        (["slo.e2e_percentile=0"], "slo.e2e_percentile must be in (0, 100], got 0.0"),
        (["slo.attainment_target=1.5"], "slo.attainment_target must be in (0, 1] (a share of requests), got 1.5"),
        (["pricing.usd_per_hour=-1"], "pricing.usd_per_hour must be >= 0, got -1.0"),
        (["pricing.gpus.cpu.on_demand=-0.1"], "pricing.gpus.cpu.on_demand must be >= 0, got -0.1"),
        (["pricing.pue=0.9"], "pricing.pue must be >= 1 (facility power / IT power), got 0.9"),
        (["pricing.usd_per_kwh=-1"], "pricing.usd_per_kwh must be >= 0, got -1.0"),
        (["pricing.tier=hourly"], "pricing.tier='hourly': use one of on_demand, spot, reserved_1y, reserved_3y, owned"),
        (["gpu.tdp_w=-5"], "gpu.tdp_w must be > 0 or null, got -5.0"),
        (
            ["gpu=l4_24g", "pricing=semianalysis_tco"],
            "pricing=semianalysis_tco has no owned price for gpu=l4_24g (it prices: h100_sxm_80g, h200_141g); "
            "pick another pricing book or set pricing.usd_per_hour",
        ),
        (["gpu=mi300x_192g", "pricing=aws_on_demand"], "pricing=aws_on_demand has no on_demand price for gpu=mi300x_192g"),
    ],
)
def test_bad_decision_inputs_name_the_fix(overrides, line):
    ps = problems(overrides)
    assert any(p.startswith(line) for p in ps), ps
    assert all("\n" not in p for p in ps)


def test_run_refuses_bad_decision_inputs_before_any_engine_starts(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "slo.ttft_ms=-1", "slo.percentile=150", "pricing.usd_per_hour=-1",
         f"results_dir={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    for needle in ("slo.ttft_ms must be > 0", "slo.percentile must be in (0, 100]", "pricing.usd_per_hour must be >= 0"):
        assert needle in out.stderr + out.stdout
    assert not list(tmp_path.rglob("engine.log"))  # no engine was started
