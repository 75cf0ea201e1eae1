"""Where files live: <root>/<exchange>/<table>/date=YYYY-MM-DD/symbol=<SYMBOL>/<file>.parquet.

`date` is the Europe/Berlin trading date of the rows, so one directory holds one Berlin day.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from schemas.tables import schema_of

EXCHANGES = ("binance-spot", "binance-usdm", "binance-coinm")
BERLIN = ZoneInfo("Europe/Berlin")
CONNECTION_WIDE_SYMBOL = "_all"  # partition of events whose symbol is null
_NS_PER_S = 1_000_000_000


def check_exchange(exchange: str) -> str:
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}; known: {', '.join(EXCHANGES)}")
    return exchange


def parse_date(value: str | dt.date) -> dt.date:
    """'20240501', '2024-05-01' or a date -> date. ValueError on anything else."""
    if isinstance(value, dt.datetime):
        raise TypeError(f"expected a date, got datetime {value!r}")
    if isinstance(value, dt.date):
        return value
    text = value.strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a date (YYYY-MM-DD or YYYYMMDD)")


def berlin_date(ts_ns: int) -> dt.date:
    """Berlin trading date of a UTC nanosecond timestamp: the `date=` partition its row belongs in."""
    return dt.datetime.fromtimestamp(ts_ns // _NS_PER_S, tz=BERLIN).date()


def berlin_day_bounds(date: str | dt.date) -> tuple[int, int]:
    """[start, end) of a Berlin day in UTC ns; 23 h or 25 h long on DST switch days."""
    day = parse_date(date)
    start = dt.datetime.combine(day, dt.time(), tzinfo=BERLIN)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=BERLIN)
    return int(start.timestamp()) * _NS_PER_S, int(end.timestamp()) * _NS_PER_S


def partition_symbol(table_name: str, symbol: str | None) -> str:
    """Directory value of `symbol=`: the symbol itself, or `_all` for connection-wide events."""
    if symbol is None:
        if table_name != "events":
            raise ValueError(f"table {table_name!r} needs a symbol; only events may be connection-wide")
        return CONNECTION_WIDE_SYMBOL
    if not symbol or "/" in symbol or "=" in symbol or symbol.startswith("."):
        raise ValueError(f"invalid symbol {symbol!r}")
    return symbol


def table_dir(root: str | Path, exchange: str, table_name: str) -> Path:
    schema_of(table_name)
    return Path(root) / check_exchange(exchange) / table_name


def partition_dir(
    root: str | Path, exchange: str, table_name: str, date: str | dt.date, symbol: str | None
) -> Path:
    """<root>/<exchange>/<table>/date=YYYY-MM-DD/symbol=<SYMBOL>; symbol None means `_all` (events only)."""
    day = parse_date(date).isoformat()
    return (
        table_dir(root, exchange, table_name)
        / f"date={day}"
        / f"symbol={partition_symbol(table_name, symbol)}"
    )
