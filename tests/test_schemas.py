"""Dataset contract v1: what recorder, replay and notebook users rely on."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import threading
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from schemas import DatasetError
from schemas.tables import META_SCHEMA_VERSION

SPOT = "binance-spot"
DAY = dt.date(2024, 5, 1)

PRICE_BTC = 6173763000000  # 61737.63 in 1e-8 units, on a 0.01 tick
QTY_PEPE = 12345678901 * 10**8  # 12345678901.00000000: tens of billions
QTY_TINY = 1  # 0.00000001
QTY_HUGE = 123_456_789_012 * 10**8  # 1.2e19 units: beyond int64


def ns(text: str) -> int:
    moment = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1_000_000_000


def depth_columns(seq0: int = 1) -> dict[str, list]:
    return {
        "recv_ts": [ns("2024-05-01T10:00:00")] * 3 + [ns("2024-05-01T10:00:01")],
        "seq": [seq0, seq0, seq0, seq0 + 1],
        "event_ts": [ns("2024-05-01T10:00:00")] * 3 + [ns("2024-05-01T10:00:01")],
        "first_update_id": [100, 100, 100, 103],
        "final_update_id": [102, 102, 102, 103],
        "side": ["bid", "ask", "ask", None],  # last row: a diff with empty b and a
        "price": [PRICE_BTC, PRICE_BTC + 1_000_000, 100_000_000, None],
        "qty": [QTY_TINY, QTY_PEPE, QTY_HUGE, None],
    }


def write_depth(root: Path, symbol: str = "BTCUSDT", stem: str = "part-0", date: dt.date = DAY) -> Path:
    table = schemas.table_from_columns("depth", depth_columns())
    return schemas.write_partition(root, SPOT, "depth", date, symbol, table, stem)


def test_prices_and_quantities_roundtrip_exactly(tmp_path):
    path = write_depth(tmp_path)
    table = pq.read_table(path)
    assert table.schema.field("price").type == pa.decimal128(38, 8)
    assert table.column("price").to_pylist()[:2] == [decimal.Decimal("61737.63"), decimal.Decimal("61737.64")]
    assert table.column("qty").to_pylist()[:3] == [
        decimal.Decimal("0.00000001"),
        decimal.Decimal("12345678901.00000000"),
        decimal.Decimal("123456789012.00000000"),
    ]
    # The unscaled decimal integer is the recorder's int, so a book can load without any arithmetic.
    units = [None if d is None else int(d.scaleb(8)) for d in table.column("qty").to_pylist()]
    assert units == depth_columns()["qty"]


def test_decimal_strings_ints_and_overflowing_ints_agree():
    texts = ["61737.63000000", "12345678901.00000000", "0.00000001", "123456789012.00000000", None]
    units = [PRICE_BTC, QTY_PEPE, QTY_TINY, QTY_HUGE, None]
    assert schemas.to_decimal_array(texts).equals(schemas.to_decimal_array(units))
    assert schemas.to_decimal_array(pa.array(units[:3])).equals(schemas.to_decimal_array(texts[:3]))


@pytest.mark.parametrize("seed", range(3))
def test_units_widen_to_the_decimals_arrows_cast_gives(seed):
    """The numpy widening of 1e-8 units (the flush's path) against Arrow's cast (the reference): signs,
    int64's ends, nulls, slices, other integer widths."""
    import numpy as np

    from schemas.write import _units_to_decimal, _units_to_decimal_by_cast

    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.integers(-2**63, 2**63 - 1, 5_000, dtype=np.int64, endpoint=True),
                             rng.integers(-10**9, 10**16, 5_000), [0, -1, 1, -2**63, 2**63 - 1]])
    mask = rng.random(len(values)) < 0.1
    arrays = [pa.array(values), pa.array(values, mask=mask), pa.array(values, mask=mask).slice(7, 3_000),
              pa.array(values.astype(np.int32), pa.int32()), pa.array([], pa.int64())]
    for units in arrays:
        fast, reference = _units_to_decimal(units), _units_to_decimal_by_cast(units)
        assert fast.type == reference.type == schemas.DECIMAL
        assert fast.equals(reference)
        assert fast.to_pylist() == [None if u is None else decimal.Decimal(u).scaleb(-8) for u in units.to_pylist()]


