"""The whole runner pipeline against the timing server (fast, no real engine): artifacts,
run.json, report, Ctrl-C, failures."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from engines import ADAPTERS
from engines.process import group_alive
from experiments.config import to_run_config
from experiments.runner import run
from tests.conftest import compose
from tests.support.fake_adapter import TimingServerAdapter
from tests.support.signals import ctrl_c_when, ok_record_in


@pytest.fixture
def fake_engine(monkeypatch):
    monkeypatch.setitem(ADAPTERS, "timing", TimingServerAdapter)


def cfg(tok_dir, *extra):
    return to_run_config(compose([
        "engine.name=timing", f"model.path={tok_dir}", "model.built_by=null", "workload.prompt_tokens=20",
        "workload.output_tokens=8", "workload.num_prompts=4", "traffic.points=[8,16]", "traffic.duration_s=1.5",
        "traffic.warmup_s=0.5", *extra,
    ]))  # fmt: skip


def test_pipeline_writes_every_artifact(fake_engine, tiny_tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    assert run(cfg(tiny_tokenizer_dir), out, ["engine.name=timing"]) == 0
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "ok" and s["failure"] is None
    assert {"requests", "telemetry", "loadgen", "engine_log", "loadgen_log", "report"} <= set(s["artifacts"])
    assert not (out / "work").exists()  # raw JSONL folded into parquet
    assert [p["index"] for p in s["load_points"]] == [0, 1]
    _check_identity(out, s)
    for p in s["load_points"]:
        m = p["summary"]
        assert m["requests"]["ok"] == m["requests"]["total"] > 0
        assert m["output_length_mismatches"] == 0
        assert m["ttft_ms"]["p50"] >= 15
        # the decision layer's per-point view, at the run's slo and pricing (as analysis.decide computes it)
        d = m["decision"]
        assert d["verdict"] in ("valid", "warn", "invalid") and 0 <= d["attainment"] <= 1
        assert d["slo"] == "interactive" and d["pricing"] == "cpu_vm" and d["usd_per_1m_output"] > 0
        assert d["usd_per_1m_output_lo"] <= d["usd_per_1m_output_hi"]
    assert s["engine"]["time_to_ready_s"] > 0 and not group_alive(s["engine"]["pid"])
    assert s["telemetry"]["sampler"] == "cpu" and s["telemetry"]["samples"] > 0

    req = pd.read_parquet(out / "requests.parquet")
    assert set(req["load_point"]) == {0, 1}
    assert len(req) == sum(p["summary"]["requests_all_phases"]["total"] for p in s["load_points"])
    ok = req[req["status"] == "ok"]
    assert (ok["ttft_ms"] < ok["e2e_ms"]).all() and (ok["output_tokens"] == 8).all()
    assert (ok["output_text"].str.len() > 0).all() and ok["output_tokens_client"].notna().all()
    drifted = ok[ok["output_tokens"] != ok["output_tokens_client"]]
    assert (ok["token_drift"] == (ok["output_tokens"] != ok["output_tokens_client"])).all()
    assert sum(p["summary"]["output_token_drift"]["requests"] for p in s["load_points"]) == len(drifted[drifted["phase"] == "measure"])
    # every derived column can be recomputed from the raw timestamps
    assert ((ok["t_first_token_ns"] - ok["t_sent_ns"]) / 1e6 == ok["ttft_ms"]).all()
    tel = pd.read_parquet(out / "telemetry.parquet")
    assert (tel["sampler"] == "cpu").all() and tel["t_ns"].is_monotonic_increasing
    # telemetry and requests share one clock: samples overlap the requests in time
    assert tel["t_ns"].min() < req["t_sent_ns"].min() and tel["t_ns"].max() > req["t_sent_ns"].max()

    items = pd.read_parquet(out / "workload.parquet")
    assert len(items) == 4 and set(req["prompt_idx"]) <= set(items["prompt_idx"])
    assert (items["prompt_tokens_client"] == 20).all() and s["artifacts"]["workload"] == "workload.parquet"
    raw = pd.read_parquet(out / "engine_metrics.parquet")
    assert (raw["name"] == "fake:requests_total").sum() >= 2 and s["engine_metrics"]["failed_scrapes"] == 0
    assert s["engine_metrics"]["known_series"] == []  # the fake engine's names map to no concept

    html = (out / "report.html").read_text()
    assert "SLO attainment" in html and "$ / 1M goodput tokens" in html
    assert "<table>" in html and '<figure class="plot" id="plot-timeline">' in html and "<svg " in html
    assert "http://" not in html.replace("http://127.0.0.1", "") and "https://" not in html  # opens offline
    assert {"summary_csv", "exports"} <= set(s["artifacts"]) and (out / "summary.csv").is_file()
    assert len(list((out / "exports").glob("*.json"))) == len(s["load_points"])


def _check_identity(out, s):
    """run.json and every parquet row carry run_id, variant_id (and point_id, repetition per point)."""
    from analysis.records import identity

    assert s["schema_version"] == 2 and s["run_id"] == out.name
    assert s["variant_id"] == identity.stable_hash(s["launch_fields"])
    pids = {p["index"]: p["point_id"] for p in s["load_points"]}
    assert len(set(pids.values())) == len(pids) and all(p["repetition"] == 0 for p in s["load_points"])
    for name in ("requests", "workload", "telemetry", "engine_metrics", "loadgen"):
        df = pd.read_parquet(out / f"{name}.parquet")
        assert (df["run_id"] == s["run_id"]).all() and (df["variant_id"] == s["variant_id"]).all(), name
        if name in ("requests", "loadgen"):
            assert (df["point_id"] == df["load_point"].map(pids)).all() and (df["repetition"] == 0).all(), name
        elif name != "workload":  # sampled on the run's clock: the point whose window holds the sample
            inside = df[df["point_id"].notna()]
            assert len(inside) and (inside["point_id"] == inside["load_point"].map(pids)).all(), name


def test_a_knee_re_measure_is_its_own_repetition_in_every_record(fake_engine, tiny_tokenizer_dir, tmp_path, monkeypatch):
    """The runner hands each point's p_feasible to the knee search; an uncertain end is measured
    again as a new repetition: run.json, the request rows and the per-point decision keep each
    measurement under its own (point_id, repetition) (before: all under repetition 0)."""
    from experiments import runner

    real = runner.slo_check
    p_of = {1.0: 1.0, 2.0: 0.7, 3.0: 0.2, 4.0: 0.0}  # 2 and 3 users: uncertain ends of the final bracket

    def check(res, slo):  # the knee at 2 users whatever the timing server does on a busy machine
        out = real(res, slo)
        ok = res.record.load_value <= 2
        return {**out, "feasible": ok, "reasons": [] if ok else ["ttft_ms p99 too high"],
                "p_feasible": p_of[res.record.load_value]}  # fmt: skip

    monkeypatch.setattr(runner, "slo_check", check)
    out = tmp_path / "run"
    c = cfg(tiny_tokenizer_dir, "traffic=concurrency", "traffic.points=[1,4]", "search=knee", "traffic.duration_s=1")
    assert run(c, out, ["engine.name=timing"]) == 0
    s = json.loads((out / "run.json").read_text())
    got = [(p["load_value"], p["repetition"]) for p in s["load_points"]]
    assert got == [(2.0, 0), (4.0, 0), (3.0, 0), (1.0, 0), (2.0, 1), (3.0, 1)], got  # 1: the anchor below 2
    assert len({(p["point_id"], p["repetition"]) for p in s["load_points"]}) == len(got)
    ks = s["resume"]["knee_search"]
    assert ks["status"] == "converged" and ks["knee"] == 2 and ks["remeasures"] == 2
    assert {p["load"]: p["measurements"] for p in ks["pooled"]} == {2: 2, 4: 1, 3: 2, 1: 1} and ks["anchors"] == [1]
    req = pd.read_parquet(out / "requests.parquet")
    reps = req.groupby("load_point")["repetition"].unique().map(list).to_dict()
    assert reps == {i: [r] for i, (_, r) in enumerate(got)}
    # each measurement has a per-point decision (experiments.postrun keys them by (point_id, repetition))
    assert all(p["summary"]["decision"]["attainment"] is not None for p in s["load_points"])


def test_ctrl_c_saves_records_and_stops_the_engine(fake_engine, tiny_tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    c = cfg(tiny_tokenizer_dir, "traffic.points=[10]", "traffic.duration_s=20")
    with ctrl_c_when(ok_record_in(out)):
        assert run(c, out) == 130
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "cancelled" and not group_alive(s["engine"]["pid"])
    req = pd.read_parquet(out / "requests.parquet")
    assert (req["status"] == "ok").sum() > 0
    assert s["load_points"][0]["interrupted"] is True


def test_engine_that_dies_gives_failed_status(fake_engine, tiny_tokenizer_dir, tmp_path, monkeypatch):
    from tests.engines.test_process import plan

    class Crashing(TimingServerAdapter):
        def launch_plan(self, port, facts):
            return plan("crash", tmp_path)

    monkeypatch.setitem(ADAPTERS, "timing", Crashing)
    out = tmp_path / "run"
    assert run(cfg(tiny_tokenizer_dir), out) == 1
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "failed" and "exited with code 3" in s["failure"]["reason"]
    assert "model not found (simulated)" in s["failure"]["log_tail"]
    assert (out / "report.html").exists() and "model not found" in (out / "report.html").read_text()


def test_preflight_rejection(fake_engine, tiny_tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    assert run(cfg(tiny_tokenizer_dir, "traffic.points=[]"), out) == 2
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "rejected" and "traffic.points is empty" in s["failure"]["reason"]
    assert s["engine"] is None  # nothing was launched


def test_endpoint_engine_benchmarks_a_running_server_without_leaking_the_key(
    timing_server, tiny_tokenizer_dir, tmp_path, monkeypatch
):
    key = "sk-servelab-test-7f3a9c0e51d24b6b"
    url, _ = timing_server(ttft_ms=10, itl_ms=2, api_key=key)
    monkeypatch.setenv("SERVELAB_TEST_KEY", key)
    out = tmp_path / "run"
    c = to_run_config(compose([
        "engine=endpoint", f"engine.base_url={url}", "engine.api_key_env=SERVELAB_TEST_KEY", "engine.health_path=/v1/models",
        f"model.path={tiny_tokenizer_dir}", "model.built_by=null", "model.served_name=m", "workload.prompt_tokens=20",
        "workload.output_tokens=8", "traffic.points=[10]", "traffic.duration_s=1.5", "traffic.warmup_s=0.3",
    ]))  # fmt: skip
    assert run(c, out, ["engine=endpoint"]) == 0
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "ok" and s["engine"]["plan"]["api_key_env"] == "SERVELAB_TEST_KEY"
    m = s["load_points"][0]["summary"]
    assert m["requests"]["ok"] == m["requests"]["total"] > 0  # the key reached the server: no 401s
    assert any("no engine process telemetry" in n["message"] and n["source"] == "preflight" for n in s["notes"])
    for f in out.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f"API key written to {f}"


def test_endpoint_without_the_key_variable_fails_clearly(timing_server, tiny_tokenizer_dir, tmp_path, monkeypatch):
    url, _ = timing_server(api_key="k")
    monkeypatch.delenv("SERVELAB_MISSING_KEY", raising=False)
    c = to_run_config(compose([
        "engine=endpoint", f"engine.base_url={url}", "engine.api_key_env=SERVELAB_MISSING_KEY",
        f"model.path={tiny_tokenizer_dir}", "model.built_by=null", "workload.prompt_tokens=20",
    ]))  # fmt: skip
    assert run(c, tmp_path / "run") == 2  # refused by preflight (issue 25), before anything is sent
    s = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "SERVELAB_MISSING_KEY" in s["failure"]["reason"] and "not set" in s["failure"]["reason"]


def test_trace_replay_through_the_runner(fake_engine, tiny_tokenizer_dir, tmp_path):
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": 10 + 0.2 * i, "input_tokens": 10 + i, "output_tokens": 3 + i % 4}) + "\n"
                             for i in range(12)))  # fmt: skip
    out = tmp_path / "run"
    c = cfg(tiny_tokenizer_dir, "traffic=trace", f"traffic.trace_path={trace}", "traffic.points=[1,2]",
            "traffic.duration_s=3", "traffic.warmup_s=0")  # fmt: skip
    assert run(c, out) == 0
    req = pd.read_parquet(out / "requests.parquet")
    ok = req[req["status"] == "ok"]
    assert len(req[req["load_point"] == 0]) == 12 and len(req[req["load_point"] == 1]) == 12
    assert (ok["output_tokens"] == ok["max_tokens"]).all()
    assert sorted(ok[ok["load_point"] == 0]["prompt_tokens_client"]) == list(range(10, 22))
    # 2x speed-up: the whole trace leaves in half the time
    span = {lp: (g["t_scheduled_ns"].max() - g["t_scheduled_ns"].min()) / 1e9 for lp, g in req.groupby("load_point")}
    assert span[0] == pytest.approx(2.2, abs=0.01) and span[1] == pytest.approx(1.1, abs=0.01)


def test_missing_trace_file_fails_with_the_path(fake_engine, tiny_tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    assert run(cfg(tiny_tokenizer_dir, "traffic=trace", "traffic.trace_path=/nope/trace.jsonl"), out) == 2
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "rejected" and "/nope/trace.jsonl: trace file not found" in s["failure"]["reason"]


SAMPLE = "tests/data/sharegpt_sample.json"


def test_sharegpt_workload_sends_each_reply_length_as_max_tokens(fake_engine, tiny_tokenizer_dir, tmp_path):
    from loadgen.dataset import load_sharegpt
    from loadgen.tokenizer import load_token_counter
    from loadgen.workload import build_items
    from tests.conftest import ROOT

    c = cfg(tiny_tokenizer_dir, "workload=sharegpt", f"workload.dataset_path={ROOT / SAMPLE}", "workload.num_prompts=10",
            "workload.output_max=100", "traffic.points=[8]", "traffic.duration_s=1.0")  # fmt: skip
    out = tmp_path / "run"
    assert run(c, out) == 0
    items = build_items(c.workload, load_token_counter(str(tiny_tokenizer_dir)), load_sharegpt(c.workload.dataset_path))
    req = pd.read_parquet(out / "requests.parquet")
    assert (req["status"] == "ok").all() and len(req) > 5
    want = {i.prompt_idx: (i.max_tokens, i.prompt_tokens_client) for i in items}
    assert len({m for m, _ in want.values()}) > 3  # lengths really vary per item
    for r in req.itertuples():
        assert (r.max_tokens, r.prompt_tokens_client) == want[r.prompt_idx] and r.output_tokens == r.max_tokens


def test_malformed_dataset_is_rejected_before_launch(fake_engine, tiny_tokenizer_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"conversations": [\n    {"from": "human" "value": "hi"}\n  ]}\n]\n')
    out = tmp_path / "run"
    assert run(cfg(tiny_tokenizer_dir, "workload=sharegpt", f"workload.dataset_path={bad}"), out) == 2
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "rejected" and s["engine"] is None
    assert s["failure"]["reason"].startswith(f"{bad}: line 3, column 22: invalid JSON")


def test_items_longer_than_the_context_are_rejected_before_launch(fake_engine, tiny_tokenizer_dir, tmp_path):
    from tests.conftest import ROOT

    out = tmp_path / "run"
    c = cfg(tiny_tokenizer_dir, "workload=sharegpt", f"workload.dataset_path={ROOT / SAMPLE}", "workload.num_prompts=10",
            "workload.output_min=1010", "workload.output_max=null")  # fmt: skip
    assert run(c, out) == 2
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "rejected" and s["engine"] is None
    assert "10 workload item(s) need more than the context limit of 1024 tokens" in s["failure"]["reason"]


@pytest.mark.parametrize(("overrides", "line"), [
    (["traffic.points=[]"], "traffic.points is empty"),
    (["repetitions=0"], "repetitions must be >= 1"),
    (["search=knee", "search.lo=10", "search.hi=2"], "search=knee needs a range lo < hi"),
    (["search=knee", "search.tolerance=0"], "search.tolerance must be in (0, 1)"),
])  # fmt: skip
def test_a_setting_that_leaves_nothing_to_plan_is_refused_in_one_line(tmp_path, caplog, overrides, line):
    """Before: an empty point list or zero repetitions ended 'nothing to launch' with exit 0, and a
    reversed knee range in a ValueError traceback from the planner."""
    from experiments.runner import run_variant

    cfg = to_run_config(compose(["engine=endpoint", "engine.base_url=http://127.0.0.1:9", *overrides]))
    with caplog.at_level("ERROR"):
        assert run_variant(cfg, tmp_path / "v") == 2
    assert any(line in r.getMessage() for r in caplog.records)
    v = json.loads((tmp_path / "v" / "variant.json").read_text())
    assert v["status"] == "refused" and line in v["reason"]
    assert not list((tmp_path / "v").glob("launch-*"))  # nothing planned, nothing launched
