"""Telemetry samplers, each in its own process, on the same monotonic clock as the request records.

Samplers run as ``python -m experiments.telemetry <kind> --pid P --out FILE --interval S`` so
that blocking calls (psutil, NVML, HTTP) never stall the load generator's timestamps. Each
sample is one JSON line with ``t_ns`` (time.monotonic_ns) and ``wall_s`` (time.time).

Kinds:
- ``cpu``: whole-machine CPU % and, for the engine's process tree rooted at --pid, the summed
  CPU % (100 = one core) and RSS. Clearly labelled ``sampler=cpu`` in every row.
- ``nvml``: one row per GPU per interval via nvidia-ml-py: GPU and memory utilisation, memory
  used, power, the total-energy counter, SM and memory clocks, temperature, throttle reasons.
  A call that fails leaves its field null and names the error in ``errors``.
- ``metrics``: scrapes the engine's Prometheus endpoint (--url) and keeps every raw sample
  (name, labels, value), parsed with prometheus_client's text parser.

:class:`SamplerProcess` (used by the lab) starts and stops one sampler process through the
run's :class:`engines.process.Supervisor`. Stopping: SIGTERM/SIGINT are blocked in the sampler
process and waited for between samples (:func:`_ticks`), so a stop wakes the wait at once, one
last whole sample is taken (the scrape after a window's end holds its last requests) and the
process exits: stopping takes one sample's time, not up to an interval, and a scrape is never
cut in half.
Side effects: reads /proc via psutil, NVML, or HTTP on loopback; appends to the output file;
the class spawns a process.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the sampler processes themselves need none of the lab's process code
    from engines.process import Child, Supervisor

log = logging.getLogger(__name__)

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class _Stop:
    """Process-wide stop state of a sampler: `blocked` once main() has blocked STOP_SIGNALS (they
    are then taken by sigtimedwait in _ticks), `requested` once one of them arrived."""

    blocked = False
    requested = False


def _ticks(interval_s: float) -> Iterator[None]:
    """Yields when a sample is due: at once, then every `interval_s` (on a fixed grid, so a slow
    sample does not shift the next). After a stop signal it yields once more at once (the last
    sample, taken after the stop) and ends."""
    next_t = time.monotonic()
    while True:
        yield
        if _Stop.requested:
            return
        next_t += interval_s
        delay = max(next_t - time.monotonic(), 0.0)
        if not _Stop.blocked:  # used in-process (tests): a plain sleep
            time.sleep(delay)
        elif signal.sigtimedwait(STOP_SIGNALS, delay) is not None:  # timeout 0 polls a pending one
            _Stop.requested = True


def cpu_samples(root_pid: int, interval_s: float) -> Iterator[dict[str, Any]]:
    """Yields one CPU/RSS sample of the process tree under `root_pid` every `interval_s`."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    psutil.cpu_percent(None)  # prime the system-wide counter
    try:
        root = psutil.Process(root_pid)
    except psutil.NoSuchProcess:
        return
    for _ in _ticks(interval_s):
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


def _nvml_text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _read_gpu(nvml: Any, h: Any, throttle: Callable[[Any], int]) -> dict[str, Any]:
    """One GPU's readings; a failing call leaves its field None and is named in `errors`."""
    row: dict[str, Any] = {}
    errors: list[str] = []
    calls: list[tuple[tuple[str, ...], Callable[[], Any]]] = [
        (("gpu_util_pct", "mem_util_pct"), lambda: (lambda u: (u.gpu, u.memory))(nvml.nvmlDeviceGetUtilizationRates(h))),
        (("mem_used_bytes",), lambda: (int(nvml.nvmlDeviceGetMemoryInfo(h).used),)),
        (("power_w",), lambda: (nvml.nvmlDeviceGetPowerUsage(h) / 1000.0,)),
        (("energy_j",), lambda: (nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0,)),
        (("sm_clock_mhz",), lambda: (nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),)),
        (("mem_clock_mhz",), lambda: (nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM),)),
        (("temp_c",), lambda: (nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),)),
        (("throttle_reasons",), lambda: (int(throttle(h)),)),
    ]
    for fields, fn in calls:
        try:
            row.update(zip(fields, fn(), strict=True))
        except Exception as e:  # noqa: BLE001 - one failing call must not lose the others
            row.update(dict.fromkeys(fields))
            errors.append(f"{fields[0]}: {type(e).__name__}: {e}")
    row["errors"] = "; ".join(errors) or None
    return row


def nvml_samples(root_pid: int, interval_s: float, nvml: Any = None) -> Iterator[dict[str, Any]]:
    """One row per visible GPU every `interval_s` (`nvml` is injectable for tests; default pynvml).

    Units: util in %, memory in bytes, power in W (NVML gives mW), energy in J since driver load
    (NVML gives mJ), clocks in MHz, temperature in °C, throttle reasons as NVML's bit mask.
    """
    if nvml is None:
        import pynvml as nvml
    nvml.nvmlInit()
    try:
        handles = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            handles.append((i, h, _nvml_text(nvml.nvmlDeviceGetName(h)), _nvml_text(nvml.nvmlDeviceGetUUID(h))))
        if not handles:
            raise RuntimeError("NVML sees no GPU")
        throttle = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        for _ in _ticks(interval_s):
            for i, h, name, uuid in handles:
                row: dict[str, Any] = {"t_ns": time.monotonic_ns(), "wall_s": time.time(), "sampler": "nvml",
                                       "gpu": i, "gpu_name": name, "gpu_uuid": uuid}  # fmt: skip
                row.update(_read_gpu(nvml, h, throttle))
                yield row
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


