"""What every role of the load-generator process shares: its state, the record sink, the users.

How requests are timed (see ../shared/reference/locust.md for the measurements behind this):
- Request bytes are built before the load starts (:func:`prepare`); `t_sent` is stamped right
  before ``sendall`` (loadgen.sse_client); SSE lines are read with geventhttpclient's
  ``readline(b"\\n")``, which returns as soon as one line is buffered (Locust's own
  ``iter_lines`` reads 1 KiB blocks and would add ~100 ms to TTFT).
- Each line is stamped with the generator's clock (:data:`loadgen.clock.now`, CLOCK_MONOTONIC)
  *before* it is parsed.
- Open loop: one scheduler user walks the precomputed schedule and spawns one greenlet per
  request at its intended time into a bounded pool; it never waits for a free user. If the
  pool is full the request is recorded as ``dropped`` (never silently delayed).
- Closed loop: N users, each sending its next request when the previous one finishes.
- Locust's stats table (rounded to ~2 significant digits) is only a live view; the raw
  records written here are the source of truth.

All mutable state of the process is one :class:`LoadGen` object, bound to the user classes
with :func:`bind`; roles create it from the :class:`~loadgen.spec.LoadPointSpec`.
Side effects: HTTP to the engine; appends JSON lines to the records and loop-lag files; writes
the meta JSON; changes the process's priority and CPU affinity when the spec asks.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import gevent
import gevent.event
import gevent.pool
from gevent import GreenletExit
from locust import LoadTestShape, User, constant, task
from locust.exception import StopUser

from engines.auth import ApiKeyError, bearer_headers
from loadgen import clock
from loadgen.arrivals import phase_of, shape_multiplier
from loadgen.locust.conversation import SessionUserMixin
from loadgen.openai_api import DONE, ENDPOINT_PATHS, choice_text, request_body, sse_payload
from loadgen.records import CANCELLED, DROPPED, ERROR, OK, TIMEOUT, empty_record
from loadgen.sessions import FAILED
from loadgen.spec import LoadPointSpec, RequestItem
from loadgen.sse_client import CapExceeded, ConnectionPool, build_request, read_capped, read_line

now = clock.now  # bound at import: a test-only clock offset is installed before this module loads

START_DELAY_S = 0.2  # the clock starts this long after setup, so the first send is not late because of spawning
WORKER_CONNECT_TIMEOUT_S = 60.0  # distributed: how long the master waits for its workers
EXIT_WORKERS_MISSING = 3
EXIT_MERGE_MISMATCH = 4


class RecordSink:
    """Buffers finished records and appends them as JSON lines every `interval_s`."""

    def __init__(self, path: str, interval_s: float = 0.5, forward: Callable[[list[str]], None] | None = None) -> None:
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


@dataclass
class LoadGen:
    """The process's state: the spec, what was prepared from it, the counters and the window."""

    spec: LoadPointSpec
    stop_event: gevent.event.Event = field(default_factory=gevent.event.Event)  # set: stop sending, cancel
    raw_requests: dict[int, bytes] = field(default_factory=dict)  # prompt_idx -> exact request bytes
    sink: RecordSink | None = None
    pools: list[gevent.pool.Pool] = field(default_factory=list)  # open-loop request pools, cancelled at exit
    headers: dict[str, str] = field(default_factory=dict)  # HTTP headers of every request (auth)
    sessions_started: int = 0  # closed-loop sessions: the next session's number
    worker_index: int | None = None  # distributed: this worker's index (None: local or master)
    worker_count: int = 1
    t0_ns: int = 0  # start of the window on this process's clock
    end_ns: int = 0
    inflight: int = 0
    sent: int = 0
    done: int = 0
    dropped: int = 0
    users_stopped: int = 0

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def request_stop(self) -> None:
        self.stop_event.set()

    def start_clock(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns
        self.end_ns = t0_ns + int(self.spec.window_s * 1e9)

    def add(self, rec: dict[str, Any]) -> None:
        assert self.sink is not None
        self.sink.add(rec)


def loop_lag_monitor(gen: LoadGen, path: str, period_s: float = 0.01, report_s: float = 1.0,
                     forward: Callable[[str], None] | None = None) -> None:  # fmt: skip
    """Measures how late a 10 ms gevent sleep wakes up (hub stalls delay every timestamp) and,
    once a second, appends {t_ns, lag_max_ms, lag_mean_ms, cpu_pct, inflight, worker} to `path`."""
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
                    "inflight": gen.inflight,
                    "worker": gen.worker_index,
                })  # fmt: skip
                f.write(line + "\n")
                if forward is not None:
                    forward(line)
                window_start, cpu_start, lags = now(), cpu, []


