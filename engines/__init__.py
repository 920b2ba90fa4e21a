"""Engine adapters (pure launch planning) and the one process runner (engines.process).

ADAPTERS maps the `name` of each conf/engine/<name>.yaml to its adapter class.
"""

from engines.base import EngineAdapter, HostFacts, LaunchPlan
from engines.vllm import VllmAdapter

ADAPTERS: dict[str, type[EngineAdapter]] = {VllmAdapter.name: VllmAdapter}

__all__ = ["ADAPTERS", "EngineAdapter", "HostFacts", "LaunchPlan"]
