"""The quality gate on the tiny model's real 4-bit checkpoints (AWQ, GPTQ) and the FP8 KV cache
against quant=none, through the real vLLM CPU build.

The CPU build runs 4-bit checkpoints and an FP8 KV cache only with its AVX-512 kernels
(engines/vllm.py cpu_isa_problems), so on a CPU without AVX-512 this test is skipped with that
reason; tests/experiments/test_embedded_sweep.py gates fp16 against quant=none everywhere, and
tests/benchmarks/test_quant_fidelity.py checks on every CPU that the 4-bit checkpoints are the base
model quantized, as vLLM's own repacking code reads them.
The 4-bit checkpoints are round-to-nearest quantizations of the base weights
(scripts/build_tiny_quantized.py), so they must agree with quant=none on most tokens, not on none
(recipe 1 wrote random integers: top-1 agreement 0.0, docs/quality.md). The bounds come from the
same measure computed offline in float32 on these 24 prompts (`benchmarks/quant_fidelity.py`:
awq top-1 0.91, ppl ratio 1.055; gptq 0.96, 1.025), widened for the engine's bfloat16 activations
and CPU kernels, which are not bit-identical across CPUs.
Needs `bash scripts/setup.sh` (it builds models/tiny-llama-awq and -gptq).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from experiments.discover import cpu_flags
from tests.conftest import ROOT

pytestmark = [pytest.mark.engine,
              pytest.mark.skipif("avx512f" not in cpu_flags(),
                                 reason="vLLM's CPU build runs AWQ/GPTQ checkpoints and an FP8 KV cache only with "
                                        "AVX-512 (this CPU has none)")]  # fmt: skip


def test_awq_gptq_and_fp8_kv_are_scored_against_none(tmp_path):
    for m in ("tiny-llama-awq", "tiny-llama-gptq"):
        assert (ROOT / "models" / m).is_dir(), "run `bash scripts/setup.sh`"
    argv = [sys.executable, "run.py", "experiment=quant_shootout", "hydra.sweeper.params.quant='none,awq,gptq,fp8_kv'",
            "quality.num_prompts=24", "quality.num_tasks=6", f"results_dir={tmp_path}", "search=grid", "traffic.points=[2]",
            "traffic.duration_s=3", "traffic.warmup_s=0.5", "engine.enforce_eager=true", "report=false"]  # fmt: skip
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-4000:]
    d = json.loads((tmp_path / "quant_shootout" / "decision.json").read_text())
    assert d["quality"]["applied"]
    v = {x["quant"]: x for x in d["quality"]["variants"]}
    assert set(v) == {"none", "awq", "gptq", "fp8_kv"}
    for q in ("awq", "gptq", "fp8_kv"):
        f = v[q]
        assert f["measure"] == "prompt_logprobs" and f["n_tokens"] == 24 * 32, q
        assert 0.0 < f["top1_agreement"]["value"] <= 1.0 and f["ppl_ratio"]["value"] > 0, q
        assert f["top1_agreement"]["lo"] <= f["top1_agreement"]["value"] <= f["top1_agreement"]["hi"], q
        assert f["seed_claim"] is not None and f["speedup"] is not None, q
    for q in ("awq", "gptq"):
        # the same model at 4 bits: mostly the baseline's tokens (offline float32: 0.91 / 0.96), but
        # not all of them, and the baseline's own greedy tokens are less likely under it (mean LLR < 0;
        # offline -0.054 / -0.025 nats, perplexity ratio 1.055 / 1.025)
        assert 0.7 <= v[q]["top1_agreement"]["value"] < 1.0, (q, v[q]["top1_agreement"])
        assert -0.25 < v[q]["mean_llr"]["value"] < 0.0 and 1.0 < v[q]["ppl_ratio"]["value"] < 1.3, q
        assert v[q]["exact_match_rate"]["value"] < 1.0, q
    # only the KV cache is quantized: closer still (measured 0.98 on an AVX-512 CPU, 240 prompts)
    assert 0.9 <= v["fp8_kv"]["top1_agreement"]["value"] <= 1.0 and 0.9 < v["fp8_kv"]["ppl_ratio"]["value"] < 1.1
    failing = {x["variant_id"] for x in d["quality"]["variants"] if x["gate"] == "fail"}
    excluded = {e["variant_id"] for e in d["selection"]["excluded"] if any(r["kind"] == "quality" for r in e["reasons"])}
    assert failing == excluded
