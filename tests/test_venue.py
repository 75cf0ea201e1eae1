"""Tests of the synthetic Binance venue (replay.venue): WS, REST, faults, truth and the CLI.

Everything runs on 127.0.0.1 with bounded loops (counts and wall-time deadlines).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from recorder.markets import COINM, SPOT, USDM
from recorder.numbers import parse_units
from replay.venue import FaultSpec, SyntheticSource, VenueServer, parse_speed
from replay.venue.faults import parse_duration

ROOT = Path(__file__).resolve().parents[1]
START = 1_700_000_000_000

SYMBOL = {"spot": "BTCUSDT", "usdm": "BTCUSDT", "coinm": "BTCUSD_PERP"}

DEPTH_KEYS = {
    "spot": ["e", "E", "s", "U", "u", "b", "a"],
    "usdm": ["e", "E", "T", "s", "U", "u", "pu", "b", "a"],
    "coinm": ["e", "E", "T", "s", "ps", "U", "u", "pu", "b", "a"],
}
TICKER_KEYS = {
    "spot": ["u", "s", "b", "B", "a", "A"],
    "usdm": ["e", "u", "s", "b", "B", "a", "A", "T", "E"],
    "coinm": ["e", "u", "s", "ps", "b", "B", "a", "A", "T", "E"],
}
TRADE_KEYS = {
    "spot": ["e", "E", "s", "t", "p", "q", "T", "m", "M"],
    "usdm": ["e", "E", "T", "s", "t", "p", "q", "X", "m"],
    "coinm": ["e", "E", "T", "s", "t", "p", "q", "X", "m"],
}
AGG_KEYS = {
    "spot": ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"],
    "usdm": ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m"],
    "coinm": ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m"],
}
SNAPSHOT_KEYS = {
    "spot": ["lastUpdateId", "bids", "asks"],
    "usdm": ["lastUpdateId", "E", "T", "bids", "asks"],
    "coinm": ["lastUpdateId", "symbol", "pair", "E", "T", "bids", "asks"],
}


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def recv_json(ws, timeout: float = 3.0):
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_answer(ws, req_id, timeout: float = 3.0):
    """Skip market frames until the answer with this id arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await recv_json(ws, deadline - time.monotonic())
        is_answer = isinstance(msg, dict) and "id" in msg and ("result" in msg or "error" in msg)
        if is_answer and msg["id"] == req_id:
            return msg
    raise AssertionError(f"no answer for id {req_id}")


async def collect(ws, n: int, timeout: float = 6.0, parse: bool = True) -> list:
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        out.append(orjson.loads(raw) if parse else raw)
    return out


# ---------------------------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------------------------


def test_parse_speed():
    assert parse_speed("10x") == 10.0
    assert parse_speed("0.25x") == 0.25
    assert parse_speed("3") == 3.0
    assert parse_speed("max") is None
    for bad in ("fast", "0x", "-1x", "x", "nanx", ""):
        with pytest.raises(ValueError):
            parse_speed(bad)


def test_fault_spec_grammar():
    spec = FaultSpec.parse(
        "drop=0.02,duplicate=0.01,reorder=0.01,delay=0.01:300ms,disconnect=20s,stale_snapshot=0.3,"
        "http429=0.1,http418=0.05,http5xx=0.1,slow_rest=0.2:3s,malformed=0.01,lifetime=10s,seed=7"
    )
    assert spec.drop == 0.02 and spec.delay == 0.01 and spec.delay_s == pytest.approx(0.3)
    assert (
        spec.slow_rest_s == 3.0 and spec.disconnect_s == 20.0 and spec.lifetime_s == 10.0 and spec.seed == 7
    )
    assert FaultSpec.parse(str(spec)) == spec
    assert not FaultSpec.parse("").active and not FaultSpec.parse("none").active
    assert parse_duration("2m") == 120.0 and parse_duration("500ms") == 0.5
    for bad in (
        "bogus=0.1",
        "drop=abc",
        "drop=1.5",
        "delay=0.1",
        "delay=0.1:fast",
        "disconnect=0s",
        "drop",
        "seed=x",
        "drop=0.1,drop=0.2",
    ):
        with pytest.raises(ValueError) as e:
            FaultSpec.parse(bad)
        assert "\n" not in str(e.value)


