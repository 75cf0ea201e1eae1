"""The prepared day on disk: one symbol's `EventArrays` built once, memory-mapped on every later run.

Where: `<cache>/<exchange>/<YYYY-MM-DD>/<SYMBOL>/`, the cache being `<dataset root>/prepared` unless given.
That directory is outside every `<root>/<exchange>/<table>/` tree, so `schemas.available`, `list_files` and
validation never see it (and it holds no Parquet).

What: one `.npy` per column of `replay.prepared_format.COLUMNS` (`np.load(path, mmap_mode="r")` maps it)
and `meta.json`, written last, holding the format and dataset schema versions, the fingerprint of the
source files (table, name, size, mtime of the symbol's depth, snapshots, trades and instruments files of
the day), the row count, steps, price range, first/last `recv_ts`, the replay's `first_event_ns`, and the
instrument's tick and lot.

A day is built in a hidden temporary directory next to its place and renamed into place when complete,
so a crash never leaves a half-written day that looks complete. Loading checks versions, fingerprint and
every column file's header and length; a day that fails any check is rebuilt (one log line saying why),
never used. Building streams (bounded memory): rows are written block by block in 1e-8 units, the steps
found on the way, and a second chunked pass divides price and qty by them. Reading is chunked too:
`PreparedDay.chunks` maps each column slice afresh and drops the mapping after use, so the resident
memory of a pass over the day is a chunk's, whatever the day's length.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recorder.markets import Market
from replay.engine import TRADE as TRADE_CHANNEL
from replay.engine import DayReplay, _files
from replay.prepared_columnar import NeedsReference, columnar_blocks
from replay.prepared_format import (
    COLUMNS,
    END,
    FORMAT_VERSION,
    LEVEL,
    TRADE,
    EventArrays,
    common_step,
    event_rows,
)
from schemas import SCHEMA_VERSION, parse_date

log = logging.getLogger(__name__)

META = "meta.json"
SOURCE_TABLES = ("depth", "snapshots", "trades", "instruments")
BUILD_BLOCK_ROWS = 65_536  # rows gathered before they are appended to the column files
CHUNK_ROWS = 1 << 20  # default rows per chunk when reading (~35 MB of columns)

Progress = Callable[[int, int], None]  # (rows written, estimated total rows)


@dataclass(frozen=True)
class PreparedMeta:
    """What `meta.json` holds (prices in ticks of `price_step`, times in ns; None where the day has none)."""

    format_version: int
    schema_version: str
    exchange: str
    date: str
    symbol: str
    fingerprint: list[list]  # [table, file name, size, mtime_ns], sorted
    rows: int
    price_step: int
    qty_step: int
    price_min: int | None
    price_max: int | None
    first_recv_ts: int | None
    last_recv_ts: int | None
    first_event_ns: int
    tick: int | None  # the instruments table's tick size in 1e-8 units
    lot: int | None  # the instruments table's step size in 1e-8 units


class PreparedDay:
    """One (dataset root, market, date, symbol)'s prepared day: where it lives, whether it is usable,
    building it and reading it in chunks."""

    def __init__(self, root: Path | str, market: Market, date: dt.date | str, symbol: str,
                 cache: Path | str | None = None) -> None:
        self.root = Path(root)
        self.market = market
        self.date = parse_date(date)
        self.symbol = symbol
        base = Path(cache) if cache is not None else self.root / "prepared"
        self.path = base / market.exchange / self.date.isoformat() / symbol
        self.meta: PreparedMeta | None = None
        self.built = False  # True when the last `load_or_build` had to build

    def __repr__(self) -> str:
        return f"PreparedDay({self.market.exchange} {self.date} {self.symbol} at {self.path})"

    # ---- source fingerprint ---------------------------------------------------------------------

    def source_files(self) -> dict[str, list[Path]]:
        return {table: _files(self.root, self.market.exchange, table, self.date, [self.symbol])
                for table in SOURCE_TABLES}

    def fingerprint(self) -> list[list]:
        found = []
        for table, paths in self.source_files().items():
            for path in paths:
                stat = path.stat()
                found.append([table, path.name, stat.st_size, stat.st_mtime_ns])
        return sorted(found)

    # ---- checks ---------------------------------------------------------------------------------

    def problem(self) -> str | None:
        """Why the stored day must not be used (None: it is complete and current); sets `self.meta`."""
        self.meta = None
        meta_path = self.path / META
        if not meta_path.exists():
            return "not prepared yet"
        try:
            meta = PreparedMeta(**json.loads(meta_path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            return f"unreadable {META} ({exc})"
        if meta.format_version != FORMAT_VERSION:
            return f"format {meta.format_version} != {FORMAT_VERSION}"
        if meta.schema_version != SCHEMA_VERSION:
            return f"schema {meta.schema_version} != {SCHEMA_VERSION}"
        stale = _fingerprint_change(meta.fingerprint, self.fingerprint())
        if stale:
            return f"stale: {stale}"
        try:
            columns = self._open_columns(meta.rows)
        except _ColumnError as exc:
            return f"truncated: {exc}"
        try:
            if meta.rows and not columns["flags"].map(meta.rows - 1, meta.rows)[0] & END:
                return "truncated: the last row does not end a message"
        finally:
            _close(columns)
        self.meta = meta
        return None

    def _open_columns(self, rows: int) -> dict[str, _Column]:
        """Every column file, open and checked to hold `rows` rows (else `_ColumnError`)."""
        columns: dict[str, _Column] = {}
        try:
            for name, dtype in COLUMNS.items():
                columns[name] = _Column(self.path / f"{name}.npy", np.dtype(dtype))
                columns[name].check(rows)
        except BaseException:
            _close(columns)
            raise
        return columns

    # ---- load / build ---------------------------------------------------------------------------

    def load_or_build(self, progress: Progress | None = None, force: bool = False) -> PreparedDay:
        """Use the stored day if it is complete and current, else (re)build it, saying why in one log line."""
        reason = "forced" if force else self.problem()
        self.built = reason is not None
        if reason is None:
            return self
        level = logging.INFO if reason == "not prepared yet" else logging.WARNING
        log.log(level, "%s %s %s: building the prepared day (%s) at %s", self.market.exchange, self.date,
                self.symbol, reason, self.path)
        self.build(progress)
        return self

    def build(self, progress: Progress | None = None, reference: bool = False) -> PreparedMeta:
        """Build from the dataset, streaming, and put it in place: with the columnar builder, or the
        reference rows (`event_rows`) when asked or when the columnar builder cannot reproduce them."""
        replay = DayReplay(self.root, self.market, self.date, [self.symbol], channels=(TRADE_CHANNEL,))
        fingerprint = self.fingerprint()  # before reading: a file that changes meanwhile makes the next load rebuild
        sources = self.source_files()
        estimate = sum(pq.read_metadata(p).num_rows for table in ("depth", "snapshots", "trades")
                       for p in sources[table])
        if not reference:
            blocks = columnar_blocks(sources["depth"], sources["snapshots"], sources["trades"],
                                     self.market.sequence_rule)
            try:
                return self._write(blocks, fingerprint, replay.first_event_ns(), estimate, progress)
            except NeedsReference as exc:
                log.info("%s %s %s: %s; building with the reference builder", self.market.exchange, self.date,
                         self.symbol, exc)
        blocks = _blocks(event_rows(replay.events(), replay, self.symbol), BUILD_BLOCK_ROWS)
        return self._write(blocks, fingerprint, replay.first_event_ns(), estimate, progress)

    def _write(self, blocks: Iterable[np.ndarray], fingerprint: list[list], first_event_ns: int, estimate: int,
               progress: Progress | None) -> PreparedMeta:
        from recorder.validate import instrument_steps

        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(self.path)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.symbol}.building-{os.getpid()}-", dir=self.path.parent))
        try:
            writers = {name: _NpyAppender(staging / f"{name}.npy", np.dtype(dtype)) for name, dtype in COLUMNS.items()}
            rows = price_step = qty_step = 0
            price_min = price_max = first_recv = last_recv = None
            for block in blocks:
                for index, (name, writer) in enumerate(writers.items()):
                    writer.append(block[:, index])
                priced = block[(block[:, 0] == LEVEL) | (block[:, 0] == TRADE), 5]
                if len(priced):
                    low, high = int(priced.min()), int(priced.max())
                    price_min = low if price_min is None else min(price_min, low)
                    price_max = high if price_max is None else max(price_max, high)
                price_step = common_step(block[:, 5], price_step)
                qty_step = common_step(block[:, 6], qty_step)
                first_recv = int(block[0, 2]) if first_recv is None else first_recv
                last_recv = int(block[-1, 2])
                rows += len(block)
                if progress is not None:
                    progress(rows, max(rows, estimate))
            for writer in writers.values():
                writer.close()
            price_step, qty_step = price_step or 1, qty_step or 1
            _divide_in_place(staging / "price.npy", rows, price_step)
            _divide_in_place(staging / "qty.npy", rows, qty_step)
            tick, lot = instrument_steps(self.root, self.market.exchange, self.date, self.symbol)
            meta = PreparedMeta(
                FORMAT_VERSION, SCHEMA_VERSION, self.market.exchange, self.date.isoformat(), self.symbol,
                fingerprint, rows, price_step, qty_step,
                None if price_min is None else price_min // price_step,
                None if price_max is None else price_max // price_step,
                first_recv, last_recv, first_event_ns, tick, lot)
            _write_atomically(staging / META, json.dumps(asdict(meta), indent=1).encode())
            _replace_dir(staging, self.path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if progress is not None:
            progress(rows, rows)
        self.meta = meta
        return meta

    # ---- reading --------------------------------------------------------------------------------

    def _checked_meta(self) -> PreparedMeta:
        if self.meta is None:
            raise RuntimeError(f"{self!r} is not loaded: call load_or_build() first")
        return self.meta

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir())

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[EventArrays]:
        """The day as consecutive `EventArrays` of about `rows` rows, each ending at a row flagged `END`
        (a message longer than `rows` makes a longer chunk). Each chunk maps the column files afresh:
        drop it before taking the next and memory stays bounded."""
        meta = self._checked_meta()
        if rows < 1:
            raise ValueError(f"rows per chunk must be >= 1, got {rows}")
        columns = self._opened(meta)
        try:
            start, total = 0, meta.rows
            while start < total:
                end = _chunk_end(columns["flags"], start, min(start + rows, total), total)
                yield EventArrays(*(column.map(start, end) for column in columns.values()),
                                  meta.price_step, meta.qty_step)
                start = end
        finally:
            _close(columns)

    def arrays(self) -> EventArrays:
        """The whole day as one `EventArrays` of memory maps (small days, tests)."""
        meta = self._checked_meta()
        columns = self._opened(meta)
        try:
            return EventArrays(*(column.map(0, meta.rows) for column in columns.values()),
                               meta.price_step, meta.qty_step)
        finally:
            _close(columns)

    def _opened(self, meta: PreparedMeta) -> dict[str, _Column]:
        """The column files as loaded: maps taken from these open files stay the loaded day even if another
        process rebuilds it meanwhile (a rebuild replaces the directory, never the files in it)."""
        try:
            return self._open_columns(meta.rows)
        except _ColumnError as exc:
            raise RuntimeError(f"the prepared day at {self.path} changed since it was loaded ({exc}); "
                               f"load it again") from None


def load_or_build(root: Path | str, market: Market, date: dt.date | str, symbol: str,
                  cache: Path | str | None = None, progress: Progress | None = None,
                  force: bool = False) -> PreparedDay:
    """The symbol's prepared day, ready to read: mapped if the stored one is current, else rebuilt."""
    return PreparedDay(root, market, date, symbol, cache).load_or_build(progress, force)


