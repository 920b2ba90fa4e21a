"""Distributed load: a Locust master plus worker processes; merged records equal the sum of the
workers' own records, with nothing lost and nothing counted twice."""

from __future__ import annotations

import pytest

from experiments.schema import TrafficConfig, WorkloadConfig
from loadgen.driver import build_spec, read_jsonl, run_load_point
from loadgen.workload import WorkloadItem

ITEMS = [WorkloadItem(i, f"p{i}", 3, 10) for i in range(8)]


def spec_for(url, tmp_path, kind, value, workers):
    tr = TrafficConfig(kind=kind, request_timeout_s=20, drain_timeout_s=20, max_inflight=64, warmup_s=0.5, duration_s=2.0,
                       workers=workers)  # fmt: skip
    return build_spec(load_point=0, load_value=value, traffic=tr, workload=WorkloadConfig(),
                      items=ITEMS, base_url=url, model="m", extras_for=lambda n: {}, workdir=tmp_path)  # fmt: skip


@pytest.mark.parametrize("kind,value", [("poisson", 20.0), ("concurrency", 6)])
def test_master_merges_exactly_the_workers_records(timing_server, tmp_path, kind, value):
    url, server_log = timing_server(ttft_ms=20, itl_ms=5)
    spec = spec_for(url, tmp_path, kind, value, workers=2)
    out = run_load_point(spec, tmp_path)
    assert out.problems == [] and out.meta["merge_ok"] is True
    per_worker = [read_jsonl(p) for p in sorted(tmp_path.glob("requests.0.jsonl.worker*"))]
    assert len(per_worker) == 2 and all(per_worker)  # both workers sent requests
    merged_ids = sorted(r["request_id"] for r in out.records)
    worker_ids = sorted(r["request_id"] for recs in per_worker for r in recs)
    assert merged_ids == worker_ids and len(set(merged_ids)) == len(merged_ids)
    assert {r["status"] for r in out.records} == {"ok"}
    assert len(read_jsonl(server_log)) == len(out.records)  # the server saw exactly these requests
    assert len({r["worker"] for r in out.records}) == 2
    if kind == "poisson":
        assert len(out.records) == len(spec.schedule)  # every scheduled arrival, once
        sent_at = sorted(r["t_scheduled_ns"] for r in out.records)
        offsets = sorted(a.offset_s for a in spec.schedule)
        t0 = sent_at[0] - int(offsets[0] * 1e9)
        assert all(abs((s - t0) / 1e9 - o) < 0.005 for s, o in zip(sent_at, offsets, strict=True))  # one shared clock
    assert out.lag and {s["worker"] for s in out.lag} == {0, 1}
