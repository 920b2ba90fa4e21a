"""Launching apart from measuring: one lease, several sets of points, one engine start."""

from __future__ import annotations

import pytest

from engines import ADAPTERS
from engines.process import Supervisor, group_alive
from experiments.config import to_run_config
from experiments.lease import EngineLease, Rejected
from experiments.measure import PointPlan, Workload, measure_point
from tests.conftest import compose
from tests.support.fake_adapter import TimingServerAdapter


@pytest.fixture
def fake_engine(monkeypatch):
    monkeypatch.setitem(ADAPTERS, "timing", TimingServerAdapter)


def cfg(tok_dir, *extra):
    return to_run_config(compose([
        "engine.name=timing", f"model.path={tok_dir}", "model.built_by=null", "workload.prompt_tokens=20",
        "workload.output_tokens=8", "workload.num_prompts=4", "traffic.duration_s=1.0", "traffic.warmup_s=0.2",
        "telemetry.sampler=off", *extra,
    ]))  # fmt: skip


def test_two_sets_of_points_against_one_lease_start_the_engine_once(fake_engine, tiny_tokenizer_dir, tmp_path):
    c = cfg(tiny_tokenizer_dir)
    work = tmp_path / "work"
    w = Workload(c)
    with Supervisor() as sup:
        lease = EngineLease(c, tmp_path, work, sup)
        assert lease.prepare() == []
        with lease:
            pid = lease.engine_child.pid
            first = [measure_point(lease, PointPlan(i, v), items=w.items, counter=w.counter, work=work)
                     for i, v in enumerate([8.0, 16.0])]  # fmt: skip
            # a second set (e.g. the next step of an adaptive search) against the same ready engine
            second = [measure_point(lease, PointPlan(2 + i, v, repetition=1), items=w.items, counter=w.counter, work=work)
                      for i, v in enumerate([8.0])]  # fmt: skip
            assert lease.engine_child.pid == pid and lease.failure_reason() is None
        assert lease.starts == 1 and not group_alive(pid)
    for r in first + second:
        s = r.record.summary
        assert s["requests"]["ok"] == s["requests"]["total"] > 0 and r.record.aborted is None
    # the same point measured twice: same point_id, different repetition
    assert first[0].record.point_id == second[0].record.point_id != first[1].record.point_id
    assert (first[0].record.repetition, second[0].record.repetition) == (0, 1)
    assert lease.engine.exit_code is not None and lease.engine.time_to_ready_s > 0


def test_a_lease_that_fails_preflight_starts_nothing(fake_engine, tiny_tokenizer_dir, tmp_path):
    c = cfg(tiny_tokenizer_dir, "engine.tensor_parallel_size=0")
    with Supervisor() as sup:
        lease = EngineLease(c, tmp_path, tmp_path / "work", sup)
        with pytest.raises(Rejected) as ei, lease:
            pass
        assert any("tensor_parallel_size" in p for p in ei.value.problems)
        assert lease.starts == 0 and sup.children == []
