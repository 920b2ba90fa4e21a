"""The HTML reports and their figures from hand-built summaries and records: key numbers, notes,
escaping, the SVG figures' hygiene (ids, determinism, text as text), the GPU timeline."""

from __future__ import annotations

import re

from analysis import report_data as rd
from analysis.catalog import direction_of
from analysis.metrics import derive
from analysis.notes import Note
from analysis.report import _env as report_env
from analysis.report import fmt, render_report
from analysis.run_summary import point_resources
from tests.analysis.test_catalog import cpu_rows
from tests.analysis.test_metrics import POINT, frame, point_records

SAT = [{"t_ns": 2 * 10**9, "cpu_pct": 75.0, "lag_max_ms": 1.0, "lag_mean_ms": 0.5}]


def summary_and_records():
    from analysis.metrics import summarize_point

    records = derive(frame(point_records()))
    point = summarize_point(records, **POINT, lag_samples=SAT)
    point.update(point_resources(point, cpu_rows(), "cpu", records.iloc[0:0]))
    summary = {
        "experiment": "exp<script>alert(1)</script>", "run_id": "run-1", "status": "ok", "failure": None,
        "started_at_utc": "2026-12-01T17:00:00+00:00", "finished_at_utc": "2026-12-01T17:01:00+00:00",
        "notes": [Note("preflight", "warning", "engine <b>flag</b> ignored").to_dict(), "a v1 free-text note"],
        "config": {
            "engine": {"name": "vllm"}, "model": {"name": "tiny", "path": "models/tiny"}, "quant": {"name": "none"},
            "gpu": {"name": "cpu", "count": 0},
            "workload": {"name": "fixed", "prompt_tokens": 10, "output_tokens": 4, "endpoint": "completions"},
            "traffic": {"kind": "poisson", "points": [2.0], "duration_s": 2.0, "warmup_s": 1.0},
        },
        "engine": None, "provenance": None, "engine_metrics": None,
        "telemetry": {"sampler": "cpu", "interval_s": 0.5, "samples": 10,
                      "gaps": [Note("telemetry", "gap", "no sample for 2.00 s after t_ns=5", t0_ns=5, t1_ns=7).to_dict()],
                      "summary_during_load": {"samples": 10, "engine_cpu_pct_mean": 150.0}},
        "load_points": [{"index": 0, "value": 2.0, "t0_ns": 0, "t_end_ns": 4 * 10**9, "summary": point}],
    }  # fmt: skip
    return summary, records


def row_cells(html: str, label: str) -> list[str]:
    row = re.search(rf"<tr><td class=\"l\">{re.escape(label)}</td>(.*?)</tr>", html, re.S)
    assert row, f"no table row for {label!r}"
    return [c.strip() for c in re.findall(r"<td>(.*?)</td>", row.group(1), re.S)]


def test_report_shows_the_point_numbers():
    summary, records = summary_and_records()
    html = render_report(summary, records, cpu_rows())
    cells = row_cells(html, "#0 · 2 req/s")
    p = summary["load_points"][0]["summary"]
    # ok / sent, err %, offered / scheduled, achieved, output tok/s, TTFT p50 p90 p99, ...
    assert cells[0] == "3 / 4"
    assert cells[1] == "40.0"
    assert cells[2] == "2.00 / 2.50"
    assert cells[3] == "1.50" and cells[4] == fmt(6.5, 0)
    assert cells[5] == "30.0" and cells[6] == fmt(p["ttft_ms"]["p90"]) and cells[7] == fmt(p["ttft_ms"]["p99"])
    assert cells[10] == "10.0"  # ITL p50
    # figures are inline SVG (no image to fetch); the comparison table has the point with its cost columns
    assert re.search(r'<figure class="plot" id="plot-timeline">\s*<figcaption>.*?</figcaption>\s*<svg ', html, re.S)
    assert "https://" not in html and not re.search(r'(src|href)="(?!#)', html)
    assert '<table class="sortable" id="comparison">' in html and "$ / 1M goodput tokens" in html


def test_report_renders_structured_and_v1_notes_and_escapes_text():
    summary, records = summary_and_records()
    html = render_report(summary, records, None)
    assert "<script>alert(1)</script>" not in html and "exp&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "engine &lt;b&gt;flag&lt;/b&gt; ignored" in html and "a v1 free-text note" in html
    assert "load generator CPU reached 75 %" in html  # a saturation Note, by its message
    assert "Telemetry gaps: no sample for 2.00 s after t_ns=5" in html
    assert "'source'" not in html  # no dict repr leaks into the page


def test_report_of_a_failed_run_without_points():
    summary, records = summary_and_records()
    summary.update(status="failed", load_points=[], failure={"reason": "engine exited <1>", "log_tail": "x < y"})
    html = render_report(summary, records.iloc[0:0], None)
    assert "engine exited &lt;1&gt;" in html and "x &lt; y" in html and "Latency and throughput" not in html


def test_validity_lists_notes_and_reasons_where_they_apply():
    summary, records = summary_and_records()
    summary["load_points"][0]["summary"]["decision"] = {
        "slo": "interactive", "pricing": "cpu_vm", "verdict": "invalid", "feasible": False, "attainment": 0.5,
        "verdict_reasons": [{"kind": "too_few_samples", "severity": "invalid", "message": "only 3 successful requests"}],
        "feasibility_reasons": ["attainment 0.5 < 0.9"], "usd_per_1m_goodput": None,
    }  # fmt: skip
    html = render_report(summary, records, None)
    val = html[html.index('<div id="validity-table">') :]
    assert '<td class="l">2 req/s</td><td class="l sev-invalid">invalid</td><td class="l">only 3 successful requests</td>' in val
    assert '<td class="l sev-SLO">SLO</td><td class="l">attainment 0.5 &lt; 0.9</td>' in val
    assert 'engine &lt;b&gt;flag&lt;/b&gt; ignored' in val and "No load point of this run" not in html
    assert "invalid at</dt><dd>2 req/s" in html


