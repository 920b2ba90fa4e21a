"""Benchmark: per-request metrics and the point summary at scale (the metrics part of issue 9).

Writes synthetic records of N requests × C content chunks to a temporary requests.parquet (in
batches, so generating them costs little memory), then, in a fresh child process so that its
peak RSS is the pipeline's own, times:
  read      requests.parquet -> a records frame: the columns analysis.metrics.METRIC_COLUMNS names,
            row group by row group, through analysis.metrics.requests_frame (chunk lists stay Arrow)
  derive    per-request metrics (analysis.metrics.derive)
  summary   one load point's summary (analysis.metrics.summarize_point: counts, window
            throughput, TTFT/TPOT/E2E/ITL distributions; ITL pools all N × (C − 1) gaps)
and prints seconds per stage and the child's peak RSS (ru_maxrss).

Synthetic load: one open-loop point, t0 = 0, 5 s warmup, the rest measured; sends spread evenly,
TTFT 20-60 ms, chunk gaps 5-15 ms; 1 % errors, 0.5 % dropped; output_text is left null (the
metrics never read it).
Run:
  .venv/bin/python benchmarks/metrics_scale.py                    # 1e6 requests × 128 chunks
  .venv/bin/python benchmarks/metrics_scale.py --requests 100000  # smaller
  .venv/bin/python benchmarks/metrics_scale.py --plain-chunks      # chunk_ns stored plain
Side effects: writes one parquet file into a temporary folder (removed at the end); starts one
child Python process.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadgen import records  # noqa: E402

# raw fields plus the post-run annotations, as in requests.parquet (older trees: one schema)
REQUEST_SCHEMA = getattr(records, "TABLE_SCHEMA", records.REQUEST_SCHEMA)

MS = 1_000_000
WARMUP_S = 5.0


def _batch(start: int, n: int, total: int, chunks: int, duration_s: float, rng: np.random.Generator) -> pa.Table:
    idx = np.arange(start, start + n)
    span_ns = int((WARMUP_S + duration_s) * 1e9)
    sched = (idx * (span_ns / total)).astype(np.int64)  # float: idx × span_ns overflows int64 at 1e6
    sent = sched + rng.integers(0, 2 * MS, n)
    status = np.where(rng.random(n) < 0.01, "error", "ok").astype(object)
    status[rng.random(n) < 0.005] = "dropped"
    ok = status == "ok"
    lengths = np.where(ok, chunks, 0)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    gaps = rng.integers(5 * MS, 15 * MS, int(offsets[-1]))
    first = np.repeat(sent + rng.integers(20 * MS, 60 * MS, n), lengths)
    starts = np.repeat(offsets[:-1], lengths)
    gaps[starts] = 0  # the first chunk of each request sits at its TTFT
    cum = np.cumsum(gaps)
    values = first + cum - np.repeat(cum[offsets[:-1][ok]], chunks)  # gaps restart at each request
    chunk_ns = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64()))
    last = np.where(ok, values[np.maximum(offsets[1:] - 1, 0)], 0)
    firsts = np.where(ok, values[np.minimum(offsets[:-1], max(len(values) - 1, 0))], 0)
    dropped = status == "dropped"
    phase = np.where(sched < int(WARMUP_S * 1e9), "warmup", "measure")
    cols = {
        "schema_version": pa.array(np.ones(n, np.int16)),
        "load_point": pa.array(np.zeros(n, np.int32)),
        "request_id": pa.array(idx.astype(str)),
        "worker": pa.array(np.ones(n, np.int32)),
        "phase": pa.array(phase),
        "prompt_idx": pa.array((idx % 1000).astype(np.int32)),
        "endpoint": pa.array(np.full(n, "completions")),
        "max_tokens": pa.array(np.full(n, chunks, np.int32)),
        "prompt_tokens_client": pa.array(np.full(n, 256, np.int32)),
        "t_scheduled_ns": pa.array(sched),
        "t_sent_ns": pa.array(sent, mask=dropped),
        "t_headers_ns": pa.array(sent + MS, mask=dropped),
        "t_first_token_ns": pa.array(firsts, mask=~ok),
        "t_last_token_ns": pa.array(last, mask=~ok),
        "t_done_ns": pa.array(np.where(ok, last + MS, sent + 3 * MS), mask=dropped),
        "chunk_ns": chunk_ns,
        "status": pa.array(status.astype(str)),
        "http_status": pa.array(np.where(ok, 200, 500).astype(np.int32), mask=dropped),
        "prompt_tokens": pa.array(np.full(n, 256, np.int32), mask=~ok),
        "output_tokens": pa.array(np.full(n, chunks, np.int32), mask=~ok),
        "output_tokens_source": pa.array(np.where(ok, "usage", None)),
        "output_tokens_client": pa.array(np.full(n, chunks, np.int32), mask=~ok),
        "token_drift": pa.array(np.zeros(n, bool), mask=~ok),
    }
    arrays = [cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type) for f in REQUEST_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=REQUEST_SCHEMA)


def generate(path: Path, total: int, chunks: int, duration_s: float, batch: int = 50_000, plain_chunks: bool = False) -> None:
    rng = np.random.default_rng(0)
    # plain_chunks: chunk_ns without dictionary or compression (decodes ~3x faster, file ~25 % larger)
    opts = {"use_dictionary": [f for f in REQUEST_SCHEMA.names if f != "chunk_ns"],
            "compression": {f: "none" if f == "chunk_ns" else "snappy" for f in REQUEST_SCHEMA.names}} if plain_chunks else {}  # fmt: skip
    with pq.ParquetWriter(path, REQUEST_SCHEMA, **opts) as w:
        for start in range(0, total, batch):
            w.write_table(_batch(start, min(batch, total - start), total, chunks, duration_s, rng))


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(path: Path, duration_s: float) -> dict[str, float]:
    """Wall and CPU seconds per stage (CPU time does not grow when other work shares the cores;
    on an idle machine wall ≈ CPU for these mostly single-threaded stages), and peak RSS."""
    from analysis import metrics

    times: dict[str, float] = {}

    def stage(name: str, t: float, c: float) -> None:
        times[f"{name}_s"], times[f"{name}_cpu_s"] = time.perf_counter() - t, _cpu_s() - c

    t, c = time.perf_counter(), _cpu_s()
    if hasattr(metrics, "requests_frame"):  # the vectorised reader: only the columns the metrics read
        # row group by row group: the decoder's scratch memory is one row group's, not the file's
        f = pq.ParquetFile(path)
        cols = list(metrics.METRIC_COLUMNS)
        df = metrics.requests_frame(pa.concat_tables(f.read_row_group(i, columns=cols) for i in range(f.num_row_groups)))
    else:  # before: the runner's way, every column to pandas
        from experiments.artifacts import nullable_dtype as _nullable

        df = pq.read_table(path).to_pandas(types_mapper=_nullable)
    stage("read", t, c)
    times["read_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t, c = time.perf_counter(), _cpu_s()
    d = metrics.derive(df)
    stage("derive", t, c)
    t, c = time.perf_counter(), _cpu_s()
    kw = {"kind": "poisson", "value": 1.0, "warmup_s": WARMUP_S, "duration_s": duration_s}
    if "t0_ns" in inspect.signature(metrics.summarize_point).parameters:
        kw["t0_ns"] = 0
    s = metrics.summarize_point(d, **kw)
    stage("summary", t, c)
    for k in ("", "_cpu"):
        times[f"total{k}_s"] = times[f"read{k}_s"] + times[f"derive{k}_s"] + times[f"summary{k}_s"]
    times["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    times["itl_count"] = s["itl_ms"]["count"]
    times["itl_p99_ms"] = s["itl_ms"]["p99"]
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--duration-s", type=float, default=86_400.0, help="measured window of the synthetic point")
    ap.add_argument("--plain-chunks", action="store_true",
                    help="write chunk_ns without dictionary and compression (what requests.parquet could use)")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child mode: measure this file
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure, a.duration_s)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.parquet"
        t = time.perf_counter()
        generate(path, a.requests, a.chunks, a.duration_s, plain_chunks=a.plain_chunks)
        print(f"generated {a.requests:,} requests × {a.chunks} chunks in {time.perf_counter() - t:.1f} s "
              f"({path.stat().st_size / 2**20:.0f} MiB parquet)")  # fmt: skip
        out = subprocess.run([sys.executable, __file__, "--measure", str(path), "--duration-s", str(a.duration_s)],
                             capture_output=True, text=True, check=False)  # fmt: skip
        if out.returncode != 0:
            sys.exit(out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    for k, what in (("", "wall"), ("_cpu", "CPU")):
        print(f"{what:>4}: read {r[f'read{k}_s']:.2f} s · derive {r[f'derive{k}_s']:.2f} s · "
              f"summary {r[f'summary{k}_s']:.2f} s · total {r[f'total{k}_s']:.2f} s")  # fmt: skip
    print(f"peak RSS {r['peak_rss_gib']:.2f} GiB (after reading {r['read_rss_gib']:.2f}); "
          f"ITL gaps pooled: {r['itl_count']:,}, p99 {r['itl_p99_ms']:.3f} ms")  # fmt: skip

if __name__ == "__main__":
    main()
