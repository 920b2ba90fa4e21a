"""Local role: one Locust process (a local runner) drives the whole load point.

Side effects: see :mod:`loadgen.locust.common` (HTTP to the engine, records/lag/meta files).
SIGTERM/SIGINT stop scheduling, cancel in-flight requests (recorded as cancelled), flush, exit 0.
"""

from __future__ import annotations

import time

import gevent
from locust import events
from locust.env import Environment

from loadgen.locust.common import (
    START_DELAY_S,
    LoadGen,
    RecordSink,
    finished,
    horizon_s,
    install_signal_handlers,
    loop_lag_monitor,
    now,
    prepare,
    progress,
    stop_everything,
    users_shape,
    write_meta,
)
from loadgen.spec import LoadPointSpec


def run_local(spec: LoadPointSpec) -> int:
    gen = LoadGen(spec)
    user_cls, n_users = prepare(gen)
    gen.sink = RecordSink(spec.paths.records)
    shape = users_shape(gen)
    env = Environment(user_classes=[user_cls], events=events, host=spec.base_url, shape_class=shape)
    # Users asked to stop (shape ramps down) finish their request first; bounded by the request timeout.
    env.stop_timeout = spec.request_timeout_s
    runner = env.create_local_runner()
    install_signal_handlers(gen.stop_event)
    lag_g = gevent.spawn(loop_lag_monitor, gen, spec.paths.lag)
    # Everything is imported and allocated; start the clock a little ahead so that the
    # first scheduled request is not late because of spawning.
    gen.start_clock(now() + int(START_DELAY_S * 1e9))
    if shape is not None:
        runner.start_shape()
    else:
        runner.start(n_users, spawn_rate=max(n_users, 1) * 1000)
    deadline = time.monotonic() + horizon_s(spec) + START_DELAY_S
    last_note = time.monotonic()
    while time.monotonic() < deadline and not gen.stopping:
        gen.stop_event.wait(0.2)
        if finished(gen, n_users):
            break
        if time.monotonic() - last_note >= 5:
            last_note = time.monotonic()
            progress(gen)
    stopped_early = gen.stopping  # told to stop (signal), not finished
    stop_everything(gen, runner)
    lag_g.kill()
    gen.sink.close()
    write_meta(gen, stopped_early=stopped_early)
    return 0
