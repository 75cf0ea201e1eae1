"""`recorder run` against the synthetic venue, with each fault: the written dataset rebuilds the venue's
true book at every update id, and every break in it is explained by the events table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow.compute as pc
import pytest

from recorder.config import load_config
from recorder.markets import get_market
from recorder.numbers import parse_units
from recorder.protocol import DepthUpdate
from recorder.rebuild import rebuild
from recorder.runtime import Recorder
from recorder.sync import Action
from replay.venue.server import VenueServer
from schemas import read_table

FAULTS = [
    "",
    "drop=0.05",
    "duplicate=0.1",
    "reorder=0.05",
    "delay=0.05:300ms",
    "disconnect=1.5s",
    "stale_snapshot=0.6,disconnect=1s",
    "http429=0.6,disconnect=1s",
    "http418=0.5:1s,disconnect=1s",
    "http5xx=0.6,disconnect=1s",
    "slow_rest=0.6:1s,disconnect=1s",
    "malformed=0.05",
    "lifetime=1.5s",
]


def record(tmp_path: Path, market: str, symbols: list[str], faults: str, seconds: float = 4.0,
           **venue_options) -> tuple[Path, VenueServer, int]:
    out = tmp_path / "data"

    async def main():
        async with VenueServer(market, symbols, speed=5.0, faults=faults or None, seed=5, ping_interval=1.0,
                               ping_timeout=5.0, **venue_options) as venue:
            config = load_config(None, {
                "market": market, "symbols": symbols, "out": out, "rest_url": venue.rest_url,
                "ws_url": venue.ws_url, "duration": seconds, "ignore_window": True,
            })
            code = await Recorder(config).run()
            return venue, code

    venue, code = asyncio.run(main())
    return out, venue, code


def as_units(levels):
    return {parse_units(p): parse_units(q) for p, q in levels}


def check_against_truth(out: Path, venue: VenueServer, market: str, symbol: str) -> dict:
    """Rebuild the day from the dataset; compare every valid book with the venue's truth."""
    stats = {"books": 0, "gaps": 0, "mismatches": 0}
    date = next((out / get_market(market).exchange / "depth").glob("date=*")).name.split("=")[1]
    for _, _, message, action, local in rebuild(out, get_market(market), date, symbol):
        if action is Action.RESYNC and type(message) is DepthUpdate:
            stats["gaps"] += 1
        book = local.valid_book()
        if book is None or type(message) is not DepthUpdate:
            continue
        _, bids, asks = venue.true_book_at(symbol, local.update_id)
        stats["books"] += 1
        assert not book.is_crossed() and not book.is_locked()
        if dict(book.bids) != as_units(bids) or dict(book.asks) != as_units(asks):
            stats["mismatches"] += 1
    return stats


def event_kinds(out: Path, market: str, symbol: str | None) -> dict[str, int]:
    events = read_table(out, get_market(market).exchange, "events", symbols=[symbol])
    kinds = pc.value_counts(events.column("kind")).to_pylist()
    return {k["values"]: k["counts"] for k in kinds}


@pytest.mark.parametrize("faults", FAULTS, ids=[f or "clean" for f in FAULTS])
def test_recording_rebuilds_the_true_book(tmp_path, faults):
    market = "usdm" if faults.startswith(("reorder", "lifetime")) else "spot"
    symbols = ["BTCUSDT"] if faults.startswith(("drop", "reorder")) else ["BTCUSDT", "ETHUSDT"]
    # delayed frames stall a sync for up to 300 ms each: a longer span so that a busy machine still syncs
    out, venue, code = record(tmp_path, market, symbols, faults, seconds=7.0 if faults.startswith("delay") else 4.0)
    assert code == 0
    if faults:
        assert venue.fault_counts.get(faults.split("=")[0], 0) > 0, venue.fault_counts
    for symbol in symbols:
        stats = check_against_truth(out, venue, market, symbol)
        assert stats["mismatches"] == 0, stats
        assert stats["books"] > 20, stats
        kinds = event_kinds(out, market, symbol)
        assert kinds.get("synced", 0) >= 1
        # every break the rebuild meets was seen live: a gap, or a reset after a disconnect/rollover
        assert stats["gaps"] <= kinds.get("gap", 0) + kinds.get("need_snapshot", 0), (stats, kinds)
        if faults.startswith(("drop", "reorder")):
            assert kinds.get("gap", 0) > 0 and stats["gaps"] > 0
    connection_events = event_kinds(out, market, None)
    if faults.startswith("disconnect"):
        assert connection_events.get("disconnect", 0) >= 1
    if faults.startswith("malformed"):
        assert connection_events.get("parse_error", 0) >= 1
    if faults.startswith("lifetime"):
        # the recorder rolls over before the server's limit only if its own lifetime is shorter; here the
        # server closes first, so each close is a disconnect followed by a resync, never a wrong book
        assert connection_events.get("disconnect", 0) >= 1


def test_rollover_before_lifetime_keeps_the_book_without_resync(tmp_path):
    out = tmp_path / "data"

    async def main():
        async with VenueServer("spot", ["BTCUSDT"], speed=5.0, seed=5) as venue:
            config = load_config(None, {
                "market": "spot", "symbols": ["BTCUSDT"], "out": out, "rest_url": venue.rest_url,
                "ws_url": venue.ws_url, "duration": 5.0, "ignore_window": True})
            config = config.__class__(**{**config.__dict__, "connection": config.connection.__class__(
                **{**config.connection.__dict__, "lifetime_s": 1.5})})
            return venue, await Recorder(config).run()

    venue, code = asyncio.run(main())
    assert code == 0
    kinds = event_kinds(out, "spot", "BTCUSDT")
    assert kinds.get("synced") == 1 and kinds.get("gap", 0) == 0  # synced once, never broken
    assert event_kinds(out, "spot", None).get("rollover", 0) >= 2
    stats = check_against_truth(out, venue, "spot", "BTCUSDT")
    assert stats["mismatches"] == 0 and stats["gaps"] == 0 and stats["books"] > 20
