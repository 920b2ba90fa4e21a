"""Distributed load: a Locust master plus worker processes; merged records equal the sum of the
workers' own records, with nothing lost and nothing counted twice."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from loadgen.driver import build_spec, run_load_point
from loadgen.jsonl import read_jsonl
from loadgen.schema import TrafficConfig, WorkloadConfig
from loadgen.workload import WorkloadItem
from tests.conftest import free_port

pytestmark = pytest.mark.serial  # measures timing: alone, in scripts/test.sh's second pass (see pyproject markers)

ROOT = Path(__file__).resolve().parents[2]
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
    per_worker = [read_jsonl(p) for p in sorted(tmp_path.glob("requests.0.worker*.jsonl"))]
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


def test_a_worker_with_another_clock_is_put_on_the_masters_clock(timing_server, tmp_path, monkeypatch):
    """One local worker (the master's clock) and one 'remote' worker whose clock reads 7 s ahead
    (test-only offset, as on another machine): the master measures the offset within its
    uncertainty and every merged timestamp lands on its own clock (the timing server's, too)."""
    x = 7_000_000_000
    url, server_log = timing_server(ttft_ms=20, itl_ms=5)
    port = free_port()
    tr = TrafficConfig(kind="poisson", request_timeout_s=20, drain_timeout_s=20, max_inflight=64, warmup_s=0.5,
                       duration_s=2.0, workers=1, remote_workers=1, master_port=port,
                       worker_token_env="SERVELAB_TEST_WORKER_TOKEN")  # fmt: skip
    monkeypatch.setenv("SERVELAB_TEST_WORKER_TOKEN", "a-shared-token-of-enough-length")
    spec = build_spec(load_point=0, load_value=20.0, traffic=tr, workload=WorkloadConfig(), items=ITEMS, base_url=url,
                      model="m", extras_for=lambda n: {}, workdir=tmp_path)  # fmt: skip
    box: dict = {}
    th = threading.Thread(target=lambda: box.update(out=run_load_point(spec, tmp_path)))
    th.start()
    with open(tmp_path / "remote.log", "wb") as log:
        remote = subprocess.Popen(
            [sys.executable, "-m", "loadgen.locust_runner", "--role", "worker", "--master-host", "127.0.0.1",
             "--master-port", str(port), "--test-only-clock-offset-ns", str(x),
             "--token-env", "SERVELAB_TEST_WORKER_TOKEN", "--target-url", url, "--out-dir", str(tmp_path / "remote")],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            th.join(timeout=120)
            assert remote.wait(timeout=30) == 0
        finally:
            if remote.poll() is None:
                remote.kill()
    out = box["out"]
    assert out.problems == [] and out.meta["merge_ok"] is True
    offsets = out.meta["clock_offsets"]
    (far_idx, far), = [(k, o) for k, o in offsets.items() if not o["same_clock"]]
    (near_idx, near), = [(k, o) for k, o in offsets.items() if o["same_clock"]]
    # master - worker = -x, within the RTT/2 bound of every round
    unc = far["uncertainty_ns"]
    assert far["applied"] and abs(far["offset_ns"] + x) <= far["best_uncertainty_ns"] and far["samples"] >= 16
    assert len(far["rounds"]) >= 2 and len(near["rounds"]) >= 2  # at connect and at the end (more in a long point)
    assert all(abs(r["offset_ns"] + x) <= r["uncertainty_ns"] for r in far["rounds"])
    assert near["offset_ns"] == 0 and not near["applied"] and abs(near["measured_offset_ns"]) <= near["uncertainty_ns"]

    t0, t_end = out.meta["t0_ns"], out.meta["t_end_ns"]
    by_id = {r["request_id"]: r for r in out.records}
    assert len(by_id) == len(spec.schedule) and {r["status"] for r in out.records} == {"ok"}
    far_pid = far["pid"]
    assert {r["worker"] for r in out.records} == {far_pid, near["pid"]}
    for i, a in enumerate(spec.schedule):
        r = by_id[f"0-{i}"]
        bound = 2 * unc + 1000 if r["worker"] == far_pid else 1000  # two estimates (start, shift) vs one clock
        assert abs(r["t_scheduled_ns"] - (t0 + a.offset_s * 1e9)) <= bound
        assert t0 - bound <= r["t_sent_ns"] <= r["t_done_ns"] <= t_end + bound  # inside the master's window
    # chunk times against the server's own send times (the server reads the master's clock)
    server = {s["id"]: s for s in read_jsonl(server_log)}
    for r in out.records:
        lag = [c - s for c, s in zip(r["chunk_ns"], server[r["response_id"]]["send_ns"], strict=True)]
        slack = unc if r["worker"] == far_pid else 0
        assert min(lag) >= -slack and sorted(lag)[len(lag) // 2] < 50e6
    far_lag = [s for s in out.lag if str(s["worker"]) == far_idx]
    assert far_lag and all(t0 - 2e9 <= s["t_ns"] <= t_end + unc for s in far_lag)
    assert {str(s["worker"]) for s in out.lag} == {far_idx, near_idx}
