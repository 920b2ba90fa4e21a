"""When requests are sent: arrival schedules as offsets in seconds from the load point's start.

Pure and seeded. Open-loop schedules are computed up front and handed to the load generator,
so the intended send time of every request is known and recorded (schedule lag = sent − intended).
Phases are fixed here, by intended time: [0, warmup_s) is warmup, [warmup_s, warmup_s+duration_s)
is measure, and [.., +cooldown_s) is cooldown (load continues, excluded from summaries).

Arrival processes (rate λ in requests/s, times in s):
  constant  evenly spaced, gaps 1/λ
  poisson   exponential gaps, mean 1/λ
  gamma     gamma gaps with shape k = burstiness and scale 1/(λ·k): mean 1/λ, coefficient of
            variation 1/√k. k = 1 is Poisson, k < 1 burstier, k > 1 smoother (vLLM's definition)
  trace     the arrival times of a trace file, divided by a speed-up factor
Time-varying load: a shape multiplies the rate by m(u), u = t / (window length) in [0, 1]; open
loop draws a non-homogeneous process by thinning (Lewis & Shedler), closed loop scales users.

Side effects: none.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.records import COOLDOWN, MEASURE, WARMUP

OPEN_LOOP_KINDS = ("poisson", "constant", "gamma", "trace")
CLOSED_LOOP_KINDS = ("concurrency",)
SHAPES = ("ramp", "steps", "spike", "diurnal")


@dataclass(frozen=True)
class Arrival:
    offset_s: float  # intended send time, seconds after the load point's start
    phase: str
    prompt_idx: int


def shape_multiplier(shape: Any | None) -> Callable[[float], float]:
    """m(u) for u in [0, 1] from a ShapeConfig-like object (None or kind=null: constant 1).

    ramp:    start_fraction + (1 − start_fraction)·u
    steps:   (⌊u·steps⌋ + 1) / steps, capped at 1           (staircase up to the full value)
    spike:   spike_factor while spike_at ≤ u < spike_at + spike_width, else 1
    diurnal: min_fraction + (1 − min_fraction)·(1 − cos 2πu)/2  (one day: low at both ends, peak mid-run)
    """
    kind = getattr(shape, "kind", None) if shape is not None else None
    if not kind:
        return lambda u: 1.0
    if kind == "ramp":
        a = float(shape.start_fraction)
        return lambda u: a + (1 - a) * u
    if kind == "steps":
        n = int(shape.steps)
        return lambda u: min((math.floor(u * n) + 1) / n, 1.0)
    if kind == "spike":
        at, width, f = float(shape.spike_at), float(shape.spike_width), float(shape.spike_factor)
        return lambda u: f if at <= u < at + width else 1.0
    if kind == "diurnal":
        lo = float(shape.min_fraction)
        return lambda u: lo + (1 - lo) * (1 - math.cos(2 * math.pi * u)) / 2
    raise ValueError(f"unknown traffic.shape.kind {kind!r} (known: {', '.join(SHAPES)})")


def _gap(kind: str, rate: float, rng: random.Random, burstiness: float) -> float:
    if kind == "poisson":
        return rng.expovariate(rate)
    if kind == "gamma":
        return rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
    if kind == "constant":
        return 1.0 / rate
    raise ValueError(f"unknown open-loop arrival kind {kind!r} (known: {', '.join(OPEN_LOOP_KINDS)})")


def arrival_offsets(
    kind: str,
    rate_rps: float,
    end_s: float,
    seed: int,
    burstiness: float = 1.0,
    multiplier: Callable[[float], float] | None = None,
) -> list[float]:
    """Send times in [0, end_s) at `rate_rps` requests/s, optionally scaled over time by `multiplier`.

    poisson/gamma: the first request comes after one gap; constant: the first at 0.
    With a multiplier, poisson/gamma candidates are drawn at the peak rate and each is kept with
    probability m(t)/m_max (thinning); constant sends the n-th request when ∫rate·m dt reaches n.
    """
    if rate_rps <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate_rps}")
    if kind == "gamma" and burstiness <= 0:
        raise ValueError(f"traffic.burstiness must be > 0, got {burstiness}")
    if kind not in ("poisson", "gamma", "constant"):
        raise ValueError(f"unknown open-loop arrival kind {kind!r} (known: {', '.join(OPEN_LOOP_KINDS)})")
    rng = random.Random(seed)
    out: list[float] = []
    if multiplier is None:
        t = 0.0 if kind == "constant" else _gap(kind, rate_rps, rng, burstiness)
        while t < end_s:
            out.append(t)
            t += _gap(kind, rate_rps, rng, burstiness)
        return out
    m = lambda t: max(multiplier(min(t / end_s, 1.0)), 0.0)  # noqa: E731
    if kind == "constant":
        # The n-th request leaves when the integral of the rate reaches n (1 ms steps), so rate
        # changes land where the shape puts them instead of after the previous long gap.
        dt, t, acc, n = 1e-3, 0.0, 0.0, 0
        while t < end_s:
            if acc >= n:
                out.append(round(t, 9))
                n += 1
                continue
            acc += rate_rps * m(t) * dt
            t += dt
        return out
    peak = max(m(end_s * i / 1000) for i in range(1001))
    if peak <= 0:
        return out
    t = _gap(kind, rate_rps * peak, rng, burstiness)
    while t < end_s:
        if rng.random() * peak < m(t):
            out.append(t)
        t += _gap(kind, rate_rps * peak, rng, burstiness)
    return out


def phase_of(offset_s: float, warmup_s: float, duration_s: float) -> str:
    if offset_s < warmup_s:
        return WARMUP
    return MEASURE if offset_s < warmup_s + duration_s else COOLDOWN


def open_loop_schedule(
    kind: str,
    rate_rps: float,
    warmup_s: float,
    duration_s: float,
    num_prompts: int,
    seed: int,
    cooldown_s: float = 0.0,
    burstiness: float = 1.0,
    shape: Any | None = None,
) -> list[Arrival]:
    """The full schedule of one load point: warmup, measure, cooldown; prompts cycled in order."""
    mult = shape_multiplier(shape) if shape is not None and getattr(shape, "kind", None) else None
    offsets = arrival_offsets(kind, rate_rps, warmup_s + duration_s + cooldown_s, seed, burstiness, mult)
    return [
        Arrival(offset_s=t, phase=phase_of(t, warmup_s, duration_s), prompt_idx=i % num_prompts)
        for i, t in enumerate(offsets)
    ]


def trace_schedule(
    times_s: Sequence[float], speedup: float, warmup_s: float, duration_s: float, cooldown_s: float = 0.0
) -> list[Arrival]:
    """Replay: the i-th trace row is sent at (t_i − t_0)/speedup and uses workload item i.

    Rows past warmup+duration+cooldown (after speed-up) are not sent.
    """
    if speedup <= 0:
        raise ValueError(f"trace speed-up must be > 0, got {speedup}")
    if not times_s:
        return []
    t0 = min(times_s)
    end = warmup_s + duration_s + cooldown_s
    out = []
    for i, t in enumerate(times_s):
        off = (t - t0) / speedup
        if off < end:
            out.append(Arrival(offset_s=off, phase=phase_of(off, warmup_s, duration_s), prompt_idx=i))
    out.sort(key=lambda a: a.offset_s)
    return out
