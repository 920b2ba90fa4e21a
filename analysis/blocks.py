"""Time-block bootstrap of one load point: everything its feasibility and cost depend on,
resampled jointly, in blocks of time. Pure: no I/O; numpy only.

Why blocks of time. Requests under load share the engine's queue and batch, so neighbours'
latencies are correlated: resampling requests one by one treats them as independent and
understates the spread of a tail percentile. And what a window served is itself an estimate:
how many requests arrive, and how many tokens they ask for, varies from one stretch of time to
the next, which a resample that holds the request count and the window fixed cannot show (the
default run's cost interval had zero width).

Blocks. The measure phase's requests are ordered by send time (a dropped request, never sent, by
its scheduled time) and the span [t0, t1] of those times is cut into B consecutive blocks of equal
length L; each request belongs to the block its time falls in. A replicate draws B blocks with
replacement (the non-overlapping block bootstrap, Carlstein 1986): block b appears c_b times,
c ~ Multinomial(B, 1/B). Every statistic of the replicate comes from the same c, so the figures a
point is judged on move together:
  attainment_r        = sum_b c_b meets_b / sum_b c_b n_b      (n_b: measure requests, every status)
  value_r(metric, q)  = numpy's linear q-th percentile of the ok requests' values in the drawn
                        blocks, each block's values counted c_b times (exact: a weighted order
                        statistic search over the per-block sorted values, not a built sample)
  tokens_r / s        = sum_b c_b tok_b / sum_b c_b L          (throughput: served per unit time)
  feasible_r          = attainment_r >= target AND every value_r <= its limit
Figures are returned as replicates of the *ratio* to the full sample's own block figure times the
point's reported estimate (the point reports tokens generated inside its steady window, the blocks
count tokens of the requests sent in it), so an interval surrounds the number it qualifies.

Block length, from the data (how long does a dependence last?):
  b_req   the Politis-White optimal block length for the circular block bootstrap (Politis & White
          2004, with the correction of Patton, Politis & White 2009) of the point's E2E latency
          series in send order, in requests (the autocorrelation decides it: no correlation, b=1)
  L       = max(b_req x mean send spacing, mean E2E latency): a request shares the batch with
          whatever is in flight during its own stay, so a block is never shorter than one stay
  B       = floor(span / L), clamped to [MIN_BLOCKS, MAX_BLOCKS]. Fewer than MIN_BLOCKS blocks of
          length L fit: MIN_BLOCKS shorter blocks are used and `notes` says the interval may be
          too narrow; more than MAX_BLOCKS: longer blocks (they keep the dependence; a bootstrap
          over 256 blocks already resolves a 95 % interval).
Extreme percentiles. A p99 of 150 values is close to their maximum, and a resample can never
exceed its sample's maximum: the plain bootstrap's spread of such a percentile is too narrow and
lies below the estimate (its 95 % interval covered the true p99 of an exponential tail 78 % of
the time; the lab's knee, bound by a p99 TTFT, 83 % on a fixed grid). Where fewer than
TAIL_MIN_ABOVE (10) values lie above the percentile, the order statistics above a threshold u
come from an exponential tail (a FIFO queue's waiting time has one; the generalized Pareto with
shape 0, the peaks-over-threshold model of extreme-value statistics):
  u          the value with k = min(TAIL_EXCEEDANCES, n/4) values of the sample above it
  K_r        = sum_b c_b #{block b values > u}: the replicate's exceedances (they move with blocks)
  sigma_r    = sum_b c_b (excess over u of block b) / K_r: the scale fitted to the replicate's own
               exceedances (its maximum-likelihood estimate), so the scale's uncertainty is in too
  rank j     of the replicate's sorted sample, j >= size_r - K_r: u + sigma_r E(j - size_r + K_r + 1 : K_r),
               E(i : K) the i-th smallest of K standard exponentials, drawn by Renyi's
               representation E(i : K) = sum_{t = K-i+1..K} Z_t / t from a seeded generator
               (one stream per metric and percentile: deterministic, bit for bit)
and the replicates are shifted so that their median is the sample's own percentile (the tail
model's centre is not the empirical estimate's; the interval must surround the number it
qualifies). On an exponential sample of 150 the 95 % interval of the p99 then covers the truth
about 96 % of the time (tests/analysis/test_blocks.py); benchmarks/coverage_grid.py measures what
it does to the knee's interval. A tail heavier than exponential is still under-covered.
Repetitions of a point are pooled by analysis.points (pick repetitions with replacement, then
each pick's replicate), so run-to-run spread adds to the within-window spread.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_BLOCKS = 10
MAX_BLOCKS = 256
TAIL_MIN_ABOVE = 10  # a percentile with fewer values above it is extreme (module doc)
TAIL_EXCEEDANCES = 20  # values above the tail threshold u that fit the exponential (at most n/4)


@dataclass(frozen=True)
class Blocks:
    """Each request's block and what the block length rests on."""

    index: np.ndarray  # block of each request, 0 .. n_blocks-1
    n_blocks: int
    length_s: float
    span_s: float
    lag_requests: float | None  # Politis-White block length in requests (None: too few values)
    method: str
    notes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"n_blocks": self.n_blocks, "block_s": self.length_s, "span_s": self.span_s,
                "lag_requests": self.lag_requests, "method": self.method, "notes": list(self.notes)}  # fmt: skip


