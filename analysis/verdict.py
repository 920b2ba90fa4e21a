"""Validity verdict of one load point: valid | warn | invalid, with every reason in one place. Pure: no I/O.

A verdict says whether the MEASUREMENT can be trusted, not whether the server did well: an
overloaded server (queues, timeouts, SLO misses) is a result and makes the point infeasible
(analysis.slo), never invalid. Checks, each giving a reason with a severity:
  loadgen_saturated   load generator CPU / event-loop stall / schedule lag over their limits
                      (analysis.metrics.loadgen_health)                                  invalid
  interrupted         the point was cut short (Ctrl-C, abort)                            invalid
  client_errors       requests refused by the server as malformed (HTTP 4xx other than 408/429),
                      share > client_error_limit: the request, not the load, is wrong    invalid
  error_rate          any other failed requests (timeouts, 5xx, 429, cancelled): recorded, and
                      counted as SLO misses                                              warn
  client_drops        requests dropped by the client at traffic.max_inflight             warn
  token_drift         lengths not as planned for > token_drift_limit of requests: replies
                      shorter/longer than max_tokens under ignore_eos (the server's usage
                      count), or prompts whose server count differs from the client's by other
                      than the point's constant offset                                    warn
  token_offset        every prompt differs by one constant (a BOS or template counted on one
                      side only): lengths are as planned up to it                        info
  output_recount      the client's re-tokenization of the streamed text differs from the
                      server's usage count (decoded text need not re-encode to the same
                      tokens); the server's count is used                                 info
  telemetry_gap / scrape_gap  samples missing for > gap_limit (5 %) of the window        warn
  not_steady          output tok/s of the window's first and second half (every completion inside
                      it, warm-up requests' included) differ by > 10 %
                      and the completion counts differ significantly (|z| > 1.96, Poisson), or a
                      linear trend over `trend_bins` bins changes throughput by > 10 % with
                      |t| > 2. Open loop (load in req/s) the server serves what it is sent, and
                      Poisson arrivals alone put 106 requests in one half and 123 in the other
                      (z ~ 1 by chance, 5 % of windows past 1.96): there the change must ALSO be
                      more than the offered load explains, i.e. the same test on completions
                      minus the requests sent one median E2E earlier (the sends the completions
                      follow) must fail too. A server that keeps its throughput (saturated) and
                      one that follows its arrivals (below capacity) both pass.            warn
  drift               the window's halves disagree beyond their intervals (time-block bootstrap of
                      each half, analysis.blocks: disjoint 95 % intervals and a change > 10 %) in
                      TTFT p50 or queue depth (requests waiting for a first token, by Little's law:
                      sum of TTFT / half span), or in output tok/s where not_steady has not said
                      so (closed loop only: open loop a half's tok/s is its arrivals); the reason
                      names the drift: warm-up too short (first half slower), the engine slowing
                      (thermal throttling, a cache filling, other load), or a queue growing
                      through the window (offered load above capacity)                   warn
                      Open loop, a latency drift toward the half that was sent MORE requests is
                      what the load explains (near capacity a few more arrivals lift TTFT a lot):
                      `load_drift`, info, with both halves' counts; a queue growing through the
                      window stays a warn (it grows whatever the counts)                  info
  too_few_samples     fewer than min_ok_invalid successful requests                     invalid
                      fewer than 100 (a p99 needs 100)                                   warn
  no_warmup           no warmup requests were excluded before the window                 warn
  warmup_excluded     how many warmup requests were excluded                            info
Status = the worst severity found (info does not count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.notes import note_text
from loadgen.records import CANCELLED, DROPPED, ERROR, MEASURE, OK, TIMEOUT, WARMUP

VALID, WARN, INVALID, INFO = "valid", "warn", "invalid", "info"
_RANK = {INFO: 0, VALID: 0, WARN: 1, INVALID: 2}


@dataclass(frozen=True)
class VerdictLimits:
    client_error_limit: float = 0.01  # share of measure requests
    token_drift_limit: float = 0.01
    gap_limit: float = 0.05  # share of the window without samples
    gap_factor: float = 3.0  # a gap is a pause longer than this many sampling intervals
    steady_limit: float = 0.10  # relative throughput change
    steady_z: float = 1.96
    trend_bins: int = 10
    trend_t: float = 2.0
    min_ok_warn: int = 100
    min_ok_invalid: int = 10


@dataclass(frozen=True)
class Verdict:
    status: str  # valid | warn | invalid
    reasons: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons)}


def _reason(kind: str, severity: str, message: str, source: str = "verdict", **extra: Any) -> dict[str, Any]:
    """A Note-like dict (source, kind, message) plus severity and the numbers behind it."""
    return {"source": source, "kind": kind, "severity": severity, "message": message, **extra}


def gap_share(t_ns: Any, t0_ns: int, t1_ns: int, interval_s: float, factor: float = 3.0) -> float:
    """Share of [t0, t1] inside sampling gaps: every pause d > factor × interval between consecutive
    samples (window edges included) counts d − interval as missing."""
    span = (t1_ns - t0_ns) / 1e9
    if span <= 0:
        return 0.0
    t = np.unique(np.asarray(t_ns, dtype=np.int64))
    t = t[(t >= t0_ns) & (t <= t1_ns)]
    edges = np.concatenate([[t0_ns], t, [t1_ns]]).astype(np.int64)
    d = np.diff(edges) / 1e9
    missing = np.where(d > factor * interval_s, d - interval_s, 0.0).sum()
    return float(min(missing / span, 1.0))


def _trend(y: np.ndarray, scale: float) -> tuple[float | None, float | None]:
    """(change over the window relative to `scale`, t statistic) of a least-squares line through
    per-bin values `y`."""
    bins = len(y)
    if scale <= 0:
        return None, None
    x = (np.arange(bins) + 0.5) / bins
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / (xc**2).sum())
    resid = y - (y.mean() + slope * xc)
    se = np.sqrt((resid**2).sum() / (bins - 2) / (xc**2).sum())
    return slope / scale, (float(slope / se) if se > 0 else (np.inf if slope else 0.0))


def steadiness(done_ns: np.ndarray, tokens: np.ndarray, t0_ns: int, t1_ns: int, bins: int = 10,
               offered_ns: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """First-vs-second-half throughput and a least-squares trend over `bins` equal bins of the window,
    from the completion time and output tokens of the window's successful requests.

    `offered_ns` (open loop): when each sent request would complete were the server keeping pace
    (its send time plus the median E2E). Then `offered_change` is the change of those counts
    between the halves, and `offered_z` / `offered_trend_t` test completions MINUS them: what the
    arrivals do not explain."""
    none = {"halves_change": None, "halves_z": None, "trend_change": None, "trend_t": None,
            "offered_change": None, "offered_z": None, "offered_trend_t": None}  # fmt: skip
    span = t1_ns - t0_ns
    if span <= 0 or len(done_ns) == 0:
        return none
    rel = (np.asarray(done_ns, dtype=np.int64) - t0_ns) / span
    tok = np.asarray(tokens, dtype=float)
    inside = (rel >= 0) & (rel <= 1)
    rel, tok = rel[inside], tok[inside]
    first = rel < 0.5
    a, b = tok[first].sum(), tok[~first].sum()
    ca, cb = int(first.sum()), int((~first).sum())
    out = dict(none)
    out["halves_change"] = (b - a) / ((a + b) / 2) if a + b > 0 else None
    out["halves_z"] = (cb - ca) / np.sqrt(ca + cb) if ca + cb > 0 else None
    idx = np.minimum((rel * bins).astype(int), bins - 1)
    y = np.bincount(idx, weights=tok, minlength=bins)
    out["trend_change"], out["trend_t"] = _trend(y, y.mean())
    if offered_ns is not None:
        orel = (np.asarray(offered_ns, dtype=np.int64) - t0_ns) / span
        orel = orel[(orel >= 0) & (orel <= 1)]
        oa, ob = int((orel < 0.5).sum()), int((orel >= 0.5).sum())
        out["offered_change"] = (ob - oa) / ((oa + ob) / 2) if oa + ob > 0 else None
        # the completions' own Poisson scale: an unexplained change as large as a plain one
        # would need to be, to count
        out["offered_z"] = ((cb - ca) - (ob - oa)) / np.sqrt(ca + cb) if ca + cb > 0 else None
        oidx = np.minimum((orel * bins).astype(int), bins - 1)
        yc = np.bincount(idx, minlength=bins).astype(float)
        yo = np.bincount(oidx, minlength=bins).astype(float)
        out["offered_trend_t"] = _trend(yc - yo, max(yc.mean(), 1e-12))[1]
    return out


def halves(requests: pd.DataFrame, t0_ns: int, t1_ns: int, *, n: int = 400, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per half of the window [t0, t1] (by send time): output tok/s, TTFT p50 and queue depth (mean
    requests waiting for a first token: sum of TTFT / half span, Little's law), each with the 95 %
    interval of a time-block bootstrap of that half (analysis.blocks)."""
    from analysis import blocks as bl
    from analysis.confidence import interval

    def col(name: str) -> np.ndarray:
        if name not in requests.columns:
            return np.full(len(requests), np.nan)
        return requests[name].astype("Float64").to_numpy(dtype=float, na_value=np.nan)

    sent_f = col("t_sent_ns")
    meas = (requests["phase"] == MEASURE).to_numpy(dtype=bool) & np.isfinite(sent_f)
    sent = sent_f[meas].astype(np.int64)
    ok_all = (requests["status"] == OK).to_numpy(dtype=bool)[meas]
    ttft_all, e2e_all = col("ttft_ms")[meas], col("e2e_ms")[meas]
    tok_all = np.nan_to_num(col("output_tokens")[meas])
    mid = (t0_ns + t1_ns) // 2
    out: dict[str, dict[str, Any]] = {}
    for name, sel in (("first", (sent >= t0_ns) & (sent < mid)), ("second", (sent >= mid) & (sent <= t1_ns))):
        if sel.sum() < 2:
            return {}
        ok, ttft = ok_all[sel], ttft_all[sel]
        b = bl.make_blocks(sent[sel], e2e_all[sel])
        span = (mid - t0_ns) / 1e9
        tok = np.where(ok, tok_all[sel], 0.0)
        keep = ok & np.isfinite(ttft)
        # waits in whole microseconds: integer sums are exact in any order, so the replicates are the
        # same bit for bit on any CPU's matrix kernels
        wait_us = np.round(np.where(keep, ttft, 0.0) * 1e3)
        r = bl.point_replicates(b, meets=ok, target=0.0, n=n, seed=seed,
                                sums={"tok_s": (tok, tok.sum() / span), "queue": (wait_us, wait_us.sum() / span)},
                                latency={"ttft_ms": (ttft[keep], b.index[keep])}, percentiles=(50,))  # fmt: skip
        lo_q, hi_q = interval(r.throughput["queue"])
        out[name] = {
            "sent": int(sel.sum()),
            "tok_s": (tok.sum() / span, *interval(r.throughput["tok_s"])),
            "queue": (wait_us.sum() / span / 1e6, None if lo_q is None else lo_q / 1e6, None if hi_q is None else hi_q / 1e6),
            "ttft_p50": (float(np.percentile(ttft[keep], 50)) if keep.any() else None, *interval(r.latency["ttft_ms_p50"])),
        }
    return out


