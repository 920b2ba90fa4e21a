"""The report's search section (analysis.report_tune) over a tune.json: the trials' rows, the history
plot, and Optuna's parameter importance only from enough trials that met the SLO. Pure."""

from __future__ import annotations

import math

from analysis import report_tune

SPACE = {"seqs": '{"name": "CategoricalDistribution", "attributes": {"choices": [2, 4, 8, 16]}}',
         "pc": '{"name": "CategoricalDistribution", "attributes": {"choices": [true, false]}}'}  # fmt: skip


def doc(n: int) -> dict:
    trials = []
    for i in range(n):
        seqs, pc = [2, 4, 8, 16][i % 4], bool(i % 2)
        state = "infeasible" if seqs == 2 else "complete"
        trials.append({"number": i, "params": {"seqs": seqs, "pc": pc}, "state": state,
                       "value": math.inf if state == "infeasible" else 1 / seqs + 0.01 * pc, "usd_bound": "estimate",
                       "engine": {"engine_s": 90.0, "start_s": 30.0, "launches": [{}]}, "folder": f"v{i}"})  # fmt: skip
    trials.append({"number": n, "params": {"seqs": 8, "pc": False}, "state": "refused", "value": None,
                   "reason": "refused by preflight: x", "engine": {"engine_s": 0.0, "start_s": 0.0, "launches": []}})  # fmt: skip
    return {"name": "t", "seed": 0, "sampler": "tpe", "n_trials": n + 1, "space": SPACE, "keys": {}, "trials": trials,
            "engine_minutes": 1.5 * n, "start_minutes": 0.5 * n, "launches": n, "new_launches": n, "reused_trials": 0}  # fmt: skip


def test_no_tune_json_no_section(tmp_path):
    assert report_tune.view(report_tune.read(tmp_path)) is None


def test_rows_plot_and_too_few_trials_for_importance():
    v = report_tune.view(doc(4))
    assert [r["state"] for r in v["rows"]] == ["infeasible", "complete", "complete", "complete", "refused"]
    assert v["rows"][0]["value"] is None and v["rows"][1]["engine_min"] == 1.5 and v["rows"][1]["start_min"] == 0.5
    assert "<svg" in v["plot"]["svg"] and "best so far" in v["plot"]["svg"]
    assert v["importance"] == [] and "at least 5 trials that met the SLO" in v["importance_why"]


def test_importance_from_enough_trials_names_the_setting_that_mattered():
    v = report_tune.view(doc(12))
    imp = {i["param"]: i["importance"] for i in v["importance"]}
    assert set(imp) == {"seqs", "pc"} and imp["seqs"] > imp["pc"]  # cost is 1/seqs (+1 % with pc)
