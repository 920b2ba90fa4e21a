"""Clocks of the load generator: the monotonic clock it stamps with, and remote-worker offsets.

Every `t_*_ns` of a record is CLOCK_MONOTONIC (`time.monotonic_ns`), which the telemetry
samplers share on the lab's machine. A Locust worker on ANOTHER machine has its own monotonic
clock, with an unknown origin; its timestamps are only comparable after adding its offset to
the master's clock. The worker measures that offset NTP-style over Locust's messages:

    worker sends t1 -> master stamps t2 on receipt and t3 when it replies -> worker stamps t4
    offset = ((t2 - t1) + (t3 - t4)) / 2        (master clock - worker clock)
    rtt    = (t4 - t1) - (t3 - t2)              uncertainty = rtt / 2

The true offset lies within offset +- rtt/2 whatever the asymmetry of the two paths. A round
sends a few pings and keeps the one with the smallest RTT (the least queued); rounds run at
connect and periodically during the load point. :class:`ClockModel` maps worker times to the
master's clock by linear interpolation between rounds (which follows a slow drift) and holds the
nearest round's offset outside them.

:func:`now` is the generator's clock. For TESTS ONLY, :func:`install_test_offset` makes it read
``monotonic_ns() + offset`` in a worker process, to simulate a machine with another clock origin
(the `--test-only-clock-offset-ns` flag of ``python -m loadgen.locust_runner --role worker``);
a real run never sets it. Modules that stamp time read ``clock.now`` at import, so the offset is
installed before they are imported.

Side effects: none (reads /proc/sys/kernel/random/boot_id in :func:`clock_id`).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

now = time.monotonic_ns  # rebound only by install_test_offset (tests)
_test_offset_ns = 0


def install_test_offset(offset_ns: int) -> None:
    """TEST ONLY: from now on `now()` reads monotonic_ns() + offset_ns (a simulated other machine)."""
    global now, _test_offset_ns
    mono = time.monotonic_ns
    _test_offset_ns = int(offset_ns)
    if _test_offset_ns:
        now = lambda: mono() + _test_offset_ns  # noqa: E731
    else:
        now = mono


def clock_id() -> str:
    """Which monotonic clock this process reads: the kernel's boot id (shared by every process of one
    boot of one machine), suffixed when a test offset is installed. Equal ids = one clock, no shift."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "unknown"
    return f"{boot}+test{_test_offset_ns}" if _test_offset_ns else boot


@dataclass(frozen=True)
class ClockSample:
    """One ping: t1/t4 on the worker's clock, t2/t3 on the master's (ns)."""

    t1: int
    t2: int
    t3: int
    t4: int

    @property
    def rtt_ns(self) -> int:
        return (self.t4 - self.t1) - (self.t3 - self.t2)

    @property
    def offset_ns(self) -> int:
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) // 2


@dataclass(frozen=True)
class ClockRound:
    """The best ping of one round: the offset at worker time `t_worker_ns` (mid-ping), +- uncertainty."""

    t_worker_ns: int
    offset_ns: int
    uncertainty_ns: int
    samples: int  # pings answered in this round

    def to_dict(self) -> dict[str, int]:
        return {"t_worker_ns": self.t_worker_ns, "offset_ns": self.offset_ns,
                "uncertainty_ns": self.uncertainty_ns, "samples": self.samples}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClockRound:
        return cls(int(d["t_worker_ns"]), int(d["offset_ns"]), int(d["uncertainty_ns"]), int(d["samples"]))


