"""Reading the JSON-lines files the load generator appends to while a point runs (requests.<i>.jsonl,
loadgen_lag.<i>.jsonl) and the samplers' telemetry.jsonl / engine_metrics.jsonl, from another
process: each read returns the whole lines written since the last one.

Side effects: reads the file (never writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class JsonlTail:
    """Whole new JSON lines of a file another process appends to, from where the last read ended."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0

    def rows(self) -> list[dict[str, Any]]:
        """The JSON objects on the lines completed since the last call ([] while the file is absent).
        A half-written last line waits for the next call; a line that is not a JSON object is skipped."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn or foreign line is skipped, never fatal
            if isinstance(row, dict):
                out.append(row)
        return out
