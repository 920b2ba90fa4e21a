"""Every setting of `python -m analysis.decide` is checked: conf/decide.yaml's own fields and its
groups (slo, pricing, gpu, capacity, quality, whatif), lists and their elements included. A bad
value is one line that names the field and its fix; a field nobody checks fails
test_every_decide_field_is_checked unless UNCHECKED says why."""

from __future__ import annotations

import math
import typing

import pytest

from analysis import decide, whatif_data
from analysis.decision import input_problems
from analysis.schema import CapacityConfig, DecideConfig, PricingConfig, QualityConfig, SloConfig
from analysis.whatif import WhatIfConfig
from engines.schema import GpuConfig
from tests.support.settings_walk import (
    float_cases,
    one_line,
    uncovered,
    walk,
    with_,
    with_float,
)

GROUPS = {"slo": SloConfig, "pricing": PricingConfig, "capacity": CapacityConfig, "gpu": GpuConfig,
          "quality": QualityConfig, "whatif": WhatIfConfig}  # fmt: skip

# The groups the run config shares with the decision (slo, pricing, gpu, the quality gate):
# run.py's preflight and the decision check them with the same functions (analysis.schema), so
# tests/experiments/test_preflight.py reuses these cases. field -> (settings that make only that
# field bad, text of the fix); other settings select the mode in which the field is used.
SHARED_BAD: dict[str, tuple[dict[str, typing.Any], str]] = {
    "slo.ttft_ms": ({"slo.ttft_ms": -1.0}, "must be > 0 (or null = not constrained)"),
    "slo.tpot_ms": ({"slo.tpot_ms": math.nan}, "must be > 0 (or null = not constrained)"),
    "slo.itl_ms": ({"slo.itl_ms": 0.0}, "must be > 0 (or null = not constrained)"),
    "slo.e2e_ms": ({"slo.e2e_ms": math.inf}, "must be > 0 (or null = not constrained)"),
    "slo.percentile": ({"slo.percentile": 150.0}, "must be in (0, 100]"),
    "slo.ttft_percentile": ({"slo.ttft_percentile": 0.0}, "must be in (0, 100]"),
    "slo.tpot_percentile": ({"slo.tpot_percentile": -1.0}, "must be in (0, 100]"),
    "slo.itl_percentile": ({"slo.itl_percentile": 101.0}, "must be in (0, 100]"),
    "slo.e2e_percentile": ({"slo.e2e_percentile": math.nan}, "must be in (0, 100]"),
    "slo.attainment_target": ({"slo.attainment_target": 1.5}, "must be in (0, 1]"),
    "pricing.tier": ({"pricing.tier": "hourly"}, "use one of on_demand, spot"),
    "pricing.usd_per_hour": ({"pricing.usd_per_hour": -1.0}, "must be >= 0"),
    "pricing.gpus.*.on_demand": ({"pricing.gpus.cpu.on_demand": -0.1}, "must be >= 0"),
    "pricing.gpus.*.spot": ({"pricing.gpus.cpu.spot": math.nan}, "must be >= 0"),
    "pricing.gpus.*.reserved_1y": ({"pricing.gpus.cpu.reserved_1y": -1.0}, "must be >= 0"),
    "pricing.gpus.*.reserved_3y": ({"pricing.gpus.cpu.reserved_3y": -1.0}, "must be >= 0"),
    "pricing.gpus.*.owned": ({"pricing.gpus.cpu.owned": -1.0}, "must be >= 0"),
    "pricing.spot_interruptions_per_hour": ({"pricing.spot_interruptions_per_hour": -1.0}, "must be >= 0"),
    "pricing.usd_per_kwh": ({"pricing.usd_per_kwh": math.inf}, "must be >= 0"),
    "pricing.pue": ({"pricing.pue": 0.9}, "must be >= 1 (facility power / IT power)"),
    "gpu.memory_gib": ({"gpu.memory_gib": -1.0}, "must be > 0 or null"),
    "gpu.tdp_w": ({"gpu.tdp_w": 0.0}, "must be > 0 or null"),
    "gpu.memory_bandwidth_gb_per_s": ({"gpu.memory_bandwidth_gb_per_s": math.nan}, "must be > 0 or null"),
    "gpu.bf16_dense_tflops": ({"gpu.bf16_dense_tflops": -5.0}, "must be > 0 or null"),
    "quality.min_top1_agreement": ({"quality.enabled": True, "quality.min_top1_agreement": 1.5}, "must be in [0, 1] or null"),
    "quality.min_exact_match_rate": ({"quality.enabled": True, "quality.min_exact_match_rate": -0.1}, "must be in [0, 1] or null"),
    "quality.max_ppl_ratio": ({"quality.enabled": True, "quality.max_ppl_ratio": 0.0}, "must be > 0 or null"),
    "quality.max_task_accuracy_drop_points": (
        {"quality.enabled": True, "quality.max_task_accuracy_drop_points": math.nan}, "must be a number (points) or null"),
    "quality.n_boot": ({"quality.enabled": True, "quality.n_boot": 0}, "must be >= 1"),
    "quality.baseline_quant": ({"quality.enabled": True, "quality.baseline_quant": "nf4"}, "is not a quant option; use one of"),
}  # fmt: skip

