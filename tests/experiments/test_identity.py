"""Run identity: launch keys and point ids are stable, portable, and change exactly when they should."""

from __future__ import annotations

import json

import pytest

from analysis.records import identity
from analysis.records.plain import to_plain
from analysis.records.run import RunRecord, read_run_json, upgrade_v1
from experiments.config import to_run_config
from tests.conftest import compose


def cfg(*overrides):
    return to_run_config(compose(list(overrides)))


def test_launch_key_ignores_where_the_server_listens_and_how_long_the_lab_waits():
    base = identity.launch_key(cfg())
    assert len(base) == identity.ID_LEN and int(base, 16) >= 0
    for o in ("engine.port=8123", "engine.ready_timeout_s=5", "engine.python=/x/bin/python", "traffic.points=[1,2]",
              "workload.prompt_tokens=64", "slo.ttft_ms=100", "experiment_name=other", "model.built_by=null"):
        assert identity.launch_key(cfg(o)) == base, o


@pytest.mark.parametrize("o", ["quant=awq", "engine.max_num_seqs=8", "engine.prefix_caching=false", "gpu=h100_sxm_80g",
                               "model.path=/elsewhere", "engine.extra_args=[--foo]"])
def test_launch_key_changes_with_what_changes_the_server(o):
    assert identity.launch_key(cfg(o)) != identity.launch_key(cfg())


def test_point_id_is_per_load_value_and_workload_but_not_per_run_layout():
    c = cfg()
    p = identity.point_id(c.traffic, c.workload, 4.0)
    assert p == identity.point_id(c.traffic, c.workload, 4)  # int or float: the same value
    assert p != identity.point_id(c.traffic, c.workload, 8.0)
    c2 = cfg("traffic.points=[4,8,16]", "traffic.workers=2")  # other points of the run, generator layout
    assert identity.point_id(c2.traffic, c2.workload, 4.0) == p
    c3 = cfg("workload.output_tokens=32")
    assert identity.point_id(c3.traffic, c3.workload, 4.0) != p
    c4 = cfg("traffic.duration_s=30")
    assert identity.point_id(c4.traffic, c4.workload, 4.0) != p


def test_hash_is_canonical_json():
    assert identity.stable_hash({"a": 1, "b": [1, 2]}) == identity.stable_hash({"b": [1, 2], "a": 1})
    # the recorded launch_fields re-derive the key (docs/identity.md)
    c = cfg()
    fields = json.loads(json.dumps(identity.launch_fields(c)))
    assert identity.stable_hash(fields) == identity.launch_key(c)


def test_v1_run_json_is_upgraded_with_the_same_identity(tmp_path):
    c = cfg("traffic.points=[2,4]")
    v1 = {
        "schema_version": 1, "run_id": "20260101-000000_vllm_none", "experiment": "default", "status": "ok",
        "config": to_plain(c), "notes": ["load point 0: something"],
        "load_points": [{"index": 0, "value": 2.0, "t0_ns": 1, "t_end_ns": 2, "interrupted": False, "summary": {}},
                        {"index": 1, "value": 4.0, "t0_ns": 3, "t_end_ns": 4, "interrupted": False, "summary": {}}],
        "failure": None,
    }  # fmt: skip
    (tmp_path / "run.json").write_text(json.dumps(v1))
    d = read_run_json(tmp_path)
    assert d["schema_version"] == 2 and d["upgraded_from"] == 1
    assert d["variant_id"] == identity.launch_key(c)
    assert [p["point_id"] for p in d["load_points"]] == [identity.point_id(c.traffic, c.workload, v) for v in (2, 4)]
    assert [p["load_value"] for p in d["load_points"]] == [2.0, 4.0] and d["load_points"][0]["load_unit"] == "req/s"
    assert d["notes"] == [{"source": "run", "kind": "note", "message": "load point 0: something", "t0_ns": None,
                           "t1_ns": None}]  # fmt: skip
    assert upgrade_v1(v1)["variant_id"] == d["variant_id"]


def test_v2_run_json_round_trips(tmp_path):
    c = cfg()
    r = RunRecord(run_id="r1", variant_id=identity.launch_key(c), experiment="e", config=to_plain(c),
                  launch_fields=identity.launch_fields(c))  # fmt: skip
    r.note("preflight", "warning", "hello")
    r.note("preflight", "warning", "hello")  # an equal note is kept once
    r.fail("failed", "boom", phase="measure", exit_code=3)
    r.save(tmp_path)
    d = read_run_json(tmp_path / "run.json")
    assert d["schema_version"] == 2 and d["run_id"] == "r1" and d["failure"]["exit_code"] == 3
    assert d["notes"] == [{"source": "preflight", "kind": "warning", "message": "hello", "t0_ns": None, "t1_ns": None}]


def test_a_newer_schema_is_refused_with_the_path(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ValueError, match="run.json schema_version 99 is newer"):
        read_run_json(tmp_path)


def test_the_trace_settings_added_later_leave_earlier_point_ids_unchanged():
    """traffic.trace_format, trace_block_tokens, trace_model and trace_log_type joined the schema after
    runs were recorded: at their defaults they are not hashed (the ids recorded before still hold);
    set, they make another point."""
    c = cfg("traffic=trace", "traffic.trace_path=/t.jsonl")
    fields = identity.point_fields(c.traffic, c.workload, 1.0)["traffic"]
    assert not {"trace_format", "trace_block_tokens", "trace_model", "trace_log_type"} & set(fields)
    p = identity.point_id(c.traffic, c.workload, 1.0)
    for o in ("traffic.trace_format=mooncake", "traffic.trace_block_tokens=256", "traffic.trace_model=GPT-4"):
        c2 = cfg("traffic=trace", "traffic.trace_path=/t.jsonl", o)
        assert identity.point_id(c2.traffic, c2.workload, 1.0) != p, o
