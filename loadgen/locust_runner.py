"""The load-generator process: Locust as a library, headless, driving one load point.

Run as ``python -m loadgen.locust_runner SPEC.json`` by :mod:`loadgen.driver`, never imported by
the lab (importing Locust monkey-patches the stdlib with gevent, which must not leak into the
harness, its samplers or numpy work).

How requests are timed (see ../shared/reference/locust.md for the measurements behind this):
- FastHttpUser with ``stream=True``; SSE lines are read with geventhttpclient's
  ``readline(b"\\n")``, which returns as soon as one line is buffered. Locust's own
  ``iter_lines`` reads 1 KiB blocks and would add ~100 ms to TTFT.
- Each line is stamped with ``time.monotonic_ns()`` *before* it is parsed.
- Open loop: one scheduler user walks a precomputed schedule and spawns one greenlet per
  request at its intended time into a bounded pool; it never waits for a free user. If the
  pool is full the request is recorded as ``dropped`` (never silently delayed).
- Closed loop: N users, each sending its next request when the previous one finishes.
- Locust's stats table (rounded to ~2 significant digits) is only a live view; the raw
  records written here are the source of truth.

Side effects: HTTP to the engine (loopback); appends JSON lines to the records file (flushed
every 0.5 s, so a crash loses at most that much) and the loop-lag file; writes a meta JSON at
the end. SIGTERM/SIGINT stop scheduling, cancel in-flight requests, flush and exit.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from types import SimpleNamespace
from typing import Any

import gevent
import gevent.event
import gevent.pool
from gevent import GreenletExit
from locust import LoadTestShape, User, constant, events, task
from locust.env import Environment
from locust.exception import StopUser

from loadgen.arrivals import phase_of, shape_multiplier
from loadgen.records import CANCELLED, DROPPED, ERROR, OK, TIMEOUT, empty_record
from loadgen.sse_client import ConnectionPool, build_request
from loadgen.workload import ENDPOINT_PATHS, request_body

now = time.monotonic_ns  # CLOCK_MONOTONIC: shared with the samplers in other processes

SPEC: dict[str, Any] = {}
STATE: dict[str, Any] = {
    "t0_ns": 0, "end_ns": 0, "stopping": False, "inflight": 0, "sent": 0, "done": 0, "dropped": 0, "users_stopped": 0,
}  # fmt: skip


class RecordSink:
    """Buffers finished records and appends them as JSON lines every `interval_s`."""

    def __init__(self, path: str, interval_s: float = 0.5, forward: Any = None) -> None:
        self._f = open(path, "a", buffering=1 << 16)  # noqa: SIM115 - closed in close()
        self._buf: list[str] = []
        self._interval_s = interval_s
        self._forward = forward  # worker: also send each batch to the master
        self.count = 0
        self._g = gevent.spawn(self._loop)

    def add(self, rec: dict[str, Any]) -> None:
        self._buf.append(json.dumps(rec, separators=(",", ":")))

    def add_lines(self, lines: list[str]) -> None:
        self._buf.extend(lines)

    def flush(self) -> None:
        if self._buf:
            lines, self._buf = self._buf, []
            self._f.write("\n".join(lines) + "\n")
            self.count += len(lines)
            if self._forward is not None:
                self._forward(lines)
        self._f.flush()

    def _loop(self) -> None:
        while True:
            gevent.sleep(self._interval_s)
            self.flush()

    def close(self) -> None:
        self._g.kill()
        self.flush()
        self._f.close()


SINK: RecordSink | None = None
WORKER: dict[str, Any] = {"index": None, "count": 1}  # distributed: this worker's index and the number of workers
RAW_REQUESTS: dict[int, bytes] = {}  # prompt_idx -> the exact request bytes, built before the load starts
POOLS: list[gevent.pool.Pool] = []  # open-loop request pools, cancelled at exit


def loop_lag_monitor(path: str, period_s: float = 0.01, report_s: float = 1.0, forward: Any = None) -> None:
    """Measures how late a 10 ms gevent sleep wakes up (hub stalls delay every timestamp) and,
    once a second, appends {t_ns, lag_max_ms, lag_mean_ms, cpu_pct, inflight} to `path`."""
    with open(path, "a", buffering=1) as f:
        window_start = now()
        cpu_start = sum(os.times()[:2])
        lags: list[float] = []
        while True:
            t = now()
            gevent.sleep(period_s)
            lags.append(max((now() - t) / 1e6 - period_s * 1e3, 0.0))
            elapsed = (now() - window_start) / 1e9
            if elapsed >= report_s:
                cpu = sum(os.times()[:2])
                line = json.dumps({
                    "t_ns": now(),
                    "lag_max_ms": round(max(lags), 3),
                    "lag_mean_ms": round(sum(lags) / len(lags), 3),
                    "cpu_pct": round(100.0 * (cpu - cpu_start) / elapsed, 1),
                    "inflight": STATE["inflight"],
                    "worker": WORKER["index"],
                })  # fmt: skip
                f.write(line + "\n")
                if forward is not None:
                    forward(line)
                window_start, cpu_start, lags = now(), cpu, []


class StreamingUser(User):
    """Shared request logic: one streamed OpenAI-compatible request -> one raw record."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.conns = ConnectionPool(SPEC["base_url"], connect_timeout_s=30.0, io_timeout_s=SPEC["request_timeout_s"])

    def on_stop(self) -> None:
        STATE["users_stopped"] += 1
        self.conns.close()

    def send(self, item: dict[str, Any], t_sched_ns: int, phase: str, request_id: str) -> None:
        spec = SPEC
        rec = empty_record(
            load_point=spec["load_point"],
            request_id=request_id,
            worker=os.getpid(),
            phase=phase,
            prompt_idx=item["prompt_idx"],
            endpoint=spec["endpoint"],
            max_tokens=item["max_tokens"],
            prompt_tokens_client=item["prompt_tokens_client"],
            t_scheduled_ns=t_sched_ns,
        )
        chat = spec["endpoint"] == "chat"
        chunks: list[int] = []
        texts: list[str] = []
        usage: dict[str, Any] | None = None
        STATE["inflight"] += 1
        STATE["sent"] += 1
        exc: Exception | None = None
        try:
            with gevent.Timeout(spec["request_timeout_s"]):
                t_sent, resp, sock = self.conns.send(RAW_REQUESTS[item["prompt_idx"]])
                rec["t_sent_ns"] = t_sent
                rec["t_headers_ns"] = now()
                rec["http_status"] = int(resp.status_code or 0)
                if resp.status_code != 200:
                    detail = resp.read()[:300].decode(errors="replace")
                    rec["status"] = ERROR
                    rec["error"] = f"HTTP {resp.status_code}: {detail}".strip()
                else:
                    while True:
                        line = resp.readline(b"\n")
                        t = now()  # stamp before parsing
                        if not line:
                            break
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            continue  # read on to the end of the chunked body, so the connection can be reused
                        d = json.loads(payload)
                        if d.get("error"):
                            raise RuntimeError(f"server error in stream: {d['error']}")
                        if rec["response_id"] is None:
                            rec["response_id"] = d.get("id")
                        choices = d.get("choices")
                        if choices:
                            c0 = choices[0]
                            text = (c0.get("delta") or {}).get("content") if chat else c0.get("text")
                            if text:
                                chunks.append(t)
                                texts.append(text)
                            if c0.get("finish_reason"):
                                rec["finish_reason"] = c0["finish_reason"]
                        if d.get("usage"):
                            usage = d["usage"]
                    rec["t_done_ns"] = now()
                    if chunks:
                        rec["status"] = OK
                    else:
                        rec["status"] = ERROR
                        rec["error"] = "stream ended without generated text"
                self.conns.release(sock, resp)
        except gevent.Timeout as e:
            rec["status"] = TIMEOUT
            rec["error"] = f"no completion within {spec['request_timeout_s']} s"
            exc = e
        except GreenletExit:
            rec["status"] = CANCELLED
            rec["error"] = "cancelled: load point stopped while in flight"
            raise
        except Exception as e:  # noqa: BLE001 - any failure of one request is recorded, not fatal
            rec["status"] = ERROR
            rec["error"] = f"{type(e).__name__}: {e}"[:500]
            exc = e
        finally:
            if rec["t_sent_ns"] is None:
                rec["t_sent_ns"] = now()  # failed before the bytes left (e.g. connection refused)
            if rec["t_done_ns"] is None:
                rec["t_done_ns"] = now()
            rec["chunk_ns"] = chunks
            rec["output_text"] = "".join(texts)
            if chunks:
                rec["t_first_token_ns"], rec["t_last_token_ns"] = chunks[0], chunks[-1]
            if usage:
                rec["prompt_tokens"] = usage.get("prompt_tokens")
                rec["output_tokens"] = usage.get("completion_tokens")
                rec["output_tokens_source"] = "usage"
            elif chunks:
                rec["output_tokens"] = len(chunks)
                rec["output_tokens_source"] = "chunks"
            STATE["inflight"] -= 1
            STATE["done"] += 1
            assert SINK is not None
            SINK.add(rec)
            # Locust's live table only (rounded); the record above is the measurement.
            if rec["status"] == OK:
                exc = None
            elif exc is None:
                exc = RuntimeError(rec["error"] or rec["status"])
            self.environment.events.request.fire(
                request_type="POST", name=spec["endpoint"], response_time=(rec["t_done_ns"] - rec["t_sent_ns"]) / 1e6,
                response_length=len(chunks), exception=exc, context={},
            )  # fmt: skip


