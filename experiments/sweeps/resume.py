"""What earlier launches of one variant already measured: the basis of resuming a sweep.

A variant's folder (``results/<experiment>/<engine>_<quant>_<variant_id>/``, named by
:func:`variant_dir_name`) holds one sub-folder per engine launch, ``launch-<n>/``, each a
complete run folder (run.json, requests.parquet, ...). Re-running the same command scans them
(:func:`scan`) and measures only what is missing:

- a (point_id, repetition) is **done** when a launch with status ok or cancelled (or one whose
  lab process died: see below) recorded it, it was neither interrupted nor aborted, and its
  request rows are on disk (the run's requests.parquet, or its ``points/<index>.requests.parquet``
  written the moment the point finished). Points of a *failed* launch do not count (the decision
  layer skips failed runs too) and are re-measured only with ``retry_failed=true``;
- the variant is **failed** when its latest launch failed (engine did not start, crashed, ...):
  the sweep skips it, with that reason, unless ``retry_failed=true``. A preflight refusal
  (``rejected``) is not remembered: preflight is cheap and is simply run again;
- a knee search that economy.halving stopped (the variant cannot win) is **halted**: the latest
  usable launch's ``resume.halving``; re-running the sweep replays the halt (experiments.sweeps.schedule)
  instead of searching on;
- a launch whose run.json still says ``running`` but whose lab process is gone (``kill -9``, a
  power cut) is **stale**: :func:`recover_stale` marks it cancelled, keeps its durable points
  and notes that the raw telemetry in its work/ folder was not folded into parquet.

Side effects: :func:`scan` reads run.json files; :func:`recover_stale` rewrites a stale run.json;
:func:`record_halt` adds a halt found on resume to the latest usable launch's run.json;
:func:`variant_lock` takes an advisory file lock (two processes never measure one variant at once).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from analysis.records.atomic import write_json_atomic
from analysis.records.layout import lab_alive, launch_dirs, point_file
from analysis.records.run import now_utc, read_run_json


@dataclass(frozen=True)
class DonePoint:
    point_id: str
    repetition: int
    load_value: float
    run_id: str
    feasible: bool | None  # the in-run SLO check (knee search), None when not recorded
    p_feasible: float | None = None  # its bootstrap share of feasible replicates, None when not recorded
    summary: dict | None = None  # its run.json summary (what it served: economy.halving replays it)


@dataclass
class Launch:
    path: Path
    number: int
    status: str
    reason: str | None
    stale: bool = False


@dataclass
class History:
    """Earlier launches of one variant and what they measured."""

    launches: list[Launch] = field(default_factory=list)
    done: dict[tuple[str, int], DonePoint] = field(default_factory=dict)
    skipped_points: list[str] = field(default_factory=list)  # recorded but not usable, and why
    # economy.halving stopped the search in the latest usable launch (its run.json resume.halving,
    # plus "launch": the folder's name); None when that launch was not halted
    halted: dict | None = None

    @property
    def next_launch(self) -> int:
        return max((la.number for la in self.launches), default=0) + 1

    @property
    def latest(self) -> Launch | None:
        return max(self.launches, key=lambda la: la.number, default=None)

    def failed_reason(self) -> str | None:
        """The latest launch's failure when the variant failed (rejected does not count), else None."""
        la = self.latest
        if la is not None and la.status == "failed":
            return la.reason or "failed"
        return None

    def is_done(self, point_id: str, repetition: int) -> bool:
        return (point_id, repetition) in self.done


def _durable(run_dir: Path, index: int, has_requests: bool) -> bool:
    return has_requests or (run_dir / point_file(index)).is_file()


