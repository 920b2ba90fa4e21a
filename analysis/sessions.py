"""Figures of multi-turn traffic (workload.kind=sessions): per turn and per session. Pure.

Per turn (measure phase, ok requests), for the plot of TTFT against turn and context length:
  requests, ttft_ms p50/p99, prompt_tokens mean (the server's count: context length grows with the
  turn), history_tokens mean (resent), cache_hit = sum cached_tokens / sum prompt_tokens over the
  requests whose server reported cached_tokens (usage.prompt_tokens_details; null where none did).
Per session (a session counts in the point when its first request was sent in the measure phase):
  sessions, completed (every planned turn answered), ends (count per session_end reason,
  loadgen.sessions), turns mean, duration_s p50/p90 (first send to last reply), and with an SLO
  `meets` per request: slo_attainment = share of sessions whose every turn met it (a session
  meets the SLO when all its turns do; a failed turn fails it).
Formulas also in analysis.catalog (turn_ttft, session_slo_attainment).
Side effects: none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def has_sessions(df: pd.DataFrame) -> bool:
    return "session_id" in df.columns and bool(df["session_id"].notna().any())


def _p(x: pd.Series, q: float) -> float | None:
    v = pd.to_numeric(x, errors="coerce").dropna().to_numpy(dtype=float)
    return float(np.percentile(v, q)) if v.size else None


def _mean(x: pd.Series) -> float | None:
    v = pd.to_numeric(x, errors="coerce").dropna()
    return float(v.mean()) if len(v) else None


def by_turn(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per turn number (module doc), measure phase, ok requests."""
    m = df[(df["phase"] == "measure") & (df["status"] == "ok") & df["session_id"].notna()]
    out = []
    for turn, g in m.groupby(m["turn"].astype("Int64"), sort=True):
        cached = g[g["cached_tokens"].notna()] if "cached_tokens" in g.columns else g.iloc[0:0]
        hit = None
        if len(cached) and pd.to_numeric(cached["prompt_tokens"], errors="coerce").sum() > 0:
            hit = float(pd.to_numeric(cached["cached_tokens"]).sum() / pd.to_numeric(cached["prompt_tokens"]).sum())
        out.append({"turn": int(turn), "requests": len(g), "ttft_ms_p50": _p(g["ttft_ms"], 50),
                    "ttft_ms_p99": _p(g["ttft_ms"], 99), "prompt_tokens_mean": _mean(g["prompt_tokens"]),
                    "history_tokens_mean": _mean(g["history_tokens"]) if "history_tokens" in g else None,
                    "cache_hit": hit})  # fmt: skip
    return out


def by_session(df: pd.DataFrame, meets: pd.Series | None = None) -> dict[str, Any]:
    """Session-level figures (module doc); `meets`: per request (aligned with df), met the SLO."""
    s = df[df["session_id"].notna()].copy()
    if meets is not None:
        s["_meets"] = meets.reindex(s.index).fillna(False).astype(bool)
    first = s.sort_values("t_scheduled_ns").groupby("session_id", sort=False).first()
    in_window = first.index[first["phase"] == "measure"]
    s = s[s["session_id"].isin(in_window)]
    if s.empty:
        return {"sessions": 0}
    g = s.groupby("session_id", sort=False)
    ends = g["session_end"].agg(lambda x: next((v for v in x if isinstance(v, str)), None))
    n_turns = g["turn"].nunique()
    t0 = g["t_sent_ns"].min()
    t1 = g["t_done_ns"].max()
    dur = ((t1 - t0) / 1e9).astype(float)
    out: dict[str, Any] = {
        "sessions": int(len(ends)),
        "completed": int((ends == "completed").sum()),
        "ends": {str(k): int(v) for k, v in ends.value_counts(dropna=False).items() if k is not None},
        "unended": int(ends.isna().sum()),  # still running when the point's records ended
        "turns_mean": float(n_turns.mean()),
        "duration_s_p50": _p(dur, 50),
        "duration_s_p90": _p(dur, 90),
    }
    if meets is not None:
        ok_all = g.apply(lambda x: bool((x["status"] == "ok").all() and x["_meets"].all()), include_groups=False)
        out["slo_attainment"] = float(ok_all.mean())
    return out


def summary(df: pd.DataFrame, meets: pd.Series | None = None) -> dict[str, Any] | None:
    """{"by_turn": [...], **by_session} for a point with sessions, else None."""
    if not has_sessions(df):
        return None
    return {**by_session(df, meets), "by_turn": by_turn(df)}
