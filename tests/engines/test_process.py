"""Lifecycle of the process supervisor against fake engines: every path ends bounded, with no orphan."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.base import LaunchPlan
from engines.process import (
    EngineCrashed,
    EngineDied,
    EngineStartTimeout,
    Supervisor,
    cancel_on_signal,
    group_alive,
    shielded_teardown,
    wait_ready,
)
from tests.conftest import ROOT, SUPPORT, free_port, pid_alive
from tests.support.engine_process import EngineProcess


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


# -- Supervisor ------------------------------------------------------------------------------
def fake(mode: str, tmp_path: Path) -> tuple[list[str], str]:
    port = free_port()
    argv = [sys.executable, str(SUPPORT / "fake_engine.py"), mode, "--port", str(port), "--pidfile", str(tmp_path / "pids")]
    return argv, f"http://127.0.0.1:{port}/health"


def test_spawn_logs_waits_ready_and_stops_in_reverse_order(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="engines.process")
    with Supervisor() as sup:
        argv, url = fake("healthy", tmp_path)
        eng = sup.spawn("engine", argv, log_path=tmp_path / "engine.log", critical=True, stop_timeout_s=5)
        helper = sup.spawn("helper", [sys.executable, "-c", "import time; print('helper up', flush=True); time.sleep(60)"],
                           log_path=tmp_path / "helper.log", env={"SERVELAB_X": "1"})  # fmt: skip
        assert 0 < wait_ready(eng, url, 15, poll_s=0.1) < 15
        assert eng.pgid == eng.pid and os.getpgid(eng.pid) == eng.pid and os.getsid(eng.pid) == eng.pid
        assert sup.failed_critical() is None and eng.alive() and helper.alive()
        codes = sup.stop_all()
    stops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopping ")]
    assert [m.split()[1] for m in stops] == ["helper", "engine"]  # reverse start order
    assert set(codes) == {"engine", "helper"} and not eng.alive() and not helper.alive()
    assert not group_alive(eng.pgid) and not group_alive(helper.pgid)
    assert helper.log_text().splitlines()[0].startswith("$ ") and "helper up" in helper.log_text()
    assert sup.stop_all() == codes  # idempotent


def test_failed_critical_names_the_critical_child_that_died(tmp_path):
    with Supervisor() as sup:
        sup.spawn("quitter", [sys.executable, "-c", "raise SystemExit(5)"], log_path=tmp_path / "q.log")  # not critical
        argv, _ = fake("crash", tmp_path)
        eng = sup.spawn("engine", argv, log_path=tmp_path / "engine.log", critical=True)
        assert eng.wait(15) == 3
        c = sup.failed_critical()
        assert c is eng
        err = EngineCrashed.of(c)
        assert err.exit_code == 3 and "engine exited with code 3" in str(err)
        assert "model not found (simulated)" in err.log_tail


def test_a_child_asked_to_stop_is_not_a_failure(tmp_path):
    with Supervisor() as sup:
        argv, url = fake("healthy", tmp_path)
        eng = sup.spawn("engine", argv, log_path=tmp_path / "engine.log", critical=True)
        wait_ready(eng, url, 15, poll_s=0.1)
        eng.stop()
        assert sup.failed_critical() is None


def test_wait_ready_reports_early_death_and_timeout(tmp_path):
    with Supervisor() as sup:
        argv, url = fake("crash", tmp_path)
        with pytest.raises(EngineDied) as ei:
            wait_ready(sup.spawn("e1", argv, log_path=tmp_path / "e1.log"), url, 60, poll_s=0.1)
        assert ei.value.exit_code == 3
        argv, url = fake("never", tmp_path)
        with pytest.raises(EngineStartTimeout, match="not healthy"):
            wait_ready(sup.spawn("e2", argv, log_path=tmp_path / "e2.log"), url, 1.0, poll_s=0.1)


def test_cpus_pin_the_child(tmp_path):
    cpu = min(os.sched_getaffinity(0))
    with Supervisor() as sup:
        c = sup.spawn("pinned", [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                      log_path=tmp_path / "p.log", cpus=[cpu])  # fmt: skip
        assert c.wait(15) == 0
        assert c.log_text().splitlines()[-1] == f"[{cpu}]"
        with pytest.raises(ValueError, match="cannot run on CPUs"):
            sup.spawn("nowhere", [sys.executable, "-c", "pass"], log_path=tmp_path / "n.log", cpus=[100_000])


def test_hurry_shortens_the_grace_period(tmp_path):
    with Supervisor(hurry_grace_s=0.5) as sup:
        argv, url = fake("stubborn", tmp_path)
        eng = sup.spawn("engine", argv, log_path=tmp_path / "engine.log", stop_timeout_s=60)
        wait_ready(eng, url, 15, poll_s=0.1)
        t = time.monotonic()
        sup.stop_all(hurry=True)
        assert time.monotonic() - t < 30  # not the 60 s stop timeout
        assert not group_alive(eng.pgid)


LAB_THAT_DIES = """
import sys, time
from engines.process import Supervisor
sup = Supervisor(guardian_grace_s=1.0)
c = sup.spawn("stubborn", sys.argv[1:], log_path=sys.argv[0] + ".log")
print(c.pid, sup.guardian_pid, flush=True)
time.sleep(600)
"""


def test_the_guardian_stops_every_group_when_the_lab_is_killed(tmp_path):
    # A "lab" whose child ignores SIGTERM and has two children of its own that do too: only the
    # guardian's SIGKILL of the whole group ends them once the lab is gone.
    argv, url = fake("children", tmp_path)
    script = tmp_path / "lab.py"
    script.write_text(LAB_THAT_DIES)
    lab = subprocess.Popen([sys.executable, str(script), *argv], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        child_pid, guardian_pid = (int(x) for x in lab.stdout.readline().split())
        deadline = time.monotonic() + 15
        while len(pids(tmp_path)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids(tmp_path)) == 3 and pid_alive(guardian_pid)
        lab.kill()
        lab.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(pid_alive(p) for p in [*pids(tmp_path), guardian_pid]):
            time.sleep(0.1)
        assert [p for p in [*pids(tmp_path), guardian_pid] if pid_alive(p)] == []
        assert not group_alive(child_pid)
    finally:
        lab.kill()
        for p in pids(tmp_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def test_the_guardian_ignores_sigint_and_exits_when_told(tmp_path):
    sup = Supervisor()
    sup.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "s.log")
    g = sup.guardian_pid
    assert g is not None
    time.sleep(0.5)  # let it install its handler
    os.kill(g, signal.SIGINT)
    time.sleep(0.3)
    assert pid_alive(g)
    sup.stop_all()
    deadline = time.monotonic() + 5
    while pid_alive(g) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(g)


@contextlib.contextmanager
def sigint_raises():
    """SIGINT as in an interactive Python, whatever this pytest inherited (a background shell ignores it)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def test_shielded_teardown_turns_signals_into_hurry_and_restores_handlers():
    sup = Supervisor(guardian=False)
    with sigint_raises():
        with shielded_teardown(sup) as shield:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # handlers run between bytecodes of the main thread
        assert shield.signals == [signal.SIGINT, signal.SIGTERM] and sup.hurrying
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cancel_on_signal_raises_once_then_only_hurries():
    sup = Supervisor(guardian=False)
    with sigint_raises():
        with cancel_on_signal(sup) as shield:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            assert not sup.hurrying
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        assert len(shield.signals) == 2 and sup.hurrying


def test_stop_all_never_raises_even_when_a_stop_fails(tmp_path, monkeypatch):
    with Supervisor() as sup:
        a = sup.spawn("a", [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "a.log")
        b = sup.spawn("b", [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "b.log")

        def broken(grace_s=None):
            raise OSError("simulated")

        monkeypatch.setattr(b, "stop", broken)
        codes = sup.stop_all()
        assert codes["b"] is None and not a.alive()
        monkeypatch.undo()
        b.stop()
