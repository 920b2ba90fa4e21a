"""Lab-side driver of the load generator: plans a load point and runs it in a Locust subprocess.

:func:`build_spec` is pure (configs + workload items -> the JSON spec the subprocess reads).
:func:`run_load_point` is the side-effect part: it writes the spec, starts
``python -m loadgen.locust_runner`` in its own process group (gevent stays out of the lab),
relays its progress lines, and on Ctrl-C/SIGTERM stops it so it records in-flight requests as
cancelled before exiting. Records stream to ``<workdir>/requests.<point>.jsonl`` while it runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.process import Child, Supervisor, free_port, shielded_teardown
from loadgen.arrivals import CLOSED_LOOP_KINDS, OPEN_LOOP_KINDS, open_loop_schedule, trace_schedule
from loadgen.workload import WorkloadItem

log = logging.getLogger(__name__)


def build_spec(
    *,
    load_point: int,
    point_value: float,
    traffic: Any,
    workload: Any,
    items: Sequence[WorkloadItem],
    base_url: str,
    model: str,
    extras_for: Callable[[int], dict[str, Any]],
    workdir: Path,
    api_key_env: str | None = None,
    trace_times_s: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The complete, JSON-serialisable instruction for one load point. Pure.

    `extras_for(max_tokens)` gives the engine-specific request fields (e.g. ignore_eos).
    Only the NAME of the API-key variable goes into the spec; the generator reads the key
    from its environment, so it never lands in a file.
    """
    common: dict[str, Any] = {
        "load_point": load_point,
        "point_value": point_value,
        "kind": traffic.kind,
        "base_url": base_url,
        "model": model,
        "endpoint": workload.endpoint,
        "temperature": workload.temperature,
        "items": [{**it.to_dict(), "extras": extras_for(it.max_tokens)} for it in items],
        "api_key_env": api_key_env,
        "request_timeout_s": float(traffic.request_timeout_s),
        "drain_timeout_s": float(traffic.drain_timeout_s),
        "max_inflight": int(traffic.max_inflight),
        "nice": int(getattr(traffic, "loadgen_nice", 0)),
        "workers": int(getattr(traffic, "workers", 1)),
        "remote_workers": int(getattr(traffic, "remote_workers", 0)),
        "master_bind": getattr(traffic, "master_bind", "127.0.0.1"),
        "master_port": int(getattr(traffic, "master_port", 0)),
        "warmup_s": float(traffic.warmup_s),
        "duration_s": float(traffic.duration_s),
        "cooldown_s": float(getattr(traffic, "cooldown_s", 0.0)),
        "think_time_s": float(getattr(traffic, "think_time_s", 0.0)),
        "shape": _shape_dict(getattr(traffic, "shape", None)),
        "records_path": str(workdir / f"requests.{load_point}.jsonl"),
        "lag_path": str(workdir / f"loadgen_lag.{load_point}.jsonl"),
        "meta_path": str(workdir / f"loadgen_meta.{load_point}.json"),
    }
    if traffic.kind == "trace":
        if trace_times_s is None:
            raise ValueError("traffic.kind=trace needs the trace's arrival times")
        sched = trace_schedule(trace_times_s, float(point_value), common["warmup_s"], common["duration_s"], common["cooldown_s"])
        common.update(mode="open", schedule=[[a.offset_s, a.phase, a.prompt_idx] for a in sched])
    elif traffic.kind in OPEN_LOOP_KINDS:
        sched = open_loop_schedule(
            traffic.kind,
            float(point_value),
            common["warmup_s"],
            common["duration_s"],
            len(items),
            seed=int(traffic.seed) + load_point,  # each point its own stream, reproducible
            cooldown_s=common["cooldown_s"],
            burstiness=float(getattr(traffic, "burstiness", 1.0)),
            shape=getattr(traffic, "shape", None),
        )
        common.update(mode="open", schedule=[[a.offset_s, a.phase, a.prompt_idx] for a in sched])
    elif traffic.kind in CLOSED_LOOP_KINDS:
        users = int(point_value)
        if users < 1 or users != point_value:
            raise ValueError(f"traffic.points for kind=concurrency must be whole numbers >= 1, got {point_value}")
        common.update(mode="closed", users=users)
    else:
        raise ValueError(
            f"unknown traffic.kind {traffic.kind!r} (known: {', '.join(OPEN_LOOP_KINDS + CLOSED_LOOP_KINDS)})"
        )
    return common


def _shape_dict(shape: Any | None) -> dict[str, Any] | None:
    """The shape as plain JSON for the generator (closed loop scales users with it)."""
    if shape is None or not getattr(shape, "kind", None):
        return None
    import dataclasses

    return dataclasses.asdict(shape) if dataclasses.is_dataclass(shape) else dict(vars(shape))


