"""`replay` command line.

    replay --date 20240501 --speed 50x [--data DIR] [--market spot] [--symbols ...] [--from 09:30] [--to 12:00]
           [--strategy as|glft|join|fixed|module:Class] [--gamma 0.1] [--config sim.yaml] [--param KEY=VALUE ...]
    replay --date 20240501 --speed max --strategy none        (book rebuild only: counts, speed, final top of book)
    replay --date 2024-05-01..2024-05-31 --symbols BTCUSDT,ETHUSDT [--skip-missing] [--carry-inventory]
    replay calibrate --date 20240501 [--symbols ...] [--write sim.yaml]
    replay calibrate --date 2024-05-01..2024-05-31 [--symbols ...] [--skip-missing] [--out DIR]   (table by day)
    replay serve --date 20240501 --speed 50x [--symbols ...] [--host 127.0.0.1 --port 9443]
    replay serve --synthetic --market spot --symbols BTCUSDT,ETHUSDT [--port 9443] [--speed 10x] [--faults SPEC]
    replay export --date 20240501 --to hftbacktest|tardis-csv [--out DIR]
    replay prepare --date 20240501 [--market usdm] [--symbols ...] [--cache DIR] [--force]
    replay sweep --date 2024-05-01..2024-05-31 --symbols BTCUSDT,ETHUSDT --grid gamma=0.01:0.2:log5
           --grid order_size=0.001,0.002 [--search optuna --trials 200] [--objective pnl] [--walk-forward]
           [--address ray://host:10001] [--resume] [--out DIR]

Bad input gives one line on stderr and exit code 2 (a traceback only with --debug).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from recorder.cli import print_version
from replay.export import export_command
from replay.venue.clock import parse_speed

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="Replay recorded Binance market data, or serve a synthetic Binance venue.",
    pretty_exceptions_enable=False,
)

EXIT_BAD_INPUT = 2
BOOKS_ONLY = "none"  # --strategy none: rebuild the books, no simulator
DATA_HELP = "Dataset root (default: the config's `out` via $CONFIG_PATH, else ./data)."
DATE_HELP = "Recorded Berlin date: 20240501, 2024-05-01, today or yesterday."
DAYS_HELP = (f"{DATE_HELP[:-1]}; or several: a range 2024-05-01..2024-05-31 (inclusive), "
             "a list 2024-05-01,2024-05-03, or both.")


class BadInput(ValueError):
    """A user error: reported as one line on stderr, exit code 2."""


def _fail(message: str, debug: bool, exc: BaseException | None = None) -> None:
    if debug and exc is not None:
        import traceback

        traceback.print_exception(exc)
    message = " ".join(str(message).split())  # one line
    print(f"replay: error: {message}", file=sys.stderr)
    raise typer.Exit(EXIT_BAD_INPUT)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    date: str | None = typer.Option(None, "--date", help=DAYS_HELP),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Run the days of --date that have data "
                                      "(default: a day without data is an error)."),
    carry_inventory: bool = typer.Option(False, "--carry-inventory/--reset-inventory", help=(
        "Over several days: open each day with the previous day's inventory, marked at its last mid "
        "(default: every day starts flat).")),
    speed: str = typer.Option("1x", "--speed", help="Replay speed: 1x, 50x, 0.25x or max (a bare 50 means 50x)."),
    data: Annotated[Path | None, typer.Option("--data", help=DATA_HELP)] = None,
    market: str = typer.Option("spot", "--market", help="spot | usdm | coinm"),
    symbols: str | None = typer.Option(None, "--symbols", help="Comma-separated (default: all of the day)."),
    start: str | None = typer.Option(None, "--from", help="Start time in Berlin, e.g. 09:30."),
    end: str | None = typer.Option(None, "--to", help="End time in Berlin, e.g. 12:00."),
    exchange_time: bool = typer.Option(False, "--exchange-time", help="Pace by exchange time (E), not arrival."),
    view: bool = typer.Option(False, "--view", help="Show the live book/trades view instead of the backtest."),
    config: Annotated[Path | None, typer.Option("--config", help="YAML with a `simulator:` section.")] = None,
    strategy: str | None = typer.Option(None, "--strategy", help=(
        "as | glft | join | fixed | module:Class | file.py:Class, or none: rebuild the books only (no simulator, "
        "no report files; one line per symbol: messages, level updates, speed, final best bid/ask).")),
    gamma: float | None = typer.Option(None, "--gamma", help="Risk aversion γ in 1/(quote currency × order size), e.g. 0.1."),
    fill_model: str | None = typer.Option(None, "--fill-model", help="queue | cross | poisson"),
    latency: str | None = typer.Option(None, "--latency", help="Entry and response latency with its unit: 10ms, 0.5s, feed, feed*2 (a bare number is an error)."),
    order_size: str | None = typer.Option(None, "--order-size", help="Base quantity per quote, e.g. 0.001."),
    param: Annotated[list[str] | None, typer.Option("--param", help="Any simulator parameter: KEY=VALUE (repeat).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help=(
        "Report directory (default DATA/reports/EXCHANGE/DATE; over several days DATA/reports/EXCHANGE, "
        "each day's files in its DATE/ subdirectory)."))] = None,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar while running."),
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=print_version,
                                 help="Print the version and exit."),
) -> None:
    """Backtest the market maker on recorded days: `replay --date 20240501 --speed 50x`, or many days and
    symbols in one report: `--date 2024-05-01..2024-05-31 --symbols BTCUSDT,ETHUSDT`
    (`--view` for the live book view of one day instead; `--strategy none` to rebuild the books only);
    or `replay serve --synthetic ...`."""
    if ctx.invoked_subcommand is not None:
        return
    from recorder.markets import get_market
    from replay.engine import AGG_TRADE, BOOK_TICKER, EVENT, TRADE, DayReplay, Pacer, paced
    from replay.sim.campaign import Day
    from replay.view import run_view
    from schemas import DatasetError

    try:
        data = dataset_root(data)
        if date is None:
            raise BadInput(f"--date is missing: give the recorded day, e.g. --date 2024-08-09 or today "
                           f"({available_days(data)}; replay --help for all options)")
        books_only = strategy == BOOKS_ONLY and not view
        params = None if view or books_only else _sim_params(config, strategy, gamma, fill_model, latency,
                                                              order_size, param)
        mk = get_market(market)
        check_market_has_day(data, mk, None)
        days = recorded_days(data, mk, date, skip_missing)
        if view and len(days) > 1:
            raise BadInput(f"--view shows one day; --date {date} names {len(days)}")
        pace = parse_speed(speed)
        wanted = _symbol_list(symbols)
        # the simulator (and the book rebuild, as the prepared day) reads depth, snapshots and trades only; the
        # view shows every channel
        channels = (TRADE, AGG_TRADE, BOOK_TICKER, EVENT) if view else (TRADE,)
        several = len(days) > 1
        reports = out or data / "reports" / mk.exchange / ("" if several else days[0].isoformat())
        plan = []
        for day in days:  # every day is checked (symbols, files, --from/--to) before any is run
            start_ns, end_ns = _day_span(day, start, end)
            replay = DayReplay(data, mk, day, wanted, start_ns, end_ns, channels=channels)
            plan.append(Day(replay, end_ns if end_ns is not None else replay.last_ns,
                            reports / day.isoformat() if several else reports))
    except (ValueError, BadInput, DatasetError) as e:
        _fail(str(e), debug, e)
        return
    pacer = Pacer(pace)
    if books_only:
        _rebuild_books(plan, pacer, exchange_time, progress, debug)
        return
    if params is not None:
        choices = {"from": start, "to": end, **({"inventory": carry_inventory} if several else {})}
        _run_backtest(plan, params, pacer, exchange_time, reports, mk.name, carry_inventory, choices, progress,
                      debug)
        return
    replay = plan[0].replay
    first, last = replay.first_event_ns(), plan[0].last_ns
    try:
        stats = run_view(paced(replay.events(), pacer, exchange_time), pacer, first, last)
    except DatasetError as e:
        _fail(str(e), debug, e)
        return
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    lateness = pacer.lateness_ms()
    typer.echo(f"replayed {stats.events:,} events; lateness p50 {lateness['p50']:.2f} ms, "
               f"p99 {lateness['p99']:.2f} ms")


def dataset_root(data: Path | None) -> Path:
    """--data, else the recorder config's `out` ($CONFIG_PATH), else ./data: one default for every command."""
    from recorder.config import ConfigError, load_config

    if data is not None:
        return data
    try:
        return Path(load_config(None, {}).out)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


