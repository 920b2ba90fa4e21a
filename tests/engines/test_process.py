"""Lifecycle of the one process runner against fake engines: every path ends bounded, with no orphan."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from engines.base import LaunchPlan
from engines.process import EngineDied, EngineProcess, EngineStartTimeout, group_alive
from tests.conftest import SUPPORT, free_port, pid_alive


def plan(mode: str, tmp_path: Path, **kw) -> LaunchPlan:
    port = free_port()
    argv = (sys.executable, str(SUPPORT / "fake_engine.py"), mode, "--port", str(port), "--pidfile", str(tmp_path / "pids"))
    return LaunchPlan(engine=f"fake-{mode}", argv=argv, port=port, **kw)


def pids(tmp_path: Path) -> list[int]:
    f = tmp_path / "pids"
    return [int(x) for x in f.read_text().split()] if f.exists() else []


def assert_all_gone(eng: EngineProcess, tmp_path: Path) -> None:
    assert eng.pgid is not None and not group_alive(eng.pgid)
    alive = [p for p in pids(tmp_path) if pid_alive(p)]
    assert alive == [], f"orphans: {alive}"


def test_crash_is_reported_at_once_with_log_tail(tmp_path):
    eng = EngineProcess(plan("crash", tmp_path, ready_timeout_s=60), tmp_path / "engine.log", poll_interval_s=0.1)
    t = time.monotonic()
    with pytest.raises(EngineDied) as ei, eng:
        eng.wait_ready()
    assert time.monotonic() - t < 15  # not the 60 s timeout
    assert ei.value.exit_code == 3
    assert "model not found (simulated)" in ei.value.log_tail
    assert_all_gone(eng, tmp_path)


def test_never_healthy_times_out_and_is_killed(tmp_path):
    eng = EngineProcess(plan("never", tmp_path, ready_timeout_s=1.5), tmp_path / "engine.log", poll_interval_s=0.1)
    with pytest.raises(EngineStartTimeout, match="ready_timeout_s"), eng:
        eng.wait_ready()
    assert_all_gone(eng, tmp_path)


def test_healthy_then_clean_stop(tmp_path):
    eng = EngineProcess(plan("healthy", tmp_path), tmp_path / "engine.log", poll_interval_s=0.1)
    with eng:
        ready_s = eng.wait_ready()
        assert 0 < ready_s < 15
    assert_all_gone(eng, tmp_path)
    assert eng.log_text().startswith("$ ")  # the command line heads the log


def test_sigterm_ignored_gets_sigkill_within_bound(tmp_path):
    eng = EngineProcess(plan("stubborn", tmp_path, stop_timeout_s=1.0), tmp_path / "engine.log", poll_interval_s=0.1)
    eng.start()
    eng.wait_ready()
    t = time.monotonic()
    eng.stop()
    assert time.monotonic() - t < 8
    assert_all_gone(eng, tmp_path)


def test_children_of_the_engine_are_stopped_too(tmp_path):
    eng = EngineProcess(plan("children", tmp_path, stop_timeout_s=1.0), tmp_path / "engine.log", poll_interval_s=0.1)
    with eng:
        eng.wait_ready()
        deadline = time.monotonic() + 10
        while len(pids(tmp_path)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids(tmp_path)) == 3
        assert all(pid_alive(p) for p in pids(tmp_path))
    assert_all_gone(eng, tmp_path)


def test_stop_is_idempotent_and_safe_before_start(tmp_path):
    eng = EngineProcess(plan("healthy", tmp_path), tmp_path / "engine.log")
    assert eng.stop() is None
    eng.start()
    eng.stop()
    eng.stop()
    assert_all_gone(eng, tmp_path)
    assert os.path.exists(tmp_path / "engine.log")
