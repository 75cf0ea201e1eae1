"""End-of-window compaction into one sorted zstd file per table/symbol/day, and the seed CSV files.

Segments are streamed in seq order into `day-<shard>.parquet` (row groups of a fixed size for streaming
readers); the file appears atomically and only then are the segments removed. With `csv` in the formats,
the day is also exported as the seed project's CSV files (fixed decimals as Binance prints them).

A crash at any point loses and doubles nothing. The day file is committed by its rename, with a hidden
manifest naming the segments it absorbed (`schemas.write.finish_replacement`), so segments left by a
crash after the rename are skipped by readers and deleted by the next compaction; before the rename the
segments are still the data. Each partition first finishes what a crash interrupted there and removes
the temp files it left. A day whose compaction or CSV export did not finish is marked in the recorder
slot's journal directory, and the next start of that slot finishes it, whatever day that is.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.markets import market_for_exchange
from recorder.numbers import SCALE, format_units
from recorder.rebuild import files_in_seq_order, rebuild
from schemas import TABLES, AtomicParquetWriter, DatasetError, partition_dir, read_table
from schemas.write import REPLACES_SUFFIX, finish_replacement, write_file_atomic

log = logging.getLogger(__name__)

CSV_DEPTH_LEVELS = 10


def _ours(shard_tag: str, any_slot: bool):
    """Whether a file stem is the day file or a segment of `shard_tag`; with `any_slot` also of its recorder
    slots (`<tag>-r2`, ...: several recorders of one shard tag on different symbols sharing a root)."""
    segment = re.compile(rf"seg-\d+-{re.escape(shard_tag)}" + (r"(-r\d+)?" if any_slot else ""))
    return lambda stem: stem == f"day-{shard_tag}" or segment.fullmatch(stem) is not None


def _partition_files(directory: Path, shard_tag: str, any_slot: bool = False) -> list[Path]:
    ours = _ours(shard_tag, any_slot)
    return sorted(p for p in directory.glob("*.parquet") if ours(p.stem))


def clean_partition(directory: Path, shard_tag: str, any_slot: bool = False) -> None:
    """Finish a compaction a crash interrupted here and delete the temp files a crash left, only those of
    `shard_tag` (another recorder slot may be writing its own into `symbol=_all` right now)."""
    ours = _ours(shard_tag, any_slot)
    for manifest in directory.glob(f".*{REPLACES_SUFFIX}"):
        if ours(manifest.name[1:].removesuffix(REPLACES_SUFFIX).removesuffix(".parquet")):
            finish_replacement(manifest)
    for temp in directory.glob(".*.tmp"):  # AtomicParquetWriter's and write_parquet's `.<name>.<hex>.tmp`
        if ours(temp.name[1:].split(".parquet.", 1)[0]):
            temp.unlink(missing_ok=True)


def compact_partition(directory: Path, table_name: str, exchange: str, shard_tag: str, row_group_rows: int,
                      any_slot: bool = False) -> Path | None:
    """Merge one partition's segments (and an earlier day file) into day-<shard>.parquet."""
    clean_partition(directory, shard_tag, any_slot)
    inputs = _partition_files(directory, shard_tag, any_slot)
    target = directory / f"day-{shard_tag}.parquet"
    if not inputs or inputs == [target]:
        return None
    ordered = files_in_seq_order(inputs)
    last_seq = None
    in_order = True
    for path in ordered:
        meta = pq.read_metadata(path)
        index = meta.schema.names.index("seq")
        stats = [meta.row_group(i).column(index).statistics for i in range(meta.num_row_groups)]
        lo = min((s.min for s in stats if s is not None), default=None)
        hi = max((s.max for s in stats if s is not None), default=None)
        if lo is not None:
            if last_seq is not None and lo < last_seq:
                in_order = False
            last_seq = hi
    with AtomicParquetWriter(target, table_name=table_name, exchange=exchange, row_group_size=row_group_rows,
                             replaces=[path.name for path in inputs]) as out:
        if in_order:
            for path in ordered:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=row_group_rows):
                    out.write(pa.Table.from_batches([batch]))
        else:  # overlapping segments (should not happen): sort the partition as a whole
            table = pa.concat_tables([pq.read_table(p) for p in ordered])
            out.write(table.sort_by([("seq", "ascending")]))
    return target


