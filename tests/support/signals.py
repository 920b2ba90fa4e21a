"""Signal set-up for tests that press Ctrl-C, so they pass however pytest was started.

A shell that starts a job in the background (`cmd &`, `nohup`) starts it with SIGINT ignored,
and Python then installs no KeyboardInterrupt handler: a self-sent SIGINT would do nothing.
These helpers set the handler a test needs instead of inheriting it.

Side effects: :func:`ctrl_c_when` changes this process's SIGINT handler for the duration of
the block and sends SIGINT to this process from a watcher thread; :func:`default_sigint` (a
``preexec_fn``) resets SIGINT in a child before it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt in the main thread within the block (Python's own default)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def ctrl_c_when(ready: Callable[[], bool], timeout_s: float = 60.0, poll_s: float = 0.05) -> Iterator[None]:
    """Press Ctrl-C on this process as soon as `ready()` is true (polled from a thread), or after
    `timeout_s` regardless, so a test waits on what it needs instead of on a guessed delay."""
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while not done.is_set():
            if time.monotonic() > deadline or ready():
                os.kill(os.getpid(), signal.SIGINT)
                return
            done.wait(poll_s)

    thread = threading.Thread(target=watch, daemon=True)
    with sigint_raises():
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def ok_record_in(folder: Path) -> Callable[[], bool]:
    """A `ready` test: some JSONL file under `folder` already holds a record with status ok
    (the load generator appends finished records to its records file as they come in)."""

    def ready() -> bool:
        for f in Path(folder).rglob("*.jsonl"):
            try:
                lines = f.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    if json.loads(line).get("status") == "ok":
                        return True
                except (ValueError, AttributeError):
                    continue  # a line being written, or not a record
        return False

    return ready


def default_sigint() -> None:
    """`preexec_fn` for a child that must react to SIGINT as a freshly started program does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
