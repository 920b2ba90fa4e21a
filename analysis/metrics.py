"""Metrics derived from raw request records. Pure: no I/O, no processes.

Notation for one request (all times `time.monotonic_ns()`, see loadgen.records):
  t_sched  intended send time      t_sent   request written      t_first  first content chunk
  t_last   last content chunk      t_done   stream finished      N        output tokens (server usage)
Per request (analysis.catalog has every formula; docs/metrics.md is generated from it):
  ttft_ms = (t_first − t_sent)/1e6   e2e_ms = (t_done − t_sent)/1e6   sched_lag_ms = (t_sent − t_sched)/1e6
  tpot_ms = (t_last − t_first)/1e6/(N − 1)  [N ≥ 2]        itl_ms = every gap between consecutive chunks, pooled
Throughput is counted over the steady measure window W = [t0 + warmup_s, t0 + warmup_s + duration_s]
(t0 = the point's start; :func:`measure_window`), not over [first send, last completion]: the
latter includes the drain tail, when the server runs out of work, and made tok/s and J/token
depend on how long the last requests took. Inside W, tokens are counted where they arrived: a
successful request of any phase contributes N × (its chunks in W)/(its chunks), so a request
straddling a boundary adds only its in-window part, and requests of the warmup keep the start
of W loaded. Latency distributions stay per request over the measure phase's `ok` requests.

Everything is vectorised over numpy/Arrow (the chunk lists are read as one flat int64 buffer
with offsets; no per-request Python), and the pooled ITL's exact percentiles come from two
histogram passes instead of a copy of every gap, so a point of 1 M requests × 128 chunks
summarises in about 2 s of CPU and little memory beyond the records (benchmarks/metrics_scale.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.notes import Note
from analysis.records.run import LOAD_UNITS, load_unit
from analysis.sessions import summary as sessions_summary
from loadgen.arrivals import shape_multiplier
from loadgen.records import DROPPED, MEASURE, OK, STATUSES

PERCENTILES = (50, 90, 95, 99)
DISTRIBUTION_KEYS = ("count", "mean", "min", *(f"p{p}" for p in PERCENTILES), "max")

# Flags from measurements of Locust on 2 cores (../shared/reference/locust.md): past these the
# generator's TTFT/ITL percentiles stop being trustworthy.
LOADGEN_CPU_LIMIT_PCT = 60.0
LOADGEN_LOOP_LAG_LIMIT_MS = 50.0
SCHED_LAG_P99_LIMIT_MS = 10.0

# The record fields the metrics read; a reader may load only these (output_text is never needed).
METRIC_COLUMNS = (
    "load_point", "phase", "status", "max_tokens", "prompt_tokens_client", "t_scheduled_ns", "t_sent_ns",
    "t_first_token_ns", "t_last_token_ns", "t_done_ns", "chunk_ns", "prompt_tokens", "output_tokens",
    "output_tokens_source", "output_tokens_client",
)  # fmt: skip
DERIVED_COLUMNS = ("ttft_ms", "e2e_ms", "tpot_ms", "sched_lag_ms", "n_chunks")
_GAP_BLOCK = 1 << 22  # chunk timestamps differenced per block, so no full-size int64 temporary exists


def arrow_to_pandas_type(t: pa.DataType) -> Any:
    """Arrow -> pandas: nullable ints and strings, lists kept as Arrow (one flat buffer, no objects)."""
    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    if pa.types.is_string(t):
        return pd.StringDtype()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pd.ArrowDtype(t)
    return None


def requests_frame(table: pa.Table) -> pd.DataFrame:
    """A requests table (requests.parquet, loadgen.records.to_table) as the frame the metrics take."""
    return table.to_pandas(types_mapper=arrow_to_pandas_type)


# -- distributions ------------------------------------------------------------------------------
def _empty_distribution() -> dict[str, float | int | None]:
    return {"count": 0, "mean": None, "min": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}


def _floats(values: Any) -> np.ndarray:
    if isinstance(values, pd.Series):
        a = values.to_numpy(dtype=np.float64, na_value=np.nan)
    elif isinstance(values, np.ndarray):
        a = values.astype(np.float64, copy=False)
    else:
        a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return a[~np.isnan(a)]


def distribution(values: Any) -> dict[str, float | int | None]:
    """count, mean, min, p50/p90/p95/p99, max of `values` (None/NaN dropped; numpy's linear percentiles)."""
    a = _floats(values)
    if a.size == 0:
        return _empty_distribution()
    out: dict[str, float | int | None] = {"count": int(a.size), "mean": float(a.mean()), "min": float(a.min())}
    for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES), strict=True):
        out[f"p{p}"] = float(v)
    out["max"] = float(a.max())
    return out


