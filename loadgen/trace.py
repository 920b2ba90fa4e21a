"""Trace input: arrival times, input/output lengths (and Mooncake's prefix blocks) from a trace file.

Formats (docs/traces.md cites each one's published schema):

- ``servelab``: JSONL or CSV (by suffix) with `timestamp` (seconds; any origin, only differences
  matter), `input_tokens` and `output_tokens` (aliases: `timestamp_s`, `timestamp_ms` in
  milliseconds, `input_length`, `output_length`). Zero or negative lengths are refused.
- ``mooncake``: JSONL rows `{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}`
  (kvcache-ai/Mooncake, FAST25-release/traces and mooncake_trace.jsonl). Block k of a prompt is the
  k-th `hash_id`'s tokens; `traffic.trace_block_tokens` tokens per block (512 in the published
  traces), the last one partial, so a row's `hash_ids` must hold its `input_length`:
  (n-1)*block < input_length <= n*block.
- ``azure``: the Azure LLM inference traces (Azure/AzurePublicDataset, AzureLLMInferenceDataset2023/
  2024): CSV `TIMESTAMP` (a date-time such as ``2023-11-16 18:15:46.6805900``), `ContextTokens`,
  `GeneratedTokens`.
- ``burstgpt``: HPMLL/BurstGPT's CSV: `Timestamp` (s), `Model`, `Request tokens`, `Response
  tokens`, `Total tokens`, `Log Type`; optionally only one Model / Log Type (filters).

``auto`` tells them apart by their columns: a JSONL whose first row has `hash_ids` is Mooncake; a
CSV with TIMESTAMP/ContextTokens/GeneratedTokens is Azure, one with Timestamp/Request tokens/
Response tokens is BurstGPT; anything else is servelab's format.

In the three public formats a row with 0 input or 0 output tokens cannot be sent as it was
recorded (BurstGPT writes failed requests with `Response tokens` = 0): it is skipped and counted
(:attr:`Trace.skipped`, a note in run.json). Every other bad value stops the read with a
:class:`TraceError` naming the file and line.

:func:`read_trace` reads and validates a file (I/O); :func:`trace_items` turns rows into workload
items with prompts of exactly the traced lengths (Mooncake rows block by block,
:mod:`loadgen.prefix_blocks`), pure given a tokenizer; :func:`prefix_reuse` measures which
leading blocks each row shares with earlier rows.

Side effects: :func:`read_trace` / :func:`load_trace` read the file; nothing else.
"""

from __future__ import annotations

import csv
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from loadgen.jsonl import JsonlError, iter_jsonl
from loadgen.workload import TokenCounter, WorkloadItem, fixed_length_prompt

TRACE_FORMATS = ("auto", "servelab", "mooncake", "azure", "burstgpt")
# Where each public format is published (docs/traces.md has the details and the check).
FORMAT_SOURCES = {
    "mooncake": "github.com/kvcache-ai/Mooncake (FAST25-release/traces, mooncake_trace.jsonl)",
    "azure": "github.com/Azure/AzurePublicDataset (AzureLLMInferenceDataset2023.md, data/AzureLLMInferenceTrace_*.csv)",
    "burstgpt": "github.com/HPMLL/BurstGPT (README.md, data/BurstGPT_*.csv)",
}
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Request tokens", "Response tokens")
MOONCAKE_BLOCK_TOKENS = 512


class TraceError(ValueError):
    """A trace file that cannot be used; the message starts with `path:line:` (or `path:`)."""


@dataclass(frozen=True)
class TraceRow:
    timestamp_s: float
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] | None = None  # mooncake: one id per block of the prompt, in order