class OpenLoopUser(StreamingUser):
    """One scheduler: sends each request at its intended time, whatever the others are doing."""

    @task
    def run_schedule(self) -> None:
        spec = SPEC
        pool = gevent.pool.Pool(spec["max_inflight"])
        POOLS.append(pool)
        items = spec["items"]
        t0 = STATE["t0_ns"]
        mine, of = WORKER["index"] or 0, WORKER["count"]
        for i, (offset_s, phase, prompt_idx) in enumerate(spec["schedule"]):
            if i % of != mine:
                continue  # distributed: worker k sends every k-th arrival (a split Poisson stream is Poisson)
            t_sched = t0 + int(offset_s * 1e9)
            delay = (t_sched - now()) / 1e9
            if delay > 0:
                gevent.sleep(delay)
            if STATE["stopping"]:
                break
            rid = f"{spec['load_point']}-{i}"
            if pool.full():
                STATE["dropped"] += 1
                assert SINK is not None
                SINK.add(empty_record(
                    load_point=spec["load_point"], request_id=rid, worker=os.getpid(), phase=phase,
                    prompt_idx=prompt_idx, endpoint=spec["endpoint"], max_tokens=items[prompt_idx]["max_tokens"],
                    prompt_tokens_client=items[prompt_idx]["prompt_tokens_client"], t_scheduled_ns=t_sched,
                    status=DROPPED, error=f"max_inflight={spec['max_inflight']} reached",
                ))  # fmt: skip
                continue
            pool.spawn(self.send, items[prompt_idx], t_sched, phase, rid)
        finish(pool)
        raise StopUser()


