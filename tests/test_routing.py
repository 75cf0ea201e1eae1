"""USD-M streams are routed by path (Binance, 2026-03-06), and connections stay within Binance's limits.

The connection plan and limiters are sans-I/O; the venue tests run on 127.0.0.1 with bounded loops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from recorder import routing
from recorder.client import BookClient
from recorder.config import load_config
from recorder.markets import COINM, SPOT, USDM
from recorder.routing import ConnectLimiter, plan_connections, subscribe_interval_s, subscribe_requests
from recorder.runtime import Recorder
from replay.venue import VenueServer
from replay.venue.recorded import RecordedSource
from schemas import read_table
from tests.synthetic_day import record_day
from tests.test_roundtrip import compare_books, replay_and_record

CHANNELS = ["depth@100ms", "trade", "aggTrade", "bookTicker"]


# ---- the connection plan ------------------------------------------------------------------------------


def test_usdm_plan_puts_depth_and_book_ticker_on_public_and_agg_trade_on_market():
    plan = plan_connections(USDM, ["BTCUSDT", "ETHUSDT"], CHANNELS, 1024)
    routes = {c.route: c for c in plan}
    assert set(routes) == {"/public", "/market"}
    assert set(routes["/public"].streams) == {f"{s}@{c}" for s in ("btcusdt", "ethusdt")
                                              for c in ("depth@100ms", "trade", "bookTicker")}
    assert routes["/market"].streams == ("btcusdt@aggTrade", "ethusdt@aggTrade")
    assert routes["/public"].carries_depth and not routes["/market"].carries_depth
    assert routes["/market"].url("wss://fstream.binance.com") == \
        "wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"


@pytest.mark.parametrize("market", [SPOT, COINM])
def test_spot_and_coinm_plans_are_unrouted(market):
    plan = plan_connections(market, ["BTCUSDT"], CHANNELS, 1024)
    assert [(c.route, len(c.streams)) for c in plan] == [("", 4)]
    assert plan[0].url("wss://x:9443/").startswith("wss://x:9443/stream?streams=btcusdt@depth@100ms/")


def test_plan_shards_each_route_within_the_stream_limit_and_long_lists_subscribe():
    symbols = [f"S{i}USDT" for i in range(700)]
    plan = plan_connections(USDM, symbols, CHANNELS, 1024)
    public = [c for c in plan if c.route == "/public"]
    market = [c for c in plan if c.route == "/market"]
    assert [len(c.streams) for c in public] == [1023, 1023, 54]  # 341 symbols x 3 streams per connection
    assert [len(c.streams) for c in market] == [700]
    assert sum(len(c.symbols) for c in public) == 700
    # 700 names make a ~13 KB URL: connect to the bare route and SUBSCRIBE in batches instead
    conn = market[0]
    assert conn.url("wss://fstream.binance.com") == "wss://fstream.binance.com/market/stream"
    requests = [orjson.loads(r) for r in conn.subscriptions("wss://fstream.binance.com")]
    assert [len(r["params"]) for r in requests] == [200, 200, 200, 100]
    assert [p for r in requests for p in r["params"]] == list(conn.streams)
    assert len({r["id"] for r in requests}) == 4


def test_an_unknown_stream_kind_has_no_route_on_usdm():
    with pytest.raises(ValueError, match="no route known for stream 'x@fancyStream' on usdm"):
        plan_connections(USDM, ["BTCUSDT"], ["fancyStream"], 1024)


# ---- limits -------------------------------------------------------------------------------------------


def test_connect_limiter_keeps_every_five_minute_window_within_the_ip_limit():
    limiter = ConnectLimiter.for_market(SPOT)  # 300 per 5 minutes, 80 % of it for this process
    attempts = []
    now = 1000.0
    for _ in range(700):  # a reconnect storm: everything asks at once, then once a second
        attempts.append(now + limiter.reserve(now))
        now += 0.01
    assert attempts[:240] == pytest.approx([1000.0 + 0.01 * i for i in range(240)])
    assert attempts[240] == pytest.approx(1300.0)  # the 241st waits for the first to leave the window
    attempts.sort()
    for i, t in enumerate(attempts):
        in_window = sum(1 for u in attempts[i:] if u < t + 300.0)
        assert in_window <= 240


def test_subscribe_pacing_stays_under_the_incoming_message_limit():
    for market in (SPOT, USDM, COINM):
        per_second = 1 / subscribe_interval_s(market)
        assert per_second <= market.max_incoming_messages_per_second / 2  # the rest for pongs
    assert [len(orjson.loads(r)["params"]) for r in subscribe_requests([f"s{i}@trade" for i in range(5)], 2)] == \
        [2, 2, 1]


def test_subscribing_in_paced_batches_is_not_cut_by_the_venue(monkeypatch):
    """A stream list sent as SUBSCRIBE messages (one stream each here) at the paced rate: the venue, which
    closes a connection over 5 incoming messages per second as Binance does, keeps it, and books sync."""
    monkeypatch.setattr(routing, "MAX_URL_BYTES", 0)
    monkeypatch.setattr(routing, "SUBSCRIBE_BATCH", 1)
    symbols = ["BTCUSDT", "ETHUSDT"]

    async def main():
        async with VenueServer("spot", symbols, speed=5.0, seed=2) as venue:
            client = BookClient(SPOT, symbols, venue.rest_url, venue.ws_url, extra_channels=("trade", "aggTrade"),
                                limit=100)
            task = asyncio.create_task(client.run(duration=30))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(b.engine.synced for b in client.books.values()):
                await asyncio.sleep(0.1)
            synced = {s: b.engine.synced for s, b in client.books.items()}
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return synced, dict(venue.fault_counts), client.counters

    synced, faults, counters = asyncio.run(main())
    assert all(synced.values()), synced
    assert faults.get("rate_limit_close", 0) == 0 and counters["reconnects"] == 0


def test_venue_refuses_connection_attempts_over_the_ip_limit():
    async def main():
        async with VenueServer(dataclasses.replace(SPOT, max_connection_attempts=3), ["BTCUSDT"], speed=1.0) as venue:
            for _ in range(3):
                async with websockets.connect(f"{venue.ws_url}/ws/btcusdt@trade"):
                    pass
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(f"{venue.ws_url}/ws/btcusdt@trade")
            return refused.value.response.status_code

    assert asyncio.run(main()) == 429


# ---- the venue serves routes as Binance does ----------------------------------------------------------


def test_usdm_venue_delivers_market_streams_only_on_market_path():
    """aggTrade on the unrouted `/stream` (and on `/public`) is acknowledged and never delivered; on
    `/market` it is. Depth on `/stream` still arrives: an unrouted path carries the `/public` tier."""

    async def main():
        async with VenueServer("usdm", ["BTCUSDT"], speed=10.0, seed=3, events_per_second=80) as venue:
            streams = "btcusdt@aggTrade/btcusdt@depth@100ms"
            async with websockets.connect(f"{venue.ws_url}/stream?streams={streams}", close_timeout=1) as legacy, \
                    websockets.connect(f"{venue.ws_url}/public/stream?streams={streams}", close_timeout=1) as public, \
                    websockets.connect(f"{venue.ws_url}/market/stream?streams={streams}", close_timeout=1) as market:
                await legacy.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
                seen: dict[str, list[str]] = {"legacy": [], "public": [], "market": []}
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and (seen["market"].count("btcusdt@aggTrade") < 3
                                                       or len(seen["legacy"]) < 30):
                    for name, ws in (("legacy", legacy), ("public", public), ("market", market)):
                        try:
                            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 0.05))
                        except TimeoutError:
                            continue
                        seen[name].append(msg.get("stream") or orjson.dumps(msg).decode())
                return seen

    seen = asyncio.run(main())
    assert '{"result":["btcusdt@aggTrade","btcusdt@depth@100ms"],"id":1}' in seen["legacy"]  # acknowledged
    assert "btcusdt@aggTrade" not in seen["legacy"] and "btcusdt@aggTrade" not in seen["public"]
    assert "btcusdt@depth@100ms" in seen["legacy"] and "btcusdt@depth@100ms" in seen["public"]
    assert seen["market"].count("btcusdt@aggTrade") >= 3 and "btcusdt@depth@100ms" not in seen["market"]


@pytest.mark.parametrize("stream", ["btcusdt@depth5@100ms", "btcusdt@depth20", "btcusdt@markPrice"])
def test_venue_refuses_streams_it_cannot_serve(stream):
    async def main():
        async with VenueServer("usdm", ["BTCUSDT"], speed=1.0) as venue:
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(f"{venue.ws_url}/public/ws/{stream}")
            async with websockets.connect(f"{venue.ws_url}/public/ws") as ws:
                await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": [stream], "id": 7}))
                answer = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            return refused.value.response.status_code, answer

    status, answer = asyncio.run(main())
    assert status == 400
    assert answer["id"] == 7 and answer["error"]["code"] == 2 and stream in answer["error"]["msg"]


@pytest.mark.parametrize("subscribe", [False, True], ids=["url", "subscribe"])
def test_usdm_recorder_records_agg_trades_on_the_market_route(tmp_path, monkeypatch, subscribe):
    if subscribe:  # streams sent as paced SUBSCRIBE messages, as for a whole-market list
        monkeypatch.setattr(routing, "MAX_URL_BYTES", 0)
    out = tmp_path / "D"
    assert record_day(out, "usdm", ["BTCUSDT"], 3.0, speed=5.0, seed=4, events_per_second=80) == 0
    agg = read_table(out, "binance-usdm", "agg_trades", symbols=["BTCUSDT"])
    depth = read_table(out, "binance-usdm", "depth", symbols=["BTCUSDT"])
    assert agg.num_rows > 0 and depth.num_rows > 0


# ---- a recorded @depth@0ms day served to a default (@depth@100ms) recorder ------------------------------


def test_replayed_0ms_day_serves_a_default_recorder_with_batched_100ms_diffs(tmp_path):
    data, out = tmp_path / "D", tmp_path / "D2"
    config = tmp_path / "zero.yaml"
    config.write_text("channels:\n  depth: depth@0ms\n")
    assert record_day(data, "usdm", ["BTCUSDT"], 4.0, speed=5.0, seed=7, config=config) == 0

    async def refused_0ms_on_a_100ms_venue() -> int:  # the other way round cannot be served: refused
        source = RecordedSource(out, "usdm", only_date(out))
        async with VenueServer(source.market, source=source, speed=1.0) as venue:
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(f"{venue.ws_url}/public/stream?streams=btcusdt@depth@0ms")
            return refused.value.response.status_code

    source, _ = replay_and_record(data, "usdm", out, speed=2.0)  # the recorder's default: @depth@100ms
    assert source.depth_suffix == "depth@0ms"
    events = read_table(out, "binance-usdm", "events")
    assert pc.sum(pc.equal(events.column("kind"), "gap")).as_py() in (None, 0)
    # each served 100 ms diff ends on a 0 ms diff of D: the rebuilt books agree at every such update id
    assert compare_books(data, out, "usdm", "BTCUSDT") > 10
    assert asyncio.run(refused_0ms_on_a_100ms_venue()) == 400


def only_date(root: Path) -> str:
    return next((root / "binance-usdm" / "depth").glob("date=*")).name.split("=", 1)[1]


def test_usdm_rollover_of_both_routes_keeps_the_book_and_each_agg_trade_once(tmp_path):
    """Both connections (/public with depth, /market with aggTrade) roll over before their lifetime: the book
    never resyncs, and no aggTrade is lost or recorded twice at a handover."""
    out = tmp_path / "D"

    async def main():
        async with VenueServer("usdm", ["BTCUSDT"], speed=5.0, seed=5, events_per_second=80) as venue:
            config = load_config(None, {
                "market": "usdm", "symbols": ["BTCUSDT"], "out": out, "rest_url": venue.rest_url,
                "ws_url": venue.ws_url, "duration": 5.0, "ignore_window": True})
            config = dataclasses.replace(config, connection=dataclasses.replace(config.connection, lifetime_s=1.2))
            return await Recorder(config).run()

    assert asyncio.run(main()) == 0
    events = read_table(out, "binance-usdm", "events").to_pylist()
    kinds = [e["kind"] for e in events]
    assert kinds.count("rollover") >= 4 and "gap" not in kinds and kinds.count("synced") == 1
    ids = read_table(out, "binance-usdm", "agg_trades", symbols=["BTCUSDT"]).sort_by("seq").column(
        "agg_trade_id").to_pylist()
    assert len(ids) > 20 and ids == list(range(ids[0], ids[0] + len(ids)))
