"""The client side of RFC 6455 as the recorder needs it, sans I/O: the opening handshake and the framing.

`ClientFrames` is fed the bytes a connection receives and returns, in one call per received chunk, every
complete message in it (a Binance stream delivers hundreds per chunk at full rate), while answering pings
and the closing handshake through `to_send`. No sockets, clocks or tasks: `recorder.wsconnection` drives
it on an asyncio transport. It is the recorder's hot receive path: per frame it reads two header bytes and
slices the payload, where the general-purpose `websockets` parser (kept for everything else) spent most of
the recorder's CPU per message (measured 2026-12-02).

What it accepts is what a client that offered no extension must accept (RFC 6455 §5): unmasked frames,
RSV bits clear, text/binary messages possibly fragmented, control frames (ping, pong, close) of at most
125 bytes and never fragmented, interleaved within a fragmented message. Anything else is a protocol
error: the core sends close 1002 and reports it as the reason the connection ended.
"""

from __future__ import annotations

import base64
import hashlib
import os
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 64 * 1024  # bytes of an HTTP response head before it is refused
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80
_FIN_TEXT, _FIN_BINARY = _FIN | OP_TEXT, _FIN | OP_BINARY
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_NO_STATUS, CLOSE_ABNORMAL = 1000, 1002, 1005, 1006


class HandshakeError(Exception):
    """The server did not switch to the WebSocket protocol (e.g. HTTP 429 or 418 from Binance)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConnectionClosed(Exception):
    """The connection ended: by a closing handshake (`code`, `reason` from the close frame), a protocol
    error, or without a close frame (1006)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


def handshake_request(url: str, key: str) -> bytes:
    """The opening handshake's GET request for a ws:// or wss:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL: {url!r}")
    default_port = 443 if parts.scheme == "wss" else 80
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port not in (None, default_port):
        host = f"{host}:{parts.port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: avellaneda-mm recorder\r\n"
            "\r\n").encode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One unfragmented client frame, masked with `mask` (4 random bytes unless given)."""
    mask = os.urandom(4) if mask is None else mask
    n = len(payload)
    if n < 126:
        head = bytes((_FIN | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((_FIN | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((_FIN | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    if n:
        repeated = (mask * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return head + mask + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()[:123]


class ClientFrames:
    """The protocol state of one client connection, from the handshake to the close."""

    def __init__(self, url: str, key: str | None = None) -> None:
        self.key = key or new_key()
        self.request = handshake_request(url, self.key)
        self.open = False
        self.closed: ConnectionClosed | None = None  # set when the connection is over (or will be)
        self.close_sent = False
        self.to_send: list[bytes] = []  # pongs and close frames the driver must write
        self._buffer = b""
        self._fragments: list[bytes] | None = None  # a fragmented message's parts so far

    def receive(self, data: bytes) -> list[bytes]:
        """The complete messages in `data` (with what an earlier call left incomplete). Raises
        HandshakeError if the server refuses the upgrade."""
        buffer = self._buffer + data if self._buffer else data
        if not self.open:
            buffer = self._handshake(buffer)
            if not self.open:
                self._buffer = buffer
                return []
        messages: list[bytes] = []
        size, pos = len(buffer), 0
        while size - pos >= 2 and self.closed is None:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[start:start + 2], "big")
                start += 2
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[start:start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            pos = end
            if b1 & 0x80:
                self._fail("a masked frame from the server")
            elif b0 == _FIN_TEXT or b0 == _FIN_BINARY:
                if self._fragments is not None:
                    self._fail("a new message inside a fragmented one")
                else:
                    messages.append(buffer[start:end])
            else:
                message = self._other(b0, buffer[start:end])
                if message is not None:
                    messages.append(message)
        self._buffer = buffer[pos:] if self.closed is None else b""
        return messages

    def receive_eof(self) -> None:
        """The TCP connection ended: without a close frame first, that is an abnormal closure (1006)."""
        if self.closed is None:
            self.closed = ConnectionClosed(CLOSE_ABNORMAL, "no close frame received")

    def send_text(self, text: str) -> bytes:
        return encode_frame(OP_TEXT, text.encode())

    def start_close(self, code: int = CLOSE_NORMAL, reason: str = "") -> bytes | None:
        """Our close frame (None if one was sent already)."""
        if self.close_sent:
            return None
        self.close_sent = True
        return encode_frame(OP_CLOSE, close_payload(code, reason))

    # ---- internals --------------------------------------------------------------------------------

    def _handshake(self, buffer: bytes) -> bytes:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                raise HandshakeError("the server's HTTP response head is too long")
            return buffer
        head, rest = buffer[:end].decode("latin-1"), buffer[end + 4:]
        status_line, *lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HandshakeError(f"not an HTTP response: {status_line[:80]!r}")
        status = int(parts[1])
        if status != 101:
            raise HandshakeError(f"server rejected WebSocket connection: HTTP {status}", status)
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise HandshakeError(f"a malformed response header: {line[:80]!r}", status)
            headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            raise HandshakeError("the response does not upgrade to websocket", status)
        if "upgrade" not in (token.strip().lower() for token in headers.get("connection", "").split(",")):
            raise HandshakeError("the response's Connection header lacks upgrade", status)
        if headers.get("sec-websocket-accept") != accept_for(self.key):
            raise HandshakeError("the response's Sec-WebSocket-Accept does not match the key", status)
        if headers.get("sec-websocket-extensions") or headers.get("sec-websocket-protocol"):
            raise HandshakeError("the server chose an extension or subprotocol the client did not offer", status)
        self.open = True
        return rest

    def _other(self, b0: int, payload: bytes) -> bytes | None:
        """A frame other than a whole text/binary message; returns the message it completes, if any."""
        fin, opcode = b0 & _FIN, b0 & 0x0F
        if b0 & 0x70:
            self._fail("RSV bits set without a negotiated extension")
        elif opcode >= OP_CLOSE:
            if not fin or len(payload) > 125:
                self._fail("a fragmented or oversized control frame")
            elif opcode == OP_PING:
                if not self.close_sent:
                    self.to_send.append(encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._closing(payload)
            elif opcode != OP_PONG:
                self._fail(f"an unknown opcode {opcode:#x}")
        elif opcode == OP_CONTINUATION:
            if self._fragments is None:
                self._fail("a continuation frame without a message to continue")
                return None
            self._fragments.append(payload)
            if fin:
                message, self._fragments = b"".join(self._fragments), None
                return message
        elif opcode in (OP_TEXT, OP_BINARY):  # the first part of a fragmented message (FIN clear)
            if self._fragments is not None:
                self._fail("a new message inside a fragmented one")
            else:
                self._fragments = [payload]
        else:
            self._fail(f"an unknown opcode {opcode:#x}")
        return None

    def _closing(self, payload: bytes) -> None:
        if len(payload) == 1:
            self._fail("a close frame with a one-byte payload")
            return
        code = int.from_bytes(payload[:2], "big") if payload else CLOSE_NO_STATUS
        reason = payload[2:].decode("utf-8", "replace")
        if not self.close_sent:  # echo the code, as the closing handshake asks
            self.close_sent = True
            self.to_send.append(encode_frame(OP_CLOSE, payload[:2]))
        self.closed = ConnectionClosed(code, reason)

    def _fail(self, what: str) -> None:
        if not self.close_sent:
            self.close_sent = True
            self.to_send.append(encode_frame(OP_CLOSE, close_payload(CLOSE_PROTOCOL_ERROR, what)))
        self.closed = ConnectionClosed(CLOSE_PROTOCOL_ERROR, f"protocol error: {what}")
