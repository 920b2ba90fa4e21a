"""Endpoint adapter: benchmarks an already-running OpenAI-compatible server; starts nothing.

`engine.base_url` is the server's base URL; `engine.api_key_env` is the NAME of the environment
variable that holds its API key. The key is read from the environment by the processes that need
it (health check, load generator) and is never written to run.json, logs or specs.

Side effects: none (planning only).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from engines.base import EngineAdapter, HostFacts, LaunchPlan


class EndpointAdapter(EngineAdapter):
    name = "endpoint"
    checked_against = "OpenAI-compatible HTTP API (chat/completions, streaming)"

    def problems(self, facts: HostFacts) -> list[str]:
        out: list[str] = []
        url = self.engine.base_url
        if not url:
            out.append("engine=endpoint needs engine.base_url, e.g. engine.base_url=http://127.0.0.1:8000")
        elif urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            out.append(f"engine.base_url={url!r} is not an http(s) URL; e.g. engine.base_url=http://127.0.0.1:8000")
        if not (self.model.served_name or self.model.name):
            out.append("engine=endpoint needs model.served_name: the model name the server expects")
        return out

    def launch_plan(self, port: int, facts: HostFacts) -> LaunchPlan:
        e = self.engine
        u = urlsplit(e.base_url or "")
        return LaunchPlan(
            engine=self.name,
            argv=(),
            host=u.hostname or "",
            port=u.port or (443 if u.scheme == "https" else 80),
            health_path=e.health_path,
            metrics_path=e.metrics_path,
            served_model=self.served_model,
            ready_timeout_s=float(e.ready_timeout_s),
            external=True,
            url=(e.base_url or "").rstrip("/"),
            api_key_env=e.api_key_env,
        )

    def needs_checkpoint(self) -> bool:
        return False  # whatever the server serves is what is measured

    def request_extras(self, max_tokens: int) -> dict[str, Any]:
        # Most OpenAI-compatible servers built on vLLM/SGLang accept ignore_eos; set
        # workload.ignore_eos=false for ones that reject unknown fields.
        return {"ignore_eos": True} if self.workload is not None and self.workload.ignore_eos else {}