class StreamingUser(SessionUserMixin, User):
    """Shared request logic: one streamed OpenAI-compatible request -> one raw record."""

    abstract = True
    wait_time = constant(0)
    gen: ClassVar[LoadGen]  # set by bind() before any user starts

    def on_start(self) -> None:
        spec = self.gen.spec
        self.conns = ConnectionPool(spec.base_url, connect_timeout_s=30.0, io_timeout_s=spec.request_timeout_s)

    def on_stop(self) -> None:
        self.gen.users_stopped += 1
        self.conns.close()

    def send(self, item: RequestItem, t_sched_ns: int, phase: str, request_id: str) -> None:
        spec = self.gen.spec
        rec = empty_record(
            load_point=spec.load_point,
            request_id=request_id,
            worker=os.getpid(),
            phase=phase,
            prompt_idx=item.prompt_idx,
            endpoint=spec.endpoint,
            max_tokens=item.max_tokens,
            prompt_tokens_client=item.prompt_tokens_client,
            t_scheduled_ns=t_sched_ns,
        )
        self.stream(rec, self.gen.raw_requests[item.prompt_idx])

    def stream(self, rec: dict[str, Any], raw: bytes, keep: bool = False) -> dict[str, Any]:
        """Send the request bytes `raw`, read its stream into `rec` (stamps, text, usage) and add
        the record to the sink; `keep`: return it unadded (a session adds it once it knows whether
        the session goes on). A failure of the request is recorded, never raised (except cancel)."""
        g = self.gen
        spec = g.spec
        chat = spec.endpoint == "chat"
        chunks: list[int] = []
        texts: list[str] = []
        usage: dict[str, Any] | None = None
        g.inflight += 1
        g.sent += 1
        exc: Exception | None = None
        try:
            with gevent.Timeout(spec.request_timeout_s):
                t_sent, resp, sock = self.conns.send(raw)
                rec["t_sent_ns"] = t_sent
                rec["t_headers_ns"] = now()
                rec["http_status"] = int(resp.status_code or 0)
                if resp.status_code != 200:
                    body, more = read_capped(resp, spec.max_error_body_bytes)  # never the whole body
                    detail = body[:300].decode(errors="replace")
                    rec["status"] = ERROR
                    rec["error"] = f"HTTP {resp.status_code}: {detail}".strip() + (
                        f" (body over {spec.max_error_body_bytes} bytes, not read)" if more else "")
                else:
                    n_text = 0
                    while True:
                        line = read_line(resp, spec.max_sse_line_bytes)
                        t = now()  # stamp before parsing
                        if not line:
                            break
                        payload = sse_payload(line)
                        if payload is None:
                            continue
                        if payload == DONE:
                            continue  # read on to the end of the chunked body, so the connection can be reused
                        d = json.loads(payload)
                        if d.get("error"):
                            raise RuntimeError(f"server error in stream: {d['error']}")
                        if rec["response_id"] is None:
                            rec["response_id"] = d.get("id")
                        choices = d.get("choices")
                        if choices:
                            c0 = choices[0]
                            text = choice_text(c0, chat)
                            if text:
                                n_text += len(text)
                                if n_text > spec.max_output_text_chars:
                                    raise CapExceeded(f"output text over {spec.max_output_text_chars} characters "
                                                      "(traffic.max_output_text_chars)")  # fmt: skip
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
            rec["error"] = f"no completion within {spec.request_timeout_s} s"
            exc = e
        except GreenletExit:
            rec["status"] = CANCELLED
            rec["error"] = "cancelled: load point stopped while in flight"
            raise
        except CapExceeded as e:  # the endpoint sent more than a cap allows: its connection is not reused
            rec["status"] = ERROR
            rec["error"] = f"over a cap: {e}"
            exc = e
            with contextlib.suppress(Exception):
                sock.close()
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
                rec["cached_tokens"] = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            elif chunks:
                rec["output_tokens"] = len(chunks)
                rec["output_tokens_source"] = "chunks"
            g.inflight -= 1
            g.done += 1
            if not keep:
                g.add(rec)
            # Locust's live table only (rounded); the record above is the measurement.
            if rec["status"] == OK:
                exc = None
            elif exc is None:
                exc = RuntimeError(rec["error"] or rec["status"])
            self.environment.events.request.fire(
                request_type="POST", name=spec.endpoint, response_time=(rec["t_done_ns"] - rec["t_sent_ns"]) / 1e6,
                response_length=len(chunks), exception=exc, context={},
            )  # fmt: skip
        return rec