def _offered_ns(requests: pd.DataFrame, ok: pd.DataFrame) -> np.ndarray | None:
    """Open loop: every sent request's send time plus the median send-to-done time of the
    successful ones (when it would complete, the server keeping pace: the completion times
    steadiness counts are t_done); None without any."""
    if "t_sent_ns" not in requests.columns or ok.empty:
        return None
    took = (ok["t_done_ns"].astype("Float64") - ok["t_sent_ns"].astype("Float64")).dropna()
    if took.empty:
        return None
    sent = requests["t_sent_ns"].astype("Float64").dropna().to_numpy(dtype=float)
    return (sent + float(took.median())).astype(np.int64)


def drift_reason(requests: pd.DataFrame, t0_ns: int, t1_ns: int, lim: VerdictLimits, *,
                 throughput: bool = True, open_loop: bool = False) -> dict[str, Any] | None:  # fmt: skip
    """The `drift` reason (module doc) when the window's halves disagree, else None: `drift` (warn),
    or open loop `load_drift` (info) when the slower half is the one sent more requests."""
    hv = halves(requests, t0_ns, t1_ns)
    if not hv:
        return None
    a, b = hv["first"], hv["second"]

    def moved(k: str) -> float | None:
        (ea, la, ha), (eb, lb, hb) = a[k], b[k]
        if None in (ea, la, ha, eb, lb, hb) or max(ea, eb) <= 0:
            return None
        apart = ha < lb or hb < la
        change = (eb - ea) / max((ea + eb) / 2, 1e-12)
        return change if apart and abs(change) > lim.steady_limit else None

    keys = ["ttft_p50", "queue", *(["tok_s"] if throughput else [])]
    ch = {k: moved(k) for k in keys}
    if all(v is None for v in ch.values()):
        return None
    f = lambda k, d=1: f"{a[k][0]:.{d}f} -> {b[k][0]:.{d}f}"  # noqa: E731
    slower = [k for k in ("ttft_p50", "queue") if ch.get(k) is not None]
    if slower and all(ch[k] < 0 for k in slower):
        why = "warm-up too short: the first half was slower (compilation or caches still warming; raise traffic.warmup_s)"
    elif ch.get("queue") is not None and b["queue"][0] > 2 * max(a["queue"][0], 1e-9) and b["queue"][0] >= 1:
        why = "a queue growing through the window: the offered load exceeds what the engine serves (the figures describe a transient)"
    elif slower:
        why = "the engine slowed in the second half (thermal throttling, a cache filling, or other load on the host)"
    else:
        why = "throughput changed between the halves (not steady)"
    parts = [f"TTFT p50 {f('ttft_p50')} ms" if ch.get("ttft_p50") is not None else None,
             f"queue {f('queue', 2)} requests" if ch.get("queue") is not None else None,
             f"output tok/s {f('tok_s')}" if ch.get("tok_s") is not None else None]  # fmt: skip
    detail = {"halves": {k: {h: list(hv[h][k]) for h in hv} for k in keys}, "changes": ch}
    na, nb = hv["first"]["sent"], hv["second"]["sent"]
    growing = why.startswith("a queue growing")
    if open_loop and slower and not growing and all((nb - na) * ch[k] > 0 for k in slower):
        # the slower half was sent more requests: near capacity a few more arrivals lift the
        # latency a lot, so the load (Poisson chance), not the engine, may explain it
        return _reason("load_drift", INFO,
                       f"the window's halves differ ({', '.join(p for p in parts if p)}), and the slower half was sent more "
                       f"requests ({na} -> {nb}, Poisson arrivals): the load explains it, not a drift of the engine",
                       sent=[na, nb], **detail)  # fmt: skip
    return _reason("drift", WARN, f"the window's halves disagree beyond their intervals ({', '.join(p for p in parts if p)}): {why}",
                   **detail)  # fmt: skip