class ClosedLoopUser(StreamingUser):
    """One of N users: the next request leaves when the previous one finished (plus think time).

    One request per task run, so Locust can stop a user gracefully between requests when a
    shape lowers the user count (environment.stop_timeout is set)."""

    @task
    def one(self) -> None:
        spec = SPEC
        t = now()
        if STATE["stopping"] or t >= STATE["end_ns"]:
            raise StopUser()
        n = STATE["sent"]
        phase = phase_of((t - STATE["t0_ns"]) / 1e9, spec["warmup_s"], spec["duration_s"])
        tag = "" if WORKER["index"] is None else f"w{WORKER['index']}-"
        self.send(spec["items"][n % len(spec["items"])], t, phase, f"{spec['load_point']}-{tag}{n}")
        if spec["think_time_s"] > 0:
            gevent.sleep(spec["think_time_s"])


class UsersShape(LoadTestShape):
    """Closed-loop users over time: round(users x m(u)), at least 1 (Locust ticks about once a second)."""

    def __init__(self, users: int, shape: dict[str, Any], total_s: float) -> None:
        super().__init__()
        self.users, self.total_s = users, total_s
        self.m = shape_multiplier(SimpleNamespace(**shape))

    def tick(self) -> tuple[int, float] | None:
        u = min(max((now() - STATE["t0_ns"]) / 1e9, 0.0) / self.total_s, 1.0)
        target = max(1, round(self.users * self.m(u)))
        # Keep the last target after the end; the main loop decides when the point is over
        # (returning None would make Locust kill users with requests in flight).
        return target, float(max(target, 1) * 10)


def finish(pool: gevent.pool.Pool) -> None:
    """Wait for in-flight requests up to drain_timeout_s, then cancel the rest."""
    if not STATE["stopping"]:
        pool.join(timeout=SPEC["drain_timeout_s"])
    pool.kill(block=True, timeout=5)