def resolve_date(text: str):  # type: ignore[no-untyped-def]
    """'today' / 'yesterday' (Berlin), 20240501 or 2024-05-01: the same dates `recorder validate` takes."""
    from recorder.validate import resolve_date as resolve

    return resolve(text)


def _days_by_market(data: Path) -> dict[str, list[str]]:
    """Market name -> the Berlin dates with depth data under `data`."""
    from recorder.markets import MARKETS

    found = {}
    for name, mk in MARKETS.items():
        dates = sorted(p.name.split("=", 1)[1] for p in (data / mk.exchange / "depth").glob("date=*"))
        if dates:
            found[name] = dates
    return found


def available_days(data: Path) -> str:
    """'data/ has usdm: 2024-08-08, 2024-08-09' or 'no recorded day under data/'."""
    found = _days_by_market(data)
    if not found:
        return f"no recorded day under {data}/"
    return f"{data}/ has " + "; ".join(f"{name}: {', '.join(dates)}" for name, dates in found.items())


def recorded_days(data: Path, mk, text: str, skip_missing: bool = False) -> list:  # type: ignore[no-untyped-def]
    """The days of `--date` (one, a range, a list) that the market has data for; BadInput naming what exists."""
    from replay.days import parse_days
    from schemas import parse_date

    recorded = [parse_date(day) for day in _days_by_market(data).get(mk.name, [])]
    return parse_days(text, recorded, skip_missing, source=f"{data}/ has {mk.name}")


def check_market_has_day(data: Path, mk, day) -> None:  # type: ignore[no-untyped-def]
    """A market with no data at all (e.g. the default spot on a USD-M dataset): say which markets and dates exist."""
    found = _days_by_market(data)
    if found and mk.name not in found:
        hint = f"; pass --market {next(iter(found))}" if len(found) == 1 else ""
        raise BadInput(f"no {mk.name} data (--market {mk.name}); {available_days(data)}{hint}")


def _sim_params(config, strategy, gamma, fill_model, latency, order_size, param):  # type: ignore[no-untyped-def]
    from replay.sim.params import load_params

    overrides = {"strategy": strategy, "gamma": gamma, "fill_model": fill_model, "order_size": order_size,
                 "entry_latency": latency, "response_latency": latency}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--param {item!r} is not KEY=VALUE")
        overrides[key.strip()] = value.strip()
    return load_params(config, overrides)


