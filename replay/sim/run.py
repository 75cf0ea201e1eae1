"""Run a backtest over a replayed day: simulators per symbol, progress, JSON + HTML + decision log.

The I/O shell around `Simulator`: builds one per symbol on its first valid book (tick and lot from the
day's instruments table, else from the book's own prices), feeds it the paced replay, and writes
`backtest-<symbol>-<strategy>-<run id>.json` / `.html` and `decisions-<symbol>-<strategy>-<run id>.jsonl` even
when the run stops early (a strategy error, Ctrl-C, the kill switch). The run id is a hash of what decides the
results (parameters, market, symbols, days), so a run with other parameters never overwrites another's files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from recorder.numbers import SCALE, parse_units
from recorder.rebuild import sampled_decimals
from recorder.validate import instrument_steps
from recorder.window import TradingWindow
from replay.engine import DEPTH, SNAPSHOT, DayReplay, ReplayEvent
from replay.prepared import PreparedDay
from replay.prepared_format import END, EventArrays
from replay.sim.engine import UNIT, Simulator, StrategyError
from replay.sim.params import SimParams
from replay.sim.record import SimResult, from_simulator
from replay.sim.report import print_summary, render_html
from replay.sim.results import fills_of, series_of, summarize
from replay.sim.strategies import Strategy, load_strategy

# maker, taker: Binance's base (VIP 0) rates
DEFAULT_FEES = {"spot": (0.001, 0.001), "usdm": (0.0002, 0.0005), "coinm": (0.0002, 0.0005)}
LOG_FLUSH = 10_000
PROGRESS_EVERY = 4096


@dataclass
class BacktestOutcome:
    summaries: list[dict]
    files: list[Path]
    stopped: str | None = None
    events: int = 0
    extra: dict = field(default_factory=dict)
    # symbol -> (inventory, last mid) in 1e-8 units at the end: the next day's opening when inventory is carried
    closing: dict[str, tuple[int, int]] = field(default_factory=dict)


def run_id(params: SimParams, market: str, symbols: list[str], days: list[dt.date], **choices: object) -> str:
    """8 hex digits naming what decides the results: the same inputs give the same id, other inputs another."""
    key = orjson.dumps({"params": asdict(params), "market": market, "symbols": sorted(symbols),
                        "days": [d.isoformat() for d in days], **choices},
                       option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(key).hexdigest()[:8]


class DecisionLog:
    """JSON lines, one per action (place, cancel, fill, reject, kill, pause, stop, resume) with its reasons."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("wb")
        self.buffer: list[bytes] = []
        self.counts: dict[str, int] = {}

    def __call__(self, entry: dict) -> None:
        self.counts[entry["action"]] = self.counts.get(entry["action"], 0) + 1
        self.buffer.append(orjson.dumps(entry))
        if len(self.buffer) >= LOG_FLUSH:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.file.write(b"\n".join(self.buffer) + b"\n")
            self.buffer.clear()

    def close(self) -> None:
        self.flush()
        self.file.close()


def horizon_ns(params: SimParams, replay: DayReplay, last_ns: int, window: TradingWindow) -> int:
    """A–S terminal time T: the window end, unless the data lies outside the window or `horizon: span`."""
    start, end = window.bounds_for(replay.date)
    first = replay.first_event_ns()
    if params.horizon == "span" or first < start or last_ns > end:
        return last_ns
    return end


def instrument_steps_for(params: SimParams, replay: DayReplay, symbol: str) -> tuple[int, int]:
    """(tick, lot) in 1e-8 units: `tick_size` if set, the day's instruments table, else the finest steps the
    recorded numbers use."""
    tick, lot = instrument_steps(replay.root, replay.market.exchange, replay.date, symbol)
    if params.tick_size is not None:
        tick = parse_units(params.tick_size)
    if tick is None or lot is None:
        price_decimals, qty_decimals = sampled_decimals(replay.root, replay.market.exchange, replay.date, symbol)
        tick = tick or 10 ** (SCALE - price_decimals)
        lot = lot or 10 ** (SCALE - qty_decimals)
    return tick, lot


def fees_for(params: SimParams, market: str) -> tuple[float, float]:
    """(maker, taker): the parameters where set, else Binance's base rate of the market."""
    maker, taker = DEFAULT_FEES[market]
    return (params.maker_fee if params.maker_fee is not None else maker,
            params.taker_fee if params.taker_fee is not None else taker)


def _make_simulator(symbol: str, params: SimParams, replay: DayReplay, horizon: int, log: DecisionLog,
                    opening: tuple[int, int] | None) -> Simulator:
    tick, lot = instrument_steps_for(params, replay, symbol)
    maker, taker = fees_for(params, replay.market.name)
    return Simulator(symbol, params, load_strategy(params), tick, lot, horizon, maker, taker, log,
                     grid_start_ns=replay.first_event_ns(), opening=opening)


