"""A quant that vLLM's CPU build runs only with AVX-512 (AWQ/GPTQ 4-bit, FP8 KV cache) is refused
by run.py's preflight on a CPU without it, in one line, before anything starts. Runs on every CPU:
an AVX-512 one is given an AVX2 CPU's flags (SERVELAB_CPU_FLAGS, read by
experiments.discover.cpu_flags). No engine starts, so it is not an `engine` test; the launches
themselves are in tests/experiments/test_embedded_engine.py (AVX-512 CPUs only)."""

from __future__ import annotations

import pytest

from tests.experiments.test_embedded_engine import run_py

AVX2_ONLY = {"SERVELAB_CPU_FLAGS": "avx2"}


@pytest.mark.parametrize("quant", ["awq", "gptq", "fp8_kv"])
def test_quant_that_needs_avx512_is_refused_before_launch(tmp_path, quant):
    """Without AVX-512 the CPU build would die at its first forward pass (AWQ/GPTQ: no cpu_gemm_wna16
    in _C_AVX2) or at start (FP8 KV): preflight says so in one line, and nothing is started.
    Runs on every CPU: an AVX-512 one is given an AVX2 CPU's flags (AVX2_ONLY)."""
    p, s = run_py(tmp_path, f"quant={quant}", timeout=120, env=AVX2_ONLY)
    assert p.returncode == 2 and s["status"] == "rejected" and s["engine"] is None
    assert "AVX-512" in s["failure"]["reason"] and "use quant=none" in s["failure"]["reason"]
    assert "this CPU has AVX2 but no AVX-512" in s["failure"]["reason"]
    assert s["provenance"]["cpu_flags"] == ["avx2"] and s["provenance"]["cpu_flags_forced"] is True
