"""Test-only fake engine executables for lifecycle tests of engines.process.

`python tests/support/fake_engine.py MODE --port P [--pidfile F]`, MODE one of:
  crash        exit 3 right after start (prints a reason)
  never        run forever without ever answering /health
  healthy      answer /health with 200
  stubborn     answer /health but ignore SIGTERM (needs SIGKILL)
  children     answer /health and spawn two grandchildren that also ignore SIGTERM
Pids of every process it creates are appended to --pidfile, so tests can check none survive.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class H(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--pidfile", default=None)
    a = ap.parse_args()

    def note(pid: int) -> None:
        if a.pidfile:
            with open(a.pidfile, "a") as f:
                f.write(f"{pid}\n")

    note(os.getpid())
    print(f"fake engine {a.mode} starting", flush=True)
    if a.mode == "crash":
        print("fatal: model not found (simulated)", flush=True)
        sys.exit(3)
    if a.mode == "never":
        while True:
            time.sleep(1)
    if a.mode in ("stubborn", "children"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if a.mode == "children":
        for _ in range(2):
            c = subprocess.Popen(
                [sys.executable, "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"]
            )
            note(c.pid)
    HTTPServer(("127.0.0.1", a.port), H).serve_forever()


if __name__ == "__main__":
    main()
