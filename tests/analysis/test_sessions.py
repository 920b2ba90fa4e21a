"""Per-turn and per-session figures of multi-turn traffic (analysis.sessions), on hand-made rows."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import sessions as an


def rows() -> pd.DataFrame:
    r = []
    # session a: 3 turns in the measure phase, completed; b: 2 turns, ended by the window, turn 1 slow;
    # c: started in warmup (not counted in the session figures); d: turn 1 failed
    for sid, phase, turns, end, slow, fail in (("a", "measure", 3, "completed", None, None),
                                               ("b", "measure", 2, "window_end", 1, None),
                                               ("c", "warmup", 2, "completed", None, None),
                                               ("d", "measure", 2, "failed", None, 1)):  # fmt: skip
        for k in range(turns):
            t = 1_000_000_000 * (len(r) + 1)
            r.append({"session_id": sid, "turn": k, "phase": phase, "status": "error" if fail == k else "ok",
                      "t_scheduled_ns": t, "t_sent_ns": t, "t_done_ns": t + 500_000_000,
                      "ttft_ms": 500.0 if slow == k else 20.0 + 10 * k, "prompt_tokens": 100 * (k + 1),
                      "cached_tokens": 80 * k, "history_tokens": 100 * k,
                      "session_end": end if k == turns - 1 else None})  # fmt: skip
    return pd.DataFrame(r)


def test_by_turn_reads_context_growth_and_the_cache_share():
    t = {x["turn"]: x for x in an.by_turn(rows())}
    assert sorted(t) == [0, 1, 2]
    assert t[0]["requests"] == 3 and t[1]["requests"] == 2  # measure phase, ok only (d's turn 1 failed)
    assert t[0]["prompt_tokens_mean"] == 100 and t[2]["prompt_tokens_mean"] == 300
    assert t[0]["cache_hit"] == 0 and t[2]["cache_hit"] == pytest.approx(160 / 300)
    assert t[1]["ttft_ms_p50"] == pytest.approx((30 + 500) / 2)


def test_a_session_meets_the_slo_only_when_every_turn_does():
    df = rows()
    meets = df["ttft_ms"] < 100
    s = an.by_session(df, meets)
    assert s["sessions"] == 3  # c started in warm-up
    assert s["completed"] == 1 and s["ends"] == {"completed": 1, "window_end": 1, "failed": 1}
    assert s["slo_attainment"] == pytest.approx(1 / 3)  # a only: b had a slow turn, d a failed one
    assert s["turns_mean"] == pytest.approx(7 / 3)


def test_single_request_rows_have_no_session_figures():
    df = rows().assign(session_id=None)
    assert an.summary(df) is None and not an.has_sessions(df.drop(columns=["session_id"]))
