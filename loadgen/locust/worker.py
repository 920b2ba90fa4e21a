"""Worker role (distributed): measure the clock offset to the master, take the spec, run this
worker's share, stream the records (and keep a local copy), report done with the count sent.

Clock rounds (loadgen.clock): at connect, every CLOCK_ROUND_PERIOD_S while the point runs and at its end,
the worker sends PINGS_PER_ROUND pings stamped t1, the master answers with t2/t3, the worker
stamps t4 on receipt and keeps the ping with the smallest RTT; it reports that round to the
master, which shifts this worker's records with it. The worker itself uses its latest offset to
turn the master's start time into its own clock. CPU affinity and priority from the spec apply
only to a worker on the master's machine (same clock id): a remote machine's cores are its own.

Trust (docs/security.md): the worker proves to the master, and the master to it, that both know
the shared token (loadgen.locust.auth) before it takes a spec; it sends requests to its own
`--target-url` with the key of its own `--api-key-env` and writes only into its own `--out-dir`,
whatever the spec says (the master decides what to send and when, never where or with which key).

Side effects: connects to the master (Locust's ZeroMQ); HTTP to the engine; writes
``<out_dir>/requests.<point>.worker<i>.jsonl`` and ``loadgen_lag.<point>.worker<i>.jsonl``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.pool
from locust import events
from locust.env import Environment

from loadgen.clock import ClockModel, ClockSample, best_round, clock_id
from loadgen.locust import auth
from loadgen.locust.common import (
    USER_CLASSES,
    LoadGen,
    RecordSink,
    cancel_inflight,
    finished,
    horizon_s,
    install_signal_handlers,
    loop_lag_monitor,
    now,
    prepare,
)
from loadgen.spec import LoadPointSpec, OutputPaths

PINGS_PER_ROUND = 8
PING_GAP_S = 0.005
PING_TIMEOUT_S = 1.0
CLOCK_ROUND_PERIOD_S = 5.0


def _gone(runner: Any) -> bool:
    """Whether Locust's worker runner has ended (its greenlet is a gevent Group in Locust 2.x)."""
    g = runner.greenlet
    return all(x.dead for x in g) if isinstance(g, gevent.pool.Group) else bool(g.dead)


@dataclass(frozen=True)
class WorkerOwn:
    """What a worker takes from its own command line, never from the master's spec."""

    target_url: str
    api_key_env: str | None
    out_dir: str

    def apply(self, spec: LoadPointSpec, index: int) -> LoadPointSpec:
        """`spec` with this worker's target, key variable and output files in place of the master's."""
        d = Path(self.out_dir)
        lp = int(spec.load_point)
        paths = OutputPaths(records=str(d / f"requests.{lp}.worker{index}.jsonl"),
                            lag=str(d / f"loadgen_lag.{lp}.worker{index}.jsonl"),
                            meta=str(d / f"loadgen_meta.{lp}.worker{index}.json"))  # fmt: skip
        return dataclasses.replace(spec, base_url=self.target_url, api_key_env=self.api_key_env, paths=paths)


