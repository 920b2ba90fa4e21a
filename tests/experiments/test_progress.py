"""experiments.progress: plain lines for a scripted run, the rich display, ETA arithmetic, mode choice.

A fake clock drives every reporter (ticker=False: the tests call tick()), so nothing sleeps.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

import pytest
from omegaconf import OmegaConf

from experiments import progress as pg
from experiments.progress import (
    ENV_VAR,
    NullProgress,
    PlainProgress,
    RichProgress,
    SweepPosition,
    fmt_duration,
    make_progress,
    resolve_mode,
    sweep_position,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0  # any origin: only differences matter

    def __call__(self) -> float:
        return self.t

    def at(self, s: float) -> None:
        self.t = 1000.0 + s


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        out = [r.getMessage() for r in self.records]
        self.records.clear()
        return out


@pytest.fixture
def lines():
    lg = logging.getLogger("test.progress.plain")
    lg.propagate, lg.level = False, logging.INFO
    h = Lines()
    lg.addHandler(h)
    yield lg, h
    lg.removeHandler(h)


def plan(p, *, job=(1, 4)):
    p.sweep(*job)
    p.job("vllm/awq", 5, warmup_s=5, duration_s=30, cooldown_s=0, repetition=0, repetitions=2)


def test_plain_lines_for_a_scripted_run(lines):
    lg, h = lines
    clk = Clock()
    p = PlainProgress(clock=clk, history={}, logger=lg, ticker=False, interval_s=10)
    clk.at(0)
    plan(p)
    # no engine seen yet: 60 s guessed; 5 points x 35 s; 2 more jobs like this one
    assert h.take() == ["progress: job 2/4 vllm/awq 5 point(s) x 35 s planned, ETA job 3m55s sweep 11m45s"]
    p.engine_starting("vllm", 600)
    assert h.take() == [
        "progress: job 2/4 vllm/awq engine vllm starting (ready timeout 600 s), ETA job 3m55s sweep 11m45s"
    ]
    clk.at(5)
    p.tick()
    assert h.take() == []  # same phase, not due yet
    clk.at(10)
    p.tick()
    assert h.take() == ["progress: job 2/4 vllm/awq engine starting 10/600 s, ETA job 3m45s sweep 11m35s"]
    clk.at(42)
    p.engine_ready(42.0)
    # the measured 42 s now stands for the other jobs' engine starts
    assert h.take() == ["progress: job 2/4 vllm/awq engine ready after 42.0 s, ETA job 2m55s sweep 10m09s"]
    p.point_started(2, 5, "poisson 4")
    assert h.take() == [
        "progress: job 2/4 vllm/awq point 3/5 poisson 4 (rep 1/2) warmup 0/5 s, ETA job 1m45s sweep 8m59s"
    ]
    clk.at(46)
    p.tick()
    assert h.take() == []  # a 5 s warmup gets its line at the start only
    clk.at(47)
    p.tick()
    assert h.take() == [
        "progress: job 2/4 vllm/awq point 3/5 poisson 4 (rep 1/2) measure 0/30 s, ETA job 1m40s sweep 8m54s"
    ]
    clk.at(56)
    p.tick()
    assert h.take() == []
    clk.at(59)
    p.tick()
    assert h.take() == [
        "progress: job 2/4 vllm/awq point 3/5 poisson 4 (rep 1/2) measure 12/30 s, ETA job 1m28s sweep 8m42s"
    ]
    clk.at(77)
    p.tick()
    assert h.take() == [
        "progress: job 2/4 vllm/awq point 3/5 poisson 4 (rep 1/2) finishing (+0 s past the planned end), "
        "ETA job 1m10s sweep 8m24s"
    ]
    clk.at(80)
    p.point_finished("ok 10/10")
    # 3 s past the plan: that overhead is added to each remaining point from now on
    assert h.take() == [
        "progress: job 2/4 vllm/awq point 3/5 poisson 4 (rep 1/2) done in 38 s: ok 10/10, ETA job 1m16s sweep 9m00s"
    ]
    clk.at(200)
    p.tick()
    assert h.take() == []  # between points: the "done" line said it all, no periodic lines
    p.close()
    p.close()  # idempotent


def test_plain_engine_failure_is_a_warning(lines):
    lg, h = lines
    clk = Clock()
    p = PlainProgress(clock=clk, history={}, logger=lg, ticker=False)
    plan(p, job=(0, 1))
    p.engine_starting("sglang", 900)
    clk.at(12)
    h.take()
    p.engine_failed("sglang exited with code 1")
    (rec,) = h.records
    assert rec.levelno == logging.WARNING
    assert rec.getMessage() == (
        "progress: job 1/1 vllm/awq engine failed after 12 s: sglang exited with code 1, ETA job 0s sweep 0s"
    )


def test_plain_ticker_thread_reports_phase_changes(lines):
    # The one test with the real thread: a phase change is logged without any call from the caller.
    lg, h = lines
    clk = Clock()
    p = PlainProgress(clock=clk, history={}, logger=lg, tick_s=0.01)
    p.point_started(0, 1, "", warmup_s=1, duration_s=10)
    clk.at(2)
    for _ in range(500):  # up to 5 s of a 10 ms ticker
        if any("measure" in line for line in (r.getMessage() for r in list(h.records))):
            break
        p._stop.wait(0.01)
    p.close()
    assert any("measure 1/10 s" in r.getMessage() for r in h.records)
    assert p._ticker is not None and not p._ticker.is_alive()


def test_eta_arithmetic_for_a_known_plan():
    clk = Clock()
    hist: dict[str, float] = {}
    p = NullProgress(clock=clk, history=hist)
    assert p.eta() == pg.Eta(None, None)  # no plan, no ETA
    p.sweep(0, 3)
    p.job("tgi/none", 4, warmup_s=10, duration_s=50, cooldown_s=20)  # 80 s a point
    p.engine_starting("tgi", 900, estimate_s=100)
    clk.at(30)
    assert p.eta() == pg.Eta(70 + 4 * 80, 70 + 4 * 80 + 2 * (100 + 4 * 80))
    clk.at(150)  # slower than estimated: the engine part does not go negative
    assert p.eta().job_s == 4 * 80
    p.engine_ready(150)
    assert hist == {"tgi": 150}
    p.point_started(0, 4)
    clk.at(150 + 25)  # 25 s into point 1 of 4
    assert p.phase() == pg.Phase("measure", 15, 50)
    assert p.eta() == pg.Eta(55 + 3 * 80, 55 + 3 * 80 + 2 * (150 + 4 * 80))
    clk.at(150 + 90)
    assert p.phase() == pg.Phase("finishing", 10, None)
    p.point_finished()  # 90 s for a planned 80: 10 s overhead per point from now on
    assert p.eta() == pg.Eta(3 * 90, 3 * 90 + 2 * (150 + 4 * 90))
    # a later job in the same process takes this engine's measured start as its estimate
    q = NullProgress(clock=clk, history=hist)
    q.job("tgi/none", 1, warmup_s=0, duration_s=10)
    q.engine_starting("tgi", 900)
    assert q.eta().job_s == 150 + 10
    assert q.eta().sweep_s is None  # no sweep position given


def test_eta_not_given_for_a_parallel_sweep():
    p = NullProgress(clock=Clock(), history={})
    p.sweep(2, 8, sequential=False)  # e.g. submitit: the other jobs run elsewhere at the same time
    p.job("vllm/none", 1, warmup_s=0, duration_s=10)
    assert p.eta().sweep_s is None and p.eta().job_s == 60 + 10


def test_phases_skip_zero_length_ones():
    clk = Clock()
    p = NullProgress(clock=clk, history={})
    p.point_started(0, 2, warmup_s=0, duration_s=30, cooldown_s=5)
    assert p.phase().name == "measure"
    clk.at(31)
    assert p.phase() == pg.Phase("cooldown", 1, 5)


def test_fmt_duration():
    assert [fmt_duration(s) for s in (0, 0.4, 42, 100, 370, 3599, 3600, 7500)] == [
        "0s", "1s", "42s", "1m40s", "6m10s", "59m59s", "1h00m", "2h05m",
    ]  # fmt: skip


def _rich(clk, **kw):
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system=None)
    return RichProgress(clock=clk, history={}, console=console, ticker=False, **kw), buf


def test_rich_renders_the_key_text():
    clk = Clock()
    p, buf = _rich(clk)
    out0, err0 = sys.stdout, sys.stderr
    plan(p)
    p.engine_starting("vllm", 600)
    clk.at(20)
    p.tick()
    p.engine_ready(20)
    p.point_started(2, 5, "poisson 4")
    clk.at(37)
    p.tick()
    p.point_finished("ok 10/10, TTFT p50 41.2 ms")
    p.close()
    text = buf.getvalue()
    for key in ("job 2/4", "vllm/awq", "starting 20/600 s", "ready", "point 3/5 poisson 4 (rep 1/2)",
                "measure 12/30 s", "warmup > measure", "ETA job", "sweep", "TTFT p50 41.2 ms"):  # fmt: skip
        assert key in text, key
    assert (sys.stdout, sys.stderr) == (out0, err0)  # Live's redirection undone


def test_rich_keeps_log_lines_and_restores_handlers():
    clk = Clock()
    p, buf = _rich(clk)
    lg = logging.getLogger("test.progress.rich")
    lg.propagate, lg.level = False, logging.INFO
    # As Hydra's console handler: a plain StreamHandler holding the terminal stream object itself.
    h = logging.StreamHandler(p.console.file)
    lg.addHandler(h)
    try:
        p.engine_starting("vllm", 600)
        from rich.file_proxy import FileProxy

        assert isinstance(h.stream, FileProxy)  # printed above the display, not through it
        lg.info("[12:00:00] load point 0: ok 10/10")
        p.close()
        assert h.stream is buf
        assert "[12:00:00] load point 0: ok 10/10" in buf.getvalue()
    finally:
        lg.removeHandler(h)


class _Broken(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError("terminal gone")

    def isatty(self) -> bool:
        return True


def test_a_broken_terminal_never_raises():
    from rich.console import Console

    out0, err0 = sys.stdout, sys.stderr
    p = RichProgress(
        clock=Clock(), history={}, console=Console(file=_Broken(), force_terminal=True), ticker=False
    )
    plan(p)
    p.engine_starting("vllm", 600)
    p.point_started(0, 5)
    p.tick()
    p.point_finished()
    p.close()
    assert p._broken
    assert (sys.stdout, sys.stderr) == (out0, err0)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_mode_picks_plain_off_a_terminal(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert resolve_mode("auto", io.StringIO()) == "plain"
    assert isinstance(make_progress(stream=io.StringIO(), ticker=False), PlainProgress)
    assert resolve_mode("auto", _Tty()) == "rich"
    monkeypatch.setenv("TERM", "dumb")
    assert resolve_mode("auto", _Tty()) == "plain"


def test_env_var_forces_a_mode(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv(ENV_VAR, "plain")
    assert resolve_mode("auto", _Tty()) == "plain"
    monkeypatch.setenv(ENV_VAR, "off")
    assert type(make_progress(stream=_Tty())) is NullProgress
    assert resolve_mode("rich", _Tty()) == "rich"  # an explicit mode wins over the variable
    monkeypatch.setenv(ENV_VAR, "fancy")
    assert resolve_mode("auto", io.StringIO()) == "plain"  # unknown value: warned, then automatic
    assert isinstance(make_progress("nonsense", stream=_Tty(), ticker=False), PlainProgress)


def _multirun_yaml(
    tmp_path, task, params=None, sweeper="hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
):
    OmegaConf.save(
        {"hydra": {"sweeper": {"_target_": sweeper, "params": params}, "overrides": {"task": task}}},
        tmp_path / "multirun.yaml",
    )


def _hc(tmp_path, mode="MULTIRUN", num=3, launcher="hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        batch=None):  # fmt: skip
    return OmegaConf.create({
        "mode": mode, "job": {"num": num}, "sweep": {"dir": str(tmp_path)}, "launcher": {"_target_": launcher},
        "sweeper": {"max_batch_size": batch},
    })  # fmt: skip


def test_sweep_position_counts_jobs_like_the_basic_sweeper(tmp_path):
    _multirun_yaml(
        tmp_path, ["engine=vllm,sglang", "traffic.points=[2],[4],[8]", "gpu=cpu"], {"repetition": "0,1"}
    )
    assert sweep_position(_hc(tmp_path)) == SweepPosition(3, 12, True)
    assert sweep_position(_hc(tmp_path, mode="RUN")) is None
    sub = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert sweep_position(_hc(tmp_path, launcher=sub)) == SweepPosition(3, 12, False)
    local = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert sweep_position(_hc(tmp_path, launcher=local, batch=1)) == SweepPosition(3, 12, True)  # one at a time
    _multirun_yaml(tmp_path, ["engine=vllm,sglang"], sweeper="hydra_plugins.optuna.OptunaSweeper")
    assert sweep_position(_hc(tmp_path)) == SweepPosition(3, None, True)  # another sweeper: count unknown
    (tmp_path / "multirun.yaml").unlink()
    assert sweep_position(_hc(tmp_path)) == SweepPosition(3, None, True)


def test_hydra_sweep_position_inside_a_real_multirun(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent("""
        import hydra
        from experiments.progress import hydra_sweep_position

        @hydra.main(config_path=None, version_base="1.3")
        def main(cfg):
            print("POS", hydra_sweep_position())

        main()
    """)
    )
    from tests.conftest import ROOT

    r = subprocess.run(
        [sys.executable, str(app), "-m", "+a=1,2", "+b=x,y,z", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    pos = [line for line in r.stdout.splitlines() if line.startswith("POS")]
    assert pos[0] == "POS SweepPosition(job_index=0, job_count=6, sequential=True)"
    assert pos[-1] == "POS SweepPosition(job_index=5, job_count=6, sequential=True)"