def test_synthetic_is_deterministic_and_bounded():
    a = SyntheticSource(USDM, ["BTCUSDT", "1000PEPEUSDT"], seed=5, start_ms=START)
    b = SyntheticSource(USDM, ["BTCUSDT", "1000PEPEUSDT"], seed=5, start_ms=START)
    ea, eb = a.advance(START + 20_000), b.advance(START + 20_000)
    assert len(ea) > 500 and ea == eb
    ts = [e.ts for e in ea]
    assert ts == sorted(ts)
    for sym in a.symbols():
        book = a.book(sym)
        assert 0 < len(book.bids) < 1000 and 0 < len(book.asks) < 1000
        assert book.bids[0][0] < book.asks[0][0]
    spot = SyntheticSource(SPOT, ["PEPEUSDT"], seed=1, start_ms=START)
    spot.advance(START + 5_000)
    book = spot.book("PEPEUSDT")
    assert max(q for _, q in book.bids) >= 10_000_000_000 * 10**8 // 10  # billions of PEPE per level


# ---------------------------------------------------------------------------------------------------------
# WebSocket
# ---------------------------------------------------------------------------------------------------------


def test_subscribe_ack_list_unsubscribe_and_errors():
    async def main():
        async with (
            VenueServer("spot", ["BTCUSDT", "ETHUSDT"], speed=5.0, seed=2) as v,
            websockets.connect(v.ws_url + "/ws") as ws,
        ):
            await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms","ethusdt@trade"],"id":1}')
            assert await recv_answer(ws, 1) == {"result": None, "id": 1}
            await asyncio.sleep(0.25)  # rate limit: 5 messages / s on spot
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":2}')
            assert await recv_answer(ws, 2) == {
                "result": ["btcusdt@depth@100ms", "ethusdt@trade"],
                "id": 2,
            }
            await asyncio.sleep(0.25)
            # a raw frame
            frames = await collect(ws, 30, timeout=3)
            assert any(f.get("e") == "depthUpdate" and f["s"] == "BTCUSDT" for f in frames)
            assert any(f.get("e") == "trade" and f["s"] == "ETHUSDT" for f in frames)
            assert all("stream" not in f for f in frames)
            await ws.send('{"method":"UNSUBSCRIBE","params":["ethusdt@trade"],"id":3}')
            assert await recv_answer(ws, 3) == {"result": None, "id": 3}
            await asyncio.sleep(0.25)
            await ws.send('{"method":"SUBSCRIBER","params":[],"id":4}')
            err = await recv_answer(ws, 4)
            assert err["error"]["code"] == 2 and "unknown variant" in err["error"]["msg"]
            await asyncio.sleep(0.25)
            await ws.send("{not json")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                msg = await recv_json(ws)
                if "error" in msg:
                    assert msg["error"]["code"] == 3
                    break
            else:
                raise AssertionError("no invalid JSON answer")
            await asyncio.sleep(0.25)
            # unknown symbol: accepted silently, as Binance does
            await ws.send('{"method":"SUBSCRIBE","params":["nosuchusdt@depth"],"id":5}')
            assert await recv_answer(ws, 5) == {"result": None, "id": 5}
            await asyncio.sleep(0.25)
            await ws.send('{"method":"SET_PROPERTY","params":["combined",true],"id":6}')
            assert await recv_answer(ws, 6) == {"result": None, "id": 6}
            frames = await collect(ws, 3)
            assert frames and all(f["stream"] == "btcusdt@depth@100ms" for f in frames if "stream" in f)
            await asyncio.sleep(0.25)
            await ws.send('{"method":"GET_PROPERTY","params":["combined"],"id":7}')
            assert await recv_answer(ws, 7) == {"result": True, "id": 7}
            await asyncio.sleep(0.25)
            too_many = [f"s{i}@trade" for i in range(SPOT.max_streams_per_connection + 1)]
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": too_many, "id": 8}).decode())
            assert (await recv_answer(ws, 8))["error"]["code"] == 2

    run(main())