def strategy_name(params: SimParams) -> str:
    """The strategy as it appears in file names: `as`, or the class of `module:Class` / `file.py:Class`."""
    return params.strategy.rsplit(":", 1)[-1].replace("/", "_").replace(".py", "")


def result_path(out_dir: Path, symbol: str, params: SimParams, run: str) -> Path:
    """Where a day's backtest of `symbol` is written as JSON (the page: the same name in .html)."""
    return out_dir / f"backtest-{symbol}-{strategy_name(params)}-{run}.json"


def _start(replay: DayReplay, params: SimParams, out_dir: Path, last_ns: int, console: Console | None,
           window: TradingWindow | None, run: str | None) -> tuple[Console, str, str, int]:
    """What both engines need first: (console, run id, file stem, A–S horizon). A strategy that cannot be built
    is bad input before any work (each symbol gets its own instance later, as a user strategy may keep state)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    load_strategy(params)
    run = run or run_id(params, replay.market.name, replay.symbols, [replay.date],
                        start_ns=replay.start_ns, end_ns=last_ns)
    horizon = horizon_ns(params, replay, last_ns, window or TradingWindow(dt.time(8), dt.time(22)))
    return console or Console(stderr=True), run, f"{strategy_name(params)}-{run}", horizon


def backtest(events: Iterator[ReplayEvent], replay: DayReplay, params: SimParams, out_dir: Path,
             last_ns: int, console: Console | None = None, progress: bool = True,
             window: TradingWindow | None = None, run: str | None = None,
             opening: dict[str, tuple[int, int]] | None = None) -> BacktestOutcome:
    """Simulate every symbol of the replay; always writes the reports of what was simulated.

    `run`: the run id in the file names (default: this day's own); `opening`: per symbol, the (inventory,
    mark) carried over from the previous day (see `Simulator`)."""
    console, run, stem, horizon = _start(replay, params, out_dir, last_ns, console, window, run)
    opening = opening or {}
    sims: dict[str, Simulator] = {}
    logs: dict[str, DecisionLog] = {}
    stopped = None
    count = 0
    first = replay.first_event_ns()
    bar = Progress(TextColumn("[bold]backtest[/] {task.description}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}% of data time"), TimeElapsedColumn(),
                   console=console, disable=not progress, transient=True)
    task = bar.add_task("", total=max(1, last_ns - first))
    try:
        with bar:
            for event in events:
                count += 1
                if count % PROGRESS_EVERY == 0:
                    bar.update(task, completed=event.recv_ts - first,
                               description=f"{count:,} events · {_fills_text(sims)}")
                symbol = event.symbol
                sim = sims.get(symbol)
                if sim is None:
                    if symbol is None or event.book is None or (event.kind is not DEPTH and event.kind is not SNAPSHOT):
                        continue
                    if not event.book.bids or not event.book.asks:
                        continue
                    logs[symbol] = DecisionLog(out_dir / f"decisions-{symbol}-{stem}.jsonl")
                    sim = sims[symbol] = _make_simulator(symbol, params, replay, horizon, logs[symbol],
                                                         opening.get(symbol))
                    sim.valid = True
                sim.on_event(event)
    except StrategyError as exc:
        stopped = str(exc)
    except KeyboardInterrupt:
        stopped = "interrupted"
    records = {}
    for symbol, sim in sims.items():
        sim.finish()
        records[symbol] = from_simulator(sim)
    return _write_outcome(records, logs, replay, params, out_dir, run, stopped, count)


def _write_outcome(records: dict[str, SimResult], logs: dict[str, DecisionLog], replay: DayReplay,
                   params: SimParams, out_dir: Path, run: str, stopped: str | None, events: int) -> BacktestOutcome:
    """Each symbol's JSON, page and decision log (whichever engine simulated it)."""
    files, summaries, closing = [], [], {}
    for symbol, record in records.items():
        logs[symbol].close()
        summary = summarize(record, stopped)
        summary["decisions"] = logs[symbol].counts
        summary["params"] = asdict(params)
        summary["date"] = replay.date.isoformat()
        summary["market"] = replay.market.name
        summary["run_id"] = run
        result = {"summary": summary, "series": series_of(record), "fills": fills_of(record)}
        json_path = result_path(out_dir, symbol, params, run)
        json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY))
        html_path = json_path.with_suffix(".html")
        title = f"Backtest {symbol} {replay.market.name} {replay.date} · {params.strategy}"
        html_path.write_text(render_html([result], title))
        files += [json_path, html_path, logs[symbol].path]
        summaries.append(summary)
        closing[symbol] = (record.inventory, round(2 * UNIT * (record.mid or 0.0)) // 2)
    return BacktestOutcome(summaries, files, stopped, events, closing=closing)


def backtest_prepared(events: Iterator[ReplayEvent], replay: DayReplay, params: SimParams, out_dir: Path,
                      last_ns: int, console: Console | None = None, progress: bool = True,
                      window: TradingWindow | None = None, run: str | None = None,
                      opening: dict[str, tuple[int, int]] | None = None) -> BacktestOutcome:
    """`backtest` at --speed max: each symbol's prepared day (built once, then memory-mapped) through the
    numba kernel (`replay.sim.fast`), which gives the reference's results; the same files. `events` is not
    read (it is the paced stream the reference path would take). A span that starts inside the day (--from)
    takes the reference path, which seeks to a checkpoint."""
    if replay.start_ns is not None:
        return backtest(events, replay, params, out_dir, last_ns, console, progress, window, run, opening)

    from replay.prepared import load_or_build

    console, run, stem, horizon = _start(replay, params, out_dir, last_ns, console, window, run)
    opening = opening or {}
    records: dict[str, SimResult] = {}
    logs: dict[str, DecisionLog] = {}
    stopped = None
    messages = 0  # the events the reference would have been fed: one per message (END row)
    bar = Progress(TextColumn("[bold]backtest[/] {task.description}"), BarColumn(),
                   TextColumn("{task.completed:,} of {task.total:,} rows"), TimeElapsedColumn(),
                   console=console, disable=not progress, transient=True)
    with bar:
        for symbol in replay.symbols:
            task = bar.add_task(f"{symbol}: preparing", total=1)
            day = load_or_build(replay.root, replay.market, replay.date, symbol,
                                progress=lambda done, total, t=task: bar.update(t, completed=done, total=total))
            meta = day.meta
            bar.update(task, description=symbol, completed=0, total=meta.rows)
            if meta.price_min is None:
                continue  # no book level all day: nothing to simulate, as the reference
            log = DecisionLog(out_dir / f"decisions-{symbol}-{stem}.jsonl")

            def walked(chunk: EventArrays, task: int = task) -> None:
                nonlocal messages
                messages += int(np.count_nonzero(chunk.flags & END))
                bar.advance(task, len(chunk))

            try:
                record = simulate_prepared(day, replay, symbol, params, horizon, log, None, opening.get(symbol),
                                           walked)
            except StrategyError as exc:
                stopped, record = str(exc), exc.result
            except KeyboardInterrupt:
                stopped, record = "interrupted", None
            if record is None or record.first_ts is None:
                log.close()
                log.path.unlink(missing_ok=True)
            else:
                records[symbol], logs[symbol] = record, log
            if stopped:
                break
    return _write_outcome(records, logs, replay, params, out_dir, run, stopped, messages)


def prepared_steps(day: PreparedDay, replay: DayReplay, symbol: str, params: SimParams) -> tuple[int, int]:
    """(tick, lot) in 1e-8 units for a prepared day: `tick_size` if set, else the instruments table's steps read
    when the day was prepared, else as `instrument_steps_for` finds them."""
    meta = day.meta
    tick = parse_units(params.tick_size) if params.tick_size is not None else meta.tick
    lot = meta.lot
    if tick is None or lot is None:
        tick, lot = instrument_steps_for(params, replay, symbol)
    return tick, lot


def simulate_prepared(day: PreparedDay, replay: DayReplay, symbol: str, params: SimParams, horizon: int,
                      log: Callable[[dict], None] | None = None, strategy: Strategy | None = None,
                      opening: tuple[int, int] | None = None,
                      on_chunk: Callable[[EventArrays], None] | None = None,
                      steps: tuple[int, int] | None = None) -> SimResult:
    """One symbol's prepared day through the kernel, up to the replay's end (--to): its `SimResult`. `steps`:
    the (tick, lot) of `prepared_steps`, when the caller has them already."""
    from replay.sim.fast import simulate

    meta = day.meta
    tick, lot = steps or prepared_steps(day, replay, symbol, params)
    maker, taker = fees_for(params, replay.market.name)
    return simulate(_rows_until(day.chunks(), replay.end_ns, on_chunk), symbol, params, tick, lot, horizon, maker,
                    taker, replay.first_event_ns(), meta.price_step, meta.qty_step, meta.price_min, meta.price_max,
                    log=log, strategy=strategy, opening=opening)


def _rows_until(chunks: Iterator[EventArrays], end_ns: int | None,
                on_chunk: Callable[[EventArrays], None] | None) -> Iterator[EventArrays]:
    """The chunks up to the last message at or before `end_ns`, each shown to `on_chunk` before it is walked."""
    for chunk in chunks:
        last = end_ns is not None and chunk.recv_ts[-1] > end_ns
        if last:
            chunk = chunk.head(int(np.searchsorted(chunk.recv_ts, end_ns, side="right")))
        if len(chunk):
            if on_chunk is not None:
                on_chunk(chunk)
            yield chunk
        if last:
            return


def _fills_text(sims: dict[str, Simulator]) -> str:
    return " ".join(f"{s}: {len(sim.fills)} fills, PnL {sim.pnl():.2f}" for s, sim in sims.items())


def print_outcome(outcome: BacktestOutcome, console: Console) -> None:
    for summary in outcome.summaries:
        print_summary(summary, console)
    for path in outcome.files:
        console.print(f"wrote {path}", soft_wrap=True)