def test_inexact_prices_are_refused():
    with pytest.raises(TypeError):
        schemas.to_decimal_array([61737.63])
    with pytest.raises(pa.ArrowInvalid):
        schemas.to_decimal_array(["0.000000001"])  # finer than 1e-8 would be rounded


def test_empty_diff_row_keeps_update_id_continuity(tmp_path):
    write_depth(tmp_path)
    frame = schemas.scan(tmp_path, SPOT, "depth").collect()
    ids = frame.unique(["seq"], keep="first").sort("seq").select("first_update_id", "final_update_id")
    assert ids.rows() == [(100, 102), (103, 103)]
    with pytest.raises(ValueError, match="null together"):
        columns = depth_columns()
        columns["price"][3] = PRICE_BTC
        schemas.table_from_columns("depth", columns)


def test_file_carries_contract_metadata(tmp_path):
    tags = pq.read_metadata(write_depth(tmp_path)).metadata
    assert tags[b"avellaneda_mm.schema_version"] == schemas.SCHEMA_VERSION.encode()
    assert tags[b"avellaneda_mm.table"] == b"depth"
    assert tags[b"avellaneda_mm.exchange"] == SPOT.encode()


def test_layout_path(tmp_path):
    path = write_depth(tmp_path, stem="0001")
    assert path == tmp_path / SPOT / "depth" / "date=2024-05-01" / "symbol=BTCUSDT" / "0001.parquet"
    assert schemas.partition_dir(tmp_path, "binance-usdm", "events", "20240501", None).name == "symbol=_all"
    with pytest.raises(ValueError):
        schemas.partition_dir(tmp_path, "binance-margin", "depth", DAY, "BTCUSDT")


def test_atomic_write_leaves_only_complete_files(tmp_path, monkeypatch):
    write_depth(tmp_path)
    files = sorted(
        p.name for p in (tmp_path / SPOT / "depth" / "date=2024-05-01" / "symbol=BTCUSDT").iterdir()
    )
    assert files == ["part-0.parquet"]

    # A write that dies half way leaves neither a temp file nor a partial .parquet behind.
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_depth(tmp_path, stem="part-1")
    monkeypatch.undo()
    files = sorted(
        p.name for p in (tmp_path / SPOT / "depth" / "date=2024-05-01" / "symbol=BTCUSDT").iterdir()
    )
    assert files == ["part-0.parquet"]


def test_concurrent_reader_never_sees_partial_file(tmp_path):
    big = {name: values * 20_000 for name, values in depth_columns().items()}
    table = schemas.table_from_columns("depth", big)
    stop = threading.Event()
    failures: list[Exception] = []

    def reader():
        while not stop.is_set():
            try:
                for info in schemas.check_partition(tmp_path, SPOT, "depth"):
                    assert pq.read_table(info.path).num_rows == table.num_rows
            except DatasetError as exc:
                if "no depth data" not in str(exc) and "no Parquet files" not in str(exc):
                    failures.append(exc)
            except Exception as exc:  # noqa: BLE001 - any read failure is the bug this test looks for
                failures.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(10):
        schemas.write_partition(
            tmp_path, SPOT, "depth", DAY, "BTCUSDT", table, f"part-{i % 3}", row_group_size=8192
        )
    stop.set()
    thread.join()
    assert failures == []


