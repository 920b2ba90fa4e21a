"""Every traffic profile and workload against the real embedded engine (vLLM CPU build).

One vLLM server is started for the module (~45 s) and each case runs a short servelab run
against it as engine=endpoint, so the whole matrix costs one engine start.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from experiments.config import to_run_config
from experiments.runner import run
from tests.conftest import compose
from tests.support.embedded_vllm import embedded_vllm

# The whole matrix is `-m slow`: every profile and workload is checked exactly against the timing
# server (tests/loadgen), and the default run already drives the real engine end to end in
# test_embedded_sweep.py (with the quality gate) and test_embedded_prefix_cache.py; this module's
# own engine start (~55 s) bought little beside them in the 15-minute budget.
pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory):
    with embedded_vllm(tmp_path_factory.mktemp("vllm")) as url:
        yield url


SHORT = ["traffic.warmup_s=0.5", "traffic.duration_s=2.5", "traffic.points=[4]"]
CASES = {
    "poisson": [],
    "constant": ["traffic=constant"],
    "gamma": ["traffic=gamma"],
    "concurrency_think": ["traffic=concurrency", "traffic.points=[3]", "traffic.think_time_s=0.2"],
    "spike": ["traffic=spike"],
    "ramp": ["traffic=ramp"],
    "diurnal": ["traffic=diurnal", "traffic.warmup_s=0", "traffic.duration_s=3"],
    "steps": ["traffic=steps", "traffic.points=[4]", "traffic.duration_s=3"],
    "cooldown": ["traffic.cooldown_s=1"],
    "chat": ["workload.endpoint=chat"],
    "lognormal": ["workload=synthetic_lognormal", "workload.prompt_tokens=128", "workload.prompt_max=256",
                  "workload.output_tokens=32", "workload.output_max=64"],
    "sharegpt": ["workload=sharegpt", "workload.dataset_path=tests/data/sharegpt_sample.json", "workload.num_prompts=10",
                 "workload.output_max=64"],
    "shared_prefix": ["workload=shared_prefix"],
    "paraphrase": ["workload=paraphrase"],
}  # fmt: skip


# Arrival schedules and shapes are checked exactly at the load-generator level (tests/loadgen); against
# the real engine these repeat what poisson/steps/diurnal/concurrency already show: -m slow runs them.
SLOW = {"constant", "gamma", "spike", "ramp", "lognormal", "paraphrase"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in sorted(CASES)])
def test_profile_or_workload_against_the_engine(vllm_url, tmp_path, case):
    overrides = ["engine=endpoint", f"engine.base_url={vllm_url}", "model.served_name=tiny", "model.built_by=null",
                 "telemetry=off", "report=false", *SHORT, *CASES[case]]  # fmt: skip
    out = tmp_path / "run"
    code = run(to_run_config(compose(overrides)), out)
    assert code == 0, json.loads((out / "run.json").read_text())["failure"]
    s = json.loads((out / "run.json").read_text())
    m = s["load_points"][0]["summary"]
    assert m["requests"]["ok"] > 0 and m["requests"]["ok"] == m["requests"]["total"] - m["requests"]["dropped"]
    req = pd.read_parquet(out / "requests.parquet")
    ok = req[req["status"] == "ok"]
    assert (ok["output_tokens"] == ok["max_tokens"]).all()  # ignore_eos forced every length
    if case == "cooldown":
        assert "cooldown" in set(req["phase"])
