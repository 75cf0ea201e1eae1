"""Parsing of every Binance frame shape the recorder meets, and of broken ones."""

from __future__ import annotations

import pytest

from recorder.markets import COINM, SPOT, USDM, get_market
from recorder.numbers import decimals_of, format_units, parse_units
from recorder.protocol import (
    AggTrade,
    BookTicker,
    DepthSnapshot,
    DepthUpdate,
    ErrorPayload,
    ParseError,
    ServerShutdown,
    SubscribeAck,
    Trade,
    parse_exchange_info,
    parse_frame,
    parse_snapshot,
)

SPOT_DEPTH = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,"s":"BTCUSDT",'
    b'"U":50093239189,"u":50093239202,"b":[["61737.63000000","0.00000000"]],"a":[["61837.64000000","1.54698000"]]}}'
)
USDM_DEPTH = (
    b'{"e":"depthUpdate","E":1723161256299,"T":1723161256298,"s":"BTCUSDT","U":5123107832006,'
    b'"u":5123107837557,"pu":5123107831937,"b":[["58710.20","0.014"]],"a":[]}'
)
COINM_DEPTH = (
    b'{"stream":"btcusd_perp@depth@0ms","data":{"e":"depthUpdate","E":1723161257440,"T":1723161257432,'
    b'"s":"BTCUSD_PERP","ps":"BTCUSD","U":1007198631260,"u":1007198631565,"pu":1007198631198,'
    b'"b":[["61773.6","1001"]],"a":[["61801.4","0"]]}}'
)


def test_spot_depth_update_in_combined_envelope():
    msg = parse_frame(SPOT_DEPTH)
    assert isinstance(msg, DepthUpdate)
    assert (msg.symbol, msg.first_update_id, msg.final_update_id) == ("BTCUSDT", 50093239189, 50093239202)
    assert msg.prev_final_update_id is None and msg.transact_ts is None
    assert msg.bids == [["61737.63000000", "0.00000000"]]


def test_futures_depth_update_raw_stream_and_coinm_pair():
    usdm = parse_frame(USDM_DEPTH)
    assert isinstance(usdm, DepthUpdate)
    assert usdm.prev_final_update_id == 5123107831937 and usdm.transact_ts == 1723161256298
    coinm = parse_frame(COINM_DEPTH)
    assert isinstance(coinm, DepthUpdate) and coinm.pair == "BTCUSD" and coinm.asks == [["61801.4", "0"]]


def test_book_ticker_with_and_without_event_fields():
    spot = parse_frame(b'{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000","B":"3.78826000",'
                       b'"a":"61837.64000000","A":"1.54698000"}')
    assert isinstance(spot, BookTicker) and spot.event_ts is None and spot.update_id == 50093239212
    fut = parse_frame(b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":2710246762461,"s":"BTCUSDT",'
                      b'"b":"28145.10","B":"3.868","a":"28145.20","A":"6.887","T":1680652700430,"E":1680652700435}}')
    assert isinstance(fut, BookTicker) and fut.event_ts == 1680652700435 and fut.transact_ts == 1680652700430


def test_trades_and_agg_trades():
    spot = parse_frame(b'{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,"p":"61837.63000000",'
                       b'"q":"0.02000000","T":1723161255342,"m":true,"M":true}')
    assert isinstance(spot, Trade) and spot.best_match is True and spot.order_type is None
    fut = parse_frame(b'{"e":"trade","E":1680652700455,"T":1680652700452,"s":"BTCUSDT","t":3535186032,'
                      b'"p":"28145.10","q":"0.002","X":"MARKET","m":true}')
    assert isinstance(fut, Trade) and fut.order_type == "MARKET" and fut.best_match is None
    agg = parse_frame(b'{"e":"aggTrade","E":1617566591307,"s":"DOTUSDT","a":1,"p":"43.50830000","q":"7.0",'
                      b'"f":10,"l":12,"T":1617566591300,"m":false,"M":true}')
    assert isinstance(agg, AggTrade) and (agg.first_trade_id, agg.last_trade_id) == (10, 12)


