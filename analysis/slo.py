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


def itl_gaps(chunk_ns: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Gaps (ms) between consecutive content chunks of each request, and the row position each gap belongs to.

    Vectorised through Arrow: the ragged lists are flattened once; no Python loop per request.
    """
    n = len(chunk_ns)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    arr = pa.array(chunk_ns.to_numpy(dtype=object), type=pa.list_(pa.int64()), from_pandas=True)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    if flat.size < 2:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(n, dtype=np.int64), lengths)
    same = owner[1:] == owner[:-1]  # a gap only between chunks of the same request
    gaps = np.diff(flat)[same] / 1e6
    return gaps, owner[1:][same]


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
            gaps, owner = itl_gaps(m["chunk_ns"])
            over = np.bincount(owner[gaps > t.limit_ms], minlength=len(m))
            count = np.bincount(owner, minlength=len(m))
            # at most (100 - p) % of a request's gaps may exceed the limit (p = 100: none may)
            met = ok & (over <= np.floor(count * (100.0 - t.percentile) / 100.0 + 1e-9))
            values[t.metric] = gaps[ok[owner]] if gaps.size else gaps
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
