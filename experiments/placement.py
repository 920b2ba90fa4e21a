"""Core placement: which CPUs the engine, its compute threads, the load generator, the telemetry
samplers and the lab may use. Pure: the caller passes the machine's CPU list.

Why: on a small machine the engine and the load generator compete for the same cores. The
vLLM CPU build binds its OMP compute thread to the first core and lets its API server and
scheduler float; a load generator sharing those cores wakes late, so its timestamps carry
the engine's CPU bursts (a default run on 2 cores measured event-loop stalls of 139 ms and a
schedule-lag p99 of 66 ms, which analysis.metrics.loadgen_health rightly flags). Giving the
generator cores of its own keeps its self-checks within their limits.

How a :class:`engines.placement.Placement` is applied (by the runner, not here): the engine's process tree gets
``engine_cpus`` as its affinity at spawn (vLLM's API server, scheduler and workers inherit it),
a CPU build gets ``omp_cpus`` as its OMP thread binding (engines/vllm.py turns it into
VLLM_CPU_OMP_THREADS_BIND), the Locust processes get ``loadgen_cpus``, the sampler processes
``telemetry_cpus`` and the lab process itself ``lab_cpus``. ``None`` = not pinned (inherit).
With ``loadgen_realtime`` the Locust processes ask for SCHED_RR priority 1: they need a few %
of a core but must never wait for it, and on a shared machine that is what keeps their
schedule lag low (measured: p99 2 ms instead of 11-25 ms with the same cores).

Side effects: none, except :func:`realtime_permitted` (briefly switches the calling thread to
SCHED_RR and back, to learn whether realtime scheduling is allowed here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engines.placement import Cpus, Placement, cpu_list_str

MODES = ("auto", "none", "manual")
LOADGEN_PRIORITIES = ("realtime", "normal")
OMP_WAIT_POLICIES = (None, "passive", "active")
# Engines the lab does not launch: there is nothing of theirs to keep apart from the generator.
EXTERNAL_ENGINES = ("endpoint",)
_MANUAL_LISTS = ("engine_cpus", "loadgen_cpus", "telemetry_cpus", "lab_cpus", "omp_cpus")

def default_loadgen_cores(ncpus: int, workers: int = 1) -> int:
    """Cores auto sets apart for the generator, samplers and lab: one per Locust worker process,
    at least one, and never more than half the machine (the engine keeps the rest)."""
    return max(1, min(max(1, workers), ncpus // 2))


def placement_problems(cfg: Any, host_cpus: Sequence[int], workers: int = 1) -> list[str]:
    """Preflight for the placement config on a machine whose lab may use `host_cpus`.

    Each problem is one line that names the fix; [] = plannable.
    """
    out: list[str] = []
    host = sorted(set(host_cpus))
    have = f"this machine lets the lab use cores {cpu_list_str(host)}" if host else "no usable core was found"
    if cfg.mode not in MODES:
        return [f"placement.mode={cfg.mode!r}: use one of {', '.join(MODES)} (or placement=auto|none|manual)"]
    if cfg.loadgen_priority not in LOADGEN_PRIORITIES:
        out.append(f"placement.loadgen_priority={cfg.loadgen_priority!r}: use realtime or normal")
    if cfg.omp_wait_policy not in OMP_WAIT_POLICIES:
        out.append(f"placement.omp_wait_policy={cfg.omp_wait_policy!r}: use passive, active or null")
    lists = {name: getattr(cfg, name) for name in _MANUAL_LISTS}
    if cfg.mode != "manual":
        given = [f"placement.{n}" for n, v in lists.items() if v is not None]
        if given:
            out.append(
                f"{', '.join(given)} only apply with placement=manual; add placement=manual or drop them"
            )
    if cfg.mode == "auto" and cfg.loadgen_cores is not None:
        if cfg.loadgen_cores < 1:
            out.append(f"placement.loadgen_cores must be >= 1 (or null), got {cfg.loadgen_cores}")
        elif len(host) >= 2 and cfg.loadgen_cores >= len(host):
            out.append(
                f"placement.loadgen_cores={cfg.loadgen_cores} leaves no core for the engine ({have}); "
                f"use at most {len(host) - 1}"
            )
    if cfg.mode == "manual":
        for name in ("engine_cpus", "loadgen_cpus"):
            if lists[name] is None:
                out.append(
                    f"placement=manual needs placement.{name}, e.g. placement.engine_cpus=[{host[-1] if host else 1}] "
                    f"placement.loadgen_cpus=[{host[0] if host else 0}]"
                )
        for name, v in lists.items():
            if v is None:
                continue
            if len(v) == 0:
                out.append(f"placement.{name} is empty; give at least one core ({have}) or null")
                continue
            bad = [c for c in v if not isinstance(c, int) or isinstance(c, bool) or c not in host]
            if bad:
                out.append(
                    f"placement.{name}={list(v)}: core(s) {bad} are not available ({have}); pick from those"
                )
            elif len(set(v)) != len(v):
                out.append(f"placement.{name}={list(v)} lists a core twice; list each once")
        omp, eng = lists["omp_cpus"], lists["engine_cpus"]
        if omp and eng and not set(omp) <= set(eng):
            out.append(
                f"placement.omp_cpus={list(omp)} must lie within placement.engine_cpus={list(eng)} "
                "(the engine's threads cannot run outside its cores)"
            )
    return out


def plan_placement(
    cfg: Any,
    host_cpus: Sequence[int],
    *,
    engine: str,
    gpu_planned: bool,
    workers: int = 1,
    realtime_allowed: bool = False,
) -> Placement:
    """The placement for one run. `host_cpus`: the cores the lab may use (os.sched_getaffinity(0)).

    `engine` is the engine adapter's name (external engines get nothing pinned), `gpu_planned`
    whether the plan has a GPU (then no OMP binding is planned: GPU engines compute elsewhere),
    `workers` the number of local Locust worker processes, `realtime_allowed` whether this lab
    may give a process realtime scheduling (:func:`realtime_permitted`). Call placement_problems
    first; an invalid config raises ValueError here.

    Auto on 2 cores, measured (`python run.py`: 4 req/s for 60 s, 4 runs, machine shared with
    other jobs): with the generator at realtime priority the engine keeps both cores and only its
    compute thread is moved off the generator's core. That gave a stall of 1.5-8.4 ms and a
    schedule-lag p99 of 1.8-2.5 ms, against 324-404 ms and 205-226 ms unpinned; TPOT p50 was
    12.6-19.6 ms, as fast as unpinned. Without realtime the engine is confined to the other core
    instead, because its API server and scheduler on the generator's core then stalled the
    generator by 150-330 ms (confined: stall 10 ms, p99 6 ms, but TPOT p50 97 ms on the busy machine).
    """
    if problems := placement_problems(cfg, host_cpus, workers):
        raise ValueError("; ".join(problems))
    host: Cpus = tuple(sorted(set(host_cpus)))
    wait = cfg.omp_wait_policy
    wants_rt = cfg.loadgen_priority == "realtime"
    rt = wants_rt and realtime_allowed and cfg.mode != "none"
    notes: list[str] = []
    if wants_rt and not realtime_allowed and cfg.mode != "none":
        notes.append(
            "the load generator runs at normal priority: realtime scheduling needs root, CAP_SYS_NICE or "
            "an RLIMIT_RTPRIO (ulimit -r); on a busy machine its latency checks may flag the run"
        )

    def placed(reason: str, eng: Cpus | None, omp: Cpus | None, lg: Cpus | None, tel: Cpus | None = None,
               lab: Cpus | None = None) -> Placement:  # fmt: skip
        return Placement(
            mode=cfg.mode, host_cpus=host, engine_cpus=eng, omp_cpus=omp, omp_wait_policy=wait, loadgen_cpus=lg,
            telemetry_cpus=tel if tel is not None else lg, lab_cpus=lab if lab is not None else lg,
            loadgen_realtime=rt, reason=reason, notes=tuple(notes),
        )  # fmt: skip

    if cfg.mode == "none":
        return placed(
            "placement=none: nothing is pinned; the engine chooses its own thread binding", None, None, None
        )
    if cfg.mode == "manual":
        eng, lg = _cpus(cfg.engine_cpus), _cpus(cfg.loadgen_cpus)
        omp = None if gpu_planned and cfg.omp_cpus is None else _cpus(cfg.omp_cpus or cfg.engine_cpus)
        if both := set(eng) & set(lg):
            notes.append(
                f"the load generator shares core(s) {cpu_list_str(both)} with the engine"
                + ("; its realtime priority keeps the engine from delaying it" if rt else
                   "; its timestamps may carry the engine's CPU bursts")
            )  # fmt: skip
        tel = _cpus(cfg.telemetry_cpus) if cfg.telemetry_cpus else None
        lab = _cpus(cfg.lab_cpus) if cfg.lab_cpus else None
        return placed("placement=manual: the configured core lists", eng, omp, lg, tel, lab)

    # auto
    if engine in EXTERNAL_ENGINES:
        return placed(
            f"engine={engine} runs elsewhere: no engine process on this machine to keep apart",
            None,
            None,
            None,
        )
    if len(host) < 2:
        notes.append(
            "only one core is available: the load generator competes with the engine for it, so its "
            "latency figures may be flagged; run on 2 or more cores"
        )
        one = host[:1]
        return placed("one core: the engine, the load generator and the samplers all share it", one,
                      None if gpu_planned else one, one)  # fmt: skip
    k = cfg.loadgen_cores if cfg.loadgen_cores is not None else default_loadgen_cores(len(host), workers)
    side, rest = host[:k], host[k:]
    if workers > len(side):
        notes.append(
            f"{workers} Locust workers share {len(side)} load-generator core(s); raise placement.loadgen_cores"
        )
    if len(rest) >= 2:
        # Enough cores to partition. A CPU build keeps vLLM's own rule: one core of its share is
        # left to the API server and scheduler, so the compute threads never wait for them.
        eng, omp = rest, (None if gpu_planned else rest[:-1])
        how = "engine on the rest"
    elif rt:
        # One core would be left for the engine: its API server, scheduler and compute thread would
        # then queue behind one another (measured: TPOT p50 36-218 ms against 14-20 ms). The
        # generator preempts them instead, so the engine keeps every core and only its compute
        # thread is kept off the generator's core.
        eng, omp = host, (None if gpu_planned else rest)
        how = f"engine on all cores (the generator at realtime priority preempts it on {cpu_list_str(side)})"
    else:
        eng, omp = rest, (None if gpu_planned else rest)
        how = f"engine confined to {cpu_list_str(rest)}"
    plan_kind = "GPU plan" if gpu_planned else "CPU plan"
    reason = (
        f"{plan_kind} on {len(host)} cores: load generator, samplers and lab on {cpu_list_str(side)}, {how}"
    )
    if omp is not None:
        reason += f", compute thread(s) on {cpu_list_str(omp)}"
    return placed(reason, eng, omp, side)


def realtime_permitted() -> bool:
    """Whether this process may give itself (hence the load generator) SCHED_RR priority 1.

    Tried, not inferred: root in a container without realtime CPU bandwidth is refused, an
    unprivileged user with an RLIMIT_RTPRIO is allowed. Side effect: the calling thread is
    switched to SCHED_RR and straight back to SCHED_OTHER.
    """
    import os

    if not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
    except OSError:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def _cpus(v: Sequence[int]) -> Cpus:
    return tuple(sorted(set(v)))
