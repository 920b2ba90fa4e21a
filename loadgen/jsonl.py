"""The one JSON-lines reader: every line of a JSONL file, numbered as an editor numbers them.

:func:`iter_jsonl` yields (line number, value) for each non-blank line and raises
:class:`JsonlError` naming the file and the line at the first line that is not JSON (or, with
`objects=True`, not a JSON object); callers that own a file format (a trace, a prompt set) word
the message for their users from its fields. :func:`read_jsonl` is the lenient form for files the
lab writes itself while it runs (request records, samplers): a torn last line after a crash is
skipped, a missing file is empty.

Side effects: reads the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A line of a JSONL file that is not what it must be: `path`:`line`: `problem`."""

    def __init__(self, path: str | Path, line: int, problem: str, msg: str = "") -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path, self.line, self.problem = Path(path), line, problem
        self.msg = msg  # json's own message, for a line that is not JSON ("" otherwise)


def iter_jsonl(path: str | Path, *, objects: bool = True) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of `path` (blank lines are counted, not yielded).
    Raises JsonlError at a line that is not JSON, or (objects=True) not a JSON object."""
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise JsonlError(path, n, f"not valid JSON ({e.msg})", e.msg) from None
            if objects and not isinstance(value, dict):
                raise JsonlError(path, n, "expected a JSON object per line")
            yield n, value


def read_jsonl(path: str | Path) -> list[Any]:
    """Every complete JSON line of `path` ([] if missing). A line that does not parse (a torn last
    line after a crash) is skipped."""
    out: list[Any] = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return out
