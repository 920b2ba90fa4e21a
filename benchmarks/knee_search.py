"""Benchmark: the adaptive knee search (experiments.sweeps.search) against a 10-point grid, for real.

Starts the in-repo timing server with a known capacity (tests/support/timing_server.py
--max-streams N: N streams at once, the rest queue FIFO; each request holds a stream for
S = ttft + (tokens - 1) * itl) and finds the highest SLO-feasible load twice, once by
KneeSearch and once by a 10-point geometric grid over the same range. Every point is measured
with servelab's load generator (loadgen.spec.build_spec + loadgen.driver.run_load_point) and
judged by the lab's own functions (analysis.metrics.summarize_point for the window,
analysis.slo.evaluate_point for feasibility). The true knee is known in closed form:
  closed loop (--kind concurrency)  N users: up to N nobody waits (TTFT = ttft); with N + 1 a
                                    share of the requests waits up to S, so TTFT p99 ~ ttft + S
  open loop (--kind constant)       N / S req/s: below it no request waits, above it the queue
                                    (and TTFT) grows for as long as the point lasts
SLO: TTFT p99 <= ttft + S/2 and attainment >= 0.9, which separates the two cases by S/2 each way.

Prints each measured point, then per method: runs used, knee found, true knee, knee error
(true - found)/true, the final bracket, and total measured seconds (wall time of its points).
"knee, <= 3 runs" is the same search capped at a third of the grid's runs: its probes are the
first three of the uncapped search, so it reuses those measurements instead of repeating them.
The grid's line also says how many runs an early-stopping grid (up to its first infeasible
point) would have used.

:func:`make_measure_feasible` is the core the tests use: given a server URL and settings it
returns measure_feasible(load) -> (feasible, reason), one real load point per call.

Run:
  .venv/bin/python benchmarks/knee_search.py                     # closed loop, [1, 64] users
  .venv/bin/python benchmarks/knee_search.py --kind constant     # open loop, [10, 320] req/s
Side effects: starts and stops local processes on 127.0.0.1 (the server, the load generator);
writes into a temporary folder (or --workdir).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.metrics import requests_frame, summarize_point  # noqa: E402
from analysis.schema import SloConfig  # noqa: E402
from analysis.slo import evaluate_point  # noqa: E402
from engines.process import Supervisor, free_port, wait_http_ready  # noqa: E402
from experiments.sweeps.search import GridSearch, KneeSearch  # noqa: E402
from loadgen.driver import build_spec, run_load_point  # noqa: E402
from loadgen.records import to_table  # noqa: E402
from loadgen.schema import TrafficConfig, WorkloadConfig  # noqa: E402
from loadgen.workload import WorkloadItem  # noqa: E402

GRID_POINTS = 10


def service_time_ms(ttft_ms: float, itl_ms: float, tokens: int) -> float:
    """S: how long one request holds a stream slot of the timing server."""
    return ttft_ms + (tokens - 1) * itl_ms


def true_knee(kind: str, max_streams: int, s_ms: float) -> float:
    """The highest feasible load in closed form: N users, or N / S req/s (module doc)."""
    return float(max_streams) if kind == "concurrency" else max_streams / (s_ms / 1e3)


def knee_slo(ttft_ms: float, s_ms: float) -> SloConfig:
    """TTFT p99 halfway between no wait (ttft) and one service time of wait (ttft + S)."""
    return SloConfig(name="knee_bench", ttft_ms=ttft_ms + s_ms / 2, percentile=99.0, attainment_target=0.9)


def start_server(sup: Supervisor, workdir: Path, *, ttft_ms: float, itl_ms: float, max_streams: int) -> str:
    """The timing server as a child of `sup`; its base URL once it answers /health."""
    port = free_port()
    sup.spawn("timing server", [sys.executable, str(ROOT / "tests/support/timing_server.py"), "--port", port,
                                "--ttft-ms", ttft_ms, "--itl-ms", itl_ms, "--max-streams", max_streams,
                                "--keepalive-s", 30],
              log_path=workdir / "server.log")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http_ready(url + "/health", 20, poll_s=0.05)
    return url


def wait_idle(base_url: str, timeout_s: float = 15.0) -> None:
    """Until the server streams and queues nothing: the previous point's queue must not leak into the next."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base_url + "/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            text = ""
        gauges = dict(ln.rsplit(" ", 1) for ln in text.splitlines() if ln and not ln.startswith("#"))
        busy = gauges.get("fake:num_requests_running", "?"), gauges.get("fake:num_requests_waiting", "0")
        if busy == ("0", "0"):
            return
        time.sleep(0.1)