def _ranks(n: int) -> list[int]:
    """The order statistics (0-based ranks) that count/mean/min/percentiles/max of n values need."""
    pos = [(n - 1) * p / 100 for p in PERCENTILES]
    return sorted({0, n - 1, *(math.floor(h) for h in pos), *(min(math.floor(h) + 1, n - 1) for h in pos)})


def _from_order_stats(n: int, stat: Mapping[int, int], total: int, scale: float) -> dict[str, float | int | None]:
    """:func:`distribution`'s dict from the order statistics `stat` (rank -> value) and the exact sum."""
    out: dict[str, float | int | None] = {"count": n, "mean": total / n / scale, "min": stat[0] / scale}
    for p in PERCENTILES:
        h = (n - 1) * p / 100
        lo = math.floor(h)
        t = h - lo
        va, vb = float(stat[lo]), float(stat[min(lo + 1, n - 1)])
        # numpy's linear interpolation, including its choice of end to interpolate from
        out[f"p{p}"] = (va + (vb - va) * t if t < 0.5 else vb - (vb - va) * (1 - t)) / scale
    out["max"] = stat[n - 1] / scale
    return out


# -- chunk lists -------------------------------------------------------------------------------
def _list_chunks(chunks: Any) -> list[pa.Array]:
    """The chunk timestamps as Arrow list arrays, from an Arrow column, an Arrow-backed or object
    pandas column, or an iterable of sequences (None = no chunks)."""
    typ = pa.list_(pa.int64())
    if isinstance(chunks, pa.ChunkedArray):
        return list(chunks.chunks)
    if isinstance(chunks, pa.Array):
        return [chunks]
    if isinstance(chunks, pd.Series) and isinstance(chunks.dtype, pd.ArrowDtype):
        return list(chunks.array.__arrow_array__().chunks)
    seq = chunks.to_numpy(dtype=object) if isinstance(chunks, pd.Series) else list(chunks)
    return [pa.array(seq, type=typ, from_pandas=True)]


def _take(arrays: list[pa.Array], idx: np.ndarray) -> pa.Array:
    """Rows `idx` (sorted) of the concatenation of `arrays`, taken chunk by chunk
    (ChunkedArray.take would first concatenate every chunk: a copy of all values)."""
    bounds = np.cumsum([0, *(len(a) for a in arrays)])
    parts = []
    for k, arr in enumerate(arrays):
        local = idx[(idx >= bounds[k]) & (idx < bounds[k + 1])] - bounds[k]
        if local.size:
            parts.append(arr.take(pa.array(local)))
    return pa.concat_arrays(parts) if parts else pa.array([], arrays[0].type if arrays else pa.list_(pa.int64()))


