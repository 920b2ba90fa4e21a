"""transformers adapter: plans `transformers serve` (the plain Hugging Face baseline).

Flags checked against transformers 5.23.0 (`transformers/cli/serve.py`, `transformers serve --help`).
Known quirks (../shared/reference/cpu-engines.md): no `ignore_eos` (unknown fields get HTTP 422),
so output length is forced with a `generation_config` JSON string that drops the EOS token; the
request's `model` must equal the path given to `serve`; no `[DONE]` line (the stream just ends);
no /metrics. With `continuous_batching=false` requests run one at a time (the baseline).

Side effects: none (planning only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engines.base import EngineAdapter, HostFacts, LaunchPlan

_BNB = {"int8": "bnb-8bit", "int4": "bnb-4bit"}
# CPU-sized paged KV cache: the default allocation took 5.8 GB RSS for the tiny model.
_CPU_CB_ARGS = ["--cb-num-blocks", "512", "--cb-block-size", "32"]


class TransformersAdapter(EngineAdapter):
    name = "transformers"
    dists = ("transformers",)
    checked_against = "transformers 5.23.0 (transformers serve)"

    @property
    def served_model(self) -> str:
        return self.model.path  # the server is pinned to the path and rejects any other name

    def needs_checkpoint(self) -> bool:
        return self.quant.method in ("awq", "gptq")  # int8/int4 via bitsandbytes at load time

    def problems(self, facts: HostFacts) -> list[str]:
        out: list[str] = []
        e, q = self.engine, self.quant
        if facts.engine_version is None:
            out.append(
                "engine=transformers: transformers is not installed; run `bash scripts/setup.sh` "
                "(installs .venvs/transformers) or set engine.python"
            )
        elif not facts.engine_version.startswith("5."):
            out.append(f"engine=transformers needs transformers>=5 for `transformers serve`; found {facts.engine_version}")
        if q.method in ("fp8", "awq", "gptq") or q.kernel:
            out.append(f"quant={q.name}: transformers serve only quantizes with bitsandbytes; use quant=int8 or quant=int4")
        elif q.method in _BNB and self.gpu.count == 0:
            out.append(f"quant={q.name} with engine=transformers uses bitsandbytes, which needs a GPU; use quant=none on CPU")
        if q.kv_cache_dtype != "auto":
            out.append("quant.kv_cache_dtype is not configurable in transformers serve; use auto")
        if e.tensor_parallel_size != 1:
            out.append("engine=transformers serves on one device; set engine.tensor_parallel_size=1")
        for opt in ("prefix_caching", "chunked_prefill"):
            if getattr(e, opt) is not None:
                out.append(f"engine.{opt} is not an option of transformers serve; leave it null")
        if e.speculative.method:
            out.append("engine.speculative is not supported by transformers serve; set engine.speculative.method=null")
        return out

    def launch_plan(self, port: int, facts: HostFacts) -> LaunchPlan:
        e, m, q = self.engine, self.model, self.quant
        exe = str(Path(facts.engine_python).parent / "transformers")
        cpu = self.gpu.count == 0
        argv: list[str] = [
            exe, "serve", m.path,
            "--host", e.host, "--port", str(port),
            "--device", "cpu" if cpu else "auto",
            # bf16 matmuls are slower than fp32 on CPUs without AMX
            "--dtype", "float32" if cpu and self.dtype == "auto" else self.dtype,
            "--log-level", "info",
        ]  # fmt: skip
        if e.continuous_batching is not False:
            argv.append("--continuous-batching")
            if cpu and "--cb-num-blocks" not in e.extra_args:
                argv += _CPU_CB_ARGS
        if q.method in _BNB:
            argv += ["--quantization", _BNB[q.method]]
        argv += list(e.extra_args)
        return self.make_plan(argv, self.base_env(facts), port, metrics_path=None)  # serve has no /metrics

    def request_extras(self, max_tokens: int) -> dict[str, Any]:
        if self.workload is None or not self.workload.ignore_eos:
            return {}
        # A JSON *string* that replaces the model's generation config: no EOS, greedy, exact length.
        gen = {"max_new_tokens": max_tokens, "eos_token_id": None, "do_sample": False}
        return {"generation_config": json.dumps(gen)}
