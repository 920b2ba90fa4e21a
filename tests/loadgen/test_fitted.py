"""workload=fitted: the figures fitted from a trace against the trace's own (length quantiles, the
gamma shape recovered from synthetic traces of known shape, Mooncake prefix reuse), and the same
shape generated at another rate."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest

from loadgen.arrivals import open_loop_schedule
from loadgen.fitted import GAMMA_METHOD, fit_trace, fitted_items, gamma_shape, length_quantiles
from loadgen.trace import read_trace
from loadgen.workload import WorkloadError
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def tok():
    from loadgen.tokenizer import load_token_counter

    path = ROOT / "models" / "tiny-llama"
    assert (path / "tokenizer.json").exists(), "run `bash scripts/setup.sh` (it builds models/tiny-llama)"
    return load_token_counter(str(path))


def gamma_times(n: int, rate: float, k: float, seed: int) -> list[float]:
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.gammavariate(k, 1.0 / (rate * k))
    return out


def azure_trace(path: Path, n: int, rate: float, k: float, seed: int) -> Path:
    """An Azure-schema CSV: gamma arrivals of shape k at `rate`, lognormal context/generated tokens (medians 148, 55)."""
    rng = random.Random(seed + 1)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for t in gamma_times(n, rate, k, seed):
        # 7 fractional digits, as Azure writes them
        stamp = f"2023-11-{16 + int(t // 86400):02d} {int(t // 3600) % 24:02d}:{int(t // 60) % 60:02d}:{t % 60:010.7f}"
        lines.append(f"{stamp},{max(1, round(rng.lognormvariate(5, 0.8)))},{max(1, round(rng.lognormvariate(4, 0.6)))}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("k", [0.3, 0.5, 2.0])
def test_the_gamma_shape_of_a_synthetic_trace_is_recovered(tmp_path, k):
    """3000 gaps: the moments estimator's spread is about 5 % of k (simulated); 15 % is 3 of those."""
    fit = fit_trace(read_trace(azure_trace(tmp_path / "a.csv", 3001, rate=2.0, k=k, seed=7)))
    assert fit.shape == pytest.approx(k, rel=0.15)
    a = fit.arrivals
    assert a["method"] == GAMMA_METHOD and a["gaps"] == 3000
    assert a["recorded_rate_rps"] == pytest.approx(2.0, rel=0.1) and a["cv"] == pytest.approx(1 / math.sqrt(k), rel=0.08)


def test_the_fitted_lengths_are_the_traces_and_the_items_resample_them(tmp_path, tiny_tokenizer_dir):
    from loadgen.tokenizer import load_token_counter

    tok = load_token_counter(str(tiny_tokenizer_dir))  # random-vocabulary prompts: any tokenizer
    trace = read_trace(azure_trace(tmp_path / "a.csv", 2001, rate=2.0, k=0.5, seed=3))
    fit = fit_trace(trace)
    f = fit.figures()
    assert f["input_tokens"] == length_quantiles([r.input_tokens for r in trace.rows])  # the empirical distribution itself
    assert f["output_tokens"] == length_quantiles([r.output_tokens for r in trace.rows])
    items, gen = fitted_items(fit, tok, 600, seed=0)
    assert [it.prompt_tokens_client for it in items] == [len(tok.encode(it.prompt)) for it in items]
    pairs = set(fit.pairs)
    assert all((it.prompt_tokens_client, it.max_tokens) in pairs for it in items)  # pairs kept together
    # 600 draws: quantiles within a few standard errors of the trace's (lognormal sigma 0.8 / 0.6)
    for key, tol in (("p10", 0.15), ("p50", 0.1), ("p90", 0.15), ("mean", 0.08)):
        assert gen["input_tokens"][key] == pytest.approx(f["input_tokens"][key], rel=tol), key
        assert gen["output_tokens"][key] == pytest.approx(f["output_tokens"][key], rel=tol), key
    again, _ = fitted_items(fit, tok, 600, seed=0)
    assert again == items and fitted_items(fit, tok, 600, seed=1)[0] != items  # reproducible from the seed


def test_the_fitted_shape_is_generated_at_another_rate(tmp_path):
    fit = fit_trace(read_trace(azure_trace(tmp_path / "a.csv", 3001, rate=2.0, k=0.4, seed=11)))
    s = open_loop_schedule("gamma", 20.0, 0.0, 300.0, 1, seed=0, burstiness=fit.shape)
    refit = gamma_shape([a.offset_s for a in s])
    assert refit["recorded_rate_rps"] == pytest.approx(20.0, rel=0.05)
    assert refit["gamma_shape"] == pytest.approx(fit.shape, rel=0.1)