def test_svg_figures_are_deterministic_prefixed_and_escape_text():
    from analysis import report_plots as rp

    def fig(label):
        plt = rp.pyplot()
        f, ax = plt.subplots(figsize=(3, 2))
        ax.scatter([1, 2], [3, 4], label=label)
        ax.legend()
        return f

    a, b = rp.svg(fig("<script>x</script>"), "k1"), rp.svg(fig("<script>x</script>"), "k1")
    assert a == b and a.startswith("<svg ") and 'id="svg-k1"' in a
    assert "<script>" not in a and "&lt;script&gt;x&lt;/script&gt;" in a  # text stays text
    assert "http://" not in a and "<metadata>" not in a  # no namespaces or metadata to resolve
    ids = re.findall(r'\bid="([^"]+)"', a)
    assert ids and all(i.startswith(("k1-", "svg-k1")) for i in ids)
    refs = re.findall(r'(?:url\(#|xlink:href="#)([^)"]+)', a)
    assert refs and set(refs) <= set(ids)  # every internal reference points at a prefixed id


def test_gpu_timeline_and_engine_series_by_suffix():
    import pandas as pd

    from analysis import report_plots as rp
    from analysis.report_data import engine_concepts

    t = [0, 10**9, 2 * 10**9]
    tel = pd.DataFrame([{"t_ns": ti, "gpu": g, "power_w": 100.0 + g, "gpu_util_pct": 50.0, "mem_used_bytes": 2**33}
                        for ti in t for g in (0, 1)])  # fmt: skip
    raw = pd.DataFrame([{"t_ns": ti, "name": n, "value": 1.0} for ti in t
                        for n in ("x:num_requests_running", "x:num_requests_waiting", "x:kv_cache_usage_perc", "x:other")])  # fmt: skip
    eng = engine_concepts(raw, "someengine")
    assert list(eng.columns) == ["t_ns", "running", "waiting", "kv_usage_frac"] and len(eng) == 3
    assert list(engine_concepts(raw.assign(name=raw["name"].str.replace("x:", "vllm:")), "vllm").columns) == [
        "t_ns", "running", "waiting", "kv_usage_frac"]  # fmt: skip
    _, records = summary_and_records()
    s = rp.timeline_plot(records, tel, eng, [{"label": "#0", "t0_ns": 0, "t_end_ns": 2 * 10**9}], 0, "nvml")
    for label in ("power, all GPUs (W)", "GPU utilisation, mean (%)", "GPU memory used, all GPUs (GiB)",
                  "running requests", "waiting requests", "KV-cache use (%)", "TTFT (ms)"):  # fmt: skip
        assert f">{label}<" in s, label


def table_row(variant: str, operating: bool, **values) -> dict:
    r = {f: None for f in rd.BASE_FIELDS} | {f"{m}_{p}{e}": None for m in rd.LATENCY for p in ("p50", "p99")
                                            for e in ("", "_lo", "_hi")}  # fmt: skip
    return r | {"variant_id": variant, "variant_label": variant, "run_id": variant, "point_id": "p", "load_value": 1.0,
                "load_unit": "req/s", "is_operating_point": operating, "is_chosen": False, **values}  # fmt: skip


def test_the_comparison_table_says_which_side_is_better_from_the_metric_catalog(monkeypatch):
    better = rd.comparison_directions()
    # every numeric column of the table shows a catalogued metric with a direction
    assert better == {k: direction_of(m) for k, m in rd.COMPARISON_METRICS.items()} and None not in better.values()
    assert better["ttft_p99"] == better["usd_per_1m_goodput"] == "lower" and better["goodput_rps"] == "higher"
    rows = [table_row("a", True, ttft_p99=120.0, goodput_rps=5.0, usd_per_1m_goodput=2.0),
            table_row("b", True, ttft_p99=80.0, goodput_rps=4.0, usd_per_1m_goodput=2.0),
            table_row("b", False, ttft_p99=10.0, goodput_rps=9.0, usd_per_1m_goodput=1.0)]  # fmt: skip
    best = rd.best_cells(rows, better)  # among the operating points only (row 2 is not one)
    assert best["ttft_p99"] == [1] and best["goodput_rps"] == [0] and best["usd_per_1m_goodput"] == [0, 1]  # a tie
    assert "mbu" not in best  # no values to compare
    assert rd.best_cells(rows[:1], better) == {}  # one variant: nothing to compare
    html = report_env().get_template("_table.html.j2").render(rows=rows, show_variant=True, v={"better": better, "best": best})
    assert '<th data-sort="num" data-better="lower" title="lower is better (metric catalog)">TTFT p99 ms' in html
    assert 'data-better="higher" title="share of measured requests meeting every SLO threshold; higher is better' in html
    assert '<th data-sort="num" data-key="usd" data-better="lower"' in html
    assert html.count('class="best"') == sum(len(v) for v in best.values()) == 4
    # the catalog drives it: were a lower TTFT worse, the other operating point would be the best
    monkeypatch.setattr(rd, "direction_of", lambda m: "higher" if m == "ttft_ms_p99" else direction_of(m))
    assert rd.best_cells(rows, rd.comparison_directions())["ttft_p99"] == [0]


def test_the_run_report_table_carries_the_directions():
    summary, records = summary_and_records()
    html = render_report(summary, records, None)
    table = html[html.index('<table class="sortable" id="comparison">') : html.index("</thead>")]
    assert table.count("data-better=") == len(rd.COMPARISON_METRICS) and 'class="best"' not in html

