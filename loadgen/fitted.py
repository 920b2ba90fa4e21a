"""A trace's shape at any rate (`workload=fitted`): fit lengths, burstiness and prefix reuse, then generate.

The fit (:func:`fit_trace`, pure on a read :class:`~loadgen.trace.Trace`):

- **lengths**: empirical. The (input, output) token pairs of the trace's rows, kept as pairs so
  their correlation survives; items resample them uniformly with replacement. Rows outside
  workload.prompt_min..prompt_max or output_min..output_max are left out (and counted).
- **burstiness**: the shape k of a gamma distribution fitted to the inter-arrival gaps of the
  rows (sorted by time) by the **method of moments**: k = mean² / variance, i.e. 1 / CV². Not
  maximum likelihood: published traces record times coarsely (Mooncake in ms, many rows at the
  same instant), and a zero gap has log-likelihood -inf under a gamma; the moments use every gap
  and match the figure the generator reproduces (gamma gaps of shape k have CV 1/√k,
  loadgen.arrivals). The trace's own mean rate is recorded beside it.
- **prefix reuse** (Mooncake rows, which name their prompt's blocks): per row, the number of
  leading blocks it shares with an earlier row and how many rows back the most recent such row is
  (:func:`loadgen.trace.prefix_reuse`), resampled with the row's lengths as one tuple.

Generation (:func:`fitted_items`, pure given a tokenizer): `n` tuples drawn with
Random("<seed>:fitted"); without blocks each item is a random-vocabulary prompt of its length; with
blocks, item i takes its first s blocks from the item `distance` earlier (if that item has s
blocks; otherwise the most recent earlier item that has them; the first items, with nothing
earlier, share what they can) and fresh blocks after them, so it shares exactly s leading blocks
with the earlier items, the reuse the trace recorded, at the same distance where possible. The
prompts are built token-exactly (loadgen.prefix_blocks). The arrivals are loadgen.arrivals' gamma
process with shape k at each load point's rate (experiments.measure applies it).

Side effects: none.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.trace import PrefixReuse, Trace, nearest_rank, prefix_reuse
from loadgen.workload import TokenCounter, WorkloadError, WorkloadItem, fixed_length_prompt

QUANTILES = (0.1, 0.5, 0.9, 0.99)
GAMMA_METHOD = "method of moments: k = mean(gap)^2 / variance(gap) over the trace's inter-arrival gaps (1/CV^2)"


def length_quantiles(xs: Sequence[int]) -> dict[str, Any]:
    """p10/p50/p90/p99 (nearest rank), mean, min and max of token lengths."""
    s = sorted(xs)
    out: dict[str, Any] = {f"p{round(q * 100)}": nearest_rank(s, q) for q in QUANTILES}
    out.update(mean=statistics.fmean(s) if s else None, min=s[0] if s else None, max=s[-1] if s else None)
    return out


def gamma_shape(times_s: Sequence[float]) -> dict[str, Any]:
    """The gamma shape of the gaps between sorted `times_s` by the method of moments (module doc).

    Raises WorkloadError when there are fewer than 2 gaps or the gaps do not vary.
    """
    ts = sorted(times_s)
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    if len(gaps) < 2:
        raise WorkloadError(f"workload=fitted needs at least 3 trace rows to fit the arrivals, the trace has {len(ts)}")
    mean, var = statistics.fmean(gaps), statistics.variance(gaps)
    if mean <= 0:
        raise WorkloadError("workload=fitted: every trace row arrives at the same instant; no arrival rate can be fitted")
    if var <= 0:
        raise WorkloadError(
            "workload=fitted: the trace's inter-arrival gaps do not vary (evenly spaced arrivals); a gamma shape is "
            "infinite: use traffic=constant with a synthetic workload instead"
        )
    return {
        "gamma_shape": mean * mean / var,
        "method": GAMMA_METHOD,
        "gaps": len(gaps),
        "zero_gaps": sum(g == 0 for g in gaps),
        "mean_gap_s": mean,
        "cv": math.sqrt(var) / mean,
        "recorded_rate_rps": len(gaps) / (ts[-1] - ts[0]),
    }


@dataclass(frozen=True)
class TraceFit:
    """What workload=fitted keeps of a trace: the rows it resamples and the fitted arrival shape."""

    source: dict[str, Any]  # the trace's describe() (path, format, rows, ...)
    pairs: tuple[tuple[int, int], ...]  # (input, output) tokens of each row kept
    arrivals: dict[str, Any]  # gamma_shape(...)
    left_out: int  # rows outside the workload's length bounds
    reuse: PrefixReuse | None  # per kept row: shared leading blocks and reuse distance (Mooncake)

    @property
    def shape(self) -> float:
        return float(self.arrivals["gamma_shape"])

    def figures(self) -> dict[str, Any]:
        """The fitted parameters, as run.json records them (`trace.fitted`)."""
        return {
            "lengths": "empirical: the (input, output) pairs of the rows kept, resampled uniformly with replacement",
            "rows_kept": len(self.pairs),
            "rows_left_out": self.left_out,
            "input_tokens": length_quantiles([a for a, _ in self.pairs]),
            "output_tokens": length_quantiles([b for _, b in self.pairs]),
            "arrivals": dict(self.arrivals),
            "prefix_reuse": self.reuse.summary() if self.reuse is not None else None,
        }


def fit_trace(trace: Trace, prompt_bounds: tuple[int, int | None] = (1, None),
              output_bounds: tuple[int, int | None] = (1, None)) -> TraceFit:  # fmt: skip
    """Fit `trace` (module doc). Rows outside the bounds (lo, hi or None) are left out of the lengths
    and prefix reuse; the arrivals are fitted on every row read."""
    def inside(n: int, b: tuple[int, int | None]) -> bool:
        return n >= b[0] and (b[1] is None or n <= b[1])

    arrivals = gamma_shape(trace.times())
    rows = list(trace.rows)
    reuse_all = None
    if rows and all(r.hash_ids is not None for r in rows):
        order = sorted(range(len(rows)), key=lambda i: rows[i].timestamp_s)  # reuse is counted in arrival order
        rows = [rows[i] for i in order]
        reuse_all = prefix_reuse([r.hash_ids or () for r in rows], [r.input_tokens for r in rows],
                                 trace.block_tokens or 1)  # fmt: skip
    keep = [i for i, r in enumerate(rows) if inside(r.input_tokens, prompt_bounds) and inside(r.output_tokens, output_bounds)]
    if not keep:
        raise WorkloadError(
            f"workload=fitted: none of the {len(rows)} rows of {trace.path} has input tokens within "
            f"workload.prompt_min..prompt_max={prompt_bounds[0]}..{prompt_bounds[1]} and output tokens within "
            f"output_min..output_max={output_bounds[0]}..{output_bounds[1]}; widen them"
        )
    reuse = reuse_all.select(keep) if reuse_all is not None else None
    return TraceFit(
        source=trace.describe(), pairs=tuple((rows[i].input_tokens, rows[i].output_tokens) for i in keep),
        arrivals=arrivals, left_out=len(rows) - len(keep), reuse=reuse,
    )  # fmt: skip


def _block_lists(fit: TraceFit, picks: Sequence[int]) -> list[list[int]]:
    """Hash id lists for the drawn rows `picks`, reproducing each one's shared blocks and distance."""
    assert fit.reuse is not None
    b = fit.reuse.block_tokens
    out: list[list[int]] = []
    next_id = 0
    for i, k in enumerate(picks):
        n = max(math.ceil(fit.pairs[k][0] / b), 1)
        s = min(fit.reuse.shared_blocks[k], n)
        d = fit.reuse.distance[k]
        src: list[int] | None = None
        if s and i:
            j = i - d
            if d > 0 and j >= 0 and len(out[j]) >= s:
                src = out[j]
            else:  # the most recent earlier item with s blocks; else the longest one, sharing what it has
                src = next((out[j] for j in range(i - 1, -1, -1) if len(out[j]) >= s), None)
                if src is None:
                    src = max(out, key=len)
                    s = len(src)
        shared = src[:s] if src is not None else []
        fresh = list(range(next_id, next_id + n - len(shared)))
        next_id += len(fresh)
        out.append(shared + fresh)
    return out


