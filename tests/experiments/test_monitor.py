"""Live monitoring (experiments.monitor, analysis.live): the series catalog and its doc, the
dashboard, the live SLO figures against the decision's, the passive monitor against the timing
server's /metrics (restarts, malformed scrapes), and a busy port refused in one line.
The test against a real Prometheus server: test_monitor_prometheus.py."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from analysis.catalog import METRICS, SERIES, SERIES_PREFIX, render_series_markdown
from analysis.live import REQUEST_LATENCY_BUCKETS_S, EngineLive, Histogram, PointLive, usd_per_1m
from analysis.metrics import derive
from analysis.slo import evaluate_point
from engines import ADAPTERS
from engines.base import EngineAdapter
from experiments.config import to_run_config
from experiments.monitor import PassiveMonitor, RunMonitor, detect_engine, parse_scrape, write_scrape_config
from loadgen.records import empty_record, to_table
from tests.conftest import ROOT, SUPPORT, compose, free_port

DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
NAMES = {s.name for s in SERIES}


def _records(n: int, t0: int, *, rng: np.random.Generator, phase: str = "measure") -> list[dict]:
    """Synthetic raw records: TTFT 20..800 ms, 2..20 tokens 5..60 ms apart, a few errors and drops."""
    out = []
    for i in range(n):
        sched = t0 + int(i * 1e8)
        status = "ok" if i % 17 else ("error" if i % 2 else "dropped")
        if status == "dropped":
            out.append(empty_record(load_point=0, phase=phase, request_id=f"r{i}", t_scheduled_ns=sched, status=status))
            continue
        sent = sched + int(rng.uniform(0, 3e6))
        ttft = int(rng.uniform(20e6, 800e6))
        k = int(rng.integers(2, 21))
        chunks = [int(c) for c in np.cumsum([sent + ttft, *rng.uniform(5e6, 60e6, k - 1).astype(np.int64)])]
        out.append(empty_record(load_point=0, phase=phase, request_id=f"r{i}", t_scheduled_ns=sched, t_sent_ns=sent,
                                t_first_token_ns=chunks[0] if status == "ok" else None,
                                t_last_token_ns=chunks[-1] if status == "ok" else None,
                                t_done_ns=chunks[-1] + 1000, chunk_ns=chunks if status == "ok" else [],
                                status=status, output_tokens=k if status == "ok" else None,
                                prompt_tokens=7))  # fmt: skip
    return out


def _cfg(*overrides: str):
    return to_run_config(compose(["monitor.port=9499", *overrides]))


# -- the catalog, its doc, the names -------------------------------------------------------------
def test_series_follow_prometheus_conventions_and_mirror_catalogued_metrics():
    paths = {(m.scope, m.path) for m in METRICS}
    for s in SERIES:
        assert s.name.startswith(SERIES_PREFIX) and re.fullmatch(r"[a-z_][a-z0-9_]*", s.name), s.name
        assert (s.kind == "counter") == s.name.endswith("_total"), s.name
        assert s.kind in ("counter", "gauge", "histogram") and s.where in ("run", "passive", "both")
        assert "usd" in s.name if "USD" in s.unit else "usd" not in s.name, s.name
        assert not re.search(r"_(ms|us|ns|mb|gib|kwh|percent|pct)(_|$)", s.name), f"{s.name}: base units only"
        if s.unit == "s":
            assert s.name.endswith(("_seconds", "_seconds_total")), s.name
        assert s.mirrors is None or s.mirrors in paths, f"{s.name} mirrors {s.mirrors}, which the catalog lacks"
    assert len(NAMES) == len(SERIES)


def test_monitoring_doc_is_rendered_from_the_catalog():
    want = render_series_markdown((ROOT / "docs" / "_monitoring_intro.md").read_text())
    have = (ROOT / "docs" / "monitoring.md").read_text()
    assert have == want, "docs/monitoring.md differs from the catalog: run `python scripts/gen_metrics_doc.py`"
    for s in SERIES:
        assert f"`{s.name}`" in have


def _exported(registry: CollectorRegistry) -> dict[str, dict]:
    """family name (counters with _total, as Prometheus stores them) -> {type, samples}"""
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = {"type": fam.type, "samples": fam.samples}
    return out


def _fed_run_monitor(tmp_path: Path) -> RunMonitor:
    """A RunMonitor (port not bound) that read a point's records, self-checks, NVML and vLLM scrapes."""
    cfg = _cfg()
    work = tmp_path / "work"
    work.mkdir()
    mon = RunMonitor(cfg, run_id="r-1", variant_id="v1", run_dir=tmp_path, work=work)
    mon.point_started(0, 4.0)
    now = time.monotonic_ns()
    recs = _records(60, now - int(8e9), rng=np.random.default_rng(1))
    (work / "requests.0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"torn line')
    (work / "loadgen_lag.0.jsonl").write_text(json.dumps({"t_ns": now, "lag_max_ms": 3.0, "cpu_pct": 9.0, "worker": 0}) + "\n")
    (work / "telemetry.jsonl").write_text("".join(
        json.dumps({"t_ns": now - int(k * 1e9), "gpu": 0, "energy_j": 1000.0 - 300 * k, "power_w": 300.0}) + "\n"
        for k in (4, 3, 2, 1, 0)))  # fmt: skip
    lines = []
    for k, (tok, req, run) in enumerate([(100, 2, 3), (400, 6, 0), (900, 9, 2)]):
        t = now - int((3 - k) * 1e9)
        for name, value, labels in (("vllm:generation_tokens_total", tok, {}), ("vllm:request_success_total", req, {}),
                                    ("vllm:num_requests_running", run, {}), ("vllm:num_requests_waiting", 0, {}),
                                    ("vllm:kv_cache_usage_perc", 0.25, {}),
                                    ("vllm:time_to_first_token_seconds_bucket", req, {"le": "0.1"}),
                                    ("vllm:time_to_first_token_seconds_bucket", req, {"le": "+Inf"}),
                                    ("vllm:time_to_first_token_seconds_sum", 0.05 * req, {}),
                                    ("vllm:request_time_per_output_token_seconds_bucket", req, {"le": "0.01"}),
                                    ("vllm:request_time_per_output_token_seconds_bucket", req, {"le": "+Inf"}),
                                    ("vllm:request_time_per_output_token_seconds_sum", 0.005 * req, {})):  # fmt: skip
            lines.append(json.dumps({"t_ns": t, "name": name, "labels": json.dumps(labels), "value": value}))
    lines.append(json.dumps({"t_ns": now, "name": None, "error": "URLError"}))  # a failed scrape, flushed by the next
    lines.append(json.dumps({"t_ns": now + 1, "name": "vllm:num_requests_running", "labels": "{}", "value": 1}))
    (work / "engine_metrics.jsonl").write_text("\n".join(lines) + "\n")
    mon._read()
    return mon


def test_the_exporters_emit_exactly_the_catalogued_series(tmp_path):
    run = _fed_run_monitor(tmp_path)
    got = _exported(run.registry)
    passive = PassiveMonitor("http://127.0.0.1:1/metrics", engine="vllm", usd_per_hour=2.0, window_s=30, label="p")
    text = _vllm_text(tokens=10, requests=1, running=1)
    passive.live.add_scrape(time.monotonic_ns() - int(2e9), parse_scrape(text))
    passive.live.add_scrape(time.monotonic_ns(), parse_scrape(_vllm_text(tokens=110, requests=3, running=0)))
    reg = CollectorRegistry()
    reg.register(passive)
    pgot = _exported(reg)
    kinds = {s.name: s.kind for s in SERIES}
    for name, fam in {**got, **pgot}.items():
        assert name in NAMES, f"{name} is exported but not in analysis.catalog.SERIES"
        assert fam["type"] == kinds[name], name
    assert set(got) == {s.name for s in SERIES if s.where in ("run", "both")}

    def value(name: str) -> float:
        (smp,) = [x for x in got[name]["samples"] if x.name == name]
        return smp.value

    # NVML: the energy counter rose 300 J a second; J/token = 300 W / the window's output tok/s
    assert value("servelab_gpu_power_watts") == 300.0
    assert value("servelab_joules_per_output_token") == pytest.approx(300.0 / value("servelab_output_tokens_per_second"))
    # vLLM's counters, read from the run's own scrapes: 800 tokens in the 2 s between the 3 scrapes
    assert value("servelab_engine_output_tokens_per_second") == pytest.approx(400.0, rel=1e-6)
    assert value("servelab_engine_kv_cache_usage_ratio") == 0.25
    assert set(pgot) <= {s.name for s in SERIES if s.where in ("passive", "both")}
    assert {s.name for s in SERIES if s.where == "passive"} <= set(pgot)
    # every run series carries the sweep's labels
    with_point = {s.name for s in SERIES if "point_id" in s.labels}
    for name, fam in got.items():
        for smp in fam["samples"]:
            assert {"variant_id", "run_id"} <= set(smp.labels), (name, smp.labels)
            if name in with_point:
                assert smp.labels["point_id"], name


# -- the live figures against the decision's -----------------------------------------------------
def test_point_live_ends_on_the_decisions_goodput_attainment_and_cost():
    rng = np.random.default_rng(7)
    t0 = 10**12
    recs = _records(40, t0, rng=rng, phase="warmup") + _records(300, t0 + int(4e9), rng=rng)
    slo = _cfg("slo.ttft_ms=400", "slo.tpot_ms=40", "slo.itl_ms=50").slo
    live = PointLive(index=0, point_id="p", load_value=10, load_unit="req/s", slo=slo, usd_per_hour=3.0,
                     duration_s=30.0, window_s=10.0)  # fmt: skip
    for k in range(0, len(recs), 37):  # as the sink flushes: in pieces
        live.add_records(recs[k:k + 37])
    live.finish(measure_window_s=30.0)
    res = evaluate_point(derive(to_table(recs).to_pandas()), slo, window_s=30.0)
    g = live.gauges(t0 + int(40e9))
    assert g["point_goodput_requests_per_second"] == pytest.approx(res.goodput_rps, rel=1e-12)
    assert g["point_goodput_output_tokens_per_second"] == pytest.approx(res.goodput_output_tok_per_s, rel=1e-12)
    assert g["point_slo_attainment_ratio"] == pytest.approx(res.attainment, rel=1e-12)
    assert g["point_usd_per_1m_goodput_tokens"] == pytest.approx(usd_per_1m(3.0, res.goodput_output_tok_per_s), rel=1e-12)
    assert 0 < res.attainment < 1  # the SLO bites: some requests meet it, some do not
    assert g["requests_dropped"] == 1.0
    # the histograms hold every ok measure request once
    ok = sum(1 for r in recs if r["status"] == "ok" and r["phase"] == "measure")
    assert live.hist[("ttft", "measure")].count == ok
    assert live.hist[("itl", "measure")].count == sum(len(r["chunk_ns"]) - 1 for r in recs
                                                      if r["status"] == "ok" and r["phase"] == "measure")  # fmt: skip


def test_sliding_window_counts_completions_in_the_window():
    slo = _cfg().slo
    live = PointLive(index=0, point_id="p", load_value=1, load_unit="req/s", slo=slo, usd_per_hour=1.0,
                     duration_s=60.0, window_s=5.0)  # fmt: skip
    t = 10**12
    recs = [empty_record(phase="measure", t_scheduled_ns=t + i * 10**9, t_sent_ns=t + i * 10**9,
                         t_first_token_ns=t + i * 10**9 + 10**7, t_last_token_ns=t + i * 10**9 + 5 * 10**7,
                         t_done_ns=t + i * 10**9 + 5 * 10**7, chunk_ns=[t + i * 10**9 + 10**7 * (k + 1) for k in range(5)],
                         status="ok", output_tokens=5) for i in range(20)]  # fmt: skip
    live.add_records(recs)
    g = live.gauges(t + 20 * 10**9)  # completions at 15.05 .. 19.05 s lie in (15, 20]
    assert g["output_tokens_per_second"] == pytest.approx(5 * 5 / 5.0)
    assert g["goodput_requests_per_second"] == pytest.approx(1.0)
    assert g["usd_per_1m_goodput_tokens"] == pytest.approx(1.0 / (5.0 * 3600) * 1e6)


def test_histogram_buckets_are_prometheus_le_inclusive():
    h = Histogram(REQUEST_LATENCY_BUCKETS_S)
    h.observe(np.array([0.005, 0.0051, 61.0, np.nan]))
    cum = dict(h.cumulative())
    assert cum["0.005"] == 1 and cum["0.01"] == 2 and cum["60.0"] == 2 and cum["+Inf"] == 3 and h.count == 3


# -- the passive monitor ------------------------------------------------------------------------
def _vllm_text(*, tokens: float, requests: float, running: float, ttft: tuple[float, float] = (0, 0)) -> str:
    fast, total = ttft
    return (f"# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{{model_name=\"m\"}} {tokens}\n"
            f"# TYPE vllm:request_success_total counter\n"
            f"vllm:request_success_total{{finished_reason=\"length\"}} {requests}\n"
            f"vllm:request_success_total{{finished_reason=\"stop\"}} 0\n"
            f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running {running}\n"
            f"# TYPE vllm:time_to_first_token_seconds histogram\n"
            f"vllm:time_to_first_token_seconds_bucket{{le=\"0.1\",engine=\"0\"}} {fast}\n"
            f"vllm:time_to_first_token_seconds_bucket{{le=\"+Inf\",engine=\"0\"}} {total}\n"
            f"vllm:time_to_first_token_seconds_count{{engine=\"0\"}} {total}\n"
            f"vllm:time_to_first_token_seconds_sum{{engine=\"0\"}} {0.2 * total}\n")  # fmt: skip


def test_engine_live_rates_restarts_and_reaggregated_histograms():
    names = {**ADAPTERS["vllm"].metric_names, **ADAPTERS["vllm"].monitor_names}
    eng = EngineLive(names, usd_per_hour=4.0, window_s=100)
    s = 10**9
    eng.add_scrape(0, parse_scrape(_vllm_text(tokens=1000, requests=10, running=2, ttft=(5, 10))))
    eng.add_scrape(10 * s, parse_scrape(_vllm_text(tokens=3000, requests=30, running=0, ttft=(15, 30))))
    eng.add_scrape(20 * s, parse_scrape(_vllm_text(tokens=3000, requests=30, running=0, ttft=(15, 30))))
    eng.add_scrape(30 * s, parse_scrape(_vllm_text(tokens=50, requests=1, running=0, ttft=(1, 1))))  # restarted
    eng.add_scrape(40 * s, parse_scrape(_vllm_text(tokens=2050, requests=21, running=1, ttft=(11, 21))))
    g = eng.gauges()
    assert eng.resets == 1 and eng.gap_seconds == pytest.approx(10.0)
    # 2000 tokens in [0, 10], 0 in [10, 20], 2000 in [30, 40]; the restart's interval is left out
    assert g["engine_output_tokens_per_second"] == pytest.approx(4000 / 30)
    assert g["engine_requests_per_second"] == pytest.approx(40 / 30)
    assert g["engine_usd_per_1m_output_tokens"] == pytest.approx(4.0 / (4000 / 30 * 3600) * 1e6)
    assert g["engine_idle_ratio"] == pytest.approx(10 / 30)  # [10, 20] had no running request at either end
    assert eng.tokens_total == 4000 and eng.requests_total == 40
    cum = dict(eng.hist["ttft_seconds"].cumulative())
    assert cum == {"0.1": 20.0, "+Inf": 40.0}  # 20 + 20 requests, 10 + 10 under 100 ms
    assert eng.hist["ttft_seconds"].total == pytest.approx(0.2 * 40)
    assert detect_engine(n for n, _, _ in parse_scrape(_vllm_text(tokens=1, requests=1, running=0))) == "vllm"


class _TimingMetrics(EngineAdapter):
    """The timing server's /metrics read as an engine's (test only)."""

    name = "timing_metrics"
    metric_names = {"running": "fake:num_requests_running", "generation_tokens_total": "fake:generation_tokens_total"}
    monitor_names = {"requests_total": "fake:requests_total"}


def _start_timing(port: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(SUPPORT / "timing_server.py"), "--port", str(port), "--ttft-ms", "10",
                          "--itl-ms", "5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    from tests.conftest import wait_http

    wait_http(f"http://127.0.0.1:{port}/health")
    return p


def _send(base: str, n: int, max_tokens: int) -> None:
    for _ in range(n):
        body = json.dumps({"model": "m", "prompt": "hi", "max_tokens": max_tokens, "stream": True}).encode()
        req = urllib.request.Request(base + "/v1/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()


def test_passive_monitor_against_the_timing_server_survives_a_restart_and_garbage(monkeypatch):
    monkeypatch.setitem(ADAPTERS, "timing_metrics", _TimingMetrics)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mon = PassiveMonitor(base + "/metrics", engine=None, usd_per_hour=2.0, window_s=60, label="t")
    server = _start_timing(port)
    try:
        assert mon.scrape_once()
        assert mon.engine_name == "timing_metrics"  # found from the names in the scrape
        _send(base, 5, 20)
        assert mon.scrape_once()
        server.terminate()
        server.wait(10)
        assert not mon.scrape_once()  # down: counted, no exception
        server = _start_timing(port)  # restarted: its counters start from 0
        _send(base, 2, 10)
        assert mon.scrape_once()
        _send(base, 3, 10)
        assert mon.scrape_once()
    finally:
        server.terminate()
        server.wait(10)
    live = mon.live
    assert live.resets == 1, "the restart is one counted gap"
    assert live.tokens_total == 5 * 20 + 3 * 10  # the 2 requests inside the restart's interval are not filled in
    assert live.requests_total == 5 + 3
    assert live.failed_scrapes == 1 and live.ok_scrapes == 4
    g = live.gauges()
    assert g["engine_output_tokens_per_second"] > 0 and g["engine_usd_per_1m_output_tokens"] > 0
    # a malformed scrape is counted and skipped, never a crash
    bad = _serve_text(b"vllm:generation_tokens_total{oops 12\n\x00garbage {{{\n")
    try:
        mon.url = f"http://127.0.0.1:{bad.server_port}/metrics"
        assert not mon.scrape_once()
        assert mon.malformed == 1 and live.failed_scrapes == 2
    finally:
        bad.shutdown()


def _serve_text(body: bytes) -> ThreadingHTTPServer:
    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_passive_monitor_command_serves_cost_of_the_timing_server(tmp_path):
    """`python -m experiments.monitor` end to end (engine=vllm names; the timing server exposes
    none of them, so only the scrape counters and the price move): it serves, and stops at duration_s."""
    port, mport = free_port(), free_port()
    server = _start_timing(port)
    try:
        p = subprocess.Popen([sys.executable, "-m", "experiments.monitor", f"engine.base_url=http://127.0.0.1:{port}",
                              "engine.metrics_path=/metrics", "pricing=cpu_vm", "gpu=cpu", f"monitor.port={mport}",
                              "monitor.scrape_interval_s=0.2", "monitor.duration_s=6"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        text = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and 'result="ok"' not in text:
            time.sleep(0.3)
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=2).read().decode()
            except OSError:
                pass
        out, _ = p.communicate(timeout=30)
    finally:
        server.terminate()
        server.wait(10)
    assert p.returncode == 0, out
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["servelab_usd_per_hour"].samples[0].value == pytest.approx(0.10)
    ok = [s for s in fams["servelab_engine_scrapes"].samples if s.labels.get("result") == "ok" and s.name.endswith("_total")]
    assert ok and ok[0].value >= 1


def test_passive_monitor_refuses_a_busy_port_in_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "experiments.monitor", "engine.base_url=http://127.0.0.1:9",
                            f"monitor.port={port}"], cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("monitor:")]
    assert lines == [f"monitor: monitor.port={port} is already in use on 127.0.0.1; pick another port"], r.stderr


# -- the run: a busy port, the scrape config ------------------------------------------------------
def test_a_run_with_a_busy_monitor_port_is_refused_before_the_engine_in_one_line(tmp_path, tiny_tokenizer_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, str(SUPPORT / "lab_with_fakes.py"), "engine.name=timing",
                            f"model.path={tiny_tokenizer_dir}", "model.built_by=null", f"results_dir={tmp_path}",
                            f"monitor.port={port}", "report=false"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    refusals = [ln for ln in (r.stdout + r.stderr).splitlines() if "monitor.port" in ln]
    assert len(refusals) == 1 and f"monitor.port={port} cannot be served on 127.0.0.1" in refusals[0], refusals
    assert "started timing" not in r.stdout + r.stderr  # no engine was started
    (run_json,) = tmp_path.glob("*/*/launch-1/run.json")
    rec = json.loads(run_json.read_text())
    assert rec["status"] == "rejected" and "monitor.port" in rec["failure"]["reason"]


def test_scrape_config_names_the_lab_and_the_engine(tmp_path):
    import yaml

    p = write_scrape_config(tmp_path / "prometheus.yml", lab="127.0.0.1:9400", engine_url="http://127.0.0.1:8123",
                            metrics_path="/metrics", interval_s=1.0, run_id="r", node_exporter=None)  # fmt: skip
    cfg = yaml.safe_load(p.read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["servelab"]["static_configs"][0]["targets"] == ["127.0.0.1:9400"] and jobs["servelab"]["honor_labels"]
    assert jobs["engine"]["static_configs"][0]["targets"] == ["127.0.0.1:8123"]
    assert jobs["engine"]["metrics_path"] == "/metrics" and cfg["global"]["scrape_interval"] == "1s"


# -- the Grafana dashboard -----------------------------------------------------------------------
_SERIES_RE = re.compile(r"\b(servelab_[a-z0-9_]+)")


def test_dashboard_is_an_importable_grafana_dashboard_whose_queries_name_exported_series():
    d = json.loads(DASHBOARD.read_text())
    for key in ("title", "uid", "panels", "templating", "schemaVersion", "time"):
        assert key in d, key
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 30
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert any(i["type"] == "datasource" and i["pluginId"] == "prometheus" for i in d["__inputs"])
    histogram = {s.name for s in SERIES if s.kind == "histogram"}
    allowed = NAMES | {f"{h}{suffix}" for h in histogram for suffix in ("_bucket", "_sum", "_count")}
    ids, titles = set(), " ".join(p["title"] for p in d["panels"]).lower()
    for p in d["panels"]:
        assert p["id"] not in ids and isinstance(p["id"], int)
        ids.add(p["id"])
        assert p["type"] in ("timeseries", "stat", "table", "bargauge", "gauge") and p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["datasource"]["uid"] == "${datasource}"
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            names = _SERIES_RE.findall(t["expr"])
            assert names, f"panel {p['title']!r}: {t['expr']!r} names no servelab series"
            for n in names:
                assert n in allowed, f"panel {p['title']!r} queries {n}, which servelab does not export"
            assert t["datasource"]["uid"] == "${datasource}"
    # the panels the issue asks for
    for word in ("$ per 1m", "goodput against offered load", "slo", "tokens/s", "kv-cache", "power"):
        assert word in titles, word


def test_bucket_bounds_in_the_doc_match_the_code():
    doc = (ROOT / "docs" / "monitoring.md").read_text()
    from analysis.live import TOKEN_LATENCY_BUCKETS_S

    for bounds in (REQUEST_LATENCY_BUCKETS_S, TOKEN_LATENCY_BUCKETS_S):
        assert ", ".join(f"{b:g}" for b in bounds) in doc.replace("\n  ", " ")


def test_tgi_requests_and_tokens_from_its_counter_and_histogram_sum():
    def text(n: int, tok: int) -> str:
        return (f"# TYPE tgi_request_count counter\ntgi_request_count {n}\n"
                "# TYPE tgi_request_generated_tokens histogram\n"
                f'tgi_request_generated_tokens_bucket{{le="+Inf"}} {n}\ntgi_request_generated_tokens_sum {tok}\n'
                f"tgi_request_generated_tokens_count {n}\n# TYPE tgi_batch_current_size gauge\ntgi_batch_current_size 0\n"
                )  # fmt: skip

    assert detect_engine(n for n, _, _ in parse_scrape(text(1, 1))) == "tgi"
    eng = EngineLive({**ADAPTERS["tgi"].metric_names, **ADAPTERS["tgi"].monitor_names}, usd_per_hour=1.0, window_s=60)
    eng.add_scrape(0, parse_scrape(text(1, 10)))
    eng.add_scrape(10 * 10**9, parse_scrape(text(5, 110)))
    g = eng.gauges()
    assert g["engine_output_tokens_per_second"] == pytest.approx(10.0)
    assert g["engine_requests_per_second"] == pytest.approx(0.4) and g["engine_idle_ratio"] == 1.0
