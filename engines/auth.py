"""The endpoint's API key: read from the variable engine.api_key_env names, checked, never echoed
(docs/security.md).

The key is read when a request needs it and never stored. Surrounding whitespace (a trailing
newline from `export KEY=$(cat file)`) is stripped; a key that still holds a control character
(CR, LF, ...) or a character outside Latin-1 is refused, because the HTTP libraries would then
raise an error whose text contains the header, key included. Every message here names the
variable, never its value. `redact` removes a key from any text that may have picked it up.

Side effects: none (reads the environment mapping it is given).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

REDACTED = "<redacted>"


class ApiKeyError(ValueError):
    """The key's variable is unset or its value cannot be sent; the message never holds the key."""


def _key_problem(name: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return f"environment variable {name} (engine.api_key_env) is not set or empty"
    key = value.strip()
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return (f"the key in {name} (engine.api_key_env) holds a control character (e.g. a line break inside it); "
                "set the variable to the key alone (its value is not shown)")  # fmt: skip
    try:
        key.encode("latin-1")
    except UnicodeEncodeError:
        return (f"the key in {name} (engine.api_key_env) holds a character outside Latin-1, which an HTTP "
                "header cannot carry; set the variable to the key alone (its value is not shown)")  # fmt: skip
    return None


def api_key_problems(name: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Preflight of the key: [] when no key is configured or it can be sent. Pure over `environ`."""
    if not name:
        return []
    env = os.environ if environ is None else environ
    line = _key_problem(name, env.get(name))
    return [line] if line else []


def api_key(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The key held by variable `name`, stripped; ApiKeyError (without the key) if it cannot be sent."""
    env = os.environ if environ is None else environ
    if (line := _key_problem(name, env.get(name))) is not None:
        raise ApiKeyError(line)
    return str(env[name]).strip()


def bearer_headers(name: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{"Authorization": "Bearer <key>"} from variable `name`; {} when no key is configured."""
    return {"Authorization": f"Bearer {api_key(name, environ)}"} if name else {}


def redact(text: str, name: str | None, environ: Mapping[str, str] | None = None) -> str:
    """`text` with the key of variable `name` (raw and stripped) replaced by REDACTED."""
    if not name:
        return text
    env = os.environ if environ is None else environ
    raw = env.get(name) or ""
    for value in sorted({raw, raw.strip()}, key=len, reverse=True):
        if len(value) >= 4:  # a shorter "key" would match unrelated text; it is no key worth the name
            text = text.replace(value, REDACTED)
    return text


def is_loopback(host: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1)."""
    h = (host or "").strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def insecure_key_problem(base_url: str | None, api_key_env: str | None, allow_insecure: bool) -> str | None:
    """A key sent over plain http to a host other than loopback is readable on the network: refused
    unless engine.allow_insecure=true. Pure."""
    if not api_key_env or not base_url or allow_insecure:
        return None
    u = urlsplit(base_url)
    if u.scheme == "http" and not is_loopback(u.hostname or ""):
        return (f"engine.base_url={base_url} is plain http to another machine: the key in {api_key_env} would cross "
                "the network unencrypted; use https, or engine.allow_insecure=true on a network you trust")  # fmt: skip
    return None


def same_origin(a: str, b: str) -> bool:
    """Whether URLs `a` and `b` have the same scheme, host and port (default ports filled in)."""
    ua, ub = urlsplit(a), urlsplit(b)

    def origin(u: object) -> tuple[str, str, int | None]:
        scheme = u.scheme.lower()  # type: ignore[attr-defined]
        port = u.port or {"http": 80, "https": 443}.get(scheme)  # type: ignore[attr-defined]
        return scheme, (u.hostname or "").lower(), port  # type: ignore[attr-defined]

    return origin(ua) == origin(ub)
