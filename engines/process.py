"""The one process supervisor: every child of a run (engine, samplers, load generator) starts here.

:class:`Supervisor` starts each child in its own session/process group with PR_SET_PDEATHSIG,
stdin from /dev/null and stdout+stderr appended to a log file, optionally pinned to CPUs, and
registers its group with the guardian (:mod:`engines.guardian`), a tiny process that stops every
registered group if the lab dies without tearing down (even kill -9). :meth:`Child.stop` tears a
whole group down with SIGTERM -> bounded wait -> SIGKILL and reaps it. :meth:`Supervisor.stop_all`
stops everything in reverse start order and never raises. :func:`wait_ready` polls an engine's
health endpoint while watching for its early death. :func:`shielded_teardown` and
:func:`cancel_on_signal` set the SIGINT/SIGTERM policy: a second signal shortens grace periods
("hurry") instead of interrupting teardown.

Side effects (this is the place for them): forks and signals processes, opens log files,
changes signal handlers while the context managers are active, HTTP on loopback.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from engines.auth import same_origin
from engines.base import strip_ansi, tail
from engines.guardian import group_alive, stop_containers

log = logging.getLogger(__name__)

GUARDIAN = Path(__file__).resolve().with_name("guardian.py")
PR_SET_PDEATHSIG = 1

try:  # loaded before any fork: dlopen between fork and exec is not safe
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux: no PDEATHSIG; the guardian still covers the lab's death
    _LIBC = None


class EngineError(RuntimeError):
    """The engine could not be brought up or kept up. `log_tail` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.log_tail = log_tail
        self.exit_code = exit_code


class EngineDied(EngineError):
    """The engine process exited before it became healthy."""


class EngineStartTimeout(EngineError):
    """The engine did not become healthy within the plan's ready timeout."""


class EngineCrashed(EngineError):
    """The engine exited after it had become ready (mid-run)."""

    @classmethod
    def of(cls, child: Child) -> EngineCrashed:
        code = child.poll()
        return cls(f"{child.name} exited with code {code} during the run (log: {child.log_path})",
                   log_tail=child.log_tail(), exit_code=code)  # fmt: skip


__all__ = [
    "Child", "EngineCrashed", "EngineDied", "EngineError", "EngineStartTimeout", "Shield",
    "Supervisor", "cancel_on_signal", "free_port", "group_alive", "shielded_teardown", "wait_http_ready", "wait_ready",
]  # fmt: skip