@dataclass
class LoadPointOutput:
    """What one load-point subprocess left behind (raw, not yet summarised)."""

    records: list[dict[str, Any]]
    meta: dict[str, Any]
    lag: list[dict[str, Any]]
    exit_code: int | None
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)
    aborted: str | None = None  # why abort() stopped the point early, if it did


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of `path` ([] if missing). A torn last line (crash) is skipped."""
    out: list[dict[str, Any]] = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return out


def run_load_point(spec: dict[str, Any], workdir: Path, python: str = sys.executable, *,
                   supervisor: Supervisor | None = None,
                   abort: Callable[[], str | None] | None = None) -> LoadPointOutput:  # fmt: skip
    """Run one load point in a Locust subprocess and collect its raw output. Blocks until done.

    The Locust processes start on `supervisor` (a private one, stopped at the end, when None).
    `abort()` is polled every 0.2 s; a reason it returns stops the point at once (the generator
    flushes, in-flight requests are recorded cancelled) and lands in `out.aborted`.
    KeyboardInterrupt is re-raised (as LoadInterrupted) after the subprocess has flushed its records.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"loadgen_spec.{spec['load_point']}.json"
    spec_path.write_text(json.dumps(spec))
    log_path = workdir / "loadgen.log"
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    # Run from the lab's root so `-m loadgen.locust_runner` resolves even without an install.
    root = Path(__file__).resolve().parent.parent
    if spec["mode"] == "open":
        budget = (spec["schedule"][-1][0] if spec["schedule"] else 0) + spec["drain_timeout_s"] + 90
    else:
        budget = spec["warmup_s"] + spec["duration_s"] + spec["cooldown_s"] + spec["request_timeout_s"] + 90
    interrupted = False
    aborted: str | None = None
    problems: list[str] = []
    distributed = spec.get("workers", 1) > 1 or spec.get("remote_workers", 0) > 0
    own = supervisor is None
    sup = supervisor if supervisor is not None else Supervisor()
    lp = spec["load_point"]
    workers: list[Child] = []
    offset = log_path.stat().st_size if log_path.exists() else 0
    cmd = [python, "-m", "loadgen.locust_runner", str(spec_path)]
    if distributed:
        port = spec.get("master_port") or free_port()
        n_total = spec["workers"] + spec.get("remote_workers", 0)
        cmd += ["--role", "master", "--master-bind", spec.get("master_bind", "127.0.0.1"), "--master-port", str(port),
                "--expect-workers", str(n_total)]  # fmt: skip
        if spec.get("remote_workers"):
            log.info("master waits on %s:%d for %d remote worker(s)", spec.get("master_bind"), port, spec["remote_workers"])
    # Own process group (Supervisor): Ctrl-C reaches the lab only; we stop the generator cleanly.
    proc = sup.spawn(f"loadgen {lp}", cmd, log_path=log_path, env=env, cwd=root)
    try:
        if distributed:
            master_host = "127.0.0.1" if spec.get("master_bind") in ("0.0.0.0", "*", "", None) else spec["master_bind"]
            for k in range(spec["workers"]):
                workers.append(sup.spawn(
                    f"loadgen {lp} worker {k}",
                    [python, "-m", "loadgen.locust_runner", "--role", "worker", "--master-host", master_host,
                     "--master-port", str(port)],
                    log_path=log_path, env=env, cwd=root,
                ))  # fmt: skip
        deadline = time.monotonic() + budget
        while proc.wait(0.2) is None:  # abort() is polled every 0.2 s
            offset = _relay_progress(log_path, offset)
            if abort is not None and (aborted := abort()) is not None:
                log.warning("stopping the load point: %s", aborted)
                problems.append(f"stopped early: {aborted}")
                proc.stop()
                break
            if time.monotonic() > deadline:
                problems.append(f"load generator exceeded its time budget of {budget:.0f} s and was stopped")
                proc.stop()
                break
        offset = _relay_progress(log_path, offset)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: stopping the load generator (in-flight requests are recorded as cancelled)")
    finally:
        with shielded_teardown(sup) as shield:  # a signal now only shortens the wait for the flush
            proc.stop()
            for w in workers:  # they exit when the master quits; make sure none is left
                if w.wait(15) is None:
                    w.stop()
            if own:
                sup.stop_all()
        interrupted = interrupted or shield.interrupted  # a Ctrl-C during the stop still cancels
    records = read_jsonl(Path(spec["records_path"]))
    meta_path = Path(spec["meta_path"])
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if proc.returncode not in (0, None) and not interrupted and aborted is None:
        why = {3: "not all workers connected", 4: "merged records do not match the workers' counts"}.get(proc.returncode, "")
        problems.append(f"load generator exited with code {proc.returncode} {why} (see {log_path})".replace("  ", " "))
    out = LoadPointOutput(
        records=records,
        meta=meta,
        lag=read_jsonl(Path(spec["lag_path"])),
        exit_code=proc.returncode,
        interrupted=interrupted,
        problems=problems,
        aborted=aborted,
    )
    if interrupted:
        raise LoadInterrupted(out)
    return out


class LoadInterrupted(KeyboardInterrupt):
    """Ctrl-C during a load point; carries what was recorded up to then."""

    def __init__(self, output: LoadPointOutput) -> None:
        super().__init__("interrupted")
        self.output = output


def _relay_progress(log_path: Path, offset: int) -> int:
    """Log the generator's new `[loadgen]` progress lines; returns the new file offset."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # only whole lines
    for line in data[:end].decode(errors="replace").splitlines():
        if line.startswith("[loadgen]"):
            log.info(line)
    return offset + end
