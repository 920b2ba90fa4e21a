"""Master role (distributed): hands the spec to the workers, keeps their clocks, merges their records.

Waits for `expect` workers, each with at least one clock round (loadgen.clock: NTP-style pings
the worker sends, the master answers with its own receive/send stamps). It then sends the spec
and the start of the window ON THE MASTER'S CLOCK; each worker converts it with its offset, so
every worker's schedule starts at the same instant. Records and loop-lag rows stream in while the
point runs; those of a worker with another clock (another machine) are moved onto the master's
clock as they arrive (one offset per record, from the rounds measured so far). The point ends
when every worker reported done with a record count equal to what arrived (nothing lost, nothing
counted twice). The meta gets `workers`, `merge_ok` and `clock_offsets` (per worker index:
offset, uncertainty = RTT/2, samples, rounds).

Only workers that proved they know the shared token (loadgen.locust.auth) count: the spec goes to
them alone, messages of any other are ignored, and it is asked to quit and logged
(`[loadgen] refused worker ...`). The master proves the token to each worker in turn.

Exit codes: 0 ok; 3 not all workers connected; 4 merged records do not match the workers' counts.
Side effects: listens on bind_host:port (Locust's ZeroMQ); writes records/lag/meta files.
"""

from __future__ import annotations

import json
import time
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.rpc import Message

from loadgen.clock import ClockModel, ClockRound, clock_id, shift_lag_row, shift_record
from loadgen.locust import auth
from loadgen.locust.common import (
    EXIT_MERGE_MISMATCH,
    EXIT_WORKERS_MISSING,
    WORKER_CONNECT_TIMEOUT_S,
    LoadGen,
    RecordSink,
    horizon_s,
    install_signal_handlers,
    now,
    prepare,
    users_shape,
    write_meta,
)
from loadgen.spec import LoadPointSpec

START_AHEAD_S = 1.0  # the window starts this long after the spec is sent, so every worker is ready