# Shared fields nobody checks, and why (run.py's test reuses these too).
SHARED_UNCHECKED = {
    "slo.name": "the option's label (slo=<name>: Hydra refuses an unknown option and lists the known ones)",
    "pricing.name": "the option's label (pricing=<name>, as slo.name)",
    "pricing.provider": "free text shown with the price",
    "pricing.gpus.*.source": "free text: where the price comes from (provenance)",
    "pricing.gpus.*.as_of": "free text: the price's date (provenance)",
    "pricing.spot_interruptions_source": "free text (provenance)",
    "pricing.usd_per_kwh_source": "free text (provenance)",
    "pricing.pue_source": "free text (provenance)",
    "pricing.source": "free text (provenance)",
    "pricing.as_of": "free text (provenance)",
    "gpu.name": "the option's label; a price book without a price for it is refused (pricing=<book> has no ... price)",
    "gpu.label": "free text: the product's name",
    "gpu.sources.*.source": "free text: where a catalog figure comes from (provenance)",
    "gpu.sources.*.as_of": "free text: the figure's date (provenance)",
    "quality.name": "the option's label (quality=gate|none)",
}

BAD: dict[str, tuple[dict[str, typing.Any], str]] = {
    **SHARED_BAD,
    # capacity (analysis.schema.capacity_problems)
    "capacity.peak_rps": ({"capacity.peak_rps": 0.0}, "must be > 0 (req/s at the peak)"),
    "capacity.profile_rps": ({"capacity.profile_rps": []}, "is empty: give one req/s per capacity.profile_bin_s"),
    "capacity.profile_rps[]": ({"capacity.profile_rps": [1.0, -2.0]}, "every rate must be a number >= 0"),
    "capacity.profile_bin_s": ({"capacity.profile_bin_s": 0.0}, "must be > 0"),
    "capacity.trace_path": ({"capacity.trace_path": "/no/such/trace.jsonl"}, "no such file"),
    "capacity.prompt_tokens_mean": ({"capacity.prompt_tokens_mean": 0.0}, "must be > 0 (tokens per request)"),
    "capacity.output_tokens_mean": ({"capacity.output_tokens_mean": -1.0}, "must be > 0 (tokens per request)"),
    "capacity.rho_max": ({"capacity.rho_max": 0.0}, "must be in (0, 1]"),
    "capacity.availability": ({"capacity.availability": 1.5}, "must be in (0, 1]"),
    "capacity.spare_replicas": ({"capacity.spare_replicas": -1}, "must be >= 0"),
    "capacity.min_replicas": ({"capacity.min_replicas": -1}, "must be >= 0"),
    "capacity.provisioning_s": ({"capacity.provisioning_s": math.nan}, "must be >= 0"),
    "capacity.engine_start_s": ({"capacity.engine_start_s": -1.0}, "must be >= 0"),
    "capacity.spot_share_max": ({"capacity.spot_share_max": 2.0}, "must be in [0, 1]"),
    "capacity.spot_interruptions_per_hour": ({"capacity.spot_interruptions_per_hour": -1.0}, "must be >= 0"),
    "capacity.spot_restart_s": ({"capacity.spot_restart_s": -1.0}, "must be >= 0"),
    "capacity.spot_availability": ({"capacity.spot_availability": -0.5}, "must be in [0, 1]"),
    "capacity.reserved_replicas": ({"capacity.reserved_replicas": -1}, "must be >= 0"),
    "capacity.reserved_term": ({"capacity.reserved_term": "2y"}, "use 1y or 3y"),
    "capacity.hours_per_month": ({"capacity.hours_per_month": 0.0}, "must be > 0"),
    # the decision's own settings (analysis.schema.decide_problems)
    "select_load": ({"select_load": -1.0}, "must be > 0 (a load in select_load_unit) or null"),
    "select_load_unit": ({"select_load_unit": "rps"}, "use one of req/s, sessions/s, users, x speed-up"),
    "sensitivity.price_delta": ({"sensitivity.price_delta": 1.0}, "must be in (0, 1)"),
    "sensitivity.output_ratios": ({"sensitivity.output_ratios": []}, "must be two factors > 0 (low, high)"),
    "sensitivity.output_ratios[]": ({"sensitivity.output_ratios": [0.5, 0.0]}, "must be two factors > 0 (low, high)"),
    "sensitivity.spot_share": ({"sensitivity.spot_share": 2.0}, "must be in [0, 1]"),
    "n_boot": ({"n_boot": 0}, "must be >= 1"),
    "output": ({"output": "/no/such/folder/decision.json"}, "the folder /no/such/folder does not exist; create it"),
    # whatif (analysis.whatif.config_problems)
    "whatif.techniques[]": ({"whatif.techniques": ["magic"]}, "use any of"),
    "whatif.requests_per_month": ({"whatif.requests_per_month": -1.0}, "must be >= 0"),
    "whatif.semantic_cache.thresholds": ({"whatif.semantic_cache.thresholds": []}, "must be a non-empty list of cosines"),
    "whatif.semantic_cache.thresholds[]": (
        {"whatif.semantic_cache.thresholds": [0.5, 1.5]}, "must be a non-empty list of cosines in (0, 1]"),
    "whatif.semantic_cache.threshold": ({"whatif.semantic_cache.threshold": 0.0}, "must be in (0, 1]"),
    "whatif.semantic_cache.ttl_s": ({"whatif.semantic_cache.ttl_s": math.nan}, "must be > 0"),
    "whatif.semantic_cache.analyzer": ({"whatif.semantic_cache.analyzer": "word"}, "use char or char_wb"),
    "whatif.semantic_cache.ngram_min": ({"whatif.semantic_cache.ngram_min": 0}, "need 1 <= ngram_min <= ngram_max"),
    "whatif.semantic_cache.ngram_max": ({"whatif.semantic_cache.ngram_max": 2}, "need 1 <= ngram_min <= ngram_max"),
    "whatif.semantic_cache.num_clusters": ({"whatif.semantic_cache.num_clusters": 0}, "must be 1.."),
    "whatif.semantic_cache.paraphrases_per_cluster": (
        {"whatif.semantic_cache.paraphrases_per_cluster": 0}, "must be 1.."),
    "whatif.semantic_cache.requests": ({"whatif.semantic_cache.requests": 0}, "must be >= 1"),
    "whatif.cascade.small": ({"whatif.cascade.small": "a", "whatif.cascade.large": "a"}, "name two different variants"),
    "whatif.cascade.large": ({"whatif.cascade.small": "b", "whatif.cascade.large": "b"}, "name two different variants"),
    "whatif.cascade.rule": ({"whatif.cascade.rule": "score"}, "use prompt_length"),
    "whatif.cascade.threshold": ({"whatif.cascade.threshold": -1.0}, "must be >= 0 (prompt tokens)"),
}  # fmt: skip