def test_bounds_leave_rows_out_of_the_lengths_but_not_the_arrivals(tmp_path):
    trace = read_trace(azure_trace(tmp_path / "a.csv", 1001, rate=2.0, k=0.5, seed=5))
    fit = fit_trace(trace, prompt_bounds=(1, 400), output_bounds=(1, 100))
    assert fit.left_out == sum(r.input_tokens > 400 or r.output_tokens > 100 for r in trace.rows) > 0
    assert max(a for a, _ in fit.pairs) <= 400 and max(b for _, b in fit.pairs) <= 100
    assert fit.arrivals == fit_trace(trace).arrivals
    with pytest.raises(WorkloadError, match=r"none of the 1001 rows .* has input tokens within workload.prompt_min..prompt_max=1..0"):
        fit_trace(trace, prompt_bounds=(1, 0))


def test_arrivals_that_cannot_be_fitted_are_refused(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps({"timestamp": t, "input_tokens": 5, "output_tokens": 5}) + "\n" for t in (0, 1, 2, 3)))
    with pytest.raises(WorkloadError, match="gaps do not vary .* use traffic=constant"):
        fit_trace(read_trace(p))
    p.write_text("".join(json.dumps({"timestamp": t, "input_tokens": 5, "output_tokens": 5}) + "\n" for t in (0, 1)))
    with pytest.raises(WorkloadError, match="at least 3 trace rows"):
        fit_trace(read_trace(p))


# -- Mooncake prefix reuse --------------------------------------------------------------------------


def conversation_trace(path: Path, sessions: int, block: int, seed: int) -> Path:
    """A Mooncake-schema trace of interleaved conversations: every row shares the system prompt's
    block 0; turn t of a session resends the session's previous prompt (all its blocks) and adds
    1-3 blocks; sessions start at random and run 1-6 turns."""
    rng = random.Random(seed)
    next_id, rows, t = 1, [], 0.0
    live: list[tuple[list[int], int]] = []
    for _ in range(sessions):
        live.append(([0], rng.randint(1, 6)))
        while live and (len(live) > 4 or rng.random() < 0.5):
            j = rng.randrange(len(live))
            ids, left = live[j]
            add = rng.randint(1, 3)
            ids = ids + list(range(next_id, next_id + add))
            next_id += add
            n = (len(ids) - 1) * block + rng.randint(1, block)
            t += rng.expovariate(2.0)
            rows.append({"timestamp": round(t * 1000), "input_length": n, "output_length": rng.randint(4, 40), "hash_ids": ids})
            live[j] = (ids, left - 1)
            if left == 1:
                live.pop(j)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mooncake_prefix_reuse_is_fitted_and_reproduced(tmp_path, tok):
    block = 16
    trace = read_trace(conversation_trace(tmp_path / "m.jsonl", 400, block, seed=2), block_tokens=block)
    fit = fit_trace(trace)
    want = fit.figures()["prefix_reuse"]
    assert want == trace.describe()["prefix_reuse"]  # the fit keeps the trace's reuse figures (all rows kept)
    assert 0.95 < want["reuse_probability"] <= 1.0 and want["mean_shared_blocks_when_reused"] > 2
    items, gen = fitted_items(fit, tok, 800, seed=0)
    got = gen["prefix_reuse"]
    assert got["reuse_probability"] == pytest.approx(want["reuse_probability"], abs=0.03)
    assert got["mean_shared_blocks"] == pytest.approx(want["mean_shared_blocks"], rel=0.1)
    assert got["ideal_hit_rate"] == pytest.approx(want["ideal_hit_rate"], rel=0.1)
    assert got["distance_p50"] == pytest.approx(want["distance_p50"], rel=0.5, abs=1)
    # the prompts carry that reuse token for token: every item shares block 0 (BOS + 15 words) with item 0
    enc = [tok.encode(it.prompt) for it in items[:50]]
    assert [len(e) for e in enc] == [it.prompt_tokens_client for it in items[:50]]
    assert all(e[:block] == enc[0][:block] for e in enc[1:] if len(e) >= block and len(enc[0]) >= block)


def test_a_trace_without_blocks_has_no_prefix_model(tmp_path):
    fit = fit_trace(read_trace(azure_trace(tmp_path / "a.csv", 50, rate=2.0, k=0.5, seed=1)))
    assert fit.reuse is None and fit.figures()["prefix_reuse"] is None
    assert statistics.fmean(b for _, b in fit.pairs) > 1
