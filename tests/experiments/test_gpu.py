"""Real NVML on a real GPU (deselected by default: run with `pytest -m gpu` on a GPU machine)."""

from __future__ import annotations

import pytest

from experiments import discover, telemetry

pytestmark = pytest.mark.gpu


def test_nvml_sampler_reads_a_real_gpu():
    if discover.visible_gpus() == 0:
        pytest.skip("no GPU visible to NVML")
    gen = telemetry.nvml_samples(0, 0.2)
    rows = [next(gen) for _ in range(3 * discover.visible_gpus())]
    gen.close()
    for r in rows:
        assert r["errors"] is None, r["errors"]
        assert r["power_w"] > 0 and r["mem_used_bytes"] > 0 and r["temp_c"] > 0 and r["sm_clock_mhz"] > 0
        assert r["energy_j"] > 0
    first, last = rows[0], rows[-discover.visible_gpus()]
    assert last["energy_j"] >= first["energy_j"] and last["t_ns"] > first["t_ns"]
    info = discover.gpu_info()
    assert info and info["gpus"] and info["driver_version"]
