"""`recorder import`: third-party Binance captures -> the dataset, through the live recorder's own code.

Records of the capture files (`recorder.captures.iter_capture`, merged in recv_ts order) go through the same
`Pipeline(market, use_engine=True)` the live recorder uses, so the rows, the `seq` numbering, the Berlin
date partition (from `recv_ts`) and the sync engine's events (`need_snapshot`, `synced`, `gap`, ...) are
exactly those a live recording of the same traffic would have written:

    ws            -> pipeline.frame(recv_ts, payload)      (channels the dataset does not record, e.g.
                                                            kline_1m or markPrice@1s, are skipped and counted)
    rest          -> pipeline.snapshot(recv_ts, symbol, payload, limit or 0)
    exchange_info -> pipeline.instruments(...) for the symbols the capture holds rows for (its seq is
                     taken when it arrives; the rows are added once the symbols are known, at the end)
    connect       -> pipeline.event(recv_ts, None, "connect", {"url": ...})

plus a `window_start` event (detail `{"import": [file names], ...}`) at the first record and a `window_end`
event at the last one. Imports keep every row whatever the trading window.

Writing. Segments are written under `<out>/.import-tmp/<tag>-<pid>/` (a dot directory: never data for
readers), flushed every `flush_rows` buffered messages to bound memory, and named `seg-<n>-<tag>` with the
shard tag `import-<hash of the input file names and sizes>`, so an import never collides with a live
recording (`<i>of<n>` tags) or with another import. Once the whole input was read, each day is compacted
there (`compact_day`) and the finished `day-<tag>.parquet` files are moved into place with `os.replace`.
A failed import (bad or truncated file, I/O error) removes its temp directory and leaves the dataset exactly
as it was. Importing the same files again replaces that import's day files (same tag) instead of adding
duplicates. `seq` starts above the highest seq already in `<out>/<exchange>`, so it stays unique per day
when an import shares a day with a recording or another import.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import orjson
import pyarrow.parquet as pq
import typer

from recorder.captures import (
    KIND_CONNECT,
    KIND_EXCHANGE_INFO,
    KIND_REST,
    KIND_WS,
    CaptureError,
    iter_capture,
    market_of_cryptofeed_file,
    market_of_hftbacktest_file,
)
from recorder.compaction import compact_day
from recorder.markets import Market, get_market
from recorder.pipeline import Pipeline, tune_gc, tune_malloc
from recorder.protocol import Instrument, parse_exchange_info
from schemas import CONNECTION_WIDE_SYMBOL, berlin_date

__all__ = [
    "DEFAULT_FLUSH_ROWS",
    "ImportResult",
    "ImportSession",
    "detect_market",
    "import_captures",
    "import_command",
    "import_shard_tag",
]

EXIT_OK, EXIT_USAGE, EXIT_IO = 0, 2, 3  # as recorder.runtime: 2 bad input, 3 I/O failure
DEFAULT_FLUSH_ROWS = 200_000  # buffered messages (pipeline.pending_rows) before a segment is written
TMP_DIR = ".import-tmp"
SESSION_GAP_NS = 10 * 60 * 1_000_000_000  # a silence this long starts a new session
_CHECK_EVERY = 1024  # records between two looks at the buffer size
# Stream channels the dataset records; envelopes of any other channel (kline, markPrice, partial book depth
# `depth5@100ms`, whose futures frames look like diffs but are not) are skipped and counted.
_RECORDED_CHANNELS = frozenset({b"depth", b"trade", b"aggTrade", b"bookTicker"})
_ENVELOPE = b'{"stream":"'


@dataclass
class ImportSession:
    """A stretch of the input without a reconnect or a silence of SESSION_GAP_NS."""

    start_ns: int
    end_ns: int
    records: int = 0
    connects: int = 0


@dataclass
class ImportResult:
    market: str
    exchange: str
    shard_tag: str
    files: list[str]  # input file names
    records: int = 0  # capture records read
    # messages buffered per (table, date, symbol): one per depth diff/snapshot/trade/ticker/event/instrument;
    # symbol "_all" for connection-wide events
    messages: dict[tuple[str, dt.date, str], int] = field(default_factory=dict)
    # Parquet rows written per (table, date, symbol): depth and snapshots have one row per price level
    rows: dict[tuple[str, dt.date, str], int] = field(default_factory=dict)
    dates: list[dt.date] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)  # final day files in the dataset
    sessions: list[ImportSession] = field(default_factory=list)
    events: Counter = field(default_factory=Counter)  # event kinds written
    synced: set[str] = field(default_factory=set)  # symbols whose book got synced at least once
    skipped: Counter = field(default_factory=Counter)  # ws frames of channels the dataset does not record
    rejected: int = 0  # messages whose values did not convert at flush (set aside, with an event)
    cut_lines: list[str] = field(default_factory=list)  # "file:line" of payloads cut mid-JSON (a truncated capture)
    seq_range: tuple[int, int] = (0, 0)  # (first, last) seq of this import
    elapsed_s: float = 0.0

    @property
    def symbols(self) -> list[str]:
        return sorted({s for (_, _, s) in self.messages if s != CONNECTION_WIDE_SYMBOL})

    def total(self, table: str, symbol: str | None = None) -> int:
        """Messages of `table` (optionally one symbol) over all dates."""
        return sum(n for (t, _, s), n in self.messages.items() if t == table and (symbol is None or s == symbol))

    @property
    def rows_written(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_s(self) -> float:
        return self.rows_written / self.elapsed_s if self.elapsed_s > 0 else 0.0


# ---- naming -------------------------------------------------------------------------------------------


def import_shard_tag(paths: list[Path]) -> str:
    """`import-<12 hex>` from the input file names and sizes (order-independent).

    The same files give the same tag (a re-import replaces its own day files); different inputs, live
    recordings (`<i>of<n>`) and other imports never share one.
    """
    digest = hashlib.sha256()
    for name, size in sorted((p.name, p.stat().st_size) for p in paths):
        digest.update(f"{name}\0{size}\n".encode())
    return f"import-{digest.hexdigest()[:12]}"


def detect_market(paths: list[Path]) -> str:
    """Market of the capture files from their names (hftbacktest prefixes, cryptofeed exchanges, URLs)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        try:
            market = market_of_hftbacktest_file(path)
        except ValueError:
            market = market_of_cryptofeed_file(path)
        if market is None:
            raise ValueError(f"{path}: cannot tell the market from the file name; pass --market spot|usdm|coinm")
        found.setdefault(market, []).append(path.name)
    if len(found) > 1:
        parts = "; ".join(f"{m}: {', '.join(names)}" for m, names in sorted(found.items()))
        raise ValueError(f"captures of different markets ({parts}); import each market separately")
    return next(iter(found))