@dataclass
class PointProber:
    """measure_feasible(load) -> (feasible, reason): one real load point per call, judged by the lab's SLO code.

    `history` keeps every point measured: load, feasible, reason, wall seconds, TTFT p99, requests.
    """

    base_url: str
    kind: str
    slo: SloConfig
    workdir: Path
    tokens: int = 16
    warmup_s: float = 1.0
    duration_s: float = 3.0
    request_timeout_s: float = 10.0
    drain_timeout_s: float = 2.0  # open loop past capacity: the backlog is cancelled, not waited for
    supervisor: Supervisor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    _index: itertools.count = field(default_factory=itertools.count)

    def __call__(self, load: float) -> tuple[bool, str]:
        t = TrafficConfig(kind=self.kind, warmup_s=self.warmup_s, duration_s=self.duration_s, cooldown_s=0.0,
                          request_timeout_s=self.request_timeout_s, drain_timeout_s=self.drain_timeout_s,
                          max_inflight=4096)  # fmt: skip
        items = [WorkloadItem(i, f"p{i}", 3, self.tokens) for i in range(64)]
        i = next(self._index)
        wait_idle(self.base_url)
        t_start = time.monotonic()
        spec = build_spec(load_point=i, load_value=load, traffic=t, workload=WorkloadConfig(), items=items,
                          base_url=self.base_url, model="m", extras_for=lambda n: {}, workdir=self.workdir)  # fmt: skip
        out = run_load_point(spec, self.workdir, supervisor=self.supervisor)
        wall_s = time.monotonic() - t_start
        df = requests_frame(to_table(out.records))
        s = summarize_point(df, kind=self.kind, value=float(load), warmup_s=self.warmup_s, duration_s=self.duration_s,
                            t0_ns=out.meta.get("t0_ns"), t_end_ns=out.meta.get("t_end_ns"), lag_samples=out.lag)  # fmt: skip
        res = evaluate_point(df, self.slo, window_s=s["measure_window_s"])
        reason = "; ".join(res.reasons + tuple(out.problems))
        if s["loadgen"]["saturated"]:  # the lab's verdict would flag the point: say so, judge it anyway
            notes = [n["message"] for n in s["loadgen"]["saturation_reasons"]]
            reason = "; ".join([r for r in (reason, *notes) if r])
        self.history.append({
            "load": float(load), "feasible": res.feasible and not out.problems, "reason": reason, "wall_s": wall_s,
            "ttft_p99_ms": s["ttft_ms"]["p99"], "attainment": res.attainment, "requests": res.requests,
        })  # fmt: skip
        return res.feasible and not out.problems, reason


