"""The OpenAI-compatible wire format: request paths and bodies, and reading the streamed events.

Everything servelab knows about the API it speaks is here, so another API (or a change of the
OpenAI one) touches one module: which path serves which `workload.endpoint`, the JSON body of a
streamed request (with `stream_options.include_usage`, so token counts come from the server
and no tokenizer runs in the load generator's hot path), and how one server-sent event is read
(the payload of a ``data:`` line, the generated text of a completions or chat chunk).

The readers are small and allocation-light because the load generator calls them once per
streamed chunk; the caller stamps the chunk's arrival time *before* calling them.
Side effects: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENDPOINT_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
DONE = b"[DONE]"  # the payload of the stream's last event


def request_body(
    prompt: str, max_tokens: int, endpoint: str, model: str, temperature: float, extras: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON body of one streamed request (usage requested); `extras` are engine-specific fields."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    elif endpoint == "completions":
        body["prompt"] = prompt
    else:
        raise ValueError(f"workload.endpoint must be one of {', '.join(ENDPOINT_PATHS)}, got {endpoint!r}")
    body.update(extras)
    return body


def sse_payload(line: bytes) -> bytes | None:
    """The payload of an SSE ``data:`` line, stripped; None for any other line (blank, comment, event:)."""
    if not line.startswith(b"data:"):
        return None
    return line[5:].strip()


def choice_text(choice: Mapping[str, Any], chat: bool) -> str | None:
    """The generated text of one streamed choice: ``delta.content`` for chat, ``text`` for completions."""
    if chat:
        delta = choice.get("delta")
        return delta.get("content") if delta else None
    return choice.get("text")
