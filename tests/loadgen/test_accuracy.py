"""Measurement accuracy against the timing server's own send times (same CLOCK_MONOTONIC).

The server logs when it wrote each chunk; the client's timestamps must match it closely. The
median TTFT bias with 8 concurrent streams, server and generator unpinned, depends on the host:
0.3-0.6 ms on the Intel host this bound was first set on, 1.15-1.45 ms on a 2-vCPU AMD EPYC
(AVX2) VM, with the code before and after the run-core reshaping alike (measured 2026-12-01).
The bound is 2 ms so the test guards against regressions of the client, not the VM's wake-up
latency; benchmarks/loadgen_accuracy.py (pinned) prints the figures.
"""

from __future__ import annotations

from statistics import median

import numpy as np
import pytest

from loadgen.driver import build_spec, run_load_point
from loadgen.jsonl import read_jsonl
from loadgen.schema import TrafficConfig, WorkloadConfig
from loadgen.workload import WorkloadItem

pytestmark = pytest.mark.serial  # measures timing: alone, in scripts/test.sh's second pass (see pyproject markers)


def test_ttft_and_itl_match_the_server_with_8_streams(timing_server, tmp_path):
    url, server_log = timing_server(ttft_ms=50, itl_ms=10)
    tr = TrafficConfig(kind="concurrency", request_timeout_s=20, drain_timeout_s=20, max_inflight=64, warmup_s=0.5,
                       duration_s=3.0)  # fmt: skip
    items = [WorkloadItem(i, f"p{i}", 3, 20) for i in range(8)]
    spec = build_spec(load_point=0, load_value=8, traffic=tr, workload=WorkloadConfig(),
                      items=items, base_url=url, model="m", extras_for=lambda n: {}, workdir=tmp_path)  # fmt: skip
    out = run_load_point(spec, tmp_path)
    server = {s["id"]: s for s in read_jsonl(server_log)}
    recs = [r for r in out.records if r["status"] == "ok" and r["response_id"] in server]
    assert len(recs) >= 40 and len(recs) == len([r for r in out.records if r["status"] == "ok"])

    ttft_bias, lag, itl_err = [], [], []
    for r in recs:
        s = server[r["response_id"]]
        ttft_bias.append(((r["t_first_token_ns"] - r["t_sent_ns"]) - (s["send_ns"][0] - s["arrival_ns"])) / 1e6)
        c, v = np.array(r["chunk_ns"]), np.array(s["send_ns"])
        assert len(c) == len(v) == 20
        lag.extend(((c - v) / 1e6).tolist())
        itl_err.extend(np.abs(np.diff(c) - np.diff(v)) / 1e6)
    assert min(lag) >= 0  # the client never sees a chunk before it was sent: one clock on both sides
    assert median(ttft_bias) <= 2.0, f"median TTFT bias {median(ttft_bias):.3f} ms"
    assert median(lag) <= 1.0 and median(itl_err) <= 1.0
    # per-request TPOT equals the one the server actually produced (its own send times) within 5 % of
    # its 10 ms: what the client measures, not how exactly the server's sleeps kept time (a scheduling
    # hiccup on a busy 2-core VM once stretched one request's server-side TPOT to 10.8 ms)
    tpot = np.array([(r["t_last_token_ns"] - r["t_first_token_ns"]) / 1e6 / 19 for r in recs])
    srv = np.array([(server[r["response_id"]]["send_ns"][-1] - server[r["response_id"]]["send_ns"][0]) / 1e6 / 19
                    for r in recs])  # fmt: skip
    assert np.abs(tpot - srv).max() <= 0.5, np.abs(tpot - srv).max()
    assert abs(float(np.median(tpot)) - 10.0) <= 0.5, float(np.median(tpot))  # and the server kept its 10 ms