def _day_partitions(root: Path, exchange: str, date: dt.date, symbols: list[str], shard_tag: str,
                    events_tag: str | None):
    """(directory, table, tag, any_slot) of the day's partitions this recorder compacts: the symbols'
    (segments of every slot of `shard_tag`: the symbols are locked to this recorder) and the
    connection-wide events of `events_tag` (this recorder's slot) only."""
    for table_name in TABLES:
        for symbol in [*symbols, None] if table_name == "events" else symbols:
            directory = partition_dir(root, exchange, table_name, date, symbol)
            if directory.is_dir():
                if symbol is None:
                    yield directory, table_name, events_tag or shard_tag, False
                else:
                    yield directory, table_name, shard_tag, True


def clean_day(root: Path, exchange: str, date: dt.date, symbols: list[str], shard_tag: str,
              events_tag: str | None = None) -> None:
    """`clean_partition` on every partition of the day this recorder compacts (at start, before recording)."""
    for directory, _, tag, any_slot in _day_partitions(root, exchange, date, symbols, shard_tag, events_tag):
        clean_partition(directory, tag, any_slot)


def compact_day(root: Path, exchange: str, date: dt.date, symbols: list[str], shard_tag: str, *,
                row_group_rows: int = 131_072, formats: tuple[str, ...] = ("parquet",),
                events_tag: str | None = None, pending_dir: Path | None = None) -> list[Path]:
    """Compact the day's partitions of this recorder (`_day_partitions`), then export the seed CSV files.

    With `pending_dir` (the recorder slot's journal directory) the day is marked there until compaction
    and export are done, for `finish_compactions` at the next start if a crash stops them."""
    marker = None
    if pending_dir is not None:
        marker = pending_dir / f"compact-{date.isoformat()}.json"
        write_file_atomic(marker, json.dumps({
            "date": date.isoformat(), "symbols": list(symbols), "shard_tag": shard_tag, "events_tag": events_tag,
            "row_group_rows": row_group_rows, "formats": list(formats)}).encode())
    written = []
    for directory, table_name, tag, any_slot in _day_partitions(root, exchange, date, symbols, shard_tag, events_tag):
        result = compact_partition(directory, table_name, exchange, tag, row_group_rows, any_slot)
        if result is not None:
            written.append(result)
    if "csv" in formats:
        for symbol in symbols:
            written += export_seed_csv(root, exchange, date, symbol)
    if marker is not None:
        marker.unlink()
    return written


