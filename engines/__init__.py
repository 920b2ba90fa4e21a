"""Engine adapters (pure launch planning) and the one process runner (engines.process).

ADAPTERS maps the `name` of each conf/engine/<name>.yaml to its adapter class.
"""

from engines.base import EngineAdapter, HostFacts, LaunchPlan
from engines.endpoint import EndpointAdapter
from engines.sglang import SglangAdapter
from engines.tgi import TgiAdapter
from engines.transformers import TransformersAdapter
from engines.vllm import VllmAdapter

ADAPTERS: dict[str, type[EngineAdapter]] = {
    a.name: a for a in (VllmAdapter, SglangAdapter, TgiAdapter, TransformersAdapter, EndpointAdapter)
}

__all__ = ["ADAPTERS", "EngineAdapter", "HostFacts", "LaunchPlan"]
