"""Seeded bootstrap confidence intervals for one load point. Pure: no I/O; numpy only.

Every interval is the percentile bootstrap: the (1 − level)/2 and (1 + level)/2 quantiles of
`n` replicates of the statistic, drawn with numpy's PCG64 generator seeded by `seed` (the same
inputs and seed give the same interval, bit for bit).

Fast, exact resampling (no n × N index matrix, so 1 M requests take milliseconds):
- percentile q of N values (numpy 'linear': h = (N − 1)·q/100, k = ⌊h⌋, value = x₍k₎ + (h − k)(x₍k+1₎ − x₍k₎)):
  a bootstrap sample is x_sorted[⌊N·U_i⌋] with U_i iid uniform, so its (k+1)-th order statistic is
  x_sorted[⌊N·B⌋] with B ~ Beta(k + 1, N − k), and the next one uses B' = B + (1 − B)·Beta(1, N − k − 1).
- sums and counts (goodput, tokens, $/1M): the N requests fall into K distinct (meets SLO, output
  tokens) categories; a bootstrap sample's category counts are Multinomial(N, share of each), so
  a replicate costs O(K), not O(N).
- any other statistic: resampled indices in chunks of rows (memory bounded by `chunk_values`).
Repetitions (same variant_id and point_id run several times): a replicate draws R repetitions
with replacement, then one within-repetition replicate of each, and averages them; the point
estimate is the mean of the repetitions' estimates. The interval thus holds run-to-run spread.
A warning is raised when a percentile rests on too few values: N < 1 / (1 − q/100) (p99 from
fewer than 100, p90 from fewer than 10).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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


def percentile_replicates(values: np.ndarray, q: float, n: int, g: np.random.Generator) -> np.ndarray:
    """`n` bootstrap replicates of numpy's linear q-th percentile of `values` (exact; see module doc)."""
    x = np.sort(np.asarray(values, dtype=float))
    big_n = x.size
    if big_n == 0:
        return np.full(n, np.nan)
    if big_n == 1:
        return np.full(n, x[0])
    h = (big_n - 1) * q / 100.0
    k = min(int(np.floor(h)), big_n - 2)
    frac = h - k
    b1 = g.beta(k + 1, big_n - k, size=n)  # U of rank k+1 (1-based) among N uniforms
    b2 = b1 + (1.0 - b1) * g.beta(1, big_n - k - 1, size=n)  # the next order statistic
    lo = x[np.minimum((big_n * b1).astype(np.int64), big_n - 1)]
    hi = x[np.minimum((big_n * b2).astype(np.int64), big_n - 1)]
    return lo + frac * (hi - lo)


def count_replicates(weights: np.ndarray, n: int, g: np.random.Generator) -> np.ndarray:
    """Multinomial bootstrap: an (n, K) matrix of how often each of K categories appears in each
    replicate, categories having `weights` occurrences among N = Σ weights rows."""
    w = np.asarray(weights, dtype=np.int64)
    total = int(w.sum())
    if total == 0:
        return np.zeros((n, w.size), dtype=np.int64)
    return g.multinomial(total, w / total, size=n)


