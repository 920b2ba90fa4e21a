"""The search over launch settings (experiments.sweeps.tune, `tune=<space>`): the space and its
preflight, seeding, resume and the outcome of a trial on fakes (no process); then one small search
through the whole lab (`run.py -m` via tests/support/lab_with_fakes.py, the timing server as the
engine, its --max-streams as the searched setting): one launch per trial, the knee search inside,
a second run reusing the finished trials, decision.json and the report's search history."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.sweeps import tune as tn
from tests.conftest import ROOT, SUPPORT, compose

LAB = SUPPORT / "lab_with_fakes.py"


def space(**over):
    tc = tn.TuneConfig(name="t", n_trials=6, seed=3, n_startup_trials=2, params={
        "seqs": tn.TuneParam(key="engine.max_num_seqs", choices=[2, 4, 8, 16]),
        "pc": tn.TuneParam(key="engine.prefix_caching", choices=[True, False]),
        "tokens": tn.TuneParam(key="engine.extra_args", flag="--max-num-batched-tokens", choices=[None, 512]),
    })  # fmt: skip
    for k, v in over.items():
        setattr(tc, k, v)
    return tc


# -- the space -----------------------------------------------------------------------------------
def test_trial_overrides_are_hydra_overrides_with_flags_folded_into_extra_args():
    tc = space()
    assert tn.trial_overrides(tc, {"seqs": 4, "pc": False, "tokens": 512}, ["--foo"]) == [
        "engine.max_num_seqs=4", "engine.prefix_caching=false", "engine.extra_args=['--foo','--max-num-batched-tokens=512']"]  # fmt: skip
    assert tn.trial_overrides(tc, {"seqs": 4, "pc": True, "tokens": None}) == [
        "engine.max_num_seqs=4", "engine.prefix_caching=true"]  # fmt: skip
    # they compose: every value the space holds is a valid config (the schema checks the types)
    cfg = compose(tn.trial_overrides(tc, {"seqs": 8, "pc": True, "tokens": 512}))
    assert cfg.engine.max_num_seqs == 8 and cfg.engine.prefix_caching is True
    assert cfg.engine.extra_args == ["--max-num-batched-tokens=512"]


def test_config_problems_name_the_field_and_the_fix():
    tc = space(params={"a": {"key": "traffic.duration_s", "choices": [1, 2]}, "b": {"key": "engine.max_num_seqs"},
                       "c": {"key": "engine.extra_args", "choices": [1]}, "d": {"key": "quant", "choice": ["x"]}})  # fmt: skip
    assert tn.config_problems(tc) == [
        "tune.params.d: unknown field(s) ['choice']; the fields are choices, flag, high, integer, key, log, low, step"]
    del tc.params["d"]
    lines = tn.config_problems(tc)
    assert any(ln.startswith("tune.params.a.key=traffic.duration_s is not a launch-level setting") for ln in lines)
    assert "tune.params.b: give choices, or both low and high" in lines
    assert "tune.params.c: key=engine.extra_args needs flag (the engine flag its value is passed with)" in lines
    assert tn.config_problems(space(sampler="grid"))[0].startswith("tune.sampler='grid' is not one of")


def test_space_refused_before_the_search_one_line_per_problem():
    """Each value is preflighted once, with the others at their first value; the line names the setting."""
    tc = space(params={"seqs": tn.TuneParam(key="engine.max_num_seqs", choices=[0, 4, -1]),
                       "tp": tn.TuneParam(key="engine.tensor_parallel_size", choices=[1, 2, 4])})  # fmt: skip

    import copy

    from experiments.preflight import engine_problems

    gpu_plan = compose(["gpu=h100_sxm_80g", "gpu.count=2"])  # composed once: Hydra takes seconds per call here

    def check(overrides):  # preflight's lines for the TP and max_num_seqs ranges (a GPU plan with 2 GPUs)
        cfg = copy.deepcopy(gpu_plan)
        for o in overrides:
            k, v = o.split("=", 1)
            setattr(cfg.engine, k.removeprefix("engine."), int(v))
        return engine_problems(cfg)

    lines = tn.space_problems(tc, [], check)
    assert lines == [
        "every trial: engine.max_num_seqs must be >= 1 or null (the engine's default), got 0",
        "engine.max_num_seqs=-1: engine.max_num_seqs must be >= 1 or null (the engine's default), got -1",
        "engine.tensor_parallel_size=4: engine.tensor_parallel_size=4 is larger than gpu.count=2; lower it or plan more GPUs",
    ]  # fmt: skip
    assert tn.space_problems(space(params={"x": tn.TuneParam(key="engine.max_num_seqs", low=2, high=64, log=True)}), [],
                             check) == []  # fmt: skip


def test_distributions_ranges_and_choices():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    tc = space(params={"i": {"key": "engine.max_num_seqs", "low": 2, "high": 64, "log": True},
                       "f": {"key": "engine.gpu_memory_fraction", "low": 0.5, "high": 0.95},
                       "c": {"key": "quant", "choices": ["none", "fp8"]}})  # fmt: skip
    d = tn.distributions(tc)
    assert isinstance(d["i"], IntDistribution) and d["i"].log and (d["i"].low, d["i"].high) == (2, 64)
    assert isinstance(d["f"], FloatDistribution) and isinstance(d["c"], CategoricalDistribution)
    assert tn.space_points(tc)[0] == {"i": 2, "f": 0.5, "c": "none"} and len(tn.space_points(tc)) == 4


# -- the study on fakes --------------------------------------------------------------------------
class FakeLab:
    """Jobs that 'measure' a variant folder named by its settings, and a decision whose cost at capacity
    is a known function of them: seqs 2 is infeasible, tokens=512 fails preflight, else 1/seqs (+0.1 with pc)."""

    def __init__(self, root: Path):
        self.root, self.jobs = root, []

    def launch(self, overrides, idx):
        self.jobs.append(overrides)
        o = dict(x.split("=", 1) for x in overrides)
        name = "v_" + "_".join(f"{k.split('.')[-1]}-{v}" for k, v in sorted(o.items())).replace("'", "").replace("[", "").replace("]", "")
        d = self.root / name
        (d / "launch-1").mkdir(parents=True, exist_ok=True)
        refused = "512" in o.get("engine.extra_args", "")
        (d / "variant.json").write_text(json.dumps({"variant_id": name, "status": "refused" if refused else "ok",
                                                    "reason": "no such flag" if refused else None}))  # fmt: skip
        (d / "launch-1" / "run.json").write_text(json.dumps({
            "status": "ok", "started_at_utc": "2026-12-07T10:00:00+00:00", "finished_at_utc": "2026-12-07T10:01:30+00:00",
            "engine": {"time_to_ready_s": 30.0}}))  # fmt: skip
        return tn.JobResult(d, 0)

    def decide(self, folder):
        ranked, excluded = [], []
        for vj in folder.glob("*/variant.json"):
            v = json.loads(vj.read_text())
            if v["status"] != "ok":
                continue
            seqs = int(v["variant_id"].split("max_num_seqs-")[1].split("_")[0])
            if seqs == 2:
                excluded.append({"variant_id": v["variant_id"], "reasons": [{"message": "misses the SLO at every valid load"}]})
            else:
                usd = 1 / seqs + (0.1 if "prefix_caching-true" in v["variant_id"] else 0)
                ranked.append({"variant_id": v["variant_id"], "usd": usd, "usd_bound": "estimate", "load_value": 4.0,
                               "load_unit": "req/s"})  # fmt: skip
        return {"selection": {"ranked": ranked, "excluded": excluded}, "points": [], "searches": []}


def search(tmp: Path, tc) -> tuple[dict, FakeLab]:
    lab = FakeLab(tmp)
    return tn.run_search(tc, ["experiment_name=x"], tmp, launch=lab.launch, decide=lab.decide), lab


def test_seeded_same_trials_and_outcomes(tmp_path):
    a, _ = search(tmp_path / "a", space())
    b, _ = search(tmp_path / "b", space())
    c, _ = search(tmp_path / "c", space(seed=4))
    params = [t["params"] for t in a["trials"]]
    assert params == [t["params"] for t in b["trials"]]
    assert params != [t["params"] for t in c["trials"]]
    states = {t["state"] for t in a["trials"]}
    by = {json.dumps(t["params"], sort_keys=True): t for t in a["trials"]}
    for t in by.values():  # infeasible (+inf, not an error), refused with its reason, complete with the cost
        if t["params"]["tokens"] == 512:
            assert t["state"] == "refused" and "no such flag" in t["reason"] and t["value"] is None
        elif t["params"]["seqs"] == 2:
            assert t["state"] == "infeasible" and math.isinf(t["value"]) and "misses the SLO" in t["reason"]
        else:
            assert t["state"] == "complete" and t["value"] == pytest.approx(1 / t["params"]["seqs"] + 0.1 * t["params"]["pc"])
    assert "complete" in states
    assert json.loads((tmp_path / "a" / "tune.json").read_text())["trials"] == json.loads(json.dumps(a["trials"]))


def test_engine_time_counted_per_trial_with_the_start(tmp_path):
    doc, lab = search(tmp_path, space(n_trials=4))
    own = [t for t in doc["trials"] if "duplicate_of" not in t]
    assert len(lab.jobs) == len(own)  # a repeated proposal launches nothing
    assert all(t["engine"] == {"launches": [{"launch": "launch-1", "status": "ok", "wall_s": 90.0, "time_to_ready_s": 30.0,
                                            "start_s": 30.0}],
                               "engine_s": 90.0, "start_s": 30.0} for t in own)  # fmt: skip
    assert doc["engine_minutes"] == pytest.approx(1.5 * len(own)) and doc["start_minutes"] == pytest.approx(0.5 * len(own))
    text = tn.summary_text(doc)
    assert f"{doc['engine_minutes']:.2f} engine-minutes over {len(own)} launch(es)" in text


def test_resume_reuses_the_records_and_goes_on(tmp_path):
    """The study is rebuilt from the seed; each trial re-proposed finds its folder (a real job then
    launches nothing: run_variant's resume) and its objective from the records; more trials go on."""
    first, _ = search(tmp_path, space(n_trials=3))
    again, lab = search(tmp_path, space(n_trials=5))
    assert [t["params"] for t in again["trials"][:3]] == [t["params"] for t in first["trials"]]
    assert [t["value"] for t in again["trials"][:3]] == [t["value"] for t in first["trials"]]
    distinct = [t for t in again["trials"] if "duplicate_of" not in t]
    assert len(distinct) == 5 and len(lab.jobs) == 5  # n_trials counts distinct settings: repeats launch nothing


def test_a_small_space_ends_when_every_setting_was_measured(tmp_path):
    tc = space(n_trials=50, params={"pc": tn.TuneParam(key="engine.prefix_caching", choices=[True, False]),
                                    "seqs": tn.TuneParam(key="engine.max_num_seqs", low=4, high=6)})  # fmt: skip
    assert tn.space_size(tc) == 6
    doc, lab = search(tmp_path, tc)
    assert len(lab.jobs) == 6 and len({json.dumps(t["params"], sort_keys=True) for t in doc["trials"]}) == 6


def test_interrupted_trial_is_recorded_and_raised(tmp_path):
    lab = FakeLab(tmp_path)

    def launch(overrides, idx):
        if idx == 1:
            raise KeyboardInterrupt
        return lab.launch(overrides, idx)

    with pytest.raises(KeyboardInterrupt):
        tn.run_search(space(seed=0), [], tmp_path, launch=launch, decide=lab.decide)
    doc = json.loads((tmp_path / "tune.json").read_text())
    assert doc["trials"][-1]["state"] == "interrupted" and "resumes" in doc["trials"][-1]["reason"]
    again, _ = search(tmp_path, space(seed=0, n_trials=2))  # the next run says which trial the last one cut
    assert again["earlier_runs"][-1]["cut_trials"] == [1] and "finished_at_utc" in again


def test_outcome_from_the_records():
    ok = {"variant_id": "v", "status": "ok"}
    dec = {"selection": {"ranked": [{"variant_id": "v", "usd": 0.5, "usd_bound": "at most", "capacity_rps": 3.0,
                                     "load_unit": "req/s"}], "excluded": []},
           "points": [{"variant_id": "v", "load_value": 2.0, "feasible": True, "usd_per_1m_goodput": 0.7},
                      {"variant_id": "v", "load_value": 4.0, "feasible": False, "usd_per_1m_goodput": 0.4}],
           "searches": [{"variant_id": "v", "points": [{"load": 4.0, "feasible": False}, {"load": 2.0, "feasible": True}]}]}  # fmt: skip
    oc = tn.outcome(ok, dec)
    assert (oc.state, oc.value, oc.usd_bound, oc.knee) == ("complete", 0.5, "at most", 3.0)
    assert oc.intermediate == [(1, 0.7)]  # the pruner's view: nothing feasible after the first point
    q = {"selection": {"ranked": [], "excluded": [{"variant_id": "v", "reasons": [{"message": "failed the quality gate: top1"}]}]}}
    assert tn.outcome(ok, q).state == "infeasible" and "quality gate" in tn.outcome(ok, q).reason
    # halved by economy.halving (docs/tune.md): pruned, not infeasible - it met the SLO, an earlier trial is cheaper
    h = {"selection": {"ranked": [], "excluded": [{"variant_id": "v", "reasons": [
        {"kind": "cannot_win", "message": "knee search stopped: $0.9/1M at best > $0.5/1M"}]}]}}  # fmt: skip
    assert (tn.outcome(ok, h).state, tn.outcome(ok, h).value) == ("pruned", math.inf) and "0.9" in tn.outcome(ok, h).reason
    assert tn.outcome({"status": "refused", "reason": "AWQ needs AVX-512"}, None).state == "refused"
    assert tn.outcome(ok, None, "ResultsError: no runs").state == "failed"


# -- through the whole lab -------------------------------------------------------------------------
def lab_argv(tok: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, str(LAB), "-m", "engine.name=timing", f"model.path={tok}", "model.built_by=null",
            "workload.prompt_tokens=20", "workload.output_tokens=8", "workload.num_prompts=4", "traffic=constant",
            "traffic.duration_s=0.6", "traffic.warmup_s=0.2", "telemetry.interval_s=0.5", f"results_dir={results}",
            "experiment_name=tn", "search=knee", "search.tolerance=0.5", "search.max_points=2", "traffic.points=[5,80]",
            "tune=vllm_cpu_small", "~tune.params.prefix_caching", "tune.params.max_num_seqs.choices=[4,8]",
            "+tune.params.streams={key:engine.extra_args,flag:--max-streams,choices:[1,8]}", *extra]  # fmt: skip


def test_search_through_the_lab_resumes_and_reports(tiny_tokenizer_dir, tmp_path):
    """1 trial (one launch, the knee search inside), then 2: the first launches nothing."""
    r = subprocess.run(lab_argv(tiny_tokenizer_dir, tmp_path, "tune.n_trials=1", "report=false"), cwd=ROOT, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "tn" / "tune.json").read_text())
    own = [t for t in doc["trials"] if "duplicate_of" not in t]
    assert r.stderr.count("started timing (pid") == len(own) == doc["new_launches"]
    assert all(t["engine"]["start_s"] > 0 and len(t["engine"]["launches"]) == 1 for t in own)
    assert "servelab tune: vllm_cpu_small, seed 0" in r.stderr and "engine-minutes" in r.stderr
    for t in own:  # the knee search ran inside the trial's one launch
        rj = json.loads((tmp_path / "tn" / t["folder"] / "launch-1" / "run.json").read_text())
        assert rj["resume"]["knee_search"]["kind"] == "knee" and len(rj["load_points"]) >= 1
    assert (tmp_path / "tn" / "decision.json").is_file()

    r2 = subprocess.run(lab_argv(tiny_tokenizer_dir, tmp_path, "tune.n_trials=2"), cwd=ROOT, capture_output=True,
                        text=True, timeout=300)  # fmt: skip
    assert r2.returncode == 0, r2.stderr[-3000:]
    doc2 = json.loads((tmp_path / "tn" / "tune.json").read_text())
    k = len(doc["trials"])
    assert [t["params"] for t in doc2["trials"][:k]] == [t["params"] for t in doc["trials"]]  # seeded: the same proposals
    assert [t["value"] for t in doc2["trials"][:k]] == [t["value"] for t in doc["trials"]]
    reused = [t for t in doc2["trials"][:k] if "duplicate_of" not in t]
    assert reused and all(t["reused"] and t["new_launches"] == 0 for t in reused)
    new = [t for t in doc2["trials"][k:] if "duplicate_of" not in t]
    assert len(new) == 1 and not new[0]["reused"] and r2.stderr.count("started timing (pid") == 1
    html = (tmp_path / "tn" / "report.html").read_text()  # the sweep's report has the search's section
    assert 'id="tune"' in html and "best so far" in html and "engine-minutes" in html


def test_a_space_preflight_refuses_is_refused_before_any_launch(tiny_tokenizer_dir, tmp_path):
    r = subprocess.run(lab_argv(tiny_tokenizer_dir, tmp_path, "tune.params.max_num_seqs.choices=[4,0]"), cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert ("servelab tune: refused: engine.max_num_seqs=0: engine.max_num_seqs must be >= 1 or null "
            "(the engine's default), got 0") in r.stderr
    assert "started timing" not in r.stderr and not list((tmp_path / "tn").glob("*/launch-*"))


def test_a_search_outside_a_sweep_is_refused_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "run.py", "tune=vllm_cpu", f"results_dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "tune=vllm_cpu is a search of several launches: run it as a sweep" in r.stderr


def test_a_launch_cut_while_starting_counts_as_start_time(tmp_path):
    d = tmp_path / "v" / "launch-1"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"status": "cancelled", "started_at_utc": "2026-12-07T10:00:00+00:00",
                                            "finished_at_utc": "2026-12-07T10:00:47+00:00",
                                            "failure": {"phase": "engine_start"}, "engine": {"time_to_ready_s": None}}))  # fmt: skip
    assert tn.engine_time(tmp_path / "v")["start_s"] == 47.0