def best_round(samples: Sequence[ClockSample]) -> ClockRound:
    """The round's estimate: the ping with the smallest RTT. Raises ValueError for no samples."""
    if not samples:
        raise ValueError("a clock round needs at least one answered ping")
    s = min(samples, key=lambda x: x.rtt_ns)
    return ClockRound((s.t1 + s.t4) // 2, s.offset_ns, max(s.rtt_ns, 0) // 2 + 1, len(samples))


class ClockModel:
    """Worker clock -> master clock from the rounds measured so far (sorted by worker time).

    `same_clock` (the worker reads the master's clock, e.g. a local worker): the identity map,
    whatever was measured (the measurement is then only a check).
    """

    def __init__(self, same_clock: bool = False) -> None:
        self.same_clock = same_clock
        self.rounds: list[ClockRound] = []
        self._t: list[int] = []

    def add(self, r: ClockRound) -> None:
        i = bisect.bisect(self._t, r.t_worker_ns)
        self._t.insert(i, r.t_worker_ns)
        self.rounds.insert(i, r)

    @property
    def ready(self) -> bool:
        return self.same_clock or bool(self.rounds)

    def offset_at(self, t_worker_ns: int) -> int:
        """master - worker at worker time t: interpolated between rounds, the nearest one outside."""
        if self.same_clock:
            return 0
        if not self.rounds:
            raise ValueError("no clock round measured yet")
        i = bisect.bisect(self._t, t_worker_ns)
        if i == 0:
            return self.rounds[0].offset_ns
        if i == len(self.rounds):
            return self.rounds[-1].offset_ns
        a, b = self.rounds[i - 1], self.rounds[i]
        w = (t_worker_ns - a.t_worker_ns) / (b.t_worker_ns - a.t_worker_ns)
        return round(a.offset_ns + w * (b.offset_ns - a.offset_ns))

    def to_master(self, t_worker_ns: int) -> int:
        return t_worker_ns + self.offset_at(t_worker_ns)

    def summary(self) -> dict[str, Any]:
        """For the point's meta (clock_offsets): the best estimate, the bound, drift and every round."""
        best = min(self.rounds, key=lambda r: r.uncertainty_ns, default=None)
        drift = None
        if len(self.rounds) >= 2 and self.rounds[-1].t_worker_ns > self.rounds[0].t_worker_ns:
            a, b = self.rounds[0], self.rounds[-1]
            drift = (b.offset_ns - a.offset_ns) / (b.t_worker_ns - a.t_worker_ns) * 1e6
        return {
            "same_clock": self.same_clock,
            "applied": not self.same_clock,  # were this worker's timestamps shifted
            "offset_ns": 0 if self.same_clock else (best.offset_ns if best else None),
            "measured_offset_ns": best.offset_ns if best else None,
            # bound on the error of any shifted timestamp: the worst round used
            "uncertainty_ns": max((r.uncertainty_ns for r in self.rounds), default=None),
            "best_uncertainty_ns": best.uncertainty_ns if best else None,
            "samples": sum(r.samples for r in self.rounds),
            "drift_ppm": drift,
            "rounds": [r.to_dict() for r in self.rounds],
        }


# Timestamp fields of a raw record and of a loop-lag row that are on the sender's clock.
RECORD_TIME_FIELDS = ("t_scheduled_ns", "t_sent_ns", "t_headers_ns", "t_first_token_ns", "t_last_token_ns", "t_done_ns")
LAG_TIME_FIELDS = ("t_ns",)


def shift_record(rec: dict[str, Any], model: ClockModel) -> dict[str, Any]:
    """`rec` with every timestamp (t_*_ns, chunk_ns) moved onto the master's clock, in place.

    One offset per record (at its scheduled time), so intervals inside a request (TTFT, ITL,
    TPOT) are exactly the worker's."""
    anchor = rec.get("t_scheduled_ns") or rec.get("t_sent_ns")
    if anchor is None:
        return rec
    off = model.offset_at(anchor)
    if not off:
        return rec
    for k in RECORD_TIME_FIELDS:
        if rec.get(k) is not None:
            rec[k] += off
    if rec.get("chunk_ns"):
        rec["chunk_ns"] = [t + off for t in rec["chunk_ns"]]
    return rec


def shift_lag_row(row: dict[str, Any], model: ClockModel) -> dict[str, Any]:
    for k in LAG_TIME_FIELDS:
        if row.get(k) is not None:
            row[k] = model.to_master(row[k])
    return row
