"""The folder layout of results/: where a run's files are and how a reader finds them.

``results/<experiment>/<engine>_<quant>_<variant_id>/`` is a variant's folder
(:func:`variant_dir_name`); it holds one complete run folder per engine launch,
``launch-<n>/`` (:func:`launch_dirs`). A run folder holds run.json, requests.parquet (or, until
that is written, one ``points/<index>.requests.parquet`` per finished load point:
:func:`point_file`, :func:`request_files`) and the other artifacts (results/README.md).
:func:`find_runs` finds every run folder below a folder; :func:`lab_stamp` is the lab process as
a run.json records it and :func:`lab_alive` tells (through psutil: pid, process create time,
boot id) whether that process still runs (a run.json saying "running" whose lab is gone was
killed).

Side effects: reads folder listings, the boot id (/proc/sys/kernel/random/boot_id) and, through
psutil, the state and create time of a process (:func:`lab_stamp`, :func:`lab_alive`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil

LAUNCH_PREFIX = "launch-"
POINTS_DIR = "points"


def variant_dir_name(engine: str, quant: str, variant_id: str) -> str:
    """``<engine>_<quant>_<variant_id>``: readable, and unique because of the launch key."""
    return f"{engine}_{quant}_{variant_id}"


def experiment_name_problem(name: str) -> str | None:
    """The one line refusing an experiment_name that is not one plain folder name under results_dir
    (a path separator, `..`, a NUL, surrounding blanks, empty), or None when it is fine. The name
    becomes a path component, so `../../x` would write outside results_dir."""
    bad = (not isinstance(name, str) or not name.strip() or name != name.strip() or ".." in name
           or any(c in name for c in ("/", "\\", "\0", os.sep, os.altsep or "/")) or name.strip(".") == "")  # fmt: skip
    if bad:
        return (f"experiment_name={name!r} must be one folder name (no '/', '\\' or '..', not empty), "
                "e.g. experiment_name=quants")
    return None


def point_file(index: int) -> str:
    """The durable per-point request file of a run folder (until requests.parquet replaces it)."""
    return f"{POINTS_DIR}/{index:03d}.requests.parquet"


def boot_id() -> str:
    """This boot's id (Linux): a run.json's lab from another boot is gone whatever its pid."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


# A process's create time is its boot time plus its start in clock ticks; psutil's boot time is
# whole seconds and can move by one when the wall clock is stepped, so a recorded create time is
# compared with this tolerance (a pid recycled within it by another process is not a concern).
CREATE_TIME_TOLERANCE_S = 2.0


def lab_stamp() -> dict[str, Any]:
    """This process as the `lab` of a run.json: {pid, boot_id, create_time} (:func:`lab_alive`)."""
    return {"pid": os.getpid(), "boot_id": boot_id(), "create_time": psutil.Process().create_time()}


def lab_alive(lab: dict[str, Any] | None) -> bool:
    """Whether the lab process that wrote a run.json (its `lab` = {pid, boot_id, create_time};
    records written before create_time was kept have only the first two) still runs."""
    if not lab or not lab.get("pid"):
        return False
    if lab.get("boot_id") and lab["boot_id"] != boot_id():
        return False  # the machine rebooted since
    pid = int(lab["pid"])
    if pid == os.getpid():
        return True
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False  # exited, not yet reaped
        created = lab.get("create_time")
        if created is not None and abs(proc.create_time() - float(created)) > CREATE_TIME_TOLERANCE_S:
            return False  # a recycled pid: alive, but not the lab
        return True
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False
    except psutil.AccessDenied:
        return True  # someone else's process holds the pid: it exists, and we cannot tell more


def launch_dirs(variant_dir: Path) -> list[tuple[int, Path]]:
    """The variant's ``launch-<n>/`` folders as (n, path), in launch order."""
    out = []
    for p in Path(variant_dir).glob(f"{LAUNCH_PREFIX}*"):
        tail = p.name[len(LAUNCH_PREFIX) :]
        if p.is_dir() and tail.isdigit():
            out.append((int(tail), p))
    return sorted(out)


def find_runs(folder: Path) -> list[Path]:
    """Run folders under `folder` (itself if it holds run.json), sorted by path."""
    folder = Path(folder)
    if (folder / "run.json").is_file():
        return [folder]
    return sorted(p.parent for p in folder.rglob("run.json") if "work" not in p.parent.parts[-1:])


def request_files(run_dir: Path) -> list[Path]:
    """A run's request rows: requests.parquet, or (a run whose lab died before writing it) the
    per-point files points/*.requests.parquet written as each point finished."""
    whole = Path(run_dir) / "requests.parquet"
    if whole.is_file():
        return [whole]
    return sorted((Path(run_dir) / "points").glob("*.requests.parquet"))
