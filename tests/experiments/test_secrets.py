"""engine.env values never leave the engine's environment (issue 25, finding 2): a planted secret is
in no artifact, log or report of a run or a sweep, not in the launch key, not on a docker command
line; the engine process still gets it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from analysis.records.identity import REDACTED, launch_fields, launch_key
from engines.base import HostFacts
from engines.tgi import TgiAdapter
from experiments.config import to_run_config
from experiments.secrets import redact_hydra_files, redact_override
from tests.conftest import ROOT, SUPPORT, compose

LAB = SUPPORT / "lab_with_fakes.py"
SECRET = "hf_PLANTED-secret-9c1e5a77d04b"


def files_holding(folder, secret: str) -> list[str]:
    return [str(f) for f in folder.rglob("*") if f.is_file() and secret.encode() in f.read_bytes()]


@pytest.mark.parametrize("multirun", [False, True])
def test_a_planted_engine_env_secret_is_in_no_artifact_log_or_report(tiny_tokenizer_dir, tmp_path, multirun):
    probe = tmp_path / "probe"
    results = tmp_path / "results"
    argv = [sys.executable, str(LAB), *(["-m"] if multirun else []), "engine.name=timing_env",
            f"+engine.env.SERVELAB_TEST_TOKEN={SECRET}", f"model.path={tiny_tokenizer_dir}", "model.built_by=null",
            "workload.prompt_tokens=20", "workload.output_tokens=8", "workload.num_prompts=4", "traffic.points=[8]",
            "traffic.duration_s=1", "traffic.warmup_s=0.3", "telemetry.interval_s=0.5", f"results_dir={results}",
            "experiment_name=sec"]  # fmt: skip
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240,
                       env={**__import__("os").environ, "SERVELAB_ENV_PROBE": str(probe)})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    # the engine got the value through its environment
    assert probe.read_text() == hashlib.sha256(SECRET.encode()).hexdigest()
    assert SECRET not in r.stdout and SECRET not in r.stderr
    (run_json,) = results.rglob("run.json")
    assert list(results.rglob("report.html")), "the report was written (and is searched below)"
    assert files_holding(results, SECRET) == []
    s = json.loads(run_json.read_text())
    assert s["config"]["engine"]["env"] == {"SERVELAB_TEST_TOKEN": REDACTED}
    assert s["launch_fields"]["engine"]["env"] == {"SERVELAB_TEST_TOKEN": REDACTED}
    assert s["engine"]["plan"]["env"]["SERVELAB_TEST_TOKEN"] == REDACTED
    assert "+engine.env.SERVELAB_TEST_TOKEN=<redacted>" in s["overrides"]


def _cfg(*extra: str):
    return to_run_config(compose(["engine=tgi", "gpu=h100_sxm_80g", *extra]))


def test_the_launch_key_holds_env_names_not_values():
    a = _cfg("+engine.env.HF_TOKEN=one-token-value")
    b = _cfg("+engine.env.HF_TOKEN=rotated-token-value")
    assert launch_key(a) == launch_key(b)  # a rotated token is the same server
    assert launch_fields(a)["engine"]["env"] == {"HF_TOKEN": REDACTED}
    assert launch_key(_cfg()) != launch_key(a)  # the name still counts
    # no env at all: the key is what it was before (existing results keep their variant_id)
    plain = SimpleNamespace(**{k: getattr(_cfg(), k) for k in ("engine", "model", "quant", "gpu", "placement")})
    assert launch_key(plain) == launch_key(_cfg())


def test_docker_gets_env_names_and_the_client_inherits_the_values():
    c = _cfg("engine.launcher=docker", "+engine.env.HF_TOKEN=hf_docker_secret_123", "engine.prefix_caching=true")
    plan = TgiAdapter(c.engine, c.model, c.quant, c.gpu).launch_plan(8080, HostFacts(engine_python=None, model_is_local=True))
    argv = list(plan.argv)
    assert all("hf_docker_secret_123" not in a for a in argv)
    i = argv.index("HF_TOKEN")
    assert argv[i - 1] == "-e" and "PREFIX_CACHING" in argv
    assert plan.env["HF_TOKEN"] == "hf_docker_secret_123"  # the docker client's environment: docker copies it
    assert plan.to_dict()["env"]["HF_TOKEN"] == REDACTED and plan.to_dict()["env"]["PREFIX_CACHING"] == "1"


@pytest.mark.parametrize("override,written", [
    ("engine.env.HF_TOKEN=abc", "engine.env.HF_TOKEN=<redacted>"),
    ("+engine.env.HF_TOKEN=abc", "+engine.env.HF_TOKEN=<redacted>"),
    ("++engine.env.A=x=y", "++engine.env.A=<redacted>"),
    ("engine.env={A:x,B:y}", "engine.env={A:<redacted>,B:<redacted>}"),
    ("+engine.env.HF_TOKEN=${oc.env:HF_TOKEN}", "+engine.env.HF_TOKEN=${oc.env:HF_TOKEN}"),  # a name, kept
    ("engine.port=8000", "engine.port=8000"),
])  # fmt: skip
def test_overrides_setting_engine_env_are_redacted(override, written):
    assert redact_override(override) == written


def test_hydra_files_are_redacted(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("engine:\n  name: tgi\n  env:\n    HF_TOKEN: tok-123456\n    KEEP: ${oc.env:KEEP}\n")
    hyd = tmp_path / "hydra.yaml"
    hyd.write_text("hydra:\n  overrides:\n    task:\n    - +engine.env.HF_TOKEN=tok-123456\n"
                   "  job:\n    override_dirname: +engine.env.HF_TOKEN=tok-123456,quant=none\n")  # fmt: skip
    assert set(redact_hydra_files([cfg, hyd], {"HF_TOKEN": "tok-123456"})) == {cfg, hyd}
    assert "tok-123456" not in cfg.read_text() + hyd.read_text()
    assert "${oc.env:KEEP}" in cfg.read_text()
