"""Benchmark: how accurately, and up to what chunk rate, one load-generator process measures.

Starts the in-repo timing server (tests/support/timing_server.py: known TTFT and inter-token
delay, logs its own send times on CLOCK_MONOTONIC) and drives it with servelab's Locust load
generator in closed loop at rising concurrency. For each level it prints:
  chunks/s      content chunks the client consumed per second in the measured window
  cpu%          the load-generator process's CPU (100 = one core), mean over the window
  TTFT bias     client TTFT − server TTFT, median / p99 (ms)
  lag           client receive − server send per chunk, median / p99 (ms)
  ITL |err|     |client gap − server gap| per chunk, median / p99 (ms)
  TPOT ±5%      share of requests whose TPOT is within ±5 % of the server's own
  loop max      worst event-loop stall of the generator (ms)
--json also gets TTFT bias split in two: send_to_server (server arrival − t_sent: request delivery
and the server's accept queue) and first_chunk_lag (client first chunk − server first send).
With --workers N the same load is split over N Locust worker processes (distributed mode).
--workload sessions drives N concurrent conversations instead (loadgen.sessions, chat endpoint, no
think time): each later turn's request is rendered from the history and its bytes built when the
previous reply ends, on the generator's hot path; --workload both prints the two side by side.
--monitor on runs servelab's live exporter in this (the lab's) process while the point runs, as
monitor.port does in a run (experiments.monitor.RunMonitor tails the records file every 0.5 s),
and scrapes its /metrics once a second as Prometheus would; --monitor both measures every level
with it off, then on, and prints the TTFT bias difference (the monitor must not make it worse).

Pinning: with 2+ CPUs the server runs on CPU 0 and the generator(s) on the others (--no-pin to
disable), so the figures describe the client. Run:
  .venv/bin/python benchmarks/loadgen_accuracy.py                 # default levels, 1 process
  .venv/bin/python benchmarks/loadgen_accuracy.py --workers 2 --levels 256 512
  .venv/bin/python benchmarks/loadgen_accuracy.py --levels 64 --workload both   # sessions against single-turn
Side effects: starts and stops local processes on 127.0.0.1; writes into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen.driver import build_spec, run_load_point  # noqa: E402
from loadgen.jsonl import read_jsonl  # noqa: E402
from loadgen.schema import TrafficConfig, WorkloadConfig  # noqa: E402
from loadgen.workload import WorkloadItem  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, ttft_ms: float, itl_ms: float, log: Path, pin: bool) -> subprocess.Popen:
    pre = (lambda: os.sched_setaffinity(0, {0})) if pin else None
    p = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/support/timing_server.py"), "--port", str(port), "--ttft-ms", str(ttft_ms),
         "--itl-ms", str(itl_ms), "--log", str(log)], preexec_fn=pre,
    )  # fmt: skip
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return p
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("timing server did not start")


def pct(a, q):
    return float(np.percentile(a, q)) if len(a) else float("nan")


def session_items(args) -> tuple[WorkloadConfig, list]:
    """--workload sessions: conversations of --turns turns on the chat endpoint, no think time (the
    next turn is built and sent the moment a reply ends: the hot path this case measures)."""
    from loadgen.tokenizer import load_token_counter
    from loadgen.workload import build_items

    w = WorkloadConfig(kind="sessions", endpoint="chat", turns=args.turns, prompt_tokens=32, output_tokens=args.tokens,
                       think_s=0.0, system_prompt_tokens=64, system_prompts=4, num_prompts=256)  # fmt: skip
    return w, build_items(w, load_token_counter(str(ROOT / "models" / "tiny-llama")))


class _Monitored:
    """servelab's run exporter in this process, reading `work` as during a run, scraped once a second."""

    def __init__(self, work: Path, conc: int) -> None:
        from experiments.config import compose_run
        from experiments.monitor import RunMonitor
        from experiments.schema import register_configs

        register_configs()
        self.port = free_port()
        cfg = compose_run([f"monitor.port={self.port}"])
        self.mon = RunMonitor(cfg, run_id="bench", variant_id="bench", run_dir=work, work=work)
        self.conc, self.scrapes, self.stop = conc, 0, False

    def __enter__(self) -> _Monitored:
        import threading

        self.mon.start()
        self.mon.point_started(0, self.conc)
        self.thread = threading.Thread(target=self._scrape, daemon=True)
        self.thread.start()
        return self

    def _scrape(self) -> None:
        while not self.stop:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                r.read()
            self.scrapes += 1
            time.sleep(1.0)

    def __exit__(self, *exc: object) -> None:
        self.mon.point_finished(0, None)
        self.stop = True
        self.thread.join(5)
        self.mon.stop()