_RUN_ONLY = "the run's quality measurement, checked by run.py's preflight; the decision does not read it"
UNCHECKED = {
    **SHARED_UNCHECKED,
    "gpu.count": "each run's own, from its run.json (the decision prices every run for its own GPUs)",
    "capacity.name": "the option's label (capacity=default|example)",
    "whatif.name": "the option's label (whatif=none|all|<technique>)",
    "whatif.techniques": "an empty list is whatif=none: no what-if section",
    "whatif.variant": "a variant label or id, checked against the results' variants when a technique needs it "
                      "(decide: whatif.variant=<x>: no such variant; the variants are: ...)",
    "whatif.semantic_cache.seed": "any integer seeds the simulated stream",
    "seed": "any integer seeds the bootstraps",
    **{f"quality.{k}": _RUN_ONLY for k in ("generic_path", "task_path", "num_prompts", "num_tasks", "max_new_tokens",
                                           "task_max_tokens", "concurrency", "request_timeout_s", "top_logprobs")},
}  # fmt: skip


@pytest.fixture(scope="module")
def base() -> DecideConfig:
    return decide.compose([])


def problems(cfg: DecideConfig) -> list[str]:
    """What `python -m analysis.decide` refuses before deciding (results on the default gpu=cpu)."""
    return input_problems(cfg, {"cpu": 0}) + whatif_data.problems(cfg)


