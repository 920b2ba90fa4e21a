"""Multi-turn sessions against the real embedded engine (vLLM CPU build + tiny model), prefix
caching on: one vLLM server for the module, two short servelab runs against it (engine=endpoint).

1. workload=sessions, 4 turns, each resending the history with the engine's actual replies: the
   engine's own per-request count of prompt tokens served from its prefix cache
   (usage.prompt_tokens_details.cached_tokens, which servelab asks vLLM to report) grows with the
   turn. (Its engine-wide counters, vllm:prefix_cache_hits_total, are read when servelab launches
   the engine itself: tests/experiments/test_embedded_sweep.py; engine=endpoint does not map them.)
2. The same context lengths without a cached prefix: single-turn prompts of turn 3's length
   (fresh random text, so the cache holds none of it: exactly what the engine computes with
   caching off) have a higher TTFT than turn 3 of the sessions, which prefill only the new message.
Both points run one user at a time with no think time, so queueing does not enter the TTFT.
Needs `bash scripts/setup.sh` (the README's test command runs it).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from experiments.config import to_run_config
from experiments.runner import run
from tests.conftest import compose
from tests.support.embedded_vllm import embedded_vllm

# `-m slow`: its own engine start (~60 s) and two runs (~30 s) put the default run past its 15
# minutes on 2 cores (measured 16.3 min with it: 452 s + 523 s); the sessions' history, context
# limit and fan-out are checked exactly against the timing server in the default run
# (tests/loadgen/test_sessions.py). Run it with `pytest -m slow -k sessions`.
pytestmark = [pytest.mark.engine, pytest.mark.slow]

# 4 turns of a 128-token message and a 16-token reply after a 256-token system prompt: turn 3
# sends ~256 + 4 x 128 + 3 x 16 = ~820 tokens, of which the cache can hold all but the last message.
SESSIONS = ["workload=sessions", "workload.turns=4", "workload.prompt_tokens=128", "workload.prompt_dist=fixed",
            "workload.prompt_min=128", "workload.prompt_max=128", "workload.output_tokens=16", "workload.output_min=16",
            "workload.output_max=16", "workload.system_prompt_tokens=256", "workload.think_s=0",
            "workload.num_prompts=200", "workload.system_prompts=1"]  # fmt: skip
ONE_USER = ["traffic=concurrency", "traffic.points=[1]", "traffic.warmup_s=1", "traffic.duration_s=8"]


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory):
    with embedded_vllm(tmp_path_factory.mktemp("vllm"), ["engine.prefix_caching=true"]) as url:
        yield url


def _run(url: str, out, *overrides: str) -> tuple[dict, pd.DataFrame]:
    argv = ["engine=endpoint", f"engine.base_url={url}", "model.served_name=tiny", "model.built_by=null",
            "telemetry=off", "report=false", *ONE_USER, *overrides]  # fmt: skip
    code = run(to_run_config(compose(argv)), out)
    s = json.loads((out / "run.json").read_text())
    assert code == 0, s.get("failure")
    return s, pd.read_parquet(out / "requests.parquet")


def test_sessions_hit_the_prefix_cache_more_with_every_turn_and_prefill_less(vllm_url, tmp_path):
    s, req = _run(vllm_url, tmp_path / "sessions", *SESSIONS)
    ok = req[(req["status"] == "ok") & (req["phase"] == "measure")]
    assert ok["session_id"].notna().all() and set(ok["turn"]) == {0, 1, 2, 3}
    assert ok["cached_tokens"].notna().all(), "vLLM did not report cached tokens (--enable-prompt-tokens-details)"
    by_turn = s["load_points"][0]["summary"]["sessions"]["by_turn"]
    hit = [t["cache_hit"] for t in sorted(by_turn, key=lambda t: t["turn"])]
    ctx = [t["prompt_tokens_mean"] for t in sorted(by_turn, key=lambda t: t["turn"])]
    assert all(a < b for a, b in zip(ctx, ctx[1:], strict=False)), ctx  # the history grows turn by turn
    assert all(a < b for a, b in zip(hit, hit[1:], strict=False)), hit  # and more of it is cached
    assert hit[3] > 0.6, hit

    # the same context length, nothing cached: single prompts as long as turn 3's
    n3 = int(round(ctx[3]))
    _s2, req2 = _run(vllm_url, tmp_path / "fresh", "workload=synthetic_fixed", f"workload.prompt_tokens={n3}",
                     "workload.output_tokens=16", "workload.endpoint=chat", "workload.num_prompts=64")  # fmt: skip
    fresh = req2[(req2["status"] == "ok") & (req2["phase"] == "measure")]
    assert fresh["cached_tokens"].fillna(0).mean() < 0.2 * n3  # a few blocks at most (the chat template's start)
    ttft = lambda d: ((d["t_first_token_ns"] - d["t_sent_ns"]) / 1e6).median()  # noqa: E731
    turn3 = ok[ok["turn"] == 3]
    assert ttft(turn3) < ttft(fresh), (ttft(turn3), ttft(fresh), len(turn3), len(fresh))
