"""A load measured twice in one launch is two measurements everywhere (docs/identity.md).

The reported case: the knee search measured 16.14 req/s four times in one launch, every time as
repetition 0, so the per-point decision table showed one TTFT p99 on all four rows while run.json
held four. Here the launch's identities come from the schedule (experiments.sweeps.schedule), the
records are hand-built (tests/analysis/test_decide.py's request records), and the per-point table,
the decision and the experiment report must each show the two measurements apart.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import decision, report, results
from analysis.metrics import derive, summarize_point
from analysis.records.layout import LAUNCH_PREFIX
from experiments.artifacts import nullable_dtype as _nullable
from loadgen.records import to_table
from tests.analysis.test_decide import N, point_records
from tests.conftest import compose

# (load, TTFT ms of every request): the second measurement of 16.14 is slower than the first
MEASURED = [(8.0, 100.0), (16.14, 150.0), (16.14, 420.0)]


def launch(tmp_path):
    """results/exp/<variant>/launch-1/ of one launch that measured 16.14 req/s twice."""
    from experiments.config import to_run_config
    from experiments.sweeps.schedule import Schedule

    cfg = to_run_config(compose(["traffic=constant", f"traffic.points=[{','.join(str(v) for v, _ in MEASURED)}]"]))
    sched = Schedule(cfg)
    ident = []
    while (nxt := sched.next()) is not None:
        ident.append((*nxt, sched.point_id(nxt[0])))
        sched.observe(*nxt, feasible=True)
    assert [(v, r) for v, r, _ in ident] == [(8.0, 0), (16.14, 0), (16.14, 1)]  # the same load: repetition 1
    run_dir = tmp_path / "exp" / "timing_none_abcdefabcdef" / f"{LAUNCH_PREFIX}1"
    run_dir.mkdir(parents=True)
    recs, lps = [], []
    for i, ((value, rep, pid), (_, ttft)) in enumerate(zip(ident, MEASURED, strict=True)):
        pr = point_records(i, value, [ttft])
        recs += pr
        df = to_table(pr).to_pandas(types_mapper=_nullable)
        s = summarize_point(df, kind="constant", value=value, warmup_s=5 / value, duration_s=N / value)
        lps.append({"index": i, "point_id": pid, "repetition": rep, "load_value": value, "load_unit": "req/s",
                    "interrupted": False, "aborted": None, "summary": s})  # fmt: skip
    table = derive(to_table(recs).to_pandas(types_mapper=_nullable))
    table["run_id"], table["variant_id"] = "v-1", "abcdefabcdef"  # the identity columns of v2 records
    table["point_id"] = table["load_point"].map({i: pid for i, (_, _, pid) in enumerate(ident)})
    table["repetition"] = table["load_point"].map({i: rep for i, (_, rep, _) in enumerate(ident)}).astype("int64")
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), run_dir / "requests.parquet")
    config = {
        "engine": {"name": "timing", "port": 0}, "quant": {"name": "none", "method": "none"},
        "model": {"name": "tiny_llama", "path": "models/tiny-llama"}, "gpu": {"name": "cpu", "count": 0},
        "traffic": {"kind": "constant", "points": [v for v, _ in MEASURED], "warmup_s": 1.0, "duration_s": 30.0},
        "workload": {"name": "synthetic_fixed"},
    }  # fmt: skip
    run = {"schema_version": 2, "run_id": "v-1", "variant_id": "abcdefabcdef", "experiment": "exp", "status": "ok",
           "started_at_utc": "2026-12-07T09:00:00+00:00", "config": config, "launch_fields": {},
           "engine": {"name": "timing", "time_to_ready_s": 1.0}, "load_points": lps,
           "telemetry": {"sampler": None}, "engine_metrics": None}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(run))
    return tmp_path / "exp", {r: lp for r, lp in enumerate(lps)}


def test_a_load_measured_twice_in_one_launch_stays_two_measurements(tmp_path):
    from analysis.schema import PricingConfig, SloConfig

    exp, lps = launch(tmp_path)
    slo = SloConfig(ttft_ms=300, tpot_ms=50)
    t = results.build_table(exp, slo=slo, pricing=PricingConfig(usd_per_hour=1.0), n_boot=50).points
    twice = t[t["load_value"] == 16.14].sort_values("repetition")
    # the per-point table: two rows, repetitions 0 and 1, each with its own TTFT p99 and verdict
    assert twice["repetition"].tolist() == [0, 1] and twice["point_id"].nunique() == 1
    assert twice["ttft_ms_p99"].tolist() == pytest.approx([150.0, 420.0], abs=1.0)
    assert twice["feasible"].tolist() == [True, False]
    # the decision: both measurements listed apart; pooled as repetitions of one point for the knee
    d, _ = decision.run_decision(exp, decision.default_config(slo=slo, pricing=PricingConfig(usd_per_hour=1.0)))
    pts = sorted((p for p in d["points"] if p["load_value"] == 16.14), key=lambda p: p["repetition"])
    assert [p["repetition"] for p in pts] == [0, 1]
    assert [p["ttft_ms_p99"] for p in pts] == pytest.approx([150.0, 420.0], abs=1.0)
    # the report's table: one row per measurement, each with the TTFT p99 its run.json point recorded
    _, rows, exports = report.experiment_view(exp, d)
    rows = sorted((r for r in rows if r["load_value"] == 16.14), key=lambda r: r["repetition"])
    assert [r["repetition"] for r in rows] == [0, 1] and [r["index"] for r in rows] == [1, 2]
    assert [r["ttft_p99"] for r in rows] == pytest.approx([lps[1]["summary"]["ttft_ms"]["p99"],
                                                           lps[2]["summary"]["ttft_ms"]["p99"]])  # fmt: skip
    assert rows[0]["ttft_p99"] != rows[1]["ttft_p99"]
    # and each its own interval (point_details are keyed run_id/point_id/repetition)
    assert all(r["ttft_p99_lo"] is not None and r["ttft_p99_lo"] <= r["ttft_p99"] <= r["ttft_p99_hi"] for r in rows)
    assert rows[0]["ttft_p99_hi"] < rows[1]["ttft_p99_lo"]
    # its exports (one vLLM-format JSON per measurement) and summary.csv: two of each as well
    assert [exports[f"v-1_point{i}"]["p99_ttft_ms"] for i in (1, 2)] == pytest.approx([150.0, 420.0], abs=1.0)
    report.write_experiment_report(exp)
    csv = pd.read_csv(exp / "summary.csv")
    assert sorted(csv.loc[csv["load_value"] == 16.14, "repetition"].tolist()) == [0, 1]
