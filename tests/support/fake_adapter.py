"""Test-only adapter that "launches" the timing server, so the whole runner pipeline can be
tested in seconds. Registered into engines.ADAPTERS by the tests that use it, never by the lab."""

from __future__ import annotations

import sys

from engines.base import EngineAdapter, HostFacts, LaunchPlan
from tests.conftest import SUPPORT


class TimingServerAdapter(EngineAdapter):
    name = "timing"
    # non-streamed completions answer from a toy model with prompt_logprobs (timing_server.toy_completion)
    quality_measure = "prompt_logprobs"

    def quality_fields(self, fixed_length: bool) -> dict:
        return {"logprobs": 1, "return_token_ids": True}

    def launch_plan(self, port: int, facts: HostFacts) -> LaunchPlan:
        argv = (sys.executable, str(SUPPORT / "timing_server.py"), "--port", str(port), "--ttft-ms", "15", "--itl-ms", "3",
                *self.engine.extra_args,  # e.g. a bad flag: the "engine" exits at start (sweep failure tests)
                # any quantization "degrades" the toy model by a known share of swapped top-1 tokens
                *(() if self.quant.name == "none" else ("--quality-noise", "0.25")))
        return LaunchPlan(engine=self.name, argv=argv, host=self.engine.host, port=port, served_model=self.served_model,
                          ready_timeout_s=30, stop_timeout_s=5)  # fmt: skip
