"""Multi-turn sessions and agent loops (workload.kind=sessions): each session's plan, and how one
turn's request is built from the history.

A session is a sequence of turns. Turn k sends the whole history - the system prompt (if any),
any synthetic earlier history, every earlier user message and the engine's ACTUAL earlier replies
- plus a new user message, asks for a reply, and after the reply waits a think time before turn
k + 1. On the chat endpoint the history is a list of messages (system, user, assistant, ...); on
completions the same texts are joined with a blank line, so the engine's prefix cache sees what
it would see in production: each turn's prompt starts with the previous turn's prompt and reply.

Agent loops (session_shape=agent): the first turn is the task; every later step appends a tool
result of `tool_result_tokens` tokens (sent as a user message starting "Tool result:", because
chat templates reject a `tool` message that answers no tool call) and asks for a short reply;
`fan_out` F > 1 sends F requests at each step sharing the context (parallel tool-use branches),
and the first reply to complete is the one the session keeps.

Plan (lab side, pure, seeded by workload.seed): :func:`build_sessions` draws per session its turns'
user-message lengths (prompt_*), reply lengths (output_*), think times (think_s, think_dist) and,
with steady_state, a start turn uniform in 0..turns-1 with that many synthetic (user, assistant)
pairs already in context: a window then sees every turn depth in proportion, not mostly first
turns (a session started at turn k has the context length of turn k from its first request).
The texts are random vocabulary of exactly the planned token counts (loadgen.workload).

Runtime (generator side, loadgen.locust.common): :func:`turn_body` renders turn k's body from the
plan and the replies so far; :class:`ContextEstimate` tells, before a turn is sent, whether its
prompt plus max_tokens would pass the engine's context limit (then the session ends and says
so: `session_end` = "context_limit"). No tokenizer runs in the generator: the estimate adds the
planned message tokens and the server's own reply counts to the previous turn's server-counted
prompt, plus the per-message template overhead the first turn showed.

Side effects: none.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

SESSION_SHAPES = ("chat", "agent")
THINK_DISTS = ("fixed", "exponential")
SEP = "\n\n"  # between the texts of a completions-endpoint history
TOOL_PREFIX = "Tool result:\n"
# session_end values (the last record of a session carries one)
COMPLETED = "completed"  # every planned turn was sent and answered
CONTEXT_LIMIT = "context_limit"  # the next turn would pass engine.max_model_len
WINDOW_END = "window_end"  # the load point's window ended before the next turn
FAILED = "failed"  # a turn did not complete (error, timeout): the history cannot go on
STOPPED = "stopped"  # the point was stopped (drain timeout, Ctrl-C) mid-session
SESSION_ENDS = (COMPLETED, CONTEXT_LIMIT, WINDOW_END, FAILED, STOPPED)


@dataclass(frozen=True)
class TurnPlan:
    user: str  # the new message of this turn (agent steps after the first: a tool result)
    user_tokens: int  # its token count (no special tokens)
    max_tokens: int
    think_s: float  # pause after this turn's reply before the next turn is sent
    extras: Mapping[str, Any] = field(default_factory=dict)  # engine-specific body fields (set by loadgen.spec)


@dataclass(frozen=True)
class SessionPlan:
    session_idx: int
    system: str  # "" = no system prompt
    system_tokens: int
    history: tuple[tuple[str, str], ...]  # synthetic earlier (user, assistant) pairs (steady state)
    history_tokens: int  # their tokens
    turns: tuple[TurnPlan, ...]  # the turns this session sends, from turn number `first_turn`
    first_turn: int
    fan_out: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = [list(p) for p in self.history]
        d["turns"] = [asdict(t) | {"extras": dict(t.extras)} for t in self.turns]
        return d

    def with_extras(self, extras_for: Any) -> SessionPlan:
        """The plan with each turn's engine-specific fields, `extras_for(max_tokens)`."""
        return replace(self, turns=tuple(replace(t, extras=dict(extras_for(t.max_tokens))) for t in self.turns))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionPlan:
        return cls(**{**d, "history": tuple((str(u), str(a)) for u, a in d["history"]),
                      "turns": tuple(TurnPlan(**t) for t in d["turns"])})  # fmt: skip

    def first_request_text(self) -> str:
        """Turn `first_turn`'s prompt on the completions endpoint (what the lab counts at plan time)."""
        return prompt_text(self, [], 0)


