"""Entry point of the load-generator process: Locust as a library, headless, one load point.

    python -m loadgen.locust_runner SPEC.json                       # local: one process
    python -m loadgen.locust_runner SPEC.json --role master --master-bind H --master-port P --expect-workers N --token-env NAME
    python -m loadgen.locust_runner --role worker --master-host H --master-port P --token-env NAME \
        --target-url URL [--api-key-env NAME] --out-dir DIR                     # also on other machines

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
    # master and worker: the shared token (loadgen.locust.auth), by variable name or file
    ap.add_argument("--token-env", help="NAME of the variable holding the token master and workers share")
    ap.add_argument("--token-file", help="file holding the token master and workers share")
    # worker only: taken from this command line, never from the master's spec
    ap.add_argument("--target-url", help="worker: base URL of the engine to load (the spec's is ignored)")
    ap.add_argument("--api-key-env", help="worker: NAME of the variable holding the engine's key (the spec's is ignored)")
    ap.add_argument("--out-dir", help="worker: folder for its local copies of records and lag rows")
    ap.add_argument("--test-only-clock-offset-ns", type=int, default=0,
                    help="TESTS ONLY (worker): this worker's clock reads monotonic + offset, as on another machine")  # fmt: skip
    a = ap.parse_args(argv)
    if a.test_only_clock_offset_ns:
        if a.role != "worker":
            ap.error("--test-only-clock-offset-ns applies to --role worker only")
        from loadgen import clock

        clock.install_test_offset(a.test_only_clock_offset_ns)
    token = b""
    if a.role in ("master", "worker"):
        from loadgen.locust.auth import TokenError, token_from

        try:
            token = token_from(a.token_env, a.token_file)
        except TokenError as e:
            ap.error(str(e))
    if a.role == "worker" and not (a.target_url and a.out_dir):
        ap.error("--role worker needs --target-url (the engine) and --out-dir (its local files); "
                 "a worker takes neither from the master")  # fmt: skip
    import locust  # noqa: F401 - first of the heavy imports: it gevent-patches the stdlib before the rest loads

    if a.role == "worker":
        from loadgen.locust.worker import WorkerOwn, run_worker

        own = WorkerOwn(target_url=a.target_url, api_key_env=a.api_key_env, out_dir=a.out_dir)
        return run_worker(a.master_host, a.master_port, own=own, token=token)
    if not a.spec:
        ap.error(f"--role {a.role} needs the spec JSON")
    from loadgen.spec import LoadPointSpec

    with open(a.spec) as f:
        spec = LoadPointSpec.from_json(f.read())
    if a.role == "master":
        from loadgen.locust.master import run_master

        return run_master(spec, a.master_bind, a.master_port, a.expect_workers, token=token)
    from loadgen.locust.local import run_local

    return run_local(spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