def test_incoming_message_rate_limit_disconnects():
    async def main():
        async with VenueServer("spot", ["BTCUSDT"], speed=1.0) as v:
            async with websockets.connect(v.ws_url + "/ws") as ws:
                with pytest.raises(ConnectionClosed) as e:
                    for i in range(SPOT.max_incoming_messages_per_second + 5):
                        await ws.send(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
                    for _ in range(50):
                        await asyncio.wait_for(ws.recv(), 3)
                assert e.value.rcvd is not None and e.value.rcvd.code == 1008
            assert v.fault_counts["rate_limit_close"] == 1

    run(main())


@pytest.mark.parametrize("market", ["spot", "usdm", "coinm"])
def test_frame_shapes_per_market(market):
    sym = SYMBOL[market].lower()

    async def main():
        async with VenueServer(market, [SYMBOL[market]], speed=10.0, seed=3) as v:
            streams = [f"{sym}@depth@100ms", f"{sym}@trade", f"{sym}@aggTrade", f"{sym}@bookTicker"]
            seen: dict[str, dict] = {}
            by_route: dict[str, list[str]] = {}  # USD-M: depth, trade, bookTicker on /public, aggTrade on /market
            for stream in streams:
                by_route.setdefault(v.market.route_of(stream), []).append(stream)
            for route, group in by_route.items():
                async with websockets.connect(f"{v.ws_url}{route}/stream?streams=" + "/".join(group)) as ws:
                    deadline = time.monotonic() + 8
                    while not set(group) <= set(seen) and time.monotonic() < deadline:
                        msg = await recv_json(ws)
                        assert list(msg) == ["stream", "data"]
                        seen.setdefault(msg["stream"], msg["data"])
            assert set(seen) == set(streams)
            d = seen[f"{sym}@depth@100ms"]
            assert list(d) == DEPTH_KEYS[market] and d["e"] == "depthUpdate"
            assert list(seen[f"{sym}@bookTicker"]) == TICKER_KEYS[market]
            assert list(seen[f"{sym}@trade"]) == TRADE_KEYS[market]
            assert list(seen[f"{sym}@aggTrade"]) == AGG_KEYS[market]
            spec = v.specs[SYMBOL[market]]
            for p, q in d["b"] + d["a"]:
                assert isinstance(p, str) and isinstance(q, str)
                assert (
                    len(p.split(".")[1]) == spec.price_decimals
                    and len(q.split(".")[1] if "." in q else "") == spec.qty_decimals
                )
            if market == "spot":
                assert all(len(p.split(".")[1]) == 8 for p, _ in d["b"])
            if market == "coinm":
                assert d["ps"] == "BTCUSD"
            # raw single stream
            async with websockets.connect(v.ws_url + f"/ws/{sym}@bookTicker") as ws:
                msg = await recv_json(ws, 5)
                assert list(msg) == TICKER_KEYS[market]

    run(main())


@pytest.mark.parametrize(
    "market,suffix",
    [
        ("spot", "depth@100ms"),
        ("spot", "depth"),
        ("usdm", "depth@100ms"),
        ("usdm", "depth@0ms"),
        ("coinm", "depth"),
    ],
)
def test_diff_sequencing(market, suffix):
    sym = SYMBOL[market]

    async def main():
        async with (
            VenueServer(market, [sym], speed=20.0, seed=4) as v,
            websockets.connect(v.ws_url + f"/ws/{sym.lower()}@{suffix}") as ws,
        ):
            diffs = await collect(ws, 25, timeout=6)
        assert len(diffs) >= 10
        for prev, cur in itertools.pairwise(diffs):
            assert cur["U"] <= cur["u"]
            if market == "spot":
                assert cur["U"] == prev["u"] + 1
            else:
                assert cur["pu"] == prev["u"]
        if market != "spot":
            assert any(c["U"] > c["pu"] + 1 for c in diffs)  # ids jump on futures
        interval = {"depth@100ms": 100, "depth": 1000 if market == "spot" else 250, "depth@0ms": 0}[suffix]
        if interval:
            assert all(d["E"] % interval == 0 for d in diffs)

    run(main())


def test_ping_timeout_and_lifetime():
    async def main():
        async with VenueServer(
            "spot", ["BTCUSDT"], speed=1.0, ping_interval=0.3, ping_timeout=0.6, lifetime=1.5
        ) as v:
            # A raw client that never answers pings: sees a ping frame, then the server gives up on it.
            reader, writer = await asyncio.open_connection("127.0.0.1", v.port)
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"HTTP/1.1 101")
            opcodes = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < 4:
                try:
                    hdr = await asyncio.wait_for(reader.readexactly(2), 4)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                n = hdr[1] & 0x7F
                await reader.readexactly(n)
                opcodes.append(hdr[0] & 0x0F)
                if hdr[0] & 0x0F == 8:
                    break
            elapsed = time.monotonic() - t0
            writer.close()
            assert opcodes[0] == 9  # ping
            assert 8 in opcodes and elapsed < 1.4  # closed for the missing pong, before the lifetime
            # A well-behaved client (websockets answers pings) lives until the lifetime and gets a 1000 close.
            async with websockets.connect(v.ws_url + "/ws/btcusdt@depth@100ms", ping_interval=None) as ws:
                t0 = time.monotonic()
                with pytest.raises(ConnectionClosed) as e:
                    for _ in range(1000):
                        await asyncio.wait_for(ws.recv(), 5)
                assert e.value.rcvd.code == 1000
                assert 1.2 < time.monotonic() - t0 < 3.5
            assert v.fault_counts["lifetime"] >= 1

    run(main())