def test_every_decide_field_is_checked():
    fields = walk(DecideConfig, groups=GROUPS)
    assert {"capacity.profile_rps[]", "pricing.gpus.*.on_demand", "whatif.cascade.rule"} <= set(fields)  # nested reached
    gaps = uncovered(fields, BAD, UNCHECKED)
    assert not gaps["missing"], f"decide settings without a check (add one to analysis/schema.py and a BAD case) or an UNCHECKED reason: {gaps['missing']}"
    assert not gaps["stale"] and not gaps["both"], gaps  # entries naming no field, or in both tables


def test_the_default_passes(base):
    assert problems(base) == []


@pytest.mark.parametrize("field", sorted(BAD))
def test_a_bad_decide_value_gives_one_line_that_names_the_field_and_the_fix(base, field):
    settings, fix = BAD[field]
    one_line(problems(with_(base, settings)), field, fix)


@pytest.mark.parametrize("field", sorted(float_cases(BAD)))
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_and_infinity_are_refused_in_every_float_field(base, field, value):
    settings, _ = BAD[field]
    key = float_cases(BAD)[field]
    one_line(problems(with_(base, with_float(settings, key, value))), field)


def test_a_profile_without_demand_is_refused(base):
    ps = problems(with_(base, {"capacity.profile_rps": [0.0, 0.0]}))
    assert len(ps) == 1 and ps[0].startswith("capacity.profile_rps=[0.0, 0.0] has no demand (every rate is 0)"), ps


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from tests.analysis.test_decide import write_run

    exp = tmp_path_factory.mktemp("settings") / "exp"
    write_run(exp, "r1_vllm_none", "none", [(1.0, [100]), (2.0, [300])])
    return exp


@pytest.mark.parametrize(
    "override,line",
    [
        ("n_boot=0", "decide: n_boot must be >= 1 (bootstrap replicates per point, e.g. 1000), got 0"),
        ("sensitivity.output_ratios=[]", "decide: sensitivity.output_ratios=[] must be two factors > 0 (low, high)"),
        ("capacity.peak_rps=inf", "decide: capacity.peak_rps=inf must be > 0 (req/s at the peak), or null"),
        ("capacity.profile_rps=[1,nan]", "decide: capacity.profile_rps=[1.0, nan]: every rate must be a number >= 0"),
        ("select_load_unit=rps", "decide: select_load_unit='rps': use one of req/s, sessions/s, users, x speed-up"),
        ("slo=fast", "decide: invalid configuration: Could not find 'slo/fast'; available options in 'slo': batch, "
                     "code_completion, interactive, none"),
        ("n_boot=many", "decide: invalid configuration: Error merging override n_boot=many: Value 'many' of type 'str' "
                        "could not be converted to Integer"),
        ("output=/no/such/folder/d.json", "decide: output=/no/such/folder/d.json: the folder /no/such/folder does "
                                          "not exist"),
        ("+capacity.peek_rps=40", "decide: capacity.peek_rps is not a setting: drop it (did you mean capacity.peak_rps?)"),
    ],
)
def test_the_command_refuses_them_in_one_line_exit_2(folder, capsys, override, line):
    """Each of these ended in a traceback (or decided on nonsense) before it was checked."""
    assert decide.main([str(folder), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(line), err
    assert not (folder / "decision.json").exists()
