"""The interval and the seeded generator every interval of the decision uses. Pure: no I/O; numpy only.

Replicates come from analysis.blocks (the time-block bootstrap of a load point: attainment, every
SLO percentile and the throughput from one draw), analysis.points (repetitions pooled
hierarchically) and analysis.quality (prompts resampled); this module turns any of them into the
central 95 % percentile interval, and warns when a percentile rests on too few values:
N < 1 / (1 - q/100) (p99 from fewer than 100, p90 from fewer than 10).
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
N_BOOT = 1000


def rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def min_samples(q: float) -> int:
    """Fewest values for which the q-th percentile has at least one value beyond it."""
    return int(np.ceil(1.0 / (1.0 - q / 100.0) - 1e-9)) if q < 100 else 10**9


def too_few_warning(n_values: int, q: float, what: str = "") -> str | None:
    need = min_samples(q)
    if n_values < need:
        return f"{what + ' ' if what else ''}p{q:g} from {n_values} values (< {need}): the interval is not trustworthy"
    return None


def interval(replicates: np.ndarray | None, level: float = LEVEL) -> tuple[float | None, float | None]:
    """The central `level` percentile interval of the replicates (95 %: the 2.5 % and 97.5 %
    quantiles, numpy's linear method); (None, None) without any. NaN replicates are left out; an
    infinite one (a cost where a replicate served nothing, a knee beyond the measured range) stays
    in, and an end that falls on it is None: unbounded on that side. The one interval function of
    the decision: per-point intervals, pooled repetitions (analysis.points) and quality scores use it."""
    if replicates is None:
        return None, None
    r = np.asarray(replicates, dtype=float)
    r = r[~np.isnan(r)]
    if r.size == 0:
        return None, None
    big = np.finfo(float).max / 4
    lo, hi = np.quantile(np.clip(r, -big, big), [(1 - level) / 2, (1 + level) / 2])
    return (float(lo) if abs(lo) < big / 2 else None), (float(hi) if abs(hi) < big / 2 else None)
