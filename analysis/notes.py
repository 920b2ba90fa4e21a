"""Structured notes: one shape for every gap, warning and flag that run.json carries.

A note says where it came from (`source`), what it is (`kind`, a short machine-readable slug the
decision layer can match on), one human line (`message`) and, when it covers a stretch of time,
the interval [t0_ns, t1_ns] on the requests' monotonic clock.

Sources used so far: "loadgen", "telemetry", "engine_metrics", "preflight", "engine", "artifacts".
Kinds used so far: "gap" (no sample for longer than 3 intervals), "no_samples", "cpu_saturated",
"loop_stall", "sched_lag" (the load generator could not keep up), "sampler_died", "warning".

Side effects: none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Note:
    source: str
    kind: str
    message: str
    t0_ns: int | None = None
    t1_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Note:
        return cls(source=d["source"], kind=d["kind"], message=d["message"], t0_ns=d.get("t0_ns"), t1_ns=d.get("t1_ns"))


def note_text(n: Note | dict[str, Any] | str) -> str:
    """The human line of a note, whether it is a Note, its dict, or a v1 free-text string."""
    if isinstance(n, Note):
        return n.message
    if isinstance(n, dict):
        return str(n.get("message", n))
    return str(n)
