"""Hand-built request records for the decision-layer tests (times in ms from 0)."""

from __future__ import annotations

import pandas as pd

from loadgen.records import empty_record, to_table

MS = 1_000_000  # ns per ms


def rec(i, *, phase="measure", status="ok", sent=0, chunks=(), out=None, prompt=10, max_tokens=None, http=None):
    """One record: sent at `sent` ms, content chunks at sent + each of `chunks` ms, done 1 ms after the last."""
    ns = [(sent + c) * MS for c in chunks]
    sent_ns = None if status == "dropped" else sent * MS
    return empty_record(
        load_point=0, request_id=str(i), worker=1, phase=phase, prompt_idx=i, endpoint="completions",
        max_tokens=max_tokens or max(len(chunks), 1), prompt_tokens_client=prompt, t_scheduled_ns=sent * MS, t_sent_ns=sent_ns,
        t_first_token_ns=ns[0] if ns else None, t_last_token_ns=ns[-1] if ns else None,
        t_done_ns=(ns[-1] + MS) if ns else sent_ns, chunk_ns=ns, status=status, http_status=http,
        prompt_tokens=prompt if status == "ok" else None,
        output_tokens=(out if out is not None else len(chunks)) if status == "ok" else None,
        output_tokens_source="usage" if status == "ok" else None,
    )  # fmt: skip


def frame(records) -> pd.DataFrame:
    from experiments.runner import _nullable

    return to_table(records).to_pandas(types_mapper=_nullable)