def _run_backtest(plan, params, pacer, exchange_time: bool, out: Path, market: str, carry: bool,  # type: ignore[no-untyped-def]
                  choices: dict, progress: bool, debug: bool) -> None:
    """Each day of the plan in order; one day of one symbol prints and writes its full report, more days or
    symbols add the combined report (per-day rows, totals)."""
    from rich.console import Console

    from replay.sim.campaign import run_days
    from replay.sim.report import print_days
    from replay.sim.run import backtest, backtest_prepared, print_outcome, run_id
    from replay.view import wide_console
    from schemas import DatasetError

    console = wide_console()
    symbols = sorted({s for day in plan for s in day.replay.symbols})
    run = run_id(params, market, symbols, [day.replay.date for day in plan], **choices)
    combined = len(plan) > 1 or len(symbols) > 1
    try:
        # at --speed max the prepared days go through the kernel; paced runs feed the reference event by event
        result = run_days(plan, params, run, pacer, carry=carry, exchange_time=exchange_time,
                          out=out if combined else None, console=Console(stderr=True), progress=progress,
                          simulate=backtest_prepared if pacer.speed is None else backtest)
    except (ValueError, DatasetError) as e:
        _fail(str(e), debug, e)
        return
    if len(plan) == 1:
        print_outcome(result.outcomes[0], console)
    else:
        for outcome, day in zip(result.outcomes, plan):
            console.print(f"wrote {len(outcome.files)} files in {day.out_dir}/", soft_wrap=True)
    if combined and result.report["rows"]:
        print_days(result.report, console)
        for path in result.files:
            console.print(f"wrote {path}", soft_wrap=True)
    lateness = pacer.lateness_ms()
    over = f" over {len(result.outcomes)} days" if len(plan) > 1 else ""
    console.print(f"run {run}: replayed {result.events:,} events{over}; "
                  f"lateness p50 {lateness['p50']:.2f} ms, p99 {lateness['p99']:.2f} ms")
    if not result.report["rows"]:
        _fail("no valid book in the replayed span: nothing was simulated", debug)
    if result.stopped == "interrupted":
        raise typer.Exit(130)
    if result.stopped:
        _fail(f"stopped: {result.stopped} (partial report written)", debug)


def _rebuild_books(plan, pacer, exchange_time: bool, progress: bool, debug: bool) -> None:  # type: ignore[no-untyped-def]
    """--strategy none: each day's books rebuilt, one line per symbol. At --speed max over whole days, each
    symbol's prepared day (built if needed) through the numba array book; paced (or --from/--to), the replay's
    events at that pace."""
    from replay.books import replay_book_events, replay_books
    from replay.engine import paced
    from schemas import DatasetError

    try:
        for day in plan:
            replay = day.replay
            prefix = f"{replay.date} " if len(plan) > 1 else ""
            if pacer.speed is not None or replay.start_ns is not None or replay.end_ns is not None:
                pacer.restart()
                for stats in replay_book_events(paced(replay.events(), pacer, exchange_time), replay).values():
                    typer.echo(prefix + stats.line())
                continue
            for symbol in replay.symbols:
                typer.echo(prefix + replay_books(_prepared(replay, symbol, progress)).line())
    except (ValueError, DatasetError) as e:
        _fail(str(e), debug, e)
        return
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if pacer.speed is not None:
        lateness = pacer.lateness_ms()
        typer.echo(f"replayed {lateness['events']:,} events; lateness p50 {lateness['p50']:.2f} ms, "
                   f"p99 {lateness['p99']:.2f} ms")


