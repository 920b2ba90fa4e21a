"""Can this variant still win? The successive-halving rule over costs at capacity. Pure.

A sweep of variants each searching its knee (search=knee) decides on the cost at capacity:
$/1M goodput tokens = price per hour / (3600 x goodput tok/s at the knee) x 1e6, the lowest
cost wins (analysis.selection). A variant whose search is still running has no cost yet, only
bounds. Which direction makes it certainly lose:

  - its cost at capacity falls as its capacity rises, so its most OPTIMISTIC cost is the one at
    the highest capacity it could still turn out to have;
  - that capacity lies below the lowest load measured infeasible, I (analysis.knee: the knee is
    below every infeasible load), so goodput tok/s at the knee <= the output tok/s measured at
    loads up to I (throughput does not fall as offered load rises; the measured figure is raised
    by `slack` for its own noise). Before any load is infeasible, an open-loop capacity is at
    most the search's top, hi req/s (or expand_to, when the range may widen), so goodput tok/s <=
    hi x output tokens per request (the most measured) x (1 + slack). A closed loop (users) has
    no such bound until a load is infeasible: its throughput at more users is unknown.
  - the optimistic (LOWER) bound of its cost is price / (3600 x that bound) x 1e6;
  - the best finished variant's PESSIMISTIC cost is the HIGH end of its cost-at-capacity
    interval (analysis.knee: usd_at_capacity_hi), or its "at most" cost where its knee was not
    reached (an upper bound is pessimistic by definition).

The variant cannot win when its lower bound is above the best rival's upper bound: the two
intervals do not overlap. Its knee search stops at the first point where that holds
(experiments.sweeps.halving), and the decision lists it as excluded with kind "cannot_win"
(analysis.selection). The later points it skips lie inside its bracket, below I: they would
narrow its knee, not move its capacity above I.

The "best feasible load so far" is NOT the bound to use: the cost at the highest feasible load F
is an UPPER bound of the variant's cost at capacity (its knee is at least F), so comparing it with
the rival's would stop a variant that could still be cheaper once its knee is found.

Side effects: none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

SLACK = 0.1  # the variant's own measured throughput is raised by this share before pricing (noise)


@dataclass(frozen=True)
class Measured:
    """One measured load of the variant: its load, verdict and what it served."""

    load: float
    feasible: bool
    output_tok_per_s: float | None  # the window's output tokens per second (every ok request)
    tokens_per_request: float | None  # mean output tokens of an ok request


@dataclass(frozen=True)
class Rival:
    """A finished variant's cost at capacity, pessimistic end (module doc)."""

    variant_id: str
    variant_label: str
    usd_hi: float  # the high end of its interval, or its "at most" cost
    usd: float  # its estimate
    bound: str  # "interval" | "at most"


@dataclass(frozen=True)
class Halving:
    """The rule's answer: `cannot_win` with the figures it compared and one line why."""

    cannot_win: bool
    reason: str
    own_lower_usd: float | None = None
    own_tok_per_s_bound: float | None = None
    basis: str | None = None
    rival: Rival | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def optimistic_tok_per_s(points: Sequence[Measured], *, open_loop: bool, hi: float,
                         slack: float = SLACK) -> tuple[float | None, str]:  # fmt: skip
    """(Upper bound of the goodput tok/s at the variant's knee, what it rests on); None without one."""
    bad = [p.load for p in points if not p.feasible]
    if bad:
        i = min(bad)
        tps = [p.output_tok_per_s for p in points if p.load <= i and p.output_tok_per_s is not None]
        if tps:
            return max(tps) * (1 + slack), f"output tok/s measured up to the lowest infeasible load {i:g}"
    if open_loop:
        tpr = [p.tokens_per_request for p in points if p.tokens_per_request]
        if tpr:
            return hi * max(tpr) * (
                1 + slack
            ), f"the search's top {hi:g} req/s x {max(tpr):.4g} output tokens a request"
    return None, "no bound yet (closed loop without an infeasible load, or nothing served)"


def cannot_win(points: Sequence[Measured], rivals: Iterable[Rival], *, usd_per_hour: float, open_loop: bool,
               hi: float, slack: float = SLACK) -> Halving:  # fmt: skip
    """The rule of the module doc: whether this variant's optimistic cost at capacity is above the
    cheapest rival's pessimistic one."""
    best = min(rivals, key=lambda r: r.usd_hi, default=None)
    if best is None:
        return Halving(False, "no finished variant with a cost at capacity to compare with")
    tps, basis = optimistic_tok_per_s(points, open_loop=open_loop, hi=hi, slack=slack)
    if tps is None or tps <= 0 or not usd_per_hour > 0:
        return Halving(False, basis, rival=best)
    lower = usd_per_hour / (3600.0 * tps) * 1e6
    if lower > best.usd_hi:
        why = (f"cannot win: its cost at capacity is at least ${lower:.4g}/1M goodput tokens ({basis}, +{slack:.0%}), "
               f"above {best.variant_label}'s at most ${best.usd_hi:.4g}/1M "
               f"({'the high end of its interval' if best.bound == 'interval' else 'its knee not reached: an upper bound'})")  # fmt: skip
        return Halving(True, why, lower, tps, basis, best)
    return Halving(False, f"may still win: at least ${lower:.4g}/1M against {best.variant_label}'s at most "
                          f"${best.usd_hi:.4g}/1M", lower, tps, basis, best)  # fmt: skip


__all__ = ["SLACK", "Halving", "Measured", "Rival", "cannot_win", "optimistic_tok_per_s"]
