"""A dataset recorded from the synthetic venue by the real recorder: the starting point of end-to-end tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from recorder.config import load_config
from recorder.runtime import Recorder
from replay.venue.server import VenueServer


def record_day(out: Path, market: str, symbols: list[str], seconds: float, *, faults: str | None = None,
               speed: float = 1.0, seed: int = 5, config: Path | None = None, **venue_options) -> int:
    """Run a venue on 127.0.0.1 and `recorder run` against it for `seconds`; the recorder's exit code."""
    async def main() -> int:
        async with VenueServer(market, symbols, speed=speed, seed=seed, faults=faults, **venue_options) as venue:
            settings = load_config(config, {
                "market": market, "symbols": symbols, "out": out, "rest_url": venue.rest_url,
                "ws_url": venue.ws_url, "duration": seconds, "ignore_window": True})
            return await Recorder(settings).run()

    return asyncio.run(main())


def recorded_date(out: Path, market: str = "spot") -> str:
    """The (single) Berlin date the dataset holds, as YYYY-MM-DD."""
    return next((out / f"binance-{market}" / "depth").glob("date=*")).name.split("=", 1)[1]