def prepare(spec: dict[str, Any]) -> tuple[type[StreamingUser], int, float]:
    """Process-wide setup from the spec: priority, affinity, request bytes. Returns (user class, users, total_s)."""
    if spec.get("nice"):
        # On a small machine shared with the engine, a higher priority keeps engine CPU bursts
        # from delaying this process's timestamps; it needs CAP_SYS_NICE (root), else it is skipped.
        try:
            os.nice(int(spec["nice"]))
        except OSError as e:
            print(f"[loadgen] could not change priority by {spec['nice']}: {e}", flush=True)
    if spec.get("cpu_affinity"):
        os.sched_setaffinity(0, set(spec["cpu_affinity"]))  # benchmarks pin the generator away from the server
    if spec.get("realtime"):
        # placement.loadgen_priority=realtime: this process needs a few % of a core but must never
        # wait for it (experiments/placement.py). Threads started later inherit it; those that
        # imports already started are set one by one (the policy is per thread on Linux).
        try:
            for tid in os.listdir("/proc/self/task"):
                os.sched_setscheduler(int(tid), os.SCHED_RR, os.sched_param(1))
        except OSError as e:
            print(f"[loadgen] could not use realtime scheduling ({e}); running at normal priority", flush=True)
    headers: dict[str, str] = {}
    if spec.get("api_key_env"):
        key = os.environ.get(spec["api_key_env"])
        if not key:
            raise SystemExit(f"environment variable {spec['api_key_env']} (engine.api_key_env) is not set")
        headers["Authorization"] = f"Bearer {key}"
    for item in spec["items"]:
        body = request_body(item, spec["endpoint"], spec["model"], spec["temperature"], item.get("extras") or {})
        RAW_REQUESTS[item["prompt_idx"]] = build_request(
            spec["base_url"], ENDPOINT_PATHS[spec["endpoint"]], json.dumps(body).encode(), headers
        )
    total_s = spec["warmup_s"] + spec["duration_s"] + spec.get("cooldown_s", 0.0)
    # Everything built so far lives until exit: freeze it, so the collector's full passes during
    # the load skip it (measured: a gen2 pass mid-run stalled the hub 30-47 ms; frozen, 0.5 ms).
    gc.collect()
    gc.freeze()
    if spec["mode"] == "open":
        return OpenLoopUser, 1, total_s
    if spec["mode"] == "closed":
        return ClosedLoopUser, int(spec["users"]), total_s
    raise SystemExit(f"unknown mode {spec['mode']!r}")


def finished(spec: dict[str, Any], n_local_users: int) -> bool:
    """This process has nothing left to send or wait for."""
    if STATE["inflight"]:
        return False
    if spec["mode"] == "open":
        return STATE["users_stopped"] >= n_local_users
    return now() >= STATE["end_ns"]


def horizon_s(spec: dict[str, Any], total_s: float) -> float:
    if spec["mode"] == "open":
        return (spec["schedule"][-1][0] if spec["schedule"] else 0.0) + spec["drain_timeout_s"] + 30
    return total_s + spec["request_timeout_s"] + 30


def progress(spec: dict[str, Any], extra: str = "") -> None:
    elapsed = (now() - STATE["t0_ns"]) / 1e9
    print(
        f"[loadgen] point {spec['load_point']}: t={elapsed:5.1f}s sent={STATE['sent']} done={STATE['done']} "
        f"inflight={STATE['inflight']} dropped={STATE['dropped']}{extra}",
        flush=True,
    )


def stop_everything(runner: Any) -> None:
    """Cancel what is still in flight (GreenletExit -> records with status cancelled) and quit."""
    STATE["stopping"] = True
    for pool in POOLS:
        pool.kill(block=True, timeout=5)
    runner.quit()
    runner.greenlet.join(timeout=10)


def write_meta(spec: dict[str, Any], **extra: Any) -> None:
    meta = {
        "t0_ns": STATE["t0_ns"], "t_end_ns": now(), "pid": os.getpid(), "sent": STATE["sent"], "done": STATE["done"],
        "dropped": STATE["dropped"], "inflight_at_exit": STATE["inflight"],
        "locust_version": sys.modules["locust"].__version__, "realtime": os.sched_getscheduler(0) == os.SCHED_RR,
        **extra,
    }  # fmt: skip
    with open(spec["meta_path"], "w") as f:
        json.dump(meta, f)


def install_signal_handlers() -> None:
    def on_signal(*_: object) -> None:
        STATE["stopping"] = True  # schedulers stop sending; in-flight requests are cancelled below

    gevent.signal_handler(signal.SIGTERM, on_signal)
    gevent.signal_handler(signal.SIGINT, on_signal)