def run_worker(master_host: str, port: int, *, own: WorkerOwn, token: bytes) -> int:
    stop = gevent.event.Event()
    env = Environment(user_classes=list(USER_CLASSES), events=events)
    runner = env.create_worker_runner(master_host=master_host, master_port=port)
    install_signal_handlers(stop)
    my_clock = clock_id()
    model = ClockModel()
    waiting: dict[int, gevent.event.AsyncResult] = {}
    seqs = itertools.count()
    ready = gevent.event.Event()
    box: dict[str, Any] = {}
    nonce_w = auth.nonce()
    master_ok = gevent.event.Event()
    where = f"{master_host}:{port}"

    def refuse(why: str) -> None:
        print(f"[loadgen] refused master {where}: {why}", flush=True)
        box["refused"] = why
        stop.set()

    def on_challenge(environment: Any, msg: Any, **kw: Any) -> None:
        d = msg.data if isinstance(msg.data, dict) else {}
        nonce_m = d.get("nonce_m")
        if not isinstance(nonce_m, str) or not auth.check(token, "master", nonce_w, nonce_m, d.get("proof")):
            refuse("it does not know the shared token (nothing taken from it)")
            return
        runner.send_message("auth_proof", {"proof": auth.proof(token, "worker", nonce_w, nonce_m)})
        master_ok.set()

    def on_refused(environment: Any, msg: Any, **kw: Any) -> None:
        refuse("the master refused this worker's token")

    def on_pong(environment: Any, msg: Any, **kw: Any) -> None:
        t4 = now()  # first thing: the receive stamp
        d = msg.data
        if (r := waiting.pop(d["seq"], None)) is not None:
            r.set(ClockSample(d["t1"], d["t2"], d["t3"], t4))

    def clock_round() -> None:
        samples = []
        for _ in range(PINGS_PER_ROUND):
            seq = next(seqs)
            waiting[seq] = res = gevent.event.AsyncResult()
            runner.send_message("clock_ping", {"seq": seq, "t1": now()})
            try:
                samples.append(res.get(timeout=PING_TIMEOUT_S))
            except gevent.Timeout:
                waiting.pop(seq, None)
            gevent.sleep(PING_GAP_S)
        if samples:
            r = best_round(samples)
            model.add(r)
            runner.send_message("clock_round", {"round": r.to_dict(), "clock_id": my_clock,
                                                "host": socket.gethostname(), "pid": os.getpid()})  # fmt: skip

    def clock_loop() -> None:
        while True:
            clock_round()
            gevent.sleep(CLOCK_ROUND_PERIOD_S)

    def on_spec(environment: Any, msg: Any, **kw: Any) -> None:
        # Set up here, in the message loop, so it is done before the master's spawn message is handled.
        if not master_ok.is_set():
            print(f"[loadgen] ignored a spec from {where}: the master has not proven the shared token", flush=True)
            return
        # where to send, with which key, where to write: this worker's own settings, not the spec's
        index = int(msg.data.get("index", runner.worker_index))  # among the authenticated workers
        spec = own.apply(LoadPointSpec.from_json(msg.data["spec"]), index)
        gen = LoadGen(spec, stop_event=stop)
        gen.worker_index, gen.worker_count = index, int(msg.data["workers"])
        same_machine = msg.data["master_clock_id"] == my_clock
        user_cls, _ = prepare(gen, placement=same_machine)
        env.user_classes = [user_cls]
        env.shape_class = None
        env.stop_timeout = spec.request_timeout_s
        offset = 0 if same_machine else model.offset_at(now())
        gen.start_clock(int(msg.data["t0_master_ns"]) - offset)  # master time -> ours
        Path(own.out_dir).mkdir(parents=True, exist_ok=True)
        gen.sink = RecordSink(spec.paths.records, forward=lambda lines: runner.send_message("records", lines))
        box["lag"] = gevent.spawn(loop_lag_monitor, gen, spec.paths.lag,
                                  forward=lambda line: runner.send_message("lag", line))  # fmt: skip
        box["gen"] = gen
        ready.set()

    runner.register_message("clock_pong", on_pong)
    runner.register_message("spec", on_spec)
    runner.register_message("auth_challenge", on_challenge)
    runner.register_message("auth_refused", on_refused)
    runner.register_message("stop_now", lambda **kw: stop.set())
    runner.send_message("auth_hello", {"nonce_w": nonce_w})
    hello_until = time.monotonic() + 30
    while not master_ok.wait(timeout=0.5):  # no clock rounds, no spec before the master proved the token
        if stop.is_set() or _gone(runner):
            runner.quit()
            return auth.EXIT_AUTH if "refused" in box else 0
        if time.monotonic() > hello_until:
            refuse("no answer to the token challenge within 30 s")
    clock_g = gevent.spawn(clock_loop)
    while not ready.wait(timeout=0.5):
        if stop.is_set() or _gone(runner):
            clock_g.kill()
            if "refused" in box:
                runner.quit()
                return auth.EXIT_AUTH
            return 0
    gen: LoadGen = box["gen"]
    # Open loop: wait for our scheduler user; closed loop: for the end of the window.
    deadline = time.monotonic() + max((gen.t0_ns - now()) / 1e9, 0) + horizon_s(gen.spec) + 30
    stop.wait(max((gen.t0_ns - now()) / 1e9, 0) + 0.5)
    while time.monotonic() < deadline and not gen.stopping:
        stop.wait(0.2)
        if finished(gen, 1 if gen.spec.loop == "open" else 0):
            break
    cancel_inflight(gen)
    runner.stop()  # our users end (cancelled records if any were in flight)
    gevent.sleep(0.2)
    box["lag"].kill()
    clock_g.kill()
    clock_round()  # one more at the end: the rounds bracket the point (drift, worst uncertainty)
    assert gen.sink is not None
    gen.sink.flush()
    runner.send_message("done", {"sent": gen.sent, "done": gen.done, "dropped": gen.dropped,
                                 "records": gen.sink.count, "pid": os.getpid()})  # fmt: skip
    runner.greenlet.join(timeout=30)  # until the master says quit
    gen.sink.close()
    return 0