def _token_reasons(summary: dict[str, Any], ok: int, lim: VerdictLimits) -> list[dict[str, Any]]:
    """Are prompt and output lengths as planned? What matters is what the server processed: its
    usage count against max_tokens (under ignore_eos), and its prompt count against the client's
    up to a constant offset. Re-tokenizing streamed text is not exact (a model may emit a token
    sequence that its tokenizer would not produce from the decoded text), so that recount is
    information, never a doubt about the measurement."""
    out: list[dict[str, Any]] = []
    if not ok:
        return out
    pd_ = summary.get("prompt_token_drift") or {}
    # files written before the offset was recorded: every differing prompt counts as drift
    prompt = int(pd_["requests_off_offset"] if "requests_off_offset" in pd_ else pd_.get("requests") or 0)
    offset = int(pd_.get("offset") or 0)
    length = int(summary.get("output_length_mismatches") or 0)
    if max(prompt, length) / ok > lim.token_drift_limit:
        off = f" (beyond the constant offset of {offset:+d})" if offset else ""
        out.append(_reason("token_drift", WARN,
                           f"lengths are not as planned: {prompt} prompts whose server token count differs from the "
                           f"client's{off}, {length} replies shorter/longer than max_tokens (of {ok} ok)",
                           value=max(prompt, length) / ok, limit=lim.token_drift_limit))  # fmt: skip
    if offset:
        out.append(_reason("token_offset", INFO,
                           f"the server counts {offset:+d} token(s) per prompt against the client's count (a special "
                           "token or template counted on one side only); prompt lengths are as planned up to it",
                           value=offset))  # fmt: skip
    od = summary.get("output_token_drift") or {}
    if od.get("requests"):
        out.append(_reason("output_recount", INFO,
                           f"re-tokenizing the streamed text gives another count than the server's usage on "
                           f"{od['requests']} of {ok} replies (mean server − client {od.get('mean_server_minus_client', 0):+.1f}): "
                           "decoded text need not re-encode to the same tokens; the server's count is used",
                           value=od["requests"] / ok))  # fmt: skip
    return out


