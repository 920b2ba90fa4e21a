"""SLO attainment, goodput and feasibility of one load point. Pure: no I/O.

Per request r of the measure phase (every status; records as in requests.parquet):
  meets(r) = status(r) = ok  AND  for every threshold set in the SLO:
      ttft_ms(r) <= ttft_ms_max,  tpot_ms(r) <= tpot_ms_max,  e2e_ms(r) <= e2e_ms_max,
      share of r's inter-chunk gaps above itl_ms_max <= (100 - itl_percentile) / 100
  (errors, timeouts, cancelled and dropped requests never meet it; a one-token reply has no
  TPOT and meets a TPOT threshold by definition: it has no decode phase.)
  attainment          = count(meets) / count(measure requests)                [DistServe's definition]
  goodput_rps         = count(meets) / W
  goodput_output_tok_per_s = Σ output_tokens(meets) / W
  percentile value    = numpy linear percentile of the metric over the ok requests (ITL: pooled gaps)
  feasible            = attainment >= attainment_target AND every percentile value <= its threshold
W is the point's throughput window (pass the one analysis.metrics reports); without it the
records' [first measure send, last measure done] span is used and named in `window_source`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.metrics import derive
from loadgen.records import DROPPED, MEASURE, OK

SLO_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")


@dataclass(frozen=True)
class Threshold:
    """One SLO limit: metric <= limit_ms at `percentile`."""

    metric: str
    limit_ms: float
    percentile: float


@dataclass(frozen=True)
class ThresholdResult:
    metric: str
    limit_ms: float
    percentile: float
    value_ms: float | None  # the metric's percentile over ok requests (None: no samples)
    samples: int  # values the percentile was taken over
    within: bool  # value_ms <= limit_ms (False without samples)
    requests_meeting: int  # measure requests meeting this threshold alone


@dataclass(frozen=True)
class SloResult:
    slo_name: str
    requests: int  # measure-phase requests, every status
    requests_ok: int
    requests_meeting: int
    attainment: float | None
    attainment_target: float
    goodput_rps: float | None
    goodput_output_tok_per_s: float | None
    goodput_total_tok_per_s: float | None
    goodput_output_tokens: int
    window_s: float | None
    window_source: str
    feasible: bool
    thresholds: tuple[ThresholdResult, ...] = ()
    reasons: tuple[str, ...] = ()  # why not feasible, one line each
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def thresholds(slo: Any) -> list[Threshold]:
    """The set thresholds of an SloConfig, each with its own percentile (or the SLO's default)."""
    out = []
    for m in SLO_METRICS:
        limit = getattr(slo, m, None)
        if limit is None:
            continue
        p = getattr(slo, f"{m.removesuffix('_ms')}_percentile", None)
        out.append(Threshold(m, float(limit), float(p if p is not None else slo.percentile)))
    return out


def _list_array(chunk_ns: pd.Series) -> pa.Array:
    """The chunk lists as one Arrow list array, without a Python object per request when the
    column is already Arrow-backed (requests.parquet read with Arrow dtypes)."""
    col = chunk_ns.array
    if hasattr(col, "__arrow_array__"):
        arr = col.__arrow_array__()
    else:
        arr = pa.array(chunk_ns.to_numpy(dtype=object), type=pa.list_(pa.int64()), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()  # one chunk: no copy
    return arr


class _Gaps:
    """Inter-chunk gaps of every request, flattened: gaps_ms[j] belongs to request owner(j).

    Built from one flat diff of all chunk times; the diffs that cross from one request to the
    next are masked out (`valid`), so nothing loops over requests in Python.
    """

    def __init__(self, chunk_ns: pd.Series) -> None:
        n = len(chunk_ns)
        arr = _list_array(chunk_ns) if n else pa.array([], type=pa.list_(pa.int64()))
        self.lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        # float32 ms straight from the int64 difference (no int64 temporary): < 0.1 µs error below 1 s
        self.gaps_ms = np.empty(max(flat.size - 1, 0), dtype=np.float32)
        if flat.size >= 2:
            np.subtract(flat[1:], flat[:-1], out=self.gaps_ms, casting="unsafe")
            self.gaps_ms *= np.float32(1e-6)
        del flat
        self.valid = np.ones(self.gaps_ms.size, dtype=bool)
        cross = self.offsets[1:-1] - 1  # the diff from request i's last chunk to request i+1's first
        self.valid[cross[(cross >= 0) & (cross < self.valid.size)]] = False
        self.n = n

    def count_per_request(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Per request: how many of its gaps are set in `mask` (all of its gaps when None)."""
        counts = np.maximum(self.lengths - 1, 0)
        if mask is None:
            return counts
        m = mask & self.valid
        has = np.nonzero(counts > 0)[0]
        out = np.zeros(self.n, dtype=np.int64)
        if has.size:
            out[has] = np.add.reduceat(m, self.offsets[has], dtype=np.int64)
        return out

    def pooled(self, rows: np.ndarray) -> np.ndarray:
        """The gaps of the requests selected by the boolean `rows`."""
        if not self.gaps_ms.size:
            return self.gaps_ms
        keep = self.valid & np.repeat(rows, self.lengths)[1:]
        return self.gaps_ms[keep]


def itl_gaps(chunk_ns: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Gaps (ms) between consecutive content chunks of each request, and the row position each gap belongs to."""
    g = _Gaps(chunk_ns)
    owner = np.repeat(np.arange(g.n, dtype=np.int64), g.lengths)[1:]
    return g.gaps_ms[g.valid].astype(float), owner[g.valid]


def _window_from_records(m: pd.DataFrame) -> float | None:
    sent = m[(m["status"] != DROPPED) & m["t_sent_ns"].notna()]
    if sent.empty or not sent["t_done_ns"].notna().any():
        return None
    w = (int(sent["t_done_ns"].max()) - int(sent["t_sent_ns"].min())) / 1e9
    return w if w > 0 else None


def meets_mask(m: pd.DataFrame, slo: Any) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per request of `m` (derived columns present): meets every threshold; per metric: meets it;
    per metric: the ok requests' values the percentile is taken over."""
    ok = (m["status"] == OK).to_numpy(dtype=bool)
    all_met = ok.copy()
    per: dict[str, np.ndarray] = {}
    values: dict[str, np.ndarray] = {}
    for t in thresholds(slo):
        if t.metric == "itl_ms":
            g = _Gaps(m["chunk_ns"])
            over = g.count_per_request(g.gaps_ms > t.limit_ms)
            count = g.count_per_request()
            # at most (100 - p) % of a request's gaps may exceed the limit (p = 100: none may)
            met = ok & (over <= np.floor(count * (100.0 - t.percentile) / 100.0 + 1e-9))
            values[t.metric] = g.pooled(ok)
        else:
            v = m[t.metric].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
            undefined_ok = t.metric == "tpot_ms"  # a one-token reply has no decode phase
            met = ok & ((v <= t.limit_ms) | (np.isnan(v) & undefined_ok))
            values[t.metric] = v[ok & ~np.isnan(v)]
        per[t.metric] = met
        all_met &= met
    return all_met, per, values


def evaluate_point(requests: pd.DataFrame, slo: Any, *, window_s: float | None = None) -> SloResult:
    """Attainment, goodput and feasibility of one load point (formulas in the module doc).

    `requests`: the point's rows of requests.parquet (any phases; derived columns are added when
    missing). `slo`: an SloConfig (or anything with its attributes). `window_s`: the point's
    throughput window in seconds.
    """
    df = requests if "ttft_ms" in requests.columns else derive(requests)
    m = df[df["phase"] == MEASURE].reset_index(drop=True)
    window_source = "given"
    if window_s is None:
        window_s, window_source = _window_from_records(m), "records: first measure send to last measure done"
    n = len(m)
    met, per, values = meets_mask(m, slo)
    out_tok = m["output_tokens"].astype("Float64").fillna(0).to_numpy(dtype=float)
    in_tok = m["prompt_tokens"].astype("Float64").fillna(0).to_numpy(dtype=float)
    good_out = int(out_tok[met].sum())
    good_total = int(out_tok[met].sum() + in_tok[met].sum())
    results = []
    reasons = []
    for t in thresholds(slo):
        v = values[t.metric]
        value = float(np.percentile(v, t.percentile)) if v.size else None
        within = value is not None and value <= t.limit_ms
        results.append(ThresholdResult(t.metric, t.limit_ms, t.percentile, value, int(v.size), within, int(per[t.metric].sum())))
        if value is None:
            reasons.append(f"{t.metric} p{t.percentile:g}: no successful requests to measure it")
        elif not within:
            reasons.append(f"{t.metric} p{t.percentile:g} = {value:.1f} ms > {t.limit_ms:g} ms")
    attainment = float(met.sum() / n) if n else None
    target = float(slo.attainment_target)
    if attainment is None:
        reasons.insert(0, "no measured requests")
    elif attainment < target:
        reasons.insert(0, f"attainment {attainment:.3f} < target {target:g}")
    per_s = (lambda x: x / window_s) if window_s else (lambda x: None)
    return SloResult(
        slo_name=str(getattr(slo, "name", "")),
        requests=n,
        requests_ok=int((m["status"] == OK).sum()),
        requests_meeting=int(met.sum()),
        attainment=attainment,
        attainment_target=target,
        goodput_rps=per_s(float(met.sum())),
        goodput_output_tok_per_s=per_s(float(good_out)),
        goodput_total_tok_per_s=per_s(float(good_total)),
        goodput_output_tokens=good_out,
        window_s=window_s,
        window_source=window_source,
        feasible=not reasons,
        thresholds=tuple(results),
        reasons=tuple(reasons),
    )