def _child_setup(parent_pid: int, cpus: list[int] | None, pdeathsig: int | None) -> Callable[[], None]:
    """What runs in the child between fork and exec (keep it to async-signal-safe-ish calls)."""

    def setup() -> None:
        if pdeathsig is not None and _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, pdeathsig)
            if os.getppid() != parent_pid:  # the lab died before prctl took effect
                os.kill(os.getpid(), pdeathsig)
        # A shell that started the lab in the background (or nohup) may have set SIGINT/SIGTERM to
        # "ignored", which exec keeps; children must answer them the usual way.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class Child:
    """One supervised process group (leader pid == pgid). Made by :meth:`Supervisor.spawn`."""

    def __init__(self, sup: Supervisor, name: str, proc: subprocess.Popen[bytes], *, argv: Sequence[str],
                 log_path: Path, started_mono_ns: int, critical: bool, cpus: list[int] | None,
                 stop_timeout_s: float, container: str | None = None) -> None:  # fmt: skip
        self._sup = sup
        # a docker container this child (`docker run`) started: stopped and removed with it
        self.container = container
        self._proc = proc
        self.name = name
        self.argv = tuple(argv)
        self.pid = proc.pid
        self.pgid = proc.pid  # session leader: pgid == pid
        self.log_path = log_path
        self.started_mono_ns = started_mono_ns
        self.ready_mono_ns: int | None = None
        self.critical = critical
        self.cpus = cpus
        self.stop_timeout_s = stop_timeout_s
        self.stop_requested = False  # set by stop(): an exit after that is not a failure
        self._registered = True
        self._stopped = False

    def __repr__(self) -> str:
        return f"Child({self.name!r}, pid={self.pid}, returncode={self.returncode})"

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def poll(self) -> int | None:
        """The leader's exit code, or None while it runs (reaps it: no zombie is left)."""
        code = self._proc.poll()
        if code is not None and self._registered and not group_alive(self.pgid):
            self._sup._unregister(self)
        return code

    def alive(self) -> bool:
        return self.poll() is None

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to `timeout_s` for the leader to exit on its own; its exit code or None."""
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        return self.poll()

    def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM the whole group, wait up to `grace_s` (default: stop_timeout_s; shortened while the
        supervisor hurries), SIGKILL what is left, reap the leader. Idempotent; the leader's exit code
        (None only if it could not be reaped)."""
        self.stop_requested = True
        if self._stopped:
            return self.returncode
        grace = self.stop_timeout_s if grace_s is None else grace_s
        pgid = self.pgid
        if self.container:  # first the container (its client only relays signals), then the client
            limit = min(grace, self._sup.hurry_grace_s) if self._sup.hurrying else grace
            log.info("stopping container %s", self.container)
            stop_containers([self.container], limit)
            self._sup._tell(f"uncontainer {self.container}")
        if group_alive(pgid):
            log.log(logging.INFO if self.critical else logging.DEBUG, "stopping %s (pid %d)", self.name, self.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            t0 = time.monotonic()
            while True:
                self._proc.poll()  # reap the leader so it does not linger as a zombie
                if not group_alive(pgid):
                    break
                limit = min(grace, self._sup.hurry_grace_s) if self._sup.hurrying else grace
                if time.monotonic() - t0 >= limit:
                    log.warning("%s did not exit %.1f s after SIGTERM; sending SIGKILL", self.name, limit)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pgid, signal.SIGKILL)
                    kill_deadline = time.monotonic() + 10
                    while group_alive(pgid) and time.monotonic() < kill_deadline:
                        self._proc.poll()
                        time.sleep(0.02)
                    break
                time.sleep(0.02)
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # e.g. stuck in uninterruptible sleep; the guardian keeps it
            log.error("%s (pid %d) could not be reaped", self.name, self.pid)
            return None
        if not group_alive(pgid):
            self._sup._unregister(self)
        self._stopped = True
        return code

    # -- inspection ------------------------------------------------------------------------
    def log_text(self) -> str:
        return read_log(self.log_path)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_text(), lines)


