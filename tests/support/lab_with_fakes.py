"""Test-only entry point: the real lab (`run.py`) with the fake engines registered.

`python tests/support/lab_with_fakes.py [hydra overrides]` behaves exactly like `python run.py`
but also knows `engine.name=timing` (tests/support/fake_adapter.py), `engine.name=timing_topk`
(the same server read through the quality gate's generated_topk measure) and `engine.name=faulty`
(tests/support/faulty_engine.py, configured through the environment variable
SERVELAB_FAULTY_ARGS, e.g. "--crash-after-requests 15"). A lab started as a subprocess cannot
see a test's monkeypatched ADAPTERS, hence this file. Never used by the lab itself.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engines import ADAPTERS  # noqa: E402
from engines.base import EngineAdapter, HostFacts, LaunchPlan  # noqa: E402
from tests.support.fake_adapter import TimingServerAdapter  # noqa: E402

SUPPORT = ROOT / "tests" / "support"


class FaultyEngineAdapter(EngineAdapter):
    """Launches tests/support/faulty_engine.py around the timing server."""

    name = "faulty"

    def launch_plan(self, port: int, facts: HostFacts) -> LaunchPlan:
        extra = shlex.split(os.environ.get("SERVELAB_FAULTY_ARGS", ""))
        argv = (sys.executable, str(SUPPORT / "faulty_engine.py"), *extra, "--",
                "--port", str(port), "--ttft-ms", "15", "--itl-ms", "3")  # fmt: skip
        stop_s = float(os.environ.get("SERVELAB_FAULTY_STOP_S", "5"))
        return LaunchPlan(engine=self.name, argv=argv, host=self.engine.host, port=port, served_model=self.served_model,
                          ready_timeout_s=60, stop_timeout_s=stop_s)  # fmt: skip


class TimingTopkAdapter(TimingServerAdapter):
    """The timing server read as an engine without prompt log-probabilities (as SGLang or TGI):
    the quality gate's generated_topk measure, on token strings (no token ids asked)."""

    name = "timing_topk"
    quality_measure = "generated_topk"

    def quality_fields(self, fixed_length: bool) -> dict:
        return {}


# Run by the engine "process" of engine.name=timing_env: records a hash of the variable
# SERVELAB_TEST_TOKEN that engine.env gave it (the file named by SERVELAB_ENV_PROBE), then becomes
# the timing server.
_ENV_PROBE = ("import hashlib, os, runpy, sys; "
              "open(os.environ['SERVELAB_ENV_PROBE'], 'w').write("
              "hashlib.sha256(os.environ.get('SERVELAB_TEST_TOKEN', '').encode()).hexdigest()); "
              "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


class TimingEnvAdapter(TimingServerAdapter):
    """The timing server started with the engine's environment (base_env: engine.env included),
    as the real adapters start theirs: what engine.env secrets reach, and what is written of them."""

    name = "timing_env"

    def launch_plan(self, port: int, facts: HostFacts) -> LaunchPlan:
        argv = (sys.executable, "-c", _ENV_PROBE, str(SUPPORT / "timing_server.py"), "--port", str(port),
                "--ttft-ms", "15", "--itl-ms", "3")  # fmt: skip
        return self.make_plan(list(argv), self.base_env(facts), port, metrics_path=None)


ADAPTERS.setdefault("timing", TimingServerAdapter)
ADAPTERS.setdefault("timing_env", TimingEnvAdapter)
ADAPTERS.setdefault("timing_topk", TimingTopkAdapter)
ADAPTERS.setdefault("faulty", FaultyEngineAdapter)

if __name__ == "__main__":
    import runpy

    # As `python run.py ...`: Hydra finds conf/ next to the script that runs as __main__.
    sys.argv[0] = str(ROOT / "run.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