def scan(variant_dir: Path, variant_id: str) -> History:
    """Read every launch of the variant; stale ones are reported as such (not rewritten here)."""
    h = History()
    for number, path in launch_dirs(variant_dir):
        try:
            s = read_run_json(path / "run.json")
        except (OSError, ValueError) as e:
            h.skipped_points.append(f"{path.name}: unreadable run.json ({e}); its points are measured again")
            continue
        if s.get("variant_id") != variant_id:
            h.skipped_points.append(f"{path.name}: another variant ({s.get('variant_id')}); ignored")
            continue
        status = str(s.get("status"))
        stale = status == "running" and not lab_alive(s.get("lab"))
        reason = (s.get("failure") or {}).get("reason")
        h.launches.append(Launch(path, number, "cancelled" if stale else status, reason, stale))
        if status not in ("ok", "cancelled") and not stale:
            continue
        halving = (s.get("resume") or {}).get("halving")  # launches are read in order: the latest decides
        h.halted = {**halving, "launch": path.name} if isinstance(halving, dict) and halving.get("reason") else None
        has_requests = (path / "requests.parquet").is_file()
        for lp in s.get("load_points") or []:
            key = (str(lp["point_id"]), int(lp.get("repetition") or 0))
            if lp.get("interrupted") or lp.get("aborted"):
                continue
            if not _durable(path, int(lp["index"]), has_requests):
                h.skipped_points.append(f"{path.name} point {lp['index']}: no request rows on disk")
                continue
            check = lp.get("search") or {}
            h.done.setdefault(key, DonePoint(key[0], key[1], float(lp["load_value"]), str(s.get("run_id")),
                                             check.get("feasible"), check.get("p_feasible"),
                                             lp.get("summary") or None))  # fmt: skip
    return h


def record_halt(history: History, halted: dict) -> Path | None:
    """Write `halted` (economy.halving's stop, found by replaying the points of earlier launches:
    experiments.runner.run_variant) into the latest usable launch's run.json as resume.halving,
    with a note, so the decision excludes the variant as it would after a halt in that launch.
    Returns the run.json rewritten, None when no launch is usable."""
    usable = [la for la in history.launches if la.status in ("ok", "cancelled")]
    if not usable:
        return None
    path = max(usable, key=lambda la: la.number).path / "run.json"
    d = json.loads(path.read_text())
    d.setdefault("resume", {})["halving"] = halted
    d.setdefault("notes", []).append({
        "source": "resume", "kind": "halved_on_resume",
        "message": f"a later run of the same sweep replayed this variant's points and stopped its knee search: "
                   f"{halted.get('reason')}", "t0_ns": None, "t1_ns": None,
    })  # fmt: skip
    write_json_atomic(path, d)
    return path


def recover_stale(history: History) -> list[str]:
    """Mark every stale launch cancelled in its run.json; returns one line per launch recovered."""
    lines = []
    for la in history.launches:
        if not la.stale:
            continue
        path = la.path / "run.json"
        d = json.loads(path.read_text())
        d["status"] = "cancelled"
        d["failure"] = {"reason": "the lab process died while the run was in progress (kill -9, crash or reboot); "
                        "found and closed by a later run of the same command", "phase": "unknown",
                        "log_tail": None, "exit_code": None}  # fmt: skip
        d.setdefault("notes", []).append({
            "source": "resume", "kind": "stale_run",
            "message": "closed by resume: points recorded before the lab died are kept (points/*.requests.parquet); "
                       "telemetry and engine-metric samples stay as raw JSONL in work/",
            "t0_ns": None, "t1_ns": None,
        })  # fmt: skip
        d["finished_at_utc"] = d.get("finished_at_utc") or now_utc()
        write_json_atomic(path, d)
        la.stale = False
        lines.append(f"{la.path.name}: its lab process died mid-run; closed as cancelled, completed points kept")
    return lines


class VariantBusy(RuntimeError):
    """Another servelab process holds the variant's lock."""


@contextmanager
def variant_lock(variant_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock on the variant folder for the duration of a run (flock: freed by
    the kernel when the holder dies, so a kill -9 never leaves it held)."""
    Path(variant_dir).mkdir(parents=True, exist_ok=True)
    path = Path(variant_dir) / ".lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise VariantBusy(
                f"another servelab process (pid {holder}) is measuring this variant in {variant_dir}; "
                "wait for it or stop it"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