def config_problems(w: Any) -> list[str]:
    """One line per bad sessions setting, each naming the fix. Pure."""
    out = []
    if w.turns < 1:
        out.append(f"workload.turns must be >= 1, got {w.turns}")
    if not (w.think_s >= 0 and math.isfinite(w.think_s)):
        out.append(f"workload.think_s must be a finite number >= 0 (seconds between a reply and the next turn), got {w.think_s}")
    if w.think_dist not in THINK_DISTS:
        out.append(f"workload.think_dist={w.think_dist!r}: use one of {', '.join(THINK_DISTS)}")
    if w.system_prompt_tokens < 0:
        out.append(f"workload.system_prompt_tokens must be >= 0 (0: no system prompt), got {w.system_prompt_tokens}")
    if w.system_prompts < 1:
        out.append(f"workload.system_prompts must be >= 1, got {w.system_prompts}")
    if w.session_shape not in SESSION_SHAPES:
        out.append(f"workload.session_shape={w.session_shape!r}: use one of {', '.join(SESSION_SHAPES)}")
    if w.tool_result_tokens < 1:
        out.append(f"workload.tool_result_tokens must be >= 1, got {w.tool_result_tokens}")
    if w.fan_out < 1:
        out.append(f"workload.fan_out must be >= 1, got {w.fan_out}")
    elif w.fan_out > 1 and w.session_shape != "agent":
        out.append("workload.fan_out > 1 is for agent loops: set workload.session_shape=agent or fan_out=1")
    if w.num_prompts < 1:
        out.append(f"workload.num_prompts (sessions planned) must be >= 1, got {w.num_prompts}")
    return out


def _think(w: Any, rng: random.Random) -> float:
    if w.think_s <= 0:
        return 0.0
    return float(w.think_s) if w.think_dist == "fixed" else rng.expovariate(1.0 / w.think_s)


def build_sessions(w: Any, tok: Any) -> list[SessionPlan]:
    """`workload.num_prompts` session plans (module doc). Pure given the tokenizer; seeded."""
    from loadgen.workload import LengthDist, WorkloadError, fixed_length_prompt, length_rng

    if p := config_problems(w):
        raise WorkloadError(p[0])
    overhead = len(tok.encode(""))  # specials the tokenizer adds to a text (BOS); a message has none

    def text(n: int, rng: random.Random) -> tuple[str, int]:
        t, count = fixed_length_prompt(tok, n + overhead, rng)
        return t, count - overhead

    rng = random.Random(f"{w.seed}:sessions")
    systems = [text(w.system_prompt_tokens, rng) if w.system_prompt_tokens > 0 else ("", 0)
               for _ in range(w.system_prompts)]  # fmt: skip
    users, outs = LengthDist.of(w, "prompt"), LengthDist.of(w, "output")
    u_rng, o_rng = length_rng(w.seed, "prompt"), length_rng(w.seed, "output")
    agent = w.session_shape == "agent"
    plans = []
    for s in range(w.num_prompts):
        start = rng.randrange(w.turns) if w.steady_state else 0
        history, h_tokens = [], 0
        for n_user, n_reply in zip(users.sample(start, u_rng), outs.sample(start, o_rng), strict=True):
            u, nu = text(n_user, rng)
            a, na = text(n_reply, rng)
            history.append((u, a))
            h_tokens += nu + na
        turns = []
        lengths = users.sample(w.turns - start, u_rng)
        for j, (n_user, n_out) in enumerate(zip(lengths, outs.sample(w.turns - start, o_rng), strict=True)):
            if agent and start + j > 0:
                body, n = text(w.tool_result_tokens, rng)
                msg, n_msg = TOOL_PREFIX + body, n + len(tok.encode(TOOL_PREFIX)) - overhead
            else:
                msg, n_msg = text(n_user, rng)
            turns.append(TurnPlan(msg, n_msg, n_out, _think(w, rng)))
        sys_text, sys_tokens = systems[s % len(systems)]
        plans.append(SessionPlan(s, sys_text, sys_tokens, tuple(history), h_tokens, tuple(turns), start,
                                 w.fan_out if agent else 1))  # fmt: skip
    return plans


