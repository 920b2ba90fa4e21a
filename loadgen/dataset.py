"""ShareGPT-format dataset files: parsed into (prompt, reference reply) pairs, with exact errors.

A ShareGPT file is a JSON list of ``{"conversations": [{"from": ..., "value": ...}, ...]}``.
Each conversation gives at most one pair: its first ``human`` turn and the ``gpt`` turn right
after it (``user`` / ``assistant`` / ``chatgpt`` are accepted as the same roles). Conversations
without such a pair are skipped; anything that is not this shape is an error.

Every problem raises :class:`DatasetError` with ONE line that starts with the file path, then
the 1-based line where that can be known (JSON syntax errors; the line a bad conversation
starts on), then the problem and the fix.

Side effects: :func:`load_sharegpt` reads one file; :func:`parse_sharegpt` is pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HUMAN_ROLES = ("human", "user")
GPT_ROLES = ("gpt", "assistant", "chatgpt")


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message is one line starting with the file path."""


@dataclass(frozen=True)
class ChatPair:
    conversation: int  # 0-based index of the conversation in the file
    prompt: str  # the first human turn
    reference: str  # the gpt turn that answers it


def parse_sharegpt(text: str, source: str) -> list[ChatPair]:
    """The usable pairs of a ShareGPT JSON document, in file order. Pure; `source` names it in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{source}: line {e.lineno}, column {e.colno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise DatasetError(
            f"{source}: line 1: expected a JSON list of conversations, found a JSON {_json_type(data)}"
        )
    pairs: list[ChatPair] = []
    for i, rec in enumerate(data):
        turns = rec.get("conversations") if isinstance(rec, dict) else None
        if not isinstance(turns, list):
            raise DatasetError(
                f'{source}: line {_element_line(text, i)}: conversation {i + 1} has no "conversations" list '
                '(expected {"conversations": [{"from": "human", "value": "..."}, ...]})'
            )
        for j, t in enumerate(turns):
            if not (isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str)):
                raise DatasetError(
                    f'{source}: line {_element_line(text, i)}: conversation {i + 1}, turn {j + 1}: '
                    'expected {"from": "<role>", "value": "<text>"} with string values'
                )
        first_human = next((j for j, t in enumerate(turns) if t["from"] in HUMAN_ROLES), None)
        if first_human is None or first_human + 1 >= len(turns):
            continue
        reply = turns[first_human + 1]
        if reply["from"] in GPT_ROLES and turns[first_human]["value"].strip() and reply["value"].strip():
            pairs.append(ChatPair(i, turns[first_human]["value"], reply["value"]))
    if not pairs:
        raise DatasetError(
            f"{source}: no conversation has a human turn followed by a gpt turn; point workload.dataset_path "
            "at a ShareGPT file"
        )
    return pairs


def load_sharegpt(path: str | Path) -> list[ChatPair]:
    """Read and parse one ShareGPT JSON file (reads the file; raises DatasetError on any problem)."""
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{p}: no such file; set workload.dataset_path to a ShareGPT JSON file") from None
    except OSError as e:
        raise DatasetError(f"{p}: cannot be read ({e.strerror}); set workload.dataset_path to a readable file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DatasetError(f"{p}: line {line}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    return parse_sharegpt(text, str(p))


def _json_type(v: Any) -> str:
    return {dict: "object", str: "string", bool: "boolean", type(None): "null"}.get(type(v), "number")


def _element_line(text: str, index: int) -> int:
    """1-based line on which element `index` of the top-level JSON array in `text` starts.

    Only called on text that has already parsed as a JSON array, so the walk cannot fail.
    """
    dec = json.JSONDecoder()
    pos = _skip_ws(text, 0) + 1  # past '['
    for _ in range(index):
        pos = _skip_ws(text, pos)
        _, pos = dec.raw_decode(text, pos)
        pos = _skip_ws(text, pos) + 1  # past ','
    pos = _skip_ws(text, pos)
    return text.count("\n", 0, pos) + 1


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