def _max_seq(root: Path, exchange: str) -> int:
    """Highest seq in <root>/<exchange> from Parquet statistics (footers only, no data read)."""
    base = root / exchange
    if not base.is_dir():
        return 0
    return max((_file_max_seq(p) for p in base.glob("*/date=*/symbol=*/*.parquet") if not p.name.startswith(".")),
               default=0)


def _file_max_seq(path: Path) -> int:
    try:
        meta = pq.read_metadata(path)
        index = meta.schema.names.index("seq")
    except (OSError, ValueError):  # not ours to judge here: the readers report unusable files
        return 0
    best = 0
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(index).statistics
        if stats is not None and stats.has_min_max:
            best = max(best, stats.max)
    return best


def _channel_recorded(payload: bytes) -> tuple[bool, bytes]:
    """(recorded?, channel) of a combined-stream envelope `{"stream":"btcusdt@depth@100ms",...`."""
    end = payload.find(b'"', 11, 200)
    at = payload.find(b"@", 11, end)
    channel = payload[at + 1 : end] if at > 0 else b""
    return channel in _RECORDED_CHANNELS or channel.startswith(b"depth@"), channel


# ---- import -------------------------------------------------------------------------------------------


class _Importer:
    def __init__(self, paths: list[Path], market: Market, out: Path, flush_rows: int) -> None:
        self.paths = paths
        self.market = market
        self.out = out
        self.flush_rows = flush_rows
        self.tag = import_shard_tag(paths)
        self.names = [p.name for p in paths]
        self.tmp = out / TMP_DIR / f"{self.tag}-{os.getpid()}"
        self.result = ImportResult(market.name, market.exchange, self.tag, self.names)
        self.seq_start = _max_seq(out, market.exchange)
        self.pipeline = Pipeline(market, use_engine=True, seq_start=self.seq_start)
        tune_gc()
        tune_malloc()
        self.segments = 0
        self.info: list[tuple[int, int, dict[str, Instrument]]] = []  # (seq, recv_ts, instruments)

    # ---- buffers -> segments

    def _account(self) -> None:
        """Count what the buffers hold before they are written."""
        messages = self.result.messages
        for day, buffers in self.pipeline.buffers.items():
            buffers.gather()
            for (table, symbol), rows in buffers.rows.items():
                if not rows:
                    continue
                key = (table, day, symbol or CONNECTION_WIDE_SYMBOL)
                messages[key] = messages.get(key, 0) + len(rows)
                if table == "events":
                    for row in rows:  # (ts, seq, symbol, kind, detail)
                        self.result.events[row[3]] += 1
                        if row[3] == "synced" and row[2]:
                            self.result.synced.add(row[2])

    def flush(self) -> None:
        self._account()
        self.segments += 1
        _, rejected = self.pipeline.flush(self.tmp, f"seg-{self.segments:06d}-{self.tag}")
        for bad in rejected:  # as the live recorder: record it, resync the symbol's book
            self.result.rejected += 1
            key = (bad.table, berlin_date(bad.recv_ts), bad.symbol or CONNECTION_WIDE_SYMBOL)
            self.result.messages[key] -= 1
            self.pipeline.set_aside(bad, bad.recv_ts)

    # ---- records -> pipeline

    def read(self) -> None:
        pipeline, result = self.pipeline, self.result
        snapshot = pipeline.snapshot
        batch_ts: list[int] = []
        batch: list[bytes] = []  # consecutive frames, handed to the pipeline as one batch

        def hand_over() -> None:
            if batch:
                pipeline.frames(batch_ts, batch)
                batch_ts.clear()
                batch.clear()

        skipped = result.skipped
        sessions = result.sessions
        session: ImportSession | None = None
        last_ts = 0
        frames_in_session = 0
        count = 0
        for record in iter_capture(self.paths):
            ts = record.recv_ts
            kind = record.kind
            if session is None:
                pipeline.event(ts, None, "window_start",
                               {"import": self.names, "market": self.market.name, "shard_tag": self.tag})
            if session is None or ts - last_ts > SESSION_GAP_NS or (kind == KIND_CONNECT and frames_in_session):
                session = ImportSession(ts, ts)
                sessions.append(session)
                frames_in_session = 0
            session.records += 1
            session.end_ns = last_ts = ts
            if kind == KIND_WS:
                frames_in_session += 1
                if record.payload.startswith(_ENVELOPE):
                    recorded, channel = _channel_recorded(record.payload)
                    if not recorded:
                        skipped[channel.decode("ascii", "replace")] += 1
                        continue
                if record.payload[-1:] != b"}" and _cut_mid_json(record.payload):
                    result.cut_lines.append(record.source)
                batch_ts.append(ts)
                batch.append(record.payload)
                if len(batch) < _CHECK_EVERY:
                    continue
            hand_over()
            if kind == KIND_REST:
                if record.symbol is None:
                    raise CaptureError(*_where(record.source), "depth snapshot without a symbol")
                snapshot(ts, record.symbol, record.payload, record.limit or 0)
            elif kind == KIND_EXCHANGE_INFO:
                info = parse_exchange_info(record.payload)
                if isinstance(info, dict):
                    pipeline.seq += 1  # its place in the arrival order; rows added once symbols are known
                    self.info.append((pipeline.seq, ts, info))
                else:
                    pipeline.event(ts, None, "error", {"exchange_info": str(info)[:200]})
            elif kind == KIND_CONNECT:
                session.connects += 1
                pipeline.event(ts, None, "connect", {"url": record.payload.decode("utf-8", "replace")})
            count += 1
            if (kind == KIND_WS or count % _CHECK_EVERY == 0) and pipeline.pending_rows >= self.flush_rows:
                self.flush()
        hand_over()
        result.records = sum(s.records for s in sessions)
        if session is None:
            return
        pending = self._pending_symbols()
        symbols = set(result.symbols) | pending["data"]
        for seq, ts, info in self.info:
            chosen = [info[s] for s in sorted(symbols) if s in info]
            if chosen:
                pipeline.instruments(ts, chosen, None, seq)
        pipeline.event(last_ts, None, "window_end",
                       {"import": self.names, "reason": "end", "synced": sorted(result.synced | pending["synced"])})
        self.flush()
        if pipeline.pending_rows:  # events about rows set aside by the last flush
            self.flush()

    def _pending_symbols(self) -> dict[str, set[str]]:
        """Symbols with data rows, and symbols with a `synced` event, in the buffers not yet written."""
        data, synced = set(), set()
        for buffers in self.pipeline.buffers.values():
            buffers.gather()
            for (table, symbol), rows in buffers.rows.items():
                if table != "events":
                    if symbol and rows:
                        data.add(symbol)
                else:
                    synced.update(row[2] for row in rows if row[3] == "synced" and row[2])
        return {"data": data, "synced": synced}

    # ---- temp -> dataset

    def finish(self) -> None:
        exchange = self.market.exchange
        by_date: dict[dt.date, set[str]] = {}
        for _, day, symbol in self.result.messages:
            symbols = by_date.setdefault(day, set())
            if symbol != CONNECTION_WIDE_SYMBOL:
                symbols.add(symbol)
        for day, symbols in sorted(by_date.items()):
            compact_day(self.tmp, exchange, day, sorted(symbols), self.tag)
        staged = sorted((self.tmp / exchange).glob("*/date=*/symbol=*/*.parquet"))
        leftovers = [p for p in staged if p.name != f"day-{self.tag}.parquet"]
        if leftovers:
            raise RuntimeError(f"compaction left segments behind: {leftovers[0]}")
        rows = self.result.rows
        for path in staged:
            table, date_dir, symbol_dir = path.parts[-4:-1]
            key = (table, dt.date.fromisoformat(date_dir[5:]), symbol_dir[7:])
            rows[key] = rows.get(key, 0) + pq.read_metadata(path).num_rows
        # everything is complete: move the day files into place (same filesystem: atomic renames)
        for path in staged:
            target = self.out / path.relative_to(self.tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            self.result.written.append(target)
        self.result.dates = sorted(by_date)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            self.tmp.parent.rmdir()  # only if no other import is under way
        except OSError:
            pass


def _cut_mid_json(payload: bytes) -> bool:
    """A payload that is not whole JSON (e.g. the last line of a capture cut while it was written)."""
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError:
        return True
    return False


def _where(source: str) -> tuple[str, int]:
    path, _, line = source.rpartition(":")
    return path, int(line) if line.isdigit() else 0


def import_captures(paths: list[Path], market: Market | str, out: Path, *,
                    flush_rows: int = DEFAULT_FLUSH_ROWS) -> ImportResult:
    """Import capture files of one market into the dataset at `out`; see the module docstring.

    Raises CaptureError (one line `<file>:<line>: <reason>`) on a bad or truncated file and ValueError on
    bad arguments; in both cases, and on any other failure, nothing of this import is left in `out`.
    """
    started = time.perf_counter()
    if isinstance(market, str):
        market = get_market(market)
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no capture files given")
    for path in paths:
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
    out = Path(out)
    importer = _Importer(paths, market, out, flush_rows)
    try:
        importer.read()
        importer.finish()
    finally:
        importer.cleanup()
    result = importer.result
    if result.messages:
        result.seq_range = (importer.seq_start + 1, importer.pipeline.seq)
    result.elapsed_s = time.perf_counter() - started
    return result


# ---- command line -------------------------------------------------------------------------------------


def _market_for(paths: list[Path], market: str | None) -> str:
    """--market, checked against what the file names say; or detected from them."""
    if market is None:
        return detect_market(paths)
    name = get_market(market.strip().lower()).name
    try:
        detected = detect_market(paths)
    except ValueError:
        return name  # names say nothing (or disagree among themselves): --market decides
    if detected != name:
        raise ValueError(f"--market {name} but the file names say {detected} ({', '.join(p.name for p in paths)})")
    return name


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"recorder: error: {message}", err=True)
    return typer.Exit(code)


