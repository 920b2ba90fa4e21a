"""A real Prometheus server scrapes a run through the prometheus.yml servelab wrote.

Debian's `prometheus` (scripts/setup.sh installs it, as it installs Chromium; without it this test
fails naming the command, it never skips). The lab (tests/support/lab_with_fakes.py: the real
run.py with the timing server as its engine) runs two short load points with monitor.port set;
Prometheus starts as soon as the config is written and scrapes every second; after the run its
HTTP API must hold, for each point, the goodput and $/1M goodput that run.json reports.

Tolerance: 0.5 % relative. The live figures come from the same records and the same SLO test
(analysis.slo.meets_mask) over the same window (the summary's measure_window_s, set when the
point ends), so only float formatting separates them; anything larger is a real disagreement.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.conftest import ROOT, SUPPORT, free_port, wait_http

INSTALL = "apt-get install -y prometheus"
TOLERANCE = 0.005


def _prometheus() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail(f"the Prometheus server is missing: run `{INSTALL}` (scripts/setup.sh does, as root)")
    return exe


def _query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scraping_the_written_config_agrees_with_run_json(tmp_path, tiny_tokenizer_dir):
    exe = _prometheus()
    mport, pport = free_port(), free_port()
    results = tmp_path / "results"
    lab_log = tmp_path / "lab.log"
    with open(lab_log, "w") as out:
        lab = subprocess.Popen(
            [sys.executable, str(SUPPORT / "lab_with_fakes.py"), "engine.name=timing", f"model.path={tiny_tokenizer_dir}",
             "model.built_by=null", "workload.prompt_tokens=20", "workload.output_tokens=12", "traffic=poisson",
             "traffic.points=[4,12]", "traffic.duration_s=5", "traffic.warmup_s=1", "slo.ttft_ms=25",
             f"results_dir={results}", "experiment_name=live", f"monitor.port={mport}", "monitor.linger_s=4",
             "report=false"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    prom = None
    try:
        deadline = time.monotonic() + 90
        while not (configs := list(results.glob("live/*/launch-1/prometheus.yml"))):
            assert lab.poll() is None, lab_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the run wrote no prometheus.yml"
            time.sleep(0.2)
        (config,) = configs
        cfg = yaml.safe_load(config.read_text())
        assert cfg["scrape_configs"][0]["static_configs"][0]["targets"] == [f"127.0.0.1:{mport}"]
        prom = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{pport}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"),
        )  # fmt: skip
        base = f"http://127.0.0.1:{pport}"
        wait_http(base + "/-/ready", timeout_s=60)
        assert lab.wait(timeout=180) == 0, lab_log.read_text()[-3000:]
        time.sleep(1.5)  # the scrape of the lingering exporter's last second is in
        run = json.loads(next(config.parent.glob("run.json")).read_text())
        points = {p["point_id"]: p["summary"]["decision"] for p in run["load_points"]}
        assert len(points) == 2

        def last(series: str) -> dict[str, float]:
            res = _query(base, f'last_over_time({series}{{run_id="{run["run_id"]}"}}[10m])')
            return {r["metric"]["point_id"]: float(r["value"][1]) for r in res}

        rps = last("servelab_point_goodput_requests_per_second")
        tok = last("servelab_point_goodput_output_tokens_per_second")
        usd = last("servelab_point_usd_per_1m_goodput_tokens")
        assert set(rps) == set(tok) == set(points), (rps, points)
        for pid, d in points.items():
            print(f"point {pid}: Prometheus {rps[pid]:.4f} req/s, {tok[pid]:.3f} tok/s, ${usd.get(pid, float('nan')):.4f}/1M;"
                  f" run.json {d['goodput_rps']:.4f}, {d['goodput_output_tok_per_s']:.3f}, ${d['usd_per_1m_goodput'] or float('nan'):.4f}")
            assert rps[pid] == pytest.approx(d["goodput_rps"], rel=TOLERANCE), pid
            assert tok[pid] == pytest.approx(d["goodput_output_tok_per_s"], rel=TOLERANCE), pid
            if d["usd_per_1m_goodput"] is None:  # no request met the SLO: no $/1M goodput, live or after
                assert pid not in usd
            else:
                assert usd[pid] == pytest.approx(d["usd_per_1m_goodput"], rel=TOLERANCE), pid
        # latency histograms and the run's state were stored too, under the sweep's labels
        ttft = _query(base, f'max_over_time(servelab_ttft_seconds_count{{run_id="{run["run_id"]}",phase="measure"}}[10m])')
        assert {r["metric"]["point_id"] for r in ttft} == set(points)
        assert _query(base, 'last_over_time(servelab_run_info{experiment="live"}[10m])')
        # the engine's own /metrics is scraped by the config's second job
        assert _query(base, 'max_over_time(up{job="engine"}[10m]) == 1')
    finally:
        for p in (prom, lab):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=20)


def _assert_port_free(port: int) -> None:
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("sig", ["SIGINT"])
def test_ctrl_c_stops_the_exporter_with_the_run(tmp_path, tiny_tokenizer_dir, sig):
    import signal

    mport = free_port()
    lab = subprocess.Popen(
        [sys.executable, str(SUPPORT / "lab_with_fakes.py"), "engine.name=timing", f"model.path={tiny_tokenizer_dir}",
         "model.built_by=null", "traffic.points=[2]", "traffic.duration_s=60", "traffic.warmup_s=0",
         f"results_dir={tmp_path}", f"monitor.port={mport}", "report=false"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        # Ctrl-C as from a terminal, whatever this pytest inherited: a shell's background job (nohup,
        # `&`) starts with SIGINT ignored, and a child that inherits that never sees the signal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{mport}/metrics", timeout_s=60)
        deadline = time.monotonic() + 60
        while "servelab_requests_total{" not in urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics").read().decode():
            assert time.monotonic() < deadline
            time.sleep(0.3)
        lab.send_signal(getattr(signal, sig))
        assert lab.wait(timeout=60) == 130
        _assert_port_free(mport)
    finally:
        if lab.poll() is None:
            lab.kill()
