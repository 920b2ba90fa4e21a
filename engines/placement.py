"""A core placement plan: which CPUs the engine, its compute threads, the load generator, the
telemetry samplers and the lab may use. The plan's type only; experiments.placement makes it,
and the adapters (engines/vllm.py) turn it into the engine's environment. Pure.

Side effects: none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Cpus = tuple[int, ...]


@dataclass(frozen=True)
class Placement:
    """The planned cores of each part of one run. Every list is sorted; None = not pinned."""

    mode: str  # the configured mode (auto | none | manual)
    host_cpus: Cpus  # the cores the lab may use on this machine
    engine_cpus: Cpus | None  # affinity of the engine's whole process tree
    omp_cpus: Cpus | None  # CPU builds: cores the OMP compute threads bind to, one thread each
    omp_wait_policy: str | None  # OMP_WAIT_POLICY for those threads (None = runtime default)
    loadgen_cpus: Cpus | None  # Locust processes (local, master and workers)
    telemetry_cpus: Cpus | None  # sampler processes (cpu/nvml, /metrics scraper)
    lab_cpus: Cpus | None  # the lab process (sequencing, tokenizer, artifact writing)
    loadgen_realtime: bool  # the load generator asks for SCHED_RR priority 1 (its meta says if it got it)
    reason: str  # one line: why these cores
    notes: tuple[str, ...] = ()  # things that change what the run's numbers mean

    @property
    def omp_threads(self) -> int | None:
        """How many OMP compute threads the engine runs (one per bound core)."""
        return len(self.omp_cpus) if self.omp_cpus is not None else None

    @property
    def shared(self) -> bool:
        """Whether the load generator may run on a core the engine may use (unpinned counts)."""
        if self.engine_cpus is None or self.loadgen_cpus is None:
            return True
        return bool(set(self.engine_cpus) & set(self.loadgen_cpus))

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain JSON (run.json `placement`)."""

        def lst(c: Cpus | None) -> list[int] | None:
            return list(c) if c is not None else None

        return {
            "mode": self.mode,
            "host_cpus": list(self.host_cpus),
            "engine_cpus": lst(self.engine_cpus),
            "omp_cpus": lst(self.omp_cpus),
            "omp_threads": self.omp_threads,
            "omp_wait_policy": self.omp_wait_policy,
            "loadgen_cpus": lst(self.loadgen_cpus),
            "telemetry_cpus": lst(self.telemetry_cpus),
            "lab_cpus": lst(self.lab_cpus),
            "loadgen_realtime": self.loadgen_realtime,
            "shared": self.shared,
            "reason": self.reason,
            "notes": list(self.notes),
        }


def cpu_list_str(cpus: Sequence[int]) -> str:
    """Core ids in the kernel's list syntax, runs collapsed: (0, 1, 2, 4) -> "0-2,4"."""
    ids = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)
