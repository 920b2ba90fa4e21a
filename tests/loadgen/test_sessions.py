"""Multi-turn sessions and agent loops (loadgen.sessions): the plan (pure, seeded), and the Locust
process holding real conversations with the timing server (real HTTP streaming), whose usage
counts every word of the history it was sent (--count-prompt)."""

from __future__ import annotations

import dataclasses

import pytest

from loadgen import sessions as ss
from loadgen.driver import build_spec, run_load_point
from loadgen.jsonl import read_jsonl
from loadgen.schema import TrafficConfig, WorkloadConfig
from loadgen.tokenizer import load_token_counter
from loadgen.workload import WorkloadError, build_items, config_problems


def wl(**kw) -> WorkloadConfig:
    base = dict(kind="sessions", endpoint="chat", turns=3, prompt_tokens=8, output_tokens=5, think_s=0.05,
                think_dist="fixed", system_prompt_tokens=6, system_prompts=2, num_prompts=6)  # fmt: skip
    return WorkloadConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return load_token_counter(str(tiny_tokenizer_dir))


def test_the_plan_is_reproducible_and_exact(tok):
    a = build_items(wl(steady_state=True, prompt_dist="uniform", prompt_spread=3, think_dist="exponential"), tok)
    b = build_items(wl(steady_state=True, prompt_dist="uniform", prompt_spread=3, think_dist="exponential"), tok)
    assert [it.session for it in a] == [it.session for it in b]  # same seed: same lengths, think times, histories
    c = build_items(wl(steady_state=True, prompt_dist="uniform", prompt_spread=3, seed=1), tok)
    assert [it.session for it in a] != [it.session for it in c]
    overhead = len(tok.encode(""))
    for it in a:
        p = it.session
        assert len(p.turns) == 3 - p.first_turn and len(p.history) == p.first_turn  # steady state: history in context
        assert all(len(tok.encode(t.user)) - overhead == t.user_tokens for t in p.turns)
        assert it.prompt_tokens_client == len(tok.encode(it.prompt)) and it.max_tokens == p.turns[0].max_tokens
    assert {it.session.first_turn for it in a} != {0}
    assert len({it.session.system for it in a}) == 2  # two distinct system prompts, shared round robin


def test_a_turn_resends_the_history_with_the_actual_replies(tok):
    (it, *_) = build_items(wl(), tok)
    p = it.session
    m = ss.messages(p, ["reply zero", "reply one"], 2)
    assert [x["role"] for x in m] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert m[2]["content"] == "reply zero" and m[-1]["content"] == p.turns[2].user
    text = ss.prompt_text(p, ["reply zero"], 1)
    assert text.startswith(ss.prompt_text(p, [], 0)) and "reply zero" in text  # the prefix cache's view
    body = ss.turn_body(p.with_extras(lambda n: {"ignore_eos": True}), ["r"], 1, endpoint="completions", model="m",
                        temperature=0.0)  # fmt: skip
    assert body["prompt"] == ss.prompt_text(p, ["r"], 1) and body["ignore_eos"] is True


def test_agent_steps_append_tool_results(tok):
    (it, *_) = build_items(wl(session_shape="agent", turns=4, tool_result_tokens=9, fan_out=2), tok)
    p = it.session
    assert p.fan_out == 2 and not p.turns[0].user.startswith(ss.TOOL_PREFIX)
    assert all(t.user.startswith(ss.TOOL_PREFIX) for t in p.turns[1:])


@pytest.mark.parametrize(("settings", "fix"), [
    ({"turns": 0}, "workload.turns must be >= 1"),
    ({"think_s": -1.0}, "workload.think_s must be a finite number >= 0"),
    ({"think_dist": "gauss"}, "workload.think_dist='gauss': use one of fixed, exponential"),
    ({"fan_out": 3}, "set workload.session_shape=agent or fan_out=1"),
    ({"session_shape": "tree"}, "workload.session_shape='tree': use one of chat, agent"),
    ({"system_prompts": 0}, "workload.system_prompts must be >= 1"),
])  # fmt: skip
def test_bad_session_settings_name_the_fix(settings, fix):
    problems = config_problems(wl(**settings))
    assert len(problems) == 1 and fix in problems[0]


def test_a_first_request_over_the_context_is_refused(tok):
    from loadgen.workload import context_problem

    items = build_items(wl(output_tokens=50), tok)
    assert "engine.max_model_len" in context_problem(items, 40, "sessions")
    with pytest.raises(WorkloadError, match="workload.turns"):
        build_items(wl(turns=0), tok)


