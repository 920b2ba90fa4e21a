"""Benchmark: coverage of the knee's 95 % interval on a fixed grid, in simulation (minutes, not an hour).

The timing server's queue model (tests/support/mdc.py: Poisson arrivals, 4 FIFO streams, S = 95 ms)
gives each grid point's request records; the lab's own per-point pipeline (analysis.results.point_row:
time-block replicates) and knee (analysis.knee: monotone fit, joint replicates) judge them. The truth
for the same window length comes from the model alone: the rate whose windows meet the SLO half the
time (`--truth-sims` windows per rate on a 0.5 req/s grid, made monotone, linear between). Unlike
benchmarks/coverage.py there is no real server (no tail the model lacks), and by default no search
either (the grid is fixed around the truth), so this isolates the intervals themselves; `--search`
lets the lab's knee search pick the loads as coverage.py does (its bias and the points it spends).

Run:  .venv/bin/python benchmarks/coverage_grid.py --percentile 99 --duration-s 6 --warmup-s 1 --repeats 30 [--search]
Side effects: none (in-process simulation). Prints coverage, mean relative width, estimate bias.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def window_feasible(rate: float, args, g: np.random.Generator) -> bool:
    """One simulated window of the queue model (benchmarks/coverage.py's simulator) judged by the SLO."""
    from benchmarks.coverage import simulate_window

    s_ms = args.ttft_ms + (args.tokens - 1) * args.itl_ms
    x = simulate_window(rate, args.streams, s_ms, args.ttft_ms, args.warmup_s, args.duration_s, g)
    return bool(np.percentile(x, args.percentile) <= args.limit_ms and (x <= args.limit_ms).mean() >= args.attainment)


def truth(args) -> float:
    """The rate whose windows meet the SLO half the time (benchmarks/coverage.py's rule: shares per
    rate made monotone, then linear between rates), on a 0.5 req/s grid."""
    from benchmarks.coverage import half_crossing

    g = np.random.default_rng(99)
    rates = np.arange(args.truth_lo, args.truth_hi + 1e-9, 0.5)
    p = np.array([np.mean([window_feasible(r, args, g) for _ in range(args.truth_sims)]) for r in rates])
    return half_crossing(rates, p, args.truth_lo, args.truth_hi)


def main(argv: list[str] | None = None) -> int:
    from analysis.cost import Price
    from analysis.knee import knees
    from analysis.results import point_row
    from analysis.schema import SloConfig
    from tests.support.mdc import simulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--percentile", type=float, default=90.0)
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--warmup-s", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--step", type=float, default=0.05, help="grid spacing relative to the true knee")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    ap.add_argument("--itl-ms", type=float, default=5.0)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--limit-ms", type=float, default=80.0)
    ap.add_argument("--attainment", type=float, default=0.9)
    ap.add_argument("--lo", type=float, default=10.0)
    ap.add_argument("--hi", type=float, default=44.0)
    ap.add_argument("--truth-sims", type=int, default=300)
    ap.add_argument("--truth-lo", type=float, default=10.0, help="the truth's grid of rates (req/s)")
    ap.add_argument("--truth-hi", type=float, default=36.0)
    ap.add_argument("--search", action="store_true", help="let the knee search pick the loads (as coverage.py does)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="the search's tolerance (with --search)")
    args = ap.parse_args(argv)
    slo = SloConfig(name="bench", ttft_ms=args.limit_ms, tpot_ms=1000.0, percentile=args.percentile,
                    attainment_target=args.attainment)  # fmt: skip
    price = Price(1.0, 1, "on_demand", "bench", "cpu", "bench", "", True, 0.0, 1.0)
    gpu = SimpleNamespace(name="cpu", count=0, tdp_w=None)
    k_true = truth(args)
    loads = np.arange(k_true * 0.6, k_true * 1.5, args.step * k_true)
    print(f"truth: knee {k_true:.2f} req/s (p{args.percentile:g} TTFT <= {args.limit_ms:g} ms, attainment >= "
          f"{args.attainment:g}, windows {args.warmup_s:g} s + {args.duration_s:g} s); "
          + (f"knee search over [{args.lo:g}, {args.hi:g}] at {args.tolerance:.0%}" if args.search
             else f"grid of {len(loads)} loads, {args.step:.0%} apart"))  # fmt: skip
    hits, widths, ests, n_points = 0, [], [], []

    def measure(x: float, r: int, j: int, rep: int) -> dict:
        df, s = simulate(float(x), streams=args.streams, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms,
                         tokens=args.tokens, warmup_s=args.warmup_s, duration_s=args.duration_s,
                         seed=r * 1000 + j)  # fmt: skip
        ident = {"variant_id": "A", "variant_label": "A", "run_id": "r", "point_id": f"A@{x:.4g}", "repetition": rep,
                 "load_value": float(x), "load_unit": "req/s", "time_to_ready_s": 1.0, "started_at_utc": ""}  # fmt: skip
        return point_row(df, s, slo=slo, price=price, gpu=gpu, ident=ident, n_boot=1000, seed=r)[0]

    for r in range(args.repeats):
        rows = []
        if args.search:  # the lab's knee search (search=knee's defaults over [--lo, --hi]) picks the loads
            from experiments.sweeps.search import KneeSearch

            planner = KneeSearch(args.lo, args.hi, tolerance=args.tolerance)
            while (x := planner.next_load()) is not None:
                row = measure(x, r, len(rows), sum(1 for q in rows if q["load_value"] == x))
                rows.append(row)
                planner.observe(x, bool(row["feasible"]), "", row["p_feasible"])
        else:
            rows = [measure(float(x), r, j, 0) for j, x in enumerate(loads)]
        n_points.append(len(rows))
        k = knees(pd.DataFrame(rows), args.attainment, {"slo_ttft_ms": args.limit_ms})["A"]
        lo = k.estimate_lo if k.estimate_lo is not None else -np.inf
        hi = k.estimate_hi if k.estimate_hi is not None else np.inf
        hits += lo <= k_true <= hi
        if np.isfinite(lo) and np.isfinite(hi):
            widths.append((hi - lo) / k_true)
        if k.estimate is not None:
            ests.append(k.estimate)
        print(f"  {r:>2}: {k.status} est {k.estimate} [{k.estimate_lo}, {k.estimate_hi}] ({len(rows)} points)")
    print(f"coverage {hits}/{args.repeats} = {hits / args.repeats:.1%}, mean width {np.mean(widths):.1%} of the true knee, "
          f"estimate mean {np.mean(ests):.2f} (truth {k_true:.2f}), sd {np.std(ests):.2f}; points per search "
          f"{np.mean(n_points):.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
