"""Successive halving across a sweep: stop a variant's knee search once it cannot win.

With `economy.halving=true` and `search=knee`, a launch reads, once before its first point,
the variants of the same sweep that were measured before it (the sibling folders of its variant
folder, results/<experiment>/<variant>/): their per-point tables and knees, through the
decision's own code (analysis.results.build_table, analysis.knee.knees) at this run's SLO and
price book. After each of its own points it asks analysis.halving.cannot_win whether its most
optimistic cost at capacity already lies above the best of those variants' pessimistic costs;
when it does, the schedule stops the search (Schedule.halt) and run.json records it under
resume.halving ({stopped, reason, own_lower_usd, rival ...}); the decision then lists the variant
as excluded, kind "cannot_win" (analysis.selection).

A resumed launch is judged on every point of the variant: the points earlier launches measured
are replayed first (replay()), and a variant they already show cannot win is not launched again;
a halt recorded by an earlier launch is replayed by the schedule itself (experiments.sweeps.schedule).

Order matters: the first variant of a sweep has no rival and always runs its whole search, and
a variant is compared only with those measured before it. A sweep listing its likeliest winner
first saves the most.

Side effects: reads the sibling variants' run.json and requests.parquet (never writes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from analysis.halving import Halving, Measured, Rival, cannot_win
from loadgen.arrivals import CLOSED_LOOP_KINDS

log = logging.getLogger("servelab")


def rivals(cfg: Any, variant_dir: Path, n_boot: int = 1000, seed: int = 0) -> list[Rival]:
    """The finished variants beside `variant_dir` with a cost at capacity (module doc)."""
    from analysis import knee
    from analysis.decision import gpu_catalog, knee_limits
    from analysis.points import pool_repetitions
    from analysis.records.layout import LAUNCH_PREFIX
    from analysis.records.plain import to_plain
    from analysis.results import build_table

    out: list[Rival] = []
    parent = variant_dir.parent
    if not parent.is_dir():
        return out
    for sib in sorted(p for p in parent.iterdir() if p.is_dir() and p.resolve() != variant_dir.resolve()):
        if not any((d / "run.json").is_file() for d in sib.glob(f"{LAUNCH_PREFIX}*")):
            continue
        try:
            catalog = {k: to_plain(v) for k, v in gpu_catalog({str(cfg.gpu.name)}).items()}
            table = build_table(sib, slo=cfg.slo, pricing=cfg.pricing, gpu_catalog=catalog, n_boot=n_boot,
                                seed=seed).points  # fmt: skip
            pooled = pool_repetitions(table, seed)
            kn = knee.knees(pooled, float(cfg.slo.attainment_target), knee_limits(table, cfg.slo), pooled=True)
        except Exception as e:  # noqa: BLE001 - a sibling the decision cannot read is no rival; say so
            log.info("halving: %s not compared (%s: %s)", sib.name, type(e).__name__, e)
            continue
        for k in kn.values():
            hi = k.usd_at_capacity_hi if k.usd_at_capacity_bound != "at most" else k.usd_at_capacity
            if k.usd_at_capacity is None or hi is None:
                continue  # no cost at capacity (none feasible, unpriced, or no upper end)
            out.append(Rival(str(k.variant_id), str(k.variant_label), float(hi), float(k.usd_at_capacity),
                             "at most" if k.usd_at_capacity_bound == "at most" else "interval"))  # fmt: skip
    return out


class HalvingWatch:
    """Per launch: the rivals, read once, and the rule after each point (module doc)."""

    def __init__(self, cfg: Any, variant_dir: Path, planner: Any) -> None:
        e = getattr(cfg, "economy", None)
        self.cfg, self.variant_dir, self.planner = cfg, Path(variant_dir), planner
        self.enabled = bool(
            e is not None and e.halving and planner is not None and getattr(planner, "kind", "") == "knee"
        )
        self.slack = float(e.halving_slack) if e is not None else 0.0
        self.open_loop = cfg.traffic.kind not in CLOSED_LOOP_KINDS
        self.points: list[Measured] = []
        self._rivals: list[Rival] | None = None
        self.usd_per_hour: float | None = None
        self.last: Halving | None = None

    def prepare(self) -> None:
        """Read the rivals and this variant's price (before the engine starts: seconds of analysis
        that would otherwise hold an engine)."""
        if not self.enabled or self._rivals is not None:
            return
        from analysis.cost import PriceMissing, price_for

        self._rivals = rivals(self.cfg, self.variant_dir)
        try:
            self.usd_per_hour = float(price_for(self.cfg.pricing, self.cfg.gpu).usd_per_hour)
        except PriceMissing:
            self.usd_per_hour = None
        names = ", ".join(f"{r.variant_label} (at most ${r.usd_hi:.4g}/1M)" for r in self._rivals) or "none"
        log.info("halving: rivals measured before this variant: %s", names)

    def observe(self, load: float, feasible: bool, summary: dict[str, Any]) -> str | None:
        """Record one measured point (its run.json summary); the reason to stop the search, or None."""
        if not self.enabled:
            return None
        self._add(load, feasible, summary)
        return self._rule()

    def replay(self, done: Iterable[Any]) -> str | None:
        """Record the points earlier launches of this variant measured (experiments.sweeps.resume
        DonePoint: load, feasibility, summary), so a resumed search is judged on all of its points;
        the reason to stop before launching, or None."""
        if not self.enabled:
            return None
        known = [d for d in done if d.feasible is not None]
        for d in sorted(known, key=lambda d: (d.load_value, d.repetition)):
            self._add(d.load_value, bool(d.feasible), d.summary or {})
        return self._rule() if known else None

    def _add(self, load: float, feasible: bool, summary: dict[str, Any]) -> None:
        ok = int((summary.get("requests") or {}).get("ok") or 0)
        gen = summary.get("generated_tokens", summary.get("output_tokens"))
        tps = summary.get("output_tok_per_s")
        self.points.append(Measured(float(load), bool(feasible), float(tps) if tps is not None else None,
                                    float(gen) / ok if ok and gen is not None else None))  # fmt: skip

    def _rule(self) -> str | None:
        if self._rivals is None:
            self.prepare()
        if not self._rivals or self.usd_per_hour is None:
            return None
        hi = max(float(self.planner.hi), float(getattr(self.planner, "expand_to", None) or 0.0))
        self.last = cannot_win(self.points, self._rivals, usd_per_hour=self.usd_per_hour, open_loop=self.open_loop,
                               hi=hi, slack=self.slack)  # fmt: skip
        return self.last.reason if self.last.cannot_win else None

    def state(self) -> dict[str, Any]:
        """For run.json resume.halving."""
        out: dict[str, Any] = {"enabled": self.enabled, "stopped": bool(self.last and self.last.cannot_win),
                               "rivals": [r.__dict__ for r in self._rivals or []]}  # fmt: skip
        if self.last is not None:
            out |= {k: v for k, v in self.last.to_dict().items() if k != "cannot_win"}
        return out


__all__ = ["HalvingWatch", "rivals"]