# ---------------------------------------------------------------------------------------------------------
# REST
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("market", ["spot", "usdm", "coinm"])
def test_rest_depth_shapes_and_errors(market):
    sym = SYMBOL[market]
    with VenueServer(market, [sym], speed=5.0).run_in_thread() as v, httpx.Client(base_url=v.rest_url) as c:
        m = v.market
        r = c.get(m.depth_path, params={"symbol": sym, "limit": 1000})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert list(body) == SNAPSHOT_KEYS[market]
        assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) == m.depth_weight(1000)
        assert 100 < len(body["bids"]) < 1000  # the whole book
        prices = [parse_units(p) for p, _ in body["bids"]]
        assert prices == sorted(prices, reverse=True)
        assert parse_units(body["bids"][0][0]) < parse_units(body["asks"][0][0])
        if market == "coinm":
            assert body["symbol"] == sym and body["pair"] == "BTCUSD"
        r = c.get(m.depth_path, params={"symbol": sym, "limit": 5})
        assert r.status_code == 200 and len(r.json()["bids"]) == 5
        r = c.get(m.depth_path, params={"symbol": sym, "limit": "abc"})
        assert r.status_code == 400 and r.json()["code"] == -1100
        r = c.get(m.depth_path, params={"symbol": sym, "limit": 7 if market != "spot" else 5001})
        assert r.status_code == 400 and r.json()["code"] == -1130
        r = c.get(m.depth_path, params={"symbol": "NOPE"})
        assert r.status_code == 400 and r.json() == {"code": -1121, "msg": "Invalid symbol."}
        r = c.get(m.depth_path)
        assert r.status_code == 400 and r.json()["code"] == -1102
        assert c.get("/api/v9/nothing").status_code == 404
        assert c.get(m.ping_path).json() == {}
        assert isinstance(c.get(m.time_path).json()["serverTime"], int)
        info = c.get(m.exchange_info_path).json()
        entry = info["symbols"][0]
        filters = {f["filterType"]: f for f in entry["filters"]}
        spec = v.specs[sym]
        assert parse_units(filters["PRICE_FILTER"]["tickSize"]) == spec.tick
        assert parse_units(filters["LOT_SIZE"]["stepSize"]) == spec.step
        assert "X-MBX-USED-WEIGHT-1M" in c.get(m.exchange_info_path).headers


