"""Benchmark: the analysis pipeline on one load point of N synthetic requests x C chunks.

Stages (each timed, with the peak resident memory of this process during the stage):
  write      synthetic requests.parquet (REQUEST_SCHEMA) written by a CHILD process, so its
             memory does not count against the pipeline; not part of the target
  read       requests.parquet -> a DataFrame, the way the decision layer reads a run
  metrics    per-request metrics (analysis.metrics.derive)
  summary    the point summary run.json holds (analysis.metrics.summarize_point)
  bootstrap  the per-point evaluation: time-block replicates (analysis.blocks), cost, verdict
  decision   per-point table row -> knee, Pareto, selection and capacity plan (analysis.*)
Target (issue 9): read .. decision <= 15 s and <= 3 GiB peak RSS on 2 cores for 1 M requests.

Run:
  .venv/bin/python benchmarks/analysis_scale.py                    # 1 M requests x 128 chunks
  .venv/bin/python benchmarks/analysis_scale.py --requests 200000  # smaller
  .venv/bin/python benchmarks/analysis_scale.py --baseline         # the pre-issue-9 path only:
                                                                   # full read + summarize_point
Side effects: writes one parquet file into a temporary folder (removed at the end); starts one
child Python process to write it.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MS = 1_000_000


def write_synthetic(path: Path, n: int, chunks: int, seed: int = 0, batch: int = 50_000) -> None:
    """N requests of one measured load point, Poisson arrivals at 12 req/s, written batch by batch.

    Every request has `chunks` content chunks ~U(5, 40) ms apart, TTFT ~ U(20, 400) ms, and a
    512-character output_text (so the file carries what real records carry). 0.5 % are errors.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from loadgen.records import REQUEST_SCHEMA

    rng = np.random.default_rng(seed)
    t = 10**12
    with pq.ParquetWriter(path, REQUEST_SCHEMA) as w:
        for start in range(0, n, batch):
            k = min(batch, n - start)
            gaps = rng.exponential(1 / 12.0, k).cumsum() * 1e9
            sched = (t + gaps).astype(np.int64)
            t = int(sched[-1])
            sent = sched + rng.integers(0, 2 * MS, k)
            ttft = rng.integers(20 * MS, 400 * MS, k)
            steps = rng.integers(5 * MS, 40 * MS, (k, chunks)).astype(np.int64)
            steps[:, 0] = ttft
            chunk = (sent[:, None] + steps.cumsum(axis=1)).astype(np.int64)
            ok = rng.random(k) >= 0.005
            done = chunk[:, -1] + MS
            offsets = pa.array(np.arange(0, (k + 1) * chunks, chunks, dtype=np.int32))
            chunk_arr = pa.ListArray.from_arrays(offsets, pa.array(chunk.ravel()))
            letters = rng.integers(97, 123, k * 512, dtype=np.uint8)
            text = pa.StringArray.from_buffers(
                k, pa.py_buffer(np.arange(0, (k + 1) * 512, 512, dtype=np.int32)), pa.py_buffer(letters)
            )
            ids = np.arange(start, start + k)
            cols = {
                "schema_version": pa.array(np.ones(k, np.int16)),
                "load_point": pa.array(np.zeros(k, np.int32)),
                "request_id": pa.array(ids.astype(str)),
                "worker": pa.array(np.full(k, 4242, np.int32)),
                "phase": pa.array(np.full(k, "measure")),
                "prompt_idx": pa.array((ids % 256).astype(np.int32)),
                "endpoint": pa.array(np.full(k, "completions")),
                "max_tokens": pa.array(np.full(k, chunks, np.int32)),
                "prompt_tokens_client": pa.array(np.full(k, 256, np.int32)),
                "t_scheduled_ns": pa.array(sched),
                "t_sent_ns": pa.array(sent),
                "t_headers_ns": pa.array(sent + MS),
                "t_first_token_ns": pa.array(np.where(ok, chunk[:, 0], 0), mask=~ok),
                "t_last_token_ns": pa.array(np.where(ok, chunk[:, -1], 0), mask=~ok),
                "t_done_ns": pa.array(done),
                "chunk_ns": chunk_arr,
                "status": pa.array(np.where(ok, "ok", "error")),
                "http_status": pa.array(np.where(ok, 200, 500).astype(np.int32)),
                "error": pa.array(np.where(ok, None, "HTTP 500")),
                "finish_reason": pa.array(np.where(ok, "length", None)),
                "response_id": pa.array(np.char.add("cmpl-", ids.astype(str))),
                "prompt_tokens": pa.array(np.full(k, 256, np.int32), mask=~ok),
                "output_tokens": pa.array(np.full(k, chunks, np.int32), mask=~ok),
                "output_tokens_source": pa.array(np.where(ok, "usage", None)),
                "output_text": text,
                "output_tokens_client": pa.array(np.full(k, chunks, np.int32), mask=~ok),
                "token_drift": pa.array(np.zeros(k, bool)),
            }
            w.write_table(pa.table(cols, schema=REQUEST_SCHEMA))


