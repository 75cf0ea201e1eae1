"""`replay --date ... --view`: a live top-of-book / trades view with progress, and console helpers.

The view shows what the replay engine hands out: per symbol the valid book's best bid/ask (or that the
book is invalid), the last trade, and data time, wall time and the effective speed.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from recorder.numbers import format_units
from replay.engine import BOOK_INVALID, BOOK_VALID, TRADE, Pacer, ReplayEvent

BERLIN = ZoneInfo("Europe/Berlin")


def wide_console(stderr: bool = False) -> Console:
    """Rich's console, 120 columns when writing to a file or pipe (tables stay readable in logs)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 120)


def berlin(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, BERLIN).strftime("%H:%M:%S.%f")[:-3]


def _price(units: int) -> str:
    text = format_units(units)
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass
class SymbolState:
    bid: tuple[int, int] | None = None
    ask: tuple[int, int] | None = None
    valid: bool = False
    last_trade: tuple[int, int, bool] | None = None
    trades: int = 0
    depth: int = 0
    invalid_spans: int = 0


@dataclass
class ReplayStats:
    events: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    wall_start: float = field(default_factory=time.perf_counter)
    symbols: dict[str, SymbolState] = field(default_factory=dict)

    def observe(self, event: ReplayEvent) -> None:
        self.events += 1
        if self.first_ns is None:
            self.first_ns = event.recv_ts
        self.last_ns = event.recv_ts
        if event.symbol is None:
            return
        state = self.symbols.setdefault(event.symbol, SymbolState())
        if event.kind == TRADE:
            state.trades += 1
            state.last_trade = (event.data["price"], event.data["qty"], event.data["buyer_is_maker"])
        elif event.kind == BOOK_INVALID:
            state.valid = False
            state.invalid_spans += 1
        elif event.kind == BOOK_VALID:
            state.valid = True
        elif event.book is not None:
            state.depth += 1
            state.bid = event.book.best_bid()
            state.ask = event.book.best_ask()

    def speed(self) -> float:
        wall = time.perf_counter() - self.wall_start
        if self.first_ns is None or wall <= 0:
            return 0.0
        return (self.last_ns - self.first_ns) / 1e9 / wall

    def table(self) -> Table:
        table = Table(expand=False)
        for column in ("symbol", "book", "bid", "ask", "spread", "last trade", "trades", "diffs"):
            table.add_column(column, justify="left" if column in ("symbol", "book") else "right")
        for symbol, s in sorted(self.symbols.items()):
            if s.valid and s.bid and s.ask:
                bid, ask = f"{_price(s.bid[1])} @ {_price(s.bid[0])}", f"{_price(s.ask[0])} x {_price(s.ask[1])}"
                spread = _price(s.ask[0] - s.bid[0])
            else:
                bid = ask = spread = "-"
            trade = "-" if s.last_trade is None else (
                f"{'sell' if s.last_trade[2] else 'buy'} {_price(s.last_trade[1])} @ {_price(s.last_trade[0])}")
            table.add_row(symbol, "[green]valid[/]" if s.valid else "[red]invalid[/]", bid, ask, spread, trade,
                          f"{s.trades:,}", f"{s.depth:,}")
        return table


def run_view(events: Iterator[ReplayEvent], pacer: Pacer, start_ns: int, end_ns: int,
             console: Console | None = None) -> ReplayStats:
    """Consume the paced stream, refreshing a live view (a line per 10 s of wall time without a TTY)."""
    console = console or Console()
    stats = ReplayStats()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                        console=console, transient=False)
    total = max(1, end_ns - start_ns)
    task = progress.add_task("replay", total=total, info="")
    last_refresh = last_line = time.perf_counter()

    def info() -> str:
        data = berlin(stats.last_ns) if stats.last_ns else "-"
        wall = time.perf_counter() - stats.wall_start
        return f"data {data} Berlin  wall {wall:6.1f} s  speed {stats.speed():7.1f}x  events {stats.events:,}"

    if console.is_terminal:
        with Live(Group(stats.table(), progress), console=console, refresh_per_second=4) as live:
            for event in events:
                stats.observe(event)
                now = time.perf_counter()
                if now - last_refresh >= 0.25:
                    last_refresh = now
                    progress.update(task, completed=event.recv_ts - start_ns, info=info())
                    live.update(Group(stats.table(), progress))
            progress.update(task, completed=total, info=info())
            live.update(Group(stats.table(), progress))
    else:
        for event in events:
            stats.observe(event)
            now = time.perf_counter()
            if now - last_line >= 10.0:
                last_line = now
                console.print(info())
        console.print(stats.table())
        console.print(info())
    return stats
