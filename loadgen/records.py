"""The per-request record: raw monotonic timestamps and what the server said, nothing derived.

Two schemas, kept apart on purpose:
- :data:`REQUEST_SCHEMA` is the RAW record the load generator writes while the point runs
  (timestamps, server answers, the streamed text). Nothing in it is computed from other fields.
- :data:`ANNOTATION_SCHEMA` lists the POST-RUN annotations the lab adds to each record after a
  load point (today: the model tokenizer's count of the streamed text and the drift flag that
  compares it with the server's counts, :func:`loadgen.tokenizer.annotate_client_counts`).
  They are derived, never written by the generator, and :func:`empty_record` refuses them.
:data:`TABLE_SCHEMA` (raw, then annotations) is what :func:`to_table` and requests.parquet use.

All `t_*_ns` fields are absolute `time.monotonic_ns()` values (CLOCK_MONOTONIC on Linux), the
same clock the telemetry samplers use in other processes, so records and samples join by time.
`run.json` stores one (monotonic, wall) anchor pair to convert them to wall time. A Locust
worker on another machine has its own monotonic clock: the master moves its records onto the
master's clock as they arrive (loadgen.clock; offsets and uncertainties in the point's meta).
Every metric (TTFT, TPOT, ITL, E2E, schedule lag) is derived from these fields by
:mod:`analysis.metrics` and can be recomputed from `requests.parquet` at any time.

Side effects: none (schema and conversions only; the writers live with their processes).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

RECORD_SCHEMA_VERSION = 1

# status values
OK = "ok"
ERROR = "error"  # HTTP error, bad stream, connection failure
TIMEOUT = "timeout"  # no completion within traffic.request_timeout_s
CANCELLED = "cancelled"  # in flight when the load point was stopped (drain timeout, Ctrl-C)
DROPPED = "dropped"  # open loop only: max_inflight reached at the scheduled time; never sent
STATUSES = (OK, ERROR, TIMEOUT, CANCELLED, DROPPED)

# phase values, fixed at schedule time (not guessed afterwards)
WARMUP = "warmup"
MEASURE = "measure"
COOLDOWN = "cooldown"

REQUEST_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int16()),
        pa.field("load_point", pa.int32()),  # index into traffic.points
        pa.field("request_id", pa.string()),
        pa.field("worker", pa.int32()),  # pid of the load-generator process that sent it
        pa.field("phase", pa.string()),
        pa.field("prompt_idx", pa.int32()),  # which workload item was sent
        pa.field("endpoint", pa.string()),  # completions | chat
        pa.field("max_tokens", pa.int32()),
        pa.field("prompt_tokens_client", pa.int32()),  # counted with the model's tokenizer
        pa.field("t_scheduled_ns", pa.int64()),  # intended send time (arrival schedule)
        pa.field("t_sent_ns", pa.int64()),  # just before the request was written
        pa.field("t_headers_ns", pa.int64()),  # response headers received
        pa.field("t_first_token_ns", pa.int64()),  # first chunk with non-empty generated text
        pa.field("t_last_token_ns", pa.int64()),  # last chunk with non-empty generated text
        pa.field("t_done_ns", pa.int64()),  # stream finished (or failed)
        pa.field("chunk_ns", pa.list_(pa.int64())),  # arrival of every content chunk
        pa.field("status", pa.string()),
        pa.field("http_status", pa.int32()),
        pa.field("error", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("response_id", pa.string()),  # the server's id of the completion (joins engine-side logs)
        pa.field("prompt_tokens", pa.int32()),  # from the server's usage
        pa.field("output_tokens", pa.int32()),  # from usage; else the number of content chunks
        pa.field("output_tokens_source", pa.string()),  # usage | chunks
        pa.field("output_text", pa.string()),  # the generated text, as streamed
        # the server's count of prompt tokens it served from its prefix cache
        # (usage.prompt_tokens_details.cached_tokens; null where the server does not say)
        pa.field("cached_tokens", pa.int32()),
        # workload.kind=sessions (loadgen.sessions); null for single requests
        pa.field("session_id", pa.string()),  # "<load point>-<session number>"
        pa.field("turn", pa.int32()),  # 0-based turn number in the conversation (steady state: may start > 0)
        pa.field("history_tokens", pa.int32()),  # prompt tokens resent as history (all but the new message)
        pa.field("session_end", pa.string()),  # on a session's last record: why it ended (loadgen.sessions)
    ]
)

# Post-run annotations (derived; added by the lab after the point, not by the generator).
ANNOTATION_SCHEMA = pa.schema(
    [
        pa.field("output_tokens_client", pa.int32()),  # the model tokenizer's count of output_text
        # server and client token counts disagree (prompt or output): input lengths or usage are off
        pa.field("token_drift", pa.bool_()),
    ]
)

TABLE_SCHEMA = pa.schema(list(REQUEST_SCHEMA) + list(ANNOTATION_SCHEMA))

FIELDS = tuple(REQUEST_SCHEMA.names)  # the raw record's fields
ANNOTATION_FIELDS = tuple(ANNOTATION_SCHEMA.names)
TABLE_FIELDS = tuple(TABLE_SCHEMA.names)


def empty_record(**values: Any) -> dict[str, Any]:
    """A raw record dict with every raw field present (None where unknown), then `values` applied."""
    rec: dict[str, Any] = dict.fromkeys(FIELDS)
    rec["schema_version"] = RECORD_SCHEMA_VERSION
    rec["chunk_ns"] = []
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise KeyError(f"unknown record fields: {sorted(unknown)}")
    rec.update(values)
    return rec


def to_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records (raw, optionally annotated) -> an Arrow table with TABLE_SCHEMA (missing keys become null)."""
    cols = {name: [r.get(name) for r in records] for name in TABLE_FIELDS}
    return pa.table(cols, schema=TABLE_SCHEMA)
