"""Telemetry samplers, each in its own process, on the same monotonic clock as the request records.

Samplers run as ``python -m experiments.telemetry <kind> --pid P --out FILE --interval S`` so
that blocking calls (psutil, later NVML) never stall the load generator's timestamps. Each
sample is one JSON line with ``t_ns`` (time.monotonic_ns) and ``wall_s`` (time.time).

Kinds:
- ``cpu``: whole-machine CPU % and, for the engine's process tree rooted at --pid, the summed
  CPU % (100 = one core) and RSS. Clearly labelled ``sampler=cpu`` in every row.
- ``nvml``: not implemented yet (issue 5); the seam is :data:`SAMPLERS`.

:class:`SamplerProcess` (used by the lab) starts and stops one sampler process.
Side effects: reads /proc via psutil; appends to the output file; the class spawns a process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cpu_samples(root_pid: int, interval_s: float) -> Iterator[dict[str, Any]]:
    """Yields one CPU/RSS sample of the process tree under `root_pid` every `interval_s`."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    psutil.cpu_percent(None)  # prime the system-wide counter
    try:
        root = psutil.Process(root_pid)
    except psutil.NoSuchProcess:
        return
    next_t = time.monotonic()
    while True:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        cpu = 0.0
        rss = 0
        alive = {}
        for p in tree:
            proc = procs.get(p.pid) or p
            try:
                if p.pid not in procs:
                    proc.cpu_percent(None)  # first call primes; counted from the next sample
                else:
                    cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
                alive[p.pid] = proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        procs = alive
        yield {
            "t_ns": time.monotonic_ns(),
            "wall_s": time.time(),
            "sampler": "cpu",
            "engine_cpu_pct": round(cpu, 2),
            "engine_rss_bytes": rss,
            "engine_procs": len(alive),
            "system_cpu_pct": psutil.cpu_percent(None),
        }
        next_t += interval_s
        time.sleep(max(next_t - time.monotonic(), 0.0))


SAMPLERS: dict[str, Callable[[int, float], Iterator[dict[str, Any]]]] = {"cpu": cpu_samples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="servelab telemetry sampler")
    ap.add_argument("kind", choices=sorted(SAMPLERS))
    ap.add_argument("--pid", type=int, required=True, help="root pid of the engine's process tree")
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.2)
    args = ap.parse_args(argv)
    stop = {"now": False}

    def on_term(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with open(args.out, "a", buffering=1) as f:  # line-buffered: a crash loses at most one sample
        for sample in SAMPLERS[args.kind](args.pid, args.interval):
            f.write(json.dumps(sample) + "\n")
            if stop["now"]:
                break
    return 0


class SamplerProcess:
    """Starts one sampler process for the engine tree at `pid`; stop() ends it. Context manager."""

    def __init__(self, kind: str, pid: int, out: Path, interval_s: float) -> None:
        self.kind, self.pid, self.out, self.interval_s = kind, pid, Path(out), interval_s
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "experiments.telemetry", self.kind, "--pid", str(self.pid),
             "--out", str(self.out), "--interval", str(self.interval_s)],
            cwd=root,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> SamplerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
