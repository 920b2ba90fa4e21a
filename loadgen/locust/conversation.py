"""The conversation a Locust user holds (workload.kind=sessions; the plan and rendering are
loadgen.sessions): :class:`SessionUserMixin` gives loadgen.locust.common.StreamingUser its
`run_session`, kept here so the request loop's module holds one concern.

Side effects: HTTP to the engine (through the user's `stream`); records added to the sink.
"""

from __future__ import annotations

import json
import os
from typing import Any

import gevent
from gevent import GreenletExit

from loadgen import clock
from loadgen.arrivals import phase_of
from loadgen.openai_api import ENDPOINT_PATHS
from loadgen.records import OK, empty_record
from loadgen.sessions import (
    COMPLETED,
    CONTEXT_LIMIT,
    FAILED,
    STOPPED,
    WINDOW_END,
    ContextEstimate,
    SessionPlan,
    turn_body,
)
from loadgen.sse_client import build_request

now = clock.now  # bound at import, like loadgen.locust.common's (a test-only clock offset precedes it)


class SessionUserMixin:
    """`run_session` for a user that has `gen` (the process's LoadGen) and `stream(rec, raw, keep)`."""

    gen: Any  # the user class also provides stream(rec, raw, keep) -> rec (StreamingUser)

    def _first_count(self, plan: SessionPlan) -> int | None:
        """The client's token count of a session's first request where it is exact: on completions
        the lab counted the very text (the session's item); on chat the messages' tokens, which
        the template offsets by a constant only when no synthetic history varies the message count.
        Later turns carry the engine's replies, which the generator does not tokenize: null."""
        spec = self.gen.spec
        if spec.endpoint == "completions":
            return spec.items[plan.session_idx].prompt_tokens_client
        return None if plan.history else plan.system_tokens + plan.turns[0].user_tokens

    def run_session(self, plan: SessionPlan, t_sched_ns: int, session_id: str) -> None:
        """One conversation (loadgen.sessions): each turn sends the history with the actual replies
        so far, then thinks. A turn's record is added once the session knows whether it goes on, so
        the last one carries `session_end`; the turn's intended send time (t_scheduled_ns) is the
        session's arrival for its first turn and reply-done + think for the others (the generator's
        lateness against it is its schedule lag, as for any request)."""
        g = self.gen
        spec = g.spec
        est = ContextEstimate(plan)
        replies: list[str] = []
        pending: dict[str, Any] | None = None
        end = COMPLETED
        t_next = t_sched_ns
        try:
            for j, turn in enumerate(plan.turns):
                if j:
                    delay = (t_next - now()) / 1e9
                    if delay > 0:
                        gevent.sleep(delay)
                if g.stopping:
                    end = STOPPED
                    break
                if now() >= g.end_ns:
                    end = WINDOW_END
                    break
                if spec.max_model_len and est.next_prompt(j) + turn.max_tokens > spec.max_model_len:
                    end = CONTEXT_LIMIT
                    break
                if pending is not None:
                    g.add(pending)
                    pending = None
                body = turn_body(plan, replies, j, endpoint=spec.endpoint, model=spec.model,
                                 temperature=spec.temperature)  # fmt: skip
                raw = build_request(spec.base_url, ENDPOINT_PATHS[spec.endpoint], json.dumps(body).encode(),
                                    g.headers)  # fmt: skip
                k = plan.first_turn + j
                phase = phase_of((t_next - g.t0_ns) / 1e9, spec.warmup_s, spec.duration_s)
                base = dict(load_point=spec.load_point, worker=os.getpid(), phase=phase, prompt_idx=plan.session_idx,
                            endpoint=spec.endpoint, max_tokens=turn.max_tokens, t_scheduled_ns=t_next,
                            session_id=session_id, turn=k,
                            prompt_tokens_client=self._first_count(plan) if j == 0 else None)  # fmt: skip
                recs = [empty_record(request_id=f"{session_id}-t{k}" + (f"-f{b}" if plan.fan_out > 1 else ""), **base)
                        for b in range(plan.fan_out)]  # fmt: skip
                pending = recs[0]  # filled in place, so a cancel mid-stream still records it
                if plan.fan_out == 1:
                    rec = self.stream(recs[0], raw, keep=True)
                else:  # parallel branches sharing the context; the first answered one is kept
                    branches = [gevent.spawn(self.stream, r, raw, True) for r in recs]
                    try:
                        gevent.joinall(branches)
                    finally:  # stopped mid-step: the branches are cancelled and recorded too
                        gevent.killall(branches, block=True, timeout=5)
                        done = sorted(recs, key=lambda r: (r["status"] != OK, r["t_done_ns"] or 0))
                        rec = pending = done[0]
                        for r in done[1:]:
                            r["history_tokens"] = est.history_tokens(j, r["prompt_tokens"])
                            g.add(r)
                rec["history_tokens"] = est.history_tokens(j, rec["prompt_tokens"])
                if rec["status"] != OK:
                    end = FAILED
                    break
                est.answered(j, rec["prompt_tokens"], rec["output_tokens"])
                replies.append(rec["output_text"] or "")
                t_next = now() + int(turn.think_s * 1e9)
        except GreenletExit:
            end = STOPPED
            raise
        finally:
            if pending is not None:
                pending["session_end"] = end
                g.add(pending)
