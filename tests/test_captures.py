"""Tests for recorder.captures: streaming readers of hftbacktest and cryptofeed capture files.

Synthetic tests always run; tests marked with the `realdata` fixture read the shared real Binance captures
from ../shared/realdata (read-only, never copied into the repo) and skip when that directory is absent.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import orjson
import pytest

from recorder.captures import (
    CaptureError,
    CaptureRecord,
    CaptureSession,
    iter_capture,
    iter_cryptofeed,
    iter_file,
    iter_hftbacktest,
    market_of_cryptofeed_file,
    market_of_hftbacktest_file,
    market_of_url,
    seconds_to_ns,
    sessions_in_realdata,
    to_ns,
)

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _realdata_root(root: Path) -> Path:
    if not (root.is_dir() and (root / "hftbacktest").is_dir() and (root / "cryptofeed").is_dir()):
        pytest.skip(f"real captures not available at {root}")
    return root


@pytest.fixture(scope="module")
def realdata() -> Path:
    return _realdata_root(REALDATA)


@pytest.fixture(scope="module")
def sessions(realdata: Path) -> dict[str, CaptureSession]:
    return {s.name: s for s in sessions_in_realdata(realdata)}


def _write_gz(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines))
    return path


def _drain(records) -> tuple[list[CaptureRecord], CaptureError | None]:
    """Collect records until the reader ends or raises CaptureError; return both."""
    got: list[CaptureRecord] = []
    it = iter(records)
    while True:
        try:
            record = next(it)
        except StopIteration:
            return got, None
        except CaptureError as exc:
            return got, exc
        got.append(record)


def _file_of(record: CaptureRecord) -> str:
    return record.source.rsplit(":", 1)[0]


def _line_of(record: CaptureRecord) -> int:
    return int(record.source.rsplit(":", 1)[1])


WS_BTC = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","s":"BTCUSDT","U":1,"u":2,"b":[],"a":[]}}'
)
SNAP = b'{"lastUpdateId":2,"bids":[["1.00","2"]],"asks":[["1.10","3"]]}'


# ---------------------------------------------------------------------------------------------------------
# timestamps


def test_seconds_to_ns_is_exact_string_arithmetic():
    assert seconds_to_ns("1633998512.0633569") == 1633998512063356900
    assert seconds_to_ns(b"1633998512.0633569") == 1633998512063356900
    assert seconds_to_ns("1626992741.06217") == 1626992741062170000
    assert seconds_to_ns("1618677408.2868") == 1618677408286800000
    assert seconds_to_ns("1633998512") == 1633998512000000000
    assert seconds_to_ns("1633998512.0") == 1633998512000000000
    assert seconds_to_ns("1.123456789999") == 1123456789  # truncated to 9 digits, never rounded
    assert seconds_to_ns("0.000000001") == 1
    # the float route is not exact for this value, which is why the reader never uses it
    assert int(float("1633998512.0633569") * 1e9) != 1633998512063356900


@pytest.mark.parametrize("bad", ["", ".5", "1.", "1.2.3", "-1.5", "1e9", "12a.5", "1. 5", "١٢.٣"])
def test_seconds_to_ns_rejects_non_decimal(bad):
    with pytest.raises(ValueError):
        seconds_to_ns(bad)


def test_to_ns_detects_unit_by_magnitude():
    assert to_ns(1680652700423) == 1680652700423000000  # ms
    assert to_ns(1680652700423575) == 1680652700423575000  # µs
    assert to_ns(1723161256172216566) == 1723161256172216566  # ns


# ---------------------------------------------------------------------------------------------------------
# hftbacktest format (synthetic)


def test_hftbacktest_us_and_ns_detected_per_line(tmp_path):
    path = _write_gz(
        tmp_path / "spot_btcusdt_20240808.gz",
        [b"1680652700423575 " + WS_BTC, b"1680652700423576123 " + SNAP, b"1680652700424 " + WS_BTC],
    )
    records = list(iter_hftbacktest(path))
    assert [r.recv_ts for r in records] == [1680652700423575000, 1680652700423576123, 1680652700424000000]
    assert [r.kind for r in records] == ["ws", "rest", "ws"]
    assert records[0].payload == WS_BTC  # envelope kept byte for byte
    assert records[1].payload == SNAP
    assert (records[1].symbol, records[1].limit) == ("BTCUSDT", None)
    assert (records[0].symbol, records[0].limit) == (None, None)
    assert records[2].source == f"{path}:3"


def test_hftbacktest_snapshot_symbol_from_file_name(tmp_path):
    cm = _write_gz(tmp_path / "cm_btcusd_perp_20240808.gz", [b"1723161256172216566 " + SNAP])
    assert next(iter_file(cm)).symbol == "BTCUSD_PERP"
    hist = _write_gz(tmp_path / "usdm_btcusdt_20230404.dat.gz", [b"1680652700599351 " + SNAP])
    assert next(iter_file(hist)).symbol == "BTCUSDT"


def test_hftbacktest_snapshot_symbol_from_streams_when_name_is_unknown(tmp_path):
    path = _write_gz(
        tmp_path / "capture.gz", [b"1723161256172216566 " + WS_BTC, b"1723161256172216567 " + SNAP]
    )
    assert [r.symbol for r in iter_file(path)] == [None, "BTCUSDT"]
    coinm = b'{"lastUpdateId":7,"E":1,"T":1,"symbol":"ETHUSD_PERP","pair":"ETHUSD","bids":[],"asks":[]}'
    path = _write_gz(tmp_path / "other.gz", [b"1723161256172216567 " + coinm])
    assert next(iter_file(path)).symbol == "ETHUSD_PERP"


def test_hftbacktest_plain_text_is_detected(tmp_path):
    path = tmp_path / "capture.txt"
    path.write_bytes(
        b"1723161256172216566 " + WS_BTC + b"\r\n" + b"1723161256172216567 " + SNAP
    )  # no final \n
    records = list(iter_capture([path]))
    assert [r.kind for r in records] == ["ws", "rest"]
    assert records[0].payload == WS_BTC and records[1].payload == SNAP


@pytest.mark.parametrize(
    "garbage",
    [
        b"not a capture line",
        b"1723161256172216568",
        b"1723161256172216568 [1,2]",
        b"17231612561x2216568 {}",
        b'1723161256172216568 {"result":null,"id":1}',
    ],
)
def test_hftbacktest_garbage_line_raises_after_earlier_records(tmp_path, garbage):
    name = "spot_btcusdt_20240808.gz"
    path = _write_gz(
        tmp_path / name, [b"1723161256172216566 " + WS_BTC, b"1723161256172216567 " + SNAP, garbage]
    )
    got, error = _drain(iter_capture([path]))
    assert error is not None
    assert [r.kind for r in got] == ["ws", "rest"]  # the records before the bad line were yielded, intact
    message = str(error)
    assert f"{name}:3: " in message and "\n" not in message
    assert error.lineno == 3 and error.path == path
    assert isinstance(error, ValueError)


# ---------------------------------------------------------------------------------------------------------
# cryptofeed format (synthetic)

CF_COMBINED = [
    b'configuration: {"l2_book":["BTC-USDT"]}',
    b"wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms <-> 1617566590.378895",
    b"1617566591.326123: " + WS_BTC,
    b"https://www.binance.com/api/v1/depth?symbol=BTCUSDT&limit=1000 -> 1617566592.1065369: " + SNAP,
    b'https://api.binance.com/api/v3/exchangeInfo -> 1617566593.1: {"timezone":"UTC"}',
    b"1617566594: " + WS_BTC,
    b"",
    b"",
]


def test_cryptofeed_line_shapes(tmp_path):
    path = tmp_path / "BINANCE-ee25be.0@29970208"
    path.write_bytes(b"\n".join(CF_COMBINED))
    records = list(iter_file(path))
    assert [r.kind for r in records] == ["connect", "ws", "rest", "exchange_info", "ws"]
    connect, ws, rest, info, ws2 = records
    assert connect.payload == b"wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms"
    assert connect.recv_ts == 1617566590378895000
    assert ws.recv_ts == 1617566591326123000 and ws.payload == WS_BTC and ws.source == f"{path}:3"
    assert (rest.recv_ts, rest.symbol, rest.limit, rest.payload) == (
        1617566592106536900,
        "BTCUSDT",
        1000,
        SNAP,
    )
    assert info.payload == b'{"timezone":"UTC"}' and info.symbol is None
    assert ws2.recv_ts == 1617566594000000000
    assert list(iter_cryptofeed(path)) == records


def test_cryptofeed_depth_url_symbol_upper_case_and_missing_limit(tmp_path):
    path = tmp_path / "BINANCE_DELIVERY.http.0.0"
    path.write_bytes(
        b"https://dapi.binance.com/dapi/v1/depth?symbol=btcusd_perp -> 1626916404.5: " + SNAP + b"\n"
    )
    (record,) = iter_file(path)
    assert (record.kind, record.symbol, record.limit) == ("rest", "BTCUSD_PERP", None)


@pytest.mark.parametrize(
    "garbage, reason",
    [
        (b"garbage", "expected"),
        (b"1617566595.5 {}", "expected '<unix_ts>: <json>'"),
        (b"1617566595.5.5: {}", "bad timestamp"),
        (b"1617566595.5: not json", "expected '<unix_ts>: <json>'"),
        (b"https://api.binance.com/api/v3/ticker -> 1617566595.5: {}", "unexpected REST endpoint"),
        (b"https://api.binance.com/api/v3/depth?symbol=X&limit=1000 1617566595.5: {}", "expected '<url> ->"),
        (b"wss://stream.binance.com:9443/stream 1617566595.5", "expected '<ws url> <-> <unix_ts>'"),
    ],
)
def test_cryptofeed_garbage_line_raises_after_earlier_records(tmp_path, garbage, reason):
    path = tmp_path / "BINANCE.ws.1.0"
    path.write_bytes(b"\n".join(CF_COMBINED[1:3] + [garbage, CF_COMBINED[2]]) + b"\n")
    got, error = _drain(iter_file(path))
    assert error is not None
    assert [r.kind for r in got] == ["connect", "ws"]
    assert str(error).startswith(f"{path}:3: ") and reason in str(error)


def test_unrecognised_file_and_empty_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"\n\nhello world\n")
    with pytest.raises(CaptureError, match=r"notes\.txt:3: unrecognised capture format"):
        list(iter_file(path))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert list(iter_file(empty)) == []
    assert list(iter_file(_write_gz(tmp_path / "empty.gz", []))) == []


# ---------------------------------------------------------------------------------------------------------
# merge, markets, session grouping (synthetic)


def test_merge_orders_by_recv_ts_and_keeps_file_order_on_ties(tmp_path):
    a = _write_gz(tmp_path / "a.gz", [b"1000000000000000001 " + WS_BTC, b"1000000000000000003 " + WS_BTC])
    b = tmp_path / "BINANCE.http.0.0"  # cryptofeed seconds: 1000000000.000000001 s == 1000000000000000001 ns
    b.write_bytes(
        b"https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=5 -> 1000000000.000000001: "
        + SNAP
        + b"\n"
        b"https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=5 -> 1000000000.000000002: "
        + SNAP
        + b"\n"
    )
    merged = [(r.recv_ts % 10, r.kind) for r in iter_capture([a, b])]
    assert merged == [(1, "ws"), (1, "rest"), (2, "rest"), (3, "ws")]
    merged = [(r.recv_ts % 10, r.kind) for r in iter_capture([b, a])]
    assert merged == [(1, "rest"), (1, "ws"), (2, "rest"), (3, "ws")]
    assert [r.kind for r in iter_capture(a)] == ["ws", "ws"]  # a single path is accepted too


def test_market_helpers():
    assert market_of_hftbacktest_file("spot_btcusdt_20240808.gz") == "spot"
    assert market_of_hftbacktest_file(Path("x/usdm_btcusdt_20230404.dat.gz")) == "usdm"
    assert market_of_hftbacktest_file("cm_btcusd_perp_20240808.gz") == "coinm"
    with pytest.raises(ValueError):
        market_of_hftbacktest_file("btcusdt_20240808.gz")
    assert market_of_cryptofeed_file("BINANCE.ws.1.0") == "spot"
    assert market_of_cryptofeed_file("BINANCE_US.http.2.0@f60e8395") == "spot"
    assert market_of_cryptofeed_file("BINANCE_FUTURES-1125a2.0@1312c062") == "usdm"
    assert market_of_cryptofeed_file("BINANCE_DELIVERY.ws.7.0@3525dc8c") == "coinm"
    assert market_of_cryptofeed_file("BINANCE.0") == "spot"
    assert market_of_cryptofeed_file("KRAKEN.ws.1.0") is None
    assert market_of_url("wss://stream.binance.com:9443/stream?streams=a") == "spot"
    assert market_of_url("https://api.binance.us/api/v3/depth") == "spot"
    assert market_of_url(b"wss://fstream.binance.com/stream") == "usdm"
    assert market_of_url("https://fapi.binance.com/fapi/v1/depth") == "usdm"
    assert market_of_url("https://dapi.binance.com/dapi/v1/depth") == "coinm"
    assert market_of_url("wss://dstream.binance.com/stream") == "coinm"
    assert market_of_url("https://example.com/") is None


def test_market_of_cryptofeed_file_falls_back_to_url(tmp_path):
    path = tmp_path / "capture.log"
    path.write_bytes(b"wss://dstream.binance.com/stream?streams=x <-> 1.0\n")
    assert market_of_cryptofeed_file(path) == "coinm"


def test_session_grouping_rules(tmp_path):
    names = [
        "cf/BINANCE.0",
        "cf/BINANCE.ws.1.0",
        "cf/BINANCE.http.0.0",
        "cf/BINANCE_DELIVERY.ws.7.0@3525dc8c",
        "cf/BINANCE_DELIVERY.http.6.0@3525dc8c",
        "cf/BINANCE_DELIVERY.http.0.0",  # different suffix: its own session
        "cf/BINANCE_US.ws.3.0@f60e8395",
        "cf/BINANCE_US.http.9.0@f60e8395",  # only http of that run: paired
        "cf/BINANCE-ee25be.0@29970208",
        "h/spot_btcusdt_20240808.gz",
        "h/spot_btcusdt_20240809.gz",
        "h/spot_ethusdt_20240808.gz",
        "h/usdm_btcusdt_20230404.dat.gz",
        "h/usdm_btcusdt_20230405.dat.gz",
        "h/usdm_btcusdt_20240718.gz",
        "h/usdm_btcusdt_20240719.gz",
        "h/usdm_btcusdt_20240721.gz",
        "nautilus/btcusdt-depth-snap.csv",
        "PROVENANCE.md",
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    got = {s.name: (s.market, [p.name for p in s.paths]) for s in sessions_in_realdata(tmp_path)}
    assert got == {
        "cf/BINANCE": ("spot", ["BINANCE.0", "BINANCE.ws.1.0", "BINANCE.http.0.0"]),
        "cf/BINANCE_DELIVERY@3525dc8c": (
            "coinm",
            ["BINANCE_DELIVERY.ws.7.0@3525dc8c", "BINANCE_DELIVERY.http.6.0@3525dc8c"],
        ),
        "cf/BINANCE_DELIVERY.http.0.0": ("coinm", ["BINANCE_DELIVERY.http.0.0"]),
        "cf/BINANCE_US@f60e8395": ("spot", ["BINANCE_US.ws.3.0@f60e8395", "BINANCE_US.http.9.0@f60e8395"]),
        "cf/BINANCE-ee25be.0@29970208": ("spot", ["BINANCE-ee25be.0@29970208"]),
        "h/spot_btcusdt_20240808-20240809": (
            "spot",
            ["spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"],
        ),
        "h/spot_ethusdt_20240808": ("spot", ["spot_ethusdt_20240808.gz"]),
        "h/usdm_btcusdt_20230404-20230405": (
            "usdm",
            ["usdm_btcusdt_20230404.dat.gz", "usdm_btcusdt_20230405.dat.gz"],
        ),
        "h/usdm_btcusdt_20240718-20240719": (
            "usdm",
            ["usdm_btcusdt_20240718.gz", "usdm_btcusdt_20240719.gz"],
        ),
        "h/usdm_btcusdt_20240721": ("usdm", ["usdm_btcusdt_20240721.gz"]),
    }


def test_missing_realdata_skips(tmp_path):
    with pytest.raises(pytest.skip.Exception):
        _realdata_root(tmp_path / "shared" / "realdata")


# ---------------------------------------------------------------------------------------------------------
# real captures

# session name -> (market, files, record counts by kind); counts are the non-blank, non-"configuration:" lines
EXPECTED_SESSIONS = {
    "cryptofeed/BINANCE": (
        "spot",
        ["BINANCE.0", "BINANCE.ws.1.0", "BINANCE.http.0.0"],
        {"exchange_info": 1, "connect": 1, "ws": 265, "rest": 4},
    ),
    "cryptofeed/BINANCE_DELIVERY": (
        "coinm",
        ["BINANCE_DELIVERY.0", "BINANCE_DELIVERY.ws.1.0", "BINANCE_DELIVERY.http.0.0"],
        {"exchange_info": 1, "connect": 1, "ws": 4371, "rest": 10},
    ),
    "cryptofeed/BINANCE_FUTURES": (
        "usdm",
        ["BINANCE_FUTURES.0", "BINANCE_FUTURES.ws.1.0", "BINANCE_FUTURES.http.0.0"],
        {"exchange_info": 1, "connect": 1, "ws": 1535, "rest": 4},
    ),
    "cryptofeed/BINANCE_US": (
        "spot",
        ["BINANCE_US.0", "BINANCE_US.ws.1.0", "BINANCE_US.http.0.0"],
        {"exchange_info": 1, "connect": 1, "ws": 480, "rest": 4},
    ),
    "cryptofeed_hist/BINANCE-b38f7c.0@1312c062": (
        "spot",
        ["BINANCE-b38f7c.0@1312c062"],
        {"connect": 1, "ws": 11357, "rest": 10},
    ),
    "cryptofeed_hist/BINANCE-ee25be.0@29970208": (
        "spot",
        ["BINANCE-ee25be.0@29970208"],
        {"connect": 1, "ws": 4716, "rest": 3},
    ),
    "cryptofeed_hist/BINANCE@cb63e8da": (
        "spot",
        ["BINANCE.ws.1.0@cb63e8da", "BINANCE.http.0.0@cb63e8da"],
        {"connect": 1, "ws": 1003, "rest": 4},
    ),
    "cryptofeed_hist/BINANCE@f60e8395": (
        "spot",
        ["BINANCE.ws.1.0@f60e8395", "BINANCE.http.0.0@f60e8395"],
        {"connect": 1, "ws": 1228, "rest": 10},
    ),
    "cryptofeed_hist/BINANCE_DELIVERY@3525dc8c": (
        "coinm",
        ["BINANCE_DELIVERY.ws.7.0@3525dc8c", "BINANCE_DELIVERY.http.6.0@3525dc8c"],
        {"connect": 1, "ws": 9642, "rest": 10},
    ),
    "cryptofeed_hist/BINANCE_FUTURES-1125a2.0@1312c062": (
        "usdm",
        ["BINANCE_FUTURES-1125a2.0@1312c062"],
        {"connect": 1, "ws": 8421, "rest": 5},
    ),
    "cryptofeed_hist/BINANCE_FUTURES@70789232": (
        "usdm",
        ["BINANCE_FUTURES.ws.5.0@70789232", "BINANCE_FUTURES.http.4.0@70789232"],
        {"connect": 1, "ws": 3259, "rest": 4},
    ),
    "cryptofeed_hist/BINANCE_US@cb63e8da": (
        "spot",
        ["BINANCE_US.ws.1.0@cb63e8da", "BINANCE_US.http.0.0@cb63e8da"],
        {"connect": 1, "ws": 608, "rest": 4},
    ),
    "cryptofeed_hist/BINANCE_US@f60e8395": (
        "spot",
        ["BINANCE_US.ws.3.0@f60e8395", "BINANCE_US.http.2.0@f60e8395"],
        {"connect": 1, "ws": 1283, "rest": 10},
    ),
    "hftbacktest/cm_btcusd_perp_20240808-20240809": (
        "coinm",
        ["cm_btcusd_perp_20240808.gz", "cm_btcusd_perp_20240809.gz"],
        {"ws": 98385, "rest": 1},
    ),
    "hftbacktest/cm_ethusd_perp_20240808": (
        "coinm",
        ["cm_ethusd_perp_20240808.gz"],
        {"ws": 40453, "rest": 1},
    ),
    "hftbacktest/history/spot_btcusdt_20230405": ("spot", ["spot_btcusdt_20230405.dat.gz"], {"ws": 15088}),
    "hftbacktest/history/usdm_btcusdt_20230404-20230405": (
        "usdm",
        ["usdm_btcusdt_20230404.dat.gz", "usdm_btcusdt_20230405.dat.gz"],
        {"ws": 73764, "rest": 1},
    ),
    "hftbacktest/history/usdm_btcusdt_20240718-20240719": (
        "usdm",
        ["usdm_btcusdt_20240718.gz", "usdm_btcusdt_20240719.gz"],
        {"ws": 71983, "rest": 1},
    ),
    "hftbacktest/spot_btcusdt_20240808-20240809": (
        "spot",
        ["spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"],
        {"ws": 99573, "rest": 1},
    ),
    "hftbacktest/spot_ethusdt_20240808": ("spot", ["spot_ethusdt_20240808.gz"], {"ws": 33617, "rest": 1}),
    "hftbacktest/usdm_btcusdt_20240808": ("usdm", ["usdm_btcusdt_20240808.gz"], {"ws": 93953, "rest": 1}),
    "hftbacktest/usdm_ethusdt_20240808": ("usdm", ["usdm_ethusdt_20240808.gz"], {"ws": 74654, "rest": 1}),
}


def test_realdata_session_grouping(sessions):
    got = {name: (s.market, [p.name for p in s.paths]) for name, s in sessions.items()}
    assert got == {name: (market, files) for name, (market, files, _) in EXPECTED_SESSIONS.items()}
    assert not any("nautilus" in str(p) for s in sessions.values() for p in s.paths)


def test_realdata_every_session_reads_fully_in_order(sessions):
    # In this data recv_ts is non-decreasing within every file (checked line by line, including the
    # interleaved http lines of the combined cryptofeed files), so every merged session is too; the
    # *_20240809, *_20230405 and *_20240719 files start after the previous day's file ends.
    for name, session in sessions.items():
        counts: Counter[str] = Counter()
        last_ts: dict[str, int] = {}
        last_line: dict[str, int] = {}
        prev = -1
        for record in session.records():
            counts[record.kind] += 1
            assert record.recv_ts >= prev, record.source
            prev = record.recv_ts
            path, line = _file_of(record), _line_of(record)
            assert record.recv_ts >= last_ts.get(path, -1), record.source
            assert line > last_line.get(path, 0), record.source
            last_ts[path], last_line[path] = record.recv_ts, line
            if record.kind == "ws":
                assert record.payload.startswith(b'{"stream":"') and record.payload.endswith(b"}"), (
                    record.source
                )
            elif record.kind == "rest":
                assert record.payload.startswith(b'{"lastUpdateId"'), record.source
            # plausible capture dates: 2021-01-01 .. 2025-01-01, in ns
            assert 1_609_459_200 * 10**9 <= record.recv_ts < 1_735_689_600 * 10**9, record.source
        assert dict(counts) == EXPECTED_SESSIONS[name][2], name
        assert set(last_ts) == {str(p) for p in session.paths}, name


def test_realdata_us_and_ns_timestamps(realdata):
    hist = next(iter_file(realdata / "hftbacktest/history/usdm_btcusdt_20230404.dat.gz"))
    assert hist.recv_ts == 1680652700423575000  # "1680652700423575" µs
    new = next(iter_file(realdata / "hftbacktest/usdm_btcusdt_20240808.gz"))
    assert new.recv_ts == 1723161255030314667  # ns, unchanged
    # the µs session continues across midnight UTC into the 0405 file
    session = iter_capture([realdata / "hftbacktest/history/usdm_btcusdt_20230405.dat.gz"])
    assert next(session).recv_ts == 1680652800005184000


def test_realdata_cryptofeed_timestamps_exact(realdata):
    records = iter_file(realdata / "cryptofeed/BINANCE.ws.1.0")
    connect, first = next(records), next(records)
    assert connect.kind == "connect" and connect.payload.startswith(
        b"wss://stream.binance.com:9443/stream?streams="
    )
    assert connect.recv_ts == 1633998511159679000
    assert first.kind == "ws" and first.recv_ts == 1633998512063356900
    assert first.payload.startswith(b'{"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate"')


def test_realdata_snapshot_records_carry_symbol_and_limit(sessions):
    def snapshots(name):
        return [r for r in sessions[name].records() if r.kind == "rest"]

    assert [(r.symbol, r.limit) for r in snapshots("cryptofeed/BINANCE")] == [
        ("NKNUSDT", 1000),
        ("BLZETH", 1000),
        ("LRCBTC", 1000),
        ("RUNEEUR", 1000),
    ]
    assert {r.limit for r in snapshots("cryptofeed_hist/BINANCE@cb63e8da")} == {5000}
    assert [(r.symbol, r.limit) for r in snapshots("cryptofeed_hist/BINANCE-ee25be.0@29970208")] == [
        ("DOTUSDT", 1000),
        ("BTCUSDT", 1000),
        ("ETHUSDT", 1000),
    ]
    assert "BTCUSD_PERP" in {r.symbol for r in snapshots("cryptofeed_hist/BINANCE_DELIVERY@3525dc8c")}
    (cm,) = snapshots("hftbacktest/cm_btcusd_perp_20240808-20240809")
    assert (cm.symbol, cm.limit) == ("BTCUSD_PERP", None)
    assert orjson.loads(cm.payload)["symbol"] == "BTCUSD_PERP"
    (hist,) = snapshots("hftbacktest/history/usdm_btcusdt_20230404-20230405")
    assert (hist.symbol, hist.limit) == ("BTCUSDT", None)
    assert hist.payload.startswith(b'{"lastUpdateId": 2710246765483,')  # this one has spaces after colons
    assert snapshots("hftbacktest/history/spot_btcusdt_20230405") == []
    # COIN-M snapshots name their symbol in the payload: it must agree with the URL's
    for r in snapshots("cryptofeed/BINANCE_DELIVERY"):
        assert orjson.loads(r.payload)["symbol"] == r.symbol


def test_realdata_truncated_gzip_raises_after_complete_lines(realdata, tmp_path):
    original = realdata / "hftbacktest/history/usdm_btcusdt_20240718.gz"
    truncated = tmp_path / original.name
    truncated.write_bytes(original.read_bytes()[:150_000])
    got, error = _drain(iter_capture([truncated]))
    assert error is not None
    assert len(got) > 100
    message = str(error)
    assert message == f"{truncated}:{len(got) + 1}: truncated gzip stream"
    # what was yielded is exactly the start of the intact file
    for ours, theirs in zip(got, iter_file(original)):
        assert (ours.recv_ts, ours.kind, ours.payload, ours.symbol) == (
            theirs.recv_ts,
            theirs.kind,
            theirs.payload,
            theirs.symbol,
        )
