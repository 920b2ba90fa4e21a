"""A docker-launched engine's container is stopped and removed on every exit path (issue 25,
finding 5): teardown, Ctrl-C (the supervisor's hurried stop_all) and kill -9 of the lab (the
guardian). A fake `docker` on PATH records its calls; `docker run` just waits, as the client does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.base import HostFacts
from engines.process import Supervisor
from engines.tgi import TgiAdapter
from experiments.config import to_run_config
from tests.conftest import ROOT, compose

NAME = "servelab-tgi-4321"
FAKE = """#!/bin/sh
echo "$*" >> "$FAKE_DOCKER_LOG"
if [ "$1" = run ]; then exec sleep 300; fi
exit 0
"""


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE)
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "docker_calls.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_for(pred, timeout_s: float = 30.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def spawn_run(sup: Supervisor, tmp_path: Path):
    c = sup.spawn("tgi", ["docker", "run", "--rm", "--name", NAME, "img"], log_path=tmp_path / "engine.log",
                  stop_timeout_s=3, container=NAME)  # fmt: skip
    assert wait_for(lambda: calls(Path(os.environ["FAKE_DOCKER_LOG"])))  # the client is up
    return c


def test_teardown_stops_then_removes_the_container(fake_docker, tmp_path):
    sup = Supervisor()
    c = spawn_run(sup, tmp_path)
    c.stop()
    sup.stop_all()
    assert calls(fake_docker) == [f"run --rm --name {NAME} img", f"stop -t 3 {NAME}", f"rm -f {NAME}"]


def test_ctrl_c_teardown_stops_the_container(fake_docker, tmp_path):
    sup = Supervisor()
    spawn_run(sup, tmp_path)
    sup.stop_all(hurry=True)  # what a Ctrl-C during the run leads to
    assert calls(fake_docker)[1:] == [f"stop -t 1 {NAME}", f"rm -f {NAME}"]  # hurried: the short grace


def test_a_client_that_died_first_still_has_its_container_removed(fake_docker, tmp_path):
    sup = Supervisor()
    c = spawn_run(sup, tmp_path)
    os.killpg(c.pgid, signal.SIGKILL)  # the docker client is gone; the container would not be
    assert wait_for(lambda: c.poll() is not None)
    sup.stop_all()
    assert calls(fake_docker)[1:] == [f"stop -t 3 {NAME}", f"rm -f {NAME}"]


LAB = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from engines.process import Supervisor
sup = Supervisor(guardian_grace_s=2)
sup.spawn("tgi", ["docker", "run", "--rm", "--name", {NAME!r}, "img"], log_path=sys.argv[1], container={NAME!r})
print("ready", flush=True)
time.sleep(300)
"""


def test_kill_9_of_the_lab_leaves_the_guardian_to_remove_the_container(fake_docker, tmp_path):
    lab = subprocess.Popen([sys.executable, "-c", LAB, str(tmp_path / "engine.log")], stdout=subprocess.PIPE,
                           start_new_session=True)  # fmt: skip
    try:
        assert lab.stdout is not None and lab.stdout.readline().strip() == b"ready"
        assert wait_for(lambda: calls(fake_docker))
        lab.kill()
        lab.wait(timeout=10)
        assert wait_for(lambda: f"rm -f {NAME}" in calls(fake_docker), 30), calls(fake_docker)
        assert calls(fake_docker)[1:] == [f"stop -t 2 {NAME}", f"rm -f {NAME}"]
    finally:
        if lab.poll() is None:
            lab.kill()


def test_the_tgi_docker_plan_names_its_container():
    c = to_run_config(compose(["engine=tgi", "gpu=h100_sxm_80g", "engine.launcher=docker"]))
    plan = TgiAdapter(c.engine, c.model, c.quant, c.gpu).launch_plan(4321, HostFacts(engine_python=None))
    assert plan.container == NAME and NAME in plan.argv and plan.to_dict()["container"] == NAME
    native = to_run_config(compose(["engine=tgi", "gpu=h100_sxm_80g"]))
    assert TgiAdapter(native.engine, native.model, native.quant, native.gpu).launch_plan(
        4321, HostFacts(engine_python=None)).container is None
