"""The progress model: the state of long work (sweep position, engine start, each load point's
phase) and everything derived from it with a clock (phase, ETAs, the plain progress line).

A load point's phases follow from its planned seconds (traffic.warmup_s, duration_s, cooldown_s)
and the time since it started; past their end it is "finishing" (the generator drains the
requests still in flight and the lab summarises them). The job ETA is the engine start still
expected (when the engine is not ready yet) + what is left of the current point + the points not
started, each at its planned seconds plus the overhead measured on the points finished so far.
The sweep ETA (only when the job count is known and the jobs run one after another, as with
Hydra's basic launcher) adds the remaining jobs, each as long as this one is planned to be.
Indices passed in are 0-based; they are shown 1-based. experiments.progress shows it.

Side effects: none (a clock is passed in; :class:`Tracker` is thread-safe). The engine start times
seen by this process are kept in a module-level dict, so later jobs of a sweep estimate from them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

DEFAULT_ENGINE_START_S = 60.0  # a rough guess, used before this process has seen that engine become ready

# Time to ready per engine label, as seen by this process: the jobs of a sweep run by Hydra's basic
# launcher share the process, so the second job's ETA uses the first job's measured start.
_ENGINE_READY_S: dict[str, float] = {}


# -- the state and its arithmetic (pure: no I/O, a clock passed in) ----------------------------
@dataclass(frozen=True)
class Phase:
    """Where the work is now: `name` for `elapsed_s` of `total_s` (None: no planned end)."""

    name: str  # preparing | engine | warmup | measure | cooldown | finishing | between | engine_failed
    elapsed_s: float = 0.0
    total_s: float | None = None


@dataclass(frozen=True)
class Eta:
    """Seconds left for the job and for the sweep; None where unknown."""

    job_s: float | None
    sweep_s: float | None


@dataclass
class State:
    job_index: int | None = None
    job_count: int | None = None
    sequential: bool = True
    label: str = ""
    points: int | None = None
    warmup_s: float = 0.0
    duration_s: float = 0.0
    cooldown_s: float = 0.0
    repetition: int = 0
    repetitions: int | None = None
    engine: str = "pending"  # pending | starting | ready | failed
    engine_label: str = ""
    engine_t0: float | None = None
    engine_timeout_s: float | None = None
    engine_estimate_s: float | None = None
    engine_ready_s: float | None = None
    engine_reason: str | None = None
    point_index: int | None = None  # the current or last point
    point_count: int | None = None
    point_label: str = ""
    point_t0: float | None = None
    point_plan: tuple[float, float, float] = (0.0, 0.0, 0.0)  # warmup, duration, cooldown of that point
    point_running: bool = False
    points_done: int = 0
    overheads_s: list[float] = field(default_factory=list)  # actual - planned seconds of finished points
    last_summary: str | None = None


class Tracker:
    """The progress state and everything derived from it (phase, ETA, the plain line). Thread-safe."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, history: dict[str, float] | None = None
    ) -> None:
        self.clock = clock
        self.history = _ENGINE_READY_S if history is None else history
        self._s = State()
        self._lock = threading.Lock()

    # events
    def sweep(self, job_index: int, job_count: int | None, sequential: bool) -> None:
        with self._lock:
            self._s.job_index, self._s.job_count, self._s.sequential = (
                int(job_index),
                job_count,
                bool(sequential),
            )

    def job(self, label: str, points: int, warmup_s: float, duration_s: float, cooldown_s: float,
            repetition: int, repetitions: int | None) -> None:  # fmt: skip
        with self._lock:
            s = self._s
            s.label, s.points = label, int(points)
            s.warmup_s, s.duration_s, s.cooldown_s = float(warmup_s), float(duration_s), float(cooldown_s)
            s.repetition, s.repetitions = int(repetition), repetitions

    def engine_starting(self, label: str, timeout_s: float | None, estimate_s: float | None) -> None:
        with self._lock:
            s = self._s
            s.engine, s.engine_label, s.engine_t0 = "starting", label, self.clock()
            s.engine_timeout_s = None if timeout_s is None else float(timeout_s)
            s.engine_estimate_s = estimate_s

    def engine_ready(self, elapsed_s: float | None) -> float:
        with self._lock:
            s = self._s
            if elapsed_s is None:
                elapsed_s = self.clock() - s.engine_t0 if s.engine_t0 is not None else 0.0
            s.engine, s.engine_ready_s = "ready", float(elapsed_s)
            self.history[s.engine_label or s.label] = float(elapsed_s)
            return float(elapsed_s)

    def engine_failed(self, reason: str) -> float:
        with self._lock:
            s = self._s
            s.engine, s.engine_reason = "failed", reason
            return self.clock() - s.engine_t0 if s.engine_t0 is not None else 0.0

    def point_started(self, index: int, count: int, label: str, repetition: int | None,
                      repetitions: int | None, warmup_s: float | None, duration_s: float | None,
                      cooldown_s: float | None) -> None:  # fmt: skip
        with self._lock:
            s = self._s
            if s.engine == "pending":  # e.g. an external endpoint: no start to wait for
                s.engine = "ready"
            s.point_index, s.point_count, s.point_label = int(index), int(count), label
            if s.points is None:
                s.points = int(count)
            if repetition is not None:
                s.repetition = int(repetition)
            if repetitions is not None:
                s.repetitions = repetitions
            s.point_plan = (
                s.warmup_s if warmup_s is None else float(warmup_s),
                s.duration_s if duration_s is None else float(duration_s),
                s.cooldown_s if cooldown_s is None else float(cooldown_s),
            )
            s.point_t0, s.point_running = self.clock(), True

    def point_finished(self, summary: str | None) -> float:
        with self._lock:
            s = self._s
            took = self.clock() - s.point_t0 if s.point_t0 is not None else 0.0
            if s.point_running:
                s.points_done += 1
                s.overheads_s.append(max(took - sum(s.point_plan), 0.0))
            s.point_running, s.last_summary = False, summary
            return took

    # derived
    def snapshot(self) -> tuple[State, float]:
        """A copy of the state and the clock reading it was taken at (for renderers)."""
        with self._lock:
            return replace(self._s, overheads_s=list(self._s.overheads_s)), self.clock()

    def phase(self) -> Phase:
        s, now = self.snapshot()
        return phase_at(s, now)

    def eta(self) -> Eta:
        s, now = self.snapshot()
        return eta_at(s, now, self.history)

    def line(self, event: str | None = None, *, point: bool = False) -> str:
        """The plain progress line: position (with the point's when `point` or one runs), `event`
        (None: the current phase), ETAs."""
        s, now = self.snapshot()
        return progress_line(s, now, self.history, event, point)