def test_rest_filters_order_differs_between_symbols():
    with VenueServer("spot", ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]).run_in_thread() as v:
        info = httpx.get(v.rest_url + "/api/v3/exchangeInfo").json()
        orders = {tuple(f["filterType"] for f in s["filters"]) for s in info["symbols"]}
        assert len(orders) > 1
        one = httpx.get(v.rest_url + "/api/v3/exchangeInfo", params={"symbol": "ETHUSDT"}).json()
        assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]


def test_weight_limit_429_then_418():
    with (
        VenueServer("spot", ["BTCUSDT"], weight_limit=20, ban_after=2).run_in_thread() as v,
        httpx.Client(base_url=v.rest_url) as c,
    ):
        used = []
        for _ in range(4):
            r = c.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 100})
            assert r.status_code == 200
            used.append(int(r.headers["X-MBX-USED-WEIGHT-1M"]))
        assert used == [5, 10, 15, 20]
        r = c.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 100})
        assert r.status_code == 429 and r.json()["code"] == -1003
        assert int(r.headers["Retry-After"]) >= 1 and "X-MBX-USED-WEIGHT-1M" in r.headers
        r = c.get("/api/v3/ping")  # still asked to back off
        assert r.status_code == 429
        r = c.get("/api/v3/ping")
        assert r.status_code == 418 and int(r.headers["Retry-After"]) >= 60
        assert c.get("/api/v3/time").status_code == 418  # banned
        stats = c.get("/_venue/stats").json()
        assert stats["faults"]["weight_429"] == 1 and stats["faults"]["ip_ban"] == 1


# ---------------------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------------------


def _diff_stream_faults(spec: str, n: int = 60, market: str = "spot"):
    sym = SYMBOL[market]

    async def main():
        async with VenueServer(market, [sym], speed=20.0, seed=9, faults=spec) as v:
            async with websockets.connect(v.ws_url + f"/ws/{sym.lower()}@depth@100ms") as ws:
                frames = await collect(ws, n, timeout=8, parse=False)
            return frames, dict(v.fault_counts)

    return run(main())


def _us(frames):
    out = []
    for f in frames:
        try:
            msg = orjson.loads(f)
        except orjson.JSONDecodeError:
            continue
        if msg.get("e") == "depthUpdate":
            out.append(msg)
    return out


def test_fault_drop():
    frames, counts = _diff_stream_faults("drop=0.3,seed=1")
    diffs = _us(frames)
    assert counts["drop"] > 0
    assert any(b["U"] != a["u"] + 1 for a, b in itertools.pairwise(diffs))


def test_fault_duplicate():
    frames, counts = _diff_stream_faults("duplicate=0.3,seed=1")
    us = [d["u"] for d in _us(frames)]
    assert counts["duplicate"] > 0 and len(us) > len(set(us))


def test_fault_reorder_and_delay():
    frames, counts = _diff_stream_faults("reorder=0.2,seed=2", market="usdm")
    us = [d["u"] for d in _us(frames)]
    assert counts["reorder"] > 0 and us != sorted(us)
    frames, counts = _diff_stream_faults("delay=0.2:150ms,seed=3")
    us = [d["u"] for d in _us(frames)]
    assert counts["delay"] > 0 and us != sorted(us)


