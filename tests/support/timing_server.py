"""Test-only OpenAI-compatible streaming server with known timing (never used by a real run).

Serves /v1/completions and /v1/chat/completions with SSE: the first content chunk `--ttft-ms`
after the request arrived, then one chunk (one token) every `--itl-ms` on absolute deadlines,
`max_tokens` in all, then a usage chunk and ``data: [DONE]``. Its prompt_tokens is 7, or with
``--count-prompt`` the prompt's (or the whole chat history's) words, :func:`prompt_tokens`, as a
multi-turn test needs to see its history grow. Also /health, /v1/models and a
tiny Prometheus /metrics (running, requests and generated tokens). With ``--log`` every request appends one JSON line with the server's
own CLOCK_MONOTONIC timestamps (arrival, each chunk write) and the response id, which tests and
benchmarks compare with what the client measured.

``--max-streams N`` gives the server a known capacity: at most N requests stream at once, the
others wait in arrival order (FIFO) and their TTFT clock starts when a stream slot frees (the
slot passes straight to the next waiter, so none stays idle). Each request holds its slot for
S = ttft + (max_tokens - 1) * itl, so in closed form: a closed loop of c <= N users never waits
(TTFT = ttft), c > N users queue (some requests wait up to S each round); open-loop constant
arrivals at rate r are stable iff r <= N / S. A waiter whose client has gone is skipped when its
turn comes. With the limit the log also has `start_ns` (slot granted) and /metrics a
`fake:num_requests_waiting` gauge; without it nothing changes.

Built on a raw asyncio protocol (no framework) so one process streams >10k chunks/s and the
client, not the server, is what a benchmark measures.

Run: ``python tests/support/timing_server.py --port 8123 --ttft-ms 50 --itl-ms 10``.
Side effects: listens on 127.0.0.1 only; appends to the --log file.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import signal
import time

ARGS: argparse.Namespace
STATS = {"running": 0, "total": 0, "waiting": 0, "tokens": 0}
IDS = itertools.count()


class FifoSlots:
    """N stream slots granted in arrival order. A freed slot is handed to the next waiter
    directly (never back to the pool first), so a newcomer cannot overtake the queue."""

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiters: collections.deque[asyncio.Future[int]] = collections.deque()

    async def acquire(self) -> int | None:
        """Wait for a slot; the monotonic ns at which it was handed over (None: free at once)."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just as we were cancelled: pass it on
            else:
                self.waiters.remove(fut)
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(time.monotonic_ns())  # the slot's new service starts now
                return
        self.free += 1


SLOTS: FifoSlots | None = None


