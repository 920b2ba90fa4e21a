"""The driver and its contract: build_spec is pure and takes every setting from the schema, the spec
survives its JSON round trip, and abort() stops a running point while keeping its records."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from loadgen.arrivals import Arrival, open_loop_schedule
from loadgen.driver import build_spec, run_load_point
from loadgen.jsonl import read_jsonl
from loadgen.schema import ShapeConfig, TrafficConfig, WorkloadConfig
from loadgen.spec import DistributedSpec, LoadPointSpec, OutputPaths, RequestItem, ShapeSpec
from loadgen.workload import WorkloadItem

pytestmark = pytest.mark.serial  # measures timing: alone, in scripts/test.sh's second pass (see pyproject markers)

ITEMS = [WorkloadItem(i, f"prompt {i}", 3, 12) for i in range(2)]


def spec_of(traffic: TrafficConfig, value: float = 4.0, workdir: Path = Path("/nonexistent/rundir"), **kw) -> LoadPointSpec:
    return build_spec(load_point=1, load_value=value, traffic=traffic, workload=WorkloadConfig(), items=ITEMS,
                      base_url="http://127.0.0.1:9", model="m", extras_for=lambda n: {"ignore_eos": True, "n": n},
                      workdir=workdir, **kw)  # fmt: skip


def test_build_spec_of_the_schema_defaults_is_this_golden_spec():
    t = TrafficConfig(duration_s=1.0, warmup_s=0.5, kind="constant")
    spec = spec_of(t)
    assert spec == LoadPointSpec(
        load_point=1, load_value=4.0, kind="constant", base_url="http://127.0.0.1:9", model="m",
        endpoint="completions", temperature=0.0, api_key_env=None,
        items=(RequestItem(0, "prompt 0", 3, 12, {"ignore_eos": True, "n": 12}),
               RequestItem(1, "prompt 1", 3, 12, {"ignore_eos": True, "n": 12})),
        schedule=(Arrival(0.0, "warmup", 0), Arrival(0.25, "warmup", 1), Arrival(0.5, "measure", 0),
                  Arrival(0.75, "measure", 1), Arrival(1.0, "measure", 0), Arrival(1.25, "measure", 1)),
        users=None, shape=None, warmup_s=0.5, duration_s=1.0, cooldown_s=0.0, think_time_s=0.0,
        request_timeout_s=300.0, drain_timeout_s=120.0, max_inflight=1024, loadgen_nice=0, cpus=None, realtime=False,
        distributed=DistributedSpec(workers=1, remote_workers=0, master_bind="127.0.0.1", master_port=0, token_env=None),
        paths=OutputPaths(records="/nonexistent/rundir/requests.1.jsonl", lag="/nonexistent/rundir/loadgen_lag.1.jsonl",
                          meta="/nonexistent/rundir/loadgen_meta.1.json"),
        sessions=(), max_model_len=None,
        max_sse_line_bytes=1_048_576, max_error_body_bytes=4096, max_output_text_chars=4_194_304,
    )  # fmt: skip
    assert spec.loop == "open" and spec.window_s == 1.5 and spec.last_send_s() == 1.25
    assert spec == spec_of(t) and not Path("/nonexistent").exists()  # pure: same input, same spec, no file


def test_every_setting_comes_from_the_config():
    t = TrafficConfig(kind="poisson", seed=7, loadgen_nice=-5, workers=3, remote_workers=2, master_bind="0.0.0.0",
                      master_port=5557, cooldown_s=2.0, think_time_s=0.5, request_timeout_s=9.0, drain_timeout_s=8.0,
                      max_inflight=17, burstiness=0.5, warmup_s=1.0, duration_s=3.0)  # fmt: skip
    spec = spec_of(t, value=6.0, cpus=[3, 1], api_key_env="KEY")
    assert (spec.loadgen_nice, spec.cooldown_s, spec.think_time_s, spec.request_timeout_s, spec.drain_timeout_s,
            spec.max_inflight, spec.cpus, spec.api_key_env) == (-5, 2.0, 0.5, 9.0, 8.0, 17, (3, 1), "KEY")  # fmt: skip
    assert spec.distributed == DistributedSpec(3, 2, "0.0.0.0", 5557, None)
    assert spec.distributed.enabled and spec.distributed.expected_workers == 5
    # each point its own seeded stream: seed + load_point
    expected = open_loop_schedule("poisson", 6.0, 1.0, 3.0, 2, seed=8, cooldown_s=2.0, burstiness=0.5)
    assert spec.schedule == tuple(expected)


def test_spec_fields_have_no_defaults_so_none_restates_the_schema():
    for cls in (LoadPointSpec, RequestItem, ShapeSpec, DistributedSpec, OutputPaths):
        with_default = [f.name for f in dataclasses.fields(cls)
                        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]  # fmt: skip
        assert with_default == (["version"] if cls is LoadPointSpec else []), cls


@pytest.mark.parametrize(
    "traffic,value,kw",
    [
        (TrafficConfig(kind="gamma", burstiness=0.25, shape=ShapeConfig(kind="spike")), 3.5, {}),
        (TrafficConfig(kind="concurrency", shape=ShapeConfig(kind="ramp", start_fraction=0.3), think_time_s=0.1), 4, {}),
        (TrafficConfig(kind="trace", duration_s=5.0), 2.0, {"trace_times_s": [10.0, 10.5, 11.0, 30.0]}),
    ],
)
def test_spec_round_trips_through_json(traffic, value, kw):
    spec = spec_of(traffic, value=value, cpus=[0], **kw)
    back = LoadPointSpec.from_json(spec.to_json())
    assert back == spec and back.to_json() == spec.to_json()
    assert isinstance(back.schedule, tuple) and all(isinstance(a, Arrival) for a in back.schedule)


def test_closed_loop_spec_and_refusals():
    spec = spec_of(TrafficConfig(kind="concurrency", shape=ShapeConfig(kind="steps", steps=3)), value=4)
    assert spec.loop == "closed" and spec.users == 4 and spec.schedule == ()
    assert spec.shape == ShapeSpec("steps", 0.1, 3, 0.5, 0.1, 4.0, 0.2)
    with pytest.raises(ValueError, match="whole numbers"):
        spec_of(TrafficConfig(kind="concurrency"), value=2.5)
    with pytest.raises(ValueError, match="unknown traffic.kind"):
        spec_of(TrafficConfig(kind="bursty"))
    with pytest.raises(ValueError, match="arrival times"):
        spec_of(TrafficConfig(kind="trace"))
    d = spec.to_dict()
    with pytest.raises(ValueError, match="version"):
        LoadPointSpec.from_dict({**d, "version": 99})
    with pytest.raises(ValueError, match="unknown"):
        LoadPointSpec.from_dict({**d, "mode": "closed"})


@pytest.mark.parametrize("workers", [1, 2])
def test_abort_stops_the_point_at_once_and_keeps_its_records(timing_server, tmp_path, workers):
    url, _ = timing_server(ttft_ms=100, itl_ms=100)  # 12 tokens: ~1.2 s per request
    t = TrafficConfig(kind="constant", warmup_s=0.0, duration_s=8.0, request_timeout_s=20, drain_timeout_s=20,
                      workers=workers)  # fmt: skip
    spec = build_spec(load_point=0, load_value=10.0, traffic=t, workload=WorkloadConfig(), items=ITEMS, base_url=url,
                      model="m", extras_for=lambda n: {}, workdir=tmp_path)  # fmt: skip
    polls: list[int] = []
    records = Path(spec.paths.records)

    def abort() -> str | None:
        polls.append(time.monotonic_ns())
        # Abort once some request has finished: the point is truly running, whatever the start-up time.
        return "test abort" if any(r["status"] == "ok" for r in read_jsonl(records)) else None

    out = run_load_point(spec, tmp_path, abort=abort)
    aborted_at = polls[-1]
    assert out.aborted == "test abort" and "stopped early: test abort" in out.problems
    assert out.exit_code == 0 and not out.interrupted and out.meta["stopped_early"] is True
    st = [r["status"] for r in out.records]
    assert "ok" in st and "cancelled" in st and len(st) < len(spec.schedule)
    assert all(r["t_sent_ns"] < aborted_at + 2e9 for r in out.records if r["status"] != "dropped")  # nothing sent later
    gaps = [b - a for a, b in zip(polls, polls[1:], strict=False)]
    assert max(gaps) < 1e9  # polled often (0.2 s nominal; slack for a loaded machine)
    if workers > 1:
        assert out.meta["merge_ok"] is True and len({r["worker"] for r in out.records}) == 2


def test_the_caps_and_the_worker_token_come_from_the_config():
    t = TrafficConfig(kind="constant", duration_s=1.0, max_sse_line_bytes=2048, max_error_body_bytes=512,
                      max_output_text_chars=99, worker_token_env="SERVELAB_T", workers=2)  # fmt: skip
    spec = spec_of(t)
    assert (spec.max_sse_line_bytes, spec.max_error_body_bytes, spec.max_output_text_chars) == (2048, 512, 99)
    assert spec.distributed.token_env == "SERVELAB_T"
    assert LoadPointSpec.from_json(spec.to_json()) == spec