def fitted_items(fit: TraceFit, tok: TokenCounter, n: int, seed: int) -> tuple[list[WorkloadItem], dict[str, Any]]:
    """`n` items drawn from `fit` (module doc), and the same figures measured on them (to compare
    with the trace's in run.json)."""
    if n < 1:
        raise WorkloadError(f"workload.num_prompts must be >= 1, got {n}")
    rng = random.Random(f"{seed}:fitted")
    picks = [rng.randrange(len(fit.pairs)) for _ in range(n)]
    items: list[WorkloadItem] = []
    figures: dict[str, Any] = {"items": n}
    if fit.reuse is not None:
        from loadgen.prefix_blocks import BlockPrompts

        lists = _block_lists(fit, picks)
        bp = BlockPrompts(tok, fit.reuse.block_tokens, seed)
        for i, (k, ids) in enumerate(zip(picks, lists, strict=True)):
            items.append(bp.item(i, ids, fit.pairs[k][0], fit.pairs[k][1]))
        figures["prefix_reuse"] = prefix_reuse(lists, [fit.pairs[k][0] for k in picks], fit.reuse.block_tokens).summary()
    else:
        prng = random.Random(seed)
        for i, k in enumerate(picks):
            text, count = fixed_length_prompt(tok, fit.pairs[k][0], prng)
            items.append(WorkloadItem(prompt_idx=i, prompt=text, prompt_tokens_client=count, max_tokens=fit.pairs[k][1]))
    figures["input_tokens"] = length_quantiles([it.prompt_tokens_client for it in items])
    figures["output_tokens"] = length_quantiles([it.max_tokens for it in items])
    return items, figures


