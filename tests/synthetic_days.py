"""More recorded days from one: a day's files copied to another date, every timestamp moved by whole days."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

TIME_COLUMNS = {"recv_ts", "event_ts", "trade_ts", "transact_ts", "ts"}  # int64 ns in every table


def copy_day(root: Path, exchange: str, date: str, days: int) -> str:
    """Copy `date`'s partitions of every table to `date` + `days` (timestamps shifted alike); the new date."""
    new = (dt.date.fromisoformat(date) + dt.timedelta(days=days)).isoformat()
    shift = days * 86_400 * 1_000_000_000
    for path in (root / exchange).glob(f"*/date={date}/*/*.parquet"):
        table = pq.read_table(path)
        for i, name in enumerate(table.schema.names):
            if name in TIME_COLUMNS:
                table = table.set_column(i, table.schema.field(i), pc.add(table.column(i), shift))
        target = root / exchange / path.parent.parent.parent.name / f"date={new}" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
    return new