class Supervisor:
    """Owns every child process of one run. Context manager: leaving it stops them all.

    Call spawn() from the main thread: PR_SET_PDEATHSIG fires when the spawning *thread* exits,
    so from other threads it is skipped (the guardian still covers the lab's death).
    A fork of the lab without exec (multiprocessing "fork") would keep the guardian's pipe
    open and so delay the guardian's cleanup until that fork exits too.
    """

    def __init__(self, *, guardian: bool = True, guardian_grace_s: float = 5.0, hurry_grace_s: float = 1.0,
                 pdeathsig: int = signal.SIGTERM) -> None:  # fmt: skip
        self.children: list[Child] = []
        self.hurry_grace_s = hurry_grace_s
        self.guardian_grace_s = guardian_grace_s
        self.pdeathsig = pdeathsig
        self._use_guardian = guardian
        self._guardian: subprocess.Popen[bytes] | None = None
        self._hurry = False
        self._lock = threading.RLock()

    # -- starting --------------------------------------------------------------------------
    def spawn(self, name: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
              cwd: str | Path | None = None, critical: bool = False, cpus: Collection[int] | None = None,
              stop_timeout_s: float = 10.0, container: str | None = None) -> Child:  # fmt: skip
        """Start `argv` as a new supervised child (see the class doc); env is added to os.environ.

        `critical` children are the ones whose exit is a run failure (failed_critical()).
        `container`: the docker container `argv` (a `docker run`) starts; stop() and the guardian
        (also after kill -9 of the lab) run `docker stop` then `docker rm -f` on it.
        """
        args = [str(a) for a in argv]
        if not args:
            raise ValueError(f"{name}: empty command line")
        cpu_list = sorted({int(c) for c in cpus}) if cpus is not None else None
        if cpu_list is not None and (not cpu_list or cpu_list[0] < 0):
            raise ValueError(f"{name}: cpus must be a non-empty set of CPU numbers, got {cpus!r}")
        full_env = dict(os.environ)
        full_env.update(env or {})
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        main = threading.current_thread() is threading.main_thread()
        setup = _child_setup(os.getpid(), cpu_list, self.pdeathsig if main else None)
        with self._lock:
            self._ensure_guardian()
            if container:  # registered before it exists: a kill -9 right after the start still removes it
                self._tell(f"container {container}")
            with open(log_path, "ab", buffering=0) as lf:  # the child keeps its own copy of the fd
                lf.write(("$ " + shlex.join(args) + "\n").encode())
                started = time.monotonic_ns()
                try:
                    proc = subprocess.Popen(args, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=lf,
                                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=setup)  # fmt: skip
                except subprocess.SubprocessError as e:  # raised in preexec: only the affinity can fail
                    raise ValueError(f"{name}: cannot run on CPUs {cpu_list} ({e}); "
                                     f"this machine has {sorted(os.sched_getaffinity(0))}") from e  # fmt: skip
            child = Child(self, name, proc, argv=args, log_path=log_path, started_mono_ns=started, critical=critical,
                          cpus=cpu_list, stop_timeout_s=stop_timeout_s, container=container)  # fmt: skip
            self.children.append(child)
            self._tell(f"add {child.pgid}")
        log.log(logging.INFO if critical else logging.DEBUG, "started %s (pid %d%s): %s", name, child.pid,
                f", cpus {cpu_list}" if cpu_list else "", shlex.join(args))  # fmt: skip
        return child

    # -- watching --------------------------------------------------------------------------
    def failed_critical(self) -> Child | None:
        """A critical child that exited without being asked to, else None. Non-blocking; call often."""
        for c in self.children:
            if c.critical and not c.stop_requested and c.poll() is not None:
                return c
        return None

    @property
    def hurrying(self) -> bool:
        return self._hurry

    def hurry(self) -> None:
        """Shorten every grace period from now on (safe to call from a signal handler)."""
        self._hurry = True

    # -- stopping --------------------------------------------------------------------------
    def stop_all(self, hurry: bool = False) -> dict[str, int | None]:
        """Stop every child in reverse start order, then the guardian. Never raises; idempotent.

        A Ctrl-C that reaches here (no shield active) hurries the rest instead of aborting it.
        Returns {name: leader exit code} (for repeated names, the last child started).
        """
        if hurry:
            self.hurry()
        for c in reversed(self.children):
            for _attempt in range(3):
                try:
                    c.stop()
                    break
                except KeyboardInterrupt:
                    self.hurry()
                except Exception as e:  # noqa: BLE001 - one failing stop must not leave the others running
                    log.error("could not stop %s (pid %d): %s: %s", c.name, c.pid, type(e).__name__, e)
                    break
        try:
            self._close_guardian()
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
            log.error("could not close the guardian: %s", e)
        return {c.name: c.returncode for c in self.children}

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # -- the guardian ----------------------------------------------------------------------
    @property
    def guardian_pid(self) -> int | None:
        return self._guardian.pid if self._guardian is not None else None

    def _ensure_guardian(self) -> None:
        if not self._use_guardian or (self._guardian is not None and self._guardian.poll() is None):
            return
        restarted = self._guardian is not None
        self._guardian = subprocess.Popen(
            [sys.executable, "-I", "-S", str(GUARDIAN), "--grace-s", str(self.guardian_grace_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # holding the lab's stderr open would outlive the lab's pipe readers
            start_new_session=True,  # no terminal signal reaches it
        )
        if restarted:
            log.warning("the guardian process had exited; started a new one (pid %d)", self._guardian.pid)
            for c in self.children:
                if c._registered:
                    self._write(f"add {c.pgid}")

    def _write(self, line: str) -> bool:
        g = self._guardian
        if g is None or g.stdin is None:
            return False
        try:
            g.stdin.write(line.encode() + b"\n")
            g.stdin.flush()
        except (OSError, ValueError):
            return False
        return True

    def _tell(self, line: str) -> None:
        if self._use_guardian and not self._write(line):
            self._ensure_guardian()
            self._write(line)

    def _unregister(self, child: Child) -> None:
        with self._lock:
            if child._registered:
                child._registered = False
                if self._guardian is not None and self._guardian.poll() is None:
                    self._write(f"del {child.pgid}")

    def _close_guardian(self) -> None:
        g, self._guardian = self._guardian, None
        if g is None:
            return
        if g.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                g.stdin.write(b"exit\n")
                g.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            g.wait(timeout=1.0)  # it stops anything still registered on its own, then exits


# -- readiness ------------------------------------------------------------------------------
def read_log(path: Path) -> str:
    """A child's log as text, ANSI colours stripped ("" before it exists)."""
    try:
        return strip_ansi(Path(path).read_text(errors="replace"))
    except FileNotFoundError:
        return ""


def wait_ready(child: Child, url: str, timeout_s: float, *, poll_s: float = 0.5,
               headers: Mapping[str, str] | None = None) -> float:  # fmt: skip
    """Block until `url` answers 200; seconds from the child's start to ready.

    Checks on every poll whether the child has exited, so a crash is reported at once (EngineDied)
    instead of after the timeout (EngineStartTimeout).
    """
    deadline = time.monotonic() + timeout_s
    next_note = time.monotonic() + 15
    while True:
        code = child.poll()
        if code is not None:
            raise EngineDied(f"{child.name} exited with code {code} before becoming healthy (log: {child.log_path})",
                             log_tail=child.log_tail(), exit_code=code)  # fmt: skip
        if _http_ok(url, timeout_s=2.0, headers=dict(headers or {})):
            child.ready_mono_ns = time.monotonic_ns()
            return (child.ready_mono_ns - child.started_mono_ns) / 1e9
        now = time.monotonic()
        if now >= deadline:
            raise EngineStartTimeout(f"{child.name} was not healthy at {url} after {timeout_s:.0f} s "
                                     f"(raise engine.ready_timeout_s; log: {child.log_path})",
                                     log_tail=child.log_tail())  # fmt: skip
        if now >= next_note:
            log.info("waiting for %s to become healthy (%.0f s so far)", child.name,
                     (time.monotonic_ns() - child.started_mono_ns) / 1e9)  # fmt: skip
            next_note = now + 15
        time.sleep(poll_s)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only within the request's origin (scheme, host, port): urllib would send
    the Authorization header on to any URL the server names, https to http included."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if not same_origin(req.full_url, newurl):
            log.warning("not following the redirect of %s to another origin (%s): the key is not sent there",
                        req.full_url, urllib.parse.urlsplit(newurl).netloc)  # fmt: skip
            return None  # urllib then raises HTTPError: the probe fails
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_AUTH_OPENER = urllib.request.build_opener(_SameOriginRedirects)


def _http_ok(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> bool:
    try:
        req = urllib.request.Request(url, headers=headers or {})
        opener = _AUTH_OPENER if any(k.lower() == "authorization" for k in (headers or {})) else None
        with (opener.open(req, timeout=timeout_s) if opener else urllib.request.urlopen(req, timeout=timeout_s)) as r:  # noqa: S310 - configured engine URL
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
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


# -- signal policy --------------------------------------------------------------------------
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Shield:
    """What arrived while a signal policy was active (signal numbers, in order)."""

    signals: list[int] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return bool(self.signals)


def _say(msg: str) -> None:
    # Raw write: a handler that logs or prints can hit "reentrant call" inside a buffered stream.
    with contextlib.suppress(OSError):
        os.write(2, msg.encode())


@contextlib.contextmanager
def _handlers(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    # A signal the lab was started with ignored (e.g. SIGINT for a background job of a script) stays
    # ignored, as Python itself does at start-up.
    old = {s: signal.getsignal(s) for s in _SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


@contextlib.contextmanager
def shielded_teardown(supervisor: Supervisor | None) -> Iterator[Shield]:
    """While active, SIGINT and SIGTERM never raise: each one only makes `supervisor` hurry (every
    grace period shortened to its hurry_grace_s) and is counted in the yielded Shield, so the
    caller can still record that the user asked to cancel. The previous handlers come back on exit.

    >>> with shielded_teardown(sup) as shield:
    ...     sup.stop_all(); write_artifacts()
    >>> if shield.interrupted: status = "cancelled"
    """
    shield = Shield()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        shield.signals.append(signum)
        if supervisor is not None:
            supervisor.hurry()
        _say(f"servelab: {signal.Signals(signum).name} while stopping: finishing with shorter grace periods\n")

    with _handlers(on_signal):
        yield shield


@contextlib.contextmanager
def cancel_on_signal(supervisor: Supervisor | None) -> Iterator[Shield]:
    """While active, the first SIGINT or SIGTERM raises KeyboardInterrupt (the run is cancelled);
    every later one only makes `supervisor` hurry, so a second Ctrl-C or kill cannot break the
    teardown that the first one started. Signals are recorded in the yielded Shield."""
    shield = Shield()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        shield.signals.append(signum)
        if len(shield.signals) == 1:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        if supervisor is not None:
            supervisor.hurry()
        _say(f"servelab: {signal.Signals(signum).name} again: still tearing down, with shorter grace periods\n")

    with _handlers(on_signal):
        yield shield