# ---- helpers --------------------------------------------------------------------------------------


def _fingerprint_change(stored: list[list], current: list[list]) -> str | None:
    """The first difference between two fingerprints, in words (None: the same)."""
    before = {(t, name): (size, mtime) for t, name, size, mtime in stored}
    now = {(t, name): (size, mtime) for t, name, size, mtime in current}
    for key in sorted(before.keys() | now.keys()):
        table, name = key
        if key not in now:
            return f"{table} file {name} is gone"
        if key not in before:
            return f"new {table} file {name}"
        if before[key] != now[key]:
            return f"{table} file {name} changed"
    return None


def _blocks(rows: Iterable[tuple], size: int) -> Iterator[np.ndarray]:
    """(n, 7) int64 arrays of up to `size` rows."""
    block: list[tuple] = []
    for row in rows:
        block.append(row)
        if len(block) == size:
            yield np.array(block, dtype=np.int64)
            block = []
    if block:
        yield np.array(block, dtype=np.int64)


def _npy_header(dtype: np.dtype, rows: int) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows,)})
    return buffer.getvalue()


class _NpyAppender:
    """A 1-d `.npy` file written block by block: a header sized for any length, patched with the real one
    at the end (numpy pads headers to 64 bytes, so both have the same size)."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.rows = path, dtype, 0
        self.file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.file.write(_npy_header(dtype, 0))

    def append(self, values: np.ndarray) -> None:
        self.file.write(values.astype(self.dtype).tobytes())
        self.rows += len(values)

    def close(self) -> None:
        header = _npy_header(self.dtype, self.rows)
        if len(header) != len(_npy_header(self.dtype, 0)):
            raise RuntimeError(f"{self.path}: .npy header grew with {self.rows} rows")
        self.file.seek(0)
        self.file.write(header)
        self.file.close()


def _read_header(file) -> tuple[tuple, bool, np.dtype]:  # type: ignore[no-untyped-def]
    """(shape, fortran_order, dtype) of an open `.npy` file, positioned at its data; ValueError if not one."""
    version = np.lib.format.read_magic(file)
    if version != (1, 0):
        raise ValueError(f".npy version {version} is not the one written here")
    return np.lib.format.read_array_header_1_0(file)


class _ColumnError(ValueError):
    """A column file that is not what `meta.json` says."""


class _Column:
    """An open 1-d `.npy` column file; `map` gives rows of it as a fresh memory map (released with the
    array)."""

    def __init__(self, path: Path, dtype: np.dtype, writable: bool = False) -> None:
        self.path, self.dtype, self.mode = path, dtype, "r+" if writable else "r"
        try:
            self.file = open(path, "r+b" if writable else "rb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise _ColumnError(f"{path.name} is unreadable ({exc.strerror or exc})") from None
        try:
            self.shape, fortran, stored = _read_header(self.file)
        except ValueError as exc:
            self.close()
            raise _ColumnError(f"{path.name} is unreadable ({exc})") from None
        self.offset = self.file.tell()
        self.data_bytes = os.fstat(self.file.fileno()).st_size - self.offset
        if stored != dtype or fortran or len(self.shape) != 1:
            self.close()
            raise _ColumnError(f"{path.name} holds {stored} {self.shape}, expected {dtype}")

    def check(self, rows: int) -> None:
        if self.shape[0] != rows or self.data_bytes != rows * self.dtype.itemsize:
            raise _ColumnError(f"{self.path.name} holds {self.data_bytes // self.dtype.itemsize} rows, "
                               f"{META} says {rows}")

    def map(self, start: int, end: int) -> np.ndarray:
        if end <= start:
            return np.empty(0, self.dtype)
        return np.memmap(self.file, dtype=self.dtype, mode=self.mode, offset=self.offset + start * self.dtype.itemsize,
                         shape=(end - start,))

    def close(self) -> None:
        self.file.close()


def _close(columns: dict[str, _Column]) -> None:
    for column in columns.values():
        column.close()


def _chunk_end(flags: _Column, start: int, end: int, total: int) -> int:
    """The end (exclusive) of the chunk from `start`: just after the last END row before `end`, or the first
    one after it when there is none (a message longer than the chunk)."""
    ends = np.flatnonzero(flags.map(start, end) & END)
    if len(ends):
        return start + int(ends[-1]) + 1
    while end < total:
        step_end = min(end + CHUNK_ROWS, total)
        ends = np.flatnonzero(flags.map(end, step_end) & END)
        if len(ends):
            return end + int(ends[0]) + 1
        end = step_end
    return total


def _divide_in_place(path: Path, rows: int, step: int) -> None:
    """Integer 1e-8 units to steps, chunk by chunk (bounded memory)."""
    if step == 1:
        return
    column = _Column(path, np.dtype(np.int64), writable=True)
    try:
        for start in range(0, rows, CHUNK_ROWS):
            values = column.map(start, min(start + CHUNK_ROWS, rows))
            values //= step
            values.flush()
            del values
    finally:
        column.close()


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _remove_abandoned(target: Path) -> None:
    """Delete the hidden work directories (`.<symbol>.building-<pid>-…`, `.<symbol>.old-<pid>-…`) of
    builds whose process is gone (killed mid-build); a running build's are left alone."""
    for path in target.parent.glob(f".{target.name}.*-*-*"):
        pid = path.name[len(target.name) + 2:].split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's
    return True


def _replace_dir(staging: Path, target: Path) -> None:
    """Put the complete `staging` directory at `target`, moving an older one aside first."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
