"""Which load point to measure next: a fixed grid, or an adaptive search for the knee. Pure.

The runner drives every planner the same way, one point at a time:
    while (load := planner.next_load()) is not None:
        feasible, reason = <measure `load`, judge it with analysis.slo.evaluate_point>
        planner.observe(load, feasible, reason)
    planner.state()   # JSON-able: stop rule, bracket, points tried, status, knee

:class:`GridSearch` yields `traffic.points` in order. :class:`KneeSearch` looks for the knee,
the highest SLO-feasible load in [lo, hi], from measured feasibility alone:

  bracket   F = the highest feasible load below I, I = the lowest infeasible load (over every
            observation; the same rule as analysis.knee: the curve must hold at every load up
            to the knee). An infeasible load below a feasible one (noise: the curve is not
            monotone) therefore moves I down and F to the highest feasible load under it, the
            conservative reading; a feasible load above I is kept in `points` but not used.
  probing   without a prior, bisection of the whole range at once (below). With a prior `start`
            (e.g. a capacity estimate): measure it, then double while feasible / halve while
            infeasible until a bracket forms or a range end is reached (galloping search), then
            bisect. Cheaper when the prior is good (knee 8, start 8, [1, 64]: 5 points instead of
            6), dearer when it is not (worst case 9 instead of 6).
  bisection the next load is the middle point of the *chain* of [F, I]: the fewest loads that cut
            [F, I) into brackets each meeting the stop rule, built greedily from F, each step as
            far as the rule allows (x -> x(1+tol); for integers x -> max(x+1, floor(x(1+tol)))).
            An unmeasured end counts as one step beyond the range, so lo and hi are in the chain
            and "none feasible" / "all feasible" are two leaves like any other. Each probe halves
            the leaves left, so the worst case is ceil(log2(leaves)), and no planner can do better:
            the final brackets of any search tile [F, I) and each must meet the stop rule, so there
            are at least as many of them as the greedy chain has leaves; k binary measurements tell
            apart at most 2^k. In continuous loads the chain is geometric, so the probe is the
            geometric middle: the tolerance is relative, and an arithmetic split of [1, 64] would
            spend its probes near 32. Integer chains step by one user below 2/tol users (40 at 5 %;
            5 % of 13 users is less than one user), so small counts are split arithmetically.
  stop rule (I - F)/F <= tolerance, or I - F <= 1 in integer mode (status converged); hi measured
            feasible (all_feasible: the knee is at least hi, a lower bound); lo measured
            infeasible (none_feasible); max_points measurements (budget_exhausted). The knee is
            F, the conservative end: the true knee lies in [F, I), so F is within `tolerance`.

Budget. Without `start` the search takes at most ceil(log2(leaves)) points (above);
:meth:`KneeSearch.worst_case_points` counts it exactly on the search's decision tree. At 5 %:
    integer [1, 8]: 4   [1, 12]: 4   [1, 16]: 5   [2, 16]: 4   [1, 32]: 6   [1, 64]: 6   [1, 256]: 7
    continuous, hi/lo = 1.5: 4   2: 5   4: 5   8: 6   64: 7   10^4: 8
So "a third of a 10-point grid" (3.3 points; 4 rounded up) at 5 % is reachable only for ranges
of at most 16 leaves: integer ranges up to [1, 15] users, continuous ones up to hi/lo = 1.97,
i.e. with a good prior. [1, 64] users has 53 leaves (every count up to 40, then 5 % steps, plus
"none feasible"): 6 points, the minimum. Compared like with like, a 10-point geometric grid over
[1, 64] resolves the knee only to its spacing, 64^(1/9) - 1 = 59 %; at that tolerance the search
needs 4 points. `max_points` caps the count (null: the stop rule alone decides; bisection is
logarithmic, so even [0.1, 1000] req/s at 5 % needs 8).

Loads are rounded where they are proposed (whole users; 4 significant digits otherwise, the
precision a point's identity is stored with), and the chain is built in rounded loads: a bracket
whose only load in between rounds onto one of its ends has no load left to measure and is
converged; steps are rounded down, so the brackets they make still meet the stop rule exactly.
(Before, [15.37, 16.14] at 5 % proposed 15.37 x 1.05 = 16.1385, measured as 16.14 - the
infeasible end itself - again and again.) Every probe lies strictly inside the open bracket
(F, I) whatever its outcome, so each one removes at least half of the loads left, noisy or not:
bisection ends within worst_case_points() on any sequence of outcomes. With `max_points` null
a cap of worst_case_points() + HARD_CAP_MARGIN holds as well (budget_exhausted): it bounds the
re-measures of uncertain ends (below) and a resumed search that replays observations it did not
propose.

The top early (`probe_top`, default on). While every load measured so far is feasible, the next
probe is hi itself: a range whose top is feasible is known as such after two points (the first
bisection probe, then hi) instead of after log2(leaves) probes each creeping up toward a top that
is no knee (a capacity review measured 16, 24, 28, 30, 31 and 32 users to learn the knee lies
above 32). It costs at most one point more on the paths where hi then proves infeasible, which
worst_case_points() counts (the tables above are for probe_top=false). `expand_to` (default
null: never) lets the search widen the range when hi is feasible: hi doubles (up to expand_to)
and is probed again, until a load is infeasible or expand_to is feasible.

Near the knee a load's feasibility is uncertain, so the search decides with what it measured,
not with the last verdict (observations, pooling and the bracket: experiments.sweeps.observations):
  pooling   each observation may carry p_feasible, the probability that the load meets the SLO
            (the share of the measurement's time-block bootstrap replicates that are feasible).
            A load measured once is feasible as its own check said (`feasible`, the rule the
            decision applies to a point); a load measured more than once is feasible when the mean
            of its p_feasible values (of its 0/1 verdicts where none was given) is at least
            P_FEASIBLE (0.5). The bracket is built over these pooled loads, one per load.
  uncertain a load whose pooled p_feasible lies strictly between P_UNCERTAIN_LO (0.1) and
            P_UNCERTAIN_HI (0.9): its verdict could flip on another measurement. A measurement
            whose replicates agree to 9 in 10 is taken as settled; two opposite verdicts of one
            load pool to 0.5, the most uncertain.
  re-measure when the search would stop (converged, all_feasible, none_feasible) and an end of
            its final bracket is uncertain, that end is measured again (status "remeasuring";
            the end measured fewer times first, then the more uncertain), as a new repetition of
            the load, and pooled. This is the only way a load is proposed twice. At most
            MAX_MEASUREMENTS_PER_LOAD (3) measurements of one load, and at most MAX_REMEASURES (2)
            re-measures in all; a re-measure that flips a verdict reopens the
            bracket, and the probes that follow count against the same cap (point_cap():
            max_points, else worst_case_points() + HARD_CAP_MARGIN, the re-measures and the
            anchor below). So the search
            takes at most worst_case_points() + HARD_CAP_MARGIN points whatever the outcomes, and
            a search whose ends are certain pays nothing: worst_case_points() is unchanged (it is
            counted on certain outcomes). An end still uncertain when the margin or the per-load
            cap is spent is kept as pooled, and state()["notes"] says so.
  anchor    the knee's interval (analysis.knee) needs a load below F that every replicate finds
            feasible: where none is measured, a replicate in which F fails has nothing feasible
            below it, and the interval is open below. Bisection often leaves F as the lowest load
            measured (probe_top: the middle, then hi, then up), so when the search would stop
            converged and F's pooled p_feasible is below P_ANCHOR (0.975) with no load below F at
            least that sure, it first measures an anchor at L / (1 + tolerance)^ANCHOR_STEPS, L the
            lowest load measured up to F (status "anchoring"; at most MAX_ANCHORS = 1 per search,
            within the same cap). In
            simulation (benchmarks/coverage_grid.py --search, p99 TTFT, 6 s windows) 18 of 30
            intervals were open below without it.
Side effects: none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Protocol

from experiments.sweeps.observations import (  # noqa: F401 - P_FEASIBLE, Pooled: this module's vocabulary too
    P_FEASIBLE,
    P_UNCERTAIN_HI,
    P_UNCERTAIN_LO,
    Observation,
    Pooled,
    bracket,
    observation,
    points_of,
    pool,
    rel_width,
)
from loadgen.arrivals import CLOSED_LOOP_KINDS

TOLERANCE = 0.05
# Galloping factor from a prior `start`: a bracket found by doubling spans a factor of 2, which
# bisection then splits in ~4 points at 5 %.
EXPAND = 2.0
DONE = ("converged", "all_feasible", "none_feasible", "budget_exhausted", "measured")
SIG_DIGITS = 4  # continuous loads: significant digits of a proposed load (and of its point_id)
# Points beyond worst_case_points() (module doc: pooling, anchor): at most MAX_REMEASURES
# re-measures of uncertain bracket ends and MAX_ANCHORS anchors; with max_points null the cap is
# worst_case_points() + HARD_CAP_MARGIN.
MAX_REMEASURES = 2
MAX_ANCHORS = 1
HARD_CAP_MARGIN = MAX_REMEASURES + MAX_ANCHORS
# The knee's interval is the 2.5 / 97.5 % points of its replicates (analysis.knee): a bracket's
# feasible end F whose share of feasible replicates is below this leaves more than 2.5 % of them
# with nothing feasible measured below F, and the interval open below (no low end).
P_ANCHOR = 0.975
ANCHOR_STEPS = 2  # the anchor lies this many tolerance steps below F: F / (1 + tolerance)^2
MAX_MEASUREMENTS_PER_LOAD = 3  # an uncertain end is measured at most this many times in all


def round_load(v: float, integer: bool) -> float:
    """A load as it is proposed and measured: whole users, or SIG_DIGITS significant digits."""
    return float(round(v)) if integer else float(f"{v:.{SIG_DIGITS}g}")


@dataclass
class SearchConfig:
    """How the load points of a run are chosen (experiments.sweeps.search).

    grid: measure traffic.points in order. knee: search [lo, hi] for the highest SLO-feasible
    load, to within `tolerance` (relative), in at most `max_points` measurements (null: no cap;
    the stop rule then needs at most 6 points for [1, 64] users at 5 %; the module doc has more).
    """

    name: str = "grid"
    kind: str = "grid"  # grid | knee
    lo: float | None = None  # knee: lowest load tried; null = min(traffic.points)
    hi: float | None = None  # knee: highest load tried; null = max(traffic.points)
    tolerance: float = TOLERANCE  # knee: stop when (infeasible - feasible) / feasible <= this
    max_points: int | None = None  # knee: at most this many measured points; null = the stop rule decides
    integer: bool | None = None  # knee: whole-number loads; null = yes for traffic.kind=concurrency
    start: float | None = None  # knee: first load (a prior, e.g. a capacity estimate); null = bisect [lo, hi]
    probe_top: bool = True  # knee: while everything measured is feasible, measure hi next
    expand_to: float | None = None  # knee: while hi is feasible, double it up to this; null = never widen


class Planner(Protocol):
    """What the runner drives: :class:`GridSearch` and :class:`KneeSearch`."""

    def next_load(self) -> float | None: ...
    def observe(self, load: float, feasible: bool, reason: str = "", p_feasible: float | None = None) -> None: ...
    def state(self) -> dict[str, Any]: ...


class GridSearch:
    """The fixed grid: every point of `points`, in the order given, whatever is measured."""

    kind = "grid"

    def __init__(self, points: Sequence[float]) -> None:
        if not points:
            raise ValueError("a grid needs at least one load point")
        self.points = [float(p) for p in points]
        self.observations: list[Observation] = []

    def next_load(self) -> float | None:
        """The next grid point (the same one until it is observed); None after the last."""
        n = len(self.observations)
        return self.points[n] if n < len(self.points) else None

    def observe(self, load: float, feasible: bool, reason: str = "", p_feasible: float | None = None) -> None:
        self.observations.append(observation(load, feasible, reason, p_feasible))

    def status(self) -> str:
        if len(self.observations) < len(self.points):
            return "measuring" if self.observations else "not_started"
        return "measured"

    def state(self) -> dict[str, Any]:
        f, i, notes = bracket(self.observations)
        done = self.status() == "measured"
        # The grid's knee in analysis.knee's words, once every point is in.
        verdict = None
        if done:
            verdict = "none_feasible" if f is None else "all_feasible" if i is None else "bracketed"
        return {
            "kind": self.kind,
            "stop_rule": f"measure all {len(self.points)} grid points in the order given (no early stop)",
            "status": self.status(),
            "done": done,
            "outcome": verdict,
            "knee": f,
            "bracket": [f, i],
            "bracket_rel_width": rel_width(f, i),
            "points_used": len(self.observations),
            "worst_case_points": len(self.points),
            "grid": list(self.points),
            "points": points_of(self.observations),
            "notes": notes,
        }


class KneeSearch:
    """Bracketing then bisection for the highest feasible load in [lo, hi]; see the module doc."""

    kind = "knee"

    def __init__(self, lo: float, hi: float, *, tolerance: float = TOLERANCE, integer: bool = False,
                 max_points: int | None = None, start: float | None = None, probe_top: bool = True,
                 expand_to: float | None = None) -> None:  # fmt: skip
        if not tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {tolerance}")
        if integer:
            lo, hi = math.ceil(lo), math.floor(hi)
            if lo < 1:
                raise ValueError(f"integer loads (users) start at 1, got lo={lo}")
        elif not lo > 0:
            raise ValueError(f"loads must be > 0, got lo={lo}")
        else:  # the ends are proposed like any load: at the precision they are measured with
            lo, hi = round_load(lo, False), round_load(hi, False)
        if hi < lo:
            raise ValueError(f"empty range [{lo}, {hi}]")
        if max_points is not None and max_points < 1:
            raise ValueError(f"max_points must be >= 1 or None, got {max_points}")
        if start is not None and not lo <= start <= hi:
            raise ValueError(f"start {start} lies outside [{lo}, {hi}]")
        if expand_to is not None:
            expand_to = math.floor(expand_to) if integer else round_load(expand_to, False)
            if expand_to < hi:
                raise ValueError(f"expand_to {expand_to} lies below hi {hi}")
        self.lo, self.hi = float(lo), float(hi)
        self.tolerance = float(tolerance)
        self.integer = bool(integer)
        self.max_points = max_points
        self.start = None if start is None else float(math.floor(start + 0.5) if integer else round_load(start, False))
        self.probe_top = bool(probe_top)
        self.hi0 = self.hi  # the range as given; hi grows by expand_to
        self.expand_to = None if expand_to is None else float(expand_to)
        self.observations: list[Observation] = []
        self._pending: float | None = None
        self._anchors: list[float] = []  # anchors proposed and measured (module doc: anchor)

    def within(self, f: float, i: float) -> bool:
        """The stop rule for a measured bracket [f, i]."""
        return (i - f) / f <= self.tolerance + 1e-12 or (self.integer and i - f <= 1)

    def _step(self, p: float) -> float:
        """The farthest load q the stop rule lets a bracket [p, q] reach (within the range), as it
        will be measured (rounded; at least one rounding unit above p)."""
        q = p * (1 + self.tolerance)
        if self.integer:  # the largest whole number within tolerance, at least the next one
            q = max(p + 1, math.floor(q + 1e-9))
        else:
            # rounded down, so that [p, q] still meets the stop rule; at least one rounding unit up
            e = 10.0 ** (math.floor(math.log10(q)) - (SIG_DIGITS - 1))
            r = round_load(math.floor(q / e + 1e-9) * e, False)
            q = r if r > p else round_load(p + 10.0 ** (math.floor(math.log10(p)) - (SIG_DIGITS - 1)), False)
        return min(max(q, self.lo), self.hi)

    def chain(self, f: float | None, i: float | None) -> list[float]:
        """The loads between F and I (None: the unmeasured end) that split [F, I) into the fewest
        brackets each meeting the stop rule: greedy, every step as far as the rule allows. A
        probe at its middle point leaves half of them on either side (module doc)."""
        out: list[float] = []
        p = f
        if p is None:
            p = self.lo  # the leaf [below lo, lo) is "none feasible": lo itself must be measured
            if i is not None and i <= p:
                return out
            out.append(p)
        while not (self.within(p, i) if i is not None else p >= self.hi):
            p = self._step(p)
            if (i is not None and p >= i) or (out and p <= out[-1]):
                break  # only for observations outside the range
            out.append(p)
        return out

    # -- planning ---------------------------------------------------------------------------------
    def _ended(self, f: float | None, i: float | None) -> str | None:
        """converged | all_feasible | none_feasible when the bisection of bracket [f, i] has stopped, else None."""
        if i is not None and i <= self.lo and (f is None or f < self.lo):
            return "none_feasible"
        if f is not None and f >= self.hi:
            return "all_feasible"
        if f is not None and i is not None and (self.within(f, i) or not self.chain(f, i)):
            return "converged"
        return None

    def remeasures(self) -> int:
        """Measurements beyond the first of each load (re-measures, and any replayed repeat)."""
        return len(self.observations) - len(pool(self.observations))

    def _uncertain_ends(self) -> list[Pooled]:
        """The final bracket's ends whose pooled p_feasible is uncertain: the one measured fewer
        times first (another measurement tells more there), then the more uncertain."""
        f, i, _ = bracket(self.observations)
        pooled = pool(self.observations)
        ends = [pooled[x] for x in (f, i) if x is not None and pooled[x].uncertain]
        return sorted(ends, key=lambda e: (e.n, abs(e.p_feasible - P_FEASIBLE), e.load))

    def _remeasure(self) -> float | None:
        """The bracket end to measure again before stopping (module doc: re-measure), or None."""
        if self._uncapped or self._ended(*bracket(self.observations)[:2]) is None:
            return None
        if self.remeasures() >= MAX_REMEASURES or len(self.observations) >= self.point_cap():
            return None
        return next((e.load for e in self._uncertain_ends() if e.n < MAX_MEASUREMENTS_PER_LOAD), None)

    def _anchor(self) -> float | None:
        """The load to measure below F before stopping converged (module doc: anchor), or None."""
        if self._uncapped or len(self._anchors) >= MAX_ANCHORS or len(self.observations) >= self.point_cap():
            return None
        f, i, _ = bracket(self.observations)
        if f is None or self._ended(f, i) != "converged":
            return None
        pooled = pool(self.observations)
        if pooled[f].p_feasible >= P_ANCHOR or any(p.load < f and p.feasible and p.p_feasible >= P_ANCHOR
                                                   for p in pooled.values()):  # fmt: skip
            return None
        # below the lowest load measured up to F: every one of them is unsure (else no anchor)
        a = min(x for x in pooled if x <= f) / (1 + self.tolerance) ** ANCHOR_STEPS
        a = float(max(self.lo, min(f - 1, math.floor(a)))) if self.integer else max(self.lo, round_load(a, False))
        return a if a < f and a not in pooled else None

    def _settle(self) -> tuple[str, float] | None:
        """What to measure before stopping: ("anchoring", load) or ("remeasuring", load), or None."""
        if (a := self._anchor()) is not None:
            return "anchoring", a
        if (r := self._remeasure()) is not None:
            return "remeasuring", r
        return None

    def status(self) -> str:
        """not_started | bracketing | bracketed | anchoring | remeasuring | converged | all_feasible |
        none_feasible | budget_exhausted."""
        f, i, _ = bracket(self.observations)
        if (ended := self._ended(f, i)) is not None:
            return settle[0] if (settle := self._settle()) is not None else ended
        # the decision tree (worst_case_points) runs on copies without the hard cap: it is derived from it
        cap = self.max_points if self.max_points is not None else None if self._uncapped else self.point_cap()
        if cap is not None and len(self.observations) >= cap:
            return "budget_exhausted"
        if not self.observations:
            return "not_started"
        return "bracketing" if f is None or i is None else "bracketed"

    def next_load(self) -> float | None:
        """The load to measure next (the same one until it is observed); None once the search stopped."""
        if self._pending is not None:
            return self._pending
        status = self.status()
        if status in DONE:
            return None
        if status in ("anchoring", "remeasuring"):  # an anchor below F, or an uncertain end measured again
            self._pending = self._settle()[1]
            if status == "anchoring":
                self._anchors.append(self._pending)
            return self._pending
        f, i, _ = bracket(self.observations)
        chain = self.chain(f, i)
        if self.probe_top and self.start is None and i is None and f is not None \
                and not any(o.load == self.hi for o in self.observations):  # fmt: skip
            x = self.hi  # everything so far is feasible: is the top?
        elif self.start is not None and (f is None or i is None):
            # galloping from the prior: double while feasible, halve while infeasible
            x = self.start if not self.observations else f * EXPAND if i is None else i / EXPAND
            x = math.floor(x + 0.5) if self.integer else round_load(x, False)
            x = min(max(x, chain[0]), chain[-1])  # stay strictly inside the bracket and the range
        else:
            x = chain[(len(chain) + 1) // 2 - 1]  # len(chain) + 1 leaves: floor(half) of them below x
        if any(o.load == x for o in self.observations):  # cannot happen (module doc); never loop on it
            raise RuntimeError(f"knee search proposed the measured load {x:g} again; observations: "
                               f"{[(o.load, o.feasible) for o in self.observations]}")  # fmt: skip
        self._pending = float(x)
        return self._pending

    def point_cap(self) -> int:
        """The most points this search measures: max_points, or its worst case + HARD_CAP_MARGIN."""
        if self.max_points is not None:
            return int(self.max_points)
        return self.worst_case_points() + HARD_CAP_MARGIN

    def observe(self, load: float, feasible: bool, reason: str = "", p_feasible: float | None = None) -> None:
        """Record one measured point (normally the one next_load() proposed; any load is accepted):
        its own verdict, and p_feasible (0..1, the measurement's bootstrap share of feasible
        replicates; None: only the verdict is known). A feasible hi widens the range when
        expand_to allows (module doc)."""
        self.observations.append(observation(load, feasible, reason, p_feasible))
        self._pending = None
        f, i, _ = bracket(self.observations)
        if self.expand_to is not None and i is None and f is not None and f >= self.hi and self.hi < self.expand_to:
            nxt = self.hi * EXPAND
            nxt = math.floor(nxt) if self.integer else round_load(nxt, False)
            self.hi = min(nxt, self.expand_to)

    # -- reporting --------------------------------------------------------------------------------
    def stop_rule(self) -> str:
        adj = " or I - F <= 1 (adjacent integers)" if self.integer else ""
        cap = f"; or after {self.max_points} measured points (budget_exhausted)" if self.max_points else ""
        top = ("hi" if self.expand_to is None
               else f"hi (doubled from {self.hi0:g} while feasible, up to expand_to = {self.expand_to:g})")  # fmt: skip
        return (f"stop when a feasible load F and the lowest infeasible load I above it satisfy "
                f"(I - F)/F <= {self.tolerance:g}{adj} (converged); or when {top} = {self.hi:g} is feasible "
                f"(all_feasible: the knee is at least hi); or when lo = {self.lo:g} is infeasible "
                f"(none_feasible){cap}. The knee is F. A load measured more than once is feasible when its "
                f"mean p_feasible is >= {P_FEASIBLE:g}; before stopping, a bracket end whose pooled p_feasible "
                f"lies in ({P_UNCERTAIN_LO:g}, {P_UNCERTAIN_HI:g}) is measured again (at most "
                f"{MAX_MEASUREMENTS_PER_LOAD} measurements of a load, {MAX_REMEASURES} re-measures in all); "
                f"before stopping converged, where F's pooled p_feasible is below {P_ANCHOR:g} and no load below it "
                f"is that sure, the lowest load measured up to F, divided by (1 + tolerance)^{ANCHOR_STEPS}, is measured once as an "
                f"anchor (at most "
                f"{self.point_cap()} points).")  # fmt: skip

    def _copy(self, observations: list[Observation]) -> KneeSearch:
        s = KneeSearch(self.lo, self.hi0, tolerance=self.tolerance, integer=self.integer, max_points=self.max_points,
                       start=self.start, probe_top=self.probe_top, expand_to=self.expand_to)  # fmt: skip
        s._uncapped = True  # the decision tree counts the stop rule's own depth
        for o in observations:  # replayed, so that a widening happens where it did
            s.observe(o.load, o.feasible, o.reason, o.p_feasible)
        return s

    _uncapped = False

    def _depth(self, observations: list[Observation]) -> int:
        x = self._copy(observations).next_load()
        if x is None:
            return len(observations)
        return max(self._depth([*observations, Observation(x, ok)]) for ok in (True, False))

    @cached_property
    def _worst(self) -> int:
        return _worst_case(self.lo, self.hi0, self.tolerance, self.integer, self.max_points, self.start,
                           self.probe_top, self.expand_to)  # fmt: skip

    def worst_case_points(self) -> int:
        """The most points this search can take on a monotone curve, counted on its whole decision
        tree (every outcome of every probe; a few hundred branches). Without `start` it is
        ceil(log2(len(chain(None, None)) + 1)), the fewest any planner needs (module doc)."""
        return self._worst

    def state(self) -> dict[str, Any]:
        """JSON-able summary: settings, stop rule, status, knee, bracket, points in order, notes."""
        f, i, notes = bracket(self.observations)
        status = self.status()
        if self.hi != self.hi0:
            notes.append(f"range widened from hi = {self.hi0:g} to {self.hi:g} (everything up to it was feasible)")
        if status == "all_feasible":
            notes.append(f"knee not reached: feasible up to hi = {self.hi:g}; the knee is a lower bound")
        elif status == "none_feasible":
            notes.append(f"infeasible already at lo = {self.lo:g}")
        elif status == "budget_exhausted":
            notes.append(f"stopped after {self.point_cap()} points before the tolerance was met"
                         + ("" if self.max_points else f" (worst case {self.worst_case_points()} + a margin of "
                            f"{HARD_CAP_MARGIN}: the outcomes did not follow the search's own path)"))  # fmt: skip
        notes += self._pooling_notes(status)
        return {
            "kind": self.kind,
            "stop_rule": self.stop_rule(),
            "status": status,
            "done": status in DONE,
            "stopped": self._stopped(status, f, i),
            "knee": f if status != "none_feasible" else None,
            "bracket": [f, i],  # [highest feasible, lowest infeasible]; None: not measured
            "bracket_rel_width": rel_width(f, i),
            "range": [self.lo, self.hi],
            "integer": self.integer,
            "tolerance": self.tolerance,
            "max_points": self.max_points,
            "start": self.start,
            "probe_top": self.probe_top,
            "expand_to": self.expand_to,
            "points_used": len(self.observations),
            "worst_case_points": self.worst_case_points(),
            "point_cap": self.point_cap(),
            "remeasures": self.remeasures(),
            "anchors": list(self._anchors),
            "next": self._pending,
            "points": points_of(self.observations),
            "pooled": [p.to_dict() for p in pool(self.observations).values()],
            "notes": notes,
        }

    def _stopped(self, status: str, f: float | None, i: float | None) -> str | None:
        """One sentence: why the search stopped, in how many points, and what re-measuring did."""
        if status not in DONE:
            return None
        n, extra = len(self.observations), self.remeasures()
        why = {
            "converged": f"converged: [{f:g}, {i:g}] meets the stop rule" if f is not None and i is not None else "converged",
            "all_feasible": f"all feasible up to hi = {self.hi:g}",
            "none_feasible": f"infeasible at lo = {self.lo:g}",
            "budget_exhausted": f"stopped at the cap of {self.point_cap()} points",
        }[status]  # fmt: skip
        out = f"{why} after {n} point{'s' if n != 1 else ''}"
        if extra:
            again = [f"{p.load:g} x{p.n} (pooled p_feasible {p.p_feasible:.2f}: {'feasible' if p.feasible else 'infeasible'})"
                     for p in pool(self.observations).values() if p.n > 1]  # fmt: skip
            out += f", {extra} of them measuring a load again: {', '.join(again)}"
        if self._anchors:
            out += f"; anchor below the bracket: {', '.join(f'{a:g}' for a in self._anchors)}"
        if status != "budget_exhausted" and (left := self._uncertain_ends()):
            out += "; still uncertain: " + ", ".join(f"{e.load:g} (p_feasible {e.p_feasible:.2f})" for e in left)
        return out

    def _pooling_notes(self, status: str) -> list[str]:
        """What pooling did: each load measured more than once, and an end left uncertain."""
        out = []
        for p in pool(self.observations).values():
            if p.n > 1:
                verdicts = ", ".join("feasible" if v else "infeasible" for v in p.verdicts)
                out.append(f"{p.load:g} measured {p.n} times ({verdicts}): pooled p_feasible {p.p_feasible:.2f}, "
                           f"{'feasible' if p.feasible else 'infeasible'}")  # fmt: skip
        if status in DONE:
            for e in self._uncertain_ends():
                why = (f"{MAX_MEASUREMENTS_PER_LOAD} measurements of it" if e.n >= MAX_MEASUREMENTS_PER_LOAD
                       else f"the margin of {MAX_REMEASURES} re-measures" if self.remeasures() >= MAX_REMEASURES
                       else f"the cap of {self.point_cap()} points")  # fmt: skip
                out.append(f"{e.load:g} is still uncertain (pooled p_feasible {e.p_feasible:.2f} over {e.n} "
                           f"measurement{'s' if e.n > 1 else ''}): stopped at {why}")  # fmt: skip
        return out


@lru_cache(maxsize=256)
def _worst_case(lo: float, hi: float, tolerance: float, integer: bool, max_points: int | None, start: float | None,
                probe_top: bool, expand_to: float | None) -> int:  # fmt: skip
    """KneeSearch.worst_case_points() of a search with these settings (its decision tree; cached:
    the same settings give the same tree)."""
    s = KneeSearch(lo, hi, tolerance=tolerance, integer=integer, max_points=max_points, start=start,
                   probe_top=probe_top, expand_to=expand_to)  # fmt: skip
    return s._depth([])


def planner_for(search: Any, points: Sequence[float], kind: str | None = None) -> GridSearch | KneeSearch:
    """The planner for a SearchConfig (or None: the grid). `points` is traffic.points (the grid,
    and the knee's default range); `kind` is traffic.kind (integer loads for concurrency)."""
    if search is None or search.kind == "grid":
        return GridSearch(points)
    if search.kind != "knee":
        raise ValueError(f"unknown search.kind {search.kind!r} (known: grid, knee)")
    lo = search.lo if search.lo is not None else (min(points) if points else None)
    hi = search.hi if search.hi is not None else (max(points) if points else None)
    if lo is None or hi is None or (search.lo is None and search.hi is None and lo == hi):
        raise ValueError("search=knee needs a range: set search.lo and search.hi, or two traffic.points")
    integer = search.integer if search.integer is not None else kind in CLOSED_LOOP_KINDS
    return KneeSearch(float(lo), float(hi), tolerance=float(search.tolerance), integer=bool(integer),
                      max_points=search.max_points, start=search.start,
                      probe_top=bool(getattr(search, "probe_top", True)),
                      expand_to=getattr(search, "expand_to", None))  # fmt: skip
