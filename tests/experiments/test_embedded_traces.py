"""A Mooncake-format trace against the real embedded engine (vLLM CPU build, prefix caching on by
default): replayed with its blocks shared as the file says, then drawn from its fit (workload=fitted)
at a higher rate than it was recorded at. The engine's own prefix-cache counters must show the reuse
the trace records (run.json `trace`: its ideal hit rate over the rows sent). Timings are not asserted.

One vLLM server for the module; both runs reach it as engine=endpoint (as in test_embedded_profiles.py),
so this costs one engine start. `-m slow`: the formats and the fit are checked exactly without an
engine (tests/loadgen/test_trace_formats.py, test_fitted.py, tests/experiments/test_trace_runs.py).
Needs `bash scripts/setup.sh`.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from experiments.config import to_run_config
from experiments.runner import run
from tests.conftest import ROOT, compose
from tests.support.embedded_vllm import embedded_vllm

pytestmark = [pytest.mark.engine, pytest.mark.slow]
SAMPLE = ROOT / "tests" / "data" / "mooncake_sample.jsonl"  # 64-token blocks, ~4 rows/s


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory):
    with embedded_vllm(tmp_path_factory.mktemp("vllm")) as url:
        yield url


def measured(out) -> tuple[dict, float]:
    """run.json and the engine's own prefix-cache hit rate over the run: the increase of vLLM's
    counters between the run's first and last scrape (engine=endpoint maps no series into the point
    summaries, so they are read from engine_metrics.parquet)."""
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "ok", s["failure"]
    raw = pd.read_parquet(out / "engine_metrics.parquet")

    def increase(name: str) -> float:
        v = raw[raw["name"] == name].sort_values("t_ns")["value"]
        return float(v.iloc[-1] - v.iloc[0])

    hit = increase("vllm:prefix_cache_hits_total") / increase("vllm:prefix_cache_queries_total")
    m = s["load_points"][0]["summary"]
    print(f"{out.name}: {m['requests']['ok']} requests ok, TTFT p50 {m['ttft_ms']['p50']:.0f} ms, engine hit rate {hit:.3f}")
    return s, hit


def test_a_mooncake_trace_replayed_and_fitted_shows_its_prefix_reuse_on_the_engine(vllm_url, tmp_path):
    common = ["engine=endpoint", f"engine.base_url={vllm_url}", "engine.metrics_path=/metrics", "model.served_name=tiny",
              "model.built_by=null", "report=false", f"traffic.trace_path={SAMPLE}", "traffic.trace_block_tokens=64",
              "traffic.warmup_s=1", "traffic.duration_s=10"]  # fmt: skip
    replay = tmp_path / "replay"
    assert run(to_run_config(compose([*common, "traffic=trace", "traffic.points=[1]"])), replay) == 0
    s, hit = measured(replay)
    ideal = s["trace"]["prefix_reuse_built"]["ideal_hit_rate"]
    print(f"replay: {s['trace']['rows_built']} rows built; the trace's ideal hit rate {ideal:.3f}")
    assert ideal > 0.5 and hit > 0.5 * ideal  # the engine serves most of the reuse the trace records

    fitted = tmp_path / "fitted"  # another seed: other words per block, so nothing is cached from the replay
    c = to_run_config(compose([*common, "workload=fitted", "workload.seed=1", "workload.num_prompts=96", "traffic.points=[6]"]))
    assert run(c, fitted) == 0
    s, hit = measured(fitted)
    f = s["trace"]["fitted"]
    print(f"fitted: gamma shape {f['arrivals']['gamma_shape']:.3f} (recorded {f['arrivals']['recorded_rate_rps']:.2f} req/s, "
          f"sent at 6); generated ideal hit rate {f['generated']['prefix_reuse']['ideal_hit_rate']:.3f}")  # fmt: skip
    assert 6 > f["arrivals"]["recorded_rate_rps"] and hit > 0.5 * f["generated"]["prefix_reuse"]["ideal_hit_rate"]