class PeakRss:
    """Samples this process's RSS every 5 ms on a thread; `peak()` since the last `reset()`."""

    def __init__(self) -> None:
        import psutil

        self._p = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._p.memory_info().rss)
            time.sleep(0.005)

    def reset(self) -> None:
        self._peak = self._p.memory_info().rss

    def peak(self) -> int:
        self._peak = max(self._peak, self._p.memory_info().rss)
        return self._peak

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--baseline", action="store_true", help="measure only the pre-issue-9 read + summary path")
    ap.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)  # the child process
    a = ap.parse_args(argv)
    if a.write_only:
        write_synthetic(a.write_only, a.requests, a.chunks)
        return 0

    import resource

    with tempfile.TemporaryDirectory(prefix="servelab-scale-") as tmp:
        path = Path(tmp) / "requests.parquet"
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--write-only", str(path), "--requests", str(a.requests), "--chunks", str(a.chunks)],
            check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        print(f"{'write (child)':<12} {time.perf_counter() - t0:8.2f} s   file {path.stat().st_size / 2**20:,.0f} MiB "
              f"({a.requests:,} requests x {a.chunks} chunks)")  # fmt: skip
        stages = baseline_stages(path) if a.baseline else pipeline_stages(path)
        rss = PeakRss()
        total = 0.0
        state: dict = {}
        # cpu s = this process's CPU time (user + system, all threads): on a shared machine the wall
        # seconds include waiting for a core, the CPU seconds do not
        print(f"{'stage':<12} {'seconds':>8} {'cpu s':>7}   {'peak RSS GiB':>12}")
        total_cpu = 0.0
        for name, fn in stages:
            gc.collect()
            rss.reset()
            t, c = time.perf_counter(), time.process_time()
            note = fn(state)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            total += dt
            total_cpu += dc
            print(f"{name:<12} {dt:8.2f} {dc:7.2f}   {rss.peak() / 2**30:12.2f}   {note or ''}")
        rss.stop()
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        ok = total <= 15 and peak_gib <= 3
        print(f"{'total':<12} {total:8.2f} {total_cpu:7.2f}   {peak_gib:12.2f}   (process peak; target <= 15 s and <= 3 GiB: "
              f"{'met' if ok else 'NOT met'}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")  # fmt: skip
    return 0


def baseline_stages(path: Path):
    """The path before issue 9: the whole file into pandas, then analysis.metrics.summarize_point."""

    def read(st):
        import pyarrow.parquet as pq

        from experiments.artifacts import nullable_dtype as _nullable

        st["df"] = pq.read_table(path).to_pandas(types_mapper=_nullable)
        return f"{len(st['df']):,} rows"

    def summary(st):
        from analysis.metrics import summarize_point

        st["summary"] = summarize_point(st["df"], kind="poisson", value=12.0, warmup_s=0.0, duration_s=_span_s(st["df"]))
        return f"ITL p99 {st['summary']['itl_ms']['p99']:.1f} ms"

    return [("read", read), ("summary", summary)]


def _span_s(df) -> float:
    return float((df["t_scheduled_ns"].max() - df["t_scheduled_ns"].min()) / 1e9)


