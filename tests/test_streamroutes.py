"""`StreamRoutes` (the compiled lookup of stream names that routes a batch) answers what `stream_route`
answers for the name in each frame's envelope (the reference), however full its table is."""

from __future__ import annotations

import random

import numpy as np
import pytest

from recorder.streamroutes import FRAME_PATH, StreamRoutes, stream_route

CHANNELS = ["trade", "aggTrade", "bookTicker", "depth@100ms", "depth", "kline_1m", "markPrice@1s", "trad", ""]


def expected(routes: StreamRoutes, frame: bytes):
    """The reference: the envelope's name through `stream_route` (None: the frame path)."""
    prefix = b'{"stream":"'
    if not frame.startswith(prefix) or b'"' not in frame[len(prefix):]:
        return None
    return stream_route(frame[len(prefix):frame.index(b'"', len(prefix))])


def routed(routes: StreamRoutes, frames: list[bytes]) -> list:
    lengths = np.array([len(f) for f in frames], np.int64)
    ends = np.cumsum(lengths)
    out = routes.route(np.frombuffer(b"".join(frames), np.uint8), ends - lengths, ends)
    return [None if r == FRAME_PATH else routes.routes[r] for r in out.tolist()]


def random_frames(rng: random.Random, n: int) -> list[bytes]:
    symbols = ["btcusdt", "ethusdt", "btcusd_perp", "1000shibusdt", "BTCUSDT", "btc usdt", "", "x" * 40]
    frames = []
    for _ in range(n):
        name = f"{rng.choice(symbols)}@{rng.choice(CHANNELS)}" if rng.random() < 0.9 else rng.choice(symbols)
        frame = b'{"stream":"' + name.encode() + b'","data":{"e":"trade","s":"X"}}'
        shape = rng.random()
        if shape < 0.05:
            frame = frame[:rng.randint(0, len(frame))]  # truncated anywhere, even inside the prefix
        elif shape < 0.08:
            frame = b'{"e":"trade","s":"BTCUSDT"}'  # a raw stream: no envelope
        elif shape < 0.1:
            frame = b' ' + frame
        frames.append(frame)
    return frames


@pytest.mark.parametrize("max_names", [1 << 16, 3, 1])
def test_routes_are_those_of_the_reference_in_every_batch(max_names):
    rng = random.Random(max_names)
    routes = StreamRoutes(max_names)
    for _ in range(60):
        frames = random_frames(rng, rng.randint(1, 300))
        assert routed(routes, frames) == [expected(routes, f) for f in frames]
    assert routes.routes, "no frame was routed at all"


def test_a_name_new_twice_in_one_batch_gets_one_route():
    routes = StreamRoutes()
    frames = [b'{"stream":"btcusdt@trade","data":{}}'] * 3 + [b'{"stream":"btcusdt@kline_1m","data":{}}'] * 2
    assert routed(routes, frames) == [("trades", "BTCUSDT")] * 3 + [None] * 2
    assert routes.routes == [("trades", "BTCUSDT")]
    assert routed(routes, frames[::-1]) == [None] * 2 + [("trades", "BTCUSDT")] * 3  # now from the table


def test_a_full_table_keeps_routing_new_names_by_the_reference():
    routes = StreamRoutes(max_names=2)
    names = [f"s{i}usdt@bookTicker".encode() for i in range(10)]
    frames = [b'{"stream":"' + name + b'","data":{}}' for name in names]
    for _ in range(2):
        assert routed(routes, frames) == [("book_ticker", f"S{i}USDT") for i in range(10)]
    assert len(routes.routes) == 10