def test_polars_hive_scan_gives_partition_columns_and_numbers(tmp_path):
    write_depth(tmp_path, "BTCUSDT")
    write_depth(tmp_path, "ETHUSDT", date=dt.date(2024, 5, 2))
    frame = schemas.scan(tmp_path, SPOT, "depth").collect()
    assert frame.schema["date"] == pl.Date
    assert frame.schema["symbol"] == pl.String
    assert set(frame["symbol"]) == {"BTCUSDT", "ETHUSDT"}
    assert frame.schema["price"] == pl.Decimal(38, 8)
    best_bid = frame.filter(pl.col("side") == "bid", pl.col("symbol") == "BTCUSDT")["price"].cast(pl.Float64)
    assert best_bid.to_list() == [61737.63]

    one = schemas.scan(tmp_path, SPOT, "depth", date="20240502", symbols=["ETHUSDT"]).collect()
    assert set(one["symbol"]) == {"ETHUSDT"} and set(one["date"]) == {dt.date(2024, 5, 2)}


def test_readme_polars_and_duckdb_examples_work(tmp_path):
    write_depth(tmp_path)
    glob = f"{tmp_path}/binance-spot/depth/**/*.parquet"

    frame = (
        pl.scan_parquet(glob, hive_partitioning=True)
        .filter(pl.col("symbol") == "BTCUSDT", pl.col("side").is_not_null())
        .group_by("date", "symbol", "side")
        .agg(pl.col("qty").sum().alias("qty"), pl.len().alias("levels"))
        .sort("side")
        .collect()
    )
    assert frame["levels"].to_list() == [2, 1]
    assert frame["date"].to_list() == [DAY, DAY]

    rows = duckdb.sql(
        f"""
        SELECT date, symbol, side, sum(qty) AS qty, count(*) AS levels
        FROM read_parquet('{glob}', hive_partitioning = true)
        WHERE symbol = 'BTCUSDT' AND side IS NOT NULL
        GROUP BY ALL ORDER BY side
        """
    ).fetchall()
    assert rows == [
        (DAY, "BTCUSDT", "ask", decimal.Decimal("135802467913.00000000"), 2),
        (DAY, "BTCUSDT", "bid", decimal.Decimal("0.00000001"), 1),
    ]


def test_events_keep_null_symbol_for_connection_wide(tmp_path):
    detail = json.dumps({"expected": 103, "got": 105})
    symbol_events = schemas.table_from_columns(
        "events", {"ts": [1], "seq": [5], "symbol": ["BTCUSDT"], "kind": ["gap"], "detail": [detail]}
    )
    wide_events = schemas.table_from_columns(
        "events", {"ts": [2], "seq": [6], "symbol": [None], "kind": ["disconnect"], "detail": ["{}"]}
    )
    schemas.write_partition(tmp_path, SPOT, "events", DAY, "BTCUSDT", symbol_events, "part-0")
    schemas.write_partition(tmp_path, SPOT, "events", DAY, None, wide_events, "part-0")
    frame = schemas.scan(tmp_path, SPOT, "events").sort("seq").collect()
    assert frame["symbol"].to_list() == ["BTCUSDT", None]
    assert schemas.read_table(tmp_path, SPOT, "events").sort_by("seq").column("symbol").to_pylist() == [
        "BTCUSDT",
        None,
    ]
    with pytest.raises(ValueError, match="unknown event kinds"):
        schemas.table_from_columns("events", {"ts": [1], "seq": [1], "kind": ["oops"], "detail": ["{}"]})
    with pytest.raises(ValueError, match="does not match partition"):
        schemas.write_partition(tmp_path, SPOT, "events", DAY, "ETHUSDT", symbol_events, "part-1")


def test_unknown_major_version_is_a_one_line_error_naming_the_file(tmp_path):
    path = write_depth(tmp_path)
    table = pq.read_table(path)
    future = table.replace_schema_metadata({**table.schema.metadata, META_SCHEMA_VERSION.encode(): b"2.0"})
    pq.write_table(future, path)
    with pytest.raises(DatasetError) as caught:
        schemas.scan(tmp_path, SPOT, "depth")
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "2.0" in message


def test_newer_minor_version_is_accepted(tmp_path):
    path = write_depth(tmp_path)
    table = pq.read_table(path)
    newer = table.append_column("venue_flag", pa.array([1] * table.num_rows))
    pq.write_table(
        newer.replace_schema_metadata({**table.schema.metadata, META_SCHEMA_VERSION.encode(): b"1.7"}), path
    )
    assert schemas.check_file(path).schema_version == "1.7"
    assert schemas.scan(tmp_path, SPOT, "depth").collect().height == table.num_rows