def verdict(
    summary: dict[str, Any],
    *,
    requests: pd.DataFrame | None = None,
    window: tuple[int, int] | None = None,
    telemetry_t_ns: Any = None,
    telemetry_interval_s: float | None = None,
    scrape_t_ns: Any = None,
    scrape_interval_s: float | None = None,
    warmup_s: float | None = None,
    interrupted: bool = False,
    limits: VerdictLimits | None = None,
    open_loop: bool = False,
) -> Verdict:
    """The verdict of one point from its summary (run.json load_points[i].summary) and, where given,
    its request records, its window [t0_ns, t1_ns] and the sample times of telemetry and of the
    engine /metrics scrapes (checks in the module doc). `open_loop`: the load is an arrival rate
    (req/s), so each half's arrivals are random (not_steady and drift read them)."""
    lim = limits or VerdictLimits()
    reasons: list[dict[str, Any]] = []
    req = summary.get("requests") or {}
    total = int(req.get("total") or 0)
    ok = int(req.get(OK) or 0)

    lg = summary.get("loadgen") or {}
    if lg.get("saturated"):
        reasons.append(_reason("loadgen_saturated", INVALID, "load generator saturated: "
                               + "; ".join(note_text(n) for n in lg.get("saturation_reasons") or []),
                               source="loadgen", cpu_pct_max=lg.get("cpu_pct_max"), loop_lag_max_ms=lg.get("loop_lag_max_ms"),
                               sched_lag_p99_ms=(summary.get("sched_lag_ms") or {}).get("p99")))  # fmt: skip
    if interrupted:
        reasons.append(_reason("interrupted", INVALID, "the load point was interrupted before its window ended", source="loadgen"))

    failed = {s: int(req.get(s) or 0) for s in (ERROR, TIMEOUT, CANCELLED)}
    client_errors = 0
    if requests is not None and len(requests) and "http_status" in requests.columns:
        m = requests[(requests["phase"] == MEASURE) & (requests["status"] == ERROR)]
        code = m["http_status"].astype("Float64")
        client_errors = int(((code >= 400) & (code < 500) & ~code.isin([408, 429])).fillna(False).sum())
    if total and client_errors / total > lim.client_error_limit:
        reasons.append(_reason("client_errors", INVALID,
                               f"{client_errors} of {total} requests refused as malformed (HTTP 4xx): check the workload and endpoint",
                               value=client_errors / total, limit=lim.client_error_limit))  # fmt: skip
    n_failed = sum(failed.values())
    if total and n_failed > client_errors:
        share = n_failed / total
        detail = ", ".join(f"{v} {k}" for k, v in failed.items() if v)
        reasons.append(_reason("error_rate", WARN, f"{share:.1%} of requests failed ({detail}); counted as SLO misses",
                               value=share, **failed))  # fmt: skip
    drops = int(req.get(DROPPED) or 0)
    if drops:
        reasons.append(_reason("client_drops", WARN,
                               f"{drops} of {total} requests dropped at traffic.max_inflight (counted as SLO misses); "
                               "the offered load was capped by the client", source="loadgen", value=drops / total if total else None))  # fmt: skip

    reasons += _token_reasons(summary, ok, lim)

    if window is not None:
        t0, t1 = window
        for kind, times, interval, source in (("telemetry_gap", telemetry_t_ns, telemetry_interval_s, "telemetry"),
                                              ("scrape_gap", scrape_t_ns, scrape_interval_s, "engine_metrics")):  # fmt: skip
            if times is None or not interval:
                continue
            share = gap_share(times, t0, t1, interval, lim.gap_factor)
            if share > lim.gap_limit:
                reasons.append(_reason(kind, WARN, f"{source} samples missing for {share:.0%} of the window (> {lim.gap_limit:.0%})",
                                       source=source, value=share, limit=lim.gap_limit, t0_ns=t0, t1_ns=t1))  # fmt: skip
        if requests is not None and len(requests):
            # every completion inside the window counts, whatever phase its request was sent in: with
            # measure-phase requests only, the first half lost the completions of requests sent during
            # warm-up (about rate x E2E) while the second kept those sent in the first: a bias of that
            # size toward "throughput rose" in every window
            m = requests[(requests["status"] == OK) & requests["t_done_ns"].notna()]
            offered = _offered_ns(requests, m) if open_loop else None
            st = steadiness(m["t_done_ns"].to_numpy(dtype=np.int64), m["output_tokens"].astype("Float64").fillna(0).to_numpy(dtype=float),
                            t0, t1, lim.trend_bins, offered_ns=offered)  # fmt: skip
            hc, z, tc, tt = st["halves_change"], st["halves_z"], st["trend_change"], st["trend_t"]
            oz, ott, oc = st["offered_z"], st["offered_trend_t"], st["offered_change"]
            # open loop: the arrivals must not explain it (module doc); closed loop they are not random
            unexplained_halves = offered is None or (oz is not None and abs(oz) > lim.steady_z)
            unexplained_trend = offered is None or (ott is not None and abs(ott) > lim.trend_t)
            sent = "" if oc is None else f" (the requests sent changed {oc:+.0%})"
            if hc is not None and abs(hc) > lim.steady_limit and z is not None and abs(z) > lim.steady_z and unexplained_halves:
                reasons.append(_reason("not_steady", WARN, f"output tok/s changed {hc:+.0%} from the first to the second half of the window{sent}",
                                       value=hc, limit=lim.steady_limit, z=z, offered_change=oc, offered_z=oz))  # fmt: skip
            elif tc is not None and abs(tc) > lim.steady_limit and tt is not None and abs(tt) > lim.trend_t and unexplained_trend:
                reasons.append(_reason("not_steady", WARN, f"output tok/s trends {tc:+.0%} over the window (t = {tt:.1f}){sent}",
                                       value=tc, limit=lim.steady_limit, t=tt, offered_trend_t=ott))  # fmt: skip
            steady_said = any(r["kind"] == "not_steady" for r in reasons)
            if (d := drift_reason(requests, t0, t1, lim, throughput=not steady_said and not open_loop,
                                  open_loop=open_loop)) is not None:  # fmt: skip
                reasons.append(d)

    if ok < lim.min_ok_invalid:
        reasons.append(_reason("too_few_samples", INVALID, f"only {ok} successful requests (< {lim.min_ok_invalid})", value=ok))
    elif ok < lim.min_ok_warn:
        reasons.append(_reason("too_few_samples", WARN, f"only {ok} successful requests: p99 needs >= {lim.min_ok_warn}", value=ok))

    all_phases = summary.get("requests_all_phases") or {}
    warm = None
    if requests is not None and len(requests):
        warm = int((requests["phase"] == WARMUP).sum())
    elif all_phases:
        warm = max(int(all_phases.get("total") or 0) - total, 0)  # warmup + cooldown; an upper bound
    if (warmup_s is not None and warmup_s <= 0) or warm == 0:
        reasons.append(_reason("no_warmup", WARN, "no warmup requests were excluded: cold-start effects are in the window"))
    elif warm is not None:
        reasons.append(_reason("warmup_excluded", INFO, f"{warm} warmup requests excluded from the window", value=warm))

    worst = max((_RANK[r["severity"]] for r in reasons), default=0)
    status = {0: VALID, 1: WARN, 2: INVALID}[worst]
    return Verdict(status, tuple(reasons))