def run_local(spec: dict[str, Any]) -> int:
    """One process: Locust's local runner drives the whole load point."""
    global SINK
    user_cls, n_users, total_s = prepare(spec)
    SINK = RecordSink(spec["records_path"])
    shape = UsersShape(n_users, spec["shape"], total_s) if spec["mode"] == "closed" and spec.get("shape") else None
    env = Environment(user_classes=[user_cls], events=events, host=spec["base_url"], shape_class=shape)
    # Users asked to stop (shape ramps down) finish their request first; bounded by the request timeout.
    env.stop_timeout = float(spec["request_timeout_s"])
    runner = env.create_local_runner()
    install_signal_handlers()
    lag_g = gevent.spawn(loop_lag_monitor, spec["lag_path"])
    # Everything is imported and allocated; start the clock a little ahead so that the
    # first scheduled request is not late because of spawning.
    STATE["t0_ns"] = now() + int(spec.get("start_delay_s", 0.2) * 1e9)
    STATE["end_ns"] = STATE["t0_ns"] + int(total_s * 1e9)
    if shape is not None:
        runner.start_shape()
    else:
        runner.start(n_users, spawn_rate=max(n_users, 1) * 1000)
    deadline = time.monotonic() + horizon_s(spec, total_s) + spec.get("start_delay_s", 0.2)
    last_note = time.monotonic()
    while time.monotonic() < deadline and not STATE["stopping"]:
        gevent.sleep(0.2)
        if finished(spec, n_users):
            break
        if time.monotonic() - last_note >= 5:
            last_note = time.monotonic()
            progress(spec)
    stop_everything(runner)
    lag_g.kill()
    SINK.close()
    write_meta(spec)
    return 0


def run_master(spec: dict[str, Any], bind_host: str, port: int, expect: int) -> int:
    """Distributed: wait for `expect` workers, hand each the spec and a common start time, collect
    their records as they stream in, and finish when every worker reported done with a count that
    matches what arrived (nothing lost, nothing counted twice)."""
    global SINK
    user_cls, n_users, total_s = prepare(spec)
    SINK = RecordSink(spec["records_path"])
    lag_f = open(spec["lag_path"], "a", buffering=1)  # noqa: SIM115 - closed below
    received: dict[str, int] = {}
    done: dict[str, dict[str, Any]] = {}
    shape = UsersShape(n_users, spec["shape"], total_s) if spec["mode"] == "closed" and spec.get("shape") else None
    env = Environment(user_classes=[user_cls], events=events, host=spec["base_url"], shape_class=shape)
    env.stop_timeout = float(spec["request_timeout_s"])
    runner = env.create_master_runner(master_bind_host=bind_host, master_bind_port=port)

    def on_records(environment: Any, msg: Any, **kw: Any) -> None:
        SINK.add_lines(msg.data)
        received[msg.node_id] = received.get(msg.node_id, 0) + len(msg.data)

    def on_lag(environment: Any, msg: Any, **kw: Any) -> None:
        lag_f.write(msg.data + "\n")

    def on_done(environment: Any, msg: Any, **kw: Any) -> None:
        done[msg.node_id] = msg.data

    runner.register_message("records", on_records)
    runner.register_message("lag", on_lag)
    runner.register_message("done", on_done)
    install_signal_handlers()
    print(f"[loadgen] master on {bind_host}:{port} waiting for {expect} worker(s)", flush=True)
    wait_until = time.monotonic() + float(spec.get("worker_connect_timeout_s", 60))
    while len(runner.clients.ready) < expect and not STATE["stopping"]:
        if time.monotonic() > wait_until:
            print(f"[loadgen] only {len(runner.clients.ready)} of {expect} workers connected", flush=True)
            runner.quit()
            return 3
        gevent.sleep(0.1)
    start_at = time.time() + 1.0  # every worker starts its clock at this wall time
    runner.send_message("spec", {"spec": spec, "start_at_wall": start_at, "workers": expect})
    STATE["t0_ns"] = now() + int((start_at - time.time()) * 1e9)
    STATE["end_ns"] = STATE["t0_ns"] + int(total_s * 1e9)
    if shape is not None:
        runner.start_shape()
    else:
        # open loop: one scheduler user per worker; Locust spreads users evenly over workers
        runner.start(expect if spec["mode"] == "open" else n_users, spawn_rate=10_000)
    deadline = time.monotonic() + horizon_s(spec, total_s) + 60
    last_note = time.monotonic()
    while time.monotonic() < deadline and not STATE["stopping"] and len(done) < expect:
        gevent.sleep(0.2)
        if time.monotonic() - last_note >= 5:
            last_note = time.monotonic()
            print(f"[loadgen] point {spec['load_point']}: records received {sum(received.values())} "
                  f"from {len(received)} worker(s), {len(done)} done", flush=True)  # fmt: skip
    if STATE["stopping"]:
        runner.send_message("stop_now")
        until = time.monotonic() + 20
        while len(done) < expect and time.monotonic() < until:
            gevent.sleep(0.1)
    runner.quit()
    gevent.sleep(0.5)
    SINK.close()
    lag_f.close()
    merge_ok = len(done) == expect and all(received.get(w, 0) == d["records"] for w, d in done.items())
    STATE["sent"] = sum(d["sent"] for d in done.values())
    STATE["done"] = sum(d["done"] for d in done.values())
    STATE["dropped"] = sum(d["dropped"] for d in done.values())
    write_meta(spec, workers={w: {**d, "received": received.get(w, 0)} for w, d in done.items()},
               merge_ok=merge_ok, records_received=sum(received.values()))  # fmt: skip
    return 0 if merge_ok else 4