def test_not_parquet_is_a_one_line_error_naming_the_file(tmp_path):
    write_depth(tmp_path)
    bogus = tmp_path / SPOT / "depth" / "date=2024-05-01" / "symbol=BTCUSDT" / "zz.parquet"
    bogus.write_text("not parquet\nat all")
    with pytest.raises(DatasetError) as caught:
        schemas.read_table(tmp_path, SPOT, "depth")
    assert "\n" not in str(caught.value) and str(bogus) in str(caught.value)
    with pytest.raises(DatasetError):
        list(schemas.iter_batches(bogus))


def test_missing_table_date_or_symbol_says_what_exists(tmp_path):
    write_depth(tmp_path)
    with pytest.raises(DatasetError, match="trades.*available tables: depth"):
        schemas.scan(tmp_path, SPOT, "trades")
    with pytest.raises(DatasetError, match="no depth data for date 2024-05-02; available: 2024-05-01"):
        schemas.scan(tmp_path, SPOT, "depth", date="2024-05-02")
    with pytest.raises(DatasetError, match="symbol ETHUSDT.*available: BTCUSDT"):
        schemas.read_table(tmp_path, SPOT, "depth", date=DAY, symbols=["ETHUSDT"])
    assert schemas.available(tmp_path) == {SPOT: {"depth": {DAY: ("BTCUSDT",)}}}


def test_read_table_adds_partition_columns(tmp_path):
    write_depth(tmp_path)
    table = schemas.read_table(tmp_path, SPOT, "depth", columns=["date", "symbol", "seq", "price"])
    assert table.column_names == ["date", "symbol", "seq", "price"]
    assert table.column("symbol").to_pylist() == ["BTCUSDT"] * 4
    assert table.column("date").to_pylist() == [DAY] * 4


def test_iter_batches_streams_in_bounded_batches(tmp_path):
    big = {name: values * 5_000 for name, values in depth_columns().items()}
    path = schemas.write_partition(
        tmp_path,
        SPOT,
        "depth",
        DAY,
        "BTCUSDT",
        schemas.table_from_columns("depth", big),
        "big",
        row_group_size=4096,
    )
    sizes = [batch.num_rows for batch in schemas.iter_batches(path, columns=["seq", "qty"], batch_size=1000)]
    assert max(sizes) <= 1000 and sum(sizes) == 20_000


def test_writer_rejects_tables_off_contract(tmp_path):
    with pytest.raises(ValueError, match="needs column 'seq'"):
        schemas.table_from_columns("trades", {"recv_ts": [1]})
    with pytest.raises(ValueError, match="not in table"):
        schemas.table_from_columns("book_ticker", {"bid_px": [1]})
    columns = depth_columns()
    columns["side"][0] = "buy"
    with pytest.raises(ValueError, match="side"):
        schemas.table_from_columns("depth", columns)
    with pytest.raises(ValueError, match="nulls"):
        schemas.table_from_columns("depth", {**depth_columns(), "seq": [1, None, 1, 2]})


