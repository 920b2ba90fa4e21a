"""run.json: the typed run record (schema v2), its reader and the upgrade of v1 files.

:class:`RunRecord` is the typed form of run.json; :func:`read_run_json` reads v2 files and
upgrades v1 files (written before the identity fields existed) to the same shape, so every
reader sees one schema. :data:`LOAD_UNITS` is the one map from traffic kind to the unit of a
load point's value.

Side effects: :meth:`RunRecord.save` writes run.json atomically (analysis.records.atomic);
:func:`read_run_json` reads a file. Nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analysis.records import identity
from analysis.records.atomic import write_json_atomic

RUN_SCHEMA_VERSION = 2
STATUSES = ("running", "ok", "failed", "rejected", "cancelled")
EXIT = {"ok": 0, "failed": 1, "rejected": 2, "cancelled": 130}


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Failure:
    """Why a run did not finish. `phase`: preflight | engine_start | measure | teardown | artifacts."""

    reason: str
    phase: str | None = None
    log_tail: str | None = None
    exit_code: int | None = None


@dataclass
class EngineRecord:
    """The launched server: what was found, the exact plan, and how it went."""

    name: str
    dist: str | None = None
    version: str | None = None
    checked_against: str = ""
    python: str | None = None
    binaries: dict[str, str] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None  # also its process-group id
    time_to_ready_s: float | None = None
    effective_quant: str | None = None
    effective_dtype: str | None = None  # the dtype the engine says it computes in (e.g. bfloat16)
    exit_code: int | None = None


@dataclass
class PointRecord:
    """One load point of the run: identity, window on the monotonic clock, and its summary."""

    index: int
    point_id: str
    repetition: int
    load_value: float
    load_unit: str  # req/s | sessions/s | users | x speed-up
    t0_ns: int | None = None
    t_end_ns: int | None = None
    interrupted: bool = False  # Ctrl-C / SIGTERM while it ran
    aborted: str | None = None  # why it was stopped early (e.g. the engine died), None = ran to the end
    # stopped early by the overload test (experiments.economy): {reason, test, stats}; the point is
    # finished and infeasible (its queue grew past the SLO), not cut short by a failure
    stopped_early: dict[str, Any] | None = None
    clock_offsets: dict[str, Any] | None = None  # remote workers: offset to the master's clock
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    # The in-run SLO check the sweep planner used ({feasible, reasons, slo}); resume replays it.
    search: dict[str, Any] | None = None


@dataclass
class RunRecord:
    """run.json. Written at the start (status=running) and rewritten atomically as the run goes."""

    run_id: str
    variant_id: str
    experiment: str
    config: dict[str, Any]
    launch_fields: dict[str, Any]
    overrides: list[str] = field(default_factory=list)
    schema_version: int = RUN_SCHEMA_VERSION
    status: str = "running"
    failure: Failure | None = None
    started_at_utc: str = field(default_factory=now_utc)
    finished_at_utc: str | None = None
    # One (monotonic, wall) pair: wall = wall_s + (t_ns - monotonic_ns) / 1e9 for any t_*_ns.
    clock: dict[str, Any] = field(
        default_factory=lambda: {"monotonic_ns": time.monotonic_ns(), "wall_s": time.time(), "source": "CLOCK_MONOTONIC"}
    )
    provenance: dict[str, Any] | None = None
    # The lab process writing this record ({pid, boot_id, create_time}): a later run of the same command tells
    # from it whether a run.json still saying "running" belongs to a dead process (experiments.sweeps.resume).
    lab: dict[str, Any] | None = None
    # Sweeps: which launch of the variant this is, and what earlier launches had already measured.
    launch: int | None = None
    resume: dict[str, Any] | None = None
    engine: EngineRecord | None = None
    placement: dict[str, Any] | None = None
    # CPU plans: the host's measured memory bandwidth (experiments.hostbench), the roofline's input
    host_bandwidth: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    engine_metrics: dict[str, Any] | None = None
    load_points: list[PointRecord] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)  # analysis.notes.Note.to_dict() rows
    artifacts: dict[str, str] = field(default_factory=dict)
    # quality=gate: the summary of this launch's quality run (experiments.quality; rows in quality.parquet)
    quality: dict[str, Any] | None = None
    # traffic=trace or workload=fitted: the trace read (format, rows, rows skipped and why, span, recorded
    # rate, Mooncake prefix reuse) and, for workload=fitted, the fitted parameters (docs/traces.md)
    trace: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, run_dir: Path) -> None:
        write_json_atomic(Path(run_dir) / "run.json", self.to_dict())

    def fail(self, status: str, reason: str, *, phase: str | None = None, log_tail: str | None = None,
             exit_code: int | None = None) -> None:  # fmt: skip
        assert status in STATUSES, status
        self.status = status
        self.failure = Failure(reason=reason, phase=phase, log_tail=log_tail, exit_code=exit_code)

    def note(self, source: str, kind: str, message: str, t0_ns: int | None = None, t1_ns: int | None = None) -> None:
        """Add a structured note (the same fields as analysis.notes.Note) unless an equal one exists."""
        n = {"source": source, "kind": kind, "message": message, "t0_ns": t0_ns, "t1_ns": t1_ns}
        if n not in self.notes:
            self.notes.append(n)

    def point(self, index: int) -> PointRecord | None:
        return next((p for p in self.load_points if p.index == index), None)

    def put_point(self, p: PointRecord) -> None:
        self.load_points[:] = sorted([q for q in self.load_points if q.index != p.index] + [p], key=lambda q: q.index)

    def identity(self) -> dict[str, str]:
        return {"run_id": self.run_id, "variant_id": self.variant_id}


# -- reading --------------------------------------------------------------------------------------
def read_run_json(path: Path) -> dict[str, Any]:
    """run.json as a v2 dict: v2 as written; v1 upgraded (identity fields derived, notes structured)."""
    path = Path(path)
    if path.is_dir():
        path = path / "run.json"
    d = json.loads(path.read_text())
    v = d.get("schema_version", 1)
    if v == RUN_SCHEMA_VERSION:
        return d
    if v != 1:
        raise ValueError(f"{path}: run.json schema_version {v} is newer than this servelab reads ({RUN_SCHEMA_VERSION})")
    return upgrade_v1(d)


class ConfigView(dict):
    """A config dict readable as attributes (identity functions take config objects)."""

    def __getattr__(self, k: str) -> Any:
        v = self.get(k)
        return ConfigView(v) if isinstance(v, dict) else v


def upgrade_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A v1 run.json dict in the v2 shape. Identity fields are recomputed from its config."""
    out = dict(d)
    cfg = ConfigView(d.get("config") or {})
    out["schema_version"] = RUN_SCHEMA_VERSION
    out["upgraded_from"] = 1
    out["launch_fields"] = identity.launch_fields(cfg)
    out["variant_id"] = identity.stable_hash(out["launch_fields"])
    kind = (cfg.traffic or {}).get("kind")
    unit = load_unit(kind)
    pts = []
    for p in d.get("load_points") or []:
        value = float(p.get("value", p.get("load_value", 0.0)))
        q = {k: v for k, v in p.items() if k != "value"}
        q.update(
            # v1 recorded no repetition: None, so a reader can number repeated runs (e.g. by start time)
            load_value=value, load_unit=unit, repetition=None, aborted=None, clock_offsets=None, problems=[],
            point_id=identity.point_id(cfg.traffic, cfg.workload, value),
        )  # fmt: skip
        pts.append(q)
    out["load_points"] = pts
    out["notes"] = [n if isinstance(n, dict) else {"source": "run", "kind": "note", "message": str(n), "t0_ns": None,
                                                    "t1_ns": None} for n in d.get("notes") or []]  # fmt: skip
    if out.get("failure"):
        out["failure"] = {"phase": None, "exit_code": None, **out["failure"]}
    out.setdefault("placement", None)
    out.setdefault("host_bandwidth", None)
    return out


# The one load-unit map: what a load point's value counts, by traffic kind (every other kind: req/s).
LOAD_UNITS = {"concurrency": "users", "steps": "users", "trace": "x speed-up"}


def load_unit(traffic_kind: str | None, workload_kind: str | None = None) -> str:
    """The unit of a load point's value under traffic kind `traffic_kind`: an open-loop rate of
    workload.kind=sessions opens conversations ("sessions/s"), each of several requests."""
    unit = LOAD_UNITS.get(traffic_kind or "", "req/s")
    return "sessions/s" if unit == "req/s" and workload_kind == "sessions" else unit