def _point_s(s: State) -> float:
    return s.warmup_s + s.duration_s + s.cooldown_s


def phase_at(s: State, now: float) -> Phase:
    if s.engine == "failed":
        return Phase("engine_failed")
    if s.engine == "starting":
        return Phase("engine", now - (s.engine_t0 or now), s.engine_timeout_s)
    if s.point_running and s.point_t0 is not None:
        e = now - s.point_t0
        w, d, c = s.point_plan
        for name, length in (("warmup", w), ("measure", d), ("cooldown", c)):
            if e < length:
                return Phase(name, e, length)
            e -= length
        return Phase("finishing", e, None)
    if s.points_done:
        return Phase("between")
    return Phase("preparing")


def _engine_estimate(s: State, history: dict[str, float]) -> float:
    """Seconds the engine start is expected to take in total (measured here before, else a guess)."""
    if s.engine_estimate_s is not None:
        return float(s.engine_estimate_s)
    seen = history.get(s.engine_label or s.label)
    if seen is not None:
        return seen
    return min(DEFAULT_ENGINE_START_S, s.engine_timeout_s) if s.engine_timeout_s else DEFAULT_ENGINE_START_S


def eta_at(s: State, now: float, history: dict[str, float]) -> Eta:
    if s.points is None:
        return Eta(None, None)
    overhead = sum(s.overheads_s) / len(s.overheads_s) if s.overheads_s else 0.0
    per_point = _point_s(s) + overhead
    estimate = s.engine_ready_s if s.engine_ready_s is not None else _engine_estimate(s, history)
    if s.engine == "failed":
        job = 0.0
    else:
        job = 0.0
        if s.engine in ("pending", "starting"):
            started = s.engine_t0 if s.engine == "starting" and s.engine_t0 is not None else now
            job += max(estimate - (now - started), 0.0)
        if s.point_running and s.point_t0 is not None:
            job += max(sum(s.point_plan) + overhead - (now - s.point_t0), 0.0)
        # the points after the current (or last) one; a resumed job may not start at point 0
        not_started = s.points - (s.point_index + 1 if s.point_index is not None else 0)
        job += max(not_started, 0) * per_point
    sweep = None
    if s.job_count is not None and s.job_index is not None and s.sequential:
        sweep = job + max(s.job_count - s.job_index - 1, 0) * (estimate + s.points * per_point)
    return Eta(job, sweep)