def _resp(code: int, body: bytes, ctype: str = "application/json") -> bytes:
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found"}.get(code, "Error")
    return (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


HOSTILE = ("endless-line", "slow-drip", "huge-error", "huge-text", "huge-metrics")


async def hostile(writer: asyncio.StreamWriter, mode: str) -> None:
    """A server that does not play fair (tests of the client's caps, issue 25): until the client
    hangs up, `endless-line` streams one SSE line that never ends, `slow-drip` sends a byte every
    0.2 s and never a line end, `huge-error` answers 500 with an endless body, `huge-text` streams
    well-formed tokens of 64 KiB each without end, `endless-text` (the /metrics of huge-metrics) an
    endless text body."""
    STATS["total"] += 1
    status, ctype = (500, "application/json") if mode == "huge-error" else (200, "text/event-stream")
    if mode == "endless-text":
        ctype = "text/plain"
    writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    if mode == "endless-line":
        writer.write(_chunk(b"data: {\"choices\": [{\"text\": \""))
    block = json.dumps({"choices": [{"index": 0, "text": "y" * 65536}]}).encode()
    try:
        while True:
            if mode == "slow-drip":
                writer.write(_chunk(b"d"))
                await writer.drain()
                await asyncio.sleep(0.2)
                continue
            if mode == "huge-text":
                writer.write(_chunk(b"data: " + block + b"\n\n"))
            elif mode == "endless-text":
                writer.write(_chunk(b"fake:filler 1\n" * 4096))
            else:
                writer.write(_chunk(b"x" * 65536))
            await writer.drain()
            await asyncio.sleep(0)
    except (ConnectionError, OSError):
        pass


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            # Like uvicorn (5 s by default), close a kept-alive connection that stays idle too long.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ARGS.keepalive_s)
            t_arrival = time.monotonic_ns()
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            authorized = not ARGS.api_key or headers.get("authorization") == f"Bearer {ARGS.api_key}"
            if method == "GET":
                if path == "/health":
                    writer.write(_resp(200, b""))
                elif not authorized:
                    writer.write(_resp(401, b'{"error": "unauthorized"}'))
                elif path == "/v1/models":
                    writer.write(_resp(200, b'{"data": [{"id": "m"}]}'))
                elif path == "/metrics" and ARGS.hostile == "huge-metrics":
                    await hostile(writer, "endless-text")
                    return
                elif path == "/metrics":
                    m = (f"# TYPE fake:num_requests_running gauge\nfake:num_requests_running {STATS['running']}\n"
                         f"# TYPE fake:requests_total counter\nfake:requests_total {STATS['total']}\n"
                         f"# TYPE fake:generation_tokens_total counter\nfake:generation_tokens_total {STATS['tokens']}\n")  # fmt: skip
                    if SLOTS is not None:
                        m += f"# TYPE fake:num_requests_waiting gauge\nfake:num_requests_waiting {STATS['waiting']}\n"
                    writer.write(_resp(200, m.encode(), "text/plain"))
                else:
                    writer.write(_resp(404, b"not found"))
                await writer.drain()
                continue
            if ARGS.hostile and path in ("/v1/completions", "/v1/chat/completions"):
                await hostile(writer, ARGS.hostile)
                return
            if path not in ("/v1/completions", "/v1/chat/completions"):
                writer.write(_resp(404, b"not found"))
            elif not authorized:
                writer.write(_resp(401, b'{"error": "bad or missing API key"}'))
            elif ARGS.fail_status:
                writer.write(_resp(ARGS.fail_status, b'{"error": "injected failure"}'))
            else:
                req = json.loads(body or b"{}")
                if not req.get("stream") and path == "/v1/completions":
                    writer.write(_resp(200, json.dumps(toy_completion(req)).encode()))
                    await writer.drain()
                    continue
                if SLOTS is None:
                    await stream(writer, req, path.endswith("chat/completions"), t_arrival)
                else:
                    await limited_stream(reader, writer, req, path.endswith("chat/completions"), t_arrival)
                continue
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()


# -- a toy "model" for the quality gate's non-streamed requests -----------------------------------
VOCAB = 50


def _h(*xs: int) -> int:
    """A deterministic hash of integers (not Python's salted hash)."""
    v = 2166136261
    for x in xs:
        v = ((v ^ (x & 0xFFFFFFFF)) * 16777619) & 0xFFFFFFFF
    return v


def toy_logprobs(ctx: list[int]) -> list[float]:
    """log-probabilities over VOCAB tokens after `ctx`: fixed per context; with --quality-noise q,
    a share q of contexts (by hash) get their top two tokens swapped and every logprob shifted by
    -0.01 (a "quantized" model whose figures are known exactly)."""
    key = _h(*ctx[-3:], len(ctx))
    raw = [-1.0 - ((_h(key, t) % 1000) / 100.0) for t in range(VOCAB)]
    if ARGS.quality_noise > 0 and (_h(key, 7) % 1000) < ARGS.quality_noise * 1000:
        order = sorted(range(VOCAB), key=lambda t: -raw[t])
        raw[order[0]], raw[order[1]] = raw[order[1]], raw[order[0]]
        raw = [x - 0.01 for x in raw]
    return raw


def _tokenize(text: str) -> list[int]:
    return [1 + (b % (VOCAB - 1)) for b in text.encode()][:64]


def toy_completion(req: dict) -> dict:
    """A non-streamed /v1/completions answer (greedy), with vLLM's return_token_ids, logprobs and
    prompt_logprobs fields, from toy_logprobs."""
    prompt = req.get("prompt")
    ids = list(prompt) if isinstance(prompt, list) else _tokenize(str(prompt or ""))
    ctx, gen, lps, tops = list(ids), [], [], []
    topn = int(req.get("logprobs") or 0)  # OpenAI completions: the top-n of every generated token
    for _ in range(int(req.get("max_tokens", 16))):
        lp = toy_logprobs(ctx)
        t = max(range(VOCAB), key=lambda k: lp[k])
        gen.append(t)
        lps.append(lp[t])
        tops.append({f"token_id:{x}": lp[x] for x in sorted(range(VOCAB), key=lambda x: -lp[x])[:topn]})
        ctx.append(t)
    choice: dict = {"index": 0, "text": "".join(f" t{t}" for t in gen), "finish_reason": "length",
                    "logprobs": {"token_logprobs": lps, "tokens": [f"token_id:{t}" for t in gen]}}  # fmt: skip
    if topn:
        choice["logprobs"]["top_logprobs"] = tops
    if req.get("return_token_ids"):
        choice["token_ids"], choice["prompt_token_ids"] = gen, ids
    if req.get("prompt_logprobs") is not None:
        pl: list = [None]
        for j in range(1, len(ids)):
            lp = toy_logprobs(ids[:j])
            rank = 1 + sum(x > lp[ids[j]] for x in lp)
            pl.append({str(ids[j]): {"logprob": lp[ids[j]], "rank": rank, "decoded_token": f"t{ids[j]}"}})
        choice["prompt_logprobs"] = pl
    return {"id": f"cmpl-{next(IDS)}", "object": "text_completion", "choices": [choice],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(gen)}}


