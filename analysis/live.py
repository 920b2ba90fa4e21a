"""Live figures of a load point while it runs, and of a deployment from its own /metrics. Pure:
no I/O, no clock (every "now" is passed in), no HTTP; experiments.monitor feeds these and
exports them with prometheus_client. Every exported series is listed in analysis.catalog.SERIES
(docs/monitoring.md); the formulas there are the ones below.

:class:`PointLive` reads the load generator's raw records (loadgen.records) as they arrive and
judges each against the run's SLO with the decision's own per-request test
(analysis.slo.meets_mask over analysis.metrics.derive), so a point's live goodput converges on
the figure run.json reports once its last record is in.

:class:`EngineLive` turns successive scrapes of an engine's Prometheus text (samples as
(name, labels, value)) into rates, re-aggregated histograms and the idle share, counting
counter resets (an engine restart) as gaps instead of negative rates.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.metrics import LOADGEN_CPU_LIMIT_PCT, LOADGEN_LOOP_LAG_LIMIT_MS, SCHED_LAG_P99_LIMIT_MS, derive
from analysis.slo import itl_gaps, meets_mask
from loadgen.records import DROPPED, MEASURE, OK, REQUEST_SCHEMA

# Histogram buckets (upper bounds, seconds). TTFT and E2E: 5 ms .. 60 s, dense where interactive
# SLOs sit (100 ms .. 2 s); TPOT and ITL: 1 ms .. 2.5 s, dense at 5 .. 100 ms per token.
REQUEST_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
    15.0, 20.0, 30.0, 60.0,
)  # fmt: skip
TOKEN_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    1.0, 2.5,
)  # fmt: skip
LATENCY_METRICS = {"ttft": REQUEST_LATENCY_BUCKETS_S, "tpot": TOKEN_LATENCY_BUCKETS_S,
                   "itl": TOKEN_LATENCY_BUCKETS_S, "e2e": REQUEST_LATENCY_BUCKETS_S}  # fmt: skip


def usd_per_1m(usd_per_hour: float, tok_per_s: float | None) -> float | None:
    """$ per million tokens at a steady rate (analysis.cost.usd_per_1m's formula); None at 0 tok/s."""
    if not tok_per_s or tok_per_s <= 0 or not math.isfinite(tok_per_s):
        return None
    return usd_per_hour / (tok_per_s * 3600.0) * 1e6


@dataclass
class Histogram:
    """Counts per bucket (the last one is +Inf) and the sum, Prometheus-style once made cumulative."""

    bounds: tuple[float, ...]
    counts: np.ndarray = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)

    def observe(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            # bucket i holds bounds[i-1] < v <= bounds[i] (Prometheus' le is inclusive)
            idx = np.searchsorted(np.asarray(self.bounds), v, side="left")
            self.counts += np.bincount(idx, minlength=len(self.counts))
            self.total += float(v.sum())

    def add_cumulative(self, cumulative: Sequence[float], total: float) -> None:
        """Add another histogram given as cumulative counts per bound (+Inf last) and its sum."""
        c = np.asarray(cumulative, dtype=float)
        self.counts += np.rint(np.diff(np.concatenate([[0.0], c]))).astype(np.int64)
        self.total += float(total)

    def cumulative(self) -> list[tuple[str, float]]:
        c = np.cumsum(self.counts)
        les = [_le(b) for b in self.bounds] + ["+Inf"]
        return list(zip(les, (float(x) for x in c), strict=True))

    @property
    def count(self) -> int:
        return int(self.counts.sum())


def _le(b: float) -> str:
    return repr(float(b))


@dataclass
class _Done:
    """One finished record in the sliding window."""

    t_ns: int  # t_done_ns (t_scheduled_ns for a dropped request, which never ran)
    ok: bool
    meets: bool
    output_tokens: int
    sched_lag_ms: float


class PointLive:
    """The live state of one load point, fed with raw records (dicts as the generator writes them),
    the generator's self-checks and telemetry rows. `now_ns` is always passed in (monotonic ns)."""

    def __init__(self, *, index: int, point_id: str, load_value: float, load_unit: str, slo: Any,
                 usd_per_hour: float, duration_s: float, window_s: float = 10.0,
                 energy_usd_per_j: float = 0.0) -> None:  # fmt: skip
        self.index, self.point_id, self.load_value, self.load_unit = index, point_id, float(load_value), load_unit
        self.slo, self.usd_per_hour, self.duration_s, self.window_s = slo, float(usd_per_hour), float(duration_s), float(window_s)
        self.energy_usd_per_j = float(energy_usd_per_j)  # added to the $ only when the price book excludes energy
        self.requests: Counter[tuple[str, str]] = Counter()  # (status, phase) -> count
        self.output_tokens: Counter[str] = Counter()  # phase -> Σ output_tokens of ok requests
        self.goodput_requests: Counter[str] = Counter()
        self.goodput_tokens: Counter[str] = Counter()
        self.hist: dict[tuple[str, str], Histogram] = {}
        self.recent: deque[_Done] = deque()
        self.measure_requests = 0
        self.measure_meeting = 0
        self.measure_goodput_tokens = 0
        self.measure_start_ns: int | None = None
        self.latest_scheduled: tuple[int, str] | None = None  # (t_scheduled_ns, phase) of the latest record
        self.finished = False
        self.final_window_s: float | None = None  # the point's measure window, once it is known
        self.loop_lag: dict[int, dict[str, Any]] = {}  # worker -> latest self-check
        self.energy: dict[Any, deque[tuple[int, float]]] = {}  # gpu -> (t_ns, energy_j)
        self.power: dict[Any, float] = {}

    # -- feeding -------------------------------------------------------------------------------
    def add_records(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        df = derive(_frame(records))
        met, _, _ = meets_mask(df, self.slo)
        status = df["status"].astype(str).to_numpy()
        phase = df["phase"].astype(str).to_numpy()
        ok = status == OK
        out = df["output_tokens"].astype("Float64").fillna(0).to_numpy(dtype=float).astype(np.int64)
        for key, n in Counter(zip(status.tolist(), phase.tolist(), strict=True)).items():
            self.requests[key] += n
        for i in range(len(df)):
            ph = phase[i]
            if ok[i]:
                self.output_tokens[ph] += int(out[i])
            if met[i]:
                self.goodput_requests[ph] += 1
                self.goodput_tokens[ph] += int(out[i])
        m = phase == MEASURE
        self.measure_requests += int(m.sum())
        self.measure_meeting += int((met & m).sum())
        self.measure_goodput_tokens += int(out[met & m].sum())
        sched = df["t_scheduled_ns"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        if m.any() and np.isfinite(sched[m]).any():
            first = int(np.nanmin(sched[m]))
            self.measure_start_ns = first if self.measure_start_ns is None else min(self.measure_start_ns, first)
        if np.isfinite(sched).any():
            j = int(np.nanargmax(sched))
            if self.latest_scheduled is None or sched[j] > self.latest_scheduled[0]:
                self.latest_scheduled = (int(sched[j]), str(phase[j]))
        for metric in ("ttft", "tpot", "e2e"):
            v = df[f"{metric}_ms"].astype("Float64").to_numpy(dtype=float, na_value=np.nan) / 1e3
            for ph in set(phase[ok].tolist()):
                self._hist(metric, ph).observe(v[ok & (phase == ph)])
        gaps, owner = itl_gaps(df["chunk_ns"])
        if gaps.size:
            for ph in set(phase[ok].tolist()):
                rows = np.nonzero(ok & (phase == ph))[0]
                self._hist("itl", ph).observe(gaps[np.isin(owner, rows)] / 1e3)
        done = df["t_done_ns"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        lag = df["sched_lag_ms"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        for i in range(len(df)):
            t = done[i] if np.isfinite(done[i]) else sched[i]
            if not np.isfinite(t):
                continue
            self.recent.append(_Done(int(t), bool(ok[i]), bool(met[i]), int(out[i]) if ok[i] else 0,
                                     float(lag[i]) if status[i] != DROPPED else math.nan))  # fmt: skip

    def add_lag(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for r in rows:
            self.loop_lag[int(r.get("worker") or 0)] = dict(r)

    def add_telemetry(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """NVML rows (t_ns, gpu, energy_j, power_w); CPU sampler rows carry none and are skipped."""
        for r in rows:
            gpu = r.get("gpu")
            if gpu is None:
                continue
            if r.get("energy_j") is not None and r.get("t_ns") is not None:
                self.energy.setdefault(gpu, deque()).append((int(r["t_ns"]), float(r["energy_j"])))
            if r.get("power_w") is not None:
                self.power[gpu] = float(r["power_w"])

    def finish(self, measure_window_s: float | None) -> None:
        """The point is over: its measure window is what the summary says (run.json's W)."""
        self.finished = True
        self.final_window_s = measure_window_s

    def _hist(self, metric: str, phase: str) -> Histogram:
        key = (metric, phase)
        if key not in self.hist:
            self.hist[key] = Histogram(LATENCY_METRICS[metric])
        return self.hist[key]

    # -- reading -------------------------------------------------------------------------------
    def _window(self, now_ns: int) -> list[_Done]:
        lo = now_ns - int(self.window_s * 1e9)
        while self.recent and self.recent[0].t_ns < lo - int(60e9):  # keep a minute for late arrivals
            self.recent.popleft()
        return [d for d in self.recent if lo < d.t_ns <= now_ns]

    def phase(self) -> str:
        if self.finished:
            return "done"
        return self.latest_scheduled[1] if self.latest_scheduled else "starting"

    def measure_elapsed_s(self, now_ns: int) -> float | None:
        """|W| so far: from the first measure-phase arrival to now, at most duration_s; once the
        point is over, its summary's measure_window_s."""
        if self.finished and self.final_window_s:
            return float(self.final_window_s)
        if self.measure_start_ns is None:
            return None
        return max(min((now_ns - self.measure_start_ns) / 1e9, self.duration_s), 0.0) or None

    def energy_rate_w(self, now_ns: int) -> float | None:
        """Σ over GPUs of the energy counter's increase over the window / the span it covers."""
        lo = now_ns - int(self.window_s * 1e9)
        total = 0.0
        seen = False
        for samples in self.energy.values():
            while len(samples) > 2 and samples[1][0] <= lo:
                samples.popleft()
            if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
                total += (samples[-1][1] - samples[0][1]) / ((samples[-1][0] - samples[0][0]) / 1e9)
                seen = True
        return total if seen else None

    def gauges(self, now_ns: int) -> dict[str, float | None]:
        """Sliding-window and point-so-far figures (names as in analysis.catalog.SERIES, unprefixed)."""
        win = self._window(now_ns)
        w = self.window_s
        ok_tokens = sum(d.output_tokens for d in win)
        good = [d for d in win if d.meets]
        good_tokens = sum(d.output_tokens for d in good)
        lags = np.array([d.sched_lag_ms for d in win if math.isfinite(d.sched_lag_ms)])
        tok_s = ok_tokens / w
        good_tok_s = good_tokens / w
        watts = self.energy_rate_w(now_ns)
        extra_usd_h = (watts or 0.0) * 3600.0 * self.energy_usd_per_j
        elapsed = self.measure_elapsed_s(now_ns)
        point_good_tok_s = self.measure_goodput_tokens / elapsed if elapsed else None
        sched_p99 = float(np.percentile(lags, 99)) if lags.size else None
        lag_max = max((float(r.get("lag_max_ms") or 0.0) for r in self.loop_lag.values()), default=None)
        cpu_max = max((float(r.get("cpu_pct") or 0.0) for r in self.loop_lag.values()), default=None)
        saturated = ((lag_max or 0.0) > LOADGEN_LOOP_LAG_LIMIT_MS or (cpu_max or 0.0) > LOADGEN_CPU_LIMIT_PCT
                     or (sched_p99 or 0.0) > SCHED_LAG_P99_LIMIT_MS)  # fmt: skip
        dropped = sum(n for (s, _), n in self.requests.items() if s == DROPPED)
        return {
            "output_tokens_per_second": tok_s,
            "goodput_requests_per_second": len(good) / w,
            "goodput_output_tokens_per_second": good_tok_s,
            "slo_attainment_ratio": len(good) / len(win) if win else None,
            "usd_per_1m_goodput_tokens": usd_per_1m(self.usd_per_hour + extra_usd_h, good_tok_s),
            "usd_per_1m_output_tokens": usd_per_1m(self.usd_per_hour + extra_usd_h, tok_s),
            "joules_per_output_token": watts / tok_s if watts is not None and tok_s > 0 else None,
            "gpu_power_watts": sum(self.power.values()) if self.power else None,
            "point_goodput_requests_per_second": self.measure_meeting / elapsed if elapsed else None,
            "point_goodput_output_tokens_per_second": point_good_tok_s,
            "point_slo_attainment_ratio": self.measure_meeting / self.measure_requests if self.measure_requests else None,
            "point_usd_per_1m_goodput_tokens": usd_per_1m(self.usd_per_hour, point_good_tok_s),
            "point_measure_elapsed_seconds": elapsed,
            "schedule_lag_seconds": sched_p99 / 1e3 if sched_p99 is not None else None,
            "loop_lag_seconds": lag_max / 1e3 if lag_max is not None else None,
            "loadgen_saturated": float(saturated),
            "requests_dropped": float(dropped > 0),
        }


# The raw fields the live figures read (analysis.metrics.derive and analysis.slo.meets_mask): a
# frame of these alone costs a third of the whole record's (no text, no session columns).
_LIVE_FIELDS = ("phase", "status", "t_scheduled_ns", "t_sent_ns", "t_first_token_ns", "t_last_token_ns", "t_done_ns",
                "chunk_ns", "output_tokens", "prompt_tokens")  # fmt: skip
_LIVE_SCHEMA = pa.schema([REQUEST_SCHEMA.field(n) for n in _LIVE_FIELDS])


def _nullable(t: Any) -> Any:
    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    if pa.types.is_string(t):
        return pd.StringDtype()
    return None


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The records' live fields as requests.parquet's dtypes (nullable ints, strings, Arrow lists)."""
    table = pa.table({n: [r.get(n) for r in records] for n in _LIVE_FIELDS}, schema=_LIVE_SCHEMA)
    return table.to_pandas(types_mapper=_nullable)


# -- a deployment, from its own /metrics ---------------------------------------------------------
Sample = tuple[str, Mapping[str, str], float]


@dataclass
class _Scrape:
    t_ns: int
    counters: dict[str, float]  # concept -> value summed over label sets
    running: float | None
    waiting: float | None
    kv_usage: float | None
    hist: dict[str, tuple[list[tuple[float, float]], float]]  # concept -> ([(le, cumulative)], sum)


class EngineLive:
    """Rates and histograms of one engine from successive scrapes.

    `names`: concept -> metric name (the adapter's metric_names plus its monitor_names):
    generation_tokens_total, requests_total, running, waiting, kv_usage_frac, and the histogram
    families ttft_seconds / tpot_seconds (their _bucket/_sum samples). A counter that goes down
    between two scrapes was reset (the engine restarted): that interval is a gap, counted in
    `resets` and left out of every rate and histogram; nothing is interpolated.
    """

    def __init__(self, names: Mapping[str, str], *, usd_per_hour: float, window_s: float = 30.0) -> None:
        self.names = dict(names)
        self.usd_per_hour = float(usd_per_hour)
        self.window_s = float(window_s)
        self.scrapes: deque[_Scrape] = deque()
        self.ok_scrapes = 0
        self.failed_scrapes = 0
        self.resets = 0
        self.gap_seconds = 0.0
        self.hist = {c: Histogram(()) for c in ("ttft_seconds", "tpot_seconds")}
        self._bounds: dict[str, tuple[float, ...]] = {}
        self.tokens_total = 0.0  # Σ counter increases over the intervals that were not gaps
        self.requests_total = 0.0
        self.up = False

    def failed(self) -> None:
        self.failed_scrapes += 1
        self.up = False

    def add_scrape(self, t_ns: int, samples: Iterable[Sample]) -> None:
        counters: dict[str, float] = {}
        gauges: dict[str, float] = {}
        buckets: dict[str, dict[float, float]] = {}
        sums: dict[str, float] = {}
        by_name = {v: k for k, v in self.names.items()}
        for name, labels, value in samples:
            if not isinstance(value, (int, float)) or math.isnan(value):
                continue
            for concept in ("ttft_seconds", "tpot_seconds"):
                base = self.names.get(concept)
                if base is None:
                    continue
                if name == f"{base}_bucket" and "le" in labels:
                    le = float(labels["le"])
                    buckets.setdefault(concept, {})
                    buckets[concept][le] = buckets[concept].get(le, 0.0) + float(value)
                elif name == f"{base}_sum":
                    sums[concept] = sums.get(concept, 0.0) + float(value)
            concept = by_name.get(name)
            if concept in ("generation_tokens_total", "requests_total"):
                counters[concept] = counters.get(concept, 0.0) + float(value)
            elif concept in ("running", "waiting", "kv_usage_frac"):
                gauges[concept] = gauges.get(concept, 0.0) + float(value)
        hist = {c: (sorted(b.items()), sums.get(c, 0.0)) for c, b in buckets.items()}
        s = _Scrape(t_ns, counters, gauges.get("running"), gauges.get("waiting"), gauges.get("kv_usage_frac"), hist)
        self.ok_scrapes += 1
        self.up = True
        prev = self.scrapes[-1] if self.scrapes else None
        if prev is not None:
            if self._reset(prev, s):
                self.resets += 1
                self.gap_seconds += (t_ns - prev.t_ns) / 1e9
                s.counters["_gap_before"] = 1.0
            else:
                self.tokens_total += max(s.counters.get("generation_tokens_total", 0.0)
                                         - prev.counters.get("generation_tokens_total", 0.0), 0.0)  # fmt: skip
                self.requests_total += max(s.counters.get("requests_total", 0.0) - prev.counters.get("requests_total", 0.0), 0.0)
                for c, (b, total) in s.hist.items():
                    if c in prev.hist:
                        self._add_hist(c, prev.hist[c], (b, total))
        self.scrapes.append(s)
        lo = t_ns - int(self.window_s * 1e9)
        while len(self.scrapes) > 2 and self.scrapes[1].t_ns <= lo:
            self.scrapes.popleft()

    @staticmethod
    def _reset(prev: _Scrape, cur: _Scrape) -> bool:
        for c, v in prev.counters.items():
            if c in cur.counters and cur.counters[c] < v:
                return True
        for c, (b, _) in prev.hist.items():
            if c in cur.hist and cur.hist[c][0] and b and cur.hist[c][0][-1][1] < b[-1][1]:
                return True
        return False

    def _add_hist(self, concept: str, prev: tuple[list[tuple[float, float]], float],
                  cur: tuple[list[tuple[float, float]], float]) -> None:  # fmt: skip
        bounds = tuple(le for le, _ in cur[0] if math.isfinite(le))
        h = self.hist[concept]
        if self._bounds.get(concept) != bounds:  # first scrape, or the engine changed its buckets
            if h.count == 0:
                self.hist[concept] = h = Histogram(bounds)
                self._bounds[concept] = bounds
            else:
                return
        p = dict(prev[0])
        inc = [max(c - p.get(le, 0.0), 0.0) for le, c in cur[0]]
        if len(inc) == len(bounds) + 1:
            h.add_cumulative(inc, max(cur[1] - prev[1], 0.0))

    def _pairs(self) -> list[tuple[_Scrape, _Scrape]]:
        s = list(self.scrapes)
        return [(a, b) for a, b in zip(s, s[1:], strict=False) if "_gap_before" not in b.counters]

    def gauges(self) -> dict[str, float | None]:
        pairs = self._pairs()
        span = sum((b.t_ns - a.t_ns) / 1e9 for a, b in pairs)

        def rate(concept: str) -> float | None:
            if span <= 0 or not any(concept in b.counters for _, b in pairs):
                return None
            inc = sum(max(b.counters.get(concept, 0.0) - a.counters.get(concept, 0.0), 0.0) for a, b in pairs)
            return inc / span

        # idle: the intervals whose both ends saw no running request, weighted by their length
        timed = [(a, b) for a, b in pairs if a.running is not None and b.running is not None]
        tspan = sum((b.t_ns - a.t_ns) / 1e9 for a, b in timed)
        idle = sum((b.t_ns - a.t_ns) / 1e9 for a, b in timed if a.running == 0 and b.running == 0)
        tok_s = rate("generation_tokens_total")
        last = self.scrapes[-1] if self.scrapes else None
        return {
            "engine_output_tokens_per_second": tok_s,
            "engine_requests_per_second": rate("requests_total"),
            "engine_usd_per_1m_output_tokens": usd_per_1m(self.usd_per_hour, tok_s),
            "engine_idle_ratio": idle / tspan if tspan > 0 else None,
            "engine_running_requests": last.running if last else None,
            "engine_waiting_requests": last.waiting if last else None,
            "engine_kv_cache_usage_ratio": last.kv_usage if last else None,
            "engine_up": float(self.up),
        }
