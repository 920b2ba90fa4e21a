"""Trace replay input: arrival times and input/output lengths from a JSONL or CSV file.

Each row needs `timestamp` (seconds; any origin, only differences matter), `input_tokens` and
`output_tokens` (aliases: `timestamp_ms` in milliseconds, `input_length`, `output_length`).
:func:`load_trace` reads and validates the file (I/O); :func:`trace_items` turns rows into
workload items with prompts of exactly the traced lengths (pure given a tokenizer).

Side effects: :func:`load_trace` reads the file; nothing else.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.jsonl import JsonlError, iter_jsonl
from loadgen.workload import TokenCounter, WorkloadItem, fixed_length_prompt


class TraceError(ValueError):
    """A trace file that cannot be used; the message starts with `path:line:`."""


@dataclass(frozen=True)
class TraceRow:
    timestamp_s: float
    input_tokens: int
    output_tokens: int


_TIME_KEYS = (("timestamp", 1.0), ("timestamp_s", 1.0), ("timestamp_ms", 1e-3))
_IN_KEYS = ("input_tokens", "input_length")
_OUT_KEYS = ("output_tokens", "output_length")


def _row(d: dict[str, Any], where: str) -> TraceRow:
    ts = None
    for k, scale in _TIME_KEYS:
        if d.get(k) not in (None, ""):
            try:
                ts = float(d[k]) * scale
            except (TypeError, ValueError):
                raise TraceError(f"{where}: {k}={d[k]!r} is not a number") from None
            if not math.isfinite(ts):  # NaN/inf would break the schedule's ordering
                raise TraceError(f"{where}: {k}={d[k]!r} is not a finite number")
            break
    if ts is None:
        raise TraceError(f"{where}: missing timestamp (one of {', '.join(k for k, _ in _TIME_KEYS)})")

    def length(keys: tuple[str, ...]) -> int:
        for k in keys:
            if d.get(k) not in (None, ""):
                try:
                    f = float(d[k])
                except (TypeError, ValueError):
                    raise TraceError(f"{where}: {k}={d[k]!r} is not a whole number") from None
                if not f.is_integer():  # a fraction of a token is an error in the trace, not something to round
                    raise TraceError(f"{where}: {k}={d[k]!r} is not a whole number")
                v = int(f)
                if v < 1:
                    raise TraceError(f"{where}: {k}={v} must be >= 1")
                return v
        raise TraceError(f"{where}: missing {' or '.join(keys)}")

    return TraceRow(ts, length(_IN_KEYS), length(_OUT_KEYS))


def load_trace(path: str | Path) -> list[TraceRow]:
    """Rows of a .jsonl or .csv trace, in file order. Raises TraceError naming file and line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TraceError(f"{p}: trace file not found (set traffic.trace_path)")
    rows: list[TraceRow] = []
    if p.suffix.lower() == ".csv":
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            for d in reader:  # line_num counts physical lines (blank ones too), so errors point at the line
                rows.append(_row(d, f"{p}:{reader.line_num}"))
    else:
        try:
            for i, d in iter_jsonl(p):
                rows.append(_row(d, f"{p}:{i}"))
        except JsonlError as e:
            raise TraceError(str(e)) from None
    if not rows:
        raise TraceError(f"{p}: the trace has no rows")
    return rows


def trace_items(tok: TokenCounter, rows: list[TraceRow], seed: int) -> list[WorkloadItem]:
    """One workload item per row: a prompt of exactly `input_tokens` tokens asking for `output_tokens`."""
    rng = random.Random(seed)
    items = []
    for i, r in enumerate(rows):
        text, count = fixed_length_prompt(tok, r.input_tokens, rng)
        items.append(WorkloadItem(prompt_idx=i, prompt=text, prompt_tokens_client=count, max_tokens=r.output_tokens))
    return items