def prompt_tokens(req: dict) -> int:
    """The prompt's length as this server counts it: whitespace-separated words of the prompt, or
    of every chat message's content (a multi-turn history counts whole) plus one per message."""
    msgs = req.get("messages")
    if msgs:
        return sum(len(str(m.get("content") or "").split()) + 1 for m in msgs)
    prompt = req.get("prompt")
    return len(prompt) if isinstance(prompt, list) else len(str(prompt or "").split())


async def limited_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: dict, chat: bool,
                         t_arrival: int) -> None:  # fmt: skip
    """stream() once one of the --max-streams slots is free (FIFO); the slot is held to the end."""
    assert SLOTS is not None
    STATS["waiting"] += 1
    try:
        # a slot free at once: the clock runs from arrival, exactly as without a limit
        t_start = await SLOTS.acquire() or t_arrival
    finally:
        STATS["waiting"] -= 1
    try:
        if reader.at_eof() or writer.is_closing():
            return  # the client gave up while queued (e.g. the end of a load point): skip it
        await stream(writer, req, chat, t_arrival, t_start)
    finally:
        SLOTS.release()


async def stream(writer: asyncio.StreamWriter, req: dict, chat: bool, t_arrival: int, t_start: int | None = None
                 ) -> None:  # fmt: skip
    """Answer one request; the TTFT and ITL deadlines count from `t_start` (slot granted), else arrival."""
    t_start = t_arrival if t_start is None else t_start
    loop = asyncio.get_running_loop()
    rid = f"cmpl-{next(IDS)}"
    max_tokens = int(req.get("max_tokens", 16))
    STATS["running"] += 1
    STATS["total"] += 1
    sends: list[int] = []
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    # Deadlines on the loop's clock (CLOCK_MONOTONIC, in seconds), absolute so jitter does not add up.
    t0 = loop.time() - (time.monotonic_ns() - t_start) / 1e9
    try:
        for i in range(max_tokens):
            due = t0 + ARGS.ttft_ms / 1e3 + i * ARGS.itl_ms / 1e3
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            piece = f" tok{i}"
            choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            choice["finish_reason"] = "length" if i == max_tokens - 1 else None
            data = json.dumps({"id": rid, "choices": [choice]}).encode()
            sends.append(time.monotonic_ns())
            writer.write(_chunk(b"data: " + data + b"\n\n"))
            STATS["tokens"] += 1
        n_prompt = prompt_tokens(req) if ARGS.count_prompt else 7
        usage = {"prompt_tokens": n_prompt, "completion_tokens": max_tokens, "total_tokens": n_prompt + max_tokens}
        writer.write(_chunk(b"data: " + json.dumps({"id": rid, "choices": [], "usage": usage}).encode() + b"\n\n"))
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
    finally:
        STATS["running"] -= 1
        if ARGS.log:
            with open(ARGS.log, "a") as f:  # one small write per request: complete as soon as it ends
                entry = {"id": rid, "arrival_ns": t_arrival, "send_ns": sends}
                if ARGS.count_prompt:  # without it the record is as it always was
                    entry |= {"prompt_tokens": prompt_tokens(req), "messages": len(req.get("messages") or [])}
                if SLOTS is not None:  # without --max-streams the record is as it always was
                    entry["start_ns"] = t_start
                f.write(json.dumps(entry) + "\n")


async def main_async() -> None:
    global SLOTS
    if ARGS.max_streams > 0:
        SLOTS = FifoSlots(ARGS.max_streams)
    srv = await asyncio.start_server(handle, "127.0.0.1", ARGS.port, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with srv:
        await stop.wait()


def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    ap.add_argument("--itl-ms", type=float, default=5.0)
    ap.add_argument("--fail-status", type=int, default=0, help="answer every POST with this HTTP status")
    ap.add_argument("--log", default=None)
    ap.add_argument("--keepalive-s", type=float, default=5.0, help="close connections idle this long")
    ap.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` (except on /health)")
    ap.add_argument("--count-prompt", action="store_true",
                    help="usage.prompt_tokens = the words of the prompt or chat history (default: 7)")
    ap.add_argument("--max-streams", type=int, default=0,
                    help="stream at most N requests at once, the rest wait FIFO (0 = unlimited)")  # fmt: skip
    ap.add_argument("--hostile", choices=HOSTILE, default=None,
                    help="misbehave on every completion (or /metrics): see hostile()")
    ap.add_argument("--quality-noise", type=float, default=0.0,
                    help="share of contexts whose top-1 token the toy model swaps (a known 'quantization' error)")
    ARGS = ap.parse_args()
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
