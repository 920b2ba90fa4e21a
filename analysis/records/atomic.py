"""The one atomic writer: a reader (or a resume after kill -9) sees the whole file or none of it.

Every file is written under a unique temporary name in the destination's own folder (so the
rename never crosses a file system), flushed and fsync'ed, renamed over the destination, and
the folder is fsync'ed so the rename survives a power cut. The temporary file is created
exclusively (O_EXCL | O_NOFOLLOW): a symlink placed where it would be written is never followed,
and the final rename replaces a symlink at the destination instead of writing through it.

Side effects: creates, renames and (on failure) removes files in the destination's folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def fsync_dir(folder: Path) -> None:
    """fsync a folder, so a rename or a new entry in it is durable (a no-op where not supported)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A fresh temporary path beside `path` for a writer that takes a path (parquet, CSV);
    renamed over `path` (durably) when the block ends without an error, removed otherwise.

    The temporary file exists (empty, created exclusively, mode 0666 less the umask, like a plain write) when the
    block starts; the writer replaces or truncates it."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably."""
    write_with(path, lambda f: f.write(data))


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically and durably."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any, **dumps: Any) -> None:
    """`data` as indented JSON (a trailing newline; values json cannot encode as str unless `dumps`
    says otherwise) at `path`, atomically and durably."""
    opts = {"indent": 2, "default": str, **dumps}
    write_text_atomic(path, json.dumps(data, **opts) + "\n")


def write_with(path: Path, write: Callable[[Any], Any]) -> None:
    """Call `write(f)` on a binary file object opened on a fresh temporary file beside `path`, then
    fsync it and rename it over `path` (the folder fsync'ed too). The temporary file is removed
    if `write` raises."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