def test_every_table_writes_and_reads_back(tmp_path):
    rows = {
        "snapshots": {"recv_ts": [1], "seq": [1], "last_update_id": [9], "side": ["bid"], "price": ["1.5"],
                      "qty": ["2"], "level": [0], "requested_limit": [1000]},
        "trades": {"recv_ts": [1], "seq": [1], "event_ts": [1], "trade_ts": [1], "trade_id": [7], "price": ["1.5"],
                   "qty": ["2"], "buyer_is_maker": [True], "best_match": [True]},
        "agg_trades": {"recv_ts": [1], "seq": [1], "event_ts": [1], "trade_ts": [1], "agg_trade_id": [3],
                       "price": ["1.5"], "qty": ["2"], "first_trade_id": [7], "last_trade_id": [8],
                       "buyer_is_maker": [False]},
        "book_ticker": {"recv_ts": [1], "seq": [1], "update_id": [4], "bid_price": ["1.5"], "bid_qty": ["2"],
                        "ask_price": ["1.6"], "ask_qty": ["3"]},
        "instruments": {"symbol": ["BTCUSDT"], "tick_size": ["0.01"], "step_size": ["0.00001"],
                        "filters": ["[]"], "recv_ts": [1], "seq": [1]},
    }  # fmt: skip
    for name, columns in rows.items():
        schemas.write_partition(
            tmp_path, "binance-usdm", name, DAY, "BTCUSDT", schemas.table_from_columns(name, columns), "p"
        )
        frame = schemas.scan(tmp_path, "binance-usdm", name).collect()
        assert frame.height == 1 and frame["symbol"].to_list() == ["BTCUSDT"], name


@pytest.mark.parametrize(
    ("utc", "berlin"),
    [
        ("2024-08-08T23:55:00", dt.date(2024, 8, 9)),  # CEST: 01:55 the next Berlin day
        ("2024-08-08T21:59:59", dt.date(2024, 8, 8)),
        ("2024-08-08T22:00:00", dt.date(2024, 8, 9)),
        ("2024-01-15T22:59:59", dt.date(2024, 1, 15)),  # CET: midnight is 23:00 UTC
        ("2024-01-15T23:00:00", dt.date(2024, 1, 16)),
        ("2024-03-30T23:00:00", dt.date(2024, 3, 31)),  # spring-forward day starts at CET midnight
        ("2024-03-31T21:59:59", dt.date(2024, 3, 31)),  # ... and ends at CEST midnight
        ("2024-03-31T22:00:00", dt.date(2024, 4, 1)),
        ("2024-10-26T22:00:00", dt.date(2024, 10, 27)),  # fall-back day starts at CEST midnight
        ("2024-10-27T22:59:59", dt.date(2024, 10, 27)),  # ... and ends at CET midnight
        ("2024-10-27T23:00:00", dt.date(2024, 10, 28)),
    ],
)
def test_berlin_date(utc, berlin):
    assert schemas.berlin_date(ns(utc)) == berlin


def test_berlin_day_length_on_dst_days():
    hour = 3600 * 10**9
    start, end = schemas.berlin_day_bounds("2024-03-31")
    assert (start, end - start) == (ns("2024-03-30T23:00:00"), 23 * hour)
    start, end = schemas.berlin_day_bounds("20241027")
    assert (start, end - start) == (ns("2024-10-26T22:00:00"), 25 * hour)
    assert schemas.berlin_date(end - 1) == dt.date(2024, 10, 27) and schemas.berlin_date(end) == dt.date(
        2024, 10, 28
    )


def test_parse_date_accepts_both_spellings():
    assert schemas.parse_date("20240501") == schemas.parse_date("2024-05-01") == DAY
    with pytest.raises(ValueError):
        schemas.parse_date("01.05.2024")


def test_a_table_said_to_be_conformed_is_still_cast_when_its_schema_differs(tmp_path):
    """`conformed=True` skips only the second check of a table `table_from_columns` built; a table of
    other types is conformed as ever, so the file always has the contract's schema."""
    built = schemas.table_from_columns("events", {"ts": [1], "seq": [1], "symbol": ["BTCUSDT"], "kind": ["gap"],
                                                   "detail": ["{}"]})
    loose = pa.table({"ts": pa.array([1], pa.int32()), "seq": pa.array([1], pa.int32()),
                      "symbol": ["BTCUSDT"], "kind": ["gap"], "detail": ["{}"]})
    for name, table in (("built", built), ("loose", loose)):
        path = schemas.write_parquet(table, tmp_path / f"{name}.parquet", table_name="events", exchange=SPOT,
                                     conformed=True)
        written = pq.read_table(path)
        assert written.schema.remove_metadata() == schemas.schema_of("events"), name
        assert written.column("seq").to_pylist() == [1]
