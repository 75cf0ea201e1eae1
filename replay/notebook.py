"""A recorded day from a notebook: books, mids, trades and backtests as polars DataFrames.

    from replay.notebook import open_day
    day = open_day("data", "2024-08-09", market="usdm")
    day.book_at("09:30:00.250", "BTCUSDT", depth=10)     # the rebuilt book at that Berlin time
    day.mid("BTCUSDT", every="1s")                        # last mid per second (null while unsynced)
    day.trades("BTCUSDT")
    result = day.backtest(strategy="as", gamma=0.1, order_size="0.001")
    result.summary, result.fills, result.series          # DataFrames
    html = result.report_html()                           # the CLI's report, one self-contained page

The same code as the command line: `DayReplay` rebuilds the books with the recorder's sync engine and
`replay.sim.run.backtest` runs the simulator and writes the same JSON/HTML/decision-log files. Prices are
in the quote currency (float columns; exact decimals are in the dataset), times are UTC datetimes with
a `time_berlin` column beside them.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from recorder.markets import Market, get_market
from recorder.numbers import SCALE
from replay.engine import BOOK_INVALID, DEPTH, SNAPSHOT, TRADE, DayReplay, Pacer, paced
from schemas import read_table

UNIT = 10**SCALE

__all__ = ["BacktestResult", "Day", "open_day"]


def open_day(data: str | Path, date: str | dt.date, market: str = "spot") -> Day:
    """A recorded day of one market; `date` as the CLI takes it (2024-08-09, 20240809, today, yesterday)."""
    from replay.cli import check_market_has_day, resolve_date

    root = Path(data)
    mk = get_market(market)
    day = resolve_date(date) if isinstance(date, str) else date
    check_market_has_day(root, mk, day)
    symbols = DayReplay(root, mk, day, channels=()).symbols
    return Day(root, mk, day, list(symbols))


def _times(frame: pl.DataFrame, column: str = "ts") -> pl.DataFrame:
    """int64 ns `column` -> `time` (UTC) and `time_berlin` datetimes, first."""
    utc = pl.from_epoch(pl.col(column), time_unit="ns").dt.replace_time_zone("UTC")
    return frame.with_columns(utc.alias("time"), utc.dt.convert_time_zone("Europe/Berlin").alias("time_berlin")) \
        .select("time", "time_berlin", pl.exclude("time", "time_berlin"))


@dataclass
class Day:
    root: Path
    market: Market
    date: dt.date
    symbols: list[str]

    def at_ns(self, clock: str) -> int:
        """'09:30:00.250' (Berlin, on this day) -> UTC ns."""
        from replay.cli import _berlin_ns

        return _berlin_ns(self.date, clock, "time")

    def _replay(self, symbols: list[str] | None, start: str | None = None, end: str | None = None,
                channels: tuple[str, ...] = ()) -> DayReplay:
        return DayReplay(self.root, self.market, self.date, symbols, None if start is None else self.at_ns(start),
                         None if end is None else self.at_ns(end), channels=channels)

    def book_at(self, clock: str, symbol: str, depth: int = 10) -> pl.DataFrame:
        """The book as rebuilt at that Berlin time: side, level (0 = best), price, qty; empty if not valid then."""
        book = None
        for event in self._replay([symbol], end=clock).events():
            if event.kind is DEPTH or event.kind is SNAPSHOT:
                book = event.book
            elif event.kind is BOOK_INVALID:
                book = None
        rows: dict[str, list[Any]] = {"side": [], "level": [], "price": [], "qty": []}
        if book is not None:
            bids, asks = book.top(depth)
            for side, levels in (("bid", bids), ("ask", asks)):
                for i, (price, qty) in enumerate(levels):
                    rows["side"].append(side)
                    rows["level"].append(i)
                    rows["price"].append(price / UNIT)
                    rows["qty"].append(qty / UNIT)
        return pl.DataFrame(rows, schema={"side": pl.String, "level": pl.Int64, "price": pl.Float64,
                                          "qty": pl.Float64})

    def mid(self, symbol: str, every: str = "1s", start: str | None = None, end: str | None = None) -> pl.DataFrame:
        """The last mid (and best bid/ask) in each `every` interval (polars duration: 100ms, 1s, 1m)."""
        ts: list[int] = []
        bid: list[float | None] = []
        ask: list[float | None] = []
        for event in self._replay([symbol], start, end).events():
            if event.kind is DEPTH or event.kind is SNAPSHOT:
                if event.book is None or not event.book.bids or not event.book.asks:
                    continue
                ts.append(event.recv_ts)
                bid.append(event.book.best_bid()[0] / UNIT)
                ask.append(event.book.best_ask()[0] / UNIT)
            elif event.kind is BOOK_INVALID:
                ts.append(event.recv_ts)
                bid.append(None)
                ask.append(None)
        frame = pl.DataFrame({"ts": ts, "best_bid": bid, "best_ask": ask},
                             schema={"ts": pl.Int64, "best_bid": pl.Float64, "best_ask": pl.Float64})
        frame = frame.with_columns(((pl.col("best_bid") + pl.col("best_ask")) / 2).alias("mid"))
        buckets = (frame.with_columns(pl.from_epoch("ts", time_unit="ns").alias("bucket")).sort("bucket")
                   .group_by_dynamic("bucket", every=every)
                   .agg(pl.col("mid").last(), pl.col("best_bid").last(), pl.col("best_ask").last()))
        return _times(buckets.with_columns(pl.col("bucket").dt.epoch("ns").alias("ts")).drop("bucket"))

    def trades(self, symbol: str | None = None) -> pl.DataFrame:
        """The day's trades (all symbols, or one), in arrival order, prices and quantities as floats."""
        table = read_table(self.root, self.market.exchange, "trades", date=self.date,
                           symbols=None if symbol is None else [symbol])
        frame = pl.from_arrow(table).sort("seq")
        decimals = [c for c, t in frame.schema.items() if isinstance(t, pl.Decimal)]
        return _times(frame.with_columns(pl.col(decimals).cast(pl.Float64)), "recv_ts")

    def backtest(self, strategy: str = "as", symbols: list[str] | str | None = None, start: str | None = None,
                 end: str | None = None, config: str | Path | None = None, out: str | Path | None = None,
                 **params: Any) -> BacktestResult:
        """Run the simulator as `replay --speed max` does; `params` are simulator parameters (gamma=0.1,
        order_size="0.001", maker_fee=0, ...), `config` a YAML with a `simulator:` section."""
        from replay.sim.params import load_params
        from replay.sim.run import backtest

        wanted = [symbols] if isinstance(symbols, str) else symbols
        settings = load_params(None if config is None else Path(config), {"strategy": strategy, **params})
        replay = self._replay(wanted, start, end, channels=(TRADE,))
        folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="backtest-"))
        last = replay.end_ns if replay.end_ns is not None else replay.last_ns
        outcome = backtest(paced(replay.events(), Pacer(None)), replay, settings, folder, last, progress=False)
        results = [orjson.loads(path.read_bytes()) for path in outcome.files if path.suffix == ".json"]
        return BacktestResult(results, outcome.stopped, folder, f"Backtest {self.market.name} {self.date} · "
                                                               f"{settings.strategy}")


