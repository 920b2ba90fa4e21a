"""experiments.store over a hand-built results folder: the views, their joins, the per-point
request files rule, compare, and the CLI's one-line errors.

Run folders are written in the real format: run.json v2 through analysis.records.run.RunRecord /
PointRecord, requests.parquet through the same functions the lab uses (loadgen.records.to_table,
analysis.metrics.derive, artifacts.point_identity_columns), point summaries by
analysis.metrics.summarize_point. Every request of a point has the same TTFT, so its p50 is exact.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis.metrics import derive, summarize_point
from analysis.records import identity
from analysis.records.run import ConfigView as _Obj
from analysis.records.run import EngineRecord, PointRecord, RunRecord, read_run_json
from experiments import artifacts, store
from experiments.artifacts import write_parquet
from tests.analysis.decision_records import MS, frame, rec

N = 20  # requests per point
TRAFFIC = {"kind": "poisson", "points": [1.0, 2.0], "warmup_s": 0.0, "duration_s": 20.0}
WORKLOAD = {"name": "synthetic_fixed", "prompt_tokens": 16, "output_tokens": 4}


def launch(quant):
    return {"engine": {"name": "vllm"}, "model": {"name": "tiny_llama"}, "quant": {"name": quant},
            "gpu": {"name": "cpu", "count": 0}, "placement": None}  # fmt: skip


def vid(quant):
    return identity.stable_hash(launch(quant))


def write_run(root, rel, quant, rep, points, *, status="ok", requests="whole", traffic=TRAFFIC, experiment=None):
    """A v2 run folder. points: [(load_value, ttft_ms, (usd, lo, hi))]. requests: whole = requests.parquet,
    points = only points/<i>.requests.parquet (a killed run), both, or None."""
    d = root / rel
    d.mkdir(parents=True)
    r = RunRecord(run_id=d.name, variant_id=vid(quant), experiment=experiment or rel.split("/")[0],
                  config={**launch(quant), "traffic": traffic, "workload": WORKLOAD, "repetition": rep},
                  launch_fields=launch(quant), status=status, started_at_utc=f"2026-12-01T10:0{rep}:00+00:00",
                  engine=EngineRecord(name="vllm", version="0.0-test", time_to_ready_s=1.5))  # fmt: skip
    if status == "failed":
        r.fail("failed", "engine died before ready", phase="engine_start")
    recs = []
    for i, (rate, ttft, (usd, lo, hi)) in enumerate(points):
        t0 = i * 10**12
        pr = []
        for k in range(N):
            x = rec(k, sent=t0 // MS + int(k * 1000 / rate), chunks=(ttft, ttft + 10, ttft + 20, ttft + 30))
            x.update(load_point=i, request_id=f"{i}-{k}")
            pr.append(x)
        recs += pr
        s = summarize_point(frame(pr), kind="poisson", value=rate, warmup_s=0.0, duration_s=N / rate)
        s["decision"] = {"slo": "interactive", "pricing": "cpu_vm", "verdict": "valid", "feasible": True,
                         "attainment": 1.0, "goodput_rps": rate, "usd_per_1m_output": usd, "usd_per_1m_output_lo": lo,
                         "usd_per_1m_output_hi": hi, "usd_per_1m_goodput": usd, "usd_per_1m_goodput_lo": lo,
                         "usd_per_1m_goodput_hi": hi, "verdict_reasons": [{"kind": "warmup_excluded"}]}  # fmt: skip
        pid = identity.point_id(_Obj(traffic), _Obj(WORKLOAD), rate)
        r.put_point(PointRecord(index=i, point_id=pid, repetition=rep, load_value=rate, load_unit="req/s", t0_ns=t0,
                                t_end_ns=t0 + 30 * 10**9, summary=s))  # fmt: skip
    if requests:
        df = artifacts.point_identity_columns(derive(frame(recs)), r)
        if requests in ("whole", "both"):
            write_parquet(df, d / "requests.parquet")
        if requests in ("points", "both"):
            (d / "points").mkdir()
            for i, g in df.groupby("load_point"):
                write_parquet(g, d / "points" / f"{i:03d}.requests.parquet")
    r.save(d)
    return d


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("store") / "results")


def make_results(root):
    # vllm/none, 2 repetitions; vllm/awq: 2 ok repetitions (b1 also still has its per-point files),
    # one killed run with per-point files only (status running), one failed run; vllm/gptq with another
    # traffic (point_ids differ, load values the same)
    write_run(root, "base/a0", "none", 0, [(1.0, 100, (1.0, 0.9, 1.1)), (2.0, 200, (0.5, 0.45, 0.55))])
    write_run(root, "base/a1", "none", 1, [(1.0, 120, (1.2, 1.1, 1.3)), (2.0, 220, (0.6, 0.5, 0.7))])
    write_run(root, "tuned/b0", "awq", 0, [(1.0, 150, (2.0, 1.8, 2.2)), (2.0, 210, (0.52, 0.5, 0.6))])
    write_run(root, "tuned/b1", "awq", 1, [(1.0, 170, (2.2, 2.0, 2.4)), (2.0, 230, (0.58, 0.5, 0.6))], requests="both")
    write_run(root, "tuned/k9", "awq", 2, [(1.0, 160, (2.1, 2.0, 2.2)), (2.0, 240, (0.6, 0.5, 0.7))],
              status="running", requests="points")  # fmt: skip
    write_run(root, "tuned/f0", "awq", 3, [], status="failed", requests=None)
    write_run(root, "other/c0", "gptq", 0, [(1.0, 90, (0.8, 0.7, 0.9)), (2.0, 180, (0.4, 0.3, 0.5))],
              traffic={**TRAFFIC, "duration_s": 40.0})  # fmt: skip
    tel = pd.DataFrame({"t_ns": [5 * 10**9, 35 * 10**9, 10**12 + 10**9], "sampler": "cpu", "engine_cpu_pct": 50.0})
    a0 = read_run_json(root / "base/a0")
    rec_a0 = RunRecord(**{k: a0[k] for k in ("run_id", "variant_id", "experiment", "config", "launch_fields")},
                       load_points=[PointRecord(**{k: v for k, v in p.items()}) for p in a0["load_points"]])  # fmt: skip
    write_parquet(artifacts._timed_identity(tel, rec_a0), root / "base/a0/telemetry.parquet")
    return root


def q(root, sql):
    return store.query(root, sql)


def test_runs_view_one_row_per_run_json(root):
    runs = q(root, "SELECT run_id, variant_id, variant_label, experiment, status, failure_phase, failure_reason, "
                   "engine_name, engine_version, quant_name, gpu_count, rel_path, n_points FROM runs ORDER BY run_id")
    assert list(runs["run_id"]) == ["a0", "a1", "b0", "b1", "c0", "f0", "k9"]
    r = runs.set_index("run_id")
    assert r.loc["a0", "variant_id"] == vid("none") and r.loc["b0", "variant_id"] == vid("awq")
    assert dict(r["variant_label"]) == {"a0": "vllm/none", "a1": "vllm/none", "b0": "vllm/awq", "b1": "vllm/awq",
                                        "c0": "vllm/gptq", "f0": "vllm/awq", "k9": "vllm/awq"}  # fmt: skip
    assert (r.loc["f0", "status"], r.loc["f0", "failure_phase"], r.loc["f0", "failure_reason"]) == (
        "failed", "engine_start", "engine died before ready")
    assert r.loc["k9", "status"] == "running" and r.loc["f0", "n_points"] == 0
    assert (r.loc["a0", "engine_name"], r.loc["a0", "engine_version"], r.loc["a0", "quant_name"]) == ("vllm", "0.0-test", "none")
    assert r.loc["b1", "rel_path"] == "tuned/b1" and r.loc["a0", "experiment"] == "base"
    t = q(root, "SELECT started_at_utc FROM runs WHERE run_id = 'a1'")["started_at_utc"].iloc[0]
    assert t == pd.Timestamp("2026-12-01T10:01:00Z")


def test_points_view_flattens_summary_and_decision(root):
    p = q(root, "SELECT * FROM points WHERE run_id = 'a0' ORDER BY load_point")
    assert list(p["load_value"]) == [1.0, 2.0] and list(p["repetition"]) == [0, 0]
    first = p.iloc[0]
    assert first["point_id"] == identity.point_id(_Obj(TRAFFIC), _Obj(WORKLOAD), 1.0)
    assert (first["ttft_ms_p50"], first["ttft_ms_p99"], first["requests_total"], first["requests_ok"]) == (100.0, 100.0, N, N)
    assert first["e2e_ms_p50"] == 131.0 and first["tpot_ms_p50"] == 10.0  # last chunk at ttft + 30, done 1 ms later
    assert (first["verdict"], bool(first["feasible"]), first["usd_per_1m_output"], first["usd_per_1m_output_lo"],
            first["usd_per_1m_goodput_hi"]) == ("valid", True, 1.0, 0.9, 1.1)  # fmt: skip
    assert bool(first["complete"]) and not bool(first["interrupted"]) and first["aborted"] is None
    assert list(first["verdict_reason_kinds"]) == ["warmup_excluded"]
    # points join runs on the identity fields
    j = q(root, "SELECT r.variant_label, count(*) n FROM points p JOIN runs r USING (run_id, variant_id) "
                "GROUP BY 1 ORDER BY 1")  # fmt: skip
    assert dict(zip(j["variant_label"], j["n"], strict=True)) == {"vllm/awq": 6, "vllm/gptq": 2, "vllm/none": 4}


def test_requests_view_reads_point_files_only_without_requests_parquet(root):
    n = q(root, "SELECT run_id, count(*) n FROM requests GROUP BY 1 ORDER BY 1")
    # b1 has requests.parquet and its per-point files: counted once; k9 (killed) has only per-point files
    assert dict(zip(n["run_id"], n["n"], strict=True)) == {"a0": 2 * N, "a1": 2 * N, "b0": 2 * N, "b1": 2 * N,
                                                           "c0": 2 * N, "k9": 2 * N}  # fmt: skip
    v = q(root, "SELECT r.variant_label, count(*) n FROM requests q JOIN runs r USING (run_id, variant_id) GROUP BY 1")
    assert dict(zip(v["variant_label"], v["n"], strict=True)) == {"vllm/none": 4 * N, "vllm/awq": 6 * N, "vllm/gptq": 2 * N}
    f = q(root, "SELECT run_id, kind, used, why_not FROM files WHERE kind = 'requests_point' ORDER BY run_id, path")
    assert list(f["run_id"]) == ["b1", "b1", "k9", "k9"] and list(f["used"]) == [False, False, True, True]
    assert f["why_not"].iloc[0] == "superseded by the run's requests.parquet"
    # request rows join their point on (run_id, variant_id, point_id, repetition)
    j = q(root, "SELECT q.run_id, p.load_value, count(*) n, avg(q.ttft_ms) ttft, any_value(p.ttft_ms_p50) p50 "
                "FROM requests q JOIN points p USING (run_id, variant_id, point_id, repetition) GROUP BY ALL")  # fmt: skip
    assert len(j) == 12 and (j["n"] == N).all() and (j["ttft"] == j["p50"]).all()
    k9 = j[(j["run_id"] == "k9") & (j["load_value"] == 2.0)]
    assert k9["ttft"].iloc[0] == 240.0


def test_telemetry_rows_carry_the_point_whose_window_holds_them(root):
    t = q(root, "SELECT t_ns, point_id, repetition, run_id FROM telemetry ORDER BY t_ns")
    p0, p1 = (identity.point_id(_Obj(TRAFFIC), _Obj(WORKLOAD), v) for v in (1.0, 2.0))
    assert list(t["run_id"]) == ["a0"] * 3
    assert [t["point_id"][0], t["point_id"][2]] == [p0, p1] and pd.isna(t["point_id"][1])  # 35 s: between points


def test_views_exist_when_no_file_of_a_kind_does(root, tmp_path):
    con = store.open_store(root)
    for name in ("engine_metrics", "loadgen", "workload"):
        df = con.execute(f"SELECT * FROM {name}").df()
        assert len(df) == 0 and list(df.columns)[:2] == ["run_id", "variant_id"], name
    assert list(con.execute("SELECT * FROM engine_metrics").df().columns)[:4] == list(store.IDENTITY)
    # an empty folder: every view exists and is empty
    con = store.open_store(tmp_path)
    for name in ("runs", "points", "files", *store.PARQUET_VIEWS):
        assert con.execute(f"SELECT count(*) FROM {name}").fetchone() == (0,), name
    assert con.execute("SELECT count(*) FROM requests JOIN points USING (run_id, variant_id, point_id, repetition)"
                       ).fetchone() == (0,)  # fmt: skip


def _rows(df, metric):
    return df[df["metric"] == metric].set_index("load_value")


def test_compare_two_runs_interval_overlap(root):
    df = store.compare(root, "a0", "b0")
    assert df.attrs == {"a": "run a0: 1 usable run(s) of 1", "b": "run b0: 1 usable run(s) of 1"}
    assert set(df["matched_by"]) == {"point_id"} and set(df["metric"]) == set(store.COMPARE_METRICS)
    usd = _rows(df, "usd_per_1m_output")
    # 1 req/s: [0.9, 1.1] vs [1.8, 2.2] apart; 2 req/s: [0.45, 0.55] vs [0.5, 0.6] overlap
    assert (usd.loc[1.0, "a"], usd.loc[1.0, "b"], usd.loc[1.0, "delta"], usd.loc[1.0, "delta_pct"]) == (1.0, 2.0, 1.0, 100.0)
    assert (usd.loc[1.0, "overlap"], usd.loc[1.0, "overlap_basis"], usd.loc[1.0, "a_lo"], usd.loc[1.0, "b_hi"]) == (
        "no", "interval", 0.9, 2.2)
    assert usd.loc[2.0, "overlap"] == "yes"
    ttft = _rows(df, "ttft_ms_p50")
    assert (ttft.loc[1.0, "a"], ttft.loc[1.0, "b"], ttft.loc[1.0, "delta"], ttft.loc[1.0, "delta_pct"]) == (100.0, 150.0, 50.0, 50.0)
    assert ttft.loc[1.0, "overlap"] == "n/a" and pd.isna(ttft.loc[1.0, "a_lo"])
    # which side is better, by the metric catalog's direction: B costs more and answers later
    assert usd.loc[1.0, "better"] == "a" and ttft.loc[1.0, "better"] == "a"
    tput = _rows(df, "output_tok_per_s")
    d = tput.loc[1.0, "delta"]
    assert tput.loc[1.0, "better"] == ("b" if d > 0 else "a" if d < 0 else "same")


@pytest.mark.parametrize(("a", "b"), [("vllm/none", None), ("base", "tuned"), (None, "tuned")])
def test_compare_variants_and_experiments_aggregate_repetitions(root, a, b):
    a = a or vid("none")[:6]
    b = b or f"variant:{vid('awq')}"
    df = store.compare(root, a, b)
    assert df.attrs["b"].endswith("3 usable run(s) of 4 (1 failed or rejected, left out: f0)")  # k9 was killed: its finished points count
    assert (df["variant_a"] == "vllm/none").all() and (df["variant_b"] == "vllm/awq").all()
    ttft = _rows(df, "ttft_ms_p50")
    # none: 100 and 120 at 1 req/s; awq: 150, 170 and the killed k9's finished 160 -> ranges apart.
    # At 2: 200..220 vs 210..240
    assert list(ttft.loc[1.0, ["a", "a_lo", "a_hi", "n_a", "b", "b_lo", "b_hi", "n_b"]]) == [110, 100, 120, 2, 160, 150, 170, 3]
    assert (ttft.loc[1.0, "overlap"], ttft.loc[1.0, "overlap_basis"], ttft.loc[2.0, "overlap"]) == ("no", "range", "yes")
    usd = _rows(df, "usd_per_1m_goodput")
    assert usd.loc[2.0, "a"] == pytest.approx(0.55) and usd.loc[2.0, "b"] == pytest.approx((0.52 + 0.58 + 0.6) / 3)
    assert usd.loc[2.0, "delta"] == pytest.approx((0.52 + 0.58 + 0.6) / 3 - 0.55) and usd.loc[2.0, "overlap_basis"] == "range"


def test_compare_matches_points_by_load_value_when_point_ids_differ(root):
    df = store.compare(root, "vllm/gptq", str(root / "base" / "a0"))  # a run folder given as a path
    assert df.attrs["b"] == "experiment " + str(root / "base" / "a0") + ": 1 usable run(s) of 1"
    assert set(df["matched_by"]) == {"load_value"} and sorted(set(df["load_value"])) == [1.0, 2.0]
    assert _rows(df, "ttft_ms_p50").loc[2.0, "delta"] == 20.0  # 200 - 180


def test_cli_query_formats(root, capsys):
    sql = "SELECT variant_label, count(*) AS n FROM runs GROUP BY 1 ORDER BY 1"
    assert store.main(["--root", str(root), "query", sql]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["variant_label", "n"] and out[1].split() == ["vllm/awq", "4"]
    assert store.main(["query", sql, "--root", str(root), "--format", "csv"]) == 0
    assert capsys.readouterr().out == "variant_label,n\nvllm/awq,4\nvllm/gptq,1\nvllm/none,2\n"
    assert store.main(["--format", "json", "--root", str(root), "query", sql]) == 0
    assert json.loads(capsys.readouterr().out)[2] == {"variant_label": "vllm/none", "n": 2}


def test_cli_compare_says_what_each_side_is(root, capsys):
    assert store.main(["--root", str(root), "compare", "base", vid("awq")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"A = experiment base: 2 usable run(s) of 2\nB = variant {vid('awq')} (vllm/awq): 3 usable run(s) of 4")
    assert "A vllm/none  vs  B vllm/awq" in out and "ttft_ms_p50" in out and "+45.5%" in out  # 160 vs 110
    assert store.main(["--root", str(root), "--format", "csv", "compare", "a0", "b0"]) == 0
    cap = capsys.readouterr()
    assert cap.err.startswith("A = run a0") and cap.out.startswith("variant_a,variant_b,load_value")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["query", "SELEC 1"], 'Parser Error: syntax error at or near "SELEC"'),
        (["query", "SELECT nope FROM runs"], 'Binder Error: Referenced column "nope" not found'),
        (["query", "SELECT * FROM nosuch"], "Table with name nosuch does not exist"),
        (["compare", "a0", "nobody"], "no run_id, variant_id (>= 6 hex digits), variant label or experiment named 'nobody'"),
        (["compare", vid("none")[:5], "a0"], f"named '{vid('none')[:5]}'"),  # a prefix needs 6 digits
        (["compare", "a0", "f0"], "'f0' is run f0 but none of its 1 run(s) is usable (ok, cancelled or killed with finished points)"),
        (["compare", "a0"], "the following arguments are required: b"),
        (["--format", "xml", "query", "SELECT 1"], "invalid choice: 'xml'"),
        (["query", ""], "no SQL statement in ''; give one, e.g. query"),  # was a traceback
        (["query", "-- only a comment"], "no SQL statement in '-- only a comment'"),
    ],
)
def test_bad_input_one_line_exit_2(root, capsys, argv, needle):
    assert store.main(["--root", str(root), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("store: ") and needle in err[0], err


def test_no_such_folder_and_ambiguous_names(root, tmp_path, capsys):
    assert store.main(["--root", str(tmp_path / "nope"), "query", "SELECT 1"]) == 2
    assert capsys.readouterr().err.strip() == f"store: no such folder {tmp_path / 'nope'}: pass --root <results folder>"
    r = tmp_path / "results"
    write_run(r, "tuned/b0", "awq", 0, [(1.0, 150, (2.0, 1.8, 2.2))])
    write_run(r, "tuned/b1", "awq", 1, [(1.0, 170, (2.2, 2.0, 2.4))])
    write_run(r, "other/tuned", "none", 0, [(1.0, 100, (1.0, 0.9, 1.1))])  # a run named like an experiment
    assert store.main(["--root", str(r), "compare", "b0", "tuned"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["store: 'tuned' is ambiguous: run tuned (1 run(s)) and experiment tuned (2 run(s)); write run:tuned or "
                   "experiment:tuned"]  # fmt: skip
    assert store.compare(r, "b0", "run:tuned").attrs["b"] == "run tuned: 1 usable run(s) of 1"
    assert store.compare(r, "b0", "experiment:tuned").attrs["b"] == "experiment tuned: 2 usable run(s) of 2"


def test_v1_run_folder_gets_identity_from_its_run_json(tmp_path):
    from tests.analysis.test_decide import write_run as write_v1

    write_v1(tmp_path / "exp", "old_vllm_awq", "awq", [(1.0, [100]), (2.0, [300])])
    con = store.open_store(tmp_path)
    p = con.execute("SELECT run_id, variant_id, point_id, repetition, load_point FROM points ORDER BY load_point").df()
    assert list(p["repetition"]) == [0, 0] and p["variant_id"].str.len().eq(12).all()
    n = con.execute("SELECT q.load_point, count(*) n, any_value(q.variant_id) v FROM requests q "
                    "JOIN points p USING (run_id, variant_id, point_id, repetition) GROUP BY 1 ORDER BY 1").df()  # fmt: skip
    assert list(n["n"]) == [125, 125] and (n["v"] == p["variant_id"].iloc[0]).all()  # 5 warmup + 120 measured each


def test_parquet_stays_in_files_and_unreadable_files_are_skipped_with_a_reason(tmp_path):
    r = tmp_path / "results"
    cut = write_run(r, "exp/cut", "none", 0, [(1.0, 100, (1.0, 0.9, 1.1)), (2.0, 200, (0.5, 0.4, 0.6))], requests="both")
    (cut / "requests.parquet").write_bytes((cut / "requests.parquet").read_bytes()[:100])  # killed while writing
    (r / "exp" / "broken").mkdir()
    (r / "exp" / "broken" / "run.json").write_text("{not json")
    con = store.open_store(r)
    # the data views read the files where they are: the only tables are the run.json metadata
    tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {"_runs", "_points", "_files"}
    assert "read_parquet" in con.execute("SELECT sql FROM duckdb_views() WHERE view_name = '_requests_files'").fetchone()[0]
    # the cut requests.parquet is left out, so the per-point files count
    assert con.execute("SELECT count(*) FROM requests").fetchone() == (2 * N,)
    f = con.execute("SELECT kind, used, why_not FROM files WHERE kind = 'requests'").fetchone()
    assert f[:2] == ("requests", False) and f[2].startswith("unreadable: ")
    b = con.execute("SELECT status, failure_reason FROM runs WHERE run_id = 'broken'").fetchone()
    assert b[0] == "unreadable" and b[1].startswith("unreadable run.json: ") and "\n" not in b[1]
