"""The pure core planner: automatic defaults per machine size, GPU plans, manual lists, preflight."""

from __future__ import annotations

import pytest

from engines.placement import cpu_list_str
from engines.schema import PlacementConfig
from experiments.config import to_run_config
from experiments.placement import default_loadgen_cores, placement_problems, plan_placement
from tests.conftest import compose


def plan(cfg: PlacementConfig | None = None, cpus=(0, 1), engine="vllm", gpu=False, workers=1, rt=True):
    return plan_placement(
        cfg or PlacementConfig(),
        list(cpus),
        engine=engine,
        gpu_planned=gpu,
        workers=workers,
        realtime_allowed=rt,
    )


def test_default_config_is_auto():
    c = to_run_config(compose())
    assert isinstance(c.placement, PlacementConfig)
    assert c.placement.mode == "auto"
    assert to_run_config(compose(["placement=none"])).placement.mode == "none"
    assert to_run_config(compose(["placement=manual"])).placement.mode == "manual"


def test_two_cores_with_realtime_keep_only_the_compute_thread_off_the_generator_core():
    p = plan()
    assert p.engine_cpus == (0, 1) and p.omp_cpus == (1,) and p.omp_threads == 1
    assert p.loadgen_cpus == p.telemetry_cpus == p.lab_cpus == (0,)
    assert p.loadgen_realtime and p.shared
    assert p.to_dict() == {
        "mode": "auto", "host_cpus": [0, 1], "engine_cpus": [0, 1], "omp_cpus": [1], "omp_threads": 1,
        "omp_wait_policy": None, "loadgen_cpus": [0], "telemetry_cpus": [0], "lab_cpus": [0],
        "loadgen_realtime": True, "shared": True,
        "reason": "CPU plan on 2 cores: load generator, samplers and lab on 0, engine on all cores "
        "(the generator at realtime priority preempts it on 0), compute thread(s) on 1",
        "notes": [],
    }  # fmt: skip


def test_two_cores_without_realtime_confine_the_engine_to_the_other_core():
    p = plan(rt=False)
    assert p.engine_cpus == (1,) and p.omp_cpus == (1,)
    assert p.loadgen_cpus == (0,) and not p.shared and not p.loadgen_realtime
    assert "normal priority" in p.notes[0] and "ulimit -r" in p.notes[0]
    normal = plan(PlacementConfig(loadgen_priority="normal"))
    assert normal.engine_cpus == (1,) and not normal.loadgen_realtime and normal.notes == ()


def test_one_core_shares_everything_and_says_so():
    p = plan(cpus=[3])
    assert p.engine_cpus == p.omp_cpus == p.loadgen_cpus == (3,)
    assert p.shared and p.loadgen_realtime
    assert "only one core" in p.notes[0]


def test_sixteen_cores_reserve_one_engine_core_for_the_api_server():
    p = plan(cpus=range(16), rt=False)
    assert p == plan(cpus=range(16), rt=False)
    p = plan(cpus=range(16))
    assert p.loadgen_cpus == (0,)
    assert p.engine_cpus == tuple(range(1, 16))
    assert p.omp_cpus == tuple(range(1, 15)) and p.omp_threads == 14
    four = plan(cpus=range(16), workers=4)
    assert four.loadgen_cpus == (0, 1, 2, 3) and four.engine_cpus == tuple(range(4, 16))


def test_host_cpus_need_not_start_at_zero_or_be_contiguous():
    p = plan(cpus=[7, 2, 5, 3])
    assert p.host_cpus == (2, 3, 5, 7)
    assert p.loadgen_cpus == (2,) and p.engine_cpus == (3, 5, 7) and p.omp_cpus == (3, 5)


def test_default_loadgen_cores_is_one_per_worker_at_most_half():
    assert default_loadgen_cores(2) == 1
    assert default_loadgen_cores(2, workers=4) == 1
    assert default_loadgen_cores(16, workers=4) == 4
    assert default_loadgen_cores(8, workers=16) == 4
    p = plan(cpus=[0, 1], workers=3)
    assert "3 Locust workers share 1" in p.notes[0]


def test_gpu_plan_splits_cores_but_binds_no_omp_threads():
    p = plan(cpus=range(8), gpu=True)
    assert p.loadgen_cpus == (0,) and p.engine_cpus == tuple(range(1, 8))
    assert p.omp_cpus is None and p.omp_threads is None
    assert plan(cpus=[0], gpu=True).omp_cpus is None
    assert plan(gpu=True).engine_cpus == (0, 1) and plan(gpu=True, rt=False).engine_cpus == (1,)