def politis_white(x: np.ndarray) -> float | None:
    """The optimal block length (in observations) for the circular block bootstrap of the mean of
    the series `x` (Politis & White 2004; Patton, Politis & White 2009); None below 8 values.

    m_hat: the first lag after which K_n = max(5, sqrt(log10 n)) autocorrelations in a row are
    insignificant (|rho| < 2 sqrt(log10 n / n)); M = 2 m_hat; with the flat-top kernel lambda,
    G = sum_{|k|<=M} lambda(k/M) |k| R(k), g = sum_{|k|<=M} lambda(k/M) R(k),
    b = (2 G^2 / (4/3 g^2))^(1/3) n^(1/3), at most min(3 sqrt(n), n/3), at least 1.
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 8:
        return None
    d = x - x.mean()
    var = float(d @ d) / n
    if var <= 0:
        return 1.0
    k_n = max(5, int(np.ceil(np.sqrt(np.log10(n)))))
    m_max = int(np.ceil(np.sqrt(n))) + k_n
    b_max = float(np.ceil(min(3 * np.sqrt(n), n / 3)))
    lags = np.arange(1, min(m_max, n - 1) + 1)
    # autocovariances by FFT: O(n log n) for a million requests
    size = 1 << (2 * n - 1).bit_length()  # zero-padded past 2n (no wrap-around), to a power of two (fast)
    f = np.fft.rfft(d, size)
    acov = np.fft.irfft(f * np.conj(f), size)[: lags[-1] + 1] / n
    rho = acov[1:] / acov[0]
    thresh = 2.0 * np.sqrt(np.log10(n) / n)
    insig = np.abs(rho) < thresh
    m_hat = None
    for m in range(0, len(rho) - k_n + 1):
        if insig[m : m + k_n].all():
            m_hat = m
            break
    if m_hat is None:
        m_hat = len(rho)
    big_m = min(2 * max(m_hat, 1), len(rho))
    k = np.arange(-big_m, big_m + 1)
    t = np.abs(k) / big_m
    lam = np.where(t <= 0.5, 1.0, np.where(t <= 1.0, 2.0 * (1.0 - t), 0.0))
    r = acov[np.abs(k)]
    g_hat = float(np.sum(lam * np.abs(k) * r))
    dcb = 4.0 / 3.0 * float(np.sum(lam * r)) ** 2
    if dcb <= 0:
        return 1.0
    b = (2.0 * g_hat**2 / dcb) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    return float(min(max(b, 1.0), b_max))


def make_blocks(t_ns: np.ndarray, e2e_ms: np.ndarray | None = None, *, block_s: float | None = None) -> Blocks:
    """The blocks of a point whose measure requests have times `t_ns` (send, else scheduled) and,
    for the ok ones, E2E latencies `e2e_ms` in the same order (NaN elsewhere). `block_s` forces
    the block length (then only clamped to the block-count limits)."""
    t = np.asarray(t_ns, dtype=np.float64)
    n = t.size
    if n == 0:
        return Blocks(np.zeros(0, dtype=np.int64), 1, 0.0, 0.0, None, "no requests")
    t0, t1 = float(np.nanmin(t)), float(np.nanmax(t))
    span = (t1 - t0) / 1e9
    notes: list[str] = []
    order = np.argsort(t, kind="stable")
    e2e = np.asarray(e2e_ms, dtype=float)[order] if e2e_ms is not None else np.full(n, np.nan)
    lag = politis_white(e2e)
    if block_s is not None:
        want, method = float(block_s), "given (block_s)"
    else:
        spacing = span / max(n - 1, 1)
        mean_e2e = float(np.nanmean(e2e)) / 1e3 if np.isfinite(e2e).any() else 0.0
        by_lag = (lag or 1.0) * spacing
        want = max(by_lag, mean_e2e)
        method = ("Politis-White block length of the E2E series "
                  f"({lag:.1f} requests x {spacing * 1e3:.1f} ms spacing)" if lag is not None
                  else "too few requests for the autocorrelation")  # fmt: skip
        if mean_e2e >= by_lag:
            method = f"mean E2E latency ({mean_e2e * 1e3:.0f} ms: a request shares the batch during its stay)"
    if span <= 0 or want <= 0:
        return Blocks(np.zeros(n, dtype=np.int64), 1, span, span, lag, method, ("one instant: no blocks",))
    b = int(np.floor(span / want))
    if b < MIN_BLOCKS:
        notes.append(f"the window holds {b} blocks of {want:.3g} s (the dependence length); {MIN_BLOCKS} shorter "
                     "blocks were used, so the interval may be too narrow: measure longer windows")  # fmt: skip
        b = MIN_BLOCKS
    b = min(b, MAX_BLOCKS, max(n, 1))
    length = span / b
    idx = np.minimum(((t - t0) / 1e9 / length).astype(np.int64), b - 1)
    return Blocks(idx, b, length, span, lag, method, tuple(notes))


def block_counts(n_blocks: int, n: int, seed: int) -> np.ndarray:
    """(n, B) how often each block is drawn in each replicate (Multinomial(B, 1/B)); seeded PCG64."""
    g = np.random.Generator(np.random.PCG64(seed))
    return g.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=n)


def block_sums(index: np.ndarray, values: np.ndarray, n_blocks: int) -> np.ndarray:
    """Per block: the sum of `values` over its requests."""
    return np.bincount(index, weights=np.asarray(values, dtype=float), minlength=n_blocks)


class BlockValues:
    """The values of one metric with their blocks, sorted once (globally and per block) so that
    several percentiles of several replicate sets cost one sort."""

    def __init__(self, values: np.ndarray, index: np.ndarray, n_blocks: int) -> None:
        v = np.asarray(values, dtype=float)
        keep = np.isfinite(v)
        v, idx = v[keep], np.asarray(index, dtype=np.int64)[keep]
        order = np.argsort(v, kind="stable")
        self.xs, self.lab = v[order], idx[order]
        # per block, its values in ascending order (small ints sort by radix: fast)
        by_block = np.argsort(self.lab.astype(np.int16 if n_blocks < 2**15 else np.int64), kind="stable")
        self.bounds = np.searchsorted(self.lab[by_block], np.arange(n_blocks + 1))
        self.sizes = np.diff(self.bounds)
        self.seg_vals = self.xs[by_block]
        self.n_blocks = n_blocks

    def percentile(self, counts: np.ndarray, q: float, tail_seed: int | None = None) -> np.ndarray:
        """Per replicate (row of `counts`): numpy's linear q-th percentile of the sample in which
        each value of block b appears counts[r, b] times. Exact, without building the sample.
        `tail_seed` given and the percentile extreme (fewer than TAIL_MIN_ABOVE values above it):
        order statistics above the tail threshold come from the exponential tail (module doc).

        The k-th order statistic of replicate r is the smallest sorted value x_i whose weighted
        count F_r(i) = sum_b c_rb #{block b values <= x_i} reaches k + 1; it is found by bisection
        on i. The answer lies between min_b and max_b of the blocks' own p-quantiles (p = (k + 1) /
        sample size: below every block's quantile each F_b falls short of p n_b, above all of them
        each reaches it), so only that stretch of the sorted values is tabulated (per-block running
        counts), which keeps a p99 over a million requests in 256 blocks to a fraction of a second.
        """
        xs, lab, sizes, bounds, n_blocks = self.xs, self.lab, self.sizes, self.bounds, self.n_blocks
        n_rep = counts.shape[0]
        if xs.size == 0:
            return np.full(n_rep, np.nan)
        size = counts @ sizes  # sample size per replicate
        h = (size - 1) * q / 100.0
        k = np.floor(h).astype(np.int64)
        frac = h - k
        k2 = np.minimum(k + 1, np.maximum(size - 1, 0))
        used = np.flatnonzero(sizes)
        has = size > 0
        p_lo = float(np.min((k[has] + 1) / size[has])) if has.any() else 0.0
        p_hi = float(np.max((k2[has] + 1) / size[has])) if has.any() else 1.0

        def block_quantile(p: float, pick: Any) -> float:
            pos = np.clip(np.ceil(min(max(p, 0.0), 1.0) * sizes[used]).astype(np.int64) - 1, 0, sizes[used] - 1)
            return float(pick(self.seg_vals[bounds[used] + pos]))

        lo_pos = min(int(np.searchsorted(xs, block_quantile(p_lo, np.min), side="left")), xs.size - 1)
        hi_pos = max(int(np.searchsorted(xs, block_quantile(p_hi, np.max), side="right")) - 1, lo_pos)
        ends = np.searchsorted(xs, xs[lo_pos : hi_pos + 1], side="right")  # values <= x_i: positions < ends
        top = int(ends[-1])
        if (top - lo_pos) * n_blocks <= 20_000_000:
            base = np.bincount(lab[:lo_pos], minlength=n_blocks).astype(np.int32)
            onehot = np.zeros((top - lo_pos, n_blocks), dtype=np.int32)
            onehot[np.arange(top - lo_pos), lab[lo_pos:top]] = 1
            table = np.cumsum(onehot, axis=0, out=onehot)[ends - 1 - lo_pos] + base  # (candidates, B)

            def weighted_count(mid: np.ndarray) -> np.ndarray:
                return np.einsum("rb,rb->r", counts, table[mid - lo_pos])
        else:  # a stretch too long to tabulate: count per block at each step
            segs = [self.seg_vals[bounds[b] : bounds[b + 1]] for b in range(n_blocks)]

            def weighted_count(mid: np.ndarray) -> np.ndarray:
                cand = xs[mid]
                c = np.zeros(n_rep, dtype=np.int64)
                for b in used:
                    c += counts[:, b] * np.searchsorted(segs[b], cand, side="right")
                return c

        def kth(rank: np.ndarray) -> np.ndarray:  # the smallest x_i with F(i) >= rank + 1
            lo = np.full(n_rep, lo_pos, dtype=np.int64)
            hi = np.full(n_rep, hi_pos, dtype=np.int64)
            while (lo < hi).any():
                mid = (lo + hi) // 2
                ok = weighted_count(mid) >= rank + 1
                active = lo < hi
                hi = np.where(active & ok, mid, hi)
                lo = np.where(active & ~ok, mid + 1, lo)
            return xs[lo]

        a = kth(k)
        b2 = kth(k2)
        tail = self._tail(counts, q, tail_seed) if tail_seed is not None else None
        if tail is not None:
            start, draw = tail
            a = np.where(k >= start, draw(k - start), a)
            b2 = np.where(k2 >= start, draw(k2 - start), b2)
        out = a + frac * (b2 - a)
        out[~has] = np.nan
        if tail is not None and has.any():  # centred on the sample's own percentile (module doc)
            out += float(np.percentile(self.xs, q)) - float(np.nanmedian(out))
        return out

    def _tail(self, counts: np.ndarray, q: float, seed: int) -> tuple[np.ndarray, Any] | None:
        """The exponential tail of the module doc ("Extreme percentiles"): per replicate the rank
        of its first exceedance of u, and draw(j) -> u + sigma * E(j+1 : K_r), the (j+1)-th
        smallest of K_r exponential exceedances (Renyi: E(j:K) = sum_{i=K-j+1..K} Z_i / i). None
        where the percentile is not extreme or the tail cannot be fitted."""
        n = self.xs.size
        if n * (1.0 - q / 100.0) >= TAIL_MIN_ABOVE:
            return None
        k = min(TAIL_EXCEEDANCES, n // 4)
        if k < 3:
            return None
        u = self.xs[n - k - 1]
        over = self.xs > u
        if not over.any():
            return None
        if not float(np.mean(self.xs[over] - u)) > 0:
            return None
        k_r = counts @ np.bincount(self.lab[over], minlength=self.n_blocks)  # exceedances per replicate
        excess_r = counts @ np.bincount(self.lab[over], weights=self.xs[over] - u, minlength=self.n_blocks)
        with np.errstate(invalid="ignore", divide="ignore"):  # the scale fitted to each replicate's own exceedances
            sigma = np.where(k_r > 0, excess_r / np.maximum(k_r, 1), 0.0)
        start = counts @ self.sizes - k_r
        k_max = int(k_r.max())
        if k_max == 0:
            return None
        g = np.random.Generator(np.random.PCG64(seed))
        # cum[:, i] = sum_{t <= i} Z_t / t, t = 1..k_max (cum[:, 0] = 0)
        z = g.standard_exponential((counts.shape[0], k_max)) / np.arange(1, k_max + 1)
        cum = np.concatenate([np.zeros((counts.shape[0], 1)), np.cumsum(z, axis=1)], axis=1)
        rows = np.arange(counts.shape[0])

        def draw(j: np.ndarray) -> np.ndarray:
            jj = np.clip(j, 0, np.maximum(k_r - 1, 0)) + 1  # 1-based rank among the exceedances
            return u + sigma * (cum[rows, k_r] - cum[rows, np.maximum(k_r - jj, 0)])

        return start, draw


def weighted_percentile(values: np.ndarray, index: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """BlockValues(values, index, B).percentile(counts, q) for a one-off percentile."""
    return BlockValues(values, index, counts.shape[1]).percentile(counts, q)


@dataclass(frozen=True)
class Threshold:
    """One SLO constraint as the replicates judge it: the `values` of ok requests (with their
    `index` into blocks; ITL: one value per gap, indexed by its request's block) at `percentile`
    must be <= `limit_ms`."""

    metric: str
    values: np.ndarray
    index: np.ndarray
    percentile: float
    limit_ms: float


@dataclass
class PointReplicates:
    """Joint replicates of one point's figures (module doc) and the blocks they rest on."""

    blocks: Blocks
    attainment: np.ndarray
    thresholds: dict[str, np.ndarray]  # metric -> value at its SLO percentile
    feasible: np.ndarray
    throughput: dict[str, np.ndarray] = field(default_factory=dict)  # name -> replicates scaled to the estimate
    latency: dict[str, np.ndarray] = field(default_factory=dict)  # "ttft_ms_p99" -> replicates

    @property
    def p_feasible(self) -> float:
        return float(np.mean(self.feasible)) if self.feasible.size else float("nan")


def point_replicates(
    blocks: Blocks,
    *,
    meets: np.ndarray,
    target: float,
    thresholds: Sequence[Threshold] = (),
    sums: Mapping[str, tuple[np.ndarray, float | None]] | None = None,
    latency: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    percentiles: Sequence[float] = (50, 90, 99),
    n: int = 1000,
    seed: int = 0,
) -> PointReplicates:
    """Joint block-bootstrap replicates of one point (module doc).

    `meets`: per measure request, meets every threshold. `sums`: name -> (per-request amount,
    the point's estimate of amount per second): the replicate is (sum_b c_b amount_b / sum_b c_b L)
    scaled by estimate / (full-sample rate), so it is centred on the estimate (estimate None: the
    block rate itself). `latency`: name -> (ok values, their block index), for display intervals.
    """
    c = block_counts(blocks.n_blocks, n, seed)
    idx, nb = blocks.index, blocks.n_blocks
    n_b = np.bincount(idx, minlength=nb).astype(float)
    met_b = block_sums(idx, np.asarray(meets, dtype=float), nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        att = (c @ met_b) / (c @ n_b)
    sorted_values: dict[str, BlockValues] = {}

    def of(name: str, vals: np.ndarray, vidx: np.ndarray) -> BlockValues:
        if name not in sorted_values:
            sorted_values[name] = BlockValues(vals, vidx, nb)
        return sorted_values[name]

    def tail_seed(name: str, q: float) -> int:  # one stream per figure: deterministic, independent
        return int(np.random.SeedSequence([seed, zlib.crc32(name.encode()), int(round(q * 1000))]).generate_state(1)[0])

    values = {t.metric: of(t.metric, t.values, t.index).percentile(c, t.percentile, tail_seed(t.metric, t.percentile))
              for t in thresholds}  # fmt: skip
    feasible = att >= target - 1e-12
    for t in thresholds:
        feasible &= np.nan_to_num(values[t.metric], nan=np.inf) <= t.limit_ms
    time_r = c.sum(axis=1) * blocks.length_s  # = B * L = the span, per replicate
    thr = {}
    for name, (amount, estimate) in (sums or {}).items():
        s_b = block_sums(idx, amount, nb)
        full = s_b.sum() / blocks.span_s if blocks.span_s > 0 else np.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = (c @ s_b) / time_r
            thr[name] = rate * (estimate / full) if estimate is not None and full > 0 else rate
    lat = {}
    for name, (vals, vidx) in (latency or {}).items():
        for q in percentiles:
            lat[f"{name}_p{q:g}"] = of(name, vals, vidx).percentile(c, q, tail_seed(name, q))
    return PointReplicates(blocks, att, values, feasible, thr, lat)