class OpenLoopUser(StreamingUser):
    """One scheduler: sends each request at its intended time, whatever the others are doing."""

    @task
    def run_schedule(self) -> None:
        g = self.gen
        spec = g.spec
        pool = gevent.pool.Pool(spec.max_inflight)
        g.pools.append(pool)
        items = spec.items
        t0 = g.t0_ns
        mine, of = g.worker_index or 0, g.worker_count
        for i, a in enumerate(spec.schedule):
            if i % of != mine:
                continue  # distributed: worker k sends every k-th arrival (a split Poisson stream is Poisson)
            t_sched = t0 + int(a.offset_s * 1e9)
            delay = (t_sched - now()) / 1e9
            if delay > 0:
                gevent.sleep(delay)
            if g.stopping:
                break
            rid = f"{spec.load_point}-{i}"
            if pool.full():
                g.dropped += 1
                it = items[a.prompt_idx]
                sess = spec.sessions[a.prompt_idx] if spec.sessions else None
                g.add(empty_record(
                    load_point=spec.load_point, request_id=rid, worker=os.getpid(), phase=a.phase,
                    prompt_idx=a.prompt_idx, endpoint=spec.endpoint, max_tokens=it.max_tokens,
                    prompt_tokens_client=it.prompt_tokens_client, t_scheduled_ns=t_sched,
                    status=DROPPED, error=f"max_inflight={spec.max_inflight} reached",
                    **({"session_id": rid, "turn": sess.first_turn, "session_end": FAILED} if sess else {}),
                ))  # fmt: skip
                continue
            if spec.sessions:  # an arrival opens a conversation (rates are sessions/s)
                pool.spawn(self.run_session, spec.sessions[a.prompt_idx], t_sched, rid)
            else:
                pool.spawn(self.send, items[a.prompt_idx], t_sched, a.phase, rid)
        finish(g, pool)
        raise StopUser()


class ClosedLoopUser(StreamingUser):
    """One of N users: the next request leaves when the previous one finished (plus think time).

    One request per task run, so Locust can stop a user gracefully between requests when a
    shape lowers the user count (environment.stop_timeout is set)."""

    @task
    def one(self) -> None:
        g = self.gen
        spec = g.spec
        t = now()
        if g.stopping or t >= g.end_ns:
            raise StopUser()
        tag = "" if g.worker_index is None else f"w{g.worker_index}-"
        if spec.sessions:  # each user holds one conversation at a time, back to back
            n = g.sessions_started
            g.sessions_started += 1
            self.run_session(spec.sessions[n % len(spec.sessions)], t, f"{spec.load_point}-{tag}s{n}")
            return  # the session's turns think inside it; the next session starts at once
        n = g.sent
        phase = phase_of((t - g.t0_ns) / 1e9, spec.warmup_s, spec.duration_s)
        self.send(spec.items[n % len(spec.items)], t, phase, f"{spec.load_point}-{tag}{n}")
        if spec.think_time_s > 0:
            gevent.sleep(spec.think_time_s)


USER_CLASSES: tuple[type[StreamingUser], ...] = (OpenLoopUser, ClosedLoopUser)


class UsersShape(LoadTestShape):
    """Closed-loop users over time: round(users x m(u)), at least 1 (Locust ticks about once a second)."""

    def __init__(self, gen: LoadGen) -> None:
        super().__init__()
        assert gen.spec.users is not None and gen.spec.shape is not None
        self.gen, self.users, self.total_s = gen, gen.spec.users, gen.spec.window_s
        self.m = shape_multiplier(SimpleNamespace(**vars(gen.spec.shape)))

    def tick(self) -> tuple[int, float] | None:
        u = min(max((now() - self.gen.t0_ns) / 1e9, 0.0) / self.total_s, 1.0)
        target = max(1, round(self.users * self.m(u)))
        # Keep the last target after the end; the main loop decides when the point is over
        # (returning None would make Locust kill users with requests in flight).
        return target, float(max(target, 1) * 10)


def users_shape(gen: LoadGen) -> UsersShape | None:
    """The closed-loop shape of the point, if it has one."""
    return UsersShape(gen) if gen.spec.loop == "closed" and gen.spec.shape is not None else None


def bind(gen: LoadGen) -> None:
    """Give every user class the process's state (users read it on every request)."""
    StreamingUser.gen = gen


def finish(gen: LoadGen, pool: gevent.pool.Pool) -> None:
    """Wait for in-flight requests up to drain_timeout_s, then cancel the rest."""
    if not gen.stopping:
        pool.join(timeout=gen.spec.drain_timeout_s)
    pool.kill(block=True, timeout=5)


