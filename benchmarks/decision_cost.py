"""Benchmark: engine-minutes for the same decision, by strategy, on the timing server.

Variants of known capacity (default: 4, 8 and 2 streams of S = 170 ms, i.e. at most 23.5, 47.1
and 11.8 req/s, launched in that order: the winner neither first nor last): one in-repo timing
server per variant (tests/support/timing_server.py
--max-streams C: C streams at once, the rest wait FIFO; each request holds its stream for
S = ttft + (tokens - 1) x itl, so the variant serves at most C / S req/s). Every variant has the
same S and the same price, so the cheapest at capacity is the one with the most streams: the
right choice is known. Each variant is one launch of the real lab (`run.py engine=endpoint`,
one launch per variant into one experiment folder, in the order --streams lists them), decided
by the real `python -m analysis.decide`, for each strategy:

  grid            search=grid, a --grid-points geometric grid over [--lo, --hi] req/s
  grid+early      the grid with economy.early_stop=true                                 [--each]
  knee            search=capacity over [--lo, --hi]: the shoot-outs' knee search (10 %, at most 7
                  points; experiments.sweeps.search)
  knee+early      the knee search with economy.early_stop=true (analysis.overload)     [--each]
  knee+halving    the knee search with economy.halving=true (analysis.halving)         [--each]
  knee+early+halving  both

Engine-minutes per strategy = launches x --engine-start-s (the engine start every launch pays;
the timing server starts in a blink, a GPU engine in minutes, so it is modelled) + the engine's
measured busy time: each point's span on the load generator's clock, from its first send to its
end (drain included), read from run.json (t0_ns .. t_end_ns). The time the lab spends between
points (starting the load generator, judging the point) is left out, the same for every strategy.
The choice is right when decision.json chooses the variant with the most streams; "same as grid"
compares it with the grid's own choice. Target (issue 26): the same choice as the full grid in at
most a third of its engine-minutes.

The engine start is modelled at two nominal point windows by default (a 2-minute engine start
against 1-minute points; the windows here are compressed to seconds so the benchmark takes
minutes); the table is printed again for a start of 0 and of --engine-start-s-alt seconds, as the
measured spans do not depend on it.

--simulate runs the same strategies in-process on the timing server's queue model instead
(tests/support/mdc.py, as benchmarks/coverage_grid.py does: an M/D/C FIFO queue with Poisson
arrivals), through the lab's own planner (experiments.sweeps.search), overload test
(analysis.overload, at the looks experiments.economy makes), per-point pipeline
(analysis.results.point_row), knees, cannot-win rule and selection; a point's engine time is its
first send to its last answer (the drain included), or to the look that stopped it.

Run:  .venv/bin/python benchmarks/decision_cost.py [--each] [--json out.json] [--workdir W] [--simulate]
Side effects: starts the timing servers and the lab on 127.0.0.1; writes into a temporary folder
(or --workdir). About 10 minutes on 2 shared cores (the grid is half of it); --simulate about 30 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.process import free_port  # noqa: E402

# the shoot-outs' knee search (conf/search/capacity.yaml: 10 %, at most 7 points, widening to 64)
KNEE = ["search=capacity", "search.lo={lo}", "search.hi={hi}"]
STRATEGIES = {
    "grid": [],
    "grid+early": ["economy.early_stop=true"],
    "knee": KNEE,
    "knee+early": [*KNEE, "economy.early_stop=true"],
    "knee+halving": [*KNEE, "economy.halving=true"],
    "knee+early+halving": [*KNEE, "economy.early_stop=true", "economy.halving=true"],
}


def start_server(args: argparse.Namespace, streams: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    p = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "timing_server.py"), "--port", str(port),
                          "--ttft-ms", str(args.ttft_ms), "--itl-ms", str(args.itl_ms), "--max-streams", str(streams)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return p, port
        except OSError:
            time.sleep(0.05)
    p.terminate()
    raise SystemExit(f"timing server with {streams} streams did not start")


def grid(args: argparse.Namespace) -> list[float]:
    return [float(f"{v:.4g}") for v in np.geomspace(args.lo, args.hi, args.grid_points)]


def lab(args: argparse.Namespace, work: Path, name: str, port: int, extra: list[str]) -> subprocess.CompletedProcess:
    points = ",".join(f"{v:g}" for v in grid(args))
    argv = [sys.executable, "run.py", "engine=endpoint", f"engine.base_url=http://127.0.0.1:{port}",
            "engine.health_path=/health", "model.served_name=timing", "model.built_by=null", "report=false",
            f"results_dir={work}", f"experiment_name={name}", "traffic=poisson", f"traffic.points=[{points}]",
            f"traffic.duration_s={args.duration_s}",
            f"traffic.warmup_s={args.warmup_s}", "traffic.cooldown_s=0", f"workload.output_tokens={args.tokens}",
            f"slo.ttft_ms={args.ttft_limit_ms}", "slo.tpot_ms=1000", "slo.percentile=99",
            f"slo.attainment_target={args.attainment}", f"pricing.usd_per_hour={args.usd_per_hour}",
            f"traffic.seed={args.seed}", f"workload.seed={args.seed}",
            *(e.format(lo=args.lo, hi=args.hi) for e in extra)]  # fmt: skip
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)


def decide(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    out = folder / "decision.json"
    q = subprocess.run([sys.executable, "-m", "analysis.decide", str(folder), f"pricing.usd_per_hour={args.usd_per_hour}",
                        f"slo.ttft_ms={args.ttft_limit_ms}", "slo.tpot_ms=1000", "slo.percentile=99",
                        f"slo.attainment_target={args.attainment}", f"output={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    if not out.exists():
        raise SystemExit(f"decide failed on {folder}: {q.stderr[-2000:]}")
    return json.loads(out.read_text())


def account(folder: Path) -> dict[str, Any]:
    """Launches, points, early stops, halved variants and the measured busy seconds of one strategy."""
    launches = points = early = 0
    busy = 0.0
    halved, streams_of = [], {}
    for rj in sorted(folder.glob("*/launch-*/run.json")):
        s = json.loads(rj.read_text())
        launches += 1
        url = ((s.get("config") or {}).get("engine") or {}).get("base_url")
        streams_of[s["variant_id"]] = url
        for lp in s.get("load_points") or []:
            points += 1
            early += bool(lp.get("stopped_early"))
            if lp.get("t0_ns") and lp.get("t_end_ns"):
                busy += (lp["t_end_ns"] - lp["t0_ns"]) / 1e9
        if (s.get("resume") or {}).get("halving"):
            halved.append(s["variant_id"])
    return {"launches": launches, "points": points, "stopped_early": early, "halved": halved, "busy_s": busy,
            "urls": streams_of}  # fmt: skip


def simulate_strategy(args: argparse.Namespace, name: str, streams: list[int]) -> dict[str, Any]:
    """One strategy over every variant in the queue model (module doc: --simulate)."""
    from types import SimpleNamespace

    import pandas as pd

    from analysis.cost import Price
    from analysis.halving import Measured, Rival, cannot_win
    from analysis.knee import knees
    from analysis.overload import detect_overload
    from analysis.results import point_row
    from analysis.schema import SloConfig
    from analysis.selection import select
    from experiments.sweeps.search import GridSearch, KneeSearch
    from tests.support.mdc import simulate

    slo = SloConfig(name="bench", ttft_ms=args.ttft_limit_ms, tpot_ms=1000.0, percentile=99.0,
                    attainment_target=args.attainment)  # fmt: skip
    price = Price(args.usd_per_hour, 1, "on_demand", "bench", "cpu", "bench", "", True, 0.0, 1.0)
    gpu = SimpleNamespace(name="cpu", count=0, tdp_w=None)
    limits = {"slo_ttft_ms": args.ttft_limit_ms, "slo_tpot_ms": 1000.0}
    rows: list[dict[str, Any]] = []
    out = {"launches": 0, "points": 0, "stopped_early": 0, "halved": [], "busy_s": 0.0, "urls": {}}
    halted: dict[str, str] = {}
    check_s, looks = 0.5, int(args.duration_s / 0.5) + 1
    for vi, c in enumerate(streams):
        vid = f"{c} streams"
        out["launches"] += 1
        out["urls"][vid] = vid
        if name.startswith("grid"):
            planner: Any = GridSearch(grid(args))
        else:  # conf/search/capacity.yaml
            planner = KneeSearch(args.lo, args.hi, tolerance=0.1, max_points=7, expand_to=64)
        rival_list = []
        if "halving" in name and rows:
            kn = knees(pd.DataFrame(rows), args.attainment, limits)
            for k in kn.values():
                hi = k.usd_at_capacity_hi if k.usd_at_capacity_bound != "at most" else k.usd_at_capacity
                if k.usd_at_capacity is not None and hi is not None:
                    rival_list.append(Rival(k.variant_id, k.variant_label, float(hi), float(k.usd_at_capacity),
                                            "at most" if k.usd_at_capacity_bound == "at most" else "interval"))  # fmt: skip
        measured: list[Measured] = []
        j = 0
        while (x := planner.next_load()) is not None:
            df, s = simulate(float(x), streams=c, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, tokens=args.tokens,
                             warmup_s=args.warmup_s, duration_s=args.duration_s, seed=args.seed * 10007 + vi * 101 + j)  # fmt: skip
            j += 1
            t0 = int(df["t_sent_ns"].min())
            stop_ns = None
            if "early" in name:
                recs = df[["phase", "t_sent_ns", "t_first_token_ns", "t_done_ns", "status"]].to_dict("records")
                done = df["t_done_ns"].to_numpy()
                for k in range(1, looks + 1):
                    now = t0 + (args.warmup_s + k * check_s) * 1e9
                    seen = [r for r, d in zip(recs, done, strict=True) if d <= now]
                    v = detect_overload(seen, ttft_limit_ms=args.ttft_limit_ms, max_miss_share=0.01,
                                        window_requests=float(x) * args.duration_s, looks=looks)  # fmt: skip
                    if v.overloaded:
                        stop_ns = now
                        break
            ident = {"variant_id": vid, "variant_label": vid, "run_id": vid, "point_id": f"{vid}@{x:g}",
                     "repetition": sum(1 for r in rows if r["variant_id"] == vid and r["load_value"] == x),
                     "load_value": float(x), "load_unit": "req/s", "time_to_ready_s": 1.0, "started_at_utc": ""}  # fmt: skip
            row = point_row(df, s, slo=slo, price=price, gpu=gpu, ident=ident, n_boot=200, seed=j,
                            stopped_early="overloaded" if stop_ns is not None else None)[0]  # fmt: skip
            rows.append(row)
            out["points"] += 1
            out["stopped_early"] += stop_ns is not None
            out["busy_s"] += ((stop_ns if stop_ns is not None else int(df["t_done_ns"].max())) - t0) / 1e9
            planner.observe(float(x), bool(row["feasible"]), "", row["p_feasible"])
            ok = int(s["requests"]["ok"]) or 1
            measured.append(Measured(float(x), bool(row["feasible"]), s.get("output_tok_per_s"),
                                     float(s.get("generated_tokens") or 0) / ok))  # fmt: skip
            if rival_list and "halving" in name:
                h = cannot_win(measured, rival_list, usd_per_hour=args.usd_per_hour, open_loop=True,
                               hi=max(planner.hi, planner.expand_to or 0))  # fmt: skip
                if h.cannot_win:
                    halted[vid] = h.reason
                    out["halved"].append(vid)
                    break
    sel = select(pd.DataFrame(rows), target=args.attainment, limits=limits, halted=halted)
    out["decision"] = {"selection": sel.to_dict()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="4,8,2", help="one variant per value, launched in this order")
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    ap.add_argument("--itl-ms", type=float, default=10.0)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--ttft-limit-ms", type=float, default=80.0)
    ap.add_argument("--attainment", type=float, default=0.9)
    ap.add_argument("--lo", type=float, default=2.0)
    ap.add_argument("--hi", type=float, default=64.0)
    ap.add_argument("--grid-points", type=int, default=10)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--usd-per-hour", type=float, default=1.0)
    ap.add_argument("--engine-start-s", type=float, default=None,
                    help="modelled engine start per launch (default: two nominal point windows)")  # fmt: skip
    ap.add_argument("--engine-start-s-alt", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--each", action="store_true", help="also early stop alone and halving alone")
    ap.add_argument("--strategies", default=None, help="comma-separated subset, e.g. knee+early+halving")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--simulate", action="store_true", help="the queue model in-process instead of the real server")
    args = ap.parse_args(argv)
    start_s = args.engine_start_s if args.engine_start_s is not None else 2 * (args.warmup_s + args.duration_s)
    streams = [int(v) for v in args.streams.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="servelab-decision-cost-"))
    s_ms = args.ttft_ms + (args.tokens - 1) * args.itl_ms
    names = [n for n in STRATEGIES if args.each or n in ("grid", "knee", "knee+early+halving")]
    if args.strategies:
        names = [n for n in args.strategies.split(",") if n in STRATEGIES]
    print(f"variants (launch order): {', '.join(f'{c} streams ({c / s_ms * 1000:.1f} req/s at most)' for c in streams)}; "
          f"S = {s_ms:g} ms, same price ${args.usd_per_hour:g}/h: the right choice is {max(streams)} streams")  # fmt: skip
    print(f"SLO TTFT p{99} <= {args.ttft_limit_ms:g} ms, attainment >= {args.attainment:g}; points {args.warmup_s:g} s + "
          f"{args.duration_s:g} s over [{args.lo:g}, {args.hi:g}] req/s; grid {grid(args)}")  # fmt: skip
    servers = [] if args.simulate else [start_server(args, c) for c in streams]
    if args.simulate:
        url_streams = {f"{c} streams": c for c in streams}
    else:
        url_streams = {f"http://127.0.0.1:{port}": c for (_, port), c in zip(servers, streams, strict=True)}
    rows = []
    try:
        for name in names:
            folder_name = name.replace("+", "_")
            t = time.monotonic()
            if args.simulate:
                a = simulate_strategy(args, name, streams)
                d = a.pop("decision")
            else:
                for (_, port), c in zip(servers, streams, strict=True):
                    p = lab(args, work, folder_name, port, STRATEGIES[name])
                    if p.returncode != 0:
                        print(f"  {name}: the {c}-stream variant's run exited {p.returncode}: "
                              f"{(p.stderr.strip().splitlines() or [''])[-1]}")  # fmt: skip
                folder = work / folder_name
                d = decide(args, folder)
                a = account(folder)
            chosen = (d["selection"].get("chosen") or {}).get("variant_id")
            c_streams = url_streams.get(a["urls"].get(chosen)) if chosen else None
            excluded = {e["variant_id"]: [r["kind"] for r in e["reasons"]] for e in d["selection"]["excluded"]}
            rows.append({"strategy": name, **{k: v for k, v in a.items() if k != "urls"},
                         "halved_streams": [url_streams.get(a["urls"].get(v)) for v in a["halved"]],
                         "chosen_streams": c_streams, "tie": bool(d["selection"].get("tie")),
                         "headline": d["selection"].get("headline"), "wall_s": time.monotonic() - t,
                         "excluded": {str(url_streams.get(a["urls"].get(k))): v for k, v in excluded.items()}})  # fmt: skip
            r = rows[-1]
            print(f"  {name}: {r['points']} points, {r['stopped_early']} stopped early, halved {r['halved_streams']}, "
                  f"busy {r['busy_s']:.1f} s, chose {c_streams} streams{' (tie)' if r['tie'] else ''} "
                  f"[{r['wall_s']:.0f} s wall]")  # fmt: skip
    finally:
        for p, _ in servers:
            p.terminate()
            p.wait(timeout=10)
    grid_row = next((r for r in rows if r["strategy"] == "grid"), None)
    for label, st in ((f"modelled engine start {start_s:g} s a launch", start_s), ("no engine start", 0.0),
                      (f"engine start {args.engine_start_s_alt:g} s a launch", args.engine_start_s_alt)):  # fmt: skip
        print(f"\nengine-minutes ({label}):")
        print(f"  {'strategy':<20} {'launches':>8} {'points':>6} {'early':>5} {'halved':>6} {'engine-min':>10} "
              f"{'of grid':>8}  choice                 right  same as grid")  # fmt: skip
        g_min = (grid_row["launches"] * st + grid_row["busy_s"]) / 60 if grid_row else None
        for r in rows:
            m = (r["launches"] * st + r["busy_s"]) / 60
            share = f"{m / g_min:.0%}" if g_min else "-"
            right = r["chosen_streams"] == max(streams) and not r["tie"]
            same = grid_row is not None and r["chosen_streams"] == grid_row["chosen_streams"] and r["tie"] == grid_row["tie"]
            choice = f"{r['chosen_streams']} streams" + (" (tie)" if r["tie"] else "")
            print(f"  {r['strategy']:<20} {r['launches']:>8} {r['points']:>6} {r['stopped_early']:>5} "
                  f"{len(r['halved']):>6} {m:>10.2f} {share:>8}  {choice:<22} {'yes' if right else 'NO':<6} "
                  f"{'yes' if same else 'NO'}")  # fmt: skip
            r.setdefault("engine_minutes", {})[str(st)] = m
    best = next((r for r in rows if r["strategy"] == "knee+early+halving"), None)
    if best and grid_row:
        m, g = best["engine_minutes"][str(start_s)], grid_row["engine_minutes"][str(start_s)]
        ok = m <= g / 3 and best["chosen_streams"] == grid_row["chosen_streams"]
        print(f"\ntarget (same choice as the grid in at most a third of its engine-minutes, start {start_s:g} s): "
              f"{'met' if ok else 'NOT met'}: {m:.2f} of {g:.2f} engine-min ({m / g:.0%})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"workdir": str(work), "json": str(args.json)},
                                         "engine_start_s": start_s, "rows": rows}, indent=1, default=str))  # fmt: skip
    print(f"\nfolders: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
