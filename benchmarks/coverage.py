"""Benchmark: do the lab's 95 % intervals of the knee and of $/1M at the knee contain the truth?

A server whose truth is known: the in-repo timing server (tests/support/timing_server.py) with
`--max-streams C` (C requests stream at once, the rest wait FIFO; each holds its stream for
S = ttft + (tokens - 1) * itl), driven open loop with Poisson arrivals (traffic=poisson), judged
by an SLO on TTFT p99 with an attainment target.

The truth, for this benchmark's own window, from a discrete-event simulation of that server's
model (an M/D/C FIFO queue; nothing of the lab's analysis is used): for each rate on a fine grid,
`--sims` windows (warmup, then `--duration-s` measured, requests counted by send time); a window
is feasible when its TTFT p99 <= the limit and the share of requests with TTFT <= the limit is
>= the target. The true knee is the highest rate whose windows are feasible at least half the
time (the shares made non-increasing in rate by isotonic regression, then linear between grid
rates); the true $/1M goodput tokens
at the knee is price / (3600 * goodput tok/s there) * 1e6, goodput tok/s = rate * tokens * mean
attainment. The client's own overhead on TTFT (HTTP, parsing) is measured first at a low rate and
added to the simulated TTFT.

The model's service time S is measured too, under load: the nominal S leaves out what the server
adds per request (its event loop's lateness on the last token, the write), about 1 ms in 95 on
this 2-core VM. A calibration window at `--calib-rps` (its own seed, not one of the searches')
is replayed through the model: its actual send times into the M/D/C FIFO queue, and S is the value
whose predicted TTFT quantiles (p50 to p99) fit the measured ones best. Replayed
so (372 stored search windows, their actual send times), the model with S = 96 ms called 98.9 %
of them feasible or not as the real server did (98.1 % between 16 and 26 req/s, p99 0.6 ms off on
average there); with the nominal 95 ms 96.8 % (94.8 % near the knee, 62 % of those feasible in the
model against 57 % on the server). The figures against the nominal model are printed too.

Then `--repeats` independent knee searches with the real lab (`run.py engine=endpoint
search=knee`, a new traffic seed each), each decided by `python -m analysis.decide`: per search
the knee's interval (decision.json knees[].estimate_lo/hi) and the interval of the cost at capacity
(knees[].usd_at_capacity_lo/hi: price / goodput tok/s at the SLO crossing). Prints the share of
intervals that contain the truth (coverage), the mean relative width, and how many searches
produced an interval at all. The window defaults to 1 s + 6 s: at ~20 req/s a p99 then rests on
more than 100 requests (the lab warns below that: a p99 of fewer values is close to the maximum,
and no resampling recovers the spread it does not show).

A second truth comes from the measurements themselves (pooled_truth): every search's points are
independent windows of the real server, and their feasible share per load, made monotone, crosses
0.5 at the server's knee as measured (the simulation leaves out what the real server adds to the
tail under load: its own event loop, the load generator sharing the cores).

Run:  .venv/bin/python benchmarks/coverage.py [--repeats 20] [--json out.json]
      .venv/bin/python benchmarks/coverage.py --workdir W --redecide out.json   # decide W's searches again
Side effects: starts the timing server and the lab on 127.0.0.1; writes into a temporary folder
(or --workdir). About (repeats x 7 points x (warmup + duration)) seconds.
"""

from __future__ import annotations

