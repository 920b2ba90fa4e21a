"""The timing server's --max-streams capacity, and the knee search finding it for real.

The server's log is on its own CLOCK_MONOTONIC, so the FIFO checks compare server times only;
the search runs servelab's load generator against it (benchmarks/knee_search.py's core).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
import urllib.request

import pytest

from benchmarks.knee_search import knee_slo, make_measure_feasible, run_planner, service_time_ms, true_knee
from experiments.sweeps.search import KneeSearch
from tests.conftest import wait_http

pytestmark = pytest.mark.serial  # measures timing: alone, in scripts/test.sh's second pass (see pyproject markers)


def post(url: str, max_tokens: int, out: list, i: int) -> None:
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    c.request("POST", "/v1/completions", json.dumps({"prompt": f"p{i}", "max_tokens": max_tokens, "stream": True}),
              {"Content-Type": "application/json"})  # fmt: skip
    out[i] = c.getresponse().read()
    c.close()


def log_entries(path, n: int) -> list[dict]:
    """The server log's entries once it has `n` (it writes each just after the reply's last byte)."""
    deadline = time.monotonic() + 5
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n or time.monotonic() > deadline:
            return sorted((json.loads(line) for line in lines), key=lambda r: r["arrival_ns"])
        time.sleep(0.02)


def test_max_streams_queues_fifo_and_starts_the_clock_on_a_free_slot(timing_server):
    ttft_ms, itl_ms, tokens = 20, 5, 9
    s_ms = ttft_ms + (tokens - 1) * itl_ms  # 60 ms per request
    url, log = timing_server(ttft_ms=ttft_ms, itl_ms=itl_ms, max_streams=2)
    out: list = [None] * 4
    threads = [threading.Thread(target=post, args=(url, tokens, out, i)) for i in range(4)]
    for t in threads:  # 5 ms apart, so the arrival order is known
        t.start()
        time.sleep(0.005)
    for t in threads:
        t.join(20)
    assert all(o and o.rstrip().endswith(b"[DONE]") for o in out)
    e = log_entries(log, 4)
    assert len(e) == 4
    first_ms = [(r["send_ns"][0] - e[0]["arrival_ns"]) / 1e6 for r in e]  # after the first arrival
    ttft = [(r["send_ns"][0] - r["arrival_ns"]) / 1e6 for r in e]
    # the first two stream at once (TTFT = ttft); the 3rd and 4th wait for them: ~S later each
    assert all(abs(t - ttft_ms) < 8 for t in ttft[:2]), ttft
    assert all(abs((first_ms[k + 2] - first_ms[k]) - s_ms) < 10 for k in (0, 1)), first_ms
    assert all(t > ttft_ms + s_ms - 25 for t in ttft[2:]), ttft
    # FIFO: slots are granted in arrival order, each when the earlier stream ended (handed over)
    starts = [r["start_ns"] for r in e]
    assert starts == sorted(starts)
    for k in (0, 1):
        assert 0 <= (e[k + 2]["start_ns"] - e[k]["send_ns"][-1]) / 1e6 < 8
        # the TTFT clock runs from the slot, not from arrival
        assert abs((e[k + 2]["send_ns"][0] - e[k + 2]["start_ns"]) / 1e6 - ttft_ms) < 8


def test_a_client_gone_while_queued_gives_its_turn_away(timing_server):
    url, log = timing_server(ttft_ms=300, itl_ms=1, max_streams=1)
    out: list = [None] * 3
    holder = threading.Thread(target=post, args=(url, 2, out, 0))
    holder.start()
    time.sleep(0.05)
    u = urllib.parse.urlparse(url)
    body = json.dumps({"prompt": "gone", "max_tokens": 2, "stream": True}).encode()
    with socket.create_connection((u.hostname, u.port)) as s:  # queued behind the holder, then hangs up
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        time.sleep(0.05)
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            assert "fake:num_requests_waiting 1" in r.read().decode()
    third = threading.Thread(target=post, args=(url, 2, out, 2))
    third.start()
    holder.join(10)
    third.join(10)
    e = log_entries(log, 2)
    time.sleep(0.1)
    assert len(log.read_text().splitlines()) == 2  # the hung-up request was never streamed
    # the third starts as soon as the holder ends, not a whole service time later
    assert (e[1]["start_ns"] - e[0]["send_ns"][-1]) / 1e6 < 50


def test_without_max_streams_nothing_changes(timing_server):
    url, log = timing_server(ttft_ms=20, itl_ms=5)
    out: list = [None] * 3
    threads = [threading.Thread(target=post, args=(url, 4, out, i)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    e = log_entries(log, 3)
    assert len(e) == 3
    assert all(set(r) == {"id", "arrival_ns", "send_ns"} for r in e)
    assert all(abs((r["send_ns"][0] - r["arrival_ns"]) / 1e6 - 20) < 8 for r in e)
    wait_http(url + "/health")
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        assert "waiting" not in r.read().decode()


def test_knee_search_finds_the_servers_capacity(timing_server, tmp_path):
    ttft_ms, itl_ms, tokens, streams = 20, 5, 16, 4
    s_ms = service_time_ms(ttft_ms, itl_ms, tokens)  # 95 ms
    url, _ = timing_server(ttft_ms=ttft_ms, itl_ms=itl_ms, max_streams=streams)
    measure = make_measure_feasible(url, kind="concurrency", slo=knee_slo(ttft_ms, s_ms), workdir=tmp_path / "knee",
                                    tokens=tokens, warmup_s=0.5, duration_s=1.5)  # fmt: skip
    search = KneeSearch(1, 12, integer=True)
    state = run_planner(search, measure)
    truth = true_knee("concurrency", streams, s_ms)
    assert truth == 4
    assert state["status"] == "converged", state
    assert abs(state["knee"] - truth) / truth <= 0.05, state
    # 4 for pure bisection of [1, 12]; measuring the top early (probe_top, the default) may cost one more
    assert state["points_used"] <= search.worst_case_points() == 5
    # below capacity nobody waits; above it the p99 TTFT carries about one service time of queueing
    for h in measure.history:
        assert (h["ttft_p99_ms"] < ttft_ms + s_ms / 2) == (h["load"] <= streams), measure.history
