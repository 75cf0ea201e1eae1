"""A Binance-protocol client syncs from the synthetic venue, with and without each fault.

The client is `recorder.client.BookClient` (the sans-I/O engine behind websockets + httpx). While it runs,
every valid book it exposes is compared with the venue's true book at the same update id.
"""

from __future__ import annotations

import asyncio

import pytest

from recorder.client import BookClient
from recorder.markets import get_market
from recorder.numbers import parse_units
from recorder.protocol import DepthUpdate
from replay.venue.server import VenueServer

FAULTS = [
    "",
    "drop=0.05",
    "duplicate=0.1",
    "reorder=0.05",
    "delay=0.05:300ms",
    "disconnect=1.5s",
    "stale_snapshot=0.6,disconnect=1s",
    "http429=0.6,disconnect=0.8s",
    "http418=0.5:1s,disconnect=0.8s",
    "http5xx=0.6,disconnect=0.8s",
    "slow_rest=0.6:1s,disconnect=0.8s",
    "malformed=0.05",
    "lifetime=1.5s",
]


def as_units(levels):
    return {parse_units(p): parse_units(q) for p, q in levels}


async def run_client(market: str, symbols: list[str], faults: str, seconds: float):
    async with VenueServer(market, symbols, speed=5.0, faults=faults or None, seed=3,
                           ping_interval=1.0, ping_timeout=5.0) as venue:
        checked = {"books": 0, "mismatches": 0}
        client: BookClient

        def check(recv_ts, message):
            if not isinstance(message, DepthUpdate):
                return
            local = client.books.get(message.symbol)
            book = local.valid_book() if local else None
            if book is None:
                return
            _, bids, asks = venue.true_book_at(message.symbol, local.update_id)
            checked["books"] += 1
            if dict(book.bids) != as_units(bids) or dict(book.asks) != as_units(asks):
                checked["mismatches"] += 1

        client = BookClient(get_market(market), symbols, rest_url=venue.rest_url, ws_url=venue.ws_url,
                            extra_channels=("trade", "bookTicker"), on_message=check)
        await client.run(duration=seconds)
        return client, checked, dict(venue.fault_counts)


@pytest.mark.parametrize("faults", FAULTS, ids=[f or "clean" for f in FAULTS])
def test_client_book_equals_venue_truth(faults):
    market = "usdm" if faults in ("reorder=0.05", "lifetime=1.5s") else "spot"
    # one symbol where stream faults must hit its own diffs; two where REST faults need many requests
    symbols = ["BTCUSDT"] if faults.split("=")[0] in ("drop", "reorder") else ["BTCUSDT", "ETHUSDT"]
    client, checked, injected = asyncio.run(run_client(market, symbols, faults, 4.0))
    assert checked["mismatches"] == 0, (checked, injected)
    assert checked["books"] > 20, (checked, client.counters, injected)  # it did sync and keep syncing
    if faults:
        assert injected.get(faults.split("=")[0], 0) > 0, injected  # the fault really happened
    if faults.startswith(("drop", "reorder")):
        assert client.counters["resyncs"] > 0  # every lost diff led to a resync, never a wrong book
    if faults.startswith("malformed"):
        assert client.counters["parse_errors"] > 0


def test_client_syncs_coinm():
    _, checked, _ = asyncio.run(run_client("coinm", ["BTCUSD_PERP"], "", 3.0))
    assert checked["mismatches"] == 0 and checked["books"] > 10
