"""Peer benchmark: cryptofeed's Binance handler over the frames bench_recorder.py times the recorder on.

Why: the recorder's ingest figure needs a reference point. cryptofeed is the best-known open-source
multi-exchange feed handler in Python; its `Binance.message_handler` parses each frame (yapic.json, prices
as Decimal), keeps the L2 book from the depth diffs (fetching the REST snapshot on the first diff of a
symbol, served here from the capture's own snapshot bodies) and calls the data callbacks, no-ops here: so
this times its parsing and book keeping, with no writing at all.

Run with a Python that has cryptofeed 2.4.x (never in the project's lock):
    python benchmarks/cryptofeed_peer.py FRAMES EXCHANGE_INFO [--repeat N]
FRAMES: lines `ws <recv_ts> <frame>` or `rest <recv_ts> <symbol> <body>` (frames hold no newline);
EXCHANGE_INFO: an exchangeInfo body for cryptofeed's symbol table. Prints one JSON object to stdout.
Binance spot `trade` frames are not a cryptofeed channel (it subscribes `aggTrade`): its handler logs
them as unexpected; that log is silenced so they cost only its parse and dispatch.
"""
import argparse
import asyncio
import importlib.metadata
import json
import logging
import sys
import time

try:
    from cryptofeed.defines import L2_BOOK, TICKER, TRADES
    from cryptofeed.exchanges import Binance
    from cryptofeed.symbols import Symbols
except ImportError as exc:
    sys.exit(f"cryptofeed_peer: cryptofeed 2.4.x is required ({exc}); pip install 'cryptofeed==2.4.*'")


async def _noop(*_args) -> None:
    return None


class _Snapshots:
    """Stands in for cryptofeed's HTTP connection: `read` returns the latest snapshot body replayed so far
    (before the capture's first one, that first one: the capture's diffs start before its snapshot)."""

    def __init__(self, records: list[tuple]) -> None:
        self.latest: dict[str, str] = {}
        for is_frame, _, text, symbol in records:
            if not is_frame:
                self.latest.setdefault(symbol, text)
        self.reads = 0

    async def read(self, url: str, **_kwargs) -> str:
        self.reads += 1
        symbol = url.split("symbol=")[1].split("&")[0]
        return self.latest[symbol]

    async def close(self) -> None:
        return None


def load(path: str) -> list[tuple]:
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            kind, rest = line.rstrip("\n").split(" ", 1)
            if kind == "ws":
                ts, frame = rest.split(" ", 1)
                records.append((True, int(ts) / 1e9, frame, None))
            else:
                ts, symbol, body = rest.split(" ", 2)
                records.append((False, int(ts) / 1e9, body, symbol))
    return records


async def run(records: list[tuple], info: dict) -> tuple[float, int, int]:
    syms, meta = Binance._parse_symbol_data(info)
    Symbols.set(Binance.id, syms, meta)
    wanted = {r[3] for r in records if not r[0]}
    symbols = sorted(std for std, exchange_symbol in syms.items() if exchange_symbol in wanted)
    feed = Binance(symbols=symbols, channels=[L2_BOOK, TICKER, TRADES],
                   callbacks={L2_BOOK: _noop, TICKER: _noop, TRADES: _noop})
    snapshots = _Snapshots(records)
    feed.http_conn = snapshots
    handler = feed.message_handler
    start = time.perf_counter()
    for is_frame, ts, text, symbol in records:
        if is_frame:
            await handler(text, None, ts)
        else:
            snapshots.latest[symbol] = text
    return time.perf_counter() - start, snapshots.reads, sum(1 for r in records if r[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frames")
    parser.add_argument("exchange_info")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("feedhandler").setLevel(logging.ERROR)
    records = load(args.frames)
    with open(args.exchange_info, encoding="utf-8") as f:
        info = json.load(f)
    best = None
    for _ in range(args.repeat):
        seconds, reads, frames = asyncio.run(run(records, info))
        if best is None or seconds < best[0]:
            best = (seconds, reads, frames)
    seconds, reads, frames = best
    print(json.dumps({"version": importlib.metadata.version("cryptofeed"),
                      "records": len(records), "frames": frames, "seconds": seconds,
                      "msg_s": len(records) / seconds, "snapshot_reads": reads}))


if __name__ == "__main__":
    main()