def bootstrap(
    values: Sequence[float] | np.ndarray,
    stat: str | Callable[[np.ndarray], float],
    n: int = N_BOOT,
    seed: int = 0,
    *,
    chunk_values: int = 4_000_000,
) -> np.ndarray:
    """`n` seeded bootstrap replicates of `stat` over `values`.

    `stat`: "p<q>" (e.g. "p99": exact order-statistic method), "mean", "sum", or any callable
    taking a resampled 1-D array (resampled in chunks of rows, at most `chunk_values` at once).
    """
    x = np.asarray(values, dtype=float)
    g = rng(seed)
    if isinstance(stat, str) and stat.startswith("p"):
        return percentile_replicates(x, float(stat[1:]), n, g)
    if isinstance(stat, str) and stat in ("mean", "sum"):
        # Σ of a resample = Σ_i c_i x_i with c ~ Multinomial(N, 1/N); group equal values first
        uniq, counts = np.unique(x, return_counts=True)
        c = count_replicates(counts, n, g)
        s = c @ uniq
        return s / x.size if stat == "mean" and x.size else s
    if not callable(stat):
        raise ValueError(f"unknown statistic {stat!r}: use 'p<q>', 'mean', 'sum' or a callable")
    rows = max(1, chunk_values // max(x.size, 1))
    out = np.empty(n)
    for start in range(0, n, rows):
        idx = g.integers(0, x.size, size=(min(rows, n - start), x.size))
        out[start : start + idx.shape[0]] = [stat(x[r]) for r in idx]
    return out


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


def _estimate_ci(estimate: float | None, reps: np.ndarray, level: float, warning: str | None = None,
                 keep: bool = False) -> dict[str, Any]:  # fmt: skip
    lo, hi = interval(reps, level)
    out: dict[str, Any] = {"estimate": estimate, "lo": lo, "hi": hi, "level": level, "n_boot": int(len(reps)), "warning": warning}
    if keep:
        out["replicates"] = reps
    return out


def percentile_ci(
    groups: Sequence[np.ndarray] | np.ndarray,
    q: float,
    *,
    n: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
    what: str = "",
) -> dict[str, Any]:
    """Estimate and interval of the q-th percentile; `groups` is one array of values, or one per repetition."""
    reps_values = _as_groups(groups)
    g = rng(seed)
    per_rep = [float(np.percentile(v, q)) if v.size else np.nan for v in reps_values]
    within = np.stack([percentile_replicates(v, q, n, g) for v in reps_values])
    boot = _over_repetitions(within, g)
    warn = too_few_warning(min(v.size for v in reps_values), q, what)
    est = float(np.nanmean(per_rep)) if np.isfinite(per_rep).any() else None
    return _estimate_ci(est, boot, level, warn)


def _as_groups(groups: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(groups, np.ndarray) and groups.dtype != object:
        return [groups.astype(float)]
    out = [np.asarray(v, dtype=float) for v in groups]
    return out or [np.zeros(0)]


def _over_repetitions(within: np.ndarray, g: np.random.Generator) -> np.ndarray:
    """(R, n) within-repetition replicates -> n replicates that also resample the R repetitions."""
    r, n = within.shape
    if r == 1:
        return within[0]
    pick = g.integers(0, r, size=(n, r))
    return np.nanmean(within[pick, np.arange(n)[:, None]], axis=1)


def goodput_ci(
    repetitions: Sequence[dict[str, Any]],
    *,
    usd_per_hour: float | None = None,
    n: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
    keep_replicates: bool = True,
) -> dict[str, Any]:
    """Intervals of goodput (req/s, output tok/s) and of $/1M output and $/1M at goodput.

    Each repetition is {"meets": bool array, "output_tokens": int array (0 for failed requests),
    "window_s": float} over its measure-phase requests. The window is held fixed per repetition
    (the resample changes which requests were served, not how long the point ran).
    $/1M = usd_per_hour · W / 3600 / tokens · 1e6.
    """
    g = rng(seed)
    keys = ("goodput_rps", "goodput_output_tok_per_s", "output_tok_per_s", "usd_per_1m_output", "usd_per_1m_goodput")
    within = {k: [] for k in keys}
    estimates = {k: [] for k in keys}
    for rep in repetitions:
        meets = np.asarray(rep["meets"], dtype=bool)
        tok = np.asarray(rep["output_tokens"], dtype=np.int64)
        w = float(rep["window_s"]) if rep.get("window_s") else np.nan
        # categories: (meets, tokens) pairs; a replicate is their multinomial counts
        keys_, counts = np.unique(tok * 2 + meets, return_counts=True)  # one int per (tokens, meets) pair
        c = count_replicates(counts, n, g)
        good_mask, cat_tok = (keys_ % 2) == 1, (keys_ // 2).astype(float)
        good_n = c[:, good_mask].sum(axis=1).astype(float)
        good_tok = c[:, good_mask] @ cat_tok[good_mask]
        all_tok = c @ cat_tok
        vals = _derived(good_n, good_tok, all_tok, w, usd_per_hour)
        est = _derived(np.array([meets.sum()], float), np.array([tok[meets].sum()], float), np.array([tok.sum()], float), w, usd_per_hour)
        for k in keys:
            within[k].append(vals[k])
            estimates[k].append(est[k][0])
    out = {}
    for k in keys:
        boot = _over_repetitions(np.stack(within[k]), g)
        e = np.asarray(estimates[k], dtype=float)
        est = float(np.nanmean(e)) if np.isfinite(e).any() else None
        out[k] = _estimate_ci(est, boot, level, keep=keep_replicates)
    return out


def _derived(good_n: np.ndarray, good_tok: np.ndarray, all_tok: np.ndarray, w: float, usd_per_hour: float | None) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        usd_w = (usd_per_hour * w / 3600.0) if usd_per_hour is not None else np.nan
        return {
            "goodput_rps": good_n / w,
            "goodput_output_tok_per_s": good_tok / w,
            "output_tok_per_s": all_tok / w,
            "usd_per_1m_output": np.where(all_tok > 0, usd_w / np.where(all_tok > 0, all_tok, 1) * 1e6, np.nan),
            "usd_per_1m_goodput": np.where(good_tok > 0, usd_w / np.where(good_tok > 0, good_tok, 1) * 1e6, np.nan),
        }


def latency_cis(
    repetitions: Sequence[dict[str, np.ndarray]],
    *,
    metrics: Sequence[str] = ("ttft_ms", "tpot_ms", "e2e_ms"),
    percentiles: Sequence[float] = (50, 90, 99),
    n: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, dict[str, Any]]:
    """{"ttft_ms_p99": {estimate, lo, hi, warning, ...}, ...}; each repetition maps metric -> ok-request values.

    Each (metric, percentile) has its own seed derived from `seed`, so adding a metric does not
    move the others' intervals.
    """
    out = {}
    for i, m in enumerate(metrics):
        groups = [np.asarray(r[m], dtype=float) for r in repetitions]
        groups = [v[np.isfinite(v)] for v in groups]
        for j, q in enumerate(percentiles):
            out[f"{m}_p{q:g}"] = percentile_ci(groups, q, n=n, seed=seed + 1000 * i + j + 1, level=level, what=m)
    return out