def finish_compactions(pending_dir: Path, root: Path, exchange: str, locked: set[str]) -> list[dt.date]:
    """Finish the days whose compaction or export a crash interrupted in this recorder slot (their marker
    is in `pending_dir`); a day of symbols this recorder has not locked waits for the recorder that has."""
    finished = []
    for marker in sorted(pending_dir.glob("compact-*.json")) if pending_dir.is_dir() else []:
        try:
            day = json.loads(marker.read_bytes())
            date = dt.date.fromisoformat(day["date"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable (%s), left alone", marker, exc)
            continue
        if not set(day["symbols"]) <= locked:
            log.warning("%s: the compaction of %s waits for the recorder of %s", marker, date, day["symbols"])
            continue
        compact_day(root, exchange, date, day["symbols"], day["shard_tag"], row_group_rows=day["row_group_rows"],
                    formats=tuple(day["formats"]), events_tag=day["events_tag"], pending_dir=pending_dir)
        finished.append(date)
    return finished


# ---- seed CSV -----------------------------------------------------------------------------------------


def _decimals(root: Path, exchange: str, date: dt.date, symbol: str) -> tuple[int, int]:
    """Decimals Binance prints: spot always 8; futures the symbol's price/quantity precision."""
    if exchange == "binance-spot":
        return SCALE, SCALE
    try:
        info = read_table(root, exchange, "instruments", date=date, symbols=[symbol]).to_pylist()
    except DatasetError:
        return SCALE, SCALE
    row = info[-1]
    return row.get("price_precision") or SCALE, row.get("quantity_precision") or SCALE


def _text(column: pa.ChunkedArray, decimals: int) -> list[str]:
    return pc.cast(pc.cast(column, pa.decimal128(38, decimals)), pa.string()).to_pylist()


def _write_csv(path: Path, header: list[str], rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    os.replace(temp, path)
    return path


def csv_dir(root: Path, exchange: str, date: dt.date) -> Path:
    return Path(root) / "csv" / exchange / date.isoformat()


def export_seed_csv(root: Path, exchange: str, date: dt.date, symbol: str) -> list[Path]:
    """orderbook_rest_snapshot_, orderbook_ws_depth_ (top 10 after each diff while synced), trades_ws_."""
    out = csv_dir(root, exchange, date)
    stamp = date.strftime("%Y%m%d")
    for temp in out.glob(f".*_{symbol}_{stamp}.csv.tmp"):  # left by a crash during an earlier export
        temp.unlink()
    price_dp, qty_dp = _decimals(root, exchange, date, symbol)
    written = []
    try:
        snaps = read_table(root, exchange, "snapshots", date=date, symbols=[symbol],
                           columns=["recv_ts", "last_update_id", "side", "price", "qty"])
        rows = zip(snaps.column("side").to_pylist(), _text(snaps.column("price"), price_dp),
                   _text(snaps.column("qty"), qty_dp), snaps.column("last_update_id").to_pylist(),
                   (t // 1_000_000 for t in snaps.column("recv_ts").to_pylist()))
        written.append(_write_csv(out / f"orderbook_rest_snapshot_{symbol}_{stamp}.csv",
                                  ["side", "price", "qty", "lastUpdateId", "recv_time_ms"],
                                  (r for r in rows if r[0] is not None)))
    except DatasetError:
        pass
    try:
        trades = read_table(root, exchange, "trades", date=date, symbols=[symbol],
                            columns=["event_ts", "price", "qty", "buyer_is_maker"])
        rows = zip((t // 1_000_000 for t in trades.column("event_ts").to_pylist()),
                   _text(trades.column("price"), price_dp), _text(trades.column("qty"), qty_dp),
                   (int(m) for m in trades.column("buyer_is_maker").to_pylist()))
        written.append(_write_csv(out / f"trades_ws_{symbol}_{stamp}.csv",
                                  ["event_time_ms", "price", "qty", "is_buyer_maker"], rows))
    except DatasetError:
        pass
    header = ["event_time_ms", "recv_time_ms"] + [
        name for i in range(1, CSV_DEPTH_LEVELS + 1)
        for name in (f"bid{i}_price", f"bid{i}_qty", f"ask{i}_price", f"ask{i}_qty")]
    zero_p, zero_q = format_units(0, price_dp), format_units(0, qty_dp)

    def depth_rows():
        market = market_for_exchange(exchange)
        for _, recv_ts, message, _, local in rebuild(root, market, date, symbol):
            book = local.valid_book()
            if book is None or not hasattr(message, "first_update_id"):
                continue
            bids, asks = book.top(CSV_DEPTH_LEVELS)
            row = [message.event_ts, recv_ts // 1_000_000]
            for i in range(CSV_DEPTH_LEVELS):
                bp, bq = (format_units(bids[i][0], price_dp), format_units(bids[i][1], qty_dp)) if i < len(bids) \
                    else (zero_p, zero_q)
                ap, aq = (format_units(asks[i][0], price_dp), format_units(asks[i][1], qty_dp)) if i < len(asks) \
                    else (zero_p, zero_q)
                row += [bp, bq, ap, aq]
            yield row

    try:
        written.append(_write_csv(out / f"orderbook_ws_depth_{symbol}_{stamp}.csv", header, depth_rows()))
    except DatasetError:
        pass
    return written
