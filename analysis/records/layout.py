"""The folder layout of results/: where a run's files are and how a reader finds them.

``results/<experiment>/<engine>_<quant>_<variant_id>/`` is a variant's folder
(:func:`variant_dir_name`); it holds one complete run folder per engine launch,
``launch-<n>/`` (:func:`launch_dirs`). A run folder holds run.json, requests.parquet (or, until
that is written, one ``points/<index>.requests.parquet`` per finished load point:
:func:`point_file`, :func:`request_files`) and the other artifacts (results/README.md).
:func:`find_runs` finds every run folder below a folder; :func:`lab_alive` tells whether the
lab process that wrote a run.json still runs (a run.json saying "running" whose lab is gone
was killed).

Side effects: reads folder listings, /proc and sends signal 0 to a pid (:func:`lab_alive`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LAUNCH_PREFIX = "launch-"
POINTS_DIR = "points"


def variant_dir_name(engine: str, quant: str, variant_id: str) -> str:
    """``<engine>_<quant>_<variant_id>``: readable, and unique because of the launch key."""
    return f"{engine}_{quant}_{variant_id}"


def point_file(index: int) -> str:
    """The durable per-point request file of a run folder (until requests.parquet replaces it)."""
    return f"{POINTS_DIR}/{index:03d}.requests.parquet"


def boot_id() -> str:
    """This boot's id (Linux): a run.json's lab from another boot is gone whatever its pid."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def lab_alive(lab: dict[str, Any] | None) -> bool:
    """Whether the lab process that wrote a run.json (its `lab` = {pid, boot_id}) still runs."""
    if not lab or not lab.get("pid"):
        return False
    if lab.get("boot_id") and lab["boot_id"] != boot_id():
        return False  # the machine rebooted since
    pid = int(lab["pid"])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a recycled pid: alive, but not a lab
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


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
