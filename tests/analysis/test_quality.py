"""analysis.quality on hand-built quality rows with known answers, and the gate through the decision."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from analysis import decide, results
from analysis import quality as aq
from tests.analysis.test_decide import write_run


def rows(run_id, tf, ranks, gen, tasks=(), measure="prompt_logprobs"):
    out = [{"run_id": run_id, "set": "generic", "prompt_key": f"g{i}", "measure": measure, "tf_logprobs": lp,
            "tf_ranks": rk, "gen_token_ids": g, "prompt_token_ids": [7, 8], "gen_text": "", "answer": None, "error": None}
           for i, (lp, rk, g) in enumerate(zip(tf, ranks, gen, strict=True))]  # fmt: skip
    out += [{"run_id": run_id, "set": "tasks", "prompt_key": f"t{i}", "measure": measure, "tf_logprobs": None,
             "tf_ranks": None, "gen_token_ids": [1], "prompt_token_ids": [7], "gen_text": text, "answer": ans, "error": None}
            for i, (text, ans) in enumerate(tasks)]  # fmt: skip
    return pd.DataFrame(out)


BASE = rows("b-1", tf=[[-1.0, -2.0], [-1.0]], ranks=[[1, 1], [1]], gen=[[1, 2, 3], [4, 5]],
            tasks=[(" 42\n", "42"), (" 3, 7, 9", "3, 7, 9"), ("Lima.", "lima"), ("x", "y")])  # fmt: skip
VAR = rows("v-1", tf=[[-1.5, -2.0], [-1.0]], ranks=[[2, 1], [1]], gen=[[1, 9, 3], [4, 5]],
           tasks=[(" 42", "42"), ("3, 9, 7", "3, 7, 9"), ("Lima", "lima"), ("x", "y")])  # fmt: skip


def test_teacher_forced_figures_have_their_formulas():
    tf = aq.teacher_forced(VAR[VAR.set == "generic"], BASE[BASE.set == "generic"], n_boot=200)
    # N = 3 tokens; sum lp_v - sum lp_b = -4.5 - -4.0 = -0.5
    assert tf["n_tokens"] == 3 and tf["n_prompts"] == 2
    assert tf["mean_llr"].value == pytest.approx(-0.5 / 3)
    assert tf["ppl_ratio"].value == pytest.approx(math.exp(0.5 / 3))
    assert tf["top1_agreement"].value == pytest.approx(2 / 3)
    assert tf["baseline_self_top1"] == 1.0
    lo, hi = tf["top1_agreement"].lo, tf["top1_agreement"].hi
    assert 0 <= lo <= 2 / 3 <= hi <= 1  # over prompts: {1/2, 1} resampled


def test_free_running_and_first_divergence():
    fr = aq.free_running(VAR[VAR.set == "generic"], BASE[BASE.set == "generic"], n_boot=100)
    assert fr["exact_match_rate"].value == 0.5
    assert fr["first_divergence"].value == 1.5  # prompt 0 diverges at 1, prompt 1 is identical (its length 2)
    assert aq.first_divergence([1, 2], [1, 2, 3]) == 2 and aq.first_divergence([], [1]) == 0


def test_tasks_are_scored_exactly():
    assert aq.task_correct(" 42\nmore", "42") and aq.task_correct("Lima.", "lima") and not aq.task_correct("3, 9, 7", "3, 7, 9")
    t = aq.tasks(VAR[VAR.set == "tasks"], BASE[BASE.set == "tasks"], n_boot=100)
    assert t["task_n"] == 4 and t["task_accuracy_baseline"] == 0.75 and t["task_accuracy"].value == 0.5
    assert t["task_accuracy_drop_points"].value == pytest.approx(25.0)


def test_gate_and_random_weights():
    r = aq.compare(VAR, BASE, variant_id="v", baseline_variant_id="b", task_meaningful=True, n_boot=100)
    aq.gate(r, aq.Thresholds(min_top1_agreement=0.9, max_ppl_ratio=1.05, max_task_accuracy_drop_points=1.0))
    assert r.gate == "fail"
    assert r.gate_reasons == ["top1_agreement 0.6667 < min 0.9000", "ppl_ratio 1.1814 > max 1.0500",
                              "task_accuracy_drop_points 25.00 > max 1.00"]  # fmt: skip
    loose = aq.gate(aq.compare(VAR, BASE, variant_id="v", baseline_variant_id="b", n_boot=10),
                    aq.Thresholds(min_top1_agreement=0.5, max_ppl_ratio=1.2, max_task_accuracy_drop_points=30))
    assert loose.gate == "pass" and loose.gate_reasons == []
    rw = aq.gate(aq.compare(VAR, BASE, variant_id="v", baseline_variant_id="b", task_meaningful=False, n_boot=10),
                 aq.Thresholds(min_top1_agreement=0.5, max_ppl_ratio=1.2, max_task_accuracy_drop_points=1.0))
    assert rw.gate == "pass" and rw.task_accuracy is None and "random weights" in rw.task_note  # no task number, no task gate
    assert aq.accepted_cost(2.0, rw) == (None, "not meaningful for random weights (no task pass rate)")
    r2 = aq.compare(VAR, BASE, variant_id="v", baseline_variant_id="b", n_boot=10)
    assert aq.accepted_cost(2.0, r2) == (4.0, "$/1M goodput / task pass rate 0.500")


def test_text_only_engines_get_agreement_without_logprobs():
    b = rows("b", tf=[None], ranks=[None], gen=[[1, 2]], measure="text")
    v = rows("v", tf=[None], ranks=[None], gen=[[1, 3]], measure="text")
    r = aq.gate(aq.compare(v, b, variant_id="v", baseline_variant_id="b", n_boot=10), aq.Thresholds())
    assert r.measure == "text" and r.top1_agreement is None and r.exact_match_rate.value == 0.0
    assert r.gate == "fail" and r.gate_reasons[0].startswith("top1_agreement not measured (measure text)")


def test_evaluate_fails_what_was_not_measured():
    variants = {"b": {"quant": "none"}, "v": {"quant": "awq"}, "w": {"quant": "gptq"}, "x": {"quant": "int4"}}
    qruns = {"b": {"status": "ok", "run_id": "b-1", "measure": "prompt_logprobs", "n_generic": 2},
             "v": {"status": "ok", "run_id": "v-1", "reference": {"run_id": "b-1", "variant_id": "b"}},
             "w": {"status": "no_baseline", "reason": "no quant=none quality rows"}}  # fmt: skip
    res = aq.evaluate(variants, qruns, {"b-1": BASE, "v-1": VAR}, aq.Thresholds(), n_boot=10)
    assert res["b"].gate == "not_gated" and res["b"].baseline_self_top1 == 1.0
    assert res["v"].gate == "fail" and res["v"].baseline_variant_id == "b"
    assert res["w"].gate_reasons == ["quality not measured: its quality run ended no_baseline: no quant=none quality rows"]
    assert res["x"].gate_reasons[0].startswith("quality not measured: no quality run")


def _write_quality(run_dir, df, role, variant_id, ref=None):
    df = df.copy()
    df["run_id"] = run_dir.name
    df.to_parquet(run_dir / "quality.parquet")
    (run_dir / "quality.json").write_text(json.dumps({
        "status": "ok", "role": role, "run_id": run_dir.name, "variant_id": variant_id, "measure": "prompt_logprobs",
        "n_generic": 2, "n_tasks": 4, "reference": ref}))  # fmt: skip


@pytest.fixture
def gated(tmp_path):
    exp = tmp_path / "exp"
    b = write_run(exp, "r1_vllm_none", "none", [(1.0, [100]), (2.0, [300])])
    v = write_run(exp, "r2_vllm_awq", "awq", [(1.0, [100]), (2.0, [120])])
    vid = {r.path.name: r.variant_id for r in results.load_runs(exp)}  # v1 runs: identity derived
    _write_quality(b, BASE, "baseline", vid["r1_vllm_none"])
    _write_quality(v, VAR, "variant", vid["r2_vllm_awq"], ref={"run_id": "r1_vllm_none", "variant_id": vid["r1_vllm_none"]})
    return exp


def test_the_decision_excludes_a_variant_that_fails_the_gate(gated):
    d, _ = decide.decide(gated, ["quality.max_task_accuracy_drop_points=null"])
    q = {v["quant"]: v for v in d["quality"]["variants"]}
    assert d["quality"]["applied"] and q["awq"]["gate"] == "fail"
    assert q["awq"]["gate_reasons"] == ["top1_agreement 0.6667 < min 0.9000", "ppl_ratio 1.1814 > max 1.0500"]
    ex = {e["variant_label"]: e["reasons"] for e in d["selection"]["excluded"]}
    (awq,) = [r for label, r in ex.items() if "awq" in label]
    assert awq[0]["kind"] == "quality" and "top1_agreement 0.6667 < min 0.9000" in awq[0]["message"]
    assert "none" in d["selection"]["chosen"]["variant_label"]
    # loosened, awq is cheaper (meets the SLO at 2 req/s with lower TTFT) and wins; $/1M accepted = $/1M / pass rate
    d2, _ = decide.decide(gated, ["quality.min_top1_agreement=0.5", "quality.max_ppl_ratio=1.2",
                                  "quality.max_task_accuracy_drop_points=30"])  # fmt: skip
    q2 = {v["quant"]: v for v in d2["quality"]["variants"]}
    assert q2["awq"]["gate"] == "pass" and not [e for e in d2["selection"]["excluded"] if "awq" in e["variant_label"]]
    assert q2["awq"]["usd_per_1m_accepted"] == pytest.approx(q2["awq"]["usd_per_1m_goodput"] / 0.5)
    assert q2["awq"]["speedup"]["tpot_p99"] is not None
    # the report puts quality, speed and $/1M side by side (the latest decision.json: loosened)
    from analysis import report

    sec = report._env().get_template("_quality.html.j2").render(v={"quality": d2["quality"]})
    assert "pass" in sec and "0.6667" in sec and "1.1814" in sec and "$/1M goodput / task pass rate 0.500" in sec
    assert "INT4 ... 3.7x" in sec  # the seed's claim beside the awq figures
    # quality=none: decided on cost alone, and the decision says so
    d3, _ = decide.decide(gated, ["quality=none"])
    assert d3["quality"] == {"applied": False, "why": "quality=none: decided on cost alone"}


def test_generated_topk_scores_up_to_the_first_divergence_and_bounds_a_censored_one():
    from analysis.quality import generated_topk

    base = pd.DataFrame([{"prompt_key": "a", "gen_tokens": ["x", "y", "z"], "gen_logprobs": [-0.1, -0.2, -0.3]},
                         {"prompt_key": "b", "gen_tokens": ["p", "q"], "gen_logprobs": [-0.5, -0.6]}])  # fmt: skip
    # a: agrees at 0, diverges at 1 where the baseline's "y" is in the top-2 at -0.9
    # b: diverges at 0 where "p" is outside the top-2: bounded by the k-th (-1.5), counted censored
    var = pd.DataFrame([
        {"prompt_key": "a", "gen_tokens": ["x", "w", "v"], "gen_logprobs": [-0.15, -0.4, -0.1],
         "gen_top_logprobs_json": json.dumps([{"x": -0.15}, {"w": -0.4, "y": -0.9}, {"v": -0.1}])},
        {"prompt_key": "b", "gen_tokens": ["r", "s"], "gen_logprobs": [-0.7, -0.2],
         "gen_top_logprobs_json": json.dumps([{"r": -0.7, "t": -1.5}, {"s": -0.2}])},
    ])  # fmt: skip
    g = generated_topk(var, base, n_boot=50, seed=1)
    assert (g["n_prompts"], g["n_tokens"], g["censored"]) == (2, 3, 1)  # a: positions 0-1; b: position 0
    assert g["top1_agreement"].value == pytest.approx(1 / 3)
    assert g["mean_llr"].value == pytest.approx(((-0.15 - 0.9) - (-0.1 - 0.2) + (-1.5 + 0.5)) / 3)
    assert g["ppl_ratio"].value == pytest.approx(math.exp(-g["mean_llr"].value))
