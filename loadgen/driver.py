"""Lab-side driver of the load generator: runs one load point in a Locust subprocess.

:func:`build_spec` (from :mod:`loadgen.spec`, pure) turns configs + workload items into the
:class:`~loadgen.spec.LoadPointSpec` the subprocess reads. :func:`run_load_point` is the
side-effect part: it writes the spec, starts ``python -m loadgen.locust_runner`` in its own
process group (gevent stays out of the lab), relays its progress lines, polls `abort`, and on
an abort or Ctrl-C/SIGTERM stops it so it records in-flight requests as cancelled before
exiting. Records stream to ``<workdir>/requests.<point>.jsonl`` while it runs. A distributed
master leaves the workers' clock offsets in ``out.meta["clock_offsets"]`` (see loadgen.clock).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.process import Child, Supervisor, free_port, shielded_teardown
from loadgen.jsonl import read_jsonl
from loadgen.locust.auth import LOCAL_TOKEN_ENV, new_token
from loadgen.spec import LoadPointSpec, build_spec

__all__ = ["LoadInterrupted", "LoadPointOutput", "LoadPointSpec", "build_spec", "run_load_point"]

log = logging.getLogger(__name__)


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


def run_load_point(
    spec: LoadPointSpec,
    workdir: Path,
    python: str = sys.executable,
    *,
    supervisor: Supervisor | None = None,
    abort: Callable[[], str | None] | None = None,
) -> LoadPointOutput:
    """Run one load point in a Locust subprocess and collect its raw output. Blocks until done.

    The Locust processes start on `supervisor` (a private one, stopped at the end, when None),
    pinned to `spec.cpus` when set. `abort()` is polled every 0.2 s; a reason it returns stops
    the point at once (the generator flushes, in-flight requests are recorded cancelled) and
    lands in `out.aborted`.
    KeyboardInterrupt is re-raised (as LoadInterrupted) after the subprocess has flushed its records.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"loadgen_spec.{spec.load_point}.json"
    spec_path.write_text(spec.to_json())
    log_path = workdir / "loadgen.log"
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    # Run from the lab's root so `-m loadgen.locust_runner` resolves even without an install.
    root = Path(__file__).resolve().parent.parent
    if spec.loop == "open":
        budget = spec.last_send_s() + spec.drain_timeout_s + 90
    else:
        budget = spec.window_s + spec.request_timeout_s + 90
    interrupted = False
    aborted: str | None = None
    problems: list[str] = []
    dist = spec.distributed
    own = supervisor is None
    sup = supervisor if supervisor is not None else Supervisor()
    lp = spec.load_point
    cpus = list(spec.cpus) if spec.cpus else None
    workers: list[Child] = []
    offset = log_path.stat().st_size if log_path.exists() else 0
    cmd = [python, "-m", "loadgen.locust_runner", str(spec_path)]
    token_env = dist.token_env or LOCAL_TOKEN_ENV
    if dist.enabled:
        if dist.token_env is None:  # local workers only: a fresh token, in the environment only
            env[LOCAL_TOKEN_ENV] = new_token()
        port = dist.master_port or free_port()
        cmd += ["--role", "master", "--master-bind", dist.master_bind, "--master-port", str(port),
                "--expect-workers", str(dist.expected_workers), "--token-env", token_env]  # fmt: skip
        if dist.remote_workers:
            log.info("master waits on %s:%d for %d remote worker(s)", dist.master_bind, port, dist.remote_workers)
    # Own process group (Supervisor): Ctrl-C reaches the lab only; we stop the generator cleanly.
    proc = sup.spawn(f"loadgen {lp}", cmd, log_path=log_path, env=env, cwd=root, cpus=cpus)
    try:
        if dist.enabled:
            master_host = "127.0.0.1" if dist.master_bind in ("0.0.0.0", "*", "") else dist.master_bind
            for k in range(dist.workers):
                workers.append(sup.spawn(
                    f"loadgen {lp} worker {k}",
                    [python, "-m", "loadgen.locust_runner", "--role", "worker", "--master-host", master_host,
                     "--master-port", str(port), "--token-env", token_env, "--target-url", spec.base_url,
                     *(["--api-key-env", spec.api_key_env] if spec.api_key_env else []), "--out-dir", str(workdir)],
                    log_path=log_path, env=env, cwd=root, cpus=cpus,
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
    records = read_jsonl(Path(spec.paths.records))
    meta_path = Path(spec.paths.meta)
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if proc.returncode not in (0, None) and not interrupted and aborted is None:
        why = {3: "not all workers connected (with the shared token)",
               4: "merged records do not match the workers' counts"}.get(proc.returncode, "")  # fmt: skip
        problems.append(f"load generator exited with code {proc.returncode} {why} (see {log_path})".replace("  ", " "))
    out = LoadPointOutput(
        records=records,
        meta=meta,
        lag=read_jsonl(Path(spec.paths.lag)),
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

