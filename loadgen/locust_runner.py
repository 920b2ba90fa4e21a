"""Entry point of the load-generator process: Locust as a library, headless, one load point.

    python -m loadgen.locust_runner SPEC.json                       # local: one process
    python -m loadgen.locust_runner SPEC.json --role master --master-bind H --master-port P --expect-workers N
    python -m loadgen.locust_runner --role worker --master-host H --master-port P   # also on other machines

Started by :mod:`loadgen.driver`, never imported by the lab: the roles (loadgen.locust.local,
.master, .worker) import Locust, which monkey-patches the stdlib with gevent, and that must not
leak into the harness, its samplers or numpy work. This module imports them only after parsing
the arguments, so a worker's test-only clock offset is in place before anything reads the clock.
SPEC.json is a :class:`loadgen.spec.LoadPointSpec`; workers get it from the master.

Side effects: those of the role (HTTP to the engine, records/lag/meta files, Locust's ZeroMQ).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="servelab load generator (one load point)")
    ap.add_argument("spec", nargs="?", help="spec JSON (local and master roles; a worker gets it from the master)")
    ap.add_argument("--role", choices=("local", "master", "worker"), default="local")
    ap.add_argument("--master-host", default="127.0.0.1")
    ap.add_argument("--master-bind", default="127.0.0.1")
    ap.add_argument("--master-port", type=int, default=5557)
    ap.add_argument("--expect-workers", type=int, default=1)
    ap.add_argument("--test-only-clock-offset-ns", type=int, default=0,
                    help="TESTS ONLY (worker): this worker's clock reads monotonic + offset, as on another machine")  # fmt: skip
    a = ap.parse_args(argv)
    if a.test_only_clock_offset_ns:
        if a.role != "worker":
            ap.error("--test-only-clock-offset-ns applies to --role worker only")
        from loadgen import clock

        clock.install_test_offset(a.test_only_clock_offset_ns)
    import locust  # noqa: F401 - first of the heavy imports: it gevent-patches the stdlib before the rest loads

    if a.role == "worker":
        from loadgen.locust.worker import run_worker

        return run_worker(a.master_host, a.master_port)
    if not a.spec:
        ap.error(f"--role {a.role} needs the spec JSON")
    from loadgen.spec import LoadPointSpec

    with open(a.spec) as f:
        spec = LoadPointSpec.from_json(f.read())
    if a.role == "master":
        from loadgen.locust.master import run_master

        return run_master(spec, a.master_bind, a.master_port, a.expect_workers)
    from loadgen.locust.local import run_local

    return run_local(spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
