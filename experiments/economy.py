"""Early stop of an overloaded load point while it runs, and the economy.* settings' checks.

:class:`OverloadWatch` is the `abort` callable loadgen.driver.run_load_point polls (every 0.2 s)
while a point runs: every `economy.early_stop_check_s` it reads the records the load generator
has appended so far (work/requests.<index>.jsonl) and asks analysis.overload.detect_overload
whether the queue clearly grows past the SLO. When it does, the reason it returns stops the
generator at once (in-flight requests are recorded as cancelled, no drain), and
experiments.measure records the point as stopped early: infeasible, with that reason.

It watches only open-loop points in req/s (poisson, constant, gamma arrivals) under an SLO with
a TTFT limit: a closed loop cannot grow a queue (its users wait for their answers), and a trace
or sessions point has no rate x duration to bound its window's request count with. It looks at
most `looks` times per point (the window over the check period), the number the test's
per-look level alpha / looks is computed with, so the chance a point without a trend is stopped
stays within alpha (analysis.overload).

Side effects: reads the records file of the running point (never writes).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from analysis.overload import detect_overload
from loadgen.tail import JsonlTail

log = logging.getLogger("servelab")

RATE_KINDS = ("poisson", "constant", "gamma")


def economy_problems(cfg: Any) -> list[str]:
    """economy.* settings (preflight): one line each, naming the fix."""
    e, out = getattr(cfg, "economy", None), []
    if e is None:
        return out
    if not (isinstance(e.early_stop_alpha, int | float) and 0 < e.early_stop_alpha < 1):
        out.append(
            f"economy.early_stop_alpha must be in (0, 1) (the growth test's level, e.g. 0.01), got {e.early_stop_alpha!r}"
        )
    if not (
        isinstance(e.early_stop_check_s, int | float)
        and math.isfinite(e.early_stop_check_s)
        and e.early_stop_check_s > 0
    ):
        out.append(
            f"economy.early_stop_check_s must be > 0 (seconds between two looks, e.g. 0.5), got {e.early_stop_check_s!r}"
        )
    if not (
        isinstance(e.halving_slack, int | float)
        and math.isfinite(e.halving_slack)
        and 0 <= e.halving_slack < 1
    ):
        out.append(f"economy.halving_slack must be in [0, 1) (e.g. 0.1: +10 % on the variant's own throughput), "
                   f"got {e.halving_slack!r}")  # fmt: skip
    return out


def max_miss_share(slo: Any) -> float:
    """The largest share of a window's requests that may miss the TTFT limit with the point still
    feasible: min(1 - attainment target, 1 - TTFT percentile / 100)."""
    p = slo.ttft_percentile if getattr(slo, "ttft_percentile", None) is not None else slo.percentile
    return max(min(1.0 - float(slo.attainment_target), 1.0 - float(p) / 100.0), 0.0)


class OverloadWatch:
    """The abort callable of one running point (module doc); `stats` keeps the last look's figures."""

    def __init__(self, cfg: Any, *, index: int, load_value: float, work: Path, traffic: Any = None,
                 clock: Any = time.monotonic) -> None:  # fmt: skip
        t = traffic if traffic is not None else cfg.traffic
        e = cfg.economy
        self.enabled = bool(e.early_stop) and t.kind in RATE_KINDS and cfg.slo.ttft_ms is not None \
            and getattr(cfg.workload, "kind", "") != "sessions"  # fmt: skip
        self.check_s = float(e.early_stop_check_s)
        self.alpha = float(e.early_stop_alpha)
        self.warmup_s = float(t.warmup_s)
        # every look the window allows, counted up front: the test's per-look level is alpha / looks
        self.looks = max(int(float(t.duration_s) / self.check_s) + 1, 1)
        self.window_requests = float(load_value) * float(t.duration_s)
        self.ttft_limit_ms = float(cfg.slo.ttft_ms) if cfg.slo.ttft_ms is not None else 0.0
        self.miss_share = max_miss_share(cfg.slo)
        self.tail = JsonlTail(work / f"requests.{index}.jsonl")
        self.records: list[dict[str, Any]] = []
        self.clock = clock
        self.t0 = clock()
        self.next_at = self.t0 + self.warmup_s + self.check_s
        self.looked = 0
        self.stats: dict[str, Any] | None = None
        self.reason: str | None = None

    def __call__(self) -> str | None:
        if not self.enabled or self.reason is not None or self.looked >= self.looks:
            return self.reason
        now = self.clock()
        if now < self.next_at:
            return None
        self.next_at = now + self.check_s
        self.records += self.tail.rows()
        v = detect_overload(self.records, ttft_limit_ms=self.ttft_limit_ms, max_miss_share=self.miss_share,
                            window_requests=self.window_requests, looks=self.looks, alpha=self.alpha)  # fmt: skip
        if "p_ttft" in v.stats:  # a look that computed the test counts against the looks
            self.looked += 1
        self.stats = v.stats | {"look": self.looked, "at_s": round(now - self.t0, 3)}
        if v.overloaded:
            self.reason = v.reason
            log.warning("early stop: %s", v.reason)
        return self.reason

    def stopped_early(self) -> dict[str, Any] | None:
        """What run.json records of a point this watch stopped (load_points[].stopped_early), else None."""
        if self.reason is None:
            return None
        return {"reason": self.reason, "test": "analysis.overload.detect_overload", "stats": self.stats}


__all__ = ["OverloadWatch", "economy_problems", "max_miss_share"]
