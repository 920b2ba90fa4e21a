"""The what-if math (analysis.whatif) on hand-built inputs with known answers, and the what-if
table through `python -m analysis.decide ... whatif=all` on a small hand-built results folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import capacity, decide
from analysis import whatif as wf

# -- the semantic cache ------------------------------------------------------------------------------
A, A2, B = np.array([1.0, 0.0]), np.array([0.8, 0.6]), np.array([0.0, 1.0])  # cos(A, A2) = 0.8, cos(A, B) = 0


def test_cache_hits_false_hits_and_ttl_exactly():
    vec = np.stack([A, A, A2, B, B, A2])
    clusters = ["a", "a", "b", "c", "c", "a"]  # A2 is cluster b at t=2 but cluster a at t=5
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    r = wf.simulate_cache(vec, clusters, times, threshold=0.8, ttl_s=100)
    # t0 miss (A inserted); t1 hit A; t2 A2 ~ A (0.8 >= 0.8): hit, false (a != b); t3 miss (B); t4 hit B;
    # t5 A2 hits A (cluster a): true
    assert (r.requests, r.hits, r.false_hits, r.entries_inserted) == (6, 4, 1, 2)
    assert r.hit_rate == pytest.approx(4 / 6) and r.false_hit_rate == pytest.approx(1 / 6)
    assert r.false_hit_share_of_hits == pytest.approx(1 / 4)
    assert r.ideal_hit_rate == pytest.approx(3 / 6)  # a at t1 and t5, c at t4 (b is new at t2)
    strict = wf.simulate_cache(vec, clusters, times, threshold=0.81, ttl_s=100)
    # A2 no longer matches A: t2 misses and is inserted as b; t5 (A2 again, cluster a) hits that b entry: false
    assert (strict.hits, strict.false_hits, strict.entries_inserted) == (3, 1, 3)


def test_cache_exact_repeat_matches_cached_entry_cluster():
    vec = np.stack([A, A2, A2])
    r = wf.simulate_cache(vec, ["a", "b", "a"], [0.0, 1.0, 2.0], threshold=0.9, ttl_s=100)
    # t1 A2 vs A = 0.8 < 0.9: miss, inserted as b; t2 A2 == the b entry: hit, false (a != b)
    assert (r.hits, r.false_hits) == (1, 1)


def test_ttl_expires_entries():
    vec = np.stack([A, A, A])
    r = wf.simulate_cache(vec, ["a"] * 3, [0.0, 5.0, 16.0], threshold=0.9, ttl_s=10)
    # t5 hits (age 5); t16: the t0 entry is 16 s old > 10: miss, re-inserted
    assert (r.hits, r.entries_inserted) == (1, 2)
    assert r.ideal_hit_rate == pytest.approx(1 / 3)


def test_timed_lookup_reports_a_median():
    vec = np.stack([A, A])
    ticks = iter(range(0, 10**9, 2_000_000))  # each clock() call advances 2 ms
    r = wf.simulate_cache(vec, ["a", "a"], [0.0, 1.0], 0.9, 10, lookup=lambda j: vec[j], clock=lambda: next(ticks))
    assert r.lookup_ms_p50 == pytest.approx(2.0) and r.hits == 1


def test_tfidf_embedder_is_unit_length_and_states_itself():
    e = wf.TfidfEmbedder("char_wb", 3, 5).fit(["What is the capital of France?", "Which city is France's capital?",
                                                 "How tall is Mount Everest?"])  # fmt: skip
    v = e.embed(["What is the capital of France?", "what is the capital of france", "How tall is Mount Everest?"])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert v[0] @ v[1] > 0.8 > v[0] @ v[2]
    d = e.describe()
    assert d["analyzer"] == "char_wb" and d["ngram_range"] == [3, 5] and "scikit-learn" in d["library"]


# -- the router and the blend --------------------------------------------------------------------------
def test_prompt_length_router_and_blended_cost_exactly():
    esc, ms = wf.route([10, 20, 30, 40, 50], threshold=30)
    assert esc.tolist() == [False, False, False, True, True] and ms is not None and ms >= 0
    r = wf.blend(esc, usd_per_request_small=1.0, usd_per_request_large=5.0, output_tokens_small=100, output_tokens_large=100,
                 e2e_ms_small=200, e2e_ms_large=1000, router_ms=0.5, quality_small=0.7, quality_large=0.9)  # fmt: skip
    assert r.escalation_rate == pytest.approx(0.4) and r.escalated == 2
    assert r.usd_per_request_blended == pytest.approx(0.6 * 1 + 0.4 * 5)  # 2.6
    assert r.cost_reduction == pytest.approx(1 - 2.6 / 5)  # 0.48
    assert r.usd_per_1m_output_blended == pytest.approx(2.6 / 100 * 1e6)
    assert r.e2e_ms_p50_blended == pytest.approx(0.6 * 200 + 0.4 * 1000 + 0.5)
    assert r.quality_blended == pytest.approx(0.6 * 0.7 + 0.4 * 0.9)
    assert wf.blend(esc, usd_per_request_small=1, usd_per_request_large=5).quality_blended is None


def test_cost_helpers():
    assert wf.usd_per_request(2.0, 500) == pytest.approx(1e-3)
    assert wf.usd_per_request(None, 5) is None and wf.usd_per_request(float("inf"), 5) is None
    assert wf.requests_per_month([1.0, 3.0], 730) == pytest.approx(2 * 730 * 3600)
    assert wf.prefix_hit_rate({"prefix_cache_queries_total_increase": 1000, "prefix_cache_hits_total_increase": 900}) == 0.9
    assert wf.prefix_hit_rate({"prefix_cache_queries_total_increase": 0.0}) == 0.0
    assert wf.prefix_hit_rate({}) is None


# -- autoscaling and spot on a known profile -----------------------------------------------------------
def test_policy_rows_on_a_known_profile_exactly():
    dem = capacity.demand(None, [1.0, 2.0, 4.0, 2.0], 3600.0)
    prices = capacity.ReplicaPrices(on_demand=1.0, spot=0.3, reserved=0.6, spot_interruptions_per_hour=0.1)
    plan = capacity.plan(variant_id="v", variant_label="vllm/x", knee_rps=1.0, demand=dem, prices=prices, gpus_per_replica=1,
                         engine_start_s=300.0, provisioning_s=300.0, rho_max=1.0, measured_output_tokens=100.0,
                         spot_share_max=0.5, spot_restart_s=360.0, hours_per_month=730.0).to_dict()  # fmt: skip
    assert plan["replicas_per_bin"] == [1, 2, 4, 2]
    rows = wf.policy_rows(plan, restart_s=360.0, engine_start={"run_id": "r1", "value_s": 300.0}, pricing_name="book",
                          demand_source="profile")  # fmt: skip
    by = {r["technique"]: r for r in rows}
    M = 730 / 4  # profile repeats per month
    static = 4 * 1.0 * 730  # 2920
    auto = by["autoscaling (reactive, 24-hour profile)"]
    assert auto["status"] == "evaluated"
    assert auto["details"]["usd_per_month"] == pytest.approx(9 * M)  # 1642.5
    assert auto["usd_per_month_saved"] == pytest.approx(static - 9 * M)  # 1277.5
    # two scale-ups beyond capacity per day (bins 1 and 2), each min(lag 600 s, 3600 s) = 10 min
    assert auto["details"]["slo_miss_minutes_per_month"] == pytest.approx(20 * M)  # 3650
    res = by["reserved base + on-demand burst"]
    assert res["usd_per_month_saved"] == pytest.approx(static - (1 * 0.6 * 730 + 5 * M))  # 2920 - 1350.5
    spot = by["reserved base + on-demand burst + spot share"]
    eff = 0.3 * (1 + 0.1 * 360 / 3600)  # 0.303
    total = 1 * 0.6 * 730 + (1 * 1.0 + 4 * eff) * M  # spot replicas per bin [0, 1, 2, 1], on demand [0, 0, 1, 0]
    assert spot["usd_per_month_saved"] == pytest.approx(static - total)
    assert spot["details"]["spot_interruptions_per_month"] == pytest.approx(4 * M * 0.1)  # 73
    assert spot["details"]["replica_minutes_lost_per_month"] == pytest.approx(73 * 360 / 60)  # 438


def test_policy_rows_without_spot_or_reserved_prices_are_not_evaluated():
    dem = capacity.demand(None, [1.0, 2.0], 3600.0)
    plan = capacity.plan(variant_id="v", variant_label="x", knee_rps=1.0, demand=dem, prices=capacity.ReplicaPrices(on_demand=1.0),
                         gpus_per_replica=0, engine_start_s=10, provisioning_s=0, rho_max=1.0,
                         measured_output_tokens=10).to_dict()  # fmt: skip
    rows = wf.policy_rows(plan, restart_s=10, engine_start={"run_id": "r", "value_s": 10}, pricing_name="cpu_vm",
                          demand_source="profile")  # fmt: skip
    assert [r["status"] for r in rows] == ["evaluated", "not_evaluated", "not_evaluated"]
    assert "pricing=cpu_vm has no" in rows[2]["why"]


def test_config_problems_one_line_each():
    w = wf.WhatIfConfig(techniques=["semantic_cache", "magic"])
    w.semantic_cache.threshold = 1.5
    w.semantic_cache.ttl_s = 0
    w.cascade.rule = "score"
    p = wf.config_problems(w)
    assert any("magic" in x for x in p) and any("threshold=1.5" in x for x in p)
    assert any("ttl_s=0" in x for x in p) and any("rule='score'" in x for x in p)
    assert wf.config_problems(wf.WhatIfConfig(techniques=list(wf.TECHNIQUES))) == []


# -- through the decision ----------------------------------------------------------------------------
PROMPTS = {0: ("What is the capital of France?", 0), 1: ("what is the capital of france", 0),
           2: ("How tall is Mount Everest?", 1), 3: ("How tall is Mount Everest?", 2)}  # fmt: skip


@pytest.fixture(scope="module")
def whatif_folder(tmp_path_factory):
    from tests.analysis.test_decide import write_run

    exp = tmp_path_factory.mktemp("wi") / "exp"
    pts = [(1.0, [100]), (2.0, [120])]
    on = write_run(exp, "pc_on", "none", pts, engine={"name": "vllm", "port": 0, "prefix_caching": True})
    off = write_run(exp, "pc_off", "none", [(1.0, [300]), (2.0, [320])], engine={"name": "vllm", "port": 0, "prefix_caching": False})
    awq = write_run(exp, "awq_para", "awq", pts)
    for d, hits in ((on, 900.0), (off, 0.0)):
        s = json.loads((d / "run.json").read_text())
        for lp in s["load_points"]:
            lp["summary"]["engine_metrics"] = {"prefix_cache_hits_total_increase": hits,
                                               "prefix_cache_queries_total_increase": 1000.0 if hits else 0.0}  # fmt: skip
        (d / "run.json").write_text(json.dumps(s))
    # awq: a paraphrase run (4 items, cycled), whose prompts the semantic cache replays
    s = json.loads((awq / "run.json").read_text())
    s["config"]["workload"] = {"name": "paraphrase", "kind": "paraphrase"}
    (awq / "run.json").write_text(json.dumps(s))
    pd.DataFrame([{"prompt_idx": i, "prompt": p, "cluster": c} for i, (p, c) in PROMPTS.items()]).to_parquet(awq / "workload.parquet")
    # pc_off (the cascade's large variant): prompt lengths 10..19 by request, so 2 in 10 are > 17 tokens
    req = pd.read_parquet(off / "requests.parquet")
    k = req["request_id"].str.split("-", n=1).str[1].astype(int)
    req["prompt_tokens_client"] = (10 + k % 10).astype("int32")
    req.to_parquet(off / "requests.parquet", index=False)
    return exp


def test_whatif_table_through_decide(whatif_folder, capsys):
    ov = ["whatif=all", "capacity=example", "n_boot=100", "whatif.requests_per_month=1000000",
          "whatif.cascade.small=vllm/awq", "whatif.cascade.large='vllm/none prefix_caching=False'", "whatif.cascade.threshold=17",
          "whatif.variant=vllm/awq"]  # fmt: skip
    assert decide.main([str(whatif_folder), *ov]) == 0
    out = capsys.readouterr().out
    assert "what-if:" in out and "prefix caching (measured)" in out
    d = json.loads((whatif_folder / "decision.json").read_text())
    w = d["whatif"]
    rows = {r["technique"]: r for r in w["rows"]}
    assert w["requests_per_month"] == 1e6 and "stated" in w["volume_source"]

    pc = rows["prefix caching (measured)"]
    assert pc["status"] == "evaluated"
    assert pc["details"]["on"]["hit_rate"] == 0.9 and pc["details"]["off"]["hit_rate"] == 0.0
    assert pc["details"]["load_value"] == 2.0 and pc["details"]["ttft_ms_p50_delta"] == pytest.approx(-200.0)
    assert {m["run_id"] for m in pc["measured_inputs"]} == {"pc_on", "pc_off"}

    sc = rows["semantic cache (simulated on measured costs)"]
    assert sc["status"] == "evaluated" and "measured: the paraphrase run awq_para" in sc["details"]["prompt_source"]
    # 120 measured requests cycling the 4 items: 2 misses (items 0 and 2 first seen); item 1 matches item 0
    # (same words); item 3 is item 2's text in another cluster: its 30 requests are false hits
    at = next(c for c in w["semantic_cache_curve"] if c["threshold"] == 0.8)
    assert (at["requests"], at["hits"], at["false_hits"]) == (120, 118, 30)
    assert at["ideal_hit_rate"] == pytest.approx(117 / 120)
    cost = sc["details"]["usd_per_request"]
    assert sc["usd_per_month_saved"] == pytest.approx(118 / 120 * 1e6 * cost)
    assert sc["details"]["lookup_ms_p50"] > 0 and "tfidf" in w["embedder"]["name"]
    hit = [c["hit_rate"] for c in w["semantic_cache_curve"]]
    assert hit == sorted(hit, reverse=True)  # stricter thresholds never hit more

    ca = rows["cascade routing (two measured variants)"]
    assert ca["status"] == "evaluated"
    assert ca["details"]["escalation_rate"] == pytest.approx(0.2) and ca["details"]["threshold_tokens"] == 17
    c_s, c_l = ca["details"]["usd_per_request_small"], ca["details"]["usd_per_request_large"]
    assert ca["details"]["usd_per_request_blended"] == pytest.approx(0.8 * c_s + 0.2 * c_l)
    assert ca["usd_per_month_saved"] == pytest.approx((c_l - (0.8 * c_s + 0.2 * c_l)) * 1e6)
    assert "not assessed" in ca["quality_cost"] and "87 %" in ca["headline"]

    auto = rows["autoscaling (reactive, 24-hour profile)"]
    assert auto["status"] == "evaluated" and auto["usd_per_month_saved"] > 0
    pol = w["policies"]["monthly_usd"]
    assert auto["usd_per_month_saved"] == pytest.approx(pol["static_peak"] - pol["autoscaled"])
    assert rows["reserved base + on-demand burst + spot share"]["status"] == "not_evaluated"  # cpu_vm: no spot price


def test_missing_inputs_are_not_evaluated_rows(whatif_folder, capsys):
    one = whatif_folder / "awq_para"  # a single run: no pair, no second variant, no demand
    assert decide.main([str(one), "whatif=all", "n_boot=50"]) == 0
    rows = {r["technique"]: r for r in json.loads((one / "decision.json").read_text())["whatif"]["rows"]}
    assert "experiment=prefix_cache" in rows["prefix caching (measured)"]["why"]
    assert "small and a large variant" in rows["cascade routing (two measured variants)"]["why"]
    assert "capacity=example" in rows["autoscaling (reactive, 24-hour profile)"]["why"]
    assert rows["semantic cache (simulated on measured costs)"]["status"] == "evaluated"
    assert "not evaluated" in capsys.readouterr().out


@pytest.mark.parametrize("override, needle", [
    ("whatif.semantic_cache.threshold=1.5", "whatif.semantic_cache.threshold=1.5 must be in (0, 1]"),
    ("whatif.cascade.rule=score", "whatif.cascade.rule='score': use prompt_length"),
])  # fmt: skip
def test_bad_whatif_values_exit_2_one_line(whatif_folder, capsys, override, needle):
    assert decide.main([str(whatif_folder), "whatif=all", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_unknown_cascade_variant_names_the_variants(whatif_folder, capsys):
    assert decide.main([str(whatif_folder / "awq_para"), "whatif=cascade", "whatif.cascade.small=nope",
                        "whatif.cascade.large=vllm/awq", "n_boot=20"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "whatif.cascade.small=nope: no such variant; the variants are: vllm/awq" in err[0]


def test_report_section_renders_deterministically(whatif_folder):
    from analysis import report, report_whatif

    d = json.loads((whatif_folder / "decision.json").read_text())
    v1, v2 = report_whatif.view(d, "exp"), report_whatif.view(d, "exp")
    assert [p["svg"] for p in v1["plots"]] == [p["svg"] for p in v2["plots"]]  # same input, same bytes
    html = report._env().get_template("_whatif.html.j2").render(v={"whatif": v1})
    assert 'id="whatif-table"' in html and "prefix caching (measured)" in html and "not evaluated" in html
    assert html.count("<svg") == 2 and "false-hit rate" in html
    empty = report._env().get_template("_whatif.html.j2").render(v={"whatif": report_whatif.view({}, "exp")})
    assert "whatif=all" in empty and "<svg" not in empty


@pytest.mark.parametrize("option", sorted(p.stem for p in (decide.CONF / "whatif").glob("*.yaml")))
def test_every_whatif_option_composes(option):
    w = decide.compose([f"whatif={option}"]).whatif
    assert isinstance(w, wf.WhatIfConfig) and w.name == option and wf.config_problems(w) == []
    assert w.techniques == ([] if option == "none" else list(wf.TECHNIQUES) if option == "all" else [option])
    assert decide.compose([]).whatif.techniques == []  # the default: no what-if


def test_the_prefix_cache_row_on_a_mooncake_replay_names_the_trace_and_its_ideal_hit_rate(tmp_path):
    """experiment=prefix_cache traffic=trace on a Mooncake trace: the pair is matched on the trace too
    (runs of another trace are not its pair), and the row says what it was measured on beside the
    trace's own ideal hit rate (run.json `trace`, the rows sent)."""
    from tests.analysis.test_decide import write_run

    exp = tmp_path / "exp"
    trace = {"kind": "trace", "points": [1.0, 2.0], "warmup_s": 5.0, "duration_s": 30.0, "trace_path": "/d/conv.jsonl",
             "trace_format": "auto", "trace_block_tokens": 512, "trace_model": None, "trace_log_type": None}  # fmt: skip
    runs = {"on": (True, 700.0, "/d/conv.jsonl"), "off": (False, 0.0, "/d/conv.jsonl"), "other": (False, 0.0, "/d/tool.jsonl")}
    for name, (pc, hits, path) in runs.items():
        d = write_run(exp, name, "none", [(1.0, [100 if pc else 300]), (2.0, [120 if pc else 320])],
                      engine={"name": "vllm", "port": 0, "prefix_caching": pc})  # fmt: skip
        s = json.loads((d / "run.json").read_text())
        s["config"]["traffic"] = {**trace, "trace_path": path}
        s["trace"] = {"format": "mooncake", "block_tokens": 512, "prefix_reuse": {"ideal_hit_rate": 0.4},
                      "prefix_reuse_built": {"ideal_hit_rate": 0.75}}  # fmt: skip
        for lp in s["load_points"]:
            lp["summary"]["engine_metrics"] = {"prefix_cache_hits_total_increase": hits,
                                               "prefix_cache_queries_total_increase": 1000.0 if hits else 0.0}  # fmt: skip
        (d / "run.json").write_text(json.dumps(s))
    assert decide.main([str(exp), "whatif=prefix_cache", "n_boot=50"]) == 0
    (row,) = json.loads((exp / "decision.json").read_text())["whatif"]["rows"]
    assert row["status"] == "evaluated" and {m["run_id"] for m in row["measured_inputs"]} == {"on", "off"}
    assert row["details"]["traffic"] == "the replay of conv.jsonl (mooncake trace, 512-token blocks)"
    assert row["details"]["trace_ideal_hit_rate"] == 0.75 and row["details"]["on"]["hit_rate"] == 0.7
    assert row["headline"].startswith("on the replay of conv.jsonl (mooncake trace, 512-token blocks): engine hit rate "
                                      "70.0 % on vs 0.0 % off (the trace's ideal, an infinite cache: 75.0 %)")
