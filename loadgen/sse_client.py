"""Lean keep-alive HTTP/1.1 client for streamed completions, for the gevent load-generator process.

Why not Locust's FastHttpSession: its per-request bookkeeping (URL building, cookie jar, request
metadata) costs a few hundred microseconds of CPU *between* the send timestamp and the bytes
leaving. With many users sending in the same instant (a batched engine finishes their previous
replies together), those costs queue up and inflate every TTFT by about 1 ms at 8 streams
(measured against tests/support/timing_server.py). Here the request bytes are built before the
run, `t_sent` is stamped right before `sendall`, and the response is parsed by
geventhttpclient's HTTP parser (`HTTPSocketResponse.readline` returns each SSE line as soon
as it is buffered). Locust still runs the users, shapes and live statistics.

Side effects: opens TCP (or TLS) connections to the engine; only import it in the load-generator
process (gevent must have patched the stdlib first).
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

import gevent.socket
from geventhttpclient.response import HTTPConnectionClosed, HTTPSocketResponse

from loadgen import clock

now = clock.now  # CLOCK_MONOTONIC (bound at import, after a test-only offset may have been installed)


def build_request(base_url: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The exact bytes of one POST with a JSON body (built once per workload item)."""
    u = urlsplit(base_url)
    prefix = u.path.rstrip("/")
    head = [f"POST {prefix}{path} HTTP/1.1", f"Host: {u.netloc}", "Content-Type: application/json",
            "Accept: text/event-stream", f"Content-Length: {len(body)}"]  # fmt: skip
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class CapExceeded(Exception):
    """The server sent more than a cap allows; the message names the cap (recorded as the error)."""


def read_line(resp: HTTPSocketResponse, max_bytes: int) -> bytes:
    """The next line of the body (up to and including b"\\n"; b"" at its end), as
    HTTPSocketResponse.readline does, but scanning each byte once (its readline rescans the whole
    buffer after every read: quadratic in a line's length) and raising CapExceeded once the line
    passes `max_bytes` without ending, instead of buffering it whole."""
    buf = resp._body_buffer  # noqa: SLF001 - geventhttpclient keeps the parsed body here
    scanned = 0
    while True:
        i = buf.find(b"\n", scanned)
        if i >= 0:
            line = bytes(buf[: i + 1])
            del buf[: i + 1]
            return line
        scanned = len(buf)
        if scanned > max_bytes:
            raise CapExceeded(f"an SSE line longer than {max_bytes} bytes (traffic.max_sse_line_bytes)")
        if resp.message_complete:
            line = bytes(buf)
            del buf[:]
            return line
        sock = resp._sock  # noqa: SLF001
        if sock is None:
            raise HTTPConnectionClosed("connection closed.")
        resp.feed(sock.recv(resp.block_size))


def read_capped(resp: HTTPSocketResponse, max_bytes: int) -> tuple[bytes, bool]:
    """At most `max_bytes` of the body, and whether there was more (left unread)."""
    data = resp.read(max_bytes + 1)
    return data[:max_bytes], len(data) > max_bytes


class ConnectionPool:
    """Idle keep-alive connections to one server; a request takes one (or opens one) and gives it
    back when the response was read completely and the server allows keep-alive."""

    def __init__(self, base_url: str, connect_timeout_s: float, io_timeout_s: float) -> None:
        u = urlsplit(base_url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.tls = u.scheme == "https"
        self.connect_timeout_s = connect_timeout_s
        self.io_timeout_s = io_timeout_s
        self._idle: list[socket.socket] = []
        self._ctx = ssl.create_default_context() if self.tls else None

    def _connect(self) -> socket.socket:
        s = gevent.socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay on small requests
        if self._ctx is not None:
            s = self._ctx.wrap_socket(s, server_hostname=self.host)
        s.settimeout(self.io_timeout_s)
        return s

    def send(self, raw: bytes) -> tuple[int, HTTPSocketResponse, socket.socket]:
        """Send `raw`; returns (t_sent_ns, response with headers parsed, socket).

        A kept-alive connection the server has closed meanwhile (uvicorn closes idle ones after
        5 s) fails before any byte of the response arrives. Then every idle connection is
        presumed stale too (same idle timeout) and the request is sent once more on a fresh
        connection; `t_sent` is the time of that second send.
        """
        reused = bool(self._idle)
        sock = self._idle.pop() if reused else self._connect()
        t_sent = now()
        try:
            sock.sendall(raw)
            return t_sent, HTTPSocketResponse(sock, method="POST"), sock
        except (HTTPConnectionClosed, ConnectionError):
            sock.close()
            if not reused:
                raise
        self.close()
        sock = self._connect()
        t_sent = now()
        sock.sendall(raw)
        return t_sent, HTTPSocketResponse(sock, method="POST"), sock

    def release(self, sock: socket.socket, resp: HTTPSocketResponse) -> None:
        """Keep the connection for the next request if the response allows it, else close it."""
        if resp.message_complete and not resp.should_close():
            self._idle.append(sock)
        else:
            sock.close()

    def close(self) -> None:
        for s in self._idle:
            s.close()
        self._idle.clear()