def test_fault_malformed():
    frames, counts = _diff_stream_faults("malformed=0.3,seed=4", n=40)
    bad = 0
    for f in frames:
        try:
            msg = orjson.loads(f)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if msg.get("e") != "depthUpdate":
            bad += 1
    # Faults decided after the client's last read are counted by the venue but never seen by the client.
    assert 0 < bad <= counts["malformed"]


def test_fault_disconnect_and_lifetime_spec():
    async def main():
        async with VenueServer("spot", ["BTCUSDT"], speed=5.0, faults="disconnect=0.7s") as v:
            async with websockets.connect(v.ws_url + "/ws/btcusdt@depth@100ms") as ws:
                t0 = time.monotonic()
                with pytest.raises(ConnectionClosed) as e:
                    for _ in range(1000):
                        await asyncio.wait_for(ws.recv(), 5)
                assert e.value.rcvd is None  # abrupt: no close frame (1006)
                assert 0.5 < time.monotonic() - t0 < 3
            assert v.fault_counts["disconnect"] == 1
        async with VenueServer("usdm", ["BTCUSDT"], speed=5.0, faults="lifetime=700ms") as v:
            async with websockets.connect(v.ws_url + "/ws/btcusdt@depth@100ms") as ws:
                with pytest.raises(ConnectionClosed) as e:
                    for _ in range(1000):
                        await asyncio.wait_for(ws.recv(), 5)
                assert e.value.rcvd.code == 1000
            assert v.fault_counts["lifetime"] == 1

    run(main())