def test_explicit_loadgen_cores():
    p = plan(PlacementConfig(loadgen_cores=2), cpus=range(4))
    assert p.loadgen_cpus == (0, 1) and p.engine_cpus == (2, 3) and p.omp_cpus == (2,)


def test_none_and_external_engines_pin_nothing():
    for p in (plan(PlacementConfig(mode="none")), plan(engine="endpoint")):
        d = p.to_dict()
        assert all(
            d[k] is None for k in ("engine_cpus", "omp_cpus", "loadgen_cpus", "telemetry_cpus", "lab_cpus")
        )
        assert p.shared


def test_manual_lists_are_used_as_given_with_defaults_from_loadgen_and_engine():
    cfg = PlacementConfig(
        mode="manual", engine_cpus=[3, 2], loadgen_cpus=[0], telemetry_cpus=[1], omp_wait_policy="passive"
    )
    p = plan(cfg, cpus=range(4))
    assert p.engine_cpus == (2, 3) and p.omp_cpus == (2, 3)
    assert p.loadgen_cpus == (0,) and p.telemetry_cpus == (1,) and p.lab_cpus == (0,)
    assert p.omp_wait_policy == "passive" and not p.shared and p.notes == ()
    overlap = plan(PlacementConfig(mode="manual", engine_cpus=[0, 1], loadgen_cpus=[1], omp_cpus=[0]))
    assert overlap.shared and overlap.omp_cpus == (0,)
    assert "shares core(s) 1" in overlap.notes[0] and "realtime priority" in overlap.notes[0]
    gpu = plan(PlacementConfig(mode="manual", engine_cpus=[1], loadgen_cpus=[0]), gpu=True)
    assert gpu.omp_cpus is None


@pytest.mark.parametrize(
    ("cfg", "fragment"),
    [
        (PlacementConfig(mode="pinned"), "placement.mode='pinned': use one of auto, none, manual"),
        (PlacementConfig(mode="manual"), "placement=manual needs placement.engine_cpus"),
        (PlacementConfig(mode="manual", engine_cpus=[1]), "placement=manual needs placement.loadgen_cpus"),
        (PlacementConfig(mode="manual", engine_cpus=[5], loadgen_cpus=[0]),
         "placement.engine_cpus=[5]: core(s) [5] are not available (this machine lets the lab use cores 0-1)"),
        (PlacementConfig(mode="manual", engine_cpus=[], loadgen_cpus=[0]), "placement.engine_cpus is empty"),
        (PlacementConfig(mode="manual", engine_cpus=[1, 1], loadgen_cpus=[0]), "lists a core twice"),
        (PlacementConfig(mode="manual", engine_cpus=[1], loadgen_cpus=[0], omp_cpus=[0]),
         "placement.omp_cpus=[0] must lie within placement.engine_cpus=[1]"),
        (PlacementConfig(engine_cpus=[1]), "placement.engine_cpus only apply with placement=manual"),
        (PlacementConfig(loadgen_cores=2), "placement.loadgen_cores=2 leaves no core for the engine"),
        (PlacementConfig(loadgen_cores=0), "placement.loadgen_cores must be >= 1"),
        (PlacementConfig(omp_wait_policy="spin"), "placement.omp_wait_policy='spin': use passive, active or null"),
        (PlacementConfig(loadgen_priority="high"), "placement.loadgen_priority='high': use realtime or normal"),
    ],
)  # fmt: skip
def test_problems_are_one_line_and_name_the_fix(cfg, fragment):
    problems = placement_problems(cfg, [0, 1])
    assert any(fragment in p for p in problems), problems
    assert all("\n" not in p for p in problems)
    with pytest.raises(ValueError, match="placement"):
        plan(cfg)


def test_valid_configs_have_no_problems():
    assert placement_problems(PlacementConfig(), [0, 1]) == []
    assert placement_problems(PlacementConfig(), [0]) == []  # one core: planned, with a note
    assert placement_problems(PlacementConfig(mode="manual", engine_cpus=[1], loadgen_cpus=[0]), [0, 1]) == []


def test_cpu_list_str_collapses_runs():
    assert cpu_list_str([1]) == "1"
    assert cpu_list_str([0, 1, 2, 4, 6, 7]) == "0-2,4,6-7"
    assert cpu_list_str([5, 3, 4, 3]) == "3-5"


def test_realtime_probe_leaves_the_caller_at_normal_scheduling():
    import os

    from experiments.placement import realtime_permitted

    assert isinstance(realtime_permitted(), bool)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
