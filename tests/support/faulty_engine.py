"""Test-only "engine" that misbehaves on cue, for fault tests of the lab (never used by a real run).

`python tests/support/faulty_engine.py --pidfile F [options] -- TIMING_SERVER_ARGS...` starts
tests/support/timing_server.py as its own child (same process group, like an engine's workers)
with TIMING_SERVER_ARGS plus a request log, and then, depending on the options:
  --ready-delay-s S          waits S seconds before starting the server (engine still loading)
  --crash-after-requests N   once N requests completed: writes time.monotonic_ns() to --crash-marker,
                             kills its server, prints a reason and exits with --exit-code
  --ignore-sigterm           ignores SIGTERM (needs SIGKILL); otherwise SIGTERM stops server and self
Pids of both processes are appended to --pidfile, so tests can check that none survives.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SERVER = Path(__file__).resolve().with_name("timing_server.py")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--ready-delay-s", type=float, default=0.0)
    ap.add_argument("--crash-after-requests", type=int, default=0)
    ap.add_argument("--crash-marker", default=None)
    ap.add_argument("--exit-code", type=int, default=7)
    ap.add_argument("--ignore-sigterm", action="store_true")
    ap.add_argument("server_args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    server_args = [x for x in a.server_args if x != "--"]
    req_log = Path(a.pidfile).with_name(f"served.{os.getpid()}.jsonl")

    def note(pid: int) -> None:
        with open(a.pidfile, "a") as f:
            f.write(f"{pid}\n")

    note(os.getpid())
    server: subprocess.Popen[bytes] | None = None

    def on_term(*_: object) -> None:
        if server is not None:
            server.terminate()
            server.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if a.ignore_sigterm else on_term)
    print(f"faulty engine starting (pid {os.getpid()})", flush=True)
    time.sleep(a.ready_delay_s)
    server = subprocess.Popen([sys.executable, str(SERVER), *server_args, "--log", str(req_log)])
    note(server.pid)
    while True:
        time.sleep(0.05)
        if server.poll() is not None:
            print(f"timing server exited with {server.returncode}", flush=True)
            return server.returncode
        if a.crash_after_requests and req_log.exists():
            with open(req_log, "rb") as f:
                served = f.read().count(b"\n")
            if served >= a.crash_after_requests:
                if a.crash_marker:
                    Path(a.crash_marker).write_text(str(time.monotonic_ns()))
                server.kill()
                server.wait()
                print(f"fatal: engine core died after {served} requests (simulated)", flush=True)
                return a.exit_code


if __name__ == "__main__":
    sys.exit(main())
