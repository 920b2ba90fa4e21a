"""Distributed load does not trust the network (issue 25, finding 1): master and workers prove a
shared token to each other, a worker with the wrong one is refused (and refuses that master) and
gets no spec, and a worker sends where its own command line says, with the key its own command
line names, whatever the master's spec says."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from loadgen.driver import build_spec, run_load_point
from loadgen.jsonl import read_jsonl
from loadgen.locust import auth
from loadgen.schema import TrafficConfig, WorkloadConfig
from loadgen.workload import WorkloadItem
from tests.conftest import free_port

pytestmark = pytest.mark.serial  # a distributed load point: alone, in scripts/test.sh's second pass

ROOT = Path(__file__).resolve().parents[2]
ITEMS = [WorkloadItem(i, f"p{i}", 3, 10) for i in range(8)]
TOKEN = "the-right-shared-token-0123456789"
VICTIM = "sk-victim-secret-on-the-worker-host"
WORKER_KEY = "sk-worker-own-key-for-server-two"


def worker(port: int, out: Path, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "loadgen.locust_runner", "--role", "worker", "--master-host", "127.0.0.1",
         "--master-port", str(port), "--out-dir", str(out), *args],
        cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # noqa: SIM115
    )  # fmt: skip


def test_wrong_token_is_refused_and_the_worker_keeps_its_own_target_and_key(timing_server, tmp_path, monkeypatch):
    url_master, log_master_server = timing_server(ttft_ms=10, itl_ms=2, api_key=VICTIM)
    url_own, log_own_server = timing_server(ttft_ms=10, itl_ms=2, api_key=WORKER_KEY)
    monkeypatch.setenv("SERVELAB_TEST_WORKER_TOKEN", TOKEN)
    monkeypatch.setenv("SERVELAB_VICTIM_KEY", VICTIM)  # what the master's spec names
    monkeypatch.setenv("SERVELAB_WORKER_KEY", WORKER_KEY)  # what the remote worker's command line names
    port = free_port()
    tr = TrafficConfig(kind="poisson", request_timeout_s=20, drain_timeout_s=20, max_inflight=64, warmup_s=0.3,
                       duration_s=1.5, workers=1, remote_workers=1, master_port=port,
                       worker_token_env="SERVELAB_TEST_WORKER_TOKEN")  # fmt: skip
    spec = build_spec(load_point=0, load_value=10.0, traffic=tr, workload=WorkloadConfig(), items=ITEMS,
                      base_url=url_master, model="m", extras_for=lambda n: {}, workdir=tmp_path / "lab",
                      api_key_env="SERVELAB_VICTIM_KEY")  # fmt: skip
    (tmp_path / "wrong").write_text("not-the-shared-token-at-all-xyz\n")
    box: dict = {}
    th = threading.Thread(target=lambda: box.update(out=run_load_point(spec, tmp_path / "lab")))
    th.start()
    rogue = worker(port, tmp_path / "rogue", tmp_path / "rogue.log", "--token-file", str(tmp_path / "wrong"),
                   "--target-url", url_own)  # fmt: skip
    assert rogue.wait(timeout=60) == auth.EXIT_AUTH
    honest = worker(port, tmp_path / "remote", tmp_path / "remote.log", "--token-env", "SERVELAB_TEST_WORKER_TOKEN",
                    "--target-url", url_own, "--api-key-env", "SERVELAB_WORKER_KEY")  # fmt: skip
    try:
        th.join(timeout=120)
        assert honest.wait(timeout=30) == 0
    finally:
        for p in (rogue, honest):
            if p.poll() is None:
                p.kill()
    out = box["out"]
    assert out.problems == [] and out.meta["merge_ok"] is True, out.problems
    # the rogue took nothing: it refused the master (which does not know its token) and wrote no record
    assert "refused master" in (tmp_path / "rogue.log").read_text()
    assert not list((tmp_path / "rogue").glob("*.jsonl"))
    lab_log = (tmp_path / "lab" / "loadgen.log").read_text()
    assert "[loadgen] refused worker" in lab_log and TOKEN not in lab_log
    # the remote worker sent to its own target with its own key (the spec's URL and variable ignored)
    workers = {r["worker"] for r in out.records}
    assert len(workers) == 2 and {r["status"] for r in out.records} == {"ok"}
    own_server = read_jsonl(log_own_server)
    master_server = read_jsonl(log_master_server)
    assert own_server and master_server  # each server got the requests of one worker
    assert len(own_server) + len(master_server) == len(out.records)
    remote_records = read_jsonl(next((tmp_path / "remote").glob("requests.0.worker*.jsonl")))
    assert len(remote_records) == len(own_server) and {r["status"] for r in remote_records} == {"ok"}


def test_a_worker_needs_its_own_target_and_a_token():
    r = subprocess.run([sys.executable, "-m", "loadgen.locust_runner", "--role", "worker", "--token-env", "NOPE_UNSET",
                        "--target-url", "http://127.0.0.1:1", "--out-dir", "/tmp/x"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "NOPE_UNSET must hold a shared token" in r.stderr
    r = subprocess.run([sys.executable, "-m", "loadgen.locust_runner", "--role", "worker", "--token-env", "PATH"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "needs --target-url" in r.stderr


def test_proofs_bind_role_and_both_nonces():
    t = TOKEN.encode()
    p = auth.proof(t, "master", "a", "b")
    assert auth.check(t, "master", "a", "b", p)
    assert not auth.check(t, "worker", "a", "b", p)  # a master's proof is not a worker's
    assert not auth.check(t, "master", "a", "c", p) and not auth.check(b"other-token-000000", "master", "a", "b", p)
    assert not auth.check(t, "master", "a", "b", None)