def _scalars(summary: dict, prefix: str = "") -> dict[str, Any]:
    """A summary's nested figures as flat `pnl.total`-style columns (lists left out)."""
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_scalars(value, f"{name}."))
        elif not isinstance(value, list):
            flat[name] = value
    return flat


@dataclass
class BacktestResult:
    results: list[dict]  # per symbol, the JSON the CLI writes: {"summary", "series", "fills"}
    stopped: str | None
    folder: Path  # the JSON, HTML and decision-log files
    title: str
    _frames: dict[str, pl.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def summary(self) -> pl.DataFrame:
        """One row per symbol: every figure of the terminal summary (pnl.total, fills.count, ...)."""
        return pl.DataFrame([_scalars(r["summary"]) for r in self.results], infer_schema_length=None)

    @property
    def fills(self) -> pl.DataFrame:
        """Every fill: time, symbol, side (+1 buy, −1 sell), price, qty, mid, fee, liquidity, inventory."""
        frames = [pl.DataFrame(r["fills"]).with_columns(pl.lit(r["summary"]["symbol"]).alias("symbol"))
                  for r in self.results if r["fills"]["exchange_ts"]]
        if not frames:
            return pl.DataFrame(schema={"time": pl.Datetime("ns", "UTC"), "symbol": pl.String, "side": pl.Int64,
                                        "price": pl.Float64, "qty": pl.Float64})
        return _times(pl.concat(frames, how="diagonal_relaxed"), "exchange_ts")

    @property
    def series(self) -> pl.DataFrame:
        """The sampled equity, inventory, mid and our quotes over data time, per symbol."""
        frames = [pl.DataFrame(r["series"], strict=False).with_columns(pl.lit(r["summary"]["symbol"]).alias("symbol"))
                  for r in self.results]
        return _times(pl.concat(frames, how="diagonal_relaxed")) if frames else pl.DataFrame()

    def report_html(self) -> str:
        """The backtest report the CLI writes (one self-contained page), for all symbols."""
        from replay.sim.report import render_html

        return render_html(self.results, self.title)

    def _repr_html_(self) -> str:  # a notebook shows the summary table
        return self.summary.select([c for c in self.summary.columns if c.startswith(("symbol", "pnl.", "fills."))]) \
            ._repr_html_()