def prepare(gen: LoadGen, placement: bool = True) -> tuple[type[StreamingUser], int]:
    """Process-wide setup from the spec: priority and affinity (`placement`: this process runs on the
    lab's machine), request bytes, the users' state. Returns (user class, users)."""
    spec = gen.spec
    if placement and spec.loadgen_nice:
        # On a small machine shared with the engine, a higher priority keeps engine CPU bursts
        # from delaying this process's timestamps; it needs CAP_SYS_NICE (root), else it is skipped.
        try:
            os.nice(spec.loadgen_nice)
        except OSError as e:
            print(f"[loadgen] could not change priority by {spec.loadgen_nice}: {e}", flush=True)
    if placement and spec.cpus:
        os.sched_setaffinity(0, set(spec.cpus))  # the placement keeps the generator off the engine's cores
    if placement and spec.realtime:
        set_realtime()
    headers: dict[str, str] = {}
    try:  # stripped and checked; the message names the variable, never the key
        headers.update(bearer_headers(spec.api_key_env))
    except ApiKeyError as e:
        raise SystemExit(str(e)) from None
    gen.headers = headers
    path = ENDPOINT_PATHS[spec.endpoint]
    for item in spec.items:
        body = request_body(item.prompt, item.max_tokens, spec.endpoint, spec.model, spec.temperature, item.extras)
        gen.raw_requests[item.prompt_idx] = build_request(spec.base_url, path, json.dumps(body).encode(), headers)
    bind(gen)
    # Everything built so far lives until exit: freeze it, so the collector's full passes during
    # the load skip it (measured: a gen2 pass mid-run stalled the hub 30-47 ms; frozen, 0.5 ms).
    gc.collect()
    gc.freeze()
    if spec.loop == "open":
        return OpenLoopUser, 1
    assert spec.users is not None
    return ClosedLoopUser, spec.users


def set_realtime() -> None:
    """SCHED_RR priority 1 for every thread of this process (placement.loadgen_priority=realtime).

    The generator needs a few % of a core but must never wait for it (experiments/placement.py:
    measured schedule-lag p99 2 ms instead of 11-25 ms on the same cores). The policy is per
    thread on Linux: threads started later inherit it, those imports already started are set one
    by one. Without CAP_SYS_NICE it says so and runs at normal priority (the meta records which).
    """
    try:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(tid), os.SCHED_RR, os.sched_param(1))
    except OSError as e:
        print(f"[loadgen] could not use realtime scheduling ({e}); running at normal priority", flush=True)


def finished(gen: LoadGen, n_local_users: int) -> bool:
    """This process has nothing left to send or wait for."""
    if gen.inflight:
        return False
    if gen.spec.loop == "open":
        return gen.users_stopped >= n_local_users
    return now() >= gen.end_ns


def horizon_s(spec: LoadPointSpec) -> float:
    """Longest the point may take from the start of its window (the process's own budget)."""
    if spec.loop == "open":
        return spec.last_send_s() + spec.drain_timeout_s + 30
    return spec.window_s + spec.request_timeout_s + 30


def progress(gen: LoadGen, extra: str = "") -> None:
    elapsed = (now() - gen.t0_ns) / 1e9
    print(
        f"[loadgen] point {gen.spec.load_point}: t={elapsed:5.1f}s sent={gen.sent} done={gen.done} "
        f"inflight={gen.inflight} dropped={gen.dropped}{extra}",
        flush=True,
    )


def cancel_inflight(gen: LoadGen) -> None:
    """Stop sending and cancel what is in flight (GreenletExit -> records with status cancelled)."""
    gen.request_stop()
    for pool in gen.pools:
        pool.kill(block=True, timeout=5)


def stop_everything(gen: LoadGen, runner: Any) -> None:
    """Cancel what is still in flight and quit the Locust runner."""
    cancel_inflight(gen)
    runner.quit()
    runner.greenlet.join(timeout=10)


def write_meta(gen: LoadGen, **extra: Any) -> None:
    """The point's meta JSON; `extra` adds role-specific keys (stopped_early, workers, clock_offsets)."""
    spec = gen.spec
    meta = {
        "load_point": spec.load_point, "load_value": spec.load_value, "kind": spec.kind, "loop": spec.loop,
        "t0_ns": gen.t0_ns, "t_end_ns": now(), "pid": os.getpid(), "sent": gen.sent, "done": gen.done,
        "dropped": gen.dropped, "inflight_at_exit": gen.inflight,
        "locust_version": sys.modules["locust"].__version__, "realtime": os.sched_getscheduler(0) == os.SCHED_RR,
        **extra,
    }  # fmt: skip
    with open(spec.paths.meta, "w") as f:
        json.dump(meta, f)


def install_signal_handlers(stop: gevent.event.Event) -> None:
    """SIGTERM/SIGINT set `stop`: schedulers stop sending; the role cancels in-flight requests and flushes."""
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
