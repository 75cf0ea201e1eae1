"""`recorder` command line: run (one window), schedule (every day)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from recorder.config import ConfigError, RecorderConfig, load_config, parse_duration, parse_shard
from recorder.health import publish, waiting
from recorder.importer import import_command
from recorder.observability import Health, Metrics, MetricsServer, setup_logging
from recorder.runtime import EXIT_USAGE, Recorder, RecorderError
from recorder.validate import validate_command
from recorder.window import TradingWindow, plan_run

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Record Binance order books (spot, USD-M, COIN-M) into an exact Parquet/CSV dataset.")
log = logging.getLogger("recorder")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config (default: $CONFIG_PATH).")]
MarketOpt = Annotated[str | None, typer.Option("--market", help="spot | usdm | coinm")]
SymbolsOpt = Annotated[str | None, typer.Option("--symbols", help="Comma-separated, e.g. BTCUSDT,ETHUSDT")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Dataset root directory.")]
RestOpt = Annotated[str | None, typer.Option("--rest-url", help="REST base URL (default Binance's).")]
WsOpt = Annotated[str | None, typer.Option("--ws-url", help="WebSocket base URL (default Binance's).")]
ShardOpt = Annotated[str | None, typer.Option("--shard", help="i/n: record the i-th of n symbol shards.")]
MetricsOpt = Annotated[int | None, typer.Option("--metrics-port", help="Serve /metrics and /healthz.")]
LogFormatOpt = Annotated[str | None, typer.Option("--log-format", help="plain | json")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


def print_version(value: bool) -> None:
    """--version (both commands): the installed package's version."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("avellaneda-mm")
    except PackageNotFoundError:
        text = "unknown (not installed)"
    typer.echo(f"avellaneda-mm {text}")
    raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=print_version,
                                                help="Print the version and exit.")] = False) -> None:
    """Record Binance order books (spot, USD-M, COIN-M) into an exact Parquet/CSV dataset."""


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"recorder: error: {message}", err=True)
    return typer.Exit(code)


def _config(config: Path | None, **overrides) -> RecorderConfig:
    symbols = overrides.pop("symbols")
    shard = overrides.pop("shard")
    duration = overrides.pop("duration")
    overrides["symbols"] = None if symbols is None else [s.strip().upper() for s in symbols.split(",") if s.strip()]
    overrides["shard"] = None if shard is None else parse_shard(shard)
    overrides["duration"] = None if duration is None else parse_duration(duration)
    return load_config(config, overrides)