import argparse
import heapq
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def simulate_window(rate: float, c: int, s_ms: float, ttft_ms: float, warmup_s: float, duration_s: float,
                    rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """TTFT (ms, before the client's overhead) of the requests sent in the measured window of one
    simulated M/D/C FIFO run: Poisson arrivals from 0, the first `warmup_s` not counted."""
    end = warmup_s + duration_s
    n = rng.poisson(rate * end * 1.2) + 10
    t = np.cumsum(rng.exponential(1.0 / rate, size=n)) * 1000.0  # ms
    t = t[t < end * 1000.0]
    free = [0.0] * c  # when each stream frees up
    heapq.heapify(free)
    ttft = np.empty(len(t))
    for k, a in enumerate(t):
        start = max(a, heapq.heappop(free))
        heapq.heappush(free, start + s_ms)
        ttft[k] = start - a + ttft_ms
    return ttft[t >= warmup_s * 1000.0]


def half_crossing(rates: np.ndarray, p: np.ndarray, lo: float, hi: float) -> float:
    """Where the share of feasible windows crosses 0.5: the shares, each from finitely many
    simulated windows, made non-increasing in rate first (isotonic regression; the true share is
    monotone, and a noisy first dip below 0.5 would otherwise move the truth), then linear between
    the rates on either side."""
    from scipy.optimize import isotonic_regression

    f = isotonic_regression(p, increasing=False).x
    above = np.flatnonzero(f < 0.5)
    if above.size == 0 or above[0] == 0:
        raise SystemExit(f"the true knee is outside [{lo}, {hi}] req/s: widen --lo/--hi")
    j = int(above[0])  # first rate feasible less than half the time
    return float(rates[j - 1] + (rates[j] - rates[j - 1]) * (f[j - 1] - 0.5) / (f[j - 1] - f[j]))


def replay_ttft(sent_ms: np.ndarray, c: int, s_ms: float, ttft_ms: float) -> np.ndarray:
    """TTFT (ms, before the client's overhead) the M/D/C FIFO model gives requests arriving at
    `sent_ms` (sorted): the wait for one of c streams plus the server's own TTFT."""
    free = [-np.inf] * c
    out = np.empty(len(sent_ms))
    for k, a in enumerate(sent_ms):
        start = max(a, heapq.heappop(free))
        heapq.heappush(free, start + s_ms)
        out[k] = start - a + ttft_ms
    return out


FIT_Q = (50, 80, 90, 95, 98, 99)  # the TTFT quantiles S is fitted on: the tail the SLO judges


def fit_service(sent_ms: np.ndarray, ttft_meas: np.ndarray, args, overhead_ms: float) -> tuple[float, dict]:
    """The service time S (ms) whose replayed TTFTs fit the measured ones best where the SLO looks:
    least squares over the TTFT quantiles FIT_Q (a p99 limit judges the tail, and the server's
    extra time is not the same for every request), on a 0.05 ms grid from the nominal S - 2 ms to
    + 8 ms; and how well the model then predicts."""
    nominal = args.ttft_ms + (args.tokens - 1) * args.itl_ms
    grid = np.arange(nominal - 2.0, nominal + 8.0 + 1e-9, 0.05)
    q_meas = np.percentile(ttft_meas, FIT_Q)
    err = [float(np.mean((np.percentile(replay_ttft(sent_ms, args.max_streams, g, args.ttft_ms + overhead_ms), FIT_Q)
                          - q_meas) ** 2)) for g in grid]  # fmt: skip
    best = float(grid[int(np.argmin(err))])
    pred = replay_ttft(sent_ms, args.max_streams, best, args.ttft_ms + overhead_ms)
    nom = replay_ttft(sent_ms, args.max_streams, nominal, args.ttft_ms + overhead_ms)
    return best, {"nominal_ms": nominal, "rmse_ms": float(np.sqrt(np.mean((pred - ttft_meas) ** 2))),
                  "rmse_nominal_ms": float(np.sqrt(np.mean((nom - ttft_meas) ** 2))),
                  "p99_measured_ms": float(np.percentile(ttft_meas, 99)), "p99_model_ms": float(np.percentile(pred, 99)),
                  "p99_nominal_model_ms": float(np.percentile(nom, 99)), "requests": int(len(sent_ms))}  # fmt: skip


def truth(args, overhead_ms: float, s_ms: float | None = None) -> dict:
    """The true knee and $/1M at it for this window (module doc), from the simulation alone, of
    the model with service time `s_ms` (None: the nominal ttft + (tokens - 1) x itl)."""
    s_ms = args.ttft_ms + (args.tokens - 1) * args.itl_ms if s_ms is None else s_ms
    rng = np.random.default_rng(12345)
    rates = np.linspace(args.lo, args.hi, 121)
    p_feasible, attain = [], []
    for r in rates:
        ok, att = 0, []
        for _ in range(args.sims):
            x = simulate_window(r, args.max_streams, s_ms, args.ttft_ms + overhead_ms, args.warmup_s,
                                args.duration_s, rng)  # fmt: skip
            if len(x) == 0:
                continue
            share = float((x <= args.ttft_limit_ms).mean())
            att.append(share)
            ok += np.percentile(x, 99) <= args.ttft_limit_ms and share >= args.attainment
        p_feasible.append(ok / args.sims)
        attain.append(float(np.mean(att)) if att else 0.0)
    knee = half_crossing(rates, np.array(p_feasible), args.lo, args.hi)
    att_knee = float(np.interp(knee, rates, attain))
    tok_s = knee * args.tokens * att_knee
    return {"knee_rps": knee, "attainment_at_knee": att_knee, "goodput_tok_s": tok_s,
            "usd_per_1m": args.usd_per_hour / (3600.0 * tok_s) * 1e6, "service_ms": s_ms,
            "p_feasible": dict(zip((round(float(r), 3) for r in rates), p_feasible, strict=True))}  # fmt: skip


def lab(args, port: int, results: Path, name: str, extra: list[str]) -> subprocess.CompletedProcess:
    argv = [sys.executable, "run.py", "engine=endpoint", f"engine.base_url=http://127.0.0.1:{port}",
            "engine.health_path=/health", "model.served_name=timing", "model.built_by=null", "report=false",
            f"results_dir={results}", f"experiment_name={name}", "traffic=poisson",
            f"traffic.duration_s={args.duration_s}", f"traffic.warmup_s={args.warmup_s}", "traffic.cooldown_s=0",
            f"workload.output_tokens={args.tokens}", f"slo.ttft_ms={args.ttft_limit_ms}", "slo.tpot_ms=1000",
            "slo.percentile=99", f"slo.attainment_target={args.attainment}",
            f"pricing.usd_per_hour={args.usd_per_hour}", *extra]  # fmt: skip
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--max-streams", type=int, default=4)
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    ap.add_argument("--itl-ms", type=float, default=5.0)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--ttft-limit-ms", type=float, default=80.0)
    ap.add_argument("--attainment", type=float, default=0.9)
    ap.add_argument("--lo", type=float, default=5.0)
    ap.add_argument("--hi", type=float, default=45.0)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--duration-s", type=float, default=6.0)
    ap.add_argument("--usd-per-hour", type=float, default=1.0)
    ap.add_argument("--sims", type=int, default=300, help="simulated windows per rate for the truth")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed-base", type=int, default=1000,
                    help="search r uses traffic and workload seed seed-base + r (another base: another sample of searches)")
    ap.add_argument("--calib-rps", type=float, default=20.0, help="rate of the loaded window S is fitted on")
    ap.add_argument("--calib-s", type=float, default=60.0, help="length of that window (s)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--redecide", type=Path, default=None,
                    help="a --json of an earlier run: decide its --workdir's searches again with today's analysis "
                         "(no new measurement; the truth is the one stored)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.redecide:
        if args.workdir is None:
            raise SystemExit("--redecide needs the --workdir the searches were measured in")
        old = json.loads(args.redecide.read_text())
        return report(args, args.workdir, old["truth"], float(old["overhead_ms"]), measure=None)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="servelab-coverage-"))
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "timing_server.py"), "--port", str(port),
                               "--ttft-ms", str(args.ttft_ms), "--itl-ms", str(args.itl_ms),
                               "--max-streams", str(args.max_streams)])  # fmt: skip
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        # the client's overhead on TTFT, at a rate where nobody waits
        p = lab(args, port, work, "calibration", ["traffic.points=[2]"])
        if p.returncode != 0:
            raise SystemExit(p.stderr[-3000:])
        (rj,) = (work / "calibration").glob("*/launch-1/run.json")
        ttft_p50 = json.loads(rj.read_text())["load_points"][0]["summary"]["ttft_ms"]["p50"]
        overhead = max(float(ttft_p50) - args.ttft_ms, 0.0)
        # the service time under load: a window of its own seed replayed through the model
        p = lab(args, port, work, "calibration_load",
                [f"traffic.points=[{args.calib_rps}]", f"traffic.duration_s={args.calib_s}", "traffic.seed=7",
                 "workload.seed=7"])  # fmt: skip
        if p.returncode != 0:
            raise SystemExit(p.stderr[-3000:])
        import pandas as pd

        (rq,) = (work / "calibration_load").glob("*/launch-1/requests.parquet")
        d = pd.read_parquet(rq, columns=["status", "t_sent_ns", "ttft_ms"])
        d = d[(d["status"] == "ok") & d["t_sent_ns"].notna() & d["ttft_ms"].notna()].sort_values("t_sent_ns")
        sent_ms = (d["t_sent_ns"].to_numpy(dtype=np.int64) - int(d["t_sent_ns"].iloc[0])) / 1e6
        s_fit, fit = fit_service(sent_ms, d["ttft_ms"].to_numpy(dtype=float), args, overhead)
        t = truth(args, overhead, s_fit)
        t_nom = truth(args, overhead)
        t["service_fit"], t["nominal"] = fit, {k: t_nom[k] for k in ("knee_rps", "usd_per_1m", "service_ms")}
        print(f"server: {args.max_streams} streams, S = {fit['nominal_ms']:.0f} ms nominal, {s_fit:.2f} ms fitted under "
              f"load ({fit['requests']} requests at {args.calib_rps:g} req/s replayed through the model: per-request TTFT rmse "
              f"{fit['rmse_ms']:.2f} ms, nominal S {fit['rmse_nominal_ms']:.2f} ms; p99 measured {fit['p99_measured_ms']:.1f}, "
              f"model {fit['p99_model_ms']:.1f}, nominal model {fit['p99_nominal_model_ms']:.1f} ms); client overhead "
              f"{overhead:.2f} ms; SLO TTFT p99 <= {args.ttft_limit_ms:g} ms, attainment >= {args.attainment:g}; window "
              f"{args.warmup_s:g} s + {args.duration_s:g} s")  # fmt: skip
        print(f"truth (simulation, {args.sims} windows per rate, S = {s_fit:.2f} ms): knee {t['knee_rps']:.2f} req/s, "
              f"$/1M at the knee {t['usd_per_1m']:.4f} (at ${args.usd_per_hour:g}/h); with the nominal S: knee "
              f"{t_nom['knee_rps']:.2f} req/s, ${t_nom['usd_per_1m']:.4f}")  # fmt: skip
        return report(args, work, t, overhead, measure=lambda name, r: lab(
            args, port, work, name, ["search=knee", f"search.lo={args.lo}", f"search.hi={args.hi}",
                                     f"traffic.seed={args.seed_base + r}", f"workload.seed={args.seed_base + r}"]))  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)


