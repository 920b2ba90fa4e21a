"""The guardian: stops every registered process group once the lab is gone, even after kill -9.

A :class:`engines.process.Supervisor` starts one guardian lazily (``python -m engines.guardian``,
in its own session) and keeps the write end of a pipe that is the guardian's stdin. Over it the
supervisor sends one line per event::

    add <pgid>      a child process group was started
    del <pgid>      that group has been stopped and reaped (its number may be reused now)
    container <n>   a docker container named <n> was started (the `docker run` client is a group,
                    the container is not: killing the client leaves it holding the GPU and port)
    uncontainer <n> that container has been stopped and removed
    exit            normal shutdown: stop whatever is still registered, then exit

End of file on stdin means every write end is closed, i.e. the lab died without shutting down
(SIGKILL, a crash, the OOM killer). The guardian then SIGTERMs every registered group that still
has a live member, waits up to --grace-s for them to exit, SIGKILLs what is left, and exits.
PR_SET_PDEATHSIG only signals the lab's direct children; the guardian also covers their
children (same group) and children that would otherwise linger in their own sessions.

Registered containers are stopped after the groups: `docker stop -t <grace> <n>`, then
`docker rm -f <n>` (stop_containers, also used by the supervisor's normal teardown).

SIGINT is ignored: a Ctrl-C delivered to the terminal's foreground group must not take the
guardian down before it has done its job. The guardian never outlives the lab by more than
--grace-s plus a little: it exits on EOF. Side effects: signals process groups; nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time

CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def stop_containers(names: list[str], grace_s: float) -> list[list[str]]:
    """`docker stop -t <grace> NAME`, then `docker rm -f NAME`, for each name; returns the commands
    run. Never raises (no docker, a container already gone, a hung daemon: each call has a timeout)."""
    ran = []
    for name in names:
        if not CONTAINER_NAME.fullmatch(name):
            continue
        for cmd, limit in ((["docker", "stop", "-t", str(max(int(grace_s), 0)), name], grace_s + 30),
                           (["docker", "rm", "-f", name], 30.0)):  # fmt: skip
            ran.append(cmd)
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=limit, check=False)  # fmt: skip
    return ran


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
    containers: dict[str, None] = {}  # in start order
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:  # EOF: the lab is gone
            break
        cmd, _, arg = line.decode(errors="replace").strip().partition(" ")
        if cmd == "exit":
            break
        if cmd in ("container", "uncontainer"):
            if cmd == "container" and CONTAINER_NAME.fullmatch(arg):
                containers[arg] = None
            else:
                containers.pop(arg, None)
            continue
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
    stop_containers(list(containers), a.grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
