"""The recorder's WebSocket client: the sans-I/O core (`recorder.wsframes`) fed bytes cut anywhere, and the
asyncio connection (`recorder.wsconnection`) against a `websockets` server on 127.0.0.1 that fragments
messages, pings, refuses the upgrade and closes with a code."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from recorder.wsconnection import connect
from recorder.wsframes import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ClientFrames,
    ConnectionClosed,
    HandshakeError,
    accept_for,
    encode_frame,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example


def response(key: str = KEY, status: str = "101 Switching Protocols", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_for(key)}\r\n{extra}\r\n").encode()


def server_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 1 << 16:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def unmask(frame: bytes) -> tuple[int, bytes]:
    """(opcode, payload) of one client frame."""
    n, at = frame[1] & 0x7F, 2
    if n == 126:
        n, at = int.from_bytes(frame[2:4], "big"), 4
    elif n == 127:
        n, at = int.from_bytes(frame[2:10], "big"), 10
    assert frame[1] & 0x80, "client frames are masked"
    mask, payload = frame[at:at + 4], frame[at + 4:at + 4 + n]
    return frame[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def opened() -> ClientFrames:
    core = ClientFrames("ws://127.0.0.1:9/stream?streams=btcusdt@trade", key=KEY)
    assert core.receive(response()) == [] and core.open
    return core


def test_the_handshake_request_and_the_accept_check():
    core = ClientFrames("wss://stream.binance.com:9443/stream?streams=btcusdt@trade", key=KEY)
    request = core.request.decode()
    assert request.startswith("GET /stream?streams=btcusdt@trade HTTP/1.1\r\nHost: stream.binance.com:9443\r\n")
    assert "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" in request and request.endswith("\r\n\r\n")
    assert accept_for(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    with pytest.raises(HandshakeError, match="HTTP 429") as refused:
        ClientFrames("ws://h/ws", key=KEY).receive(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\n\r\n")
    assert refused.value.status == 429
    with pytest.raises(HandshakeError, match="Accept"):
        ClientFrames("ws://h/ws", key="AAAAAAAAAAAAAAAAAAAAAA==").receive(response())
    with pytest.raises(HandshakeError, match="extension"):
        ClientFrames("ws://h/ws", key=KEY).receive(response(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"))
    with pytest.raises(ValueError):
        ClientFrames("http://h/ws")


def test_frames_right_after_the_handshake_response_are_messages():
    core = ClientFrames("ws://h/ws", key=KEY)
    assert core.receive(response()[:10]) == []
    assert core.receive(response()[10:] + server_frame(OP_TEXT, b'{"a":1}')) == [b'{"a":1}']


messages = st.lists(st.binary(max_size=70_000), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(payloads=messages, data=st.data())
def test_messages_come_out_whole_wherever_the_bytes_are_cut(payloads, data):
    """Any split of the stream gives the same messages; fragmented ones are joined, pings answered in order."""
    stream, expected, pings = b"", [], []
    for i, payload in enumerate(payloads):
        if i % 3 == 1 and len(payload) > 2:  # fragmented, with a ping between the fragments
            cut = len(payload) // 2
            ping = bytes([i]) * 3
            stream += server_frame(OP_BINARY, payload[:cut], fin=False) + server_frame(OP_PING, ping)
            stream += server_frame(OP_CONTINUATION, payload[cut:])
            pings.append(ping)
        else:
            stream += server_frame(OP_TEXT if i % 2 else OP_BINARY, payload)
        expected.append(payload)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    core, got = opened(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        got += core.receive(stream[start:end])
    assert got == expected
    assert [unmask(f) for f in core.to_send] == [(OP_PONG, p) for p in pings]
    assert core.closed is None


def test_a_close_frame_ends_the_connection_after_the_messages_before_it():
    core = opened()
    got = core.receive(server_frame(OP_TEXT, b"last") + server_frame(OP_CLOSE, (1001).to_bytes(2, "big") + b"away")
                       + server_frame(OP_TEXT, b"after"))
    assert got == [b"last"]
    assert (core.closed.code, core.closed.reason) == (1001, "away")
    assert [unmask(f) for f in core.to_send] == [(OP_CLOSE, (1001).to_bytes(2, "big"))]  # echoed


@pytest.mark.parametrize("bad, what", [
    (bytes((0x81, 0x81)) + b"\x00\x00\x00\x00x", "masked"),
    (server_frame(OP_TEXT, b"x", rsv=0x40), "RSV"),
    (server_frame(0x3, b"x"), "opcode"),
    (server_frame(OP_PING, b"x" * 126), "control"),
    (server_frame(OP_PING, b"x", fin=False), "control"),
    (server_frame(OP_CONTINUATION, b"x"), "continuation"),
    (server_frame(OP_TEXT, b"a", fin=False) + server_frame(OP_TEXT, b"b"), "inside"),
    (server_frame(OP_CLOSE, b"\x03"), "one-byte"),
])
def test_protocol_errors_close_with_1002(bad, what):
    core = opened()
    assert core.receive(server_frame(OP_TEXT, b"ok") + bad) == [b"ok"]
    assert core.closed.code == 1002 and what in core.closed.reason, core.closed.reason
    assert unmask(core.to_send[-1])[0] == OP_CLOSE


def test_client_frames_are_masked_and_sized():
    for n in (0, 125, 126, 65535, 65536):
        opcode, payload = unmask(encode_frame(OP_TEXT, b"y" * n))
        assert (opcode, payload) == (OP_TEXT, b"y" * n)


# ---- the asyncio connection against a websockets server ------------------------------------------------


@pytest.mark.parametrize("high_water", [64, 4096])  # 64: the socket is paused and resumed many times
def test_the_connection_receives_batches_answers_pings_and_reports_the_close_code(high_water):
    async def handler(connection):
        await connection.send('{"n":1}')
        await connection.send(['{"n":', '2}'])  # fragmented
        pong = await connection.ping(b"hello")
        await asyncio.wait_for(pong, 5)  # our client answered
        for n in range(3, 2003):
            await connection.send(f'{{"n":{n}}}')
        await connection.close(1001, "going away")

    async def main():
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            got, stamps = [], []
            async with connect(f"ws://127.0.0.1:{port}/stream?streams=x", open_timeout=5,
                               high_water=high_water) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    for _ in range(10_000):
                        await asyncio.sleep(0)  # a slow reader: messages pile up to the high-water mark
                        batch_stamps, batch = await asyncio.wait_for(ws.batch(512), 10)
                        assert 1 <= len(batch) <= 512
                        got += batch
                        stamps += batch_stamps
            return got, stamps, closed.value

    got, stamps, closed = asyncio.run(main())
    assert got == [f'{{"n":{n}}}'.encode() for n in range(1, 2003)]
    assert stamps == sorted(stamps) and len(stamps) == len(got)
    assert (closed.code, closed.reason) == (1001, "going away")


def test_a_refused_upgrade_is_a_handshake_error_with_the_status():
    def process_request(connection, request):
        return Response(429, "Too Many Requests", Headers({"Content-Length": "0"}), b"")

    async def main():
        async with serve(lambda c: None, "127.0.0.1", 0, process_request=process_request) as server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(HandshakeError) as refused:
                async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5):
                    pass
            return refused.value

    assert asyncio.run(main()).status == 429


def test_a_server_that_never_answers_times_out():
    async def silent(reader, writer):
        await asyncio.sleep(5)

    async def main():
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(TimeoutError):
                async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=0.3):
                    pass

    asyncio.run(main())


def test_a_reset_connection_is_closed_1006_after_the_messages_it_delivered():
    async def handler(reader, writer):
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip().decode() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        writer.write(response(key) + server_frame(OP_TEXT, b"one") + server_frame(OP_TEXT, b"two"))
        await writer.drain()
        writer.transport.abort()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            got = []
            async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    for _ in range(10):
                        got += (await asyncio.wait_for(ws.batch(512), 5))[1]
            return got, closed.value

    got, closed = asyncio.run(main())
    assert got == [b"one", b"two"] and closed.code == 1006
