"""SGLang adapter: plans `python -m sglang.launch_server` (GPU only; no CPU build on PyPI).

Flags checked against SGLang 0.5.23 (`sglang/srt/arg_groups/fields/*.py`) and 0.5.5
(`sglang/srt/server_args.py`); see docs/engine-flags.md.

Side effects: none (planning only).
"""

from __future__ import annotations

import re
from typing import Any

from engines.base import EngineAdapter, HostFacts, LaunchPlan

_QUANT_IN_LOG = re.compile(r"server_args=ServerArgs\(.*?\bquantization=([^,)\s]+)")
# SGLang has no plain "fp8" KV dtype; fp8 means e4m3 as in vLLM.
_KV_DTYPES = {"fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2", "bfloat16": "bfloat16"}


class SglangAdapter(EngineAdapter):
    name = "sglang"
    dists = ("sglang",)
    checked_against = "sglang 0.5.23 and 0.5.5 sources"
    # its OpenAI completions return the top-k of generated tokens (`logprobs: k`), not prompt
    # log-probabilities: the quality gate reads it as generated_topk (not run here: no GPU)
    quality_measure = "generated_topk"
    # SGLang 0.5.x /metrics (docs/engine-flags.md)
    metric_names = {
        "running": "sglang:num_running_reqs",
        "waiting": "sglang:num_queue_reqs",
        "kv_usage_frac": "sglang:token_usage",
        "prefix_cache_hit_rate": "sglang:cache_hit_rate",
        "generation_tokens_total": "sglang:generation_tokens_total",
    }
    # SGLang 0.5.x (python/sglang/srt/metrics/collector.py)
    monitor_names = {
        "requests_total": "sglang:num_requests_total",
        "ttft_seconds": "sglang:time_to_first_token_seconds",
        "tpot_seconds": "sglang:time_per_output_token_seconds",
    }

    def quality_fields(self, fixed_length: bool) -> dict[str, Any]:
        return {"ignore_eos": fixed_length}

    def problems(self, facts: HostFacts) -> list[str]:
        out: list[str] = []
        if self.gpu.count == 0:
            out.append("engine=sglang needs a GPU (PyPI has no CPU build of sgl-kernel); use engine=vllm or a gpu=<GPU> plan")
        if facts.engine_version is None:
            out.append(
                "engine=sglang: SGLang is not installed; run `python3 -m venv .venvs/sglang && "
                ".venvs/sglang/bin/pip install sglang` or set engine.python"
            )
        q = self.quant
        if q.kv_cache_dtype not in ("auto", *_KV_DTYPES):
            out.append(f"quant.kv_cache_dtype={q.kv_cache_dtype!r} is not an SGLang KV dtype; use auto, fp8, fp8_e4m3 or fp8_e5m2")
        if self.engine.continuous_batching is False:
            out.append("engine=sglang always batches continuously; drop engine.continuous_batching=false")
        return out

    def launch_plan(self, port: int, facts: HostFacts) -> LaunchPlan:
        e, m, q = self.engine, self.model, self.quant
        argv: list[str] = [
            facts.engine_python, "-m", "sglang.launch_server",
            "--model-path", m.path,
            "--served-model-name", self.served_model,
            "--host", e.host,
            "--port", str(port),
            "--enable-metrics",  # /metrics is off by default in SGLang
        ]  # fmt: skip
        if m.tokenizer:
            argv += ["--tokenizer-path", m.tokenizer]
        if self.dtype != "auto":
            argv += ["--dtype", self.dtype]
        if e.max_model_len:
            argv += ["--context-length", str(e.max_model_len)]
        if e.max_num_seqs:
            argv += ["--max-running-requests", str(e.max_num_seqs)]
        if e.tensor_parallel_size != 1:
            argv += ["--tp-size", str(e.tensor_parallel_size)]
        if e.gpu_memory_fraction is not None:
            argv += ["--mem-fraction-static", str(e.gpu_memory_fraction)]
        if e.prefix_caching is False:
            argv.append("--disable-radix-cache")
        if e.chunked_prefill is False:
            argv += ["--chunked-prefill-size", "-1"]
        sp = e.speculative
        if sp.method == "ngram":
            argv += ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", str(sp.num_tokens)]
        elif sp.method == "draft":
            argv += ["--speculative-algorithm", "STANDALONE", "--speculative-draft-model-path", str(sp.draft_model),
                     "--speculative-num-draft-tokens", str(sp.num_tokens)]  # fmt: skip
        if q.kernel:
            argv += ["--quantization", q.kernel]
        elif q.method == "fp8":
            argv += ["--quantization", "fp8"]  # dynamic; pre-quantized checkpoints are detected from config.json
        if q.kv_cache_dtype != "auto":
            argv += ["--kv-cache-dtype", _KV_DTYPES.get(q.kv_cache_dtype, q.kv_cache_dtype)]
        argv += list(e.extra_args)
        return self.make_plan(argv, self.base_env(facts), port, metrics_path="/metrics")  # with --enable-metrics

    def effective_quant(self, log_text: str) -> str | None:
        m = _QUANT_IN_LOG.search(log_text)
        return f"quantization={m.group(1)}" if m else None

    def request_extras(self, max_tokens: int) -> dict[str, Any]:
        return {"ignore_eos": bool(self.workload.ignore_eos)} if self.workload is not None else {}