def run_worker(spec_path: str | None, master_host: str, port: int) -> int:
    """Distributed: connect to the master, take the spec and start time it sends, run this worker's
    share, stream records (and keep a local copy) and report done with the count sent."""
    global SINK
    env = Environment(user_classes=[OpenLoopUser, ClosedLoopUser], events=events)
    runner = env.create_worker_runner(master_host=master_host, master_port=port)
    install_signal_handlers()
    ready = gevent.event.Event()
    box: dict[str, Any] = {}

    def on_spec(environment: Any, msg: Any, **kw: Any) -> None:
        box.update(msg.data)
        ready.set()

    def on_stop_now(environment: Any, msg: Any, **kw: Any) -> None:
        STATE["stopping"] = True

    runner.register_message("spec", on_spec)
    runner.register_message("stop_now", on_stop_now)
    while not ready.wait(timeout=0.5):
        if STATE["stopping"] or runner.greenlet.dead:
            return 0
    SPEC.update(box["spec"])
    spec = SPEC
    WORKER["index"], WORKER["count"] = runner.worker_index, int(box["workers"])
    user_cls, n_users, total_s = prepare(spec)
    env.user_classes = [user_cls]
    env.shape_class = None
    env.stop_timeout = float(spec["request_timeout_s"])
    local = f"{spec['records_path']}.worker{WORKER['index']}"
    SINK = RecordSink(local, forward=lambda lines: runner.send_message("records", lines))
    lag_g = gevent.spawn(loop_lag_monitor, f"{spec['lag_path']}.worker{WORKER['index']}",
                         forward=lambda line: runner.send_message("lag", line))  # fmt: skip
    STATE["t0_ns"] = now() + int((box["start_at_wall"] - time.time()) * 1e9)
    STATE["end_ns"] = STATE["t0_ns"] + int(total_s * 1e9)
    # Open loop: wait for our scheduler user; closed loop: for the end of the window.
    deadline = time.monotonic() + horizon_s(spec, total_s) + 30
    gevent.sleep(max((STATE["t0_ns"] - now()) / 1e9, 0) + 0.5)
    while time.monotonic() < deadline and not STATE["stopping"]:
        gevent.sleep(0.2)
        if finished(spec, 1 if spec["mode"] == "open" else 0):
            break
    STATE["stopping"] = True
    for pool in POOLS:
        pool.kill(block=True, timeout=5)
    runner.stop()  # our users end (cancelled records if any were in flight)
    gevent.sleep(0.2)
    lag_g.kill()
    SINK.flush()
    runner.send_message("done", {"sent": STATE["sent"], "done": STATE["done"], "dropped": STATE["dropped"], "records": SINK.count})
    runner.greenlet.join(timeout=30)  # until the master says quit
    SINK.close()
    return 0


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="servelab load generator (one load point)")
    ap.add_argument("spec", nargs="?", help="spec JSON (local and master roles)")
    ap.add_argument("--role", choices=("local", "master", "worker"), default="local")
    ap.add_argument("--master-host", default="127.0.0.1")
    ap.add_argument("--master-bind", default="127.0.0.1")
    ap.add_argument("--master-port", type=int, default=5557)
    ap.add_argument("--expect-workers", type=int, default=1)
    a = ap.parse_args(argv)
    if a.role == "worker":
        return run_worker(a.spec, a.master_host, a.master_port)
    with open(a.spec) as f:
        SPEC.update(json.load(f))
    if a.role == "master":
        return run_master(SPEC, a.master_bind, a.master_port, a.expect_workers)
    return run_local(SPEC)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
