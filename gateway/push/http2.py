"""A small HTTP/2 client on asyncio, made for APNs: many concurrent requests on few
long-lived TLS connections.

- `Http2Connection` is one connection: an asyncio Protocol that is the connection's one
  state machine (stream ids, both flow-control windows, settings, the HPACK contexts:
  `gateway.push.headerblock` encodes and decodes; `gateway.push.frames`
  is the wire format). It multiplexes requests as streams, honours the server's
  MAX_CONCURRENT_STREAMS as it changes (APNs allows one stream until the first valid
  token, then raises it), sends bodies within the flow-control windows, and handles
  GOAWAY: streams the server never processed fail with `StreamRefused`, no new ones
  start, and the others run to completion if the server answers them before closing
  (APNs closes right after its GOAWAY, which fails them as lost).
  Our own cap (`max_streams`, 100 by default) stays below what APNs allows (observed
  500 to 1500); 100 streams hide a 30 ms round trip at over 3000 requests per second,
  above what one core pushes anyway (see bench/).
- `Http2Pool` keeps `size` connections to one origin, reconnects lazily when one closes,
  retries a refused (unprocessed) stream on another connection, and can `recycle()` its
  connections (drain them and open new ones, e.g. after a credential change).
  `request()` is a coroutine; `start()` writes the request before it returns when a
  connection has a free stream at once (the call push's path: no task hop, no queueing
  behind the loop's other work) and gives an awaitable of the response.

Why our own client: httpx[http2] and aiohttp either do not speak HTTP/2 or hide what
APNs needs controlled (the server's changing stream limit, GOAWAY with unprocessed
streams, PINGs, one connection carrying hundreds of requests), and aioapns hard-codes
Apple's hosts. Why our own framing rather than h2's state machine: h2 (pure Python,
Huffman-coding HPACK, header validation, a walk over every stream per new stream) was
most of a push's CPU; a request here is one HEADERS (+ DATA) frame built from bytes and
written in one call.

Every failure of the network or the server surfaces as a `TransientError`; timeouts reset
the stream; a server breaking the protocol gets GOAWAY(PROTOCOL_ERROR) and loses the
connection. Fields passed as `hpack.NeverIndexedHeaderTuple` are sent "never indexed".
Depends on hpack, `gateway.push.frames`, `gateway.push.headerblock` and `gateway.errors`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import ssl
from typing import Awaitable, NamedTuple
from urllib.parse import urlsplit

import hpack
from hpack import NeverIndexedHeaderTuple

from gateway.errors import TransientError
from gateway.push import frames
from gateway.push.headerblock import BlockDecoder, LiteralEncoder

Headers = list[tuple[str, str]]

# hpack logs every header it encodes or decodes at debug level: device tokens in paths,
# provider tokens. A gateway run with level=debug must not write those anywhere.
logging.getLogger("hpack").setLevel(logging.WARNING)


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class StreamRefused(TransientError):
    """The server did not process the request (GOAWAY, REFUSED_STREAM): safe to resend."""


class _Unusable(Exception):
    """The connection closed or started draining before the request was sent."""


class _Stream:
    __slots__ = ("future", "status", "headers", "body", "pending", "window", "unacked")

    def __init__(self, future: asyncio.Future, body: bytes, window: int):
        self.future = future
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.pending = memoryview(body)  # request body not yet sent (flow control)
        self.window = window  # what the server lets us send on this stream
        self.unacked = 0  # response bytes received and not yet given back (WINDOW_UPDATE)


class Http2Connection(asyncio.Protocol):
    """One HTTP/2 connection. Open with `await Http2Connection.open(...)`."""

    def __init__(self, authority: str, max_streams: int = 100):
        self._authority = authority
        self._cap = max_streams
        self._encoder = LiteralEncoder()
        self._decoder = BlockDecoder()
        self._reader = frames.FrameReader()
        self._next_id = 1
        self._send_window = frames.DEFAULT_WINDOW  # the connection's, towards the server
        self._unacked = 0  # response bytes on the connection not yet given back
        self._remote_limit = 2**31  # MAX_CONCURRENT_STREAMS: unlimited until said
        self._initial_window = frames.DEFAULT_WINDOW
        self._frame_size = frames.DEFAULT_FRAME_SIZE
        self._block: tuple[int, int, bytearray] | None = None  # (stream, flags, fragments)
        self._streams: dict[int, _Stream] = {}
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._granted = 0  # slots reserved for woken waiters that have not run yet
        self._transport: asyncio.Transport | None = None
        # requests framed with `urgent=False`, written together at the loop's next turn
        self._held: list[bytes] = []
        self._settings = asyncio.get_running_loop().create_future()
        self.draining = False
        self.goaway_reason: bytes | None = None  # APNs puts {"reason": ...} there
        self._last_activity = asyncio.get_running_loop().time()
        self._keepalive: asyncio.Task | None = None
        self._ping_ack: asyncio.Future | None = None
        self.pings = 0  # PINGs sent (tests, stats)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        *,
        timeout: float = 10.0,
        max_streams: int = 100,
        ping_after: float | None = None,
    ) -> Http2Connection:
        """Connect and wait for the server's SETTINGS. With `ping_after`, a connection idle
        that long is checked with a PING and closed if no ACK comes within `timeout`."""
        loop = asyncio.get_running_loop()
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal
        authority = name if port == 443 else f"{name}:{port}"
        conn = cls(authority, max_streams)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, host, port, ssl=ssl_context)
                await asyncio.shield(conn._settings)  # the server preface: its stream limit
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            conn.close()
            raise TransientError(f"cannot connect to {authority}: {exc or type(exc).__name__}") from None
        ssl_object = conn._transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn not in (None, "h2"):  # None: the server ignored ALPN; try HTTP/2 anyway
            conn.close()
            raise TransientError(f"{authority} does not speak HTTP/2 (ALPN chose {alpn})")
        if ping_after:
            conn._keepalive = asyncio.ensure_future(conn._keep_alive(ping_after, timeout))
        return conn

    async def _keep_alive(self, idle_limit: float, timeout: float) -> None:
        # A connection that middleboxes dropped silently would otherwise be found dead by
        # the next push -- a call's push -- after a whole request timeout.
        loop = asyncio.get_running_loop()
        while self.usable:
            idle = loop.time() - self._last_activity
            if idle < idle_limit:
                await asyncio.sleep(idle_limit - idle)
                continue
            self._ping_ack = loop.create_future()
            self._write(frames.frame(frames.PING, 0, 0, os.urandom(8)))
            self.pings += 1
            try:
                async with asyncio.timeout(timeout):
                    await self._ping_ack
            except TimeoutError:
                self._transport.abort()  # the pool opens a new one when next needed
                return

    # --- state ---------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing() and not self.draining

    @property
    def limit(self) -> int:
        return min(self._remote_limit, self._cap)

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    def close(self) -> None:
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
        if self._transport is not None and not self._transport.is_closing():
            self._write(frames.goaway(0, frames.NO_ERROR))  # we accept no streams of the server's
            self._transport.close()

    def drain(self) -> None:
        """Start no new stream; close once the current ones are answered."""
        self.draining = True
        self._wake_waiters()
        if not self._streams:
            self.close()

    def _write(self, data: bytes) -> None:
        if self._held:  # held requests first: stream ids must reach the server in order
            self._held.append(data)
            data = b"".join(self._held)
            self._held.clear()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _hold(self, data: bytes) -> None:
        # Each write is a TLS record and a send() whose loopback or NIC work the loop
        # pays for; requests nobody waits on by the millisecond (missed calls, messages)
        # that are framed in the same turn of the loop leave in one write after it.
        if not self._held:
            asyncio.get_running_loop().call_soon(self._write, b"")
        self._held.append(data)

    # --- requests ------------------------------------------------------------------------

    async def request(self, method: str, path: str, headers: Headers, body: bytes, timeout: float) -> Response:
        await self._slot()
        stream_id, stream = self.start(method, path, headers, body)
        return await self.answer(stream_id, stream, timeout)

    @property
    def free_now(self) -> bool:
        """Whether a request may start at once (a free stream and nobody queued for one)."""
        return self.usable and len(self._streams) + self._granted < self.limit and not self._waiters

    def start(self, method: str, path: str, headers: Headers, body: bytes,
              urgent: bool = True) -> tuple[int, _Stream]:
        """Frame the request and hand it to the transport now, in one write (the caller
        made sure of a slot: `free_now` or `_slot()`). `answer()` then waits for the
        response. Not `urgent`: written with the other requests framed in this turn of
        the loop, at its next turn (or with the next urgent one, whichever comes first)."""
        if not self.usable:
            raise _Unusable()
        self._last_activity = asyncio.get_running_loop().time()
        stream_id = self._next_id
        self._next_id += 2
        if self._next_id > frames.MAX_WINDOW:  # stream ids used up: the pool opens another
            self.draining = True
        block = self._encoder.encode([
            (":method", method),
            (":scheme", "https"),
            (":authority", self._authority),
            NeverIndexedHeaderTuple(":path", path),  # names a device: never indexed anywhere
            *headers,
        ])
        stream = _Stream(asyncio.get_running_loop().create_future(), body, self._initial_window)
        self._streams[stream_id] = stream
        out = [frames.headers(stream_id, block, self._frame_size, end_stream=not body)]
        if body:
            self._body_frames(stream_id, stream, out)
        (self._write if urgent else self._hold)(b"".join(out))
        return stream_id, stream

    async def answer(self, stream_id: int, stream: _Stream, timeout: float) -> Response:
        # one timer handle per request, cheaper than an asyncio.timeout context
        timer = asyncio.get_running_loop().call_later(timeout, self._timed_out, stream_id, stream,
                                                      timeout)
        try:
            return await stream.future
        except asyncio.CancelledError:
            self._cancel(stream_id)
            raise
        finally:
            timer.cancel()

    def _timed_out(self, stream_id: int, stream: _Stream, timeout: float) -> None:
        if not stream.future.done():
            stream.future.set_exception(
                TransientError(f"no answer from {self._authority} within {timeout:g} s"))
        self._cancel(stream_id)

    async def _slot(self) -> None:
        """Wait for a free stream; requests queue in order behind earlier waiters. A woken
        waiter has its slot reserved (`_granted`) until it runs, so a burst of finished
        streams wakes exactly as many waiters as there are slots."""
        if self.free_now:
            return
        while True:
            if not self.usable:
                raise _Unusable()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done():  # a slot was reserved for us: pass it on
                    self._granted -= 1
                    self._wake_waiters()
                else:
                    self._waiters.remove(waiter)  # O(n), but only when cancelled
                raise
            self._granted -= 1
            if self.usable and len(self._streams) + self._granted < self.limit:
                return  # else the server lowered its limit meanwhile: queue again

    def _wake_waiters(self) -> None:
        free = self.limit - len(self._streams) - self._granted
        while self._waiters and (free > 0 or not self.usable):
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._granted += 1
                free -= 1

    def _body_frames(self, stream_id: int, stream: _Stream, out: list) -> None:
        """DATA frames of the body, as far as both flow-control windows allow (the rest
        goes when the server's WINDOW_UPDATE comes)."""
        while stream.pending:
            size = min(self._send_window, stream.window, self._frame_size, len(stream.pending))
            if size <= 0:
                return
            chunk, stream.pending = stream.pending[:size], stream.pending[size:]
            self._send_window -= size
            stream.window -= size
            out.append(frames.frame(frames.DATA, 0 if stream.pending else frames.END_STREAM,
                                    stream_id, chunk.tobytes()))

    def _cancel(self, stream_id: int) -> None:
        if self._streams.pop(stream_id, None) is None:
            return
        self._write(frames.rst_stream(stream_id, frames.CANCEL))
        self._stream_done()

    def _stream_done(self) -> None:
        self._wake_waiters()
        if self.draining and not self._streams:
            self.close()

    def _finish(self, stream_id: int, error: Exception | None = None) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if not stream.future.done():
            if error is not None:
                stream.future.set_exception(error)
            else:
                stream.future.set_result(Response(stream.status, stream.headers, bytes(stream.body)))
        self._stream_done()

    # --- protocol ------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self._transport = transport
        transport.write(frames.PREFACE + frames.settings({frames.ENABLE_PUSH: 0}))

    def connection_lost(self, exc) -> None:
        self.draining = True
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
        error = TransientError(f"connection to {self._authority} lost")
        for stream_id in list(self._streams):
            self._finish(stream_id, error)
        self._wake_waiters()
        if not self._settings.done():
            self._settings.set_exception(ConnectionError(f"connection to {self._authority} closed"))
            self._settings.exception()  # retrieved: nobody may be waiting any more

    def data_received(self, data: bytes) -> None:
        self._last_activity = asyncio.get_running_loop().time()
        out: list[bytes] = []  # what we answer, in one write
        try:
            for kind, flags, stream_id, payload in self._reader.feed(data):
                self._on_frame(kind, flags, stream_id, payload, out)
        except (frames.FrameError, hpack.HPACKError, UnicodeDecodeError) as exc:
            out.append(frames.goaway(0, frames.PROTOCOL_ERROR))
            self._write(b"".join(out))
            self._transport.close()
            self.connection_lost(exc)
            return
        self._write(b"".join(out))

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes, out: list) -> None:
        if self._block is not None and kind != frames.CONTINUATION:
            raise frames.FrameError("a header block interrupted")
        if kind == frames.DATA:
            self._on_data(flags, stream_id, payload, out)
        elif kind == frames.HEADERS:
            payload = frames.unpad(flags, payload)
            if flags & frames.PRIORITY_FLAG:
                payload = payload[5:]
            self._block = (stream_id, flags, bytearray(payload))
            if flags & frames.END_HEADERS:
                self._on_headers()
        elif kind == frames.CONTINUATION:
            if self._block is None or self._block[0] != stream_id:
                raise frames.FrameError("CONTINUATION without its HEADERS")
            self._block[2].extend(payload)
            if flags & frames.END_HEADERS:
                self._on_headers()
        elif kind == frames.RST_STREAM:
            code = frames.u32(payload)
            error_class = StreamRefused if code == frames.REFUSED_STREAM else TransientError
            self._finish(stream_id, error_class(f"stream reset by {self._authority}: {frames.error_name(code)}"))
        elif kind == frames.SETTINGS:
            if not flags & frames.ACK:
                self._on_settings(frames.parse_settings(payload))
                out.append(frames.frame(frames.SETTINGS, frames.ACK, 0))
                for sid, stream in list(self._streams.items()):  # a larger initial window
                    if stream.pending:
                        self._body_frames(sid, stream, out)
        elif kind == frames.PING:
            if flags & frames.ACK:
                if self._ping_ack is not None and not self._ping_ack.done():
                    self._ping_ack.set_result(None)
            else:
                out.append(frames.frame(frames.PING, frames.ACK, 0, payload))
        elif kind == frames.GOAWAY:
            self._on_goaway(frames.u32(payload), frames.u32(payload, 4), payload[8:])
        elif kind == frames.WINDOW_UPDATE:
            self._on_window_update(stream_id, frames.u32(payload), out)
        elif kind == frames.PUSH_PROMISE:
            raise frames.FrameError("PUSH_PROMISE although we disabled push")
        # PRIORITY and unknown frame types: nothing to do

    def _on_data(self, flags: int, stream_id: int, payload: bytes, out: list) -> None:
        # the whole frame counts against the windows, padding included
        self._unacked += len(payload)
        if self._unacked >= frames.DEFAULT_WINDOW // 2:
            out.append(frames.window_update(0, self._unacked))
            self._unacked = 0
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream we reset or gave up on
        stream.body += frames.unpad(flags, payload)
        if flags & frames.END_STREAM:
            self._finish(stream_id)
            return
        stream.unacked += len(payload)
        if stream.unacked >= frames.DEFAULT_WINDOW // 2:
            out.append(frames.window_update(stream_id, stream.unacked))
            stream.unacked = 0

    def _on_headers(self) -> None:
        stream_id, flags, block = self._block
        self._block = None
        # decoded even for a forgotten stream: the decoder's table must follow the server's
        fields = self._decoder.decode(bytes(block))
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        headers = dict(fields)
        status = headers.pop(":status", None)
        if status is not None and status.startswith("1") and not flags & frames.END_STREAM:
            return  # informational (100 Continue): the real answer follows
        if status is not None and not stream.status:
            stream.status = int(status) if status.isdigit() else 0
            stream.headers = headers
        else:
            stream.headers.update(headers)  # trailers
        if flags & frames.END_STREAM:
            self._finish(stream_id)

    def _on_settings(self, values: list[tuple[int, int]]) -> None:
        for key, value in values:
            if key == frames.HEADER_TABLE_SIZE:
                self._encoder.header_table_size = value
            elif key == frames.MAX_CONCURRENT_STREAMS:
                self._remote_limit = value
            elif key == frames.INITIAL_WINDOW_SIZE:
                if value > frames.MAX_WINDOW:
                    raise frames.FrameError("INITIAL_WINDOW_SIZE above 2^31-1")
                delta, self._initial_window = value - self._initial_window, value
                for stream in self._streams.values():
                    stream.window += delta
            elif key == frames.MAX_FRAME_SIZE:
                if not frames.DEFAULT_FRAME_SIZE <= value < 2**24:
                    raise frames.FrameError("MAX_FRAME_SIZE out of range")
                self._frame_size = value
        if not self._settings.done():
            self._settings.set_result(None)
        self._wake_waiters()

    def _on_window_update(self, stream_id: int, increment: int, out: list) -> None:
        if stream_id == 0:
            self._send_window += increment
            waiting = [(i, s) for i, s in self._streams.items() if s.pending]
        else:
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            stream.window += increment
            waiting = [(stream_id, stream)] if stream.pending else []
        for sid, stream in waiting:
            self._body_frames(sid, stream, out)

    def _on_goaway(self, last: int, code: int, debug: bytes) -> None:
        self.draining = True
        self.goaway_reason = debug
        refused = StreamRefused(f"{self._authority} went away ({frames.error_name(code)}, {debug!r})")
        for stream_id in [s for s in self._streams if s > last]:
            self._finish(stream_id, refused)
        self._wake_waiters()
        if not self._streams:
            self._transport.close()


