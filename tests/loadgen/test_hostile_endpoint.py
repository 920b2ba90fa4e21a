"""An endpoint that does not play fair (issue 25, finding 4): an endless SSE line, a slow drip, an
endless error body, endless text, an endless /metrics. The load point still ends on time, each
such request is recorded as an error that names the cap or deadline it hit, and the samplers and
the quality client stop reading at their caps and deadlines too."""

from __future__ import annotations

import time

import pytest

from experiments.quality import Client
from experiments.telemetry import metrics_samples
from loadgen.driver import build_spec, run_load_point
from loadgen.schema import TrafficConfig, WorkloadConfig
from loadgen.workload import WorkloadItem

pytestmark = pytest.mark.serial  # time bounds on the point, the scrape and the quality request

ITEMS = [WorkloadItem(i, f"p{i}", 3, 10) for i in range(4)]
TIMEOUT_S = 3.0


def spec_for(url, tmp_path):
    # the drain outlasts every request's own deadline: with drain = timeout, a request sent in the
    # window's last milliseconds was cut by the drain's end ("cancelled") a moment before its timeout
    tr = TrafficConfig(kind="poisson", request_timeout_s=TIMEOUT_S, drain_timeout_s=TIMEOUT_S + 2, max_inflight=16,
                       warmup_s=0.0, duration_s=1.5, max_sse_line_bytes=65536, max_error_body_bytes=4096,
                       max_output_text_chars=300_000)  # fmt: skip
    return build_spec(load_point=0, load_value=4.0, traffic=tr, workload=WorkloadConfig(), items=ITEMS, base_url=url,
                      model="m", extras_for=lambda n: {}, workdir=tmp_path)  # fmt: skip


@pytest.mark.parametrize("mode,status,reason", [
    ("endless-line", "error", "over a cap: an SSE line longer than 65536 bytes (traffic.max_sse_line_bytes)"),
    ("huge-text", "error", "over a cap: output text over 300000 characters (traffic.max_output_text_chars)"),
    ("huge-error", "error", "(body over 4096 bytes, not read)"),
    ("slow-drip", "timeout", f"no completion within {TIMEOUT_S} s"),
])  # fmt: skip
def test_a_hostile_endpoint_cannot_hold_the_run(timing_server, tmp_path, mode, status, reason):
    url, _ = timing_server(hostile=mode)
    spec = spec_for(url, tmp_path)
    t0 = time.monotonic()
    out = run_load_point(spec, tmp_path)
    took = time.monotonic() - t0
    # the window (1.5 s) + one request's deadline + the generator's start and stop, with room for a busy machine
    assert took < spec.window_s + TIMEOUT_S + 20, took
    assert out.records and len(out.records) == len(spec.schedule)
    assert {r["status"] for r in out.records} == {status}, {r["error"] for r in out.records}
    assert all(reason in r["error"] for r in out.records), {r["error"] for r in out.records}
    # nothing of the flood was kept
    assert all(len(r["output_text"] or "") <= spec.max_output_text_chars for r in out.records)


def test_an_endless_metrics_answer_is_a_failed_scrape(timing_server):
    url, _ = timing_server(hostile="huge-metrics")
    t0 = time.monotonic()
    row = next(metrics_samples(url + "/metrics", 0.5, max_bytes=1_000_000))
    assert time.monotonic() - t0 < 10
    assert row["name"] is None and "ScrapeTooLarge" in row["error"] and "over 1000000 bytes" in row["error"]


def test_the_quality_client_has_a_total_deadline(timing_server):
    url, _ = timing_server(hostile="slow-drip")  # a byte every 0.2 s: each read succeeds, none ends
    c = Client(url, "m", {}, 1.0, lambda fixed: {})
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="within 1.0 s"):
        c.generate("hi", 4, fixed_length=False, stop=None)
    assert time.monotonic() - t0 < 5
