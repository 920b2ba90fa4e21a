"""Which load points one launch measures, and in what order: the grid or the knee search, minus
what earlier launches of the variant already measured (experiments.sweeps.resume).

- grid (``search=grid``, the default): every value of ``traffic.points``, ``repetitions`` times,
  repetition-major (rep 0 of every point, then rep 1 of every point, ...), so slow drift of a shared
  machine spreads over all points instead of biasing the last ones;
- knee (``search=knee``): experiments.sweeps.search.KneeSearch proposes each next load from the measured
  feasibility of the earlier ones (repetition ``repetition``); with ``repetitions`` > 1 the final
  bracket (the knee and the first infeasible load) is then measured again for the intervals.

A pair already done is never measured again: for the knee search its recorded feasibility is
replayed into the planner, so a resumed search takes the same path and continues where it
stopped. Pure apart from reading the planner's state; the runner drives it.

Every measurement has its own identity (docs/identity.md): a load the launch measures again (the
knee search re-measuring an uncertain end, a repeated value in ``traffic.points``, a final bracket
end the search measured twice) gets the next repetition of its point_id not yet taken in this
launch. The numbering is a function of the order the loads are asked for, so a resumed launch,
which asks for them in the same order, finds each recorded measurement under the same
repetition and skips it, and never records a new one under a repetition already recorded.

A schedule can be stopped early (halt(): economy.halving found that the variant cannot win,
experiments.sweeps.halving); then nothing more is proposed and state() says why. A halt recorded
by an earlier launch is replayed (with economy.halving on and resume on): the variant's search
is over, so the same command again launches nothing for it.

Side effects: none.
"""

from __future__ import annotations

from typing import Any

from analysis.records import identity
from experiments.sweeps.resume import History
from experiments.sweeps.search import round_load


