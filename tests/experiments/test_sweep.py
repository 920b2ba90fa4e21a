"""Sweeps through the whole lab (`run.py -m` via tests/support/lab_with_fakes.py, the timing server
as the engine): one launch per variant, resume after kill -9 and Ctrl-C without redoing or
half-keeping points, failed variants recorded while the sweep goes on, repetitions, and the
decision at the end. Plus the pure parts: the sweeper's job plan and the schedule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from experiments.sweeps.plan import plan_overrides
from experiments.sweeps.resume import History, scan
from experiments.sweeps.schedule import Schedule
from tests.conftest import ROOT, SUPPORT, compose

LAB = SUPPORT / "lab_with_fakes.py"


def base(tok: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, str(LAB), "-m", "engine.name=timing", f"model.path={tok}", "model.built_by=null",
            "workload.prompt_tokens=20", "workload.output_tokens=8", "workload.num_prompts=4", "traffic=constant",
            "traffic.duration_s=1", "traffic.warmup_s=0.3", "telemetry.interval_s=0.5", f"results_dir={results}",
            "experiment_name=sw", *extra]  # fmt: skip


def no_report(argv: list[str]) -> list[str]:
    return [*argv, "report=false"]  # the reports have their own tests; these check the sweep machinery


def lab(argv: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def variants(results: Path) -> dict[str, Path]:
    # every folder of the sweep but exports/ (the experiment report's, analysis.report)
    return {p.name: p for p in sorted((results / "sw").iterdir()) if p.is_dir() and p.name != "exports"}


def runs_of(variant_dir: Path) -> list[dict]:
    return [json.loads((d / "run.json").read_text()) for d in sorted(variant_dir.glob("launch-*"))]


def points_of(variant_dir: Path) -> list[tuple[float, int]]:
    """(load_value, repetition) of every finished point over all launches."""
    return sorted((p["load_value"], p["repetition"]) for s in runs_of(variant_dir) for p in s["load_points"]
                  if not p["interrupted"] and not p["aborted"])  # fmt: skip


def chose_or_all_invalid(d: dict) -> bool:
    """The sweep's decision chose a variant, or every point it had was invalid: on a busy machine
    (the suite runs these beside other tests) the generator's self-check may invalidate points,
    and then choosing nothing is the right answer; the selection rules have exact tests elsewhere."""
    return d["selection"]["chosen"] is not None or all(p.get("verdict") == "invalid" for p in d["points"])


def starts(out: str) -> int:
    return sum("started timing (pid" in ln for ln in out.splitlines())


# -- pure ----------------------------------------------------------------------------------------
def _plan(*args: str) -> list[str]:
    return plan_overrides(OverridesParser.create().parse_overrides(list(args)))[0]


def test_sweeper_folds_point_sweeps_into_one_job_per_variant():
    assert _plan("traffic.points=[1],[2],[4]", "quant=none,awq") == ["quant=none,awq", "traffic.points=[1,2,4]"]
    assert _plan("repetition=0,1,2", "engine.max_num_seqs=4,8") == [
        "engine.max_num_seqs=4,8", "repetition=0", "repetitions=3"]  # fmt: skip
    # launch-level keys outermost, whatever the order given, so a variant's jobs are adjacent
    assert _plan("traffic.duration_s=10,20", "quant=none,awq")[0] == "quant=none,awq"
    _, notes = plan_overrides(OverridesParser.create().parse_overrides(["traffic.duration_s=10,20"]))
    assert "launches the engine again" in notes[0]


def test_schedule_interleaves_repetitions_and_skips_what_is_done():
    real = compose(["traffic.points=[1,2]", "repetitions=2"])
    from experiments.config import to_run_config

    cfg = to_run_config(real)
    s = Schedule(cfg)
    order = []
    while (nxt := s.next()) is not None:
        order.append(nxt)
        s.observe(*nxt, feasible=True)
    assert order == [(1.0, 0), (2.0, 0), (1.0, 1), (2.0, 1)]  # rep 0 of every point first
    # (2, rep 0) done by an earlier launch: skipped, and recorded as skipped
    from experiments.sweeps.resume import DonePoint

    h = History()
    pid = s.point_id(2.0)
    h.done[(pid, 0)] = DonePoint(pid, 0, 2.0, "r1", True)
    s2 = Schedule(cfg, h)
    got = []
    while (nxt := s2.next()) is not None:
        got.append(nxt)
        s2.observe(*nxt, feasible=True)
    assert got == [(1.0, 0), (1.0, 1), (2.0, 1)]
    assert s2.state()["skipped_done"][0]["run_id"] == "r1"
    # resume=false: measured again, as repetitions after the recorded ones
    cfg.resume = False
    s3 = Schedule(cfg, h)
    assert s3.reps == [1, 2]


def _knee_oracle(knee: float):
    """feasible(load) and p_feasible(load) near `knee`: uncertain within a few % of it."""
    import math

    def check(load: float) -> tuple[bool, float]:
        p = 1 / (1 + math.exp(-(knee - load) / (0.02 * knee)))
        return p >= 0.5, round(p, 4)

    return check


def _drive(s: Schedule, check) -> list[tuple[float, int]]:
    order = []
    while (nxt := s.next()) is not None:
        order.append(nxt)
        ok, p = check(nxt[0])
        s.observe(*nxt, feasible=ok, p_feasible=p)
        assert len(order) <= 30
    return order


def test_a_load_measured_again_in_one_launch_is_a_new_repetition():
    """docs/identity.md: (variant_id, point_id, repetition) names one measurement. Before, a load the
    knee search measured four times in one launch was recorded four times as repetition 0."""
    from experiments.config import to_run_config
    from experiments.sweeps.resume import DonePoint

    # a value listed twice in the grid: its next repetition, also across repetitions
    s = Schedule(to_run_config(compose(["traffic.points=[1,2,1]", "repetitions=2"])))
    assert _drive(s, lambda v: (True, None)) == [(1.0, 0), (2.0, 0), (1.0, 1), (1.0, 2), (2.0, 1), (1.0, 3)]
    # the knee search re-measures an uncertain end of its final bracket: a new repetition of that load
    cfg = to_run_config(compose(["search=knee", "traffic=constant", "traffic.points=[1,64]", "repetitions=2"]))
    check = _knee_oracle(15.7)
    s = Schedule(cfg)
    order = _drive(s, check)
    pids = [(s.point_id(v), r) for v, r in order]
    assert len(set(pids)) == len(pids), order  # every measurement its own identity
    st = s.state()["knee_search"]
    again = [p["load"] for p in st["pooled"] if p["measurements"] > 1]
    assert again and st["remeasures"] >= 1
    search_reps = [r for v, r in order[: st["points_used"]] if v == again[0]]
    assert search_reps[:2] == [0, 1]  # measured again by the search: repetition 1, not 0 again
    # with repetitions=2 the final bracket is measured once more each: after the search's own repetitions
    extra = order[st["points_used"]:]
    assert [v for v, _ in extra] == [x for x in st["bracket"]] and all(r >= 1 for _, r in extra)
    assert max(r for v, r in extra if v == again[0]) == max(search_reps) + 1
    assert st["status"] == "converged" and abs(st["knee"] - 15.7) / 15.7 <= 0.05
    # a resumed launch finds each recorded measurement under its own repetition and measures nothing
    h = History()
    for v, r in order:
        ok, p = check(v)
        h.done[(s.point_id(v), r)] = DonePoint(s.point_id(v), r, v, "v-1", ok, p)
    again_s = Schedule(cfg, h)
    assert again_s.next() is None and len(again_s.skipped) == len(order)
    assert again_s.state()["knee_search"]["pooled"] == st["pooled"]
    # cut half-way: the rest is measured under the same repetitions it would have had, none reused
    half = dict(list(h.done.items())[: len(order) // 2])
    rest = Schedule(cfg, History(done=half))
    assert _drive(rest, check) == order[len(order) // 2:]
    # one recorded without its feasibility cannot be replayed: passed over, never measured again as itself
    first = order[0]
    h1 = History(done={(s.point_id(first[0]), 0): DonePoint(s.point_id(first[0]), 0, first[0], "v-1", None)})
    assert Schedule(cfg, h1).next() == (first[0], 1)


def test_a_halved_search_stays_halved_on_resume_unless_halving_is_off_or_resume_is():
    """economy.halving stopped a variant's knee search in an earlier launch (run.json resume.halving):
    the same sweep again launches nothing for it; halving off or resume=false searches on."""
    from experiments.config import to_run_config

    knee = ["search=knee", "traffic=constant", "traffic.points=[1,64]"]
    halted = {"reason": "cannot win: at least $2/1M", "stopped": True, "launch": "launch-1"}
    on = to_run_config(compose([*knee, "economy.halving=true"]))
    s = Schedule(on, History(halted=halted))
    assert s.next() is None and s.state()["halving"]["reason"] == halted["reason"]
    for other in (["economy.halving=false"], ["economy.halving=true", "resume=false"]):
        assert Schedule(to_run_config(compose([*knee, *other])), History(halted=halted)).next() is not None
    assert Schedule(on, History()).next() is not None  # nothing recorded: it searches


def test_scan_reads_the_halt_of_the_latest_usable_launch_only(tmp_path):
    v = tmp_path / "variant"
    for n, halving in ((1, {"reason": "cannot win", "stopped": True}), (2, None)):
        d = v / f"launch-{n}"
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"schema_version": 2, "variant_id": "x", "status": "ok", "run_id": f"x-{n}",
                                                "resume": {"halving": halving} if halving else {}}))  # fmt: skip
        h = scan(v, "x")
        assert h.halted == ({"reason": "cannot win", "stopped": True, "launch": "launch-1"} if n == 1 else None)


# -- through run.py ------------------------------------------------------------------------------
def test_two_variants_three_points_launch_twice_then_resume_launches_nothing(tiny_tokenizer_dir, tmp_path):
    # the loads are given as a sweep ([8],[16],[24]) and *after* the variant key: still one launch each
    argv = base(tiny_tokenizer_dir, tmp_path, "traffic.points=[8],[16],[24]", "engine.max_num_seqs=4,8")
    p = lab(argv)
    assert p.returncode == 0, p.stderr[-3000:]
    assert starts(p.stderr) == 2, p.stderr[-3000:]
    vs = variants(tmp_path)
    assert len(vs) == 2
    for v in vs.values():
        (s,) = runs_of(v)  # one launch folder per variant
        assert s["status"] == "ok" and s["launch"] == 1
        assert points_of(v) == [(8.0, 0), (16.0, 0), (24.0, 0)]
        assert json.loads((v / "variant.json").read_text())["status"] == "ok"
        assert (v / "launch-1" / "requests.parquet").is_file() and not (v / "launch-1" / "points").exists()
    sweep = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [j["status"] for j in sweep["jobs"]] == ["ok", "ok"] and sweep["decision"]["exit_code"] == 0
    d = json.loads((tmp_path / "sw" / "decision.json").read_text())
    assert chose_or_all_invalid(d), d["selection"]
    # SQL over the sweep's files, and the two variants side by side (experiments.store)
    from experiments import store

    n = store.query(tmp_path / "sw", "SELECT r.variant_id, count(DISTINCT q.point_id) AS points, count(*) AS requests "
                                     "FROM requests q JOIN runs r USING (run_id, variant_id) GROUP BY 1")  # fmt: skip
    assert sorted(n["points"]) == [3, 3] and (n["requests"] > 0).all()
    ids = sorted(n["variant_id"])
    cmp = store.compare(tmp_path / "sw", f"variant:{ids[0]}", f"variant:{ids[1]}")
    assert sorted(set(cmp["load_value"])) == [8.0, 16.0, 24.0] and {"delta", "overlap"} <= set(cmp.columns)
    assert sweep["report"]["exit_code"] == 0 and (tmp_path / "sw" / "report.html").is_file()  # then the report
    # the same command again: everything is done, no engine starts, no new launch folder
    again = lab(no_report(argv))
    assert again.returncode == 0, again.stderr[-3000:]
    assert starts(again.stderr) == 0 and "nothing to launch" in again.stderr
    assert all(len(runs_of(v)) == 1 for v in variants(tmp_path).values())


def test_failed_variants_are_recorded_the_sweep_goes_on_and_repetitions_share_a_launch(tiny_tokenizer_dir, tmp_path):
    # [--bogus]: the "engine" exits at start; [--port,1]: preflight refuses it (the lab sets --port); [] runs
    # repetition=0,1 is folded into repetitions=2: the ok variant measures its point twice in one launch
    argv = no_report(base(tiny_tokenizer_dir, tmp_path, "traffic.points=[8]", "repetition=0,1",
                          "engine.extra_args=[--bogus],[--port,1],[]"))  # fmt: skip
    p = lab(argv)
    assert p.returncode == 0, p.stderr[-3000:]
    sweep = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    status = sorted(j["status"] for j in sweep["jobs"])
    assert status == ["failed", "ok", "refused"], sweep["jobs"]
    failed = next(j for j in sweep["jobs"] if j["status"] == "failed")
    assert "exited with code 2 before becoming healthy" in failed["reason"]
    refused = next(j for j in sweep["jobs"] if j["status"] == "refused")
    assert "engine.extra_args sets --port" in refused["reason"]
    assert "servelab sweep: 3 variant job(s)" in p.stderr and "refused" in p.stderr  # the table
    ok = next(v for v in variants(tmp_path).values() if json.loads((v / "variant.json").read_text())["status"] == "ok")
    (s,) = runs_of(ok)
    assert [(q["load_value"], q["repetition"]) for q in s["load_points"]] == [(8.0, 0), (8.0, 1)]
    d = json.loads((tmp_path / "sw" / "decision.json").read_text())
    assert sorted((r["load_value"], r["repetition"]) for r in d["points"]) == [(8.0, 0), (8.0, 1)]  # pooled there
    # again: the failed variant is skipped with its reason (no new launch) unless retry_failed=true
    again = lab(argv)
    assert starts(again.stderr) == 0
    fv = next(v for v in variants(tmp_path).values() if json.loads((v / "variant.json").read_text())["status"] == "failed")
    assert len(runs_of(fv)) == 1
    retry = lab([*argv, "retry_failed=true"])
    assert starts(retry.stderr) == 1 and len(runs_of(fv)) == 2  # only the failed one is launched again


def _lab_proc(argv: list[str], out: Path) -> subprocess.Popen:
    def default_signals() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    with open(out, "wb") as f:
        return subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=default_signals)  # fmt: skip


def _wait_for(cond, proc: subprocess.Popen, out: Path, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"the lab exited ({proc.returncode}) before {what}:\n{out.read_text()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n{out.read_text()[-3000:]}")


def test_the_sweeps_decision_takes_every_override_its_runs_were_given(tiny_tokenizer_dir, tmp_path):
    # was: the sweep decided in a child process fed with pricing=<name> and a fixed list of quality keys,
    # so pricing.usd_per_hour, quality.require and quality.n_boot never reached its decision
    argv = no_report(base(tiny_tokenizer_dir, tmp_path, "traffic.points=[8]", "quant=none,fp16", "pricing.usd_per_hour=2.5",
                          "quality=gate", "quality.require=true", "quality.n_boot=200", "quality.num_prompts=6",
                          "quality.num_tasks=2", "quality.max_new_tokens=4"))  # fmt: skip
    p = lab(argv)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "analysis.decide" not in p.stderr  # decided in the sweep's own process
    sweep = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert sweep["decision"]["exit_code"] == 0, p.stderr[-3000:]
    assert "pricing.usd_per_hour=2.5" in sweep["decision"]["overrides"]
    d = json.loads((tmp_path / "sw" / "decision.json").read_text())
    assert d["config"]["pricing"]["usd_per_hour"] == 2.5 and d["config"]["pricing"]["name"] == "cpu_vm"
    assert d["config"]["quality"]["require"] is True and d["config"]["quality"]["n_boot"] == 200
    assert len(d["points"]) == 2 and {pt["usd_per_hour"] for pt in d["points"]} == {2.5}  # priced at the override
    assert d["quality"]["applied"] and {v["quant"] for v in d["quality"]["variants"]} == {"none", "fp16"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_a_sweep_killed_mid_point_resumes_without_redoing_or_keeping_half_points(tiny_tokenizer_dir, tmp_path, sig):
    """kill -9 (or Ctrl-C) while variant 1's second (last) point runs; the same command then finishes
    the sweep: point 0 is not measured again, the cut point is measured anew, variant 2 once."""
    argv = no_report(base(tiny_tokenizer_dir, tmp_path, "traffic.points=[8,16]", "engine.max_num_seqs=4,8",
                          "traffic.duration_s=2.5"))  # fmt: skip
    out = tmp_path / "lab.out"
    proc = _lab_proc(argv, out)
    sw = tmp_path / "sw"

    def second_point_running() -> bool:
        durable = list(sw.glob("*/launch-1/points/000.requests.parquet"))
        if not durable:
            return False
        work = durable[0].parent.parent / "work"
        return any('"load_point":1' in f.read_text() and '"status":"ok"' in f.read_text()
                   for f in work.glob("requests.1.jsonl*"))  # fmt: skip

    try:
        _wait_for(second_point_running, proc, out, "variant 1's second point")
        os.killpg(proc.pid, sig) if sig == signal.SIGINT else os.kill(proc.pid, sig)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == (-9 if sig == signal.SIGKILL else 130), out.read_text()[-2000:]
    (first,) = [v for v in variants(tmp_path).values()]  # variant 2 never started
    (s,) = runs_of(first)
    assert s["status"] == ("running" if sig == signal.SIGKILL else "cancelled")
    time.sleep(1.0 if sig == signal.SIGKILL else 0)  # the guardian stops the dead lab's engine

    p = lab(argv)
    assert p.returncode == 0, p.stderr[-3000:]
    assert starts(p.stderr) == 2  # variant 1 again (its engine died with the lab), variant 2 once
    vs = variants(tmp_path)
    for v in vs.values():
        assert points_of(v) == [(8.0, 0), (16.0, 0)]  # each point exactly once, none half
    runs1 = runs_of(first)
    assert [r["status"] for r in runs1] == ["cancelled", "ok"]  # the stale run was closed by resume
    assert [p["load_value"] for p in runs1[1]["load_points"]] == [16.0]  # point 0 was not redone
    assert runs1[1]["resume"]["skipped_done"][0]["load_value"] == 8.0
    if sig == signal.SIGKILL:
        # the point cut by kill -9 was never listed; the finished one has its rows on disk
        assert [p["load_value"] for p in runs1[0]["load_points"]] == [8.0]
        assert (first / "launch-1" / "points" / "000.requests.parquet").is_file()
        assert any(n["kind"] == "stale_run" for n in runs1[0]["notes"])
    else:
        assert [(p["load_value"], p["interrupted"]) for p in runs1[0]["load_points"]] == [(8.0, False), (16.0, True)]
    # the decision uses every finished point once: 3 per variant
    d = json.loads((tmp_path / "sw" / "decision.json").read_text())
    pts = pd.DataFrame(d["points"])
    assert sorted(pts.groupby("variant_id").size().tolist()) == [2, 2]
    assert chose_or_all_invalid(d), d["selection"]
    h = scan(first, runs1[0]["variant_id"])
    assert len(h.done) == 2


# -- resume rules on hand-written launches (no processes) ----------------------------------------
def _launch(variant_dir: Path, n: int, status: str, points: list[dict], *, requests: bool = True,
            lab: dict | None = None) -> None:  # fmt: skip
    d = variant_dir / f"launch-{n}"
    (d / "points").mkdir(parents=True)
    for p in points:
        (d / "points" / f"{p['index']:03d}.requests.parquet").write_bytes(b"x")
    if requests:
        (d / "requests.parquet").write_bytes(b"x")
    s = {"schema_version": 2, "run_id": f"v-{n}", "variant_id": "v", "status": status, "lab": lab,
         "failure": {"reason": "boom"} if status == "failed" else None,
         "load_points": [{"interrupted": False, "aborted": None, "repetition": 0, **p} for p in points]}  # fmt: skip
    (d / "run.json").write_text(json.dumps(s))


def test_resume_counts_finished_points_of_ok_cancelled_and_stale_launches_only(tmp_path):
    from experiments.sweeps.resume import recover_stale

    pt = lambda i, pid, **kw: {"index": i, "point_id": pid, "load_value": float(i), **kw}  # noqa: E731
    _launch(tmp_path, 1, "cancelled", [pt(0, "a"), pt(1, "b", interrupted=True)])
    _launch(tmp_path, 2, "failed", [pt(0, "c")])
    dead = {"pid": 2**22 + 12345, "boot_id": ""}  # no such process
    _launch(tmp_path, 3, "running", [pt(0, "d"), pt(1, "e")], requests=False, lab=dead)
    (tmp_path / "launch-3" / "points" / "001.requests.parquet").unlink()  # e is listed but its rows are not on disk
    h = scan(tmp_path, "v")
    assert sorted(h.done) == [("a", 0), ("d", 0)]  # b interrupted, c in a failed launch, e without rows
    assert [la.status for la in h.launches] == ["cancelled", "failed", "cancelled"] and h.launches[2].stale
    assert h.failed_reason() is None and h.next_launch == 4  # the latest launch is the stale one
    assert recover_stale(h) and json.loads((tmp_path / "launch-3" / "run.json").read_text())["status"] == "cancelled"
    _launch(tmp_path, 4, "failed", [])
    assert scan(tmp_path, "v").failed_reason() == "boom"  # the variant is skipped unless retry_failed