class Http2Pool:
    """`size` HTTP/2 connections to the origin of `url`, opened when first needed."""

    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext,
        *,
        size: int = 1,
        connect_timeout: float = 10.0,
        max_streams: int = 100,
        ping_after: float | None = 600.0,
    ):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"an HTTP/2 push service URL must be https://host[:port], not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 443
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._max_streams = max_streams
        self._ping_after = ping_after
        self._slots: list[Http2Connection | None] = [None] * size
        self._draining: list[Http2Connection] = []  # recycled, finishing their streams
        self._opening: list[asyncio.Task | None] = [None] * size
        self._next = 0
        self.connects = 0  # how many connections were opened (tests, stats)

    @property
    def connections(self) -> list[Http2Connection]:
        return [c for c in self._slots if c is not None and c.usable]

    async def request(self, method: str, path: str, headers: Headers, body: bytes = b"", *, timeout: float) -> Response:
        for _ in range(3):  # a request the server never saw may move to a fresh connection
            conn = await self._connection()
            try:
                return await conn.request(method, path, headers, body, timeout)
            except (_Unusable, StreamRefused) as exc:
                last: Exception = exc
        if isinstance(last, _Unusable):
            raise TransientError(f"no usable connection to {self.host}:{self.port}")
        raise last

    def start(self, method: str, path: str, headers: Headers, body: bytes = b"", *,
              timeout: float, urgent: bool = True) -> Awaitable[Response] | None:
        """The request written to a connection now, before the caller does anything else
        (a call push must not wait for the loop's next turn), and an awaitable of its
        response; None, with nothing sent, when no open connection has a free stream at
        once (then use `request`). `urgent`: see `Http2Connection.start`."""
        best = None
        for conn in self._slots:
            if conn is not None and conn.free_now and (best is None or conn.in_flight < best.in_flight):
                best = conn
        if best is None:
            return None
        try:
            stream_id, stream = best.start(method, path, headers, body, urgent)
        except _Unusable:
            return None
        return self._answer(best, stream_id, stream, (method, path, headers, body), timeout)

    async def _answer(self, conn: Http2Connection, stream_id: int, stream: _Stream,
                      again: tuple, timeout: float) -> Response:
        try:
            return await conn.answer(stream_id, stream, timeout)
        except StreamRefused:  # the server never processed it: another connection may
            return await self.request(*again, timeout=timeout)

    async def _connection(self) -> Http2Connection:
        # The least busy open connection; empty or closed slots are (re)opened.
        best = None
        for index, conn in enumerate(self._slots):
            if conn is None or not conn.usable:
                return await self._open(index)
            if best is None or conn.in_flight < best.in_flight:
                best = conn
        return best

    async def _open(self, index: int) -> Http2Connection:
        # Callers needing the same slot share one attempt; a cancelled caller does not
        # cancel it for the others.
        task = self._opening[index]
        if task is None:
            task = self._opening[index] = asyncio.ensure_future(self._connect(index))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen even if nobody waits
        return await asyncio.shield(task)

    async def _connect(self, index: int) -> Http2Connection:
        try:
            conn = await Http2Connection.open(
                self.host,
                self.port,
                self._ssl,
                timeout=self._connect_timeout,
                max_streams=self._max_streams,
                ping_after=self._ping_after,
            )
        finally:
            self._opening[index] = None
        self._slots[index] = conn
        self.connects += 1
        return conn

    def recycle(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """Drain every connection; new requests go to new connections (made with
        `ssl_context` when given, e.g. a replaced client certificate)."""
        if ssl_context is not None:
            self._ssl = ssl_context
        self._draining = [c for c in self._draining if c.in_flight]
        for index, conn in enumerate(self._slots):
            if conn is not None:
                conn.drain()
                if conn.in_flight:
                    self._draining.append(conn)
                self._slots[index] = None

    async def close(self) -> None:
        for conn in self._draining:
            conn.close()
        self._draining = []
        for index, conn in enumerate(self._slots):
            if conn is not None:
                conn.close()
                self._slots[index] = None
        for task in self._opening:
            if task is not None:
                task.cancel()
