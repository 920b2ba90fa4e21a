"""The Locust load-generator process against the in-repo timing server (real HTTP streaming)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import pytest

from loadgen.driver import LoadInterrupted, build_spec, run_load_point
from loadgen.jsonl import read_jsonl
from loadgen.schema import TrafficConfig, WorkloadConfig
from loadgen.workload import WorkloadItem
from tests.support.signals import ctrl_c_when, ok_record_in

pytestmark = pytest.mark.serial  # measures timing: alone, in scripts/test.sh's second pass (see pyproject markers)

ITEMS = [WorkloadItem(i, f"prompt {i}", 3, 12) for i in range(4)]


def traffic(**kw):
    base = dict(kind="poisson", request_timeout_s=20, drain_timeout_s=20, max_inflight=64, warmup_s=0.5, duration_s=2.0)
    return TrafficConfig(**{**base, **kw})


def spec_for(url: str, tmp_path: Path, value: float, endpoint: str = "completions", **kw):
    return build_spec(load_point=0, load_value=value, traffic=traffic(**kw), workload=WorkloadConfig(endpoint=endpoint),
                      items=ITEMS, base_url=url, model="m", extras_for=lambda n: {}, workdir=tmp_path)  # fmt: skip


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_open_loop_records_match_the_server(timing_server, tmp_path, endpoint):
    url, server_log = timing_server(ttft_ms=30, itl_ms=4)
    spec = spec_for(url, tmp_path, 8.0, endpoint=endpoint)
    out = run_load_point(spec, tmp_path)
    assert out.problems == [] and out.exit_code == 0
    recs = out.records
    assert len(recs) == len(spec.schedule) > 5  # one record per scheduled request, nothing lost
    assert {r["status"] for r in recs} == {"ok"}
    assert all(r["output_tokens"] == 12 and r["output_tokens_source"] == "usage" for r in recs)
    assert all(len(r["chunk_ns"]) == 12 for r in recs)
    assert all(r["t_scheduled_ns"] <= r["t_sent_ns"] < r["t_first_token_ns"] <= r["t_last_token_ns"] <= r["t_done_ns"] for r in recs)
    assert [r["phase"] for r in recs] == [a.phase for a in spec.schedule]
    # The client's TTFT is at least the server's (30 ms) and close to it: same clock on both sides.
    server = read_jsonl(server_log)
    srv_first = sorted(s["send_ns"][0] for s in server)
    cli_first = sorted(r["t_first_token_ns"] for r in recs)
    lag_ms = [(c - s) / 1e6 for c, s in zip(cli_first, srv_first, strict=True)]
    assert 0 <= median(lag_ms) < 5
    ttft = [(r["t_first_token_ns"] - r["t_sent_ns"]) / 1e6 for r in recs]
    assert 30 <= median(ttft) < 45
    assert out.meta["sent"] == len(recs) and out.lag  # meta and loop-lag samples written


def test_closed_loop_keeps_n_in_flight(timing_server, tmp_path):
    url, _ = timing_server(ttft_ms=10, itl_ms=2)
    spec = spec_for(url, tmp_path, 3, kind="concurrency", duration_s=1.5)
    out = run_load_point(spec, tmp_path)
    recs = out.records
    assert recs and {r["status"] for r in recs} == {"ok"}
    assert {r["phase"] for r in recs} == {"warmup", "measure"}
    # closed loop: never more than 3 requests overlap
    events = sorted([(r["t_sent_ns"], 1) for r in recs] + [(r["t_done_ns"], -1) for r in recs])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    assert peak == 3
    # a free user sends at once (the first request of each user also opens its connection)
    lags = sorted((r["t_sent_ns"] - r["t_scheduled_ns"]) / 1e6 for r in recs)
    assert lags[len(lags) // 2] < 2.0 and lags[-1] < 100.0


def test_http_errors_are_recorded_not_fatal(timing_server, tmp_path):
    url, _ = timing_server(fail_status=503)
    out = run_load_point(spec_for(url, tmp_path, 5.0), tmp_path)
    assert out.records and {r["status"] for r in out.records} == {"error"}
    assert all(r["http_status"] == 503 and "injected failure" in r["error"] for r in out.records)


def test_unreachable_server_gives_error_records(tmp_path):
    from tests.conftest import free_port

    out = run_load_point(spec_for(f"http://127.0.0.1:{free_port()}", tmp_path, 5.0, duration_s=1.0), tmp_path)
    assert out.records and {r["status"] for r in out.records} == {"error"}


def test_timeout_status(timing_server, tmp_path):
    url, _ = timing_server(ttft_ms=3000)
    out = run_load_point(spec_for(url, tmp_path, 2.0, kind="constant", duration_s=0.6, warmup_s=0, request_timeout_s=0.5), tmp_path)
    assert out.records and {r["status"] for r in out.records} == {"timeout"}


def test_full_pool_drops_instead_of_delaying(timing_server, tmp_path):
    url, _ = timing_server(ttft_ms=500, itl_ms=1)
    out = run_load_point(spec_for(url, tmp_path, 20.0, kind="constant", max_inflight=2, warmup_s=0, duration_s=0.5), tmp_path)
    st = [r["status"] for r in out.records]
    assert st.count("ok") == 2 and st.count("dropped") == len(st) - 2
    assert all(r["t_sent_ns"] is None for r in out.records if r["status"] == "dropped")


def test_sigterm_cancels_in_flight_and_flushes(timing_server, tmp_path):
    url, _ = timing_server(ttft_ms=100, itl_ms=100)  # 12 tokens: ~1.2 s per request
    spec = spec_for(url, tmp_path, 10.0, kind="constant", duration_s=5.0, warmup_s=0)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.to_json())
    root = Path(__file__).resolve().parents[2]
    p = subprocess.Popen([sys.executable, "-m", "loadgen.locust_runner", str(spec_path)], cwd=root)
    until = time.monotonic() + 30  # signal once a request has finished (start-up time depends on the machine)
    while time.monotonic() < until and not any(r["status"] == "ok" for r in read_jsonl(Path(spec.paths.records))):
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 0
    recs = read_jsonl(Path(spec.paths.records))
    st = [r["status"] for r in recs]
    assert "cancelled" in st and "ok" in st
    assert len(recs) < len(spec.schedule)  # it stopped scheduling


def test_ctrl_c_in_the_lab_stops_the_generator_and_keeps_records(timing_server, tmp_path):
    url, _ = timing_server(ttft_ms=50, itl_ms=100)
    spec = spec_for(url, tmp_path, 10.0, kind="constant", duration_s=6.0, warmup_s=0)
    with ctrl_c_when(ok_record_in(tmp_path)), pytest.raises(LoadInterrupted) as ei:
        run_load_point(spec, tmp_path)
    out = ei.value.output
    assert out.interrupted and out.records
    assert {"ok", "cancelled"} <= {r["status"] for r in out.records}


def test_connections_the_server_closed_while_idle_are_replaced(timing_server, tmp_path):
    """Bursts of 3 with pauses longer than the server's keep-alive: every idle connection is stale
    when the next burst starts, and no request may fail because of it."""
    url, _ = timing_server(ttft_ms=30, itl_ms=2, keepalive_s=0.3)
    tr = traffic(kind="trace", warmup_s=0.0, duration_s=5.0)
    times = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    spec = build_spec(load_point=0, load_value=1.0, traffic=tr, workload=WorkloadConfig(),
                      items=[WorkloadItem(i, f"p{i}", 3, 6) for i in range(9)], base_url=url, model="m",
                      extras_for=lambda n: {}, workdir=tmp_path, trace_times_s=times)  # fmt: skip
    out = run_load_point(spec, tmp_path)
    assert len(out.records) == 9 and {r["status"] for r in out.records} == {"ok"}, [r["error"] for r in out.records]