def make_measure_feasible(base_url: str, *, kind: str, slo: SloConfig, workdir: Path,
                          **settings: Any) -> PointProber:  # fmt: skip
    """The factory: measure_feasible(load) -> (feasible, reason) against `base_url` (PointProber's settings)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return PointProber(base_url=base_url, kind=kind, slo=slo, workdir=workdir, **settings)


def run_planner(planner: Any, measure: Callable[[float], tuple[bool, str]]) -> dict[str, Any]:
    """Drive a planner to its end (as the runner would); its final state()."""
    while (load := planner.next_load()) is not None:
        feasible, reason = measure(load)
        planner.observe(load, feasible, reason)
    return planner.state()


def grid_points(lo: float, hi: float, n: int, integer: bool) -> list[float]:
    """n geometric points over [lo, hi] (whole numbers, duplicates dropped, for users)."""
    pts = np.geomspace(lo, hi, n)
    return sorted({float(round(p)) for p in pts}) if integer else [float(p) for p in pts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=["concurrency", "constant"], default="concurrency")
    ap.add_argument("--max-streams", type=int, default=8)
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    ap.add_argument("--itl-ms", type=float, default=5.0)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--lo", type=float, default=None, help="default: 1 user / 10 req/s")
    ap.add_argument("--hi", type=float, default=None, help="default: 64 users / 320 req/s")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--duration-s", type=float, default=3.0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    integer = args.kind == "concurrency"
    lo = args.lo if args.lo is not None else (1.0 if integer else 10.0)
    hi = args.hi if args.hi is not None else (64.0 if integer else 320.0)
    s_ms = service_time_ms(args.ttft_ms, args.itl_ms, args.tokens)
    truth = true_knee(args.kind, args.max_streams, s_ms)
    slo = knee_slo(args.ttft_ms, s_ms)
    unit = "users" if integer else "req/s"
    print(f"timing server: {args.max_streams} streams, TTFT {args.ttft_ms:g} ms, ITL {args.itl_ms:g} ms, "
          f"{args.tokens} tokens -> S = {s_ms:g} ms; true knee {truth:.4g} {unit}")  # fmt: skip
    print(f"SLO: TTFT p{slo.percentile:g} <= {slo.ttft_ms:g} ms, attainment >= {slo.attainment_target:g}; "
          f"each point {args.warmup_s:g} s warmup + {args.duration_s:g} s measured; range [{lo:g}, {hi:g}] {unit}")  # fmt: skip
    rows: list[tuple[str, dict[str, Any], float]] = []
    with tempfile.TemporaryDirectory() as td, Supervisor() as sup:
        work = args.workdir or Path(td)
        url = start_server(sup, work, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, max_streams=args.max_streams)

        def prober(name: str) -> PointProber:
            return make_measure_feasible(url, kind=args.kind, slo=slo, workdir=work / name, tokens=args.tokens,
                                         warmup_s=args.warmup_s, duration_s=args.duration_s, supervisor=sup)  # fmt: skip

        def show(name: str, p: PointProber) -> Callable[[float], tuple[bool, str]]:
            def measure(load: float) -> tuple[bool, str]:
                ok, why = p(load)
                h = p.history[-1]
                ttft = "-" if h["ttft_p99_ms"] is None else f"{h['ttft_p99_ms']:.1f}"
                print(f"  {name:<5} {load:>8.4g} {unit:<5} {'feasible' if ok else 'INFEASIBLE':<10} "
                      f"TTFT p99 {ttft:>7} ms  attainment {h['attainment'] or 0:.3f}  {h['wall_s']:.1f} s  {why}",
                      flush=True)  # fmt: skip
                return ok, why

            return measure

        knee_p = prober("knee")
        search = KneeSearch(lo, hi, tolerance=args.tolerance, integer=integer)
        print(f"knee search (worst case {search.worst_case_points()} points):")
        knee_state = run_planner(search, show("knee", knee_p))
        rows.append(("knee search", knee_state, sum(h["wall_s"] for h in knee_p.history)))

        # The same search capped at a third of the grid: a prefix of the probes above, replayed.
        cap = GRID_POINTS // 3
        seen = {h["load"]: (h["feasible"], h["reason"]) for h in knee_p.history}
        capped = KneeSearch(lo, hi, tolerance=args.tolerance, integer=integer, max_points=cap)
        capped_state = run_planner(capped, lambda x: seen[x])
        capped_s = sum(h["wall_s"] for h in knee_p.history[:cap])
        rows.append((f"knee, <= {cap} runs", capped_state, capped_s))

        grid_p = prober("grid")
        grid = GridSearch(grid_points(lo, hi, GRID_POINTS, integer))
        print(f"grid ({len(grid.points)} points: {', '.join(f'{x:.4g}' for x in grid.points)}):")
        grid_state = run_planner(grid, show("grid", grid_p))
        grid_s = sum(h["wall_s"] for h in grid_p.history)
        rows.append((f"grid ({len(grid.points)} points)", grid_state, grid_s))

    print(f"\n{'method':<18} {'runs':>4} {'knee':>8} {'true':>8} {'error':>7}  {'bracket':<18} "
          f"{'measured s':>10}")  # fmt: skip
    out = []
    for name, st, secs in rows:
        k = st["knee"]
        err = None if k is None else 100 * (truth - k) / truth
        f, i = st["bracket"]
        br = f"[{'-' if f is None else f'{f:.4g}'}, {'-' if i is None else f'{i:.4g}'}]"
        print(f"{name:<18} {st['points_used']:>4} {'-' if k is None else f'{k:.4g}':>8} {truth:>8.4g} "
              f"{'-' if err is None else f'{err:.1f}%':>7}  {br:<18} {secs:>10.1f}")  # fmt: skip
        out.append({"method": name, "runs": st["points_used"], "knee": k, "true_knee": truth, "knee_error_pct": err,
                    "measured_s": secs, "state": st})  # fmt: skip
    pts = grid_state["points"]
    first_bad = next((n for n, p in enumerate(pts, 1) if not p["feasible"]), len(pts))
    print(f"(a grid stopping at its first infeasible point would have used {first_bad} runs; "
          f"the knee search's stop rule: {knee_state['stop_rule']})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
