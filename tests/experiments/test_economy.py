"""Early stop and halving through the real runner against the timing server (engine.name=timing,
no real engine): an overloaded point is stopped early and recorded infeasible, a steady one is
not; a variant that cannot beat one measured before it stops its knee search, and the decision
excludes it as cannot_win. Seconds each."""

from __future__ import annotations

import json

import pytest

from analysis.decision import default_config, run_decision
from engines import ADAPTERS
from experiments.config import to_run_config
from experiments.runner import run, run_variant
from tests.conftest import compose
from tests.support.fake_adapter import TimingServerAdapter

# whether a point overloads, and where a first probe lands, depend on measured timing
pytestmark = pytest.mark.serial

# The timing server as the engine: S = 30 ms + 7 x 10 ms = 100 ms a request (8 tokens)
SLOW = '["--ttft-ms","30","--itl-ms","10","--max-streams","{c}"]'


@pytest.fixture
def fake_engine(monkeypatch):
    monkeypatch.setitem(ADAPTERS, "timing", TimingServerAdapter)


def cfg(tok_dir, streams: int, *extra: str):
    return to_run_config(compose([
        "engine.name=timing", f"model.path={tok_dir}", "model.built_by=null", "workload.prompt_tokens=20",
        "workload.output_tokens=8", "workload.num_prompts=16", f"engine.extra_args={SLOW.format(c=streams)}",
        "slo.ttft_ms=300", "slo.tpot_ms=1000", "report=false", "telemetry.sampler=off", *extra,
    ]))  # fmt: skip


def test_an_overloaded_point_stops_early_as_infeasible_and_a_steady_one_runs_its_window(
        fake_engine, tiny_tokenizer_dir, tmp_path):  # fmt: skip
    # one stream of 100 ms: 10 req/s. 4 req/s is steady; 40 req/s grows a queue of 30 more a second
    c = cfg(tiny_tokenizer_dir, 1, "traffic.points=[4,40]", "traffic.duration_s=5", "traffic.warmup_s=0.5",
            "economy.early_stop=true")  # fmt: skip
    out = tmp_path / "run"
    assert run(c, out, []) == 0
    s = json.loads((out / "run.json").read_text())
    steady, over = s["load_points"]
    assert steady["stopped_early"] is None and steady["aborted"] is None and steady["search"]["feasible"]
    assert steady["summary"]["measure_window_s"] > 4.5
    st = over["stopped_early"]
    assert st is not None and st["reason"].startswith("overloaded: the queue grows"), over
    assert over["aborted"] is None  # a finished point, not a failure: resume keeps it
    assert over["summary"]["measure_window_s"] < 4.0  # stopped well before its window's end
    assert not over["search"]["feasible"] and over["search"]["p_feasible"] == 0.0
    assert over["search"]["reasons"][0].startswith("stopped early: overloaded")
    stats = st["stats"]
    assert stats["p_ttft"] <= stats["level"] and stats["p_inflight"] <= stats["level"]
    assert stats["misses"] > stats["misses_allowed"]
    # the decision reads it as infeasible (not as a short feasible window)
    d, _ = run_decision(out, default_config(), [])
    pts = {p["load_value"]: p for p in d["points"]}
    assert pts[40.0]["feasible"] is False and pts[4.0]["feasible"] is True
    assert d["knees"][0]["knee_load"] == 4.0


def test_a_variant_that_cannot_win_stops_its_search_and_is_excluded(
    fake_engine, tiny_tokenizer_dir, tmp_path
):
    sweep = tmp_path / "sweep"
    common = ["traffic.duration_s=2", "traffic.warmup_s=0.5", "economy.halving=true"]
    # A: 4 streams, 40 req/s; measured first, its knee bracketed by a grid (24 feasible, 64 not)
    a = cfg(tiny_tokenizer_dir, 4, "traffic.points=[24,64]", *common)
    assert run_variant(a, sweep / "a") == 0
    # B: 1 stream, 10 req/s: its first probe (~31 req/s) is infeasible, and the output tok/s it
    # served there (~10 req/s x 8 tokens, +10 %) prices its capacity above A's interval
    b = cfg(tiny_tokenizer_dir, 1, "search=knee", "search.lo=20", "search.hi=48", *common)
    assert run_variant(b, sweep / "b") == 0
    (rj,) = (sweep / "b").glob("launch-*/run.json")
    s = json.loads(rj.read_text())
    h = s["resume"]["halving"]
    assert h["reason"].startswith("cannot win") and h["own_lower_usd"] > h["rival"]["usd_hi"]
    ks = s["resume"]["knee_search"]
    assert ks["stopped"].startswith("halved after") and ks["points_used"] < ks["worst_case_points"]
    # the same command again replays the halt: nothing is launched for the halved variant
    assert run_variant(b, sweep / "b") == 0
    assert [p.name for p in (sweep / "b").glob("launch-*")] == [rj.parent.name]
    v = json.loads((sweep / "b" / "variant.json").read_text())
    assert f"halved in {rj.parent.name}" in v["reason"], v
    # a launch that ended before the rule spoke (cut, or by a lab without it): the points it measured
    # are replayed, the variant is not launched to search on, and its run.json records the halt
    del s["resume"]["halving"]
    rj.write_text(json.dumps(s))
    assert run_variant(b, sweep / "b") == 0
    assert [p.name for p in (sweep / "b").glob("launch-*")] == [rj.parent.name]
    s2 = json.loads(rj.read_text())
    assert s2["resume"]["halving"]["reason"].startswith("cannot win"), s2["resume"]
    assert s2["notes"][-1]["kind"] == "halved_on_resume"
    dc = default_config()
    dc.n_boot = 200  # the exclusion does not depend on the replicates' count; seconds saved
    d, _ = run_decision(sweep, dc, [])
    excl = {e["variant_id"]: e["reasons"] for e in d["selection"]["excluded"]}
    assert "cannot_win" in [r["kind"] for r in excl[s["variant_id"]]]
    assert d["selection"]["chosen"]["variant_id"] != s["variant_id"]