# -- rendering a turn (the generator's hot path: plain list and string work only) ----------------


def messages(plan: SessionPlan, replies: Sequence[str], j: int) -> list[dict[str, str]]:
    """The chat messages of the plan's j-th sent turn, given the actual replies of turns 0..j-1."""
    out = [{"role": "system", "content": plan.system}] if plan.system else []
    for u, a in plan.history:
        out += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    for i in range(j):
        out += [{"role": "user", "content": plan.turns[i].user}, {"role": "assistant", "content": replies[i]}]
    out.append({"role": "user", "content": plan.turns[j].user})
    return out


def prompt_text(plan: SessionPlan, replies: Sequence[str], j: int) -> str:
    """The same history on the completions endpoint: the texts joined by SEP."""
    return SEP.join(m["content"] for m in messages(plan, replies, j))


def turn_body(plan: SessionPlan, replies: Sequence[str], j: int, *, endpoint: str, model: str,
              temperature: float) -> dict[str, Any]:  # fmt: skip
    """The JSON body of turn j (loadgen.openai_api's streamed body, with the history)."""
    from loadgen.openai_api import request_body

    t = plan.turns[j]
    if endpoint == "chat":
        body = request_body("", t.max_tokens, endpoint, model, temperature, t.extras)
        body["messages"] = messages(plan, replies, j)
        return body
    return request_body(prompt_text(plan, replies, j), t.max_tokens, endpoint, model, temperature, t.extras)


class ContextEstimate:
    """Prompt tokens of the next turn, before it is sent (module doc), from what the server counted."""

    def __init__(self, plan: SessionPlan) -> None:
        self.plan = plan
        self.overhead = 0.0  # template tokens per message, learned from the first answered turn
        self.prompt: float | None = None  # the server's prompt count of the last answered turn
        self.reply = 0  # its reply's tokens
        self._replies = 0  # every answered turn's reply tokens

    def content_tokens(self, j: int) -> int:
        """Planned message tokens of turn j's prompt, with the replies counted as the server did."""
        p = self.plan
        return p.system_tokens + p.history_tokens + sum(t.user_tokens for t in p.turns[: j + 1]) + self._replies

    def n_messages(self, j: int) -> int:
        return (1 if self.plan.system else 0) + 2 * len(self.plan.history) + 2 * j + 1

    def next_prompt(self, j: int) -> int:
        """Estimated prompt tokens of turn j."""
        if self.prompt is None:
            return self.content_tokens(j)
        return int(self.prompt + self.reply + self.plan.turns[j].user_tokens + 2 * self.overhead)

    def answered(self, j: int, prompt_tokens: int | None, reply_tokens: int | None) -> None:
        """Turn j was answered: the server's prompt count and the reply's tokens."""
        reply = int(reply_tokens or 0)
        if prompt_tokens:
            if self.prompt is None:  # the first answer shows the template's cost per message
                self.overhead = max(0.0, (prompt_tokens - self.content_tokens(j)) / self.n_messages(j))
            self.prompt = float(prompt_tokens)
        elif self.prompt is not None:
            self.prompt = self.prompt + self.reply + self.plan.turns[j].user_tokens + 2 * self.overhead
        self._replies += reply
        self.reply = reply

    def history_tokens(self, j: int, prompt_tokens: int | None) -> int:
        """Tokens of turn j's prompt that were resent history: all but the new message."""
        total = prompt_tokens if prompt_tokens else self.next_prompt(j)
        return max(int(total) - self.plan.turns[j].user_tokens, 0)
