"""`experiment=tune_vllm` against the real embedded engine (vLLM CPU build + tiny model): a seeded
search of 3 trials over max_num_seqs and prefix caching, each one launch with its knee search,
decision.json at the end and the report's search history; then the same command with one trial
more reads the 3 back (no engine start for them) and launches only the new one.

`-m slow`: every trial is an engine start, so the test takes long. Measured on 2026-12-07, 4
launches in all (3 trials, then 1 more; the second run read the 3 back): 459 s (7.6 min) with
52-63 s starts, and 850 s (14.2 min) while other sessions loaded the 2 cores (90-195 s starts).
test_tune.py checks the same rules on the timing server in 1-2 min. Needs `bash scripts/setup.sh`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _argv(results, *extra: str) -> list[str]:
    return [sys.executable, "run.py", "-m", "experiment=tune_vllm", f"results_dir={results}", *extra]


def _starts(text: str) -> int:
    return sum("started vllm (pid" in ln for ln in text.splitlines())


def test_tune_vllm_seeded_search_resumes_and_decides(tmp_path):
    r = subprocess.run(_argv(tmp_path, "tune.n_trials=3"), cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    exp = tmp_path / "tune_vllm"
    doc = json.loads((exp / "tune.json").read_text())
    own = [t for t in doc["trials"] if "duplicate_of" not in t]
    assert _starts(r.stderr) == len(own) == doc["new_launches"]
    assert [t["params"] for t in doc["trials"]][:2] == [{"max_num_seqs": 8, "prefix_caching": True},
                                                        {"max_num_seqs": 32, "prefix_caching": True}]  # seed 0
    for t in own:
        assert t["state"] in ("complete", "infeasible"), t
        assert t["engine"]["start_s"] > 0
        rj = json.loads((exp / t["folder"] / "launch-1" / "run.json").read_text())
        assert rj["resume"]["knee_search"]["kind"] == "knee"
        assert rj["config"]["engine"]["max_num_seqs"] == t["params"]["max_num_seqs"]
    d = json.loads((exp / "decision.json").read_text())
    best = doc["best"]
    if best is not None:  # the decision chooses among the trials that meet the SLO; the cheapest one, or a tie with it
        chosen = d["selection"]["chosen"]["variant_id"]
        assert chosen == best["variant_id"] or best["variant_id"] in d["selection"]["tied"] or chosen in d["selection"]["tied"]
    html = (exp / "report.html").read_text()
    assert 'id="tune"' in html and "engine-minutes" in html

    r2 = subprocess.run(_argv(tmp_path, "tune.n_trials=4"), cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r2.returncode == 0, r2.stderr[-4000:]
    doc2 = json.loads((exp / "tune.json").read_text())
    k = len(doc["trials"])  # proposals, repeats included: the same ones again (seeded)
    assert [t["params"] for t in doc2["trials"][:k]] == [t["params"] for t in doc["trials"]]
    assert all(t["reused"] for t in doc2["trials"][:k] if "duplicate_of" not in t)
    assert _starts(r2.stderr) == doc2["new_launches"] <= 1