def pipeline_stages(path: Path):
    """The decision layer's path: analysis.results reads, analysis.metrics derives and summarises,
    then the per-point evaluation and the across-runs decision."""
    from analysis import results

    def read(st):
        st["df"] = results.read_requests(path, results.SUMMARY_COLUMNS)
        return f"{len(st['df']):,} rows, columns {len(st['df'].columns)}"

    def metrics(st):
        from analysis.metrics import derive

        st["df"] = derive(st["df"])
        return None

    def summary(st):
        from analysis.metrics import summarize_point

        st["summary"] = summarize_point(st["df"], kind="poisson", value=12.0, warmup_s=0.0, duration_s=_span_s(st["df"]))
        return f"ITL p99 {st['summary']['itl_ms']['p99']:.1f} ms"

    def bootstrap(st):
        # SLO evaluation, cost, verdict and every seeded bootstrap (goodput, $/1M, TTFT/TPOT/E2E
        # p50/p90/p99) of the point, as analysis.results does for each point of a results folder
        from types import SimpleNamespace

        from analysis import cost
        from analysis.schema import PricingConfig, SloConfig

        slo = SloConfig(name="interactive", ttft_ms=500.0, tpot_ms=50.0, percentile=99.0)
        pricing = PricingConfig(name="bench", usd_per_hour=8.6)
        gpu = SimpleNamespace(name="h100_sxm_80g", count=1, tdp_w=700.0)
        ident = {"variant_id": "bench", "variant_label": "vllm/none", "run_id": "bench", "point_id": "0@12",
                 "repetition": 0, "load_value": 12.0, "load_unit": "req/s", "time_to_ready_s": 60.0}  # fmt: skip
        row, det = results.point_row(st["df"], st["summary"], slo=slo, price=cost.price_for(pricing, gpu), gpu=gpu,
                                     ident=ident, engine="vllm")  # fmt: skip
        st["row"], st["slo"] = row, slo
        return (f"attainment {row['attainment']:.3f}, $/1M goodput {row['usd_per_1m_goodput']:.3f} "
                f"[{row['usd_per_1m_goodput_lo']:.3f}, {row['usd_per_1m_goodput_hi']:.3f}]")  # fmt: skip

    def decision(st):
        # knee, Pareto, selection, sensitivity and a capacity plan over three variants built from
        # the point (the across-runs half; its cost is independent of the request count)
        import pandas as pd

        from analysis import capacity, knee, pareto, selection, sensitivity

        rows = []
        for j, (vid, f) in enumerate((("a", 1.0), ("b", 1.1), ("c", 0.8))):
            for x, att in ((6.0, 1.0), (12.0, st["row"]["attainment"]), (24.0, 0.5)):
                r = dict(st["row"], variant_id=vid, variant_label=f"vllm/{vid}", point_id=f"{vid}@{x:g}", load_value=x,
                         attainment=att, feasible=att >= 0.9, gpu_name=["h100", "h200", "l40s"][j])  # fmt: skip
                for c in ("usd_per_1m_goodput", "usd_per_1m_goodput_lo", "usd_per_1m_goodput_hi"):
                    r[c] = r[c] * f / x * 12
                r["usd_per_1m_goodput_boot"] = r["usd_per_1m_goodput_boot"] * f / x * 12
                r["attainment_boot"] = r["attainment_boot"] - st["row"]["attainment"] + att
                rows.append(r)
        t = pd.DataFrame(rows)
        kn = knee.knees(t, 0.9)
        pareto.pareto_frontier(t)
        sel = selection.select(t, target=0.9, knee_by_variant=kn)
        sensitivity.tornado(sel, sensitivity.price_scenarios(sel))
        k = kn[sel.chosen.variant_id]
        p = capacity.plan(variant_id=k.variant_id, variant_label=k.variant_label, knee_rps=k.conservative_load(),
                          demand=capacity.demand(None, [12.0] * 24, 3600), prices=capacity.ReplicaPrices(8.6, 3.8, 6.0, 0.0002),
                          gpus_per_replica=1, engine_start_s=60.0, provisioning_s=300.0, measured_output_tokens=128.0)  # fmt: skip
        return f"chosen {sel.chosen.variant_label}, knee {k.estimate:.2f} req/s, {p.replicas_peak} replicas"

    return [("read", read), ("metrics", metrics), ("summary", summary), ("bootstrap", bootstrap), ("decision", decision)]


if __name__ == "__main__":
    sys.exit(main())