DEFAULT_MAX_SCRAPE_BYTES = 16 * 1024 * 1024  # telemetry.max_scrape_bytes


class ScrapeTooLarge(Exception):
    """A /metrics answer over the cap, or not read within its deadline."""


def read_bounded(r: Any, max_bytes: int, deadline_s: float) -> bytes:
    """At most `max_bytes` of response `r`, read by blocks until `deadline_s` (monotonic);
    ScrapeTooLarge when there is more, or the deadline passes first (a slow drip)."""
    out = bytearray()
    while True:
        if time.monotonic() > deadline_s:
            raise ScrapeTooLarge(f"scrape not read within its deadline ({len(out)} bytes so far)")
        block = r.read(min(65536, max_bytes + 1 - len(out)))
        if not block:
            return bytes(out)
        out += block
        if len(out) > max_bytes:
            raise ScrapeTooLarge(f"scrape over {max_bytes} bytes (telemetry.max_scrape_bytes); not read further")


def metrics_samples(url: str, interval_s: float, max_bytes: int = DEFAULT_MAX_SCRAPE_BYTES) -> Iterator[dict[str, Any]]:
    """Every sample of the Prometheus text at `url`, every `interval_s`: rows {t_ns, name, labels, value}.

    A failed scrape yields one row with name=None and the error, so gaps are visible; so does one
    over `max_bytes` or not read within max(interval_s, 1 s) in all (an endpoint is not trusted).
    """
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    for _ in _ticks(interval_s):
        t_ns, wall = time.monotonic_ns(), time.time()
        try:
            with urllib.request.urlopen(url, timeout=max(interval_s, 1.0)) as r:  # noqa: S310 - engine URL
                text = read_bounded(r, max_bytes, time.monotonic() + max(interval_s, 1.0)).decode()
            for fam in text_string_to_metric_families(text):
                for smp in fam.samples:
                    yield {"t_ns": t_ns, "wall_s": wall, "name": smp.name, "type": fam.type,
                           "labels": json.dumps(smp.labels, sort_keys=True), "value": float(smp.value), "error": None}  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a missed scrape is recorded, not fatal
            yield {"t_ns": t_ns, "wall_s": wall, "name": None, "type": None, "labels": None, "value": None,
                   "error": f"{type(e).__name__}: {e}"[:300]}  # fmt: skip


SAMPLERS: dict[str, Callable[[int, float], Iterator[dict[str, Any]]]] = {"cpu": cpu_samples, "nvml": nvml_samples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="servelab telemetry sampler")
    ap.add_argument("kind", choices=[*sorted(SAMPLERS), "metrics"])
    ap.add_argument("--pid", type=int, default=0, help="root pid of the engine's process tree")
    ap.add_argument("--url", default=None, help="metrics: the engine's Prometheus endpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_SCRAPE_BYTES, help="metrics: cap of one scrape")
    args = ap.parse_args(argv)
    # Blocked, then taken between samples by _ticks' sigtimedwait: a stop wakes the wait at once
    # and the sampler ends after one last whole sample (a handler would wait out the sleep).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    _Stop.blocked = True
    source = metrics_samples(args.url, args.interval, args.max_bytes) if args.kind == "metrics" else SAMPLERS[args.kind](args.pid, args.interval)
    with open(args.out, "a", buffering=1) as f:  # line-buffered: a crash loses at most one sample
        for sample in source:
            f.write(json.dumps(sample) + "\n")
    return 0


class SamplerProcess:
    """One sampler process for the engine tree at `pid`, started on `supervisor` (a private one when
    none is given); stop() ends it. Context manager. Its output goes to ``<out stem>.log``."""

    def __init__(self, kind: str, pid: int, out: Path, interval_s: float, url: str | None = None,
                 supervisor: Supervisor | None = None, cpus: list[int] | None = None,
                 max_bytes: int | None = None) -> None:  # fmt: skip
        self.kind, self.pid, self.out, self.interval_s, self.url = kind, pid, Path(out), interval_s, url
        self.max_bytes = max_bytes  # metrics: cap of one scrape (None = DEFAULT_MAX_SCRAPE_BYTES)
        self.cpus = cpus  # cores the sampler may run on (experiments.placement), None = any
        from engines.process import Supervisor

        self._own = supervisor is None
        self.supervisor = supervisor if supervisor is not None else Supervisor()
        self.child: Child | None = None

    def start(self) -> None:
        root = Path(__file__).resolve().parent.parent
        extra = ["--url", self.url] if self.url else []
        extra += ["--max-bytes", str(self.max_bytes)] if self.max_bytes else []
        self.child = self.supervisor.spawn(
            f"{self.kind} sampler",
            [sys.executable, "-m", "experiments.telemetry", self.kind, "--pid", str(self.pid),
             "--out", str(self.out), "--interval", str(self.interval_s), *extra],
            log_path=self.out.with_suffix(".log"),
            cwd=root,
            stop_timeout_s=5.0,
            cpus=self.cpus,
        )  # fmt: skip

    def stop(self) -> int | None:
        if self.child is None:
            return None
        code = self.child.stop()
        if self._own:
            self.supervisor.stop_all()
        return code

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def __enter__(self) -> SamplerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