def _lengths(chunks: Any) -> np.ndarray:
    """Number of chunks per request (0 for null), as int64."""
    parts = [pc.fill_null(pc.list_value_length(a), 0).to_numpy() for a in _list_chunks(chunks)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


_HIST_BITS = 20  # pass 1 histogram: at most 2^20 bins (8 MiB of counts)


def _prepare(chunks: Any, select: np.ndarray | None) -> tuple[list[tuple[np.ndarray, ...]], int, int, int]:
    """Per Arrow chunk with a selected request of ≥ 2 chunks: (values, offsets from 0, lengths,
    selected); plus the number of gaps, the largest and the summed span (last − first) of those
    requests. Σ of a request's gaps telescopes to its span, so the sum needs no gap at all."""
    parts, n, span_max, span_sum, row = [], 0, 0, 0, 0
    for arr in _list_chunks(chunks):
        off = np.asarray(arr.offsets, dtype=np.int64)
        lens = np.diff(off)
        keep = (lens >= 2) & ~np.asarray(arr.is_null(), dtype=bool)
        if select is not None:
            keep &= select[row : row + len(arr)]
        row += len(arr)
        if keep.any():
            v = arr.values.to_numpy()
            span = v[off[1:][keep] - 1] - v[off[:-1][keep]]
            span_max, span_sum = max(span_max, int(span.max())), span_sum + int(span.sum())
            parts.append((v[off[0] : off[-1]], off - off[0], lens, keep))
            n += int((lens[keep] - 1).sum())
    return parts, n, span_max, span_sum


def _gap_blocks(parts: list[tuple[np.ndarray, ...]]) -> Any:
    """(gaps, real) block by block: gaps[j] = value j+1 − value j of the flat buffer (int64, into
    one reused buffer), real[j] when both values belong to one selected request. No per-request
    work and no compaction; memory is one block, not one value per gap."""
    buf = np.empty(_GAP_BLOCK, dtype=np.int64)
    for v, off, lens, keep in parts:
        real = np.repeat(keep, lens)[1:]  # gap j ends at value j + 1
        starts = off[1:-1][lens[1:] > 0]
        real[starts[starts > 0] - 1] = False  # the gap into a request's first chunk (value 0 has none)
        for s in range(0, len(v) - 1, _GAP_BLOCK):
            e = min(s + _GAP_BLOCK, len(v) - 1)
            g = buf[: e - s]
            np.subtract(v[s + 1 : e + 1], v[s:e], out=g)
            yield g, real[s:e]


def itl_ms(chunk_lists: Any, select: np.ndarray | None = None) -> np.ndarray:
    """Pooled gaps (ms) between consecutive content chunks of each request (in request order);
    TTFT excluded. `select` (a mask over requests) keeps only those requests' gaps."""
    parts, _, _, _ = _prepare(chunk_lists, select)
    gaps = [g[real] for g, real in _gap_blocks(parts)]  # copies: g is a reused buffer
    return np.concatenate(gaps).astype(np.float64) / 1e6 if gaps else np.zeros(0)


def itl_distribution(chunk_lists: Any, select: np.ndarray | None = None) -> dict[str, float | int | None]:
    """:func:`distribution` of :func:`itl_ms`, exact, without holding every gap: a large point
    pools 10^8 gaps. Pass 1 counts the gaps in ≤ 2^20 bins of equal width (a power of two ns);
    the bins holding the needed ranks are then known, pass 2 keeps only the gaps in those bins,
    and sorting those few gives the exact order statistics. chunk_ns is non-decreasing per
    request (one monotonic clock), so every gap is ≥ 0."""
    parts, n, span_max, span_sum = _prepare(chunk_lists, select)
    if n == 0:
        return _empty_distribution()
    shift = max(span_max.bit_length() - _HIST_BITS, 0)
    nbins = (span_max >> shift) + 1
    idx = np.empty(_GAP_BLOCK, dtype=np.int64)
    hist = np.zeros(nbins + 1, dtype=np.int64)  # the last bin takes the gaps that are not real
    for g, real in _gap_blocks(parts):
        b = np.right_shift(g, shift, out=idx[: g.size])
        np.putmask(b, ~real, nbins)
        hist += np.bincount(b, minlength=nbins + 1)
    cum = np.cumsum(hist[:nbins])
    ranks = _ranks(n)
    rank_bins = np.searchsorted(cum, ranks, side="right")
    wanted = np.zeros(nbins + 1, dtype=bool)
    wanted[rank_bins] = True
    picked = []
    for g, real in _gap_blocks(parts):
        b = np.right_shift(g, shift, out=idx[: g.size])
        np.putmask(b, ~real, nbins)
        picked.append(g[wanted[b]])
    cand = np.sort(np.concatenate(picked))
    # rank r sits in bin k at position r − (gaps below bin k); cand holds the wanted bins in order
    below = np.concatenate([[0], cum])[rank_bins]
    first_in_cand = {int(k): int(np.searchsorted(cand, int(k) << shift)) for k in np.unique(rank_bins)}
    stat = {r: int(cand[first_in_cand[int(k)] + r - int(lo)]) for r, k, lo in zip(ranks, rank_bins, below, strict=True)}
    return _from_order_stats(n, stat, span_sum, 1e6)


# -- per request -------------------------------------------------------------------------------
def _ints(df: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    """(values as int64 with 0 for missing, valid mask) of a nullable integer column."""
    s = df[col]
    return s.to_numpy(dtype=np.int64, na_value=0), s.notna().to_numpy(dtype=bool)


def _float_col(values: np.ndarray, valid: np.ndarray) -> pd.arrays.FloatingArray:
    return pd.arrays.FloatingArray(np.where(valid, values, 0.0), ~valid)


def _ms_between(df: pd.DataFrame, end: str, start: str) -> tuple[np.ndarray, np.ndarray]:
    # difference in int64 first: monotonic ns are ~1e15+, beyond float64's exact integers
    a, va = _ints(df, end)
    b, vb = _ints(df, start)
    return (a - b).astype(np.float64) / 1e6, va & vb


def derive(df: pd.DataFrame) -> pd.DataFrame:
    """The records with per-request metric columns added (formulas in analysis.catalog).

    Columns: ttft_ms, e2e_ms, tpot_ms, sched_lag_ms, n_chunks. Undefined values are <NA>
    (e.g. TPOT of a one-token reply, TTFT of a failed request).
    """
    out = df.copy(deep=False)
    ttft, v = _ms_between(df, "t_first_token_ns", "t_sent_ns")
    out["ttft_ms"] = _float_col(ttft, v)
    e2e, v = _ms_between(df, "t_done_ns", "t_sent_ns")
    out["e2e_ms"] = _float_col(e2e, v)
    decode, v = _ms_between(df, "t_last_token_ns", "t_first_token_ns")
    n, vn = _ints(df, "output_tokens")
    v &= vn & (n >= 2)
    out["tpot_ms"] = _float_col(decode / np.where(v, n - 1, 1), v)
    lag, v = _ms_between(df, "t_sent_ns", "t_scheduled_ns")
    out["sched_lag_ms"] = _float_col(lag, v)
    out["n_chunks"] = pd.array(_lengths(df["chunk_ns"]), dtype="Int64")
    return out


# -- windows and rates ---------------------------------------------------------------------------
def measure_window(
    records: pd.DataFrame,
    *,
    t0_ns: int | None,
    warmup_s: float,
    duration_s: float,
    t_end_ns: int | None = None,
) -> tuple[int, int] | None:
    """The steady measure window [a, b) in monotonic ns: the schedule's measure span
    [t0 + warmup_s, t0 + warmup_s + duration_s), cut at `t_end_ns` when the point stopped early.

    Without t0 (an interrupted point whose generator reported nothing), a = the earliest intended
    send time of a measure-phase request. None when the window is empty.
    """
    if t0_ns is not None:
        a = int(t0_ns) + round(warmup_s * 1e9)
    else:
        phase = _is(records, "phase", MEASURE)
        sched, valid = _ints(records, "t_scheduled_ns")
        if not (phase & valid).any():
            return None
        a = int(sched[phase & valid].min())
    b = a + round(duration_s * 1e9)
    if t_end_ns is not None:
        b = min(b, int(t_end_ns))
    return (a, b) if b > a else None


def _shape_ns(shape: Any) -> Any:
    return SimpleNamespace(**shape) if isinstance(shape, Mapping) else shape


def offered_rate_rps(
    kind: str, value: float, *, warmup_s: float, duration_s: float, cooldown_s: float = 0.0, shape: Any = None
) -> float | None:
    """The configured rate (open loop), integrated over the measure window when a shape scales it:
    value × (1/duration) ∫ m(t / (warmup + duration + cooldown)) dt over [warmup, warmup + duration].

    None for closed loop (users, not a rate) and trace replay (the trace is the schedule; see
    scheduled_rate_rps). The integral uses the midpoint rule on 100 000 steps.
    """
    if kind in LOAD_UNITS or duration_s <= 0:
        return None
    shape = _shape_ns(shape)
    if shape is None or not getattr(shape, "kind", None):
        return float(value)
    total = warmup_s + duration_s + cooldown_s
    m = shape_multiplier(shape)
    steps = 100_000
    u = (warmup_s + (np.arange(steps) + 0.5) * duration_s / steps) / total
    return float(value) * float(np.mean([max(m(x), 0.0) for x in u]))


def _is(df: pd.DataFrame, col: str, value: str) -> np.ndarray:
    return (df[col] == value).fillna(False).to_numpy(dtype=bool)


def window_counts(df: pd.DataFrame, ok: np.ndarray, a: int, b: int) -> tuple[float, int, int]:
    """(output tokens, prompt tokens, completions) of the `ok`-masked requests inside [a, b) ns.

    What output_tok_per_s, total_tok_per_s and achieved_rate_rps count over W; usable for any
    sub-window too (e.g. the two halves of W, to check that a point was steady).

    A request's N tokens are spread over its chunks: it adds N × (chunks in W)/(chunks). Only
    requests with chunks on both sides of a boundary need their chunk lists (few: those in flight
    at a or b). Its prompt counts when its first token arrived in W; a completion when t_done is in W.
    """
    first, vf = _ints(df, "t_first_token_ns")
    last, vl = _ints(df, "t_last_token_ns")
    done, vd = _ints(df, "t_done_ns")
    n, vn = _ints(df, "output_tokens")
    prompt, _ = _ints(df, "prompt_tokens")
    lens = df["n_chunks"].to_numpy(dtype=np.int64, na_value=0) if "n_chunks" in df else _lengths(df["chunk_ns"])
    has = ok & vf & vl & vn & (lens > 0)
    inside = has & (first >= a) & (last < b)
    straddle = has & ~inside & (last >= a) & (first < b)
    tokens = float(n[inside].sum())
    idx = np.nonzero(straddle)[0]
    if idx.size:
        sub = _take(_list_chunks(df["chunk_ns"]), idx)
        flat = pc.list_flatten(sub).to_numpy()
        parent = pc.list_parent_indices(sub).to_numpy()
        in_w = np.bincount(parent, weights=(flat >= a) & (flat < b), minlength=idx.size)
        tokens += float((n[idx] * in_w / lens[idx]).sum())
    prompts = int(prompt[ok & vf & (first >= a) & (first < b)].sum())
    completions = int((ok & vd & (done >= a) & (done < b)).sum())
    return tokens, prompts, completions


# -- one load point ----------------------------------------------------------------------------
def summarize_point(
    records: pd.DataFrame,
    *,
    kind: str,
    value: float,
    warmup_s: float,
    duration_s: float,
    t0_ns: int | None = None,
    t_end_ns: int | None = None,
    cooldown_s: float = 0.0,
    shape: Any = None,
    lag_samples: Sequence[dict[str, Any]] = (),
    ignore_eos: bool = True,
) -> dict[str, Any]:
    """Summary of one load point from its raw records (all phases; formulas in analysis.catalog).

    `t0_ns` is the point's start on the requests' clock (the generator's meta), `t_end_ns` when it
    stopped; `shape` the traffic shape (for offered_rate_rps). `lag_samples` are the load
    generator's once-a-second self-measurements (loop lag, CPU %).
    """
    df = records if "ttft_ms" in records.columns else derive(records)
    status = {s: _is(df, "status", s) for s in STATUSES}
    measure = _is(df, "phase", MEASURE)
    counts_all = {s: int(v.sum()) for s, v in status.items()}
    counts = {s: int((v & measure).sum()) for s, v in status.items()}
    n_measure = int(measure.sum())
    ok = measure & status[OK]
    sent = measure & ~status[DROPPED]

    sent_ns, v_sent = _ints(df, "t_sent_ns")
    done_ns, v_done = _ints(df, "t_done_ns")
    drain_s = None
    if (sent & v_sent).any() and (sent & v_done).any():
        drain_s = (int(done_ns[sent & v_done].max()) - int(sent_ns[sent & v_sent].min())) / 1e9
    window = measure_window(df, t0_ns=t0_ns, warmup_s=warmup_s, duration_s=duration_s, t_end_ns=t_end_ns)
    w_s = w_tokens = w_prompt = w_done = None
    if window is not None:
        w_s = (window[1] - window[0]) / 1e9
        w_tokens, w_prompt, w_done = window_counts(df, status[OK], *window)

    out_n, v_out = _ints(df, "output_tokens")
    prompt_n, v_prompt = _ints(df, "prompt_tokens")
    tpot = distribution(df["tpot_ms"][ok])
    summary: dict[str, Any] = {
        "kind": kind,
        "load_value": value,
        "load_unit": load_unit(kind, "sessions" if "session_id" in df.columns and df["session_id"].notna().any() else None),
        "offered_rate_rps": offered_rate_rps(kind, value, warmup_s=warmup_s, duration_s=duration_s,
                                             cooldown_s=cooldown_s, shape=shape),  # fmt: skip
        "scheduled_rate_rps": (n_measure / duration_s) if duration_s > 0 else None,
        "concurrency": int(value) if kind == "concurrency" else None,
        "requests": {"total": n_measure, **counts},
        "requests_all_phases": {"total": int(len(df)), **counts_all},
        "error_rate": (n_measure - counts[OK]) / n_measure if n_measure else None,
        "measure_window_s": w_s,
        "measure_window_t0_ns": window[0] if window else None,
        "measure_window_t1_ns": window[1] if window else None,
        "drain_window_s": drain_s,
        "achieved_rate_rps": (w_done / w_s) if w_s else None,
        "generated_tokens": int(out_n[ok & v_out].sum()),
        "processed_prompt_tokens": int(prompt_n[ok & v_prompt].sum()),
        "window_generated_tokens": w_tokens,
        "window_prompt_tokens": w_prompt,
        "output_tok_per_s": (w_tokens / w_s) if w_s else None,
        "total_tok_per_s": ((w_tokens + w_prompt) / w_s) if w_s else None,
        "ttft_ms": distribution(df["ttft_ms"][ok]),
        "tpot_ms": tpot,
        "itl_ms": itl_distribution(df["chunk_ns"], ok),
        "e2e_ms": distribution(df["e2e_ms"][ok]),
        "sched_lag_ms": distribution(df["sched_lag_ms"][sent]),
        "interactivity_tok_per_s": (1000.0 / tpot["mean"]) if tpot["mean"] else None,
        "output_tokens_source": sorted(df["output_tokens_source"][ok].dropna().unique().tolist()),
    }
    if ignore_eos:
        max_n, v_max = _ints(df, "max_tokens")
        summary["output_length_mismatches"] = int((ok & ~(v_out & v_max & (out_n == max_n))).sum())
    client, v_client = _ints(df, "prompt_tokens_client")
    drift = ok & v_prompt & v_client & (prompt_n != client)
    both = ok & v_prompt & v_client
    # A difference shared by every prompt is an offset, not drift: a special token (BOS) or template
    # that one side counts and the other does not. The verdict judges the prompts off that offset.
    diff = np.asarray((prompt_n - client)[both], dtype=np.int64)
    values, counts = np.unique(diff, return_counts=True)  # sorted: argmax takes the smallest of ties
    offset = int(values[counts.argmax()]) if len(values) else 0
    summary["prompt_token_drift"] = {
        "requests": int(drift.sum()),
        "mean_server_minus_client": float((prompt_n - client)[drift].mean()) if drift.any() else 0.0,
        "offset": offset,
        "requests_off_offset": int((diff != offset).sum()),
    }
    if "output_tokens_client" in df.columns:
        oc, v_oc = _ints(df, "output_tokens_client")
        od = ok & v_out & v_oc & _is(df, "output_tokens_source", "usage") & (out_n != oc)
        summary["output_token_drift"] = {
            "requests": int(od.sum()),
            "mean_server_minus_client": float((out_n - oc)[od].mean()) if od.any() else 0.0,
        }
    summary["loadgen"] = loadgen_health(lag_samples, summary["sched_lag_ms"])
    if (sess := sessions_summary(df)) is not None:
        summary["sessions"] = sess
    return summary


def _peak(samples: Sequence[dict[str, Any]], key: str) -> tuple[float | None, int | None]:
    best = max((s for s in samples if s.get(key) is not None), key=lambda s: s[key], default=None)
    return (None, None) if best is None else (float(best[key]), best.get("t_ns"))


def loadgen_health(lag_samples: Sequence[dict[str, Any]], sched_lag: dict[str, Any]) -> dict[str, Any]:
    """Whether the load generator kept up: CPU, event-loop lag and schedule lag against limits.

    `saturation_reasons` are Note dicts; CPU and stall notes cover the second that peaked (each
    sample reports the second before its t_ns)."""
    cpu = [s["cpu_pct"] for s in lag_samples if s.get("cpu_pct") is not None]
    cpu_max, cpu_t = _peak(lag_samples, "cpu_pct")
    lag_max, lag_t = _peak(lag_samples, "lag_max_ms")
    reasons: list[Note] = []

    def span(t: int | None) -> dict[str, int | None]:
        return {"t0_ns": None if t is None else int(t) - 1_000_000_000, "t1_ns": t}

    if cpu_max is not None and cpu_max > LOADGEN_CPU_LIMIT_PCT:
        reasons.append(Note("loadgen", "cpu_saturated",
                            f"load generator CPU reached {cpu_max:.0f} % (> {LOADGEN_CPU_LIMIT_PCT:.0f} %)", **span(cpu_t)))  # fmt: skip
    if lag_max is not None and lag_max > LOADGEN_LOOP_LAG_LIMIT_MS:
        reasons.append(Note("loadgen", "loop_stall",
                            f"event-loop stall of {lag_max:.0f} ms (> {LOADGEN_LOOP_LAG_LIMIT_MS:.0f} ms)", **span(lag_t)))  # fmt: skip
    p99 = sched_lag.get("p99")
    if p99 is not None and p99 > SCHED_LAG_P99_LIMIT_MS:
        reasons.append(Note("loadgen", "sched_lag", f"schedule lag p99 {p99:.1f} ms (> {SCHED_LAG_P99_LIMIT_MS:.0f} ms)"))
    means = [s["lag_mean_ms"] for s in lag_samples if s.get("lag_mean_ms") is not None]
    return {
        "cpu_pct_mean": float(np.mean(cpu)) if cpu else None,
        "cpu_pct_max": cpu_max,
        "loop_lag_max_ms": lag_max,
        "loop_lag_mean_ms": float(np.mean(means)) if means else None,
        "saturated": bool(reasons),
        "saturation_reasons": [r.to_dict() for r in reasons],
    }
