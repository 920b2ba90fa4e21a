"""Test-only OpenAI-compatible streaming server with known timing (never used by a real run).

Serves /v1/completions and /v1/chat/completions with SSE: the first content chunk after
`--ttft-ms`, then one chunk (one token) every `--itl-ms`, `max_tokens` in all, then a usage
chunk and ``data: [DONE]``. Also /health and a tiny Prometheus /metrics. With ``--log`` every
request appends one JSON line with the server's own monotonic timestamps (arrival, each chunk
write), which tests compare with what the client measured.

Run: ``python tests/support/timing_server.py --port 8123 --ttft-ms 50 --itl-ms 10``.
Side effects: listens on 127.0.0.1 only; appends to the --log file.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS: argparse.Namespace
LOG_LOCK = threading.Lock()
STATS = {"running": 0, "total": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a: object) -> None:  # keep test output quiet
        pass

    def _plain(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if ARGS.api_key and self.path != "/health" and self.headers.get("Authorization") != f"Bearer {ARGS.api_key}":
            self._plain(401, b"unauthorized")
        elif self.path in ("/health", "/v1/models"):
            self._plain(200, b"")
        elif self.path == "/metrics":
            body = (
                f"# TYPE fake:num_requests_running gauge\nfake:num_requests_running {STATS['running']}\n"
                f"# TYPE fake:requests_total counter\nfake:requests_total {STATS['total']}\n"
            ).encode()
            self._plain(200, body)
        else:
            self._plain(404, b"not found")

    def _chunk(self, payload: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()

    def do_POST(self) -> None:  # noqa: N802
        t_arrival = time.monotonic_ns()
        n = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(n) or b"{}")
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            self._plain(404, b"not found")
            return
        if ARGS.api_key and self.headers.get("Authorization") != f"Bearer {ARGS.api_key}":
            self._plain(401, b'{"error": "bad or missing API key"}', "application/json")
            return
        if ARGS.fail_status:
            self._plain(ARGS.fail_status, json.dumps({"error": "injected failure"}).encode(), "application/json")
            return
        chat = self.path.endswith("chat/completions")
        max_tokens = int(req.get("max_tokens", 16))
        STATS["running"] += 1
        STATS["total"] += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sends: list[int] = []
        try:
            # Absolute deadlines, so server-side jitter does not accumulate.
            t_first = t_arrival + int(ARGS.ttft_ms * 1e6)
            for i in range(max_tokens):
                due = t_first + int(i * ARGS.itl_ms * 1e6)
                delay = (due - time.monotonic_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                piece = f" tok{i}"
                choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                choice["finish_reason"] = "length" if i == max_tokens - 1 else None
                data = json.dumps({"id": "x", "choices": [choice]}).encode()
                sends.append(time.monotonic_ns())
                self._chunk(b"data: " + data + b"\n\n")
            usage = {"prompt_tokens": 7, "completion_tokens": max_tokens, "total_tokens": 7 + max_tokens}
            self._chunk(b"data: " + json.dumps({"id": "x", "choices": [], "usage": usage}).encode() + b"\n\n")
            self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            STATS["running"] -= 1
            if ARGS.log:
                with LOG_LOCK, open(ARGS.log, "a") as f:
                    f.write(json.dumps({"arrival_ns": t_arrival, "send_ns": sends}) + "\n")


def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    ap.add_argument("--itl-ms", type=float, default=5.0)
    ap.add_argument("--fail-status", type=int, default=0, help="answer every POST with this HTTP status")
    ap.add_argument("--log", default=None)
    ap.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on every request")
    ARGS = ap.parse_args()
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.handle_error = lambda *a: None  # clients that hang up mid-stream are expected in tests
    srv.serve_forever()


if __name__ == "__main__":
    main()
