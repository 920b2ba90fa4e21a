"""The load-point spec: THE contract between the lab (loadgen.driver) and the Locust process.

:class:`LoadPointSpec` is a frozen, typed description of one load point: what to send (items,
already turned into request fields), when (an open-loop schedule or a number of closed-loop
users), for how long, to which server, and where to write. The driver builds it with
:func:`build_spec` (pure), writes it with :meth:`LoadPointSpec.to_json`, and the generator process
reads it back with :meth:`LoadPointSpec.from_json`; a distributed master sends the same JSON to
its workers. Nothing else crosses that boundary.

Names are the config's names (loadgen.schema.TrafficConfig / WorkloadConfig): `kind`,
`loadgen_nice`, `workers`, ... One load point's entry of `traffic.points` is its `load_value`
(requests/s, users or trace speed-up, by `kind`). Defaults live only in the schema: no setting
here has a default (only the layout's `version` has), so every value is read from a config
object once, in :func:`build_spec`. Settings that only shape the schedule (`seed`, `burstiness`,
the trace's times) are consumed there: the spec carries their result, the schedule.

`loop` ("open" | "closed") is derived from `kind`, never stored: open loop sends at scheduled
times whatever the server does (poisson, constant, gamma, trace), closed loop keeps `users`
requests in flight (concurrency).

Side effects: none.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loadgen.arrivals import CLOSED_LOOP_KINDS, OPEN_LOOP_KINDS, Arrival, open_loop_schedule, trace_schedule
from loadgen.sessions import SessionPlan
from loadgen.workload import WorkloadItem

if TYPE_CHECKING:  # the schema is only read, never imported at run time (the generator stays light)
    from loadgen.schema import ShapeConfig, TrafficConfig, WorkloadConfig

SPEC_VERSION = 1
Loop = Literal["open", "closed"]


@dataclass(frozen=True)
class RequestItem:
    """One workload item as the generator needs it: the prompt, its length, and the request fields."""

    prompt_idx: int
    prompt: str
    prompt_tokens_client: int
    max_tokens: int
    extras: Mapping[str, Any]  # engine-specific body fields (e.g. ignore_eos), from the adapter


@dataclass(frozen=True)
class ShapeSpec:
    """traffic.shape (loadgen.schema.ShapeConfig) when set; see loadgen.arrivals.shape_multiplier."""

    kind: str
    start_fraction: float
    steps: int
    spike_at: float
    spike_width: float
    spike_factor: float
    min_fraction: float


@dataclass(frozen=True)
class DistributedSpec:
    """traffic.workers / remote_workers / master_bind / master_port: one Locust process, or a master
    with `workers` local worker processes plus `remote_workers` from other machines."""

    workers: int
    remote_workers: int
    master_bind: str
    master_port: int  # 0 = a free port, chosen by the driver (local workers only)
    # NAME of the variable holding the master/worker shared token (traffic.worker_token_env);
    # None = the driver makes a fresh one for its local workers (loadgen.locust.auth)
    token_env: str | None

    @property
    def enabled(self) -> bool:
        return self.workers > 1 or self.remote_workers > 0

    @property
    def expected_workers(self) -> int:
        return self.workers + self.remote_workers


@dataclass(frozen=True)
class OutputPaths:
    """Where the generator writes (absolute or relative to the lab's working directory)."""

    records: str  # requests.<point>.jsonl, one raw record per line (loadgen.records.REQUEST_SCHEMA)
    lag: str  # loadgen_lag.<point>.jsonl, the once-a-second self-check
    meta: str  # loadgen_meta.<point>.json, written at the end


@dataclass(frozen=True)
class LoadPointSpec:
    """One load point, complete. Build with :func:`build_spec`; see the module doc for the names."""

    load_point: int  # index into traffic.points
    load_value: float  # traffic.points[load_point]: req/s (open loop), users (closed), speed-up (trace)
    kind: str  # traffic.kind
    base_url: str
    model: str  # the served model name sent in each request
    endpoint: str  # workload.endpoint: completions | chat
    temperature: float  # workload.temperature
    api_key_env: str | None  # NAME of the variable holding the key; the key itself never lands in a file
    items: tuple[RequestItem, ...]
    schedule: tuple[Arrival, ...]  # open loop: every request's intended offset, phase and item; closed: ()
    users: int | None  # closed loop: concurrent users; open loop: None
    shape: ShapeSpec | None  # closed loop scales users with it; open loop: already in the schedule
    warmup_s: float
    duration_s: float
    cooldown_s: float
    think_time_s: float  # closed loop: pause of each user between its requests
    request_timeout_s: float
    drain_timeout_s: float
    max_inflight: int  # open loop: beyond this, requests are recorded as dropped
    loadgen_nice: int  # os.nice() increment of the generator process (negative needs CAP_SYS_NICE)
    cpus: tuple[int, ...] | None  # CPU affinity of the generator process(es); None = inherit
    # SCHED_RR priority 1 for the generator (placement.loadgen_priority=realtime): it needs a few %
    # of a core but must never wait for one; the meta records whether it got it
    realtime: bool
    distributed: DistributedSpec
    paths: OutputPaths
    # workload.kind=sessions: the planned sessions (loadgen.sessions); open loop, each arrival
    # opens session `prompt_idx`; closed loop, each user runs sessions back to back. () otherwise.
    sessions: tuple[SessionPlan, ...]
    max_model_len: int | None  # the engine's context limit: a session ends before a turn would pass it
    # caps on what the endpoint sends (traffic.max_*): over one, the request is an error naming it
    max_sse_line_bytes: int
    max_error_body_bytes: int
    max_output_text_chars: int
    version: int = SPEC_VERSION  # of this JSON layout (checked on read); not a setting

    @property
    def loop(self) -> Loop:
        """Open loop (sends on a schedule) or closed loop (N users), derived from `kind`."""
        return "closed" if self.kind in CLOSED_LOOP_KINDS else "open"

    @property
    def window_s(self) -> float:
        """warmup + measure + cooldown: how long load is offered."""
        return self.warmup_s + self.duration_s + self.cooldown_s

    def last_send_s(self) -> float:
        """Offset of the last scheduled send (open loop) or the end of the window (closed loop)."""
        if self.loop == "open":
            return self.schedule[-1].offset_s if self.schedule else 0.0
        return self.window_s

    def replace(self, **changes: Any) -> LoadPointSpec:
        return dataclasses.replace(self, **changes)

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; the schedule as [offset_s, phase, prompt_idx] triples (compact)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["items"] = [dataclasses.asdict(it) | {"extras": dict(it.extras)} for it in self.items]
        d["schedule"] = [[a.offset_s, a.phase, a.prompt_idx] for a in self.schedule]
        d["shape"] = dataclasses.asdict(self.shape) if self.shape is not None else None
        d["cpus"] = list(self.cpus) if self.cpus is not None else None
        d["distributed"] = dataclasses.asdict(self.distributed)
        d["paths"] = dataclasses.asdict(self.paths)
        d["sessions"] = [p.to_dict() for p in self.sessions]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoadPointSpec:
        if d.get("version") != SPEC_VERSION:
            raise ValueError(f"load-point spec version {d.get('version')!r}, this generator reads {SPEC_VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(d) - names:
            raise ValueError(f"unknown load-point spec fields: {sorted(unknown)}")
        if missing := names - set(d):
            raise ValueError(f"load-point spec lacks fields: {sorted(missing)}")
        return cls(
            **{
                **d,
                "items": tuple(RequestItem(**it) for it in d["items"]),
                "schedule": tuple(Arrival(float(o), str(p), int(i)) for o, p, i in d["schedule"]),
                "shape": ShapeSpec(**d["shape"]) if d["shape"] is not None else None,
                "cpus": tuple(d["cpus"]) if d["cpus"] is not None else None,
                "distributed": DistributedSpec(**d["distributed"]),
                "paths": OutputPaths(**d["paths"]),
                "sessions": tuple(SessionPlan.from_dict(p) for p in d["sessions"]),
            }
        )

    @classmethod
    def from_json(cls, s: str) -> LoadPointSpec:
        return cls.from_dict(json.loads(s))


def shape_spec(shape: ShapeConfig | None) -> ShapeSpec | None:
    """traffic.shape as a ShapeSpec, or None when no shape is set (kind null)."""
    if shape is None or not shape.kind:
        return None
    return ShapeSpec(**{f.name: getattr(shape, f.name) for f in dataclasses.fields(ShapeSpec)})


def build_spec(
    *,
    load_point: int,
    load_value: float,
    traffic: TrafficConfig,
    workload: WorkloadConfig,
    items: Sequence[WorkloadItem],
    base_url: str,
    model: str,
    extras_for: Callable[[int], Mapping[str, Any]],
    workdir: Path,
    api_key_env: str | None = None,
    trace_times_s: Sequence[float] | None = None,
    cpus: Sequence[int] | None = None,
    realtime: bool = False,
    sessions: Sequence[SessionPlan] = (),
    max_model_len: int | None = None,
) -> LoadPointSpec:
    """The complete instruction for one load point. Pure (reads no file; `workdir` only names paths).

    `extras_for(max_tokens)` gives the engine-specific request fields (e.g. ignore_eos).
    `trace_times_s` (kind=trace): the trace's arrival times. `cpus`: the generator's CPU affinity
    (from the placement), None to inherit the lab's; `realtime`: ask for SCHED_RR (placement).
    `sessions` (workload.kind=sessions): the session plans; an open-loop arrival then opens a
    session (rates are sessions/s). `max_model_len`: the engine's context limit, for sessions.
    Raises ValueError for a kind this generator does not know or a non-integer user count.
    """
    t = traffic
    if t.kind not in OPEN_LOOP_KINDS + CLOSED_LOOP_KINDS:
        raise ValueError(f"unknown traffic.kind {t.kind!r} (known: {', '.join(OPEN_LOOP_KINDS + CLOSED_LOOP_KINDS)})")
    value = float(load_value)
    schedule: tuple[Arrival, ...] = ()
    users: int | None = None
    if t.kind == "trace":
        if trace_times_s is None:
            raise ValueError("traffic.kind=trace needs the trace's arrival times")
        schedule = tuple(trace_schedule(trace_times_s, value, t.warmup_s, t.duration_s, t.cooldown_s))
    elif t.kind in OPEN_LOOP_KINDS:
        schedule = tuple(
            open_loop_schedule(
                t.kind, value, t.warmup_s, t.duration_s, len(sessions) if sessions else len(items),
                seed=t.seed + load_point,  # each point its own stream, reproducible
                cooldown_s=t.cooldown_s, burstiness=t.burstiness, shape=shape_spec(t.shape),
            )
        )  # fmt: skip
    else:
        users = int(value)
        if users < 1 or users != value:
            raise ValueError(f"traffic.points for kind=concurrency must be whole numbers >= 1, got {load_value}")
    return LoadPointSpec(
        load_point=load_point,
        load_value=value,
        kind=t.kind,
        base_url=base_url,
        model=model,
        endpoint=workload.endpoint,
        temperature=float(workload.temperature),
        api_key_env=api_key_env,
        items=tuple(
            RequestItem(it.prompt_idx, it.prompt, it.prompt_tokens_client, it.max_tokens, dict(extras_for(it.max_tokens)))
            for it in items
        ),
        schedule=schedule,
        users=users,
        shape=shape_spec(t.shape),
        warmup_s=float(t.warmup_s),
        duration_s=float(t.duration_s),
        cooldown_s=float(t.cooldown_s),
        think_time_s=float(t.think_time_s),
        request_timeout_s=float(t.request_timeout_s),
        drain_timeout_s=float(t.drain_timeout_s),
        max_inflight=int(t.max_inflight),
        loadgen_nice=int(t.loadgen_nice),
        cpus=tuple(int(c) for c in cpus) if cpus is not None else None,
        realtime=bool(realtime),
        distributed=DistributedSpec(
            workers=int(t.workers), remote_workers=int(t.remote_workers), master_bind=t.master_bind,
            master_port=int(t.master_port), token_env=getattr(t, "worker_token_env", None),
        ),  # fmt: skip
        paths=OutputPaths(
            records=str(workdir / f"requests.{load_point}.jsonl"),
            lag=str(workdir / f"loadgen_lag.{load_point}.jsonl"),
            meta=str(workdir / f"loadgen_meta.{load_point}.json"),
        ),
        sessions=tuple(p.with_extras(extras_for) for p in sessions),
        max_model_len=int(max_model_len) if max_model_len else None,
        max_sse_line_bytes=int(t.max_sse_line_bytes), max_error_body_bytes=int(t.max_error_body_bytes),
        max_output_text_chars=int(t.max_output_text_chars),
    )