def run_master(spec: LoadPointSpec, bind_host: str, port: int, expect: int, *, token: bytes) -> int:
    gen = LoadGen(spec)
    user_cls, n_users = prepare(gen)
    gen.sink = RecordSink(spec.paths.records)
    sink = gen.sink
    lag_f = open(spec.paths.lag, "a", buffering=1)  # noqa: SIM115 - closed below
    received: dict[str, int] = {}
    done: dict[str, dict[str, Any]] = {}
    clocks: dict[str, ClockModel] = {}  # node id -> that worker's clock on ours
    info: dict[str, dict[str, Any]] = {}  # node id -> host, pid, clock id
    unshifted: dict[str, int] = {}  # records that arrived before any clock round (should stay empty)
    my_clock = clock_id()
    shape = users_shape(gen)
    env = Environment(user_classes=[user_cls], events=events, host=spec.base_url, shape_class=shape)
    env.stop_timeout = spec.request_timeout_s
    runner = env.create_master_runner(master_bind_host=bind_host, master_bind_port=port)
    nonces: dict[str, tuple[str, str]] = {}  # node id -> (worker's nonce, ours)
    authed: set[str] = set()
    refused: set[str] = set()

    def refuse(node_id: str, why: str) -> None:
        if node_id not in refused:
            refused.add(node_id)
            print(f"[loadgen] refused worker {node_id}: {why}", flush=True)
        runner.send_message("auth_refused", None, client_id=node_id)
        kick(node_id)

    def kick(node_id: str) -> None:
        """Drop a worker that did not prove the token from Locust's list, so no users go to it."""
        if node_id in runner.clients:
            client = runner.clients[node_id]
            del runner.clients[node_id]
            dispatcher = getattr(runner, "_users_dispatcher", None)  # Locust's own "quit" handling does this
            if dispatcher is not None:
                dispatcher.remove_worker(client)
        runner.server.send_to_client(Message("quit", None, node_id))

    def on_hello(environment: Any, msg: Any, **kw: Any) -> None:
        nonce_w = (msg.data or {}).get("nonce_w") if isinstance(msg.data, dict) else None
        if not isinstance(nonce_w, str) or not nonce_w:
            refuse(msg.node_id, "malformed token challenge")
            return
        nonce_m = auth.nonce()
        nonces[msg.node_id] = (nonce_w, nonce_m)
        runner.send_message("auth_challenge", {"nonce_m": nonce_m, "proof": auth.proof(token, "master", nonce_w, nonce_m)},
                            client_id=msg.node_id)  # fmt: skip

    def on_proof(environment: Any, msg: Any, **kw: Any) -> None:
        pair = nonces.pop(msg.node_id, None)
        given = (msg.data or {}).get("proof") if isinstance(msg.data, dict) else None
        if pair is None or not auth.check(token, "worker", *pair, given):
            refuse(msg.node_id, "it does not know the shared token")
            return
        authed.add(msg.node_id)

    def trusted(handler: Any) -> Any:
        """`handler` for authenticated workers only; a message of any other is dropped and logged."""

        def guarded(environment: Any, msg: Any, **kw: Any) -> None:
            if msg.node_id in authed:
                handler(environment, msg, **kw)
            else:
                refuse(msg.node_id, f"sent {msg.type!r} without proving the shared token")

        return guarded

    def on_ping(environment: Any, msg: Any, **kw: Any) -> None:
        t2 = now()  # first thing: the receive stamp
        runner.send_message("clock_pong", {"seq": msg.data["seq"], "t1": msg.data["t1"], "t2": t2, "t3": now()},
                            client_id=msg.node_id)  # fmt: skip

    def on_clock_round(environment: Any, msg: Any, **kw: Any) -> None:
        d = msg.data
        if msg.node_id not in clocks:
            clocks[msg.node_id] = ClockModel(same_clock=d["clock_id"] == my_clock)
            info[msg.node_id] = {"host": d["host"], "pid": d["pid"], "clock_id": d["clock_id"]}
        clocks[msg.node_id].add(ClockRound.from_dict(d["round"]))

    def on_records(environment: Any, msg: Any, **kw: Any) -> None:
        model = clocks.get(msg.node_id)
        lines = msg.data
        if model is None:
            unshifted[msg.node_id] = unshifted.get(msg.node_id, 0) + len(lines)
        elif not model.same_clock:
            lines = [json.dumps(shift_record(json.loads(x), model), separators=(",", ":")) for x in lines]
        sink.add_lines(lines)
        received[msg.node_id] = received.get(msg.node_id, 0) + len(msg.data)

    def on_lag(environment: Any, msg: Any, **kw: Any) -> None:
        model = clocks.get(msg.node_id)
        line = msg.data
        if model is not None and not model.same_clock:
            line = json.dumps(shift_lag_row(json.loads(line), model))
        lag_f.write(line + "\n")

    def on_done(environment: Any, msg: Any, **kw: Any) -> None:
        done[msg.node_id] = msg.data

    for name, handler in (("clock_ping", on_ping), ("clock_round", on_clock_round), ("records", on_records),
                          ("lag", on_lag), ("done", on_done)):  # fmt: skip
        runner.register_message(name, trusted(handler))
    runner.register_message("auth_hello", on_hello)
    runner.register_message("auth_proof", on_proof)

    def kick_strangers() -> None:
        for w in list(runner.clients.keys()):
            if w not in authed:
                refuse(w, "joined without proving the shared token")
    install_signal_handlers(gen.stop_event)
    print(f"[loadgen] master on {bind_host}:{port} waiting for {expect} worker(s)", flush=True)
    wait_until = time.monotonic() + WORKER_CONNECT_TIMEOUT_S

    def synced() -> int:
        return sum(1 for w in runner.clients.ready if w.id in clocks and w.id in authed)

    while synced() < expect and not gen.stopping:
        if time.monotonic() > wait_until:
            print(f"[loadgen] only {synced()} of {expect} workers connected (with a clock round)", flush=True)
            runner.quit()
            sink.close()
            lag_f.close()
            return EXIT_WORKERS_MISSING
        gevent.sleep(0.05)
    kick_strangers()  # Locust spreads users over every client it lists: only ours may stay
    gen.start_clock(now() + int(START_AHEAD_S * 1e9))
    # The spec (every prompt) goes to authenticated workers only, each with its index among them
    # (Locust's own index also counts the refused ones: the schedule's split needs 0..N-1).
    index_of = {w: i for i, w in enumerate(sorted(authed & set(runner.clients.keys()), key=runner.get_worker_index))}
    for w, i in index_of.items():
        runner.send_message("spec", {"spec": spec.to_json(), "t0_master_ns": gen.t0_ns, "workers": expect,
                                     "master_clock_id": my_clock, "index": i}, client_id=w)  # fmt: skip
    if shape is not None:
        runner.start_shape()
    else:
        # open loop: one scheduler user per worker; Locust spreads users evenly over workers
        runner.start(expect if spec.loop == "open" else n_users, spawn_rate=10_000)
    deadline = time.monotonic() + horizon_s(spec) + 60
    last_note = time.monotonic()
    while time.monotonic() < deadline and not gen.stopping and len(done) < expect:
        gen.stop_event.wait(0.2)
        kick_strangers()
        if time.monotonic() - last_note >= 5:
            last_note = time.monotonic()
            print(f"[loadgen] point {spec.load_point}: records received {sum(received.values())} "
                  f"from {len(received)} worker(s), {len(done)} done", flush=True)  # fmt: skip
    stopped_early = gen.stopping
    if stopped_early:
        runner.send_message("stop_now")
        until = time.monotonic() + 20
        while len(done) < expect and time.monotonic() < until:
            gevent.sleep(0.1)
    runner.quit()
    gevent.sleep(0.5)
    sink.close()
    lag_f.close()
    merge_ok = len(done) == expect and all(received.get(w, 0) == d["records"] for w, d in done.items())
    gen.sent = sum(d["sent"] for d in done.values())
    gen.done = sum(d["done"] for d in done.values())
    gen.dropped = sum(d["dropped"] for d in done.values())
    offsets = {
        str(index_of.get(w, runner.get_worker_index(w))): {"node_id": w, **info[w], **m.summary()}
        for w, m in clocks.items()
    }
    write_meta(
        gen, stopped_early=stopped_early, merge_ok=merge_ok, records_received=sum(received.values()),
        workers={w: {**d, "received": received.get(w, 0)} for w, d in done.items()},
        clock_offsets=offsets, clock_id=my_clock, records_unshifted=unshifted,
    )  # fmt: skip
    return 0 if merge_ok else EXIT_MERGE_MISMATCH
