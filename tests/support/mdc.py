"""Request records of the timing server's queue model, simulated: for the decision-layer tests
that need a known capacity without the wall-clock cost of measuring one.

The model is the timing server's `--max-streams C` (tests/support/timing_server.py): Poisson
arrivals, C streams served FIFO, each request holding its stream for S = ttft + (tokens - 1) * itl
and streaming a chunk at ttft, then one every itl. The records go through the lab's own record
schema (loadgen.records) and metrics (analysis.metrics), so the analysis sees what a run writes.
Side effects: none.
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd

from analysis.metrics import derive, summarize_point
from loadgen.records import empty_record, to_table

MS = 1_000_000


def simulate(rate: float, *, streams: int = 4, ttft_ms: float = 20.0, itl_ms: float = 5.0, tokens: int = 16,
             warmup_s: float = 2.0, duration_s: float = 30.0, seed: int = 0) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """(records with derived metrics, the point summary run.json would hold) of one load point."""
    g = np.random.default_rng(seed)
    end_ms = (warmup_s + duration_s) * 1000.0
    t = np.cumsum(g.exponential(1000.0 / rate, size=int(rate * (warmup_s + duration_s) * 1.5) + 20))
    t = t[t < end_ms]
    s_ms = ttft_ms + (tokens - 1) * itl_ms
    free = [0.0] * streams
    heapq.heapify(free)
    recs = []
    base = 10**12
    for i, a in enumerate(t):
        start = max(a, heapq.heappop(free))
        heapq.heappush(free, start + s_ms)
        chunks = [int(base + (start + ttft_ms + j * itl_ms) * MS) for j in range(tokens)]
        sent = int(base + a * MS)
        recs.append(empty_record(
            load_point=0, request_id=str(i), worker=1, phase="warmup" if a < warmup_s * 1000 else "measure",
            prompt_idx=i, endpoint="completions", max_tokens=tokens, prompt_tokens_client=8, t_scheduled_ns=sent,
            t_sent_ns=sent, t_first_token_ns=chunks[0], t_last_token_ns=chunks[-1], t_done_ns=chunks[-1] + MS,
            chunk_ns=chunks, status="ok", http_status=200, prompt_tokens=8, output_tokens=tokens,
            output_tokens_source="usage"))  # fmt: skip
    from experiments.artifacts import nullable_dtype

    df = derive(to_table(recs).to_pandas(types_mapper=nullable_dtype))
    s = summarize_point(df, kind="poisson", value=rate, warmup_s=warmup_s, duration_s=duration_s, t0_ns=base,
                        t_end_ns=int(base + end_ms * MS))  # fmt: skip
    return df, s