def test_fault_rest_errors_and_slow():
    for spec, status in (("http429=1", 429), ("http418=1", 418), ("http5xx=1", 503)):
        with VenueServer("usdm", ["BTCUSDT"], faults=spec).run_in_thread() as v:
            r = httpx.get(v.rest_url + "/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 100})
            assert r.status_code == status
            if status in (429, 418):
                assert int(r.headers["Retry-After"]) >= 1 and r.json()["code"] == -1003
            stats = httpx.get(v.rest_url + "/_venue/stats").json()
            assert stats["faults"][spec.split("=")[0]] == 1
    with VenueServer("spot", ["BTCUSDT"], faults="slow_rest=1:400ms").run_in_thread() as v:
        t0 = time.monotonic()
        r = httpx.get(v.rest_url + "/api/v3/depth", params={"symbol": "BTCUSDT"})
        assert r.status_code == 200 and time.monotonic() - t0 >= 0.4
        assert v.fault_counts["slow_rest"] == 1


def test_fault_stale_snapshot():
    async def main():
        async with VenueServer("spot", ["BTCUSDT"], speed=10.0, faults="stale_snapshot=1") as v:
            await asyncio.sleep(3.5)  # let history build up
            async with websockets.connect(v.ws_url + "/ws/btcusdt@depth@100ms") as ws:
                first = await recv_json(ws, 3)
                await asyncio.sleep(0.3)
                async with httpx.AsyncClient() as c:
                    snap = (
                        await c.get(v.rest_url + "/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 1000})
                    ).json()
            assert snap["lastUpdateId"] < first["U"] - 1  # older than anything the client buffered
            uid, bids, asks = v.true_book_at("BTCUSDT", snap["lastUpdateId"])
            assert uid == snap["lastUpdateId"] and bids == snap["bids"] and asks == snap["asks"]
            assert v.fault_counts["stale_snapshot"] == 1

    run(main())


# ---------------------------------------------------------------------------------------------------------
# truth: applying the diffs to the venue's own snapshot reproduces the true book
# ---------------------------------------------------------------------------------------------------------


def _apply(book: dict[str, dict[int, str]], diff: dict) -> None:
    for key, side in (("b", "bids"), ("a", "asks")):
        for p, q in diff[key]:
            if parse_units(q) == 0:
                book[side].pop(parse_units(p), None)
            else:
                book[side][parse_units(p)] = (p, q)


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_diffs_applied_to_snapshot_reproduce_true_book(market):
    sym = SYMBOL[market]
    m = {"spot": SPOT, "usdm": USDM, "coinm": COINM}[market]

    async def main():
        async with (
            VenueServer(market, [sym], speed=10.0, seed=11) as v,
            websockets.connect(v.ws_url + f"/ws/{sym.lower()}@depth@100ms") as ws,
            httpx.AsyncClient() as c,
        ):
            buffered = await collect(ws, 3, timeout=3)
            snap = (await c.get(v.rest_url + m.depth_path, params={"symbol": sym, "limit": 1000})).json()
            buffered += await collect(ws, 30, timeout=4)
            last = snap["lastUpdateId"]
            book = {
                "bids": {parse_units(p): (p, q) for p, q in snap["bids"]},
                "asks": {parse_units(p): (p, q) for p, q in snap["asks"]},
            }
            applied = 0
            prev_u = None
            for d in buffered:
                if d["u"] <= last:
                    continue
                if prev_u is None:
                    if market == "spot":
                        assert d["U"] <= last + 1 <= d["u"]
                    else:  # the snapshot falls inside this diff, or is exactly the previous diff's u
                        assert d["U"] <= last <= d["u"] or d["pu"] == last
                elif market == "spot":
                    assert d["U"] == prev_u + 1
                else:
                    assert d["pu"] == prev_u
                _apply(book, d)
                prev_u = d["u"]
                applied += 1
            assert applied > 5
            truth = (
                await c.get(v.rest_url + "/_venue/book", params={"symbol": sym, "update_id": prev_u})
            ).json()
            assert truth["lastUpdateId"] <= prev_u
            bids = [list(book["bids"][p]) for p in sorted(book["bids"], reverse=True)]
            asks = [list(book["asks"][p]) for p in sorted(book["asks"])]
            assert bids == truth["bids"] and asks == truth["asks"]
            _, tb, ta = v.true_book_at(sym, prev_u)
            assert (tb, ta) == (bids, asks)
            now_uid, _, _ = v.true_book(sym)
            assert now_uid >= prev_u

    run(main())


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def _cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "replay.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--market", "foo"], "unknown market"),
        (["--symbols", "NOPEUSDT"], "BTCUSDT"),
        (["--speed", "fast"], "bad speed"),
        (["--faults", "drop=1.5"], "drop"),
        (["--faults", "bogus=1"], "unknown fault"),
    ],
)
def test_cli_bad_input(args, needle):
    p = _cli("serve", "--synthetic", "--port", "0", *args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr


def test_cli_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = _cli("serve", "--synthetic", "--port", str(port))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "in use" in p.stderr


def test_cli_serve_and_sigterm():
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "replay.cli",
            "serve",
            "--synthetic",
            "--market",
            "usdm",
            "--symbols",
            "BTCUSDT,1000PEPEUSDT",
            "--port",
            "0",
            "--speed",
            "10x",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = p.stdout.readline()
        assert "rest=http://127.0.0.1:" in line and "ws=ws://127.0.0.1:" in line
        rest = line.split("rest=")[1].split()[0]
        assert httpx.get(rest + "/fapi/v1/ping", timeout=5).json() == {}
        r = httpx.get(
            rest + "/fapi/v1/depth", params={"symbol": "1000PEPEUSDT", "limit": 5}, timeout=5
        ).json()
        assert r["bids"][0][0].startswith("0.01") and len(r["bids"][0][0]) == len("0.0123400")
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(10)
    assert rc == 0, p.stderr.read()


if os.environ.get("VENUE_TEST_DEBUG"):  # pragma: no cover
    import logging

    logging.basicConfig(level=logging.DEBUG)
