"""The keep-alive SSE client against a tiny scripted HTTP server in a thread: request bytes,
connection reuse, the resend after a stale kept-alive connection, SSE lines across chunk
boundaries, and HTTP error statuses. Every wait is on an event, never on a delay."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest
from geventhttpclient.response import HTTPConnectionClosed

from loadgen.sse_client import ConnectionPool, build_request

IO_TIMEOUT_S = 5.0  # only reached when the client misbehaves (a test then fails instead of hanging)


def read_request(conn: socket.socket) -> bytes | None:
    """One HTTP request (head + Content-Length body) from `conn`; None when the client closed first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next((int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def chunk(b: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(b), b)


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def sse(*events: bytes) -> bytes:
    return SSE_HEAD + b"".join(chunk(b"data: " + e + b"\n\n") for e in events) + b"0\r\n\r\n"


class Server:
    """Accepts connections in a thread; `serve(conn, index)` scripts each one (index 0, 1, ...)."""

    def __init__(self, serve: Callable[[socket.socket, int], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.requests: list[bytes] = []
        self._serve = serve
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT_S)
            t = threading.Thread(target=self._run, args=(conn, self.connections), daemon=True)
            self.connections += 1
            self._threads.append(t)
            t.start()

    def _run(self, conn: socket.socket, index: int) -> None:
        with conn:
            try:
                self._serve(conn, index)
            except OSError:
                pass

    def handle_requests(self, conn: socket.socket, respond: Callable[[bytes], bytes]) -> None:
        """Answer every request on `conn` with respond(request) until the client closes."""
        while (req := read_request(conn)) is not None:
            self.requests.append(req)
            conn.sendall(respond(req))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server():
    made: list[Server] = []

    def start(serve: Callable[[Server, socket.socket, int], None]) -> Server:
        s = Server(lambda conn, i: serve(s, conn, i))
        made.append(s)
        return s

    yield start
    for s in made:
        s.close()


def request(pool: ConnectionPool, body: bytes = b'{"x": 1}') -> tuple[int, bytes, bytes]:
    """One request read to the end and released: (status, SSE lines joined, raw request sent)."""
    raw = build_request(f"http://127.0.0.1:{pool.port}", "/v1/completions", body, {})
    _, resp, sock = pool.send(raw)
    lines = []
    while line := resp.readline(b"\n"):
        lines.append(line)
    pool.release(sock, resp)
    return int(resp.status_code), b"".join(lines), raw


# -- request bytes -----------------------------------------------------------------------------------


def test_build_request_is_one_exact_post():
    raw = build_request("http://example.org:8000/api/", "/v1/completions", b'{"a":1}', {"Authorization": "Bearer k"})
    assert raw == (
        b"POST /api/v1/completions HTTP/1.1\r\nHost: example.org:8000\r\nContent-Type: application/json\r\n"
        b"Accept: text/event-stream\r\nContent-Length: 7\r\nAuthorization: Bearer k\r\n\r\n"
        b'{"a":1}'
    )


def test_pool_reads_host_port_and_scheme():
    p = ConnectionPool("https://example.org/base", 1.0, 1.0)
    assert (p.host, p.port, p.tls) == ("example.org", 443, True)
    p = ConnectionPool("http://127.0.0.1:9", 1.0, 1.0)
    assert (p.host, p.port, p.tls) == ("127.0.0.1", 9, False)


# -- keep-alive -----------------------------------------------------------------------------------


def test_a_completed_response_keeps_its_connection(server):
    s = server(lambda srv, conn, i: srv.handle_requests(conn, lambda req: sse(b'{"t": "hi"}', b"[DONE]")))
    pool = ConnectionPool(s.url, IO_TIMEOUT_S, IO_TIMEOUT_S)
    for _ in range(3):
        status, body, raw = request(pool)
        assert status == 200 and body == b'data: {"t": "hi"}\n\ndata: [DONE]\n\n'
    assert s.connections == 1 and s.requests == [raw] * 3  # the bytes sent are exactly build_request's
    pool.close()


def test_connection_close_is_honoured(server):
    def serve(srv, conn, i):
        srv.requests.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nok\n")

    s = server(serve)
    pool = ConnectionPool(s.url, IO_TIMEOUT_S, IO_TIMEOUT_S)
    assert request(pool)[:2] == (200, b"ok\n")
    assert request(pool)[:2] == (200, b"ok\n")
    assert s.connections == 2  # not reused after `Connection: close`


def test_an_error_status_is_returned_with_its_body_and_the_connection_is_kept(server):
    body = b'{"error": "overloaded"}'
    s = server(lambda srv, conn, i: srv.handle_requests(
        conn, lambda req: b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)))
    pool = ConnectionPool(s.url, IO_TIMEOUT_S, IO_TIMEOUT_S)
    raw = build_request(s.url, "/v1/completions", b"{}", {})
    _, resp, sock = pool.send(raw)
    assert resp.status_code == 503 and resp.read() == body
    pool.release(sock, resp)
    assert request(pool)[0] == 503 and s.connections == 1
    pool.close()


# -- stale kept-alive connections -------------------------------------------------------------------


def test_stale_idle_connections_are_all_dropped_and_the_request_is_resent(server):
    """Two idle connections that the server closed (like uvicorn's idle timeout): the first send on
    one fails before any response byte, so every idle one is dropped and the request goes once more
    on a fresh connection."""
    closed = [threading.Event(), threading.Event()]

    def serve(srv, conn, i):
        if i < 2:  # answer one request, then close while the client keeps the connection idle
            srv.requests.append(read_request(conn))
            conn.sendall(sse(b"[DONE]"))
            conn.shutdown(socket.SHUT_RDWR)
            closed[i].set()
        else:
            srv.handle_requests(conn, lambda req: sse(b'{"t": "fresh"}', b"[DONE]"))

    s = server(serve)
    pool = ConnectionPool(s.url, IO_TIMEOUT_S, IO_TIMEOUT_S)
    raw = build_request(s.url, "/v1/completions", b"{}", {})
    held = [pool.send(raw), pool.send(raw)]  # two requests at once: two connections
    for _, resp, sock in held:
        while resp.readline(b"\n"):
            pass
        pool.release(sock, resp)
    assert all(e.wait(IO_TIMEOUT_S) for e in closed)
    status, body, _ = request(pool)
    assert status == 200 and b"fresh" in body
    assert s.connections == 3  # one fresh connection replaced both stale ones
    assert all(sock.fileno() == -1 for _, _, sock in held)  # both closed, neither left in the pool
    assert request(pool)[0] == 200 and s.connections == 3  # and is kept alive in turn
    assert len(s.requests) == 4  # the resent request reached the server once
    pool.close()


def test_a_fresh_connection_that_fails_is_not_retried(server):
    def serve(srv, conn, i):
        read_request(conn)
        conn.shutdown(socket.SHUT_RDWR)  # no response at all

    s = server(serve)
    pool = ConnectionPool(s.url, IO_TIMEOUT_S, IO_TIMEOUT_S)
    with pytest.raises((HTTPConnectionClosed, ConnectionError)):
        pool.send(build_request(s.url, "/v1/completions", b"{}", {}))
    assert s.connections == 1


# -- SSE lines --------------------------------------------------------------------------------------


def test_sse_lines_split_across_chunks_are_returned_whole_and_as_soon_as_complete(server):
    """The first event arrives in two chunks; the rest is only sent after the client has read that
    line. If readline waited for more than one line, the server would never send and the read would
    time out."""
    first_line_read = threading.Event()

    def serve(srv, conn, i):
        srv.requests.append(read_request(conn))
        conn.sendall(SSE_HEAD + chunk(b'data: {"t": "a') + chunk(b'b"}\n'))
        first_line_read.wait(IO_TIMEOUT_S)
        conn.sendall(chunk(b"\ndata: [DO") + chunk(b"NE]\n\n") + b"0\r\n\r\n")

    s = server(serve)
    pool = ConnectionPool(s.url, IO_TIMEOUT_S, IO_TIMEOUT_S)
    _, resp, sock = pool.send(build_request(s.url, "/v1/completions", b"{}", {}))
    assert resp.readline(b"\n") == b'data: {"t": "ab"}\n'
    first_line_read.set()
    rest = []
    while line := resp.readline(b"\n"):
        rest.append(line)
    assert rest == [b"\n", b"data: [DONE]\n", b"\n"]
    assert resp.message_complete
    pool.release(sock, resp)
    pool.close()