@dataclass(frozen=True)
class Trace:
    """A trace as read: its rows in file order and what was left out, and why."""

    path: str
    format: str  # the format it was read as (never "auto")
    rows: tuple[TraceRow, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    filtered: dict[str, int] = field(default_factory=dict)  # burstgpt filter -> rows left out by it
    block_tokens: int | None = None  # mooncake

    def times(self) -> list[float]:
        return [r.timestamp_s for r in self.rows]

    def notes(self) -> list[str]:
        """One line per group of rows left out (for run.json notes)."""
        out = [f"{self.path}: {n} row(s) skipped: {why}" for why, n in self.skipped.items()]
        out += [f"{self.path}: {n} row(s) left out by {what}" for what, n in self.filtered.items()]
        return out

    def describe(self) -> dict[str, Any]:
        """What run.json records about the trace (`trace`): the file, its format, rows, span, rate."""
        ts = sorted(self.times())
        span = ts[-1] - ts[0] if ts else 0.0
        d: dict[str, Any] = {
            "path": self.path, "format": self.format, "source": FORMAT_SOURCES.get(self.format, "servelab's own format"),
            "rows": len(self.rows), "skipped": dict(self.skipped), "filtered": dict(self.filtered),
            "span_s": span, "recorded_rate_rps": (len(ts) - 1) / span if span > 0 else None,
            "block_tokens": self.block_tokens,
        }  # fmt: skip
        if self.format == "mooncake":
            d["prefix_reuse"] = reuse_summary(self.rows, self.block_tokens or 1)
        return d


# -- reading --------------------------------------------------------------------------------------


def load_trace(path: str | Path, fmt: str = "auto", **options: Any) -> list[TraceRow]:
    """The rows of a trace file (see :func:`read_trace`), in file order."""
    return list(read_trace(path, fmt, **options).rows)


def read_trace(
    path: str | Path,
    fmt: str = "auto",
    *,
    block_tokens: int = MOONCAKE_BLOCK_TOKENS,
    model: str | None = None,
    log_type: str | None = None,
) -> Trace:
    """Read a trace of format `fmt` (one of TRACE_FORMATS; auto = from its columns).

    `block_tokens`: a Mooncake trace's tokens per hash_ids block. `model` / `log_type`: BurstGPT
    filters on its `Model` / `Log Type` columns (a TraceError for another format).
    Raises TraceError naming the file (and line) and the fix.
    """
    if fmt not in TRACE_FORMATS:
        raise TraceError(f"traffic.trace_format={fmt!r} is unknown: use one of {', '.join(TRACE_FORMATS)}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise TraceError(f"{p}: trace file not found (set traffic.trace_path)")
    if block_tokens < 1:
        raise TraceError(f"traffic.trace_block_tokens must be >= 1, got {block_tokens}")
    csv_file = fmt in ("azure", "burstgpt") or (fmt in ("auto", "servelab") and p.suffix.lower() == ".csv")
    if csv_file:
        trace = _read_csv(p, fmt, model, log_type)
    else:
        trace = _read_jsonl(p, fmt, block_tokens)
    if trace.format != "burstgpt" and (given := [n for n, v in (("trace_model", model), ("trace_log_type", log_type)) if v]):
        raise TraceError(
            f"{p}: traffic.{' and traffic.'.join(given)} only apply to BurstGPT traces, and this file is read as "
            f"{trace.format}; set them to null (or traffic.trace_format=burstgpt for a BurstGPT file)"
        )
    if not trace.rows:
        why = "; ".join(trace.notes()) or "it is empty"
        raise TraceError(f"{p}: the trace has no rows" + ("" if why == "it is empty" else f" to send ({why})"))
    return trace


def _read_jsonl(p: Path, fmt: str, block_tokens: int) -> Trace:
    rows: list[TraceRow] = []
    skipped: dict[str, int] = {}
    kind = None if fmt == "auto" else fmt
    try:
        for i, d in iter_jsonl(p):
            where = f"{p}:{i}"
            if kind is None:
                kind = "mooncake" if "hash_ids" in d else "servelab"
            if kind == "mooncake":
                row = _mooncake_row(d, where, block_tokens)
                if isinstance(row, str):
                    skipped[row] = skipped.get(row, 0) + 1
                    continue
                rows.append(row)
            else:
                rows.append(_servelab_row(d, where))
    except JsonlError as e:
        raise TraceError(str(e)) from None
    kind = kind or (fmt if fmt != "auto" else "servelab")
    return Trace(str(p), kind, tuple(rows), skipped, block_tokens=block_tokens if kind == "mooncake" else None)


def _read_csv(p: Path, fmt: str, model: str | None, log_type: str | None) -> Trace:
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        kind = fmt
        if fmt == "auto":
            kind = "azure" if set(AZURE_COLUMNS) <= set(header) else "burstgpt" if set(BURSTGPT_COLUMNS) <= set(header) else "servelab"
        need = {"azure": AZURE_COLUMNS, "burstgpt": BURSTGPT_COLUMNS}.get(kind, ())
        if missing := [c for c in need if c not in header]:
            label = {"azure": "an Azure LLM inference", "burstgpt": "a BurstGPT"}[kind]
            raise TraceError(
                f"{p}:1: not {label} trace: no column {', '.join(missing)} (its header: {', '.join(header) or 'none'}); "
                "set traffic.trace_format to the file's format, or auto"
            )
        reader.fieldnames = header  # stripped: " ContextTokens" in a hand-written header still matches
        rows: list[TraceRow] = []
        skipped: dict[str, int] = {}
        filtered: dict[str, int] = {}
        seen: dict[str, set[str]] = {"Model": set(), "Log Type": set()}
        # line_num counts physical lines (blank ones too), so errors point at the line
        for d in reader:
            where = f"{p}:{reader.line_num}"
            if kind == "servelab":
                rows.append(_servelab_row(d, where))
                continue
            if kind == "burstgpt":
                left_out = False
                for col, want, name in (("Model", model, "trace_model"), ("Log Type", log_type, "trace_log_type")):
                    value = (d.get(col) or "").strip()
                    seen[col].add(value)
                    if want is not None and value != want:
                        key = f"traffic.{name}={want}"
                        filtered[key] = filtered.get(key, 0) + 1
                        left_out = True
                if left_out:
                    continue
                row = _length_row(d, where, "Timestamp", _seconds, "Request tokens", "Response tokens", "BurstGPT")
            else:
                row = _length_row(d, where, "TIMESTAMP", _datetime_s, "ContextTokens", "GeneratedTokens", "Azure")
            if isinstance(row, str):
                skipped[row] = skipped.get(row, 0) + 1
            else:
                rows.append(row)
    if kind == "burstgpt" and not rows and filtered:
        for col, want, name in (("Model", model, "trace_model"), ("Log Type", log_type, "trace_log_type")):
            if want is not None and want not in seen[col]:
                raise TraceError(f"{p}: no row has {col}={want!r} (the file has: {', '.join(sorted(seen[col]))}); "
                                 f"set traffic.{name} to one of them, or null")  # fmt: skip
    return Trace(str(p), kind, tuple(rows), skipped, filtered)


# -- rows -----------------------------------------------------------------------------------------

_TIME_KEYS = (("timestamp", 1.0), ("timestamp_s", 1.0), ("timestamp_ms", 1e-3))
_IN_KEYS = ("input_tokens", "input_length")
_OUT_KEYS = ("output_tokens", "output_length")


def _number(v: Any, key: str, where: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise TraceError(f"{where}: {key}={v!r} is not a number") from None
    if not math.isfinite(x):  # NaN/inf would break the schedule's ordering
        raise TraceError(f"{where}: {key}={v!r} is not a finite number")
    return x


def _whole(v: Any, key: str, where: str, lo: int) -> int:
    """A token count: a whole number >= lo (a fraction of a token is an error in the trace, not something to round)."""
    if isinstance(v, bool):
        raise TraceError(f"{where}: {key}={v!r} is not a whole number")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TraceError(f"{where}: {key}={v!r} is not a whole number") from None
    if not f.is_integer():
        raise TraceError(f"{where}: {key}={v!r} is not a whole number")
    n = int(f)
    if n < lo:
        raise TraceError(f"{where}: {key}={n} must be >= {lo}")
    return n


def _servelab_row(d: dict[str, Any], where: str) -> TraceRow:
    ts = None
    for k, scale in _TIME_KEYS:
        if d.get(k) not in (None, ""):
            ts = _number(d[k], k, where) * scale
            break
    if ts is None:
        raise TraceError(f"{where}: missing timestamp (one of {', '.join(k for k, _ in _TIME_KEYS)})")

    def length(keys: tuple[str, ...]) -> int:
        for k in keys:
            if d.get(k) not in (None, ""):
                return _whole(d[k], k, where, 1)
        raise TraceError(f"{where}: missing {' or '.join(keys)}")

    return TraceRow(ts, length(_IN_KEYS), length(_OUT_KEYS))


def _zero_rule(n_in: int, n_out: int, in_key: str, out_key: str) -> str | None:
    """The public formats' rule: a row that asked for or produced nothing is skipped (and counted)."""
    if n_out == 0:
        return f"{out_key} = 0 (nothing was generated: a failed request, or none to ask for)"
    if n_in == 0:
        return f"{in_key} = 0 (no prompt to send)"
    return None


def _mooncake_row(d: dict[str, Any], where: str, block: int) -> TraceRow | str:
    for k in ("timestamp", "input_length", "output_length", "hash_ids"):
        if d.get(k) is None:
            raise TraceError(f"{where}: missing {k} (a Mooncake row has timestamp [ms], input_length, output_length, hash_ids)")
    ts = _number(d["timestamp"], "timestamp", where) / 1000.0
    n_in = _whole(d["input_length"], "input_length", where, 0)
    n_out = _whole(d["output_length"], "output_length", where, 0)
    ids = d["hash_ids"]
    if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
        raise TraceError(f"{where}: hash_ids={ids!r} must be a list of integers (one per block of the prompt)")
    if (why := _zero_rule(n_in, n_out, "input_length", "output_length")) is not None:
        return why
    n = len(ids)
    if not (n - 1) * block < n_in <= n * block:
        raise TraceError(
            f"{where}: hash_ids has {n} block(s), which hold {(n - 1) * block + 1 if n else 0}..{n * block} tokens "
            f"at traffic.trace_block_tokens={block}, but input_length={n_in}; fix the row's hash_ids, or set "
            "traffic.trace_block_tokens to the block size the trace was made with"
        )
    return TraceRow(ts, n_in, n_out, tuple(ids))


def _length_row(d: dict[str, Any], where: str, t_key: str, t_parse: Any, in_key: str, out_key: str,
                label: str) -> TraceRow | str:  # fmt: skip
    for k in (t_key, in_key, out_key):
        if (d.get(k) or "").strip() == "":
            raise TraceError(f"{where}: missing {k} (a {label} row has {t_key}, {in_key}, {out_key})")
    ts = t_parse(d[t_key].strip(), t_key, where)
    n_in = _whole(d[in_key].strip(), in_key, where, 0)
    n_out = _whole(d[out_key].strip(), out_key, where, 0)
    if (why := _zero_rule(n_in, n_out, in_key, out_key)) is not None:
        return why
    return TraceRow(ts, n_in, n_out)


def _seconds(v: str, key: str, where: str) -> float:
    return _number(v, key, where)


# 2023-11-16 18:15:46.6805900 (Azure writes 7 fractional digits, more than datetime parses), an
# optional T, and an optional UTC offset (Z, +00:00, +0000).
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}:?\d{2})?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _datetime_s(v: str, key: str, where: str) -> float:
    """Seconds since 1970 (UTC when no offset is given) of an ISO-like date-time, fraction to 1 ns."""
    m = _DATETIME.fullmatch(v)
    if m is None:
        raise TraceError(f"{where}: {key}={v!r} is not a date-time like 2023-11-16 18:15:46.6805900")
    y, mo, dd, hh, mi, ss, frac, tz = m.groups()
    try:
        tzinfo = UTC
        if tz and tz != "Z":
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            tzinfo = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        t = datetime(int(y), int(mo), int(dd), int(hh), int(mi), int(ss), tzinfo=tzinfo)
    except ValueError as e:
        raise TraceError(f"{where}: {key}={v!r} is not a valid date-time ({e})") from None
    whole = (t - _EPOCH) // timedelta(seconds=1)
    return whole + (int(frac) / 10 ** len(frac) if frac else 0.0)


# -- prefix reuse -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrefixReuse:
    """Per row, in the given order: how many leading blocks it shares with an earlier row
    (`shared_blocks`), how many of its tokens that is (`shared_tokens`), and how many rows back the
    most recent such row is (`distance`, 0 = none)."""

    block_tokens: int
    shared_blocks: tuple[int, ...]
    shared_tokens: tuple[int, ...]
    distance: tuple[int, ...]
    blocks: tuple[int, ...]
    input_tokens: tuple[int, ...]

    def select(self, rows: Sequence[int]) -> PrefixReuse:
        """The same figures for the rows `rows` only (indices into this one)."""
        cols = (self.shared_blocks, self.shared_tokens, self.distance, self.blocks, self.input_tokens)
        return PrefixReuse(self.block_tokens, *(tuple(c[i] for i in rows) for c in cols))

    def summary(self) -> dict[str, Any]:
        """The figures run.json records (docs/traces.md): reuse probability, shared blocks, the ideal hit rate."""
        n = len(self.shared_blocks)
        if not n:
            return {"rows": 0}
        reusing = [s for s in self.shared_blocks if s > 0]
        dist = sorted(d for d in self.distance if d > 0)
        return {
            "rows": n,
            "block_tokens": self.block_tokens,
            "reuse_probability": len(reusing) / n,  # P(a row shares >= 1 leading block with an earlier row)
            "mean_shared_blocks": sum(self.shared_blocks) / n,
            "mean_shared_blocks_when_reused": sum(reusing) / len(reusing) if reusing else 0.0,
            "mean_blocks": sum(self.blocks) / n,
            "shared_fraction_mean": sum(s / b for s, b in zip(self.shared_blocks, self.blocks, strict=True) if b) / n,
            # prompt tokens an infinite cache would hold from earlier rows / all prompt tokens
            "ideal_hit_rate": sum(self.shared_tokens) / max(sum(self.input_tokens), 1),
            "distance_p50": nearest_rank(dist, 0.5),
            "distance_p90": nearest_rank(dist, 0.9),
        }


def nearest_rank(xs: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted `xs` (None when empty)."""
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def prefix_reuse(hash_ids: Iterable[Sequence[int]], input_tokens: Sequence[int], block_tokens: int) -> PrefixReuse:
    """For each row (in the given order): its leading blocks found as a prefix of an earlier row.

    A prefix tree of the rows seen so far; each node keeps the last row through it and the most
    tokens any row had in that block (a row's last block may be partial). Row i's `shared_blocks`
    is how deep its hash_ids walk the tree; its `shared_tokens` are the full blocks before the
    deepest one plus the tokens of that block both it and an earlier row hold (prompts built by
    loadgen.prefix_blocks share exactly those); `distance` is i minus the last earlier row through
    the deepest node (the most recent row it shares those blocks with).
    """
    root: list[Any] = [{}, -1, 0]  # [children: id -> node, last row through it, most tokens in its block]
    shared, tokens, distance, blocks = [], [], [], []
    lengths = [int(n) for n in input_tokens]
    for i, ids in enumerate(hash_ids):
        n, length = len(ids), lengths[i]

        def fill(k: int, n: int = n, length: int = length) -> int:  # tokens of block k in this row
            return block_tokens if k < n - 1 else length - (n - 1) * block_tokens

        node, depth = root, 0
        for h in ids:
            child = node[0].get(h)
            if child is None:
                break
            node, depth = child, depth + 1
        shared.append(depth)
        tokens.append((depth - 1) * block_tokens + min(fill(depth - 1), node[2]) if depth else 0)
        distance.append(i - node[1] if depth else 0)
        blocks.append(n)
        node = root
        for k, h in enumerate(ids):
            node = node[0].setdefault(h, [{}, i, 0])
            node[1], node[2] = i, max(node[2], fill(k))
    return PrefixReuse(block_tokens, tuple(shared), tuple(tokens), tuple(distance), tuple(blocks), tuple(lengths))


def reuse_summary(rows: Sequence[TraceRow], block_tokens: int) -> dict[str, Any]:
    """PrefixReuse.summary() of Mooncake rows, counted in arrival order (as the engine sees them)."""
    rows = sorted(rows, key=lambda r: r.timestamp_s)
    return prefix_reuse([r.hash_ids or () for r in rows], [r.input_tokens for r in rows], block_tokens).summary()


# -- items ------------------------------------------------------------------------------------------


def window_rows(trace: Trace, min_speedup: float, window_s: float) -> tuple[list[TraceRow], int]:
    """The rows any load point can send, and how many rows the file has beyond them: a row is sent
    when (t - t0) / speed-up < window (loadgen.arrivals.trace_schedule), so at the smallest speed-up
    the rows after that are never sent and need no prompt. File order is kept."""
    ts = trace.times()
    t0 = min(ts)
    keep = [r for r in trace.rows if (r.timestamp_s - t0) / min_speedup < window_s]
    return keep, len(trace.rows) - len(keep)


def trace_items(tok: TokenCounter, rows: Sequence[TraceRow], seed: int, block_tokens: int | None = None) -> list[WorkloadItem]:
    """One workload item per row: a prompt of exactly `input_tokens` tokens asking for `output_tokens`.

    Rows with hash_ids (Mooncake) are built block by block with `block_tokens` per block, so rows
    that share leading hash_ids share exactly those leading token ids; other rows get random
    vocabulary (loadgen.workload.fixed_length_prompt).
    """
    if rows and all(r.hash_ids is not None for r in rows):
        from loadgen.prefix_blocks import BlockPrompts

        bp = BlockPrompts(tok, block_tokens or MOONCAKE_BLOCK_TOKENS, seed)
        return [bp.item(i, r.hash_ids or (), r.input_tokens, r.output_tokens) for i, r in enumerate(rows)]
    rng = random.Random(seed)
    items = []
    for i, r in enumerate(rows):
        text, count = fixed_length_prompt(tok, r.input_tokens, rng)
        items.append(WorkloadItem(prompt_idx=i, prompt=text, prompt_tokens_client=count, max_tokens=r.output_tokens))
    return items