def _prepared(replay, symbol: str, progress: bool):  # type: ignore[no-untyped-def]
    """The symbol's prepared day, loaded (a progress bar on stderr while it is built)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from replay.prepared import load_or_build

    bar = Progress(TextColumn("[bold]prepare[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=Console(stderr=True), disable=not progress, transient=True)
    with bar:
        task = bar.add_task(symbol, total=None)
        return load_or_build(replay.root, replay.market, replay.date, symbol,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))


def _day_span(day, start: str | None, end: str | None) -> tuple[int | None, int | None]:  # type: ignore[no-untyped-def]
    """--from/--to (Berlin times on `day`) in UTC ns; None where not given."""
    start_ns = None if start is None else _berlin_ns(day, start, "--from")
    end_ns = None if end is None else _berlin_ns(day, end, "--to")
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise BadInput(f"--to {end} is not after --from {start}")
    return start_ns, end_ns


def _symbol_list(text: str | None) -> list[str] | None:
    """--symbols BTCUSDT,ethusdt -> ["BTCUSDT", "ETHUSDT"]; None = all of the day."""
    if text is None:
        return None
    wanted = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not wanted:
        raise BadInput("no symbols given")
    return wanted


def _berlin_ns(day, text: str, option: str) -> int:
    import datetime as dt
    from zoneinfo import ZoneInfo

    try:
        clock = dt.time.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{option} {text!r} is not a time like 09:30") from None
    local = dt.datetime.combine(day, clock, ZoneInfo("Europe/Berlin"))
    return int(local.timestamp()) * 1_000_000_000 + local.microsecond * 1000


@app.command()
def serve(
    date: str | None = typer.Option(None, "--date", help="Serve this recorded Berlin date: 20240501, 2024-05-01, today."),
    data: Annotated[Path | None, typer.Option("--data", help=DATA_HELP)] = None,
    start: str | None = typer.Option(None, "--from", help="Start time in Berlin, e.g. 09:30 (with --date)."),
    end: str | None = typer.Option(None, "--to", help="End time in Berlin, e.g. 12:00 (with --date)."),
    depth_stream: str | None = typer.Option(
        None, "--depth-stream", help="Depth stream the day was recorded from (default: inferred from the data)."
    ),
    synthetic: bool = typer.Option(False, "--synthetic", help="Serve the synthetic market."),
    market: str = typer.Option("spot", "--market", help="spot | usdm | coinm"),
    symbols: str | None = typer.Option(
        None, "--symbols", help="Comma-separated symbols (synthetic default: BTCUSDT; recorded: all of the day)."
    ),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(9443, "--port", help="One port for REST and WebSocket (0: any free port)."),
    speed: str = typer.Option("1x", "--speed", help="Market time per wall time: 1x, 10x, 0.25x, max (a bare 10 means 10x)."),
    faults: str | None = typer.Option(None, "--faults", help="Fault spec, e.g. drop=0.02,delay=0.01:300ms."),
    seed: int = typer.Option(1, "--seed", help="Seed of the synthetic market."),
    ping_interval: float | None = typer.Option(None, "--ping-interval", help="Server ping interval (s)."),
    lifetime: float | None = typer.Option(None, "--lifetime", help="WS connection lifetime (s)."),
    debug: bool = typer.Option(False, "--debug", help="Debug logging and tracebacks."),
) -> None:
    """Serve a Binance-compatible venue (REST + WebSocket) on one local port: a recorded day
    (`--date 20240501 --speed 50x`) or the synthetic market (`--synthetic`).

    A recorded day is paced by arrival time; the venue starts once every symbol's book is valid, an
    unsynced span of the recording cuts all connections (REST depth answers 503 until the book is valid
    again), and at the end of the data all connections are closed and the command exits (code 0).
    """
    from recorder.markets import get_market
    from replay.venue.faults import FaultSpec
    from replay.venue.server import VenueServer
    from replay.venue.synthetic import check_symbols
    from schemas import DatasetError

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    source = None
    try:
        if synthetic and date is not None:
            raise BadInput("give either --date (a recorded day) or --synthetic, not both")
        if not synthetic and date is None:
            raise BadInput("give --date (a recorded day, e.g. --date 20240501) or --synthetic")
        if date is None and (start is not None or end is not None or depth_stream is not None):
            raise BadInput("--from, --to and --depth-stream need --date")
        data = dataset_root(data)
        mk = get_market(market)
        spd = parse_speed(speed)
        spec = FaultSpec.parse(faults)
        if not 0 <= port <= 65535:
            raise BadInput(f"bad port {port}")
        if synthetic:
            syms = check_symbols(mk, (symbols or "BTCUSDT").split(","))
        else:
            from replay.venue.recorded import RecordedSource

            day = resolve_date(date)
            check_market_has_day(data, mk, day)
            start_ns, end_ns = _day_span(day, start, end)
            wanted = _symbol_list(symbols)
            source = RecordedSource(data, mk, day, wanted, start_ns, end_ns, depth_suffix=depth_stream)
            syms = source.symbols()
        venue = VenueServer(
            mk,
            syms,
            source=source,
            host=host,
            port=port,
            speed=spd,
            faults=spec,
            seed=seed,
            ping_interval=ping_interval,
            lifetime=lifetime,
        )
    except (ValueError, BadInput, DatasetError) as e:
        _fail(str(e), debug, e)
        return
    try:
        if source is None:
            asyncio.run(_serve(venue))
        elif not asyncio.run(_serve_recorded(venue, source)):
            print("replay: error: the venue failed while serving the recorded day (see the log)", file=sys.stderr)
            raise typer.Exit(1)
    except OSError as e:
        import errno

        if e.errno == errno.EADDRINUSE:
            _fail(f"cannot listen on {host}:{port}: address already in use", debug, e)
        _fail(f"cannot listen on {host}:{port}: {e.strerror or e}", debug, e)
    except DatasetError as e:
        _fail(str(e), debug, e)
    except KeyboardInterrupt:
        pass


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM, so a serving loop ends cleanly (exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-unix
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve_recorded(venue, source) -> bool:  # type: ignore[no-untyped-def]
    """Serve a recorded day until its end (or a signal), then stop; False if the venue failed."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from replay.venue.clock import format_speed

    def clock(ms: int) -> str:  # Berlin time, as --from/--to
        return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo("Europe/Berlin")).isoformat(timespec="milliseconds")

    stop = _stop_on_signals()
    await venue.start()
    end_ns = min(source.last_ns, source.day.end_ns or source.last_ns)
    print(
        f"venue ready: market={venue.market.name} date={source.date} symbols={','.join(venue.symbols)} "
        f"depth={source.depth_suffix} batched={','.join(sorted(venue.depth_served - {source.depth_suffix})) or '-'} "
        f"from={clock(source.start_ms)} to={clock(end_ns // 1_000_000)} "
        f"speed={format_speed(venue.speed)} faults={venue.faults} rest={venue.rest_url} ws={venue.ws_url}",
        flush=True,
    )
    pump = venue._pump_task
    while not stop.is_set() and not source.finished:
        if pump is not None and pump.done():
            break  # the pump died (logged): nothing more will be served
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    if source.finished:
        await asyncio.sleep(0.3)  # let the close frames go out
        print(f"end of data at {clock(source.last_event_ms)}: {source.published:,} events replayed, "
              f"{source.outages} outage(s)", flush=True)
    died = pump is not None and pump.done() and not pump.cancelled() and pump.exception() is not None
    await venue.stop()
    return not died


async def _serve(venue) -> None:  # type: ignore[no-untyped-def]
    stop = _stop_on_signals()
    await venue.start()
    from replay.venue.clock import format_speed

    print(
        f"venue ready: market={venue.market.name} symbols={','.join(venue.symbols)} speed={format_speed(venue.speed)} "
        f"faults={venue.faults} rest={venue.rest_url} ws={venue.ws_url}",
        flush=True,
    )
    await venue.serve_forever(stop)