def test_acks_errors_and_shutdown():
    assert parse_frame(b'{"result":null,"id":1}') == SubscribeAck(1, None)
    assert parse_frame(b'{"result":["btcusdt@trade"],"id":3}') == SubscribeAck(3, ["btcusdt@trade"])
    err = parse_frame(b'{"error":{"code":2,"msg":"Invalid request"},"id":4}')
    assert err == ErrorPayload(2, "Invalid request", 4)
    assert parse_frame(b'{"code":-1121,"msg":"Invalid symbol."}') == ErrorPayload(-1121, "Invalid symbol.")
    assert parse_frame(b'{"e":"serverShutdown","E":1}') == ServerShutdown(1)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"e":"depthUpdate"',
        b"[1,2,3]",
        b'{"stream":"x","data":[1]}',
        b'{"e":"depthUpdate","E":1,"s":"X","U":"1","u":2,"b":[],"a":[]}',
        b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":{},"a":[]}',
        b'{"e":"trade","E":1,"s":"X","t":1,"p":1.5,"q":"1","T":1,"m":true}',
        b'{"e":"kline","E":1,"s":"X"}',
        b'{"hello":"world"}',
    ],
)
def test_malformed_or_unknown_frames_are_values_not_exceptions(raw):
    result = parse_frame(raw)
    assert isinstance(result, ParseError)
    assert result.reason and len(result.raw) <= 200


def test_rest_snapshots_spot_and_futures():
    spot = parse_snapshot(b'{"lastUpdateId":50093239218,"bids":[["61837.63000000","3.78826000"]],"asks":[]}', "BTCUSDT")
    assert isinstance(spot, DepthSnapshot) and spot.symbol == "BTCUSDT" and spot.event_ts is None
    fut = parse_snapshot(b'{"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,'
                         b'"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}', "X")
    assert isinstance(fut, DepthSnapshot) and fut.transact_ts == 1589436922959
    coinm = parse_snapshot(b'{"lastUpdateId":16769853,"symbol":"BTCUSD_PERP","pair":"BTCUSD","E":1,"T":1,'
                           b'"bids":[],"asks":[]}')
    assert isinstance(coinm, DepthSnapshot) and coinm.symbol == "BTCUSD_PERP"
    assert parse_snapshot(b'{"code":-1003,"msg":"Too much request weight used"}') == ErrorPayload(
        -1003, "Too much request weight used")
    assert isinstance(parse_snapshot(b"<html>502</html>"), ParseError)


def test_exchange_info_filters_by_type_not_position():
    raw = (b'{"symbols":[{"symbol":"PEPEUSDT","status":"TRADING","filters":['
           b'{"filterType":"LOT_SIZE","minQty":"1.00","maxQty":"92141578.00","stepSize":"1.00"},'
           b'{"filterType":"NOTIONAL","minNotional":"1.00"},'
           b'{"filterType":"PRICE_FILTER","minPrice":"0.00000001","maxPrice":"1.00","tickSize":"0.00000001"}]},'
           b'{"symbol":"BTCUSDT","status":"TRADING","filters":[{"filterType":"PRICE_FILTER","tickSize":"0.01"},'
           b'{"filterType":"LOT_SIZE","stepSize":"0.00001","minQty":"0.00001"}]}]}')
    info = parse_exchange_info(raw)
    assert info["PEPEUSDT"].tick_size == "0.00000001" and info["PEPEUSDT"].step_size == "1.00"
    assert info["PEPEUSDT"].min_notional == "1.00"
    assert decimals_of(info["BTCUSDT"].tick_size) == 2 and decimals_of(info["BTCUSDT"].step_size) == 5


def test_exact_number_conversion():
    assert parse_units("61737.63000000") == 6173763000000
    assert parse_units("12345678901.00000000") == 1234567890100000000
    assert parse_units("98765432109876.5") == 9876543210987650000000  # beyond int64: still exact
    assert parse_units("0.00000001") == 1
    assert parse_units("7") == 700000000
    assert parse_units("1.0000000000") == 100000000  # trailing zeros beyond 8 decimals are fine
    for bad in ("", ".", "1.2.3", "abc", "1e5", "0.000000001", "--1"):
        with pytest.raises(ValueError):
            parse_units(bad)
    assert format_units(6173763000000, 2) == "61737.63"
    assert format_units(1234567890100000000, 8) == "12345678901.00000000"
    with pytest.raises(ValueError):
        format_units(6173763000001, 2)


def test_market_facts():
    assert get_market("spot") is SPOT and SPOT.depth_path == "/api/v3/depth"
    assert USDM.depth_path == "/fapi/v1/depth" and COINM.depth_path == "/dapi/v1/depth"
    assert SPOT.depth_weight(100) == 5 and SPOT.depth_weight(1000) == 50 and SPOT.depth_weight(5000) == 250
    assert USDM.depth_weight(1000) == 20 and USDM.depth_weight(50) == 2
    with pytest.raises(ValueError):
        USDM.depth_weight(300)
    with pytest.raises(ValueError, match="unknown market"):
        get_market("margin")
    assert SPOT.depth_stream("BTCUSDT") == "btcusdt@depth@100ms"
    assert USDM.depth_stream("BTCUSDT", "depth@0ms") == "btcusdt@depth@0ms"
    with pytest.raises(ValueError):
        SPOT.depth_stream("BTCUSDT", "depth@0ms")
