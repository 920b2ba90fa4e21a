"""`python -m analysis.decide` end to end on a tiny hand-built results folder, and its bad inputs."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import decide, results
from analysis.metrics import derive, summarize_point
from experiments.artifacts import nullable_dtype as _nullable
from loadgen.records import empty_record, to_table

MS = 1_000_000
TOKENS = 8  # output tokens per request: 8 chunks 20 ms apart
N = 120  # measured requests per point


def point_records(i: int, rate: float, ttft_ms: list[float]) -> list[dict]:
    """5 warmup then N measured requests at `rate` req/s, request k with TTFT ttft_ms[k % len]."""
    recs = []
    for k in range(-5, N):
        sent = int((k + 5) / rate * 1e9) + 10**12
        ttft = ttft_ms[k % len(ttft_ms)]
        chunks = [sent + int(ttft * MS) + j * 20 * MS for j in range(TOKENS)]
        rec = empty_record(
            load_point=i, request_id=f"{i}-{k}", worker=1, phase="warmup" if k < 0 else "measure", prompt_idx=k % 4,
            endpoint="completions", max_tokens=TOKENS, prompt_tokens_client=16, t_scheduled_ns=sent, t_sent_ns=sent,
            t_headers_ns=sent, t_first_token_ns=chunks[0], t_last_token_ns=chunks[-1], t_done_ns=chunks[-1] + MS,
            chunk_ns=chunks, status="ok", http_status=200, prompt_tokens=16, output_tokens=TOKENS,
            output_tokens_source="usage",
        )  # fmt: skip
        rec["output_tokens_client"] = TOKENS  # a post-run annotation (loadgen.records.ANNOTATION_SCHEMA)
        recs.append(rec)
    return recs


def write_run(root, name, quant, points, started="2026-12-01T10:00:00+00:00", status="ok", ready_s=20.0, gpu=("cpu", 0),
              engine=None):
    """A v1 run folder: run.json (summaries from analysis.metrics) + requests.parquet."""
    d = root / name
    d.mkdir(parents=True)
    recs, lps = [], []
    for i, (rate, ttft) in enumerate(points):
        pr = point_records(i, rate, ttft)
        recs += pr
        df = to_table(pr).to_pandas(types_mapper=_nullable)
        s = summarize_point(df, kind="poisson", value=rate, warmup_s=5 / rate, duration_s=N / rate)
        lps.append({"index": i, "value": rate, "interrupted": False, "summary": s})
    pq.write_table(pa.Table.from_pandas(derive(to_table(recs).to_pandas(types_mapper=_nullable)), preserve_index=False),
                   d / "requests.parquet")  # fmt: skip
    cfg = {
        "engine": engine or {"name": "vllm", "port": 0, "max_num_seqs": None}, "quant": {"name": quant, "method": quant},
        "model": {"name": "tiny_llama", "path": "models/tiny-llama"}, "gpu": {"name": gpu[0], "count": gpu[1]},
        "traffic": {"kind": "poisson", "points": [p[0] for p in points], "warmup_s": 5.0, "duration_s": 30.0},
        "workload": {"name": "synthetic_fixed"},
    }  # fmt: skip
    run = {"schema_version": 1, "run_id": name, "experiment": "exp", "status": status, "started_at_utc": started,
           "config": cfg, "engine": {"name": "vllm", "time_to_ready_s": ready_s}, "load_points": lps,
           "telemetry": {"sampler": None}, "engine_metrics": None}  # fmt: skip
    (d / "run.json").write_text(json.dumps(run))
    return d


@pytest.fixture
def folder(tmp_path):
    exp = tmp_path / "exp"
    # none: TTFT 100 ms at 1 req/s, 300 at 2, 30 % of requests at 700 (> 500 ms) at 4 -> knee bracketed [2, 4]
    write_run(exp, "r1_vllm_none", "none", [(1.0, [100]), (2.0, [300]), (4.0, [700, 100, 100, 700, 100, 100, 700, 100, 100, 100])])
    # awq: meets the SLO at every load: knee not reached, at least 4 req/s -> cheaper $/1M there
    write_run(exp, "r2_vllm_awq", "awq", [(1.0, [100]), (2.0, [120]), (4.0, [150])])
    write_run(exp, "r3_vllm_gptq", "gptq", [(1.0, [100])], status="failed")
    return exp


def test_v1_identity_and_table(folder):
    runs = results.load_runs(folder)
    assert [r.run_id for r in runs] == ["r1_vllm_none", "r2_vllm_awq", "r3_vllm_gptq"]
    assert runs[2].skipped.startswith("status failed")
    assert len({r.variant_id for r in runs}) == 3 and all(len(r.variant_id) == 12 for r in runs)
    assert [r.variant_label for r in runs] == ["vllm/none", "vllm/awq", "vllm/gptq"]
    # v1 identity comes from analysis.records.identity over the recorded config: the port is not in the key
    from analysis.records.run import upgrade_v1

    d = json.loads((folder / "r1_vllm_none" / "run.json").read_text())
    other = {**d, "config": {**d["config"], "engine": {**d["config"]["engine"], "port": 8123}}}
    assert runs[0].variant_id == upgrade_v1(d)["variant_id"] == upgrade_v1(other)["variant_id"]


def test_decide_end_to_end(folder, capsys):
    code = decide.main([str(folder), "capacity.peak_rps=10", "n_boot=200"])
    out = capsys.readouterr().out
    assert code == 0, out
    d = json.loads((folder / "decision.json").read_text())
    assert d["schema_version"] == 1 and d["kind"] == "servelab.decision"
    assert d["overrides"] == ["capacity.peak_rps=10", "n_boot=200"]
    # v1 point ids come from analysis.records.identity over the recorded traffic + workload, per load value
    from analysis.records import identity
    from analysis.records.run import ConfigView as _Obj

    cfg = _Obj(json.loads((folder / "r1_vllm_none" / "run.json").read_text())["config"])
    want = {identity.point_id(cfg.traffic, cfg.workload, v) for v in (1.0, 2.0, 4.0)}
    assert len(d["points"]) == 6 and {p["point_id"] for p in d["points"]} == want
    kn = {k["variant_label"]: k for k in d["knees"]}
    assert kn["vllm/none"]["status"] == "bracketed" and (kn["vllm/none"]["knee_load"], kn["vllm/none"]["above_load"]) == (2.0, 4.0)
    # attainment 1.0 at 2 and 0.7 at 4 (target 0.9) crosses at 2 + 2 * 0.1 / 0.3; TTFT p99 300 -> 700
    # (limit 500) would cross later, at 3
    assert kn["vllm/none"]["estimate"] == pytest.approx(2 + 2 * 0.1 / 0.3) and kn["vllm/none"]["binding"] == "attainment"
    assert kn["vllm/awq"]["status"] == "all_feasible" and kn["vllm/awq"]["knee_load"] == 4.0
    sel = d["selection"]
    assert sel["chosen"]["variant_label"] == "vllm/awq" and sel["chosen"]["load_value"] == 4.0
    assert sel["runner_up"]["variant_label"] == "vllm/none"
    # cpu_vm: $0.10 per host-hour over the point's throughput window W (analysis.metrics), paid by
    # the goodput tokens: all 120 requests x 8 tokens meet the SLO
    run = json.loads((folder / "r2_vllm_awq" / "run.json").read_text())
    w = run["load_points"][2]["summary"]["measure_window_s"]
    assert sel["chosen"]["usd"] == pytest.approx(0.10 * w / 3600 / (N * TOKENS) * 1e6)
    assert sel["chosen"]["usd_lo"] <= sel["chosen"]["usd"] <= sel["chosen"]["usd_hi"]
    rows = {r["input"]: r for r in d["sensitivity"]["rows"]}
    assert rows["price of cpu"]["flips"] is False  # one GPU type: a common price change cannot flip it
    assert any("spot share" in n for n in d["sensitivity"]["not_evaluated"])  # cpu_vm has no spot price
    assert [e["variant_label"] for e in sel["excluded"]] == []  # gptq's run failed: skipped, not a variant
    assert [r["skipped"] is not None for r in d["runs"]] == [False, False, True]
    plan = d["capacity"]["plans"][0]
    # knee not reached at 4 req/s: 10 / (4 * 0.85) = 2.94 -> 3 replicas
    assert plan["variant_label"] == "vllm/awq" and plan["replicas_peak"] == 3 and plan["mu_rps"] == 4.0
    assert plan["monthly_usd"]["static_peak"] == pytest.approx(3 * 0.10 * 730)
    assert "usd_per_1m_goodput" in d["formulas"] and d["assumptions"]
    assert "vllm/awq" in out and "runner-up" in out and "3 replicas" in out


def test_single_run_folder_writes_next_to_it(folder, capsys):
    run = folder / "r1_vllm_none"
    assert decide.main([str(run), "n_boot=50"]) == 0
    d = json.loads((run / "decision.json").read_text())
    assert d["selection"]["chosen"]["load_value"] == 2.0 and d["capacity"] is None
    assert "no plan" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("pricing.usd_per_hour=-1", "usd_per_hour"),
        ("slo.ttft_ms=-1", "ttft_ms"),
        ("slo.percentile=150", "percentile"),
        ("pricing=aws_on_demand", "cpu"),  # the runs' gpu=cpu has no price in that book
        ("capacity.plan=true", "capacity: a plan needs a peak"),
        ("capacity.rho_max=0", "rho_max"),
        ("slo=nonexistent", "invalid configuration"),
        ("quality.max_ppl_ratio=-1", "quality.max_ppl_ratio must be > 0"),  # the gate it applies (was: unchecked)
    ],
)
def test_bad_inputs_one_line_each_exit_2(folder, capsys, override, needle):
    assert decide.main([str(folder), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("decide: ") and needle in err[0], err
    assert not (folder / "decision.json").exists()


def test_no_runs(tmp_path, capsys):
    assert decide.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"decide: no runs in {tmp_path}: no run.json below it"


def test_v1_repetitions_pool_and_v2_identity_is_used(tmp_path, capsys):
    exp = tmp_path / "exp"
    write_run(exp, "a1", "awq", [(2.0, [100])], started="2026-12-01T10:00:00+00:00")
    write_run(exp, "a0", "awq", [(2.0, [200])], started="2026-12-01T09:00:00+00:00")
    v2 = write_run(exp, "b", "none", [(2.0, [100])])
    j = json.loads((v2 / "run.json").read_text())
    j.update(schema_version=2, variant_id="abcdefabcdef")
    j["load_points"][0].update(point_id="p-two", repetition=0, load_value=j["load_points"][0].pop("value"))
    (v2 / "run.json").write_text(json.dumps(j))
    from analysis.schema import PricingConfig, SloConfig

    t = results.build_table(exp, slo=SloConfig(ttft_ms=500, tpot_ms=50), pricing=PricingConfig(usd_per_hour=1.0), n_boot=20)
    p = t.points.set_index("run_id")
    # v1 repetitions in start order: a0 (09:00) is 0, a1 (10:00) is 1; same derived variant and point
    assert (p.loc["a0", "repetition"], p.loc["a1", "repetition"]) == (0, 1)
    assert p.loc["a0", "variant_id"] == p.loc["a1", "variant_id"] and p.loc["a0", "point_id"] == p.loc["a1", "point_id"]
    assert (p.loc["b", "variant_id"], p.loc["b", "point_id"]) == ("abcdefabcdef", "p-two")
    assert decide.main([str(exp), "n_boot=20"]) == 0
    d = json.loads((exp / "decision.json").read_text())
    (awq,) = [k for k in d["knees"] if k["variant_label"] == "vllm/awq"]
    assert awq["status"] == "all_feasible" and awq["knee_load"] == 2.0


def test_capacity_from_a_trace_file(folder, tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    # 2 req/s for the first 10 s bin, 6 req/s for the second
    times = [i / 2 for i in range(20)] + [10 + i / 6 for i in range(60)]
    trace.write_text("".join(json.dumps({"timestamp": t, "input_tokens": 16, "output_tokens": 8}) + "\n" for t in times))
    assert decide.main([str(folder), f"capacity.trace_path={trace}", "capacity.profile_bin_s=10", "n_boot=20"]) == 0
    plan = json.loads((folder / "decision.json").read_text())["capacity"]["plans"][0]
    assert plan["demand_source"] == "trace" and plan["peak_rps"] == pytest.approx(6.0)
    # mu 4 req/s at rho 0.85: 2 -> 1 replica, 6 -> 2
    assert plan["replicas_per_bin"] == [1, 2]


def test_gpu_book_with_spot_and_reserved(tmp_path, capsys):
    exp = tmp_path / "exp"
    write_run(exp, "h_awq", "awq", [(1.0, [100]), (2.0, [120]), (4.0, [150])], gpu=("h100_sxm_80g", 1), ready_s=40.0)
    write_run(exp, "h_none", "none", [(1.0, [100]), (2.0, [300])], gpu=("h100_sxm_80g", 1), ready_s=40.0)
    args = [str(exp), "pricing=aws_on_demand", "pricing.gpus.h100_sxm_80g.reserved_1y=5.0", "capacity=example", "n_boot=20"]
    assert decide.main(args) == 0
    d = json.loads((exp / "decision.json").read_text())
    plan = d["capacity"]["plans"][0]
    assert plan["variant_label"] == "vllm/awq" and plan["gpus_per_replica"] == 1
    assert plan["prices_usd_per_replica_hour"] | {"source": None} == {
        "on_demand": 8.6, "spot": 3.79, "reserved": 5.0, "spot_interruptions_per_hour": 0.0002, "source": None}
    # example profile: 24 hourly bins, N+1, rho 0.85, mu 4 req/s; month = 730 h / 24 h repeats
    n = plan["replicas_per_bin"]
    assert n == [2 if v <= 3.4 else 3 if v <= 6.8 else 4 if v <= 10.2 else 5 for v in d["config"]["capacity"]["profile_rps"]]
    month = 730 / 24
    assert plan["monthly_usd"]["autoscaled"] == pytest.approx(sum(n) * 8.6 * month)
    r = min(n)
    assert plan["reserved_replicas"] == r
    assert plan["monthly_usd"]["reserved_base_on_demand_burst"] == pytest.approx(r * 5.0 * 730 + sum(x - r for x in n) * 8.6 * month)
    # spot restart = the measured time_to_ready_s (40 s): 3.79 * (1 + 0.0002 * 40 / 3600)
    assert plan["spot_effective_usd_per_hour"] == pytest.approx(3.79 * (1 + 0.0002 * 40 / 3600))
    spot_n = [min(x - r, int(0.3 * x)) for x in n]
    want = r * 5.0 * 730 + sum((x - r - s) * 8.6 + s * plan["spot_effective_usd_per_hour"] for x, s in zip(n, spot_n, strict=True)) * month
    assert plan["monthly_usd"]["reserved_base_on_demand_burst_spot"] == pytest.approx(want)
    assert plan["scale_up_lag_s"] == 300 + 40  # provisioning + measured engine start
    rows = {row["input"]: row for row in d["sensitivity"]["rows"]}
    assert "spot share" in rows and "price of h100_sxm_80g" in rows


def test_labels_name_what_differs(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "a", "none", [(1.0, [100])], engine={"name": "vllm", "port": 1, "max_num_seqs": 64})
    write_run(exp, "b", "none", [(1.0, [100])], engine={"name": "vllm", "port": 2, "max_num_seqs": 256})
    write_run(exp, "c", "none", [(1.0, [100])], engine={"name": "vllm", "port": 3, "max_num_seqs": 256})  # same as b
    write_run(exp, "d", "awq", [(1.0, [100])])
    labels = {r.run_id: r.variant_label for r in results.load_runs(exp)}
    # the port is not part of the launch key: b and c are one variant
    assert labels == {"a": "vllm/none max_num_seqs=64", "b": "vllm/none max_num_seqs=256",
                      "c": "vllm/none max_num_seqs=256", "d": "vllm/awq"}  # fmt: skip


def test_decision_json_is_strict_json():
    import numpy as np

    from analysis.records.plain import jsonable

    v = jsonable({"a": float("inf"), "b": np.float64("nan"), "c": [np.int64(3), np.bool_(True)],
                           "d": np.array([1.0, -np.inf])})  # fmt: skip
    assert v == {"a": None, "b": None, "c": [3, True], "d": [1.0, None]}
    json.dumps(v, allow_nan=False)
