"""When requests are sent: arrival schedules as offsets in seconds from the load point's start.

Pure and seeded. Open-loop schedules are computed up front and handed to the load generator,
so the intended send time of every request is known and recorded (schedule lag = sent − intended).
Phases are fixed here, by intended time: [0, warmup_s) is warmup, [warmup_s, warmup_s+duration_s)
is measure.

Side effects: none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from loadgen.records import MEASURE, WARMUP

OPEN_LOOP_KINDS = ("poisson", "constant")
CLOSED_LOOP_KINDS = ("concurrency",)


@dataclass(frozen=True)
class Arrival:
    offset_s: float  # intended send time, seconds after the load point's start
    phase: str
    prompt_idx: int


def arrival_offsets(kind: str, rate_rps: float, end_s: float, seed: int) -> list[float]:
    """Send times in [0, end_s) for an open-loop process at `rate_rps` requests/s.

    poisson: exponential gaps with mean 1/rate (first request after one gap, not at 0).
    constant: evenly spaced, first at 0.
    """
    if rate_rps <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate_rps}")
    out: list[float] = []
    if kind == "poisson":
        rng = random.Random(seed)
        t = rng.expovariate(rate_rps)
        while t < end_s:
            out.append(t)
            t += rng.expovariate(rate_rps)
    elif kind == "constant":
        gap = 1.0 / rate_rps
        i = 0
        while i * gap < end_s:
            out.append(i * gap)
            i += 1
    else:
        raise ValueError(f"unknown open-loop arrival kind {kind!r} (known: {', '.join(OPEN_LOOP_KINDS)})")
    return out


def open_loop_schedule(kind: str, rate_rps: float, warmup_s: float, duration_s: float, num_prompts: int, seed: int) -> list[Arrival]:
    """The full schedule of one load point: warmup then measure, prompts cycled in order."""
    offsets = arrival_offsets(kind, rate_rps, warmup_s + duration_s, seed)
    return [
        Arrival(offset_s=t, phase=WARMUP if t < warmup_s else MEASURE, prompt_idx=i % num_prompts)
        for i, t in enumerate(offsets)
    ]
