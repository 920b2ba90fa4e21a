"""Traces through the lab: the traffic.trace_* and workload=fitted settings in preflight (one line
naming the fix), a Mooncake replay and a fitted run end to end against the timing server (run.json
`trace`, the notes, the items), and bad traces refused before the engine starts."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from engines import ADAPTERS
from experiments import preflight
from experiments.config import to_run_config
from experiments.runner import run
from loadgen.arrivals import open_loop_schedule
from loadgen.fitted import gamma_shape
from tests.conftest import ROOT, compose
from tests.support.fake_adapter import TimingServerAdapter
from tests.support.settings_walk import one_line, with_

TOK = ROOT / "models" / "tiny-llama"  # block prompts need the lab's byte-level BPE tokenizer


@pytest.fixture
def fake_engine(monkeypatch):
    monkeypatch.setitem(ADAPTERS, "timing", TimingServerAdapter)


def cfg(*extra: str):
    assert (TOK / "tokenizer.json").exists(), "run `bash scripts/setup.sh` (it builds models/tiny-llama)"
    return to_run_config(compose([
        "engine.name=timing", f"model.path={TOK}", "model.built_by=null", "traffic.duration_s=2", "traffic.warmup_s=0.5",
        *extra,
    ]))  # fmt: skip


def mooncake(path, rows: int = 40, block: int = 32, seed: int = 0):
    """Conversations in Mooncake's schema: every row starts with block 0 (a shared system prompt);
    a session's next turn resends its previous blocks and adds one or two. 5 rows a second."""
    rng = random.Random(seed)
    sessions: list[list[int]] = []
    nxt, out = 1, []
    for i in range(rows):
        if not sessions or rng.random() < 0.3:
            sessions.append([0])
        j = rng.randrange(len(sessions))
        add = rng.randint(1, 2)
        sessions[j] = sessions[j] + list(range(nxt, nxt + add))
        nxt += add
        ids = sessions[j]
        n = (len(ids) - 1) * block + rng.randint(1, block)
        out.append({"timestamp": i * 200, "input_length": n, "output_length": 4, "hash_ids": ids})
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


# -- preflight --------------------------------------------------------------------------------------


def test_workload_fitted_composes_and_needs_a_trace_and_a_rate_traffic():
    base = to_run_config(compose(["workload=fitted"]))
    assert base.workload.kind == "fitted" and base.traffic.kind == "poisson"
    one_line(preflight.trace_problems(base), "traffic.trace_path", "workload=fitted needs traffic.trace_path")
    ok = with_(base, {"traffic.trace_path": "/data/t.jsonl"})
    assert preflight.trace_problems(ok) == []
    assert preflight.trace_problems(with_(ok, {"traffic.kind": "gamma"})) == []
    for kind in ("concurrency", "trace", "constant"):
        one_line(preflight.trace_problems(with_(ok, {"traffic.kind": kind})), "traffic.kind",
                 "use traffic=poisson or traffic=gamma")  # fmt: skip


def test_fitted_warnings_say_what_is_not_read_and_when_items_repeat():
    c = to_run_config(compose(["workload=fitted", "traffic=gamma", "traffic.trace_path=/t.csv", "traffic.points=[40]"]))
    ws = preflight.warnings(c, None)
    assert any("traffic.burstiness=0.5 is not read with workload=fitted" in w for w in ws), ws
    assert any("about 2600 requests at the highest point but workload.num_prompts=1024" in w for w in ws), ws
    assert not any("items repeat" in w for w in preflight.warnings(with_(c, {"traffic.points": [4.0]}), None))


def test_a_burstgpt_filter_with_another_named_format_is_refused():
    c = to_run_config(compose(["traffic=trace", "traffic.trace_path=/t.csv", "traffic.trace_model=GPT-4"]))
    assert preflight.trace_problems(c) == []  # auto: the file may be BurstGPT
    one_line(preflight.trace_problems(with_(c, {"traffic.trace_format": "mooncake"})), "traffic.trace_model",
             "only applies to BurstGPT traces (traffic.trace_format=mooncake)")  # fmt: skip


# -- end to end against the timing server -------------------------------------------------------------


def test_a_mooncake_trace_replays_with_its_blocks_shared(fake_engine, tmp_path):
    trace = mooncake(tmp_path / "conv.jsonl")
    out = tmp_path / "run"
    c = cfg("traffic=trace", f"traffic.trace_path={trace}", "traffic.trace_block_tokens=32", "traffic.points=[2]")
    assert run(c, out, []) == 0
    s = json.loads((out / "run.json").read_text())
    t = s["trace"]
    assert t["format"] == "mooncake" and t["rows"] == 40 and t["block_tokens"] == 32
    # 2x speed-up of 5 rows/s for 2.5 s: the rows of the first 5 s of the trace (25) are built, the rest never sent
    assert t["rows_built"] == 25 and t["smallest_speedup"] == 2.0
    assert any("15 of 40 rows arrive after the window" in n["message"] for n in s["notes"]), s["notes"]
    assert t["prefix_reuse"]["reuse_probability"] == pytest.approx(39 / 40)
    items = pd.read_parquet(out / "workload.parquet").sort_values("prompt_idx")
    assert len(items) == 25
    from loadgen.tokenizer import load_token_counter

    tok = load_token_counter(str(TOK))
    rows = [json.loads(line) for line in trace.read_text().splitlines()][:25]
    enc = [tok.encode(p) for p in items["prompt"]]
    assert [len(e) for e in enc] == [r["input_length"] for r in rows] == list(items["prompt_tokens_client"])
    for a, b, ra, rb in ((enc[i], enc[j], rows[i], rows[j]) for i in range(25) for j in range(i)):
        k = next((n for n, (x, y) in enumerate(zip(ra["hash_ids"], rb["hash_ids"], strict=False)) if x != y),
                 min(len(ra["hash_ids"]), len(rb["hash_ids"])))  # leading blocks the two rows share  # fmt: skip
        same = min(k * 32, len(a), len(b))
        assert a[:same] == b[:same]
        if same < min(len(a), len(b)):
            assert a[same] != b[same] or k * 32 > same
    req = pd.read_parquet(out / "requests.parquet")
    assert len(req) == 25 and (req["status"] == "ok").all()