def fmt_duration(seconds: float | None) -> str:
    """42s, 1m40s, 2h05m (rounded up to the second: an ETA of 0.4 s is not 0s)."""
    if seconds is None:
        return "?"
    t = max(math.ceil(seconds - 1e-9), 0)
    if t < 60:
        return f"{t}s"
    if t < 3600:
        return f"{t // 60}m{t % 60:02d}s"
    return f"{t // 3600}h{t % 3600 // 60:02d}m"


def position_text(s: State) -> str:
    parts = []
    if s.job_index is not None:
        parts.append(f"job {s.job_index + 1}/{s.job_count}" if s.job_count else f"job {s.job_index + 1}")
    if s.label:
        parts.append(s.label)
    return " ".join(parts)


def point_position_text(s: State) -> str:
    if s.point_index is None:
        return ""
    text = f"point {s.point_index + 1}/{s.point_count}"
    if s.point_label:
        text += f" {s.point_label}"
    if s.repetitions:
        text += f" (rep {s.repetition + 1}/{s.repetitions})"
    elif s.repetition:
        text += f" (rep {s.repetition + 1})"
    return text


def seconds_text(x: float | None) -> str:
    # elapsed seconds are floored: "warmup 1/1 s" while 0.1 s of it is still left would read as done
    return str(math.floor(x + 1e-9)) if x is not None else "?"


def phase_text(p: Phase) -> str:
    if p.name == "engine":
        total = f"/{p.total_s:g}" if p.total_s else ""
        return f"engine starting {seconds_text(p.elapsed_s)}{total} s"
    if p.name in ("warmup", "measure", "cooldown"):
        return f"{p.name} {seconds_text(p.elapsed_s)}/{p.total_s:g} s"
    if p.name == "finishing":
        return f"finishing (+{seconds_text(p.elapsed_s)} s past the planned end)"
    return {"between": "between points", "preparing": "preparing", "engine_failed": "engine failed"}[p.name]


def eta_text(e: Eta) -> str:
    if e.job_s is None:
        return ""
    text = f"ETA job {fmt_duration(e.job_s)}"
    if e.sweep_s is not None:
        text += f" sweep {fmt_duration(e.sweep_s)}"
    return text


def progress_line(s: State, now: float, history: dict[str, float], event: str | None, point: bool) -> str:
    p = phase_at(s, now)
    head = position_text(s)
    if point or s.point_running:
        head = f"{head} {point_position_text(s)}".strip()
    body = event if event is not None else phase_text(p)
    text = f"progress: {head} {body}".replace("  ", " ").rstrip()
    if eta := eta_text(eta_at(s, now, history)):
        text += f", {eta}"
    return text
