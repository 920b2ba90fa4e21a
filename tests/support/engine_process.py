"""A one-engine wrapper on the process supervisor, for tests: start one launch plan on a
:class:`~engines.process.Supervisor` (its own unless one is given), wait for its health endpoint,
and tear its group down on exit. The lab itself launches engines through experiments.lease; only
tests use this (it moved here from engines/process.py).

Side effects: forks the plan's process group (and, with a private supervisor, the guardian),
appends to the log file, HTTP on loopback while waiting for ready.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from engines.base import LaunchPlan, tail
from engines.process import Child, Supervisor, read_log, wait_ready

__all__ = ["EngineProcess"]


class EngineProcess:
    """Runs one plan on a Supervisor (its own unless one is given). Context manager: the group is
    always torn down on exit.

    >>> with EngineProcess(plan, run_dir / "engine.log") as eng:
    ...     eng.wait_ready()
    """

    def __init__(self, plan: LaunchPlan, log_path: Path, poll_interval_s: float = 0.5,
                 supervisor: Supervisor | None = None) -> None:  # fmt: skip
        self.plan = plan
        self.log_path = Path(log_path)
        self.poll_interval_s = poll_interval_s
        self._own = supervisor is None
        self.supervisor = supervisor if supervisor is not None else Supervisor()
        self.child: Child | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.child._proc if self.child is not None else None

    @property
    def pgid(self) -> int | None:
        return self.child.pgid if self.child is not None else None

    @property
    def started_mono_ns(self) -> int | None:
        return self.child.started_mono_ns if self.child is not None else None

    @property
    def ready_mono_ns(self) -> int | None:
        return self.child.ready_mono_ns if self.child is not None else None

    def start(self) -> None:
        self.child = self.supervisor.spawn(self.plan.engine, self.plan.argv, log_path=self.log_path, env=self.plan.env,
                                           cwd=self.plan.cwd, critical=True, stop_timeout_s=self.plan.stop_timeout_s)  # fmt: skip

    def wait_ready(self) -> float:
        """Block until the health endpoint answers 200; seconds from start to ready."""
        assert self.child is not None, "start() first"
        return wait_ready(self.child, self.plan.base_url + self.plan.health_path, self.plan.ready_timeout_s,
                          poll_s=self.poll_interval_s)  # fmt: skip

    def stop(self) -> int | None:
        """Stops the engine's group (and, with a private supervisor, the guardian). Idempotent;
        the leader's exit code (None if it never started)."""
        if self.child is None:
            return None
        code = self.child.stop()
        if self._own:
            self.supervisor.stop_all()
        return code

    def __enter__(self) -> EngineProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        return read_log(self.log_path)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_text(), lines)
