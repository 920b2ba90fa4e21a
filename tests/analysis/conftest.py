"""A real experiment folder for the report tests, made once per session by the real lab.

`report_lab` runs `python run.py -m ...` (tests/support/lab_with_fakes.py: the lab with the
timing server as its "engine") as a 3-variant x 2-point sweep (8 and 20 req/s, constant
arrivals), about 45 s on 2 cores:
  - timing/none extra_args=[]                        fast: meets the SLO at both loads
  - extra_args=[--max-streams,1,--itl-ms,12]         one stream, ~110 ms a request (9 req/s): meets
                                                     the SLO at 8 req/s, queues without bound at 20
  - extra_args=[--ttft-ms,700]                       TTFT 700 ms > the 500 ms SLO at every load: excluded
On a busy machine the load generator's self-check may mark a point invalid; the tests assert
what the report shows against decision.json, not a fixed outcome.
The workload is a two-conversation ShareGPT file whose first prompt is an XSS probe (XSS below),
so the probe travels through the real pipeline into workload.parquet and the reports. Every run
writes its run report at its end (experiments.postrun). The sweep's own end-of-sweep decision
is switched off (it would decide without a demand, and cost 13 s): the fixture decides once with
a capacity plan (capacity.peak_rps=20, the sweep's default SLO and prices), then renders the
experiment report through the sweep's own hook (SweepReport._report: analysis.report's
write_experiment_report, in the calling process), as the end of a sweep does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT, SUPPORT

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
VARIANTS = "[],[--max-streams,1,--itl-ms,12],[--ttft-ms,700]"


def _dataset(path: Path) -> Path:
    conv = [
        {"conversations": [{"from": "human", "value": f"{XSS} alpha beta gamma delta"},
                           {"from": "gpt", "value": "kappa lambda sigma theta zeta beta gamma alpha"}]},
        {"conversations": [{"from": "human", "value": "epsilon zeta theta kappa lambda"},
                           {"from": "gpt", "value": "alpha beta gamma delta epsilon zeta theta kappa"}]},
    ]  # fmt: skip
    path.write_text(json.dumps(conv))
    return path


@pytest.fixture(scope="session")
def report_lab(tmp_path_factory, tiny_tokenizer_dir) -> SimpleNamespace:
    from analysis.decide import decide
    from experiments.sweeps.callback import SweepReport

    base = tmp_path_factory.mktemp("report_lab")
    data = _dataset(base / "sharegpt_xss.json")
    argv = [
        sys.executable, str(SUPPORT / "lab_with_fakes.py"), "-m", "engine.name=timing", f"model.path={tiny_tokenizer_dir}",
        "model.built_by=null", "workload=sharegpt", f"workload.dataset_path={data}", "workload.num_prompts=2",
        "workload.output_min=4", "workload.output_max=8", "traffic=constant", "traffic.points=[8],[20]",
        "traffic.duration_s=1.0", "traffic.warmup_s=0.3", f"engine.extra_args={VARIANTS}", f"results_dir={base}",
        "experiment_name=shootout", "+hydra.callbacks.sweep_report.decide=false",
    ]  # fmt: skip
    env = {**os.environ, "SERVELAB_PROGRESS": "off"}
    p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    folder = base / "shootout"
    assert p.returncode == 0, p.stderr[-3000:]
    sweep = json.loads((folder / "sweep.json").read_text())
    assert "decision" not in sweep
    decision, _ = decide(folder, ["slo=interactive", "pricing=cpu_vm", "capacity.peak_rps=20"])  # the runs' own
    report = SweepReport._report(folder)
    runs = sorted(folder.glob("*/launch-1"))
    return SimpleNamespace(folder=folder, decision=decision, sweep=sweep, report=report, runs=runs, stderr=p.stderr,
                           dataset=data)  # fmt: skip
