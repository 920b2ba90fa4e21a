"""Host memory-bandwidth probe: a STREAM-like copy with numpy, so a CPU roofline uses a measured figure.

  bandwidth = 2 · bytes / t_best        (STREAM's "Copy" counts one read and one write per byte)
Each of `threads` threads copies its own pair of arrays (numpy releases the GIL inside the copy),
so several memory channels are loaded at once; the best of `repeats` timed rounds is kept, after
one untimed round that faults the pages in. Arrays are `mib_per_thread` MiB each, far beyond the
last-level cache. The figure is what numpy reaches, a lower bound on what an engine's kernels
might reach, and it is recorded with its method, size, threads and time.

Side effects: allocates 2 · threads · mib_per_thread MiB for about a second and uses `threads`
cores; with --out, writes one JSON file.  CLI: python -m experiments.hostbench [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

METHOD = "numpy copy (STREAM Copy: 2 bytes moved per byte copied), best of repeats"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def copy_bandwidth(mib_per_thread: int = 128, threads: int | None = None, repeats: int = 5) -> dict[str, Any]:
    """Measure host copy bandwidth (see module doc). Returns the figure and how it was measured."""
    threads = threads or usable_cpus()
    n = mib_per_thread * 2**20 // 8
    src = [np.full(n, 1.0) for _ in range(threads)]
    dst = [np.empty(n) for _ in range(threads)]

    def one_round() -> float:
        barrier = threading.Barrier(threads + 1)

        def work(i: int) -> None:
            barrier.wait()
            np.copyto(dst[i], src[i])

        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        return time.perf_counter() - t0

    one_round()  # page faults and first-touch placement, not timed
    best = min(one_round() for _ in range(repeats))
    moved = 2 * 8 * n * threads
    return {
        "memory_bandwidth_gb_per_s": moved / best / 1e9,
        "method": METHOD,
        "bytes_moved": moved,
        "threads": threads,
        "mib_per_thread": mib_per_thread,
        "repeats": repeats,
        "best_s": best,
        "measured_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    ap.add_argument("--mib", type=int, default=128, help="MiB per array per thread")
    ap.add_argument("--threads", type=int, default=None, help="default: the CPUs this process may use")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    r = copy_bandwidth(a.mib, a.threads, a.repeats)
    text = json.dumps(r, indent=2)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text)  # noqa: T201 - the CLI's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