app.command("export")(export_command)


@app.command()
def calibrate(
    date: str = typer.Option(..., "--date", help=DAYS_HELP),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Calibrate the days of --date that have data "
                                      "(default: a day without data is an error)."),
    data: Annotated[Path | None, typer.Option("--data", help=DATA_HELP)] = None,
    market: str = typer.Option("spot", "--market", help="spot | usdm | coinm"),
    symbols: str | None = typer.Option(None, "--symbols", help="Comma-separated (default: all of the day)."),
    start: str | None = typer.Option(None, "--from", help="Start time in Berlin, e.g. 09:30."),
    end: str | None = typer.Option(None, "--to", help="End time in Berlin, e.g. 12:00."),
    halflife: str = typer.Option("5m", "--sigma-halflife", help="EWMA half-life of σ."),
    window: str = typer.Option("10m", "--window", help="Rolling window of the A, k fits."),
    strategy: str = typer.Option("as", "--strategy", help="Model to propose γ for: as | glft."),
    target: float | None = typer.Option(None, "--target-half-spread", help=(
        "Wanted distance of each quote from the mid, in ticks (default: the smallest the model quotes).")),
    maker_fee: float | None = typer.Option(None, "--maker-fee", help=(
        "Your maker fee as a fraction of notional, e.g. 0.0002 or -0.00005 (default: the market's VIP 0 rate); "
        "written to the config.")),
    write: Annotated[Path | None, typer.Option(
        "--write", help="Write a complete `simulator:` config: the fits and the proposed γ (one day only).")] = None,
    address: str | None = typer.Option(None, "--address", help="Over several days, with Ray installed: the Ray cluster "
                                       "to fit on, as replay sweep (default: $RAY_ADDRESS, else a local Ray)."),
    cpus: int | None = typer.Option(None, "--cpus", min=1, help="A local Ray: use this many cores (default all)."),
    out: Annotated[Path | None, typer.Option("--out", help=(
        "Over several days: directory for the table calibration-MARKET-FIRST-LAST.parquet and its .html "
        "(default DATA/reports/EXCHANGE)."))] = None,
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
) -> None:
    """σ (EWMA of mid changes) and the trade-intensity fit λ(δ) = A·e^(−kδ) of a recorded day, and the
    strategy parameters (γ, for GLFT ξ = γ) that quote sensibly on it, with the reasoning. Over several days
    (--date A..B): the fits per day and symbol as a table, a Parquet file and an HTML page of their time series."""
    import dataclasses

    from rich.table import Table

    from recorder.config import parse_duration
    from recorder.markets import get_market, quote_currency
    from replay.engine import TRADE, DayReplay
    from replay.sim.calibrate import calibrate_day, day_tick, table_row
    from replay.sim.params import SimParams, params_yaml
    from replay.view import wide_console
    from schemas import DatasetError

    try:
        data = dataset_root(data)
        mk = get_market(market)
        check_market_has_day(data, mk, None)
        days = recorded_days(data, mk, date, skip_missing)
        if write is not None and (len(days) > 1 or ".." in date or "," in date):
            raise BadInput(f"--write takes one day (γ is proposed for that day's span and mid); --date {date} "
                           f"names {len(days)}: calibrate the day you will backtest")
        wanted = _symbol_list(symbols)
        halflife_s, window_s = parse_duration(halflife), parse_duration(window)
        if halflife_s <= 0 or window_s <= 0:
            raise BadInput("--sigma-halflife and --window must be > 0")
        if target is not None and not target > 0:
            raise BadInput("--target-half-spread must be a number of ticks > 0")
        if maker_fee is not None:
            SimParams(maker_fee=maker_fee).check()  # the simulator's own rule for a fee
        spans = {day: _day_span(day, start, end) for day in days}
        # every day is checked (symbols, files, --from/--to) before any is calibrated
        symbols_by_day = {day: DayReplay(data, mk, day, wanted, *spans[day], channels=(TRADE,)).symbols
                          for day in days}
        table_wanted = len(days) > 1 or ".." in date or "," in date  # a range or a list: the table, even of one day
        rows = _calibrate_on_ray(data, mk, days, symbols_by_day, spans, halflife_s, window_s, address, cpus) \
            if table_wanted and _ray_installed() else []
        for day in days if not rows else []:
            results, proposals = [], []
            for symbol in symbols_by_day[day]:
                result = calibrate_day(data, mk, day, symbol, halflife_s, window_s, *spans[day])
                results.append(result)
                rows.append(table_row(day.isoformat(), result))
                if len(days) == 1:
                    one = DayReplay(data, mk, day, [symbol], *spans[day], channels=(TRADE,))
                    proposals.append(_proposal(result, one, mk, day_tick(data, mk, day, symbol), strategy, target,
                                               maker_fee))
    except (ValueError, BadInput, DatasetError) as e:
        _fail(str(e), debug, e)
        return
    if table_wanted:
        _calibration_table(rows, out or data / "reports" / mk.exchange, mk.name, debug)
        return
    day = days[0]
    table = Table(title=f"calibration {mk.name} {day}: σ price/√s, A trades/s, k per price unit",
                  caption="σ: std of 1-s mid changes; A, k: fit over the span; medians: rolling fits")
    for column in ("symbol", "seconds", "trades", "σ", "A", "k", "R²", "fits", "A med", "k med"):
        table.add_column(column, justify="left" if column == "symbol" else "right")

    def num(value: float | None) -> str:
        return "–" if value is None else f"{value:.4g}"

    for r in results:
        fit = r["fit"] or {}
        rolling = r["rolling"]
        table.add_row(r["symbol"], f"{r['span_s']:,.0f}", f"{r['trades']:,}", num(r["sigma"]), num(fit.get("A")),
                      num(fit.get("k")), num(fit.get("r2")), str(rolling["fits"]), num(rolling["A_median"]),
                      num(rolling["k_median"]))
    console = wide_console()
    console.print(table)
    for r, proposal in zip(results, proposals):
        if proposal is None:
            console.print(f"{r['symbol']}: too few trades or mid changes for a fit: no strategy parameters proposed")
            continue
        currency = quote_currency(r["symbol"]) or "quote currency"
        console.print(f"[bold]{r['symbol']}: proposed {strategy} γ = {proposal['gamma']:.4g} per ({currency} × order "
                      f"size){' (ξ = γ)' if strategy == 'glft' else ''}[/], quotes ±{proposal['half_spread']:.6g} "
                      f"{currency} from the reservation price")
        for line in proposal["reasoning"]:
            console.print(f"  - {line}", highlight=False)
    if write is not None:
        chosen = next(((r, p) for r, p in zip(results, proposals) if p is not None), None)
        if chosen is None:
            _fail("no symbol has enough trades and mid changes for a fit; nothing written", debug)
        r, proposal = chosen
        values = dict(dataclasses.asdict(SimParams()), strategy=strategy, gamma=proposal["gamma"], sigma=r["sigma"],
                      A=r["fit"]["A"], k=r["fit"]["k"], fee_aware=proposal["fee_aware"], maker_fee=maker_fee)
        source = (f"replay calibrate --date {day} --market {mk.name}: {r['symbol']}, {r['trades']} trades "
                  f"over {r['span_s']:.0f} s (R² {r['fit']['r2']:.3f})")
        comment = "\n".join([source, *proposal["reasoning"]])
        try:
            write.write_text(params_yaml(values, comment))
        except OSError as e:
            _fail(f"cannot write {write}: {e.strerror or e}", debug, e)
        console.print(f"wrote {write}", soft_wrap=True)


