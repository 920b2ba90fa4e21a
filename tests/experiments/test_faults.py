"""Faults against the whole lab, black-box: `run.py` (through tests/support/lab_with_fakes.py) runs
as a subprocess against tests/support/faulty_engine.py, and the test kills, interrupts or crashes
it. Every case checks that no process of the run's tree (engine and its server, samplers, Locust,
the guardian) is left alive, by the pids recorded while the run was going.

The lab is started in its own session with SIGINT/SIGTERM at their defaults, so the tests do not
depend on how pytest itself was started (a background shell starts children with SIGINT ignored).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.conftest import ROOT, SUPPORT

LAB = SUPPORT / "lab_with_fakes.py"


def _default_signals() -> None:  # runs in the lab's process before exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Lab:
    """One lab subprocess, with every process of its tree it has seen so far."""

    def __init__(self, tmp_path: Path, tok_dir: Path, *overrides: str, faulty: str = "", stop_s: float = 5) -> None:
        self.variant_dir = tmp_path / "run"
        self.dir = self.variant_dir / "launch-1"  # the one launch of the run (experiments.sweeps.resume layout)
        self.pidfile = tmp_path / "engine.pids"
        self.out_path = tmp_path / "lab.out"
        env = dict(os.environ, PYTHONUNBUFFERED="1", SERVELAB_FAULTY_STOP_S=str(stop_s),
                   SERVELAB_FAULTY_ARGS=f"--pidfile {self.pidfile} {faulty}")  # fmt: skip
        argv = [sys.executable, str(LAB), "engine.name=faulty", f"model.path={tok_dir}", "model.built_by=null",
                "workload.prompt_tokens=20", "workload.output_tokens=8", "workload.num_prompts=4", "traffic=constant",
                "traffic.points=[10]", "telemetry.interval_s=0.5", f"hydra.run.dir={self.variant_dir}",
                "report=false", *overrides]  # fmt: skip
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_default_signals)  # fmt: skip
        self.seen: dict[int, psutil.Process] = {}

    def snapshot(self) -> None:
        """Remember every process now in the lab's tree (and the engine's, from its pidfile)."""
        try:
            procs = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        if self.pidfile.exists():
            for pid in self.pidfile.read_text().split():
                try:
                    procs.append(psutil.Process(int(pid)))
                except psutil.NoSuchProcess:
                    pass
        for p in procs:
            self.seen.setdefault(p.pid, p)

    def cmdlines(self) -> list[str]:
        out = []
        for p in self.seen.values():
            try:
                out.append(" ".join(p.cmdline()))
            except psutil.Error:
                out.append("?")
        return out

    def wait_for(self, cond: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.snapshot()
            if cond():
                self.snapshot()
                return
            if self.proc.poll() is not None:
                pytest.fail(f"the lab exited ({self.proc.returncode}) before {what}:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}:\n{self.output()[-3000:]}")

    def records(self) -> list[dict]:
        recs = []
        for f in (self.dir / "work").glob("requests.0.jsonl*"):
            for line in f.read_text().splitlines():
                with_end = line.strip()
                if with_end:
                    try:
                        recs.append(json.loads(with_end))
                    except json.JSONDecodeError:
                        pass  # a line being written
        return recs

    def has_record(self, phase: str) -> bool:
        return any(r.get("phase") == phase and r.get("status") == "ok" for r in self.records())

    def send(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)  # like a terminal: the lab's whole foreground group

    def wait(self, timeout_s: float = 60) -> int:
        return self.proc.wait(timeout=timeout_s)

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def run_json(self) -> dict:
        return json.loads((self.dir / "run.json").read_text())

    def left_alive(self, within_s: float) -> list[str]:
        """Processes of the run still alive after up to `within_s` seconds (zombies count as dead)."""
        deadline = time.monotonic() + within_s
        while True:
            alive = []
            for p in self.seen.values():
                try:
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{p.pid} {' '.join(p.cmdline())}")
                except psutil.NoSuchProcess:
                    pass
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for p in self.seen.values():
            try:
                p.kill()
            except psutil.Error:
                pass


@pytest.fixture
def lab(tmp_path, tiny_tokenizer_dir):
    labs: list[Lab] = []

    def start(*overrides: str, **kw) -> Lab:
        labs.append(Lab(tmp_path, tiny_tokenizer_dir, *overrides, **kw))
        return labs[-1]

    yield start
    for lb in labs:  # whatever a failed assertion left behind
        lb.kill()


def test_kill_9_of_the_lab_leaves_no_process_of_the_run(lab):
    # The engine ignores SIGTERM, so the guardian's SIGKILL is what ends it; two Locust workers.
    lb = lab("traffic.warmup_s=0.5", "traffic.duration_s=60", "traffic.workers=2", faulty="--ignore-sigterm")
    lb.wait_for(lambda: lb.has_record("measure"), "records of the measure phase")
    cmds = lb.cmdlines()
    for part in ("guardian.py", "faulty_engine.py", "timing_server.py", "experiments.telemetry cpu",
                 "experiments.telemetry metrics", "--role master", "--role worker"):  # fmt: skip
        assert any(part in c for c in cmds), f"{part} not among the run's processes: {cmds}"
    assert sum("--role worker" in c for c in cmds) == 2
    os.kill(lb.proc.pid, signal.SIGKILL)  # the lab only: its children are in their own sessions
    assert lb.wait() == -signal.SIGKILL
    assert lb.left_alive(within_s=10) == []


PHASES = {
    # phase: (lab overrides, faulty-engine options, when to send the signal)
    "engine start": ((), "--ready-delay-s 60", lambda lb: lb.pidfile.exists()),
    "warmup": (("traffic.warmup_s=30", "traffic.duration_s=5"), "", lambda lb: lb.has_record("warmup")),
    "measure": (("traffic.warmup_s=0.5", "traffic.duration_s=30"), "", lambda lb: lb.has_record("measure")),
}


@pytest.mark.parametrize(("phase", "sig"), [("engine start", signal.SIGINT), ("warmup", signal.SIGTERM),
                                            ("measure", signal.SIGINT), ("measure", signal.SIGTERM)])  # fmt: skip
def test_a_signal_cancels_the_run_keeps_the_records_and_leaves_no_child(lab, phase, sig):
    overrides, faulty, ready = PHASES[phase]
    lb = lab(*overrides, faulty=faulty)
    lb.wait_for(lambda: ready(lb), phase)
    lb.send(sig)
    assert lb.wait() == 130, lb.output()[-3000:]
    s = lb.run_json()
    assert s["status"] == "cancelled", s["failure"]
    assert "Traceback" not in lb.output()
    assert lb.left_alive(within_s=5) == []
    req = pd.read_parquet(lb.dir / "requests.parquet")
    if phase == "engine start":
        assert s["load_points"] == [] and req.empty
    else:
        assert (req[req["phase"] == phase]["status"] == "ok").sum() > 0  # what was received is kept
        assert s["load_points"][0]["interrupted"] is True


def test_a_signal_during_teardown_hurries_it_and_cancels(lab):
    # The engine ignores SIGTERM for its 30 s stop timeout: the signal cuts that to the hurry grace.
    lb = lab("traffic.warmup_s=0.5", "traffic.duration_s=1.5", faulty="--ignore-sigterm", stop_s=30)
    lb.wait_for(lambda: "stopping faulty" in lb.output(), "the engine's teardown")
    t = time.monotonic()
    lb.send(signal.SIGINT)
    assert lb.wait() == 130, lb.output()[-3000:]
    assert time.monotonic() - t < 25  # not the 30 s stop timeout
    s = lb.run_json()
    assert s["status"] == "cancelled" and "Traceback" not in lb.output()
    assert (pd.read_parquet(lb.dir / "requests.parquet")["status"] == "ok").sum() > 0
    assert s["load_points"][0]["interrupted"] is False  # the point itself had finished
    assert lb.left_alive(within_s=5) == []


def test_a_second_and_third_signal_during_teardown_end_cancelled_without_traceback(lab):
    lb = lab("traffic.warmup_s=0.5", "traffic.duration_s=30", faulty="--ignore-sigterm", stop_s=30)
    lb.wait_for(lambda: lb.has_record("measure"), "records of the measure phase")
    lb.send(signal.SIGTERM)
    lb.wait_for(lambda: "stopping faulty" in lb.output(), "the engine's teardown")
    lb.send(signal.SIGTERM)
    time.sleep(0.2)
    lb.send(signal.SIGINT)
    assert lb.wait() == 130, lb.output()[-3000:]
    s = lb.run_json()
    assert s["status"] == "cancelled" and s["finished_at_utc"] is not None
    assert "Traceback" not in lb.output(), lb.output()[-3000:]
    assert (pd.read_parquet(lb.dir / "requests.parquet")["phase"] == "measure").any()
    assert lb.left_alive(within_s=5) == []


def test_an_engine_crash_mid_point_stops_it_and_fails_the_run_with_code_and_log(lab, tmp_path):
    marker = tmp_path / "crashed_at_ns"
    lb = lab("traffic.warmup_s=0.5", "traffic.duration_s=60",
             faulty=f"--crash-after-requests 15 --exit-code 7 --crash-marker {marker}")  # fmt: skip
    lb.wait_for(lambda: lb.has_record("measure"), "records of the measure phase")
    assert lb.wait(timeout_s=60) == 1, lb.output()[-3000:]
    s = lb.run_json()
    assert s["status"] == "failed" and "faulty exited with code 7 during the run" in s["failure"]["reason"]
    assert "engine core died after" in s["failure"]["log_tail"]
    assert s["engine"]["exit_code"] == 7
    req = pd.read_parquet(lb.dir / "requests.parquet")
    ok = req[req["status"] == "ok"]
    assert len(ok) >= 10  # the records up to the crash are kept
    crashed_ns = int(marker.read_text())
    assert (ok["t_done_ns"] <= crashed_ns).all()
    # Noticed within a second or two: nothing was sent later than that (60 s were planned).
    last_sent_ns = int(req["t_sent_ns"].dropna().max())
    assert (last_sent_ns - crashed_ns) / 1e9 < 3.0
    assert lb.left_alive(within_s=5) == []


def test_a_signal_stops_a_whole_sweep_not_just_its_current_job(tiny_tokenizer_dir, tmp_path):
    """`run.py -m` runs jobs one after another in one process: Ctrl-C / SIGTERM in job 0 cancels it
    and ends the sweep (exit 130); job 1 never starts an engine."""
    sweep = tmp_path / "sweep"
    lb = Lab(tmp_path, tiny_tokenizer_dir, "hydra.mode=MULTIRUN", "traffic.duration_s=30,31", f"hydra.sweep.dir={sweep}",
             "hydra.sweep.subdir=${hydra.job.num}")  # fmt: skip
    first = sweep / "0" / "launch-1" / "work" / "requests.0.jsonl"

    def job0_has_a_record() -> bool:
        return first.exists() and '"status":"ok"' in first.read_text()

    lb.wait_for(job0_has_a_record, "a record of the sweep's first job")
    lb.send(signal.SIGTERM)
    try:
        assert lb.wait(timeout_s=60) == 130, lb.output()[-3000:]
    finally:
        lb.kill()
    assert json.loads((sweep / "0" / "launch-1" / "run.json").read_text())["status"] == "cancelled"
    assert not (sweep / "1").exists()