def level(args, conc: int, tmp: Path, workload: str = "single", monitor: bool = False) -> dict:
    port = free_port()
    log = tmp / f"server_{workload}_{conc}.jsonl"
    srv = start_server(port, args.ttft_ms, args.itl_ms, log, args.pin)
    try:
        tr = TrafficConfig(kind="concurrency", request_timeout_s=60, drain_timeout_s=30, max_inflight=4096,
                           warmup_s=args.warmup_s, duration_s=args.duration_s, workers=args.workers)  # fmt: skip
        if workload == "sessions":
            w, items = session_items(args)
        else:
            w, items = WorkloadConfig(), [WorkloadItem(i, f"p{i}", 3, args.tokens) for i in range(64)]
        work = tmp / f"{workload}{conc}{'m' if monitor else ''}"
        cpus = list(range(1, os.cpu_count() or 2)) if args.pin and (os.cpu_count() or 1) > 1 else None
        spec = build_spec(load_point=0, load_value=conc, traffic=tr, workload=w, items=items,
                          base_url=f"http://127.0.0.1:{port}", model="m", extras_for=lambda n: {}, workdir=work, cpus=cpus,
                          sessions=[it.session for it in items if it.session is not None])  # fmt: skip
        if monitor:
            with _Monitored(work, conc) as m:
                out = run_load_point(spec, work)
            scrapes = m.scrapes
        else:
            out = run_load_point(spec, work)
            scrapes = 0
    finally:
        srv.terminate()
        srv.wait(10)
    server = {s["id"]: s for s in read_jsonl(log)}
    t0 = out.meta["t0_ns"] + int(args.warmup_s * 1e9)
    t1 = t0 + int(args.duration_s * 1e9)
    recs = [r for r in out.records if r["status"] == "ok" and r["response_id"] in server]
    chunks = sum(1 for r in recs for c in r["chunk_ns"] if t0 <= c < t1)
    meas = [r for r in recs if r["phase"] == "measure"]
    bias, lag, itl, tpot_ok = [], [], [], []
    to_server, first_lag = [], []  # TTFT bias = (server arrival - t_sent) + (client first chunk - server first send)
    for r in meas:
        s = server[r["response_id"]]
        c, v = np.array(r["chunk_ns"]), np.array(s["send_ns"])
        if len(c) != len(v) or len(c) < 2:
            continue
        bias.append(((c[0] - r["t_sent_ns"]) - (v[0] - s["arrival_ns"])) / 1e6)
        to_server.append((s["arrival_ns"] - r["t_sent_ns"]) / 1e6)
        first_lag.append((c[0] - v[0]) / 1e6)
        lag.extend((c - v) / 1e6)
        itl.extend(np.abs(np.diff(c) - np.diff(v)) / 1e6)
        tc, ts = (c[-1] - c[0]) / (len(c) - 1), (v[-1] - v[0]) / (len(v) - 1)
        tpot_ok.append(abs(tc - ts) <= 0.05 * ts)
    lagw = [x for x in out.lag if t0 <= x["t_ns"] <= t1 + 1e9] or out.lag
    return {
        "workload": workload, "monitor": monitor, "monitor_scrapes": scrapes, "concurrency": conc, "workers": args.workers, "requests": len(meas), "chunks_per_s": chunks / args.duration_s,
        "cpu_pct": float(np.mean([x["cpu_pct"] for x in lagw])) if lagw else float("nan"),
        "ttft_bias_p50_ms": pct(bias, 50), "ttft_bias_p99_ms": pct(bias, 99),
        "send_to_server_p50_ms": pct(to_server, 50), "send_to_server_p99_ms": pct(to_server, 99),
        "first_chunk_lag_p50_ms": pct(first_lag, 50), "first_chunk_lag_p99_ms": pct(first_lag, 99),
        "lag_p50_ms": pct(lag, 50), "lag_p99_ms": pct(lag, 99),
        "itl_err_p50_ms": pct(itl, 50), "itl_err_p99_ms": pct(itl, 99),
        "tpot_within_5pct": float(np.mean(tpot_ok)) if tpot_ok else float("nan"),
        "loop_lag_max_ms": max((x["lag_max_ms"] for x in lagw), default=float("nan")),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[8, 64, 128, 256, 384, 512])
    ap.add_argument("--workers", type=int, default=1, help="load-generator worker processes (distributed mode)")
    ap.add_argument("--ttft-ms", type=float, default=50.0)
    ap.add_argument("--itl-ms", type=float, default=20.0)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--duration-s", type=float, default=8.0)
    ap.add_argument("--warmup-s", type=float, default=3.0)
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--workload", choices=("single", "sessions", "both"), default="single",
                    help="single-turn requests, multi-turn sessions (each turn built from the history when the "
                         "previous reply ends), or both at each level")  # fmt: skip
    ap.add_argument("--turns", type=int, default=4, help="turns per session (--workload sessions/both)")
    ap.add_argument("--monitor", choices=("off", "on", "both"), default="off",
                    help="servelab's live exporter (monitor.port) in the lab process while each point runs")  # fmt: skip
    args = ap.parse_args()
    rows = []
    hdr = (f"{'workload':>8} {'mon':>3} {'conc':>5} {'wrk':>3} {'chunks/s':>9} {'cpu%':>6} {'TTFT bias p50/p99 ms':>21} {'lag p50/p99 ms':>16} "
           f"{'ITL|err| p50/p99':>17} {'TPOT±5%':>8} {'loop max':>8}")  # fmt: skip
    print(f"timing server: TTFT {args.ttft_ms} ms, ITL {args.itl_ms} ms, {args.tokens} tokens; pinned={args.pin}")
    print(hdr)
    with tempfile.TemporaryDirectory() as td:
        kinds = ("single", "sessions") if args.workload == "both" else (args.workload,)
        mons = {"off": (False,), "on": (True,), "both": (False, True)}[args.monitor]
        for conc, kind, mon in ((c, k, m) for c in args.levels for k in kinds for m in mons):
            r = level(args, conc, Path(td), kind, monitor=mon)
            rows.append(r)
            print(f"{kind:>8} {'on' if mon else 'off':>3} {r['concurrency']:>5} {r['workers']:>3} {r['chunks_per_s']:>9.0f} {r['cpu_pct']:>6.1f} "
                  f"{r['ttft_bias_p50_ms']:>10.2f}/{r['ttft_bias_p99_ms']:<10.2f} {r['lag_p50_ms']:>7.2f}/{r['lag_p99_ms']:<8.2f} "
                  f"{r['itl_err_p50_ms']:>8.2f}/{r['itl_err_p99_ms']:<8.2f} {100 * r['tpot_within_5pct']:>7.1f}% "
                  f"{r['loop_lag_max_ms']:>8.1f}", flush=True)  # fmt: skip
    for conc in args.levels if args.workload == "both" else ():
        a, b = (next(r for r in rows if r["concurrency"] == conc and r["workload"] == k) for k in kinds)
        print(f"concurrency {conc}: TTFT bias p99 single-turn {a['ttft_bias_p99_ms']:.2f} ms, sessions "
              f"{b['ttft_bias_p99_ms']:.2f} ms (difference {b['ttft_bias_p99_ms'] - a['ttft_bias_p99_ms']:+.2f} ms; "
              "target: within 1 ms)")  # fmt: skip
    for conc in args.levels if args.monitor == "both" else ():
        for kind in kinds:
            a, b = (next(r for r in rows if r["concurrency"] == conc and r["workload"] == kind and r["monitor"] == m)
                    for m in (False, True))  # fmt: skip
            print(f"concurrency {conc} {kind}: TTFT bias p50/p99 monitor off {a['ttft_bias_p50_ms']:.2f}/"
                  f"{a['ttft_bias_p99_ms']:.2f} ms, on {b['ttft_bias_p50_ms']:.2f}/{b['ttft_bias_p99_ms']:.2f} ms "
                  f"({b['monitor_scrapes']} scrapes; p99 difference {b['ttft_bias_p99_ms'] - a['ttft_bias_p99_ms']:+.2f} ms)")  # fmt: skip
    good = [r for r in rows if r["tpot_within_5pct"] == 1.0]
    best = max(good, key=lambda r: r["chunks_per_s"], default=None)
    if best:
        print(f"largest chunk rate with every request's TPOT within ±5 %: {best['chunks_per_s']:.0f} chunks/s "
              f"(concurrency {best['concurrency']}, {args.workers} process(es))")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