def print_summary(result: ImportResult, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"recorder import -> {out} ({result.exchange}, shard {result.shard_tag})")
    for name in ("table", "date", "symbol"):
        table.add_column(name)
    table.add_column("messages", justify="right")
    table.add_column("rows", justify="right")
    for key in sorted(result.messages, key=lambda k: (k[1], k[0], k[2])):
        table.add_row(key[0], key[1].isoformat(), key[2], f"{result.messages[key]:,}",
                      f"{result.rows.get(key, 0):,}")
    console.print(table)
    console.print(f"files: {', '.join(result.files)}")
    for s in result.sessions:
        start = dt.datetime.fromtimestamp(s.start_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        console.print(f"session: {start} UTC, {(s.end_ns - s.start_ns) / 1e9:,.0f} s, {s.records:,} records")
    console.print(f"dates: {', '.join(d.isoformat() for d in result.dates) or '-'}")
    console.print(f"synced: {', '.join(sorted(result.synced)) or '-'}; events: "
                  + ", ".join(f"{k} {n}" for k, n in sorted(result.events.items())))
    if result.skipped:
        console.print("skipped (not recorded): " + ", ".join(f"{k} {n}" for k, n in sorted(result.skipped.items())))
    if result.rejected:
        console.print(f"rejected at write: {result.rejected}")
    if result.cut_lines:
        console.print(f"cut mid-JSON (not imported, a parse_error event each): {', '.join(result.cut_lines)}")
    console.print(f"{result.records:,} records -> {result.rows_written:,} rows in {result.elapsed_s:.1f} s "
                  f"({result.rows_per_s:,.0f} rows/s)")


def import_command(
    paths: Annotated[list[Path], typer.Argument(help="Capture files (hftbacktest .gz, cryptofeed dumps).",
                                                show_default=False)],
    market: Annotated[str | None, typer.Option(
        "--market", help="spot | usdm | coinm (default: from the file names)")] = None,
    out: Annotated[Path, typer.Option("--out", help="Dataset root directory.", show_default=False)] = ...,  # type: ignore[assignment]
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Import Binance captures (hftbacktest, cryptofeed) into the dataset, through the recorder's sync engine.

    Exit code: 0 imported, 2 bad input (nothing of this import is written), 3 I/O failure.
    """
    try:
        name = _market_for(list(paths), market)
        result = import_captures(list(paths), get_market(name), out)
    except ValueError as exc:  # CaptureError is a ValueError: "<file>:<line>: <reason>"
        if debug:
            raise
        raise _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, EXIT_USAGE) from None
    except OSError as exc:
        if debug:
            raise
        raise _fail(str(exc).splitlines()[0], EXIT_IO) from None
    for source in result.cut_lines:
        typer.echo(f"recorder: warning: {source}: line cut mid-JSON (a truncated capture?); not imported", err=True)
    print_summary(result, out)
