"""The endpoint's API key (issue 25, finding 3): stripped and checked without being echoed, never
sent on to another origin by a redirect, refused over plain http to another machine unless
engine.allow_insecure=true, and redacted from every error path."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from engines.auth import REDACTED, api_key_problems, bearer_headers, insecure_key_problem, redact
from engines.process import _http_ok
from experiments import preflight
from experiments.config import to_run_config
from experiments.runner import run
from tests.conftest import compose

KEY = "sk-servelab-key-5d1b7e"


@pytest.mark.parametrize("value", [f"{KEY}\r\nX-Evil: 1", f"sk-a\nb{KEY}", f"{KEY}\x00", f"{KEY}\u2028x", f"{KEY}€"])
def test_a_key_that_cannot_be_sent_is_refused_without_echoing_it(value):
    (line,) = api_key_problems("SERVELAB_K", {"SERVELAB_K": value})
    assert "SERVELAB_K" in line and KEY not in line and "its value is not shown" in line
    with pytest.raises(ValueError) as e:
        bearer_headers("SERVELAB_K", {"SERVELAB_K": value})
    assert KEY not in str(e.value)


def test_surrounding_whitespace_is_stripped():
    env = {"SERVELAB_K": f"  {KEY}\n"}
    assert api_key_problems("SERVELAB_K", env) == []
    assert bearer_headers("SERVELAB_K", env) == {"Authorization": f"Bearer {KEY}"}
    assert api_key_problems("SERVELAB_K", {}) == ["environment variable SERVELAB_K (engine.api_key_env) is not set or empty"]
    assert api_key_problems(None, {}) == [] and bearer_headers(None, {}) == {}


def test_redact_removes_the_key_raw_and_stripped():
    env = {"SERVELAB_K": f"{KEY}\n"}
    text = f"InvalidHeader: 'Bearer {KEY}\\n' / Bearer {KEY}\n"
    assert KEY not in redact(text, "SERVELAB_K", env) and REDACTED in redact(text, "SERVELAB_K", env)


@pytest.mark.parametrize("url,allow,refused", [
    ("http://10.1.2.3:8000", False, True),
    ("http://inference.example.com", False, True),
    ("http://10.1.2.3:8000", True, False),
    ("https://inference.example.com", False, False),
    ("http://127.0.0.1:8000", False, False),
    ("http://localhost:8000", False, False),
    ("http://[::1]:8000", False, False),
])  # fmt: skip
def test_a_key_over_plain_http_to_another_machine_is_refused(url, allow, refused):
    cfg = to_run_config(compose(["engine=endpoint", f"engine.base_url='{url}'", "engine.api_key_env=SERVELAB_K",
                                 f"engine.allow_insecure={str(allow).lower()}", "model.served_name=m"]))  # fmt: skip
    lines = [p for p in preflight.engine_problems(cfg) if "unencrypted" in p]
    assert bool(lines) == refused, lines
    if refused:
        assert lines == [insecure_key_problem(url, "SERVELAB_K", False)] and "engine.allow_insecure=true" in lines[0]
    # without a key there is nothing to protect
    assert insecure_key_problem(url, None, False) is None


class _Server:
    """A one-route HTTP server on loopback recording the Authorization headers it saw."""

    def __init__(self, status: int = 200, location: str | None = None, host: str = "127.0.0.1") -> None:
        seen = self.seen = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                seen.append((self.path, self.headers.get("Authorization")))
                if location and self.path == "/health":
                    self.send_response(302)
                    self.send_header("Location", location)
                else:
                    self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), H)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_an_authenticated_probe_does_not_follow_a_redirect_to_another_origin():
    other = _Server()
    first = _Server(location=other.url + "/health")
    try:
        assert not _http_ok(first.url + "/health", 2.0, {"Authorization": f"Bearer {KEY}"})
        assert other.seen == []  # the key never reached the other origin
    finally:
        first.close()
        other.close()


def test_a_redirect_within_the_origin_is_followed():
    s = _Server(location="/ok")  # redirects /health to its own /ok
    try:
        assert _http_ok(s.url + "/health", 2.0, {"Authorization": "Bearer k"})
        assert s.seen == [("/health", "Bearer k"), ("/ok", "Bearer k")]
    finally:
        s.close()


def test_a_key_with_a_line_break_is_refused_before_anything_is_sent(timing_server, tiny_tokenizer_dir, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    url, log = timing_server(api_key=KEY)
    monkeypatch.setenv("SERVELAB_TEST_KEY", f"{KEY}\r\nX-Injected: 1")
    out = tmp_path / "run"
    c = to_run_config(compose([
        "engine=endpoint", f"engine.base_url={url}", "engine.api_key_env=SERVELAB_TEST_KEY", "engine.health_path=/v1/models",
        f"model.path={tiny_tokenizer_dir}", "model.built_by=null", "model.served_name=m", "workload.prompt_tokens=20",
        "workload.output_tokens=8", "traffic.points=[10]", "traffic.duration_s=1", "traffic.warmup_s=0.3",
    ]))  # fmt: skip
    assert run(c, out, ["engine=endpoint"]) == 2
    s = json.loads((out / "run.json").read_text())
    assert s["status"] == "rejected" and "SERVELAB_TEST_KEY" in s["failure"]["reason"]
    assert "control character" in s["failure"]["reason"]
    for f in out.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f"API key written to {f}"


def test_a_missing_worker_token_is_refused_before_launch(tmp_path, monkeypatch):
    """traffic.worker_token_env names a variable that is unset: the lease refuses, naming it, not after 60 s."""
    from engines.process import Supervisor
    from experiments.lease import EngineLease

    monkeypatch.delenv("SERVELAB_UNSET_TOKEN", raising=False)
    cfg = to_run_config(compose(["engine=endpoint", "engine.base_url=http://127.0.0.1:9", "model.served_name=m",
                                 "traffic.workers=2", "traffic.worker_token_env=SERVELAB_UNSET_TOKEN"]))  # fmt: skip
    lines = EngineLease(cfg, tmp_path, tmp_path / "work", Supervisor(guardian=False)).prepare()
    assert any(p.startswith("traffic.worker_token_env: environment variable SERVELAB_UNSET_TOKEN must hold")
               for p in lines), lines