class Schedule:
    """Drive with ``while (nxt := s.next()) is not None: measure; s.observe(value, rep, feasible)``."""

    def __init__(self, cfg: Any, history: History | None = None) -> None:
        self.cfg = cfg
        self.history = history or History()
        base = int(cfg.repetition)
        if not cfg.resume:
            # measure again: new repetitions after every recorded one of this variant
            base = max([base, *(rep + 1 for (_, rep) in self.history.done)])
        self.reps = list(range(base, base + int(cfg.repetitions)))
        self.search_cfg = getattr(cfg, "search", None)
        self.kind = str(getattr(self.search_cfg, "kind", "grid") or "grid")
        self.skipped: list[dict[str, Any]] = []  # done earlier: (value, rep, run_id)
        self.measured: list[tuple[float, int]] = []
        self._taken: dict[str, set[int]] = {}  # point_id -> repetitions this launch measured or skipped as done
        self._pending: tuple[float, int] | None = None
        self.halted: dict[str, Any] | None = None  # economy.halving stopped the search (halt())
        self.planner: Any = None
        if self.kind == "knee":
            from experiments.sweeps.search import planner_for

            self.integer = cfg.traffic.kind == "concurrency"
            self.planner = planner_for(self.search_cfg, [float(v) for v in cfg.traffic.points], kind=cfg.traffic.kind)
            self.integer = bool(self.planner.integer)
            self._extra: list[tuple[float, int]] | None = None
            e = getattr(cfg, "economy", None)
            if cfg.resume and self.history.halted is not None and e is not None and e.halving:
                # a search halved by an earlier launch stays halved: re-running the sweep launches
                # nothing for it (economy.halving=false or resume=false searches on)
                self.halted = dict(self.history.halted)
        else:
            self.integer = False
            self._grid = [(float(v), r) for r in self.reps for v in cfg.traffic.points]

    def point_id(self, value: float) -> str:
        return identity.point_id(self.cfg.traffic, self.cfg.workload, value)

    def _done(self, value: float, rep: int) -> Any:
        return self.history.done.get((self.point_id(value), rep))

    def _claim(self, value: float, rep: int, *, replayable: bool = False) -> tuple[int, Any]:
        """(repetition, done or None) for the next measurement of `value`, asked for as `rep`: the
        first repetition >= rep not yet taken in this launch (module doc). A recorded one is taken
        and returned as done; with `replayable` (the knee search) one recorded without its
        feasibility cannot be replayed, so it is passed over rather than measured again under its
        own repetition."""
        taken = self._taken.setdefault(self.point_id(value), set())
        while True:
            while rep in taken:
                rep += 1
            taken.add(rep)
            done = self._done(value, rep)
            if done is None or not replayable or done.feasible is not None:
                return rep, done

    # -- iteration ------------------------------------------------------------------------
    def next(self) -> tuple[float, int] | None:
        """The next (load_value, repetition) to measure, None when the schedule is finished."""
        if self._pending is not None:
            return self._pending
        if self.halted is not None:
            return None
        nxt = self._next_grid() if self.planner is None else self._next_knee()
        self._pending = nxt
        return nxt

    def observe(self, value: float, rep: int, feasible: bool | None, reason: str = "",
                p_feasible: float | None = None) -> None:  # fmt: skip
        """What the measurement of the pending pair found (feasible: the in-run SLO check;
        p_feasible: the share of its bootstrap replicates that are feasible, None if unknown)."""
        self._pending = None
        self.measured.append((value, rep))
        if self.planner is not None and self._extra is None:  # the search's own measurements
            self.planner.observe(value, bool(feasible), reason, p_feasible)

    def halt(self, reason: str, detail: dict[str, Any] | None = None) -> None:
        """Stop here: nothing more is measured in this launch (economy.halving: the variant cannot
        win, experiments.sweeps.halving); state() records why under "halving"."""
        self.halted = {"reason": reason, **(detail or {})}
        self._pending = None

    def planned_count(self) -> int:
        """How many points this launch is expected to measure (grid: exact; knee: its worst case)."""
        if self.planner is None:
            return len(self.measured) + len(self._grid) + (self._pending is not None)
        worst = int(self.planner.worst_case_points()) if hasattr(self.planner, "worst_case_points") else 0
        return max(worst - len(self.skipped), 0) + len(self.reps[1:]) * 2

    def pending(self) -> bool:
        """Whether anything is left to measure (replaying what is done)."""
        return self.next() is not None

    def _skip(self, value: float, rep: int, done: Any) -> None:
        self.skipped.append({"load_value": value, "repetition": rep, "point_id": done.point_id, "run_id": done.run_id})

    def _next_grid(self) -> tuple[float, int] | None:
        while self._grid:
            value, want = self._grid.pop(0)
            rep, done = self._claim(value, want)  # a value listed twice: its next repetition
            if done is None:
                return value, rep
            self._skip(value, rep, done)
        return None

    def _next_knee(self) -> tuple[float, int] | None:
        rep0 = self.reps[0]
        while self._extra is None:
            load = self.planner.next_load()
            if load is None:
                # the search has stopped: repeat its final bracket for the other repetitions
                st = self.planner.state()
                finals = [v for v in (st.get("bracket") or []) if v is not None]  # [knee F, first infeasible I]
                self._extra = [(float(v), r) for r in self.reps[1:] for v in finals]
                break
            # the planner proposes loads as they are measured (4 significant digits: a readable,
            # stable value and point_id); rounding again changes nothing
            value = round_load(load, self.integer)
            # a load the search asks for again (a re-measure) is a new repetition of its point
            rep, done = self._claim(value, rep0, replayable=True)
            if done is None:
                return value, rep
            self._skip(value, rep, done)
            self.planner.observe(value, bool(done.feasible), "recorded by an earlier launch", done.p_feasible)
        while self._extra:
            value, want = self._extra.pop(0)
            rep, done = self._claim(value, want)
            if done is None:
                return value, rep
            self._skip(value, rep, done)
        return None

    def state(self) -> dict[str, Any]:
        """For run.json: what was planned, skipped as done, measured; the search's own state."""
        out: dict[str, Any] = {
            "search": self.kind, "repetitions": self.reps,
            "skipped_done": self.skipped, "measured": [{"load_value": v, "repetition": r} for v, r in self.measured],
        }  # fmt: skip
        if self.planner is not None:
            out["knee_search"] = self.planner.state()
            if self.halted is not None:  # the search did not reach its stop rule: say why it ended
                out["knee_search"] |= {"done": True, "stopped": f"halved after {len(self.measured)} points: "
                                       f"{self.halted['reason']}"}  # fmt: skip
        if self.halted is not None:
            out["halving"] = self.halted
        return out