def _ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _calibrate_on_ray(data: Path, mk, days: list, symbols_by_day: dict, spans: dict, halflife_s: float,  # type: ignore[no-untyped-def]
                      window_s: float, address: str | None, cpus: int | None) -> list[dict]:
    """The table's rows, one Ray task per (day, symbol) as `replay sweep` calibrates; BadInput naming the first
    (day, symbol) that could not be calibrated."""
    from rich.console import Console

    from replay.sim.params import SimParams
    from replay.sweep.cluster import RayUnavailable, connect, disconnect
    from replay.sweep.runner import calibrate, progress_bar
    from replay.sweep.task import SweepSpec

    spec = SweepSpec(str(data.resolve()), mk.name, SimParams(sigma_halflife=halflife_s, intensity_window=window_s))
    items = [(day.isoformat(), symbol, *spans[day]) for day in days for symbol in symbols_by_day[day]]
    console = Console(stderr=True)
    try:
        console.print(connect(address, cpus), highlight=False)
    except RayUnavailable as exc:
        raise BadInput(str(exc)) from None
    try:
        with progress_bar(console, console.is_terminal) as bar:
            found = calibrate(spec, items, 2, bar)
    finally:
        disconnect()
    rows = [found[item[:2]] for item in items]
    failed = next((row for row in rows if row.get("error")), None)
    if failed is not None:
        raise BadInput(f"{failed['date']} {failed['symbol']}: {failed['error']}")
    return [{key: value for key, value in row.items() if key != "error"} for row in rows]


def _calibration_table(rows: list[dict], out: Path, market: str, debug: bool) -> None:
    """The calibration over several days: printed per (day, symbol), written as Parquet and an HTML page."""
    from rich.table import Table

    from replay.sim.calibrate import write_table
    from replay.sim.report import _cell, render_calibration_html
    from replay.view import wide_console

    first, last = rows[0]["date"], rows[-1]["date"]
    title = f"calibration {market} {first} to {last}"
    table = Table(title=f"{title}: σ price/√s, A trades/s, k per price unit",
                  caption="σ: std of 1-s mid changes; A, k: fit over each day's span; medians: rolling fits")
    columns = {"date": "day", "symbol": "symbol", "seconds": "seconds", "trades": "trades", "sigma": "σ", "A": "A",
               "k": "k", "r2": "R²", "fits": "fits", "A_median": "A med", "k_median": "k med"}
    for heading in columns.values():
        table.add_column(heading, justify="left" if heading in ("day", "symbol") else "right")
    for row, following in zip(rows, [r["date"] for r in rows[1:]] + [None]):
        table.add_row(*(_cell(round(row[key]) if key == "seconds" else row[key]) for key in columns), end_section=following not in (None, row["date"]))
    console = wide_console()
    console.print(table)
    stem = out / f"calibration-{market}-{first}-{last}"
    parquet, html = stem.with_suffix(".parquet"), stem.with_suffix(".html")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_table(rows, parquet)
        html.write_text(render_calibration_html(rows, title))
    except OSError as e:
        _fail(f"cannot write {stem}: {e.strerror or e}", debug, e)
    console.print(f"wrote {parquet}\nwrote {html}", highlight=False, soft_wrap=True)


