"""What a knee search has measured, per load: observations, their pooling and the bracket. Pure.

An observation is one measured load point as the planner saw it: its own verdict and p_feasible
(the share of the measurement's time-block bootstrap replicates meeting the SLO; None: unknown).
A load measured more than once is pooled (experiments.sweeps.search, "pooling"): feasible when the
mean of its p_feasible values (of its 0/1 verdicts where none was given) is at least P_FEASIBLE,
uncertain while that mean lies strictly between P_UNCERTAIN_LO and P_UNCERTAIN_HI. The bracket is
[F, I]: I the lowest infeasible pooled load, F the highest feasible one below it.
analysis.points pools the repetitions of a load by the same rule for the decision.

Side effects: none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

P_FEASIBLE = 0.5  # a load measured more than once is feasible when its mean p_feasible >= this
P_UNCERTAIN_LO, P_UNCERTAIN_HI = 0.1, 0.9  # pooled p_feasible strictly between: uncertain (re-measure)


@dataclass(frozen=True)
class Observation:
    """One measured load point as the planner saw it."""

    load: float
    feasible: bool
    reason: str = ""  # why not feasible (analysis.slo reasons), or anything worth keeping
    p_feasible: float | None = None  # P(the load meets the SLO), from the measurement's bootstrap; None: unknown


@dataclass(frozen=True)
class Pooled:
    """Every measurement of one load, pooled (module doc: pooling)."""

    load: float
    n: int  # measurements
    p_feasible: float  # mean p_feasible (a measurement without one counts as its verdict, 1 or 0)
    feasible: bool  # n == 1: the measurement's own verdict; else p_feasible >= P_FEASIBLE
    verdicts: tuple[bool, ...]  # each measurement's own verdict, in order

    @property
    def uncertain(self) -> bool:
        return P_UNCERTAIN_LO < self.p_feasible < P_UNCERTAIN_HI

    def to_dict(self) -> dict[str, Any]:
        return {"load": self.load, "measurements": self.n, "p_feasible": round(self.p_feasible, 4),
                "feasible": self.feasible, "uncertain": self.uncertain, "verdicts": list(self.verdicts)}  # fmt: skip


def p_of(o: Observation) -> float:
    if o.p_feasible is None or not math.isfinite(o.p_feasible):  # unknown: the verdict itself, 1 or 0
        return 1.0 if o.feasible else 0.0
    return min(max(float(o.p_feasible), 0.0), 1.0)


def pool(observations: Sequence[Observation]) -> dict[float, Pooled]:
    """One :class:`Pooled` per load, in the order the loads were first measured."""
    by: dict[float, list[Observation]] = {}
    for o in observations:
        by.setdefault(o.load, []).append(o)
    out = {}
    for load, obs in by.items():
        p = sum(p_of(o) for o in obs) / len(obs)
        feasible = obs[0].feasible if len(obs) == 1 else p >= P_FEASIBLE
        out[load] = Pooled(load, len(obs), p, bool(feasible), tuple(o.feasible for o in obs))
    return out


def bracket(observations: Sequence[Observation]) -> tuple[float | None, float | None, list[str]]:
    """(F, I, notes): I the lowest infeasible load, F the highest feasible load below it (see the
    module doc), each load's measurements pooled first; None where no such load was measured."""
    if len({o.load for o in observations}) == len(observations):
        pooled: Sequence[Observation | Pooled] = observations  # each load once: its own verdict
    else:
        pooled = list(pool(observations).values())
    bad = [o.load for o in pooled if not o.feasible]
    hi = min(bad) if bad else None
    good = [o.load for o in pooled if o.feasible]
    lo = max((x for x in good if hi is None or x < hi), default=None)
    notes = []
    if unused := sorted({x for x in good if hi is not None and x >= hi}):
        notes.append(f"feasible at {', '.join(f'{x:g}' for x in unused)} at or above the infeasible {hi:g} "
                     "(not monotone; not used: the knee needs every load below it feasible)")  # fmt: skip
    return lo, hi, notes


def points_of(observations: Sequence[Observation]) -> list[dict[str, Any]]:
    return [{"load": o.load, "feasible": o.feasible, "reason": o.reason, "p_feasible": o.p_feasible}
            for o in observations]  # fmt: skip


def observation(load: float, feasible: bool, reason: str, p_feasible: float | None) -> Observation:
    """An observation as recorded; a p_feasible that is not a finite number counts as unknown."""
    p = None if p_feasible is None else float(p_feasible)
    return Observation(float(load), bool(feasible), str(reason), p if p is not None and math.isfinite(p) else None)


def rel_width(lo: float | None, hi: float | None) -> float | None:
    return (hi - lo) / lo if lo is not None and hi is not None and lo > 0 else None
