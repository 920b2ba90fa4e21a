"""TGI adapter: plans `text-generation-launcher`, natively or as `docker run` of the TGI image.

Flags checked against text-generation-inference v3.3.7 (`launcher/src/main.rs`, HEAD db931fcf).
Upstream TGI is in maintenance mode since 2025-12-11 (minor fixes only); prefer vLLM or SGLang
for new work. TGI's OpenAI API has no `ignore_eos` and streams usage only on chat, so output
length cannot be forced and preflight asks for workload.endpoint=chat.

Side effects: none (planning only).
"""

from __future__ import annotations

import dataclasses
from pathlib import PurePosixPath

from engines.base import EngineAdapter, HostFacts, LaunchPlan

DEFAULT_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.5"  # the README's tag
# Engine-neutral method -> --quantize (online bitsandbytes for int8/int4; awq/gptq from checkpoints)
_QUANTIZE = {"fp8": "fp8", "awq": "awq", "gptq": "gptq", "int8": "bitsandbytes", "int4": "bitsandbytes-nf4"}
_KV_DTYPES = {"fp8": "fp8_e4m3fn", "fp8_e4m3": "fp8_e4m3fn", "fp8_e5m2": "fp8_e5m2"}


class TgiAdapter(EngineAdapter):
    name = "tgi"
    binaries = ("text-generation-launcher", "docker")
    checked_against = "text-generation-inference v3.3.7 launcher (maintenance mode)"
    forces_output_length = False
    usage_endpoints = ("chat",)
    # chat completions with `logprobs: true, top_logprobs: k`: the quality gate's generated_topk
    # measure (no prompt log-probabilities on that API; not run here: no GPU)
    quality_measure = "generated_topk"
    # TGI 3.x /metrics (docs/engine-flags.md)
    metric_names = {"running": "tgi_batch_current_size", "waiting": "tgi_queue_size"}
    # TGI 3.x has no TTFT/TPOT histogram; its finished-request counter, and the _sum of its
    # generated-tokens-per-request histogram as the token counter (both only grow)
    # (prometheus_client's parser names the counter tgi_request_count_total)
    monitor_names = {"requests_total": "tgi_request_count_total",
                     "generation_tokens_total": "tgi_request_generated_tokens_sum"}

    def needs_checkpoint(self) -> bool:
        return self.quant.method in ("awq", "gptq")  # int8/int4: bitsandbytes at load time

    def problems(self, facts: HostFacts) -> list[str]:
        out: list[str] = []
        e, q = self.engine, self.quant
        if e.launcher not in ("native", "docker"):
            out.append(f"engine.launcher={e.launcher!r}: use native or docker")
        elif e.launcher == "native" and "text-generation-launcher" not in facts.binaries:
            out.append(
                "engine=tgi: text-generation-launcher is not on PATH; install TGI "
                "(https://huggingface.co/docs/text-generation-inference) or pass engine.launcher=docker"
            )
        elif e.launcher == "docker" and "docker" not in facts.binaries:
            out.append("engine=tgi engine.launcher=docker: docker is not on PATH; install Docker or use engine.launcher=native")
        if self.gpu.count == 0:
            out.append("engine=tgi needs a GPU in servelab (its CPU image is Intel-only); use engine=vllm or a gpu=<GPU> plan")
        if q.kernel:
            out.append("quant.kernel is not a TGI option (TGI picks kernels itself); drop it")
        if q.kv_cache_dtype not in ("auto", *_KV_DTYPES):
            out.append(f"quant.kv_cache_dtype={q.kv_cache_dtype!r}: TGI supports fp8 (e4m3fn) and fp8_e5m2")
        sp = e.speculative
        if sp.method == "draft":
            out.append("engine=tgi cannot speculate with a draft model (only n-gram/Medusa via --speculate); use method=ngram")
        if e.continuous_batching is False:
            out.append("engine=tgi always batches continuously; drop engine.continuous_batching=false")
        return out

    def launch_plan(self, port: int, facts: HostFacts) -> LaunchPlan:
        e, m, q = self.engine, self.model, self.quant
        env: dict[str, str] = {}
        args: list[str] = []
        if self.dtype in ("float16", "bfloat16"):
            args += ["--dtype", self.dtype]
        if e.max_model_len:
            args += ["--max-total-tokens", str(e.max_model_len)]
        if e.max_num_seqs:
            args += ["--max-batch-size", str(e.max_num_seqs)]
        if e.tensor_parallel_size != 1:
            args += ["--num-shard", str(e.tensor_parallel_size)]
        if e.gpu_memory_fraction is not None:
            args += ["--cuda-memory-fraction", str(e.gpu_memory_fraction)]
        if e.speculative.method == "ngram":
            args += ["--speculate", str(e.speculative.num_tokens)]
        if q.method in _QUANTIZE:
            args += ["--quantize", _QUANTIZE[q.method]]
        if q.kv_cache_dtype != "auto":
            args += ["--kv-cache-dtype", _KV_DTYPES.get(q.kv_cache_dtype, q.kv_cache_dtype)]
        # Prefix caching and chunked prefill are environment switches in TGI 3.x.
        if e.prefix_caching is not None:
            env["PREFIX_CACHING"] = "1" if e.prefix_caching else "0"
        if e.chunked_prefill is not None:
            env["PREFILL_CHUNKING"] = "1" if e.chunked_prefill else "0"
        env.update({str(k): str(v) for k, v in e.env.items()})
        args += list(e.extra_args)

        if e.launcher == "docker":
            model_id, mounts = m.path, []
            if facts.model_is_local:
                model_id = str(PurePosixPath("/model"))
                mounts = ["-v", f"{m.path}:/model:ro"]
            # `-e NAME` without a value: docker copies it from the client's environment, so no value
            # is on the command line (visible in ps, the engine log's header, run.json's argv)
            env_flags = [x for k in env for x in ("-e", k)]
            argv = [
                "docker", "run", "--rm", "--init", "--name", f"servelab-tgi-{port}",
                "--gpus", "all", "--shm-size", "1g", "-p", f"{e.host}:{port}:80", *mounts, *env_flags,
                e.image or DEFAULT_IMAGE, "--model-id", model_id, *args,
            ]  # fmt: skip
        else:
            argv = ["text-generation-launcher", "--model-id", m.path, "--hostname", e.host, "--port", str(port), *args]
        plan = self.make_plan(argv, env, port, metrics_path="/metrics")
        return dataclasses.replace(plan, container=f"servelab-tgi-{port}") if e.launcher == "docker" else plan
