"""The one process runner: executes any :class:`~engines.base.LaunchPlan`.

Side effects (this is the place for them): starts the engine in its own session/process group,
tees its stdout+stderr into a log file, polls its health endpoint over loopback HTTP, and tears
the whole group down with SIGTERM -> bounded wait -> SIGKILL. The child also gets
PR_SET_PDEATHSIG so that it is signalled if the lab itself dies without running teardown
(e.g. SIGKILL), which keeps orphan engines from piling up.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from engines.base import LaunchPlan, strip_ansi, tail

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine could not be brought up. `log_tail` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.exit_code = exit_code


class EngineDied(EngineError):
    """The engine process exited before it became healthy."""


class EngineStartTimeout(EngineError):
    """The engine did not become healthy within the plan's ready timeout."""


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process is left in process group `pgid` (zombies count until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EngineProcess:
    """Runs one plan. Use as a context manager: the group is always torn down on exit.

    >>> with EngineProcess(plan, run_dir / "engine.log") as eng:
    ...     eng.wait_ready()
    """

    def __init__(self, plan: LaunchPlan, log_path: Path, poll_interval_s: float = 0.5) -> None:
        self.plan = plan
        self.log_path = Path(log_path)
        self.poll_interval_s = poll_interval_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None
        self.started_mono_ns: int | None = None
        self.ready_mono_ns: int | None = None
        self._log_file = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.plan.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
        self._log_file.write(("$ " + " ".join(self.plan.argv) + "\n").encode())
        log.info("starting %s: %s", self.plan.engine, " ".join(self.plan.argv))
        self.started_mono_ns = time.monotonic_ns()
        self.proc = subprocess.Popen(
            list(self.plan.argv),
            env=env,
            cwd=self.plan.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: engines spawn workers we must also stop
            preexec_fn=_set_pdeathsig,
        )
        self.pgid = self.proc.pid  # session leader: pgid == pid

    def wait_ready(self) -> float:
        """Block until the health endpoint answers 200; returns seconds from start to ready.

        Checks on every poll whether the process has exited, so a crash is reported at once
        instead of after the timeout.
        """
        assert self.proc is not None and self.started_mono_ns is not None, "start() first"
        url = self.plan.base_url + self.plan.health_path
        deadline = time.monotonic() + self.plan.ready_timeout_s
        next_note = time.monotonic() + 15
        while True:
            code = self.proc.poll()
            if code is not None:
                raise EngineDied(
                    f"{self.plan.engine} exited with code {code} before becoming healthy "
                    f"(log: {self.log_path})",
                    log_tail=self.log_tail(),
                    exit_code=code,
                )
            if _http_ok(url, timeout_s=2.0):
                self.ready_mono_ns = time.monotonic_ns()
                return (self.ready_mono_ns - self.started_mono_ns) / 1e9
            now = time.monotonic()
            if now >= deadline:
                raise EngineStartTimeout(
                    f"{self.plan.engine} was not healthy at {url} after {self.plan.ready_timeout_s:.0f} s "
                    f"(raise engine.ready_timeout_s; log: {self.log_path})",
                    log_tail=self.log_tail(),
                )
            if now >= next_note:
                waited = (time.monotonic_ns() - self.started_mono_ns) / 1e9
                log.info("waiting for %s to become healthy (%.0f s so far)", self.plan.engine, waited)
                next_note = now + 15
            time.sleep(self.poll_interval_s)

    def stop(self) -> int | None:
        """SIGTERM the group, wait up to stop_timeout_s, then SIGKILL it. Idempotent.

        Returns the leader's exit code (None if it never started).
        """
        if self.proc is None:
            return None
        pgid = self.pgid
        code = self.proc.poll()
        if pgid is not None and group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + self.plan.stop_timeout_s
            while time.monotonic() < deadline:
                self.proc.poll()  # reap the leader so it does not linger as a zombie
                if not group_alive(pgid):
                    break
                time.sleep(0.1)
            else:
                log.warning("%s ignored SIGTERM for %.0f s; sending SIGKILL", self.plan.engine, self.plan.stop_timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                kill_deadline = time.monotonic() + 10
                while group_alive(pgid) and time.monotonic() < kill_deadline:
                    self.proc.poll()
                    time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = self.proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def __enter__(self) -> EngineProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection ------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return strip_ansi(self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_text(), lines)


def _http_ok(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> bool:
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - configured engine URL
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def wait_http_ready(url: str, timeout_s: float, headers: dict[str, str] | None = None, poll_s: float = 0.5) -> float:
    """Poll `url` until it answers 200 (for servers the lab did not start); seconds waited."""
    t0 = time.monotonic()
    while not _http_ok(url, timeout_s=2.0, headers=headers):
        if time.monotonic() - t0 > timeout_s:
            raise EngineStartTimeout(f"{url} did not answer 200 within {timeout_s:.0f} s (check engine.base_url / health_path)")
        time.sleep(poll_s)
    return time.monotonic() - t0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
