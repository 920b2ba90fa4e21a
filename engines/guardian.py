"""The guardian: stops every registered process group once the lab is gone, even after kill -9.

A :class:`engines.process.Supervisor` starts one guardian lazily (``python -m engines.guardian``,
in its own session) and keeps the write end of a pipe that is the guardian's stdin. Over it the
supervisor sends one line per event::

    add <pgid>      a child process group was started
    del <pgid>      that group has been stopped and reaped (its number may be reused now)
    exit            normal shutdown: stop whatever is still registered, then exit

End of file on stdin means every write end is closed, i.e. the lab died without shutting down
(SIGKILL, a crash, the OOM killer). The guardian then SIGTERMs every registered group that still
has a live member, waits up to --grace-s for them to exit, SIGKILLs what is left, and exits.
PR_SET_PDEATHSIG only signals the lab's direct children; the guardian also covers their
children (same group) and children that would otherwise linger in their own sessions.

SIGINT is ignored: a Ctrl-C delivered to the terminal's foreground group must not take the
guardian down before it has done its job. The guardian never outlives the lab by more than
--grace-s plus a little: it exits on EOF. Side effects: signals process groups; nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time


def group_alive(pgid: int) -> bool:
    """Whether process group `pgid` has a member that is not a zombie (a zombie is dead, only unreaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after "comm)": state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def stop_groups(pgids: set[int], grace_s: float) -> None:
    """SIGTERM each group, wait up to `grace_s` for all to exit, SIGKILL the rest."""
    live = {g for g in pgids if group_alive(g)}
    for g in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(g, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        time.sleep(0.1)
        live = {g for g in live if group_alive(g)}
    for g in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(g, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="servelab guardian: stops the lab's process groups when it dies")
    ap.add_argument("--grace-s", type=float, default=5.0, help="SIGTERM -> SIGKILL wait after the lab died")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:  # EOF: the lab is gone
            break
        cmd, _, arg = line.decode(errors="replace").strip().partition(" ")
        if cmd == "exit":
            break
        try:
            pgid = int(arg)
        except ValueError:
            continue
        if pgid <= 1:
            continue  # never signal "every process" or init's group
        if cmd == "add":
            groups.add(pgid)
        elif cmd == "del":
            groups.discard(pgid)
    stop_groups(groups, a.grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