def test_context_estimate_learns_the_template_cost_from_the_first_answer(tok):
    (it, *_) = build_items(wl(), tok)
    p = it.session
    est = ss.ContextEstimate(p)
    first = p.system_tokens + p.turns[0].user_tokens
    assert est.next_prompt(0) == first
    est.answered(0, first + 4, 5)  # the server counted 2 template tokens per message
    assert est.overhead == 2.0
    assert est.next_prompt(1) == first + 4 + 5 + p.turns[1].user_tokens + 4
    assert est.history_tokens(1, 100) == 100 - p.turns[1].user_tokens


def spec(url, tmp_path, w, tok, value=2.0, kind="poisson", max_model_len=None, **traffic):
    t = TrafficConfig(**{**dict(kind=kind, request_timeout_s=20, drain_timeout_s=20, warmup_s=0.0, duration_s=2.5),
                         **traffic})  # fmt: skip
    items = build_items(w, tok)
    return build_spec(load_point=0, load_value=value, traffic=t, workload=w, items=items, base_url=url, model="m",
                      extras_for=lambda n: {}, workdir=tmp_path, sessions=[it.session for it in items],
                      max_model_len=max_model_len)  # fmt: skip


@pytest.mark.serial
def test_open_loop_sessions_hold_real_conversations(timing_server, tmp_path, tok):
    """Sessions open at 2/s; each turn's server-counted prompt is the previous prompt plus the reply
    the engine actually streamed plus the new message: the history is real."""
    url, log = timing_server(ttft_ms=10, itl_ms=2, count_prompt=True)
    s = spec(url, tmp_path, wl(), tok)
    out = run_load_point(s, tmp_path)
    assert out.exit_code == 0 and out.problems == []
    recs = [r for r in out.records if r["status"] == "ok"]
    by = {}
    for r in recs:
        by.setdefault(r["session_id"], []).append(r)
    assert len(by) == len(s.schedule) >= 3  # every arrival opened a session
    server = {e["id"]: e for e in read_jsonl(log)}
    for rs in by.values():
        rs.sort(key=lambda r: r["turn"])
        assert [r["turn"] for r in rs] == list(range(len(rs)))
        assert rs[-1]["session_end"] in (ss.COMPLETED, ss.WINDOW_END) and all(r["session_end"] is None for r in rs[:-1])
        assert rs[-1]["session_end"] != ss.COMPLETED or len(rs) == 3
        for a, b in zip(rs, rs[1:], strict=False):
            words = lambda t: len(t.split())  # noqa: E731 - the server's count
            plan = s.sessions[b["prompt_idx"]]
            assert b["prompt_tokens"] == a["prompt_tokens"] + words(a["output_text"]) + 1 + words(plan.turns[b["turn"]].user) + 1
            assert server[b["response_id"]]["messages"] == 2 * b["turn"] + 2  # system + the history + the new message
            assert b["history_tokens"] == b["prompt_tokens"] - plan.turns[b["turn"]].user_tokens
            assert b["t_scheduled_ns"] >= a["t_done_ns"] + 0.05e9  # the think time after the reply
            assert b["t_sent_ns"] - b["t_scheduled_ns"] < 20e6  # sent on time


@pytest.mark.serial
def test_closed_loop_sessions_end_at_the_context_limit_and_fan_out(timing_server, tmp_path, tok):
    url, log = timing_server(ttft_ms=5, itl_ms=1, count_prompt=True)
    w = wl(session_shape="agent", turns=8, fan_out=2, tool_result_tokens=6, think_s=0.0)
    s = spec(url, tmp_path, w, tok, value=2, kind="concurrency", max_model_len=70, duration_s=2.0)
    out = run_load_point(s, tmp_path)
    assert out.exit_code == 0
    ends = [r for r in out.records if r["session_end"]]
    assert {r["session_end"] for r in ends} <= {ss.CONTEXT_LIMIT, ss.WINDOW_END, ss.STOPPED}
    assert any(r["session_end"] == ss.CONTEXT_LIMIT for r in ends)  # 8 turns never fit 70 tokens
    for r in out.records:  # no request was sent past the limit (by the server's own count)
        if r["status"] == "ok":
            assert r["prompt_tokens"] + r["max_tokens"] <= 70 + 8  # the estimate may err by the template's cost
    turns = {}
    for r in out.records:
        turns.setdefault((r["session_id"], r["turn"]), []).append(r)
    assert all(len(v) == 2 for v in turns.values())  # every step sent two branches sharing the context
    assert {r["request_id"][-3:] for r in out.records} == {"-f0", "-f1"}


def test_spec_round_trips_sessions(tmp_path, tok):
    from loadgen.spec import LoadPointSpec

    s = spec("http://127.0.0.1:1", tmp_path, wl(steady_state=True), tok)
    assert LoadPointSpec.from_json(s.to_json()) == s
    assert dataclasses.replace(s, sessions=()).sessions == ()
