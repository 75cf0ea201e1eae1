"""A WebSocket client connection on an asyncio transport, driving the sans-I/O `recorder.wsframes` core.

Messages are handed out in batches: `batch()` returns everything received since the last call (up to a
limit), each message with the time its bytes arrived (`time.time_ns()` when the chunk was read off the
socket, the closest a user-space recorder gets to the wire). When more than `high_water` messages wait,
the socket is no longer read (TCP flow control pushes back on the server) until they drop below half.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from urllib.parse import urlsplit

from recorder.wsframes import CLOSE_ABNORMAL, ClientFrames, ConnectionClosed, HandshakeError

HIGH_WATER = 4096  # messages received and not yet taken before the socket is paused


class WebSocketConnection(asyncio.Protocol):
    """One client connection: `batch()` to receive, `send()` for control messages, `close()`."""

    def __init__(self, url: str, high_water: int = HIGH_WATER) -> None:
        self.core = ClientFrames(url)
        self.high_water = high_water
        self.transport: asyncio.Transport | None = None
        self.stamps: list[int] = []
        self.messages: list[bytes] = []
        loop = asyncio.get_running_loop()
        self._opened = loop.create_future()
        self._lost = loop.create_future()
        self._wakeup: asyncio.Future | None = None
        self._paused = False

    # ---- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.core.request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        core = self.core
        try:
            messages = core.receive(data)
        except HandshakeError as exc:
            if not self._opened.done():
                self._opened.set_exception(exc)
            self.transport.close()
            return
        if core.to_send:
            for frame in core.to_send:
                self.transport.write(frame)
            core.to_send.clear()
        if core.open and not self._opened.done():
            self._opened.set_result(None)
        if messages:
            self.messages += messages
            self.stamps += [now] * len(messages)
            if len(self.messages) >= self.high_water and not self._paused:
                self._paused = True
                self.transport.pause_reading()
        if core.closed is not None:
            self.transport.close()
        self._wake()

    def eof_received(self) -> bool:
        self.core.receive_eof()
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.core.closed is None:
            reason = f"no close frame received ({exc})" if exc else "no close frame received"
            self.core.closed = ConnectionClosed(CLOSE_ABNORMAL, reason)
        if not self._opened.done():
            self._opened.set_exception(ConnectionResetError(f"connection lost in the opening handshake: {exc}"))
        if not self._lost.done():
            self._lost.set_result(None)
        self._wake()

    # ---- the recorder's side ------------------------------------------------------------------------

    async def batch(self, limit: int) -> tuple[list[int], list[bytes]]:
        """(receive times, messages): at least one, at most `limit`; waits for the first. Raises
        ConnectionClosed once the connection has ended and every message before the end was taken."""
        while not self.messages:
            closed = self.core.closed
            if closed is not None:
                raise ConnectionClosed(closed.code, closed.reason)
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
        if len(self.messages) <= limit:
            stamps, messages = self.stamps, self.messages
            self.stamps, self.messages = [], []
        else:
            stamps, messages = self.stamps[:limit], self.messages[:limit]
            del self.stamps[:limit], self.messages[:limit]
        if self._paused and len(self.messages) <= self.high_water // 2:
            self._paused = False
            self.transport.resume_reading()
        return stamps, messages

    async def send(self, text: str) -> None:
        closed = self.core.closed
        if closed is not None or self.core.close_sent:
            raise closed or ConnectionClosed(CLOSE_ABNORMAL, "closing")
        self.transport.write(self.core.send_text(text))

    async def close(self, timeout: float) -> None:
        """The closing handshake (close 1000), then the socket: waits up to `timeout` for the server."""
        frame = self.core.start_close()
        if frame is not None and not self.transport.is_closing():
            self.transport.write(frame)
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), timeout)
        except TimeoutError:
            self.transport.abort()
        except asyncio.CancelledError:  # a retired connection's task: the socket must not outlive it
            self.transport.abort()
            raise

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class connect:
    """Open a connection (TCP, TLS for wss://, the opening handshake) within `open_timeout`; closed with
    the closing handshake on leaving the `async with`."""

    def __init__(self, url: str, *, open_timeout: float = 10.0, close_timeout: float = 1.0,
                 high_water: int = HIGH_WATER) -> None:
        self.url = url
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.high_water = high_water
        self.connection: WebSocketConnection | None = None

    async def __aenter__(self) -> WebSocketConnection:
        parts = urlsplit(self.url)
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        context = ssl.create_default_context() if secure else None
        loop = asyncio.get_running_loop()

        async def open_() -> WebSocketConnection:
            _, connection = await loop.create_connection(
                lambda: WebSocketConnection(self.url, self.high_water), parts.hostname, port, ssl=context,
                server_hostname=parts.hostname if secure else None)
            self.connection = connection
            await connection._opened
            return connection

        try:
            return await asyncio.wait_for(open_(), self.open_timeout)
        except BaseException:
            if self.connection is not None and self.connection.transport is not None:
                self.connection.transport.abort()
            raise

    async def __aexit__(self, *exc_info) -> None:
        await self.connection.close(self.close_timeout)