def _proposal(result: dict, replay, mk, tick: float, strategy: str, target: float | None,  # type: ignore[no-untyped-def]
              maker_fee: float | None) -> dict | None:
    """γ for the strategy on this symbol's fits (None without a fit), as `replay` would run it by default."""
    from recorder.markets import quote_currency
    from recorder.window import TradingWindow
    from replay.sim.calibrate import propose_strategy
    from replay.sim.params import SimParams
    from replay.sim.run import DEFAULT_FEES, horizon_ns

    if not (result["fit"] and result["sigma"] and result["mid"]):
        return None
    import datetime as dt

    params = SimParams()
    end = horizon_ns(params, replay, result["last_ns"], TradingWindow(dt.time(8), dt.time(22)))
    mean_left = max(0.0, (end - (result["first_ns"] + result["last_ns"]) / 2) / 1e9)
    return propose_strategy(strategy, sigma=result["sigma"], A=result["fit"]["A"], k=result["fit"]["k"], tick=tick,
                            mid=result["mid"], mean_time_left=mean_left, soft_limit=params.soft_limit,
                            maker_fee=DEFAULT_FEES[mk.name][0] if maker_fee is None else maker_fee,
                            target_ticks=target, currency=quote_currency(result["symbol"]) or "price")


@app.command()
def prepare(
    date: str = typer.Option(..., "--date", help=DATE_HELP),
    data: Annotated[Path | None, typer.Option("--data", help=DATA_HELP)] = None,
    market: str = typer.Option("spot", "--market", help="spot | usdm | coinm"),
    symbols: str | None = typer.Option(None, "--symbols", help="Comma-separated (default: all of the day)."),
    cache: Annotated[Path | None, typer.Option(
        "--cache", help="Where prepared days live (default: DATA/prepared).")] = None,
    force: bool = typer.Option(False, "--force", help="Rebuild even if the prepared day is current."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar while building."),
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
) -> None:
    """Build the prepared day (typed event columns, memory-mapped by later runs) of each symbol ahead of
    time; a current one is kept unless --force."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from recorder.markets import get_market
    from replay.engine import TRADE, DayReplay
    from replay.prepared import PreparedDay
    from schemas import DatasetError

    logging.basicConfig(level=logging.WARNING, format="replay: %(message)s")
    try:
        data = dataset_root(data)
        mk = get_market(market)
        check_market_has_day(data, mk, None)
        days = recorded_days(data, mk, date)
        wanted = [(day, symbol) for day in days
                  for symbol in DayReplay(data, mk, day, _symbol_list(symbols), channels=(TRADE,)).symbols]
    except (ValueError, BadInput, DatasetError) as e:
        _fail(str(e), debug, e)
        return
    console = Console(stderr=True)
    bar = Progress(TextColumn("[bold]prepare[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("rows"), TimeElapsedColumn(), console=console, disable=not progress, transient=True)
    for day, symbol in wanted:
        prepared = PreparedDay(data, mk, day, symbol, cache)
        started = time.perf_counter()
        try:
            with bar:
                task = bar.add_task(symbol, total=None)
                prepared.load_or_build(lambda done, total, task=task: bar.update(task, completed=done, total=total),
                                       force)
                bar.remove_task(task)
        except (ValueError, DatasetError, OSError) as e:
            _fail(f"{symbol}: {e}", debug, e)
            return
        meta = prepared.meta
        state = f"built in {time.perf_counter() - started:.1f} s" if prepared.built else "up to date"
        where = f"{day} {symbol}" if len(days) > 1 else symbol
        typer.echo(f"{where}: {meta.rows:,} rows, {state}, {prepared.size_bytes() / 1e6:,.1f} MB, {prepared.path}")


@app.command()
def sweep(
    date: str = typer.Option(..., "--date", help=DAYS_HELP),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Sweep the days of --date that have data "
                                      "(default: a day without data is an error)."),
    data: Annotated[Path | None, typer.Option("--data", help=DATA_HELP)] = None,
    market: str = typer.Option("spot", "--market", help="spot | usdm | coinm"),
    symbols: str | None = typer.Option(None, "--symbols", help="Comma-separated (default: all of each day)."),
    strategy: str | None = typer.Option(None, "--strategy", help="as | glft | join | fixed | module:Class."),
    grid: Annotated[list[str] | None, typer.Option("--grid", help=(
        "A swept parameter (repeat): gamma=0.01,0.05,0.1 (values), gamma=0.01:0.2:log5 or :lin5 (5 values, ends "
        "included), order_size=0.001:0.004:0.001 (a step). With --search: gamma=0.01:0.2:log (a range)."))] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="A fixed simulator parameter: KEY=VALUE (repeat).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help=(
        "YAML with a `simulator:` section (the fixed parameters) and a `sweep:` section (grid, objective, search, "
        "trials); flags win."))] = None,
    search: str | None = typer.Option(None, "--search", help="optuna: search the --grid ranges with Optuna on Ray "
                                      "Tune, stopping bad parameter sets after a few days (ASHA)."),
    trials: int | None = typer.Option(None, "--trials", min=1, help="Parameter sets tried by --search (default 50)."),
    objective: str | None = typer.Option(None, "--objective", help="What ranks the parameter sets (maximised): "
                                         "pnl (mean daily PnL, default) | sharpe | pnl_per_fill | fill_ratio | calmar."),
    walk_forward: bool = typer.Option(False, "--walk-forward", help="Trade each day with σ, A, k calibrated on the "
                                      "recorded day before it (as, glft)."),
    calibration: bool = typer.Option(True, "--calibration/--no-calibration", help="Calibrate every swept day for "
                                     "the leaderboard's σ, A, k series."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to run on: host:6379 or "
                                       "ray://host:10001 (default: $RAY_ADDRESS, else a local Ray on this machine)."),
    cpus: int | None = typer.Option(None, "--cpus", min=1, help="A local Ray: use this many cores (default all)."),
    retries: int = typer.Option(2, "--retries", min=0, help="Runs of a task whose worker died, before it is "
                                "recorded as failed."),
    resume: bool = typer.Option(False, "--resume", help="Continue the sweep in --out: run only the tasks not done."),
    out: Annotated[Path | None, typer.Option("--out", help=(
        "Directory of the sweep (default DATA/reports/EXCHANGE/sweep-ID; ID names the sweep's definition)."))] = None,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
) -> None:
    """Backtest every (parameter set, day, symbol) on Ray, a local instance or a cluster: a results table per task
    and per parameter set (Parquet) and an HTML leaderboard. Exit 1 if a task failed (its row says why)."""
    from rich.console import Console

    from recorder.markets import get_market
    from replay.sweep.cluster import RayMissing, RayUnavailable, disconnect, ray_module
    from replay.sweep.command import day_symbols, make_plan, run_plan
    from replay.sweep.leaderboard import print_leaderboard
    from replay.sweep.space import SweepSpaceError
    from replay.sweep.store import SweepStoreError
    from replay.view import wide_console
    from schemas import DatasetError, parse_date

    try:
        ray_module()
        data = dataset_root(data)
        mk = get_market(market)
        check_market_has_day(data, mk, None)
        days = recorded_days(data, mk, date, skip_missing)
        wanted = _symbol_list(symbols)
        base = _sim_params(config, strategy, None, None, None, None, param)
        symbols_by_day, unreadable = {}, []
        for day in days:
            symbols_by_day[day], problem = day_symbols(data, mk, day, wanted)
            if problem:
                unreadable.append(f"{day}: {problem}: the tasks that read it will fail")
        recorded = [parse_date(d) for d in _days_by_market(data).get(mk.name, [])]
        plan = make_plan(data=data, market=mk, days=days, recorded=recorded, symbols_by_day=symbols_by_day,
                         base=base, grid=grid or [], config=config, search=search, trials=trials,
                         objective=objective, walk_forward=walk_forward, calibration=calibration, out=out)
        if resume and plan.search:
            raise BadInput("--resume continues a grid sweep; a --search starts a new study: give it another --out")
    except RayMissing as e:
        _fail(str(e), debug, e)
        return
    except (ValueError, BadInput, DatasetError, SweepSpaceError) as e:
        _fail(str(e), debug, e)
        return
    console = wide_console()
    what = (f"{plan.search} search, {plan.trials} trials" if plan.search else
            f"{len(plan.tasks):,} tasks ({len({t.set_id for t in plan.tasks}):,} parameter sets)")
    for line in unreadable:
        Console(stderr=True).print(line, soft_wrap=True, highlight=False)
    console.print(f"sweep {plan.definition['id']}: {what} over {len(days)} day{'s' if len(days) > 1 else ''}, "
                  f"objective {plan.objective}; writing {plan.out}/", soft_wrap=True, highlight=False)
    try:
        result = run_plan(plan, address=address, cpus=cpus, resume=resume, retries=retries,
                          console=Console(stderr=True), progress=progress)
    except (SweepStoreError, RayUnavailable, OSError) as e:
        _fail(str(e), debug, e)
        return
    print_leaderboard(result.sets, plan.objective, plan.swept, console)
    for path in result.files:
        console.print(f"wrote {path}", soft_wrap=True, highlight=False)
    failed = [r for r in result.rows if r.get("error")]
    f = result.figures
    console.print(f"{len(result.rows):,} task results: ran {f.ran:,} now ({f.skipped:,} done before), "
                  f"{len(failed):,} failed; {f.seconds:.1f} s", highlight=False)
    for row in failed[:5]:
        console.print(f"failed: {row['day']} {row['symbol']} {row['params']}: {row['error']}", soft_wrap=True,
                      highlight=False)
    disconnect()
    if result.interrupted:
        console.print("interrupted: the tables hold the tasks that finished; the same command with --resume runs "
                      "the rest", highlight=False)
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


@app.command()
def montecarlo(
    gamma: Annotated[list[float] | None, typer.Option("--gamma", help="Risk aversion; repeat for several.")] = None,
    paths: Annotated[int, typer.Option("--paths", help="Simulated paths per row.")] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    spread_convention: Annotated[str, typer.Option(
        "--spread-convention", help="paper: (2/g)ln(1+g/k) as the paper's table; model: + g*sigma^2*(T-t)")] = "paper",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the rows as JSON here.")] = None,
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
) -> None:
    """The Avellaneda-Stoikov (2008) simulation: inventory vs symmetric strategy (s0=100, T=1, sigma=2,
    dt=0.005, A=140, k=1.5)."""
    import json

    from rich.table import Table

    from replay.montecarlo import table
    from replay.view import wide_console

    try:
        rows = table(gamma or [0.1, 0.01, 0.5], paths, seed, spread_convention)
    except ValueError as e:
        _fail(str(e), debug, e)
        return
    out = Table(title=f"Avellaneda-Stoikov simulation, {paths} paths, seed {seed}, spread convention "
                      f"{spread_convention}")
    for column in ("gamma", "strategy", "spread", "profit mean", "profit std", "final q mean", "final q std"):
        out.add_column(column, justify="left" if column == "strategy" else "right")
    for r in rows:
        out.add_row(f"{r['gamma']:g}", r["strategy"], f"{r['spread']:.2f}", f"{r['profit_mean']:.2f}",
                    f"{r['profit_std']:.2f}", f"{r['q_mean']:.2f}", f"{r['q_std']:.2f}")
    wide_console().print(out)
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