def _on_stop_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call `stop` after one log line saying which signal stops the recorder."""
    def handler(sig: signal.Signals) -> None:
        log.info("stopping on %s", sig.name)
        stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler, sig)


def _run_recorder(recorder: Recorder) -> int:
    async def main() -> int:
        _on_stop_signals(recorder.request_stop)
        return await recorder.run()

    return asyncio.run(main())


@app.command()
def run(
    config: ConfigOpt = None,
    market: MarketOpt = None,
    symbols: SymbolsOpt = None,
    out: OutOpt = None,
    rest_url: RestOpt = None,
    ws_url: WsOpt = None,
    duration: Annotated[str | None, typer.Option("--duration", help="Stop after this long, e.g. 10m.")] = None,
    ignore_window: Annotated[bool, typer.Option("--ignore-window", help="Record now, whatever the time.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Outside the window: exit instead of waiting.")] = False,
    shard: ShardOpt = None,
    metrics_port: MetricsOpt = None,
    log_format: LogFormatOpt = None,
    status: Annotated[bool, typer.Option("--status/--no-status", help="Live status table on a terminal.")] = False,
    validate: Annotated[bool, typer.Option("--validate/--no-validate",
                                           help="Validate the day at the end; its verdict is the exit code.")] = True,
    debug: DebugOpt = False,
) -> None:
    """Record the Berlin trading window (default 08:00-22:00 Europe/Berlin), compact, and exit.

    Exit code: 0 healthy recording, 1 unhealthy (a symbol never synced, or a validation check failed),
    2 bad input, 3 I/O failure. The validation report is written to <out>/reports/<exchange>/<date>/.
    """
    try:
        cfg = _config(config, market=market, symbols=symbols, out=out, rest_url=rest_url, ws_url=ws_url,
                      duration=duration, ignore_window=ignore_window or None, shard=shard,
                      metrics_port=metrics_port, log_format=log_format)
        setup_logging(cfg.log.format, "debug" if debug else cfg.log.level)
        code = _run_recorder(Recorder(cfg, no_wait=no_wait, status_view=status, validate=validate))
    except (ConfigError, RecorderError, ValueError) as exc:
        if debug:
            raise
        raise fail(str(exc), getattr(exc, "exit_code", EXIT_USAGE)) from None
    raise typer.Exit(code)


@app.command()
def schedule(
    config: ConfigOpt = None,
    market: MarketOpt = None,
    symbols: SymbolsOpt = None,
    out: OutOpt = None,
    rest_url: RestOpt = None,
    ws_url: WsOpt = None,
    shard: ShardOpt = None,
    metrics_port: MetricsOpt = None,
    log_format: LogFormatOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Daemon: record the window every day (apscheduler, Europe/Berlin), surviving day changes."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger

    try:
        cfg = _config(config, market=market, symbols=symbols, out=out, rest_url=rest_url, ws_url=ws_url,
                      duration=None, ignore_window=None, shard=shard, metrics_port=metrics_port,
                      log_format=log_format)
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc)) from None
    setup_logging(cfg.log.format, "debug" if debug else cfg.log.level)

    window = TradingWindow(cfg.window.start, cfg.window.end, cfg.window.timezone)

    async def main() -> None:
        stop = asyncio.Event()
        current: dict[str, Recorder] = {}
        server = None

        def between_windows() -> Health:
            now = time.time_ns()
            opens_at = plan_run(window, now).start_ns
            return publish(server.metrics, waiting((opens_at - now) / 1e9, len(cfg.shard_symbols)))

        async def record_window() -> None:
            if plan_run(window, time.time_ns(), wait=False) is None:
                log.info("outside the recording window %s-%s %s: next recording at its start",
                         cfg.window.start, cfg.window.end, cfg.window.timezone)
                return
            recorder = Recorder(cfg, no_wait=True, validate=True, metrics_server=server)
            current["recorder"] = recorder
            try:
                code = await recorder.run()
                log.info("window recorded, exit status %d", code)
            except RecorderError as exc:
                log.error("recording failed: %s", exc)
            finally:
                current.pop("recorder", None)
                if server is not None:
                    server.health = between_windows  # keeps the last window's metrics until the next one

        def request_stop() -> None:
            stop.set()
            if "recorder" in current:
                current["recorder"].request_stop()

        _on_stop_signals(request_stop)
        if cfg.metrics_port is not None:  # one server for the scheduler's whole life, across windows
            server = MetricsServer(Metrics(), "0.0.0.0", cfg.metrics_port, between_windows)
            try:
                await server.start()
            except OSError as exc:
                raise RecorderError(f"cannot serve metrics on port {cfg.metrics_port}: {exc.strerror or exc}") from None
        scheduler = AsyncIOScheduler(timezone=cfg.window.timezone)
        trigger = CronTrigger(hour=cfg.window.start.hour, minute=cfg.window.start.minute,
                              timezone=cfg.window.timezone)
        scheduler.add_job(record_window, trigger, max_instances=1, coalesce=True, misfire_grace_time=3600)
        scheduler.start()
        log.info("scheduled daily recording %s-%s %s", cfg.window.start, cfg.window.end, cfg.window.timezone)
        await record_window()  # inside today's window already: record the rest of it
        await stop.wait()
        scheduler.shutdown(wait=False)
        if server is not None:
            await server.stop()

    try:
        asyncio.run(main())
    except RecorderError as exc:
        raise fail(str(exc), exc.exit_code) from None


app.command("import")(import_command)
app.command("validate")(validate_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