def report(args, work: Path, t: dict, overhead: float, measure) -> int:
    """Decide each search (measuring it first when `measure` is given) and print the coverage."""
    rows = []
    for r in range(args.repeats):
        name = f"rep{r}"
        if measure is not None:
            p = measure(name, r)
            if p.returncode != 0:
                print(f"  search {r}: the lab failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
                continue
        elif not (work / name).is_dir():
            continue
        out = work / name / "decision.json"
        q = subprocess.run([sys.executable, "-m", "analysis.decide", str(work / name), f"n_boot={args.n_boot}",
                            f"pricing.usd_per_hour={args.usd_per_hour}", f"slo.ttft_ms={args.ttft_limit_ms}",
                            "slo.tpot_ms=1000", f"slo.attainment_target={args.attainment}", f"output={out}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
        if q.returncode != 0:
            print(f"  search {r}: decide failed: {q.stderr.strip().splitlines()[-1:]}")
            continue
        (k,) = json.loads(out.read_text())["knees"]
        row = {"status": k["status"], "knee": k["knee_load"], "estimate": k["estimate"],
               "lo": k["estimate_lo"], "hi": k["estimate_hi"], "usd": k.get("usd_at_capacity"),
               "usd_lo": k.get("usd_at_capacity_lo"), "usd_hi": k.get("usd_at_capacity_hi"),
               "points": len(json.loads(out.read_text())["points"])}  # fmt: skip
        rows.append(row)
        print(f"  search {r:>2}: {row['status']:<12} knee {row['knee']} est {row['estimate']} "
              f"[{row['lo']}, {row['hi']}]; $/1M {row['usd']} [{row['usd_lo']}, {row['usd_hi']}]")  # fmt: skip

    def cover(lo_key: str, hi_key: str, truth_v: float) -> tuple[float | None, float | None, int]:
        # an open end (null: the replicates reach past the measured range) is a half-line
        with_iv = [x for x in rows if x[lo_key] is not None or x[hi_key] is not None]
        if not with_iv:
            return None, None, 0
        inside = [(x[lo_key] is None or x[lo_key] <= truth_v) and (x[hi_key] is None or truth_v <= x[hi_key])
                  for x in with_iv]  # fmt: skip
        closed = [x for x in with_iv if x[lo_key] is not None and x[hi_key] is not None]
        width = [(x[hi_key] - x[lo_key]) / truth_v for x in closed]
        return float(np.mean(inside)), (float(np.mean(width)) if width else None), len(with_iv)

    fmt = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
    ests = [x["estimate"] for x in rows if x["estimate"] is not None]
    if ests:
        print(f"knee estimate: mean {np.mean(ests):.2f} req/s, sd {np.std(ests):.2f}; "
              f"points per search: mean {np.mean([x['points'] for x in rows]):.1f}")  # fmt: skip
    pooled = pooled_truth(work, args, [f"rep{r}" for r in range(args.repeats)])
    out = {"truth": t, "overhead_ms": overhead, "rows": rows, "pooled_truth": pooled}
    truths = [("simulated server", t), ("simulated server, nominal S", t.get("nominal")), ("pooled measurements", pooled)]
    for label, truth_t in truths:
        if truth_t is None:
            continue
        ck, wk, nk = cover("lo", "hi", truth_t["knee_rps"])
        cu, wu, nu = cover("usd_lo", "usd_hi", truth_t["usd_per_1m"])
        print(f"against the {label} (knee {truth_t['knee_rps']:.2f} req/s, ${truth_t['usd_per_1m']:.4f}/1M):")
        print(f"  knee:          coverage {fmt(ck)} of {nk} intervals (of {len(rows)} searches), mean width {fmt(wk)} "
              "(closed intervals)")  # fmt: skip
        print(f"  $/1M at knee:  coverage {fmt(cu)} of {nu} intervals, mean width {fmt(wu)}")
        out[label.replace(", ", "_").replace(" ", "_")] = {"knee": {"coverage": ck, "width": wk, "n": nk},
                                        "usd": {"coverage": cu, "width": wu, "n": nu}}  # fmt: skip
    print("target: coverage between 90 % and 98 % with the narrowest width that achieves it")
    if args.json and not args.redecide:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def pooled_truth(work: Path, args, names: list[str]) -> dict | None:
    """A second truth, from what the real server did rather than from its model: every valid point
    of every search (each an independent window), their feasible share per load made non-increasing
    by isotonic regression (weights: windows per load), the knee where it crosses 0.5 (linear
    between loads), and $/1M there from the pooled attainment. Each search contributes 1/R of the
    data, so this is close to, not entirely, independent of the interval it checks."""
    from scipy.optimize import isotonic_regression

    by_load: dict[float, list[tuple[bool, float]]] = {}
    for name in names:
        f = work / name / "decision.json"
        if not f.is_file():
            continue
        for p in json.loads(f.read_text())["points"]:
            if p["verdict"] != "invalid" and p.get("attainment") is not None:
                by_load.setdefault(float(p["load_value"]), []).append((bool(p["feasible"]), float(p["attainment"])))
    if len(by_load) < 3:
        return None
    x = np.array(sorted(by_load))
    w = np.array([len(by_load[v]) for v in x], dtype=float)
    share = isotonic_regression([np.mean([f for f, _a in by_load[v]]) for v in x], weights=w, increasing=False).x
    att = isotonic_regression([np.mean([a for _f, a in by_load[v]]) for v in x], weights=w, increasing=False).x
    below = np.flatnonzero(share < 0.5)
    if below.size == 0 or below[0] == 0:
        return None
    j = int(below[0])
    knee = float(x[j - 1] + (x[j] - x[j - 1]) * (share[j - 1] - 0.5) / (share[j - 1] - share[j]))
    a = float(np.interp(knee, x, att))
    tok_s = knee * args.tokens * a
    return {"knee_rps": knee, "attainment_at_knee": a, "usd_per_1m": args.usd_per_hour / (3600.0 * tok_s) * 1e6,
            "windows": int(w.sum()), "loads": len(x)}


if __name__ == "__main__":
    sys.exit(main())