def test_a_fitted_run_records_its_fit_and_sends_gamma_arrivals(fake_engine, tmp_path):
    lines, t, rng = ["Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"], 0.0, random.Random(4)
    failures, kept = 0, []
    for _ in range(400):
        t += rng.gammavariate(0.5, 1.0)  # 2 req/s, shape 0.5
        n_in, n_out = rng.randint(5, 60), rng.choice([0, 3, 5, 8])
        failures += n_out == 0
        kept += [round(t, 3)] if n_out else []
        lines.append(f"{t:.3f},ChatGPT,{n_in},{n_out},{n_in + n_out},Conversation log")
    trace = tmp_path / "burst.csv"
    trace.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    c = cfg("workload=fitted", f"traffic.trace_path={trace}", "traffic.points=[20]", "workload.num_prompts=64")
    assert run(c, out, []) == 0
    s = json.loads((out / "run.json").read_text())
    f = s["trace"]["fitted"]
    assert s["trace"]["format"] == "burstgpt" and sum(s["trace"]["skipped"].values()) == failures > 0
    assert f["rows_kept"] == s["trace"]["rows"] == 400 - failures and f["rows_left_out"] == 0
    # fitted on the rows sent (the failures thin the stream: 1.5 req/s, burstier than Poisson still)
    assert f["arrivals"] == gamma_shape(kept) and f["arrivals"]["gamma_shape"] < 0.9
    assert f["arrivals"]["recorded_rate_rps"] == pytest.approx(1.5, rel=0.15) and "method of moments" in f["arrivals"]["method"]
    assert f["generated"]["items"] == 64 and f["prefix_reuse"] is None
    assert any("gamma arrivals of shape k=" in n["message"] for n in s["notes"]), s["notes"]
    assert any("Response tokens = 0" in n["message"] for n in s["notes"]), s["notes"]
    items = pd.read_parquet(out / "workload.parquet")
    assert len(items) == 64 and items["max_tokens"].isin([3, 5, 8]).all()
    # the point keeps its configured identity (poisson) while its schedule was gamma of the fitted shape
    from analysis.records import identity

    assert s["load_points"][0]["point_id"] == identity.point_id(c.traffic, c.workload, 20.0)
    req = pd.read_parquet(out / "requests.parquet")
    sent = sorted((req["t_scheduled_ns"] - s["load_points"][0]["t0_ns"]) / 1e9)
    want = open_loop_schedule("gamma", 20.0, 0.5, 2.0, 64, seed=c.traffic.seed, burstiness=f["arrivals"]["gamma_shape"])
    assert sent == pytest.approx([a.offset_s for a in want], abs=1e-6)  # exactly the fitted gamma schedule
    (export,) = (json.loads(f.read_text()) for f in (out / "exports").glob("*.json"))
    assert export["burstiness"] == f["arrivals"]["gamma_shape"]  # vLLM's key: the gamma shape sent, not poisson's 1.0


def test_a_bad_mooncake_row_is_refused_before_the_engine_starts(fake_engine, tmp_path):
    trace = tmp_path / "m.jsonl"
    trace.write_text(json.dumps({"timestamp": 0, "input_length": 9000, "output_length": 3, "hash_ids": [1, 2]}) + "\n")
    out = tmp_path / "run"
    assert run(cfg("traffic=trace", f"traffic.trace_path={trace}"), out, []) == 2
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "rejected" and s["engine"] is None
    assert s["failure"]["reason"].startswith(f"{trace}:1: hash_ids has 2 block(s), which hold 513..1024 tokens")


def test_a_trace_longer_than_the_context_is_refused_before_any_prompt_is_built(fake_engine, tmp_path):
    trace = tmp_path / "m.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": i, "input_length": 2000, "output_length": 3,
                                         "hash_ids": [i, i + 100, i + 200, i + 300]}) + "\n" for i in range(3)))  # fmt: skip
    out = tmp_path / "run"
    assert run(cfg("traffic=trace", f"traffic.trace_path={trace}"), out, []) == 2
    reason = json.loads((out / "run.json").read_text())["failure"]["reason"]
    assert "3 workload item(s) need more than the context limit of 1024 tokens (item 0: 2000+3)" in reason
    assert "the trace's input_tokens/output_tokens" in reason
