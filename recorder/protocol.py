"""Parsing of Binance market-data frames and REST payloads into typed messages.

Prices and quantities stay the exact strings Binance sent (`[["61737.63000000", "0.5"], ...]`): the hot
path only parses JSON and reads ids; conversion to integers happens in the book (`recorder.numbers`) or
column-wise at flush. Anything malformed or unknown becomes a `ParseError` value, never an exception,
so a caller can count it and move on without touching its book.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

Levels = list[list[str]]


@dataclass(slots=True)
class DepthUpdate:
    """`depthUpdate`: spot has E,s,U,u,b,a; futures add T and pu; COIN-M adds ps."""

    symbol: str
    event_ts: int  # E, ms
    first_update_id: int  # U
    final_update_id: int  # u
    bids: Levels
    asks: Levels
    transact_ts: int | None = None  # T (futures)
    prev_final_update_id: int | None = None  # pu (futures)
    pair: str | None = None  # ps (COIN-M)


@dataclass(slots=True)
class DepthSnapshot:
    """REST depth snapshot; futures add E and T (COIN-M also symbol and pair)."""

    last_update_id: int
    bids: Levels
    asks: Levels
    symbol: str | None = None
    event_ts: int | None = None
    transact_ts: int | None = None


@dataclass(slots=True)
class Trade:
    symbol: str
    event_ts: int  # E
    trade_ts: int  # T
    trade_id: int  # t
    price: str
    qty: str
    buyer_is_maker: bool  # m
    best_match: bool | None = None  # M (spot)
    order_type: str | None = None  # X (futures)


@dataclass(slots=True)
class AggTrade:
    symbol: str
    event_ts: int
    trade_ts: int
    agg_trade_id: int  # a
    price: str
    qty: str
    first_trade_id: int  # f
    last_trade_id: int  # l
    buyer_is_maker: bool
    best_match: bool | None = None


@dataclass(slots=True)
class BookTicker:
    """Best bid/ask; spot sends no e/E/T, futures do (COIN-M adds ps)."""

    symbol: str
    update_id: int  # u
    bid_price: str
    bid_qty: str
    ask_price: str
    ask_qty: str
    event_ts: int | None = None
    transact_ts: int | None = None
    pair: str | None = None


@dataclass(slots=True)
class SubscribeAck:
    """Answer to SUBSCRIBE/UNSUBSCRIBE (`result` null) or LIST_SUBSCRIPTIONS (`result` a list)."""

    id: Any
    result: Any


@dataclass(slots=True)
class ErrorPayload:
    """`{"code":..,"msg":..}` from REST, or `{"error":{"code":..,"msg":..},"id":..}` from a WS request."""

    code: int | None
    msg: str
    id: Any = None


@dataclass(slots=True)
class ServerShutdown:
    """Binance announces a connection will be closed (maintenance or lifetime)."""

    event_ts: int | None


@dataclass(slots=True)
class ParseError:
    """A frame that could not be understood; `raw` is kept short for logs."""

    reason: str
    raw: bytes


Message = (
    DepthUpdate | DepthSnapshot | Trade | AggTrade | BookTicker | SubscribeAck | ErrorPayload | ServerShutdown
)

_MAX_RAW = 200


def _error(reason: str, raw: bytes | str) -> ParseError:
    if isinstance(raw, str):
        raw = raw.encode()
    return ParseError(reason, raw[:_MAX_RAW])


def parse_frame(raw: bytes | str) -> Message | ParseError:
    """Parse one WebSocket frame: combined-stream envelope or raw stream, ack, error or event."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(f"invalid JSON: {exc}", raw)
    if type(obj) is not dict:
        return _error("frame is not a JSON object", raw)
    data = obj.get("data")
    if data is not None and "stream" in obj:
        if type(data) is not dict:
            return _error("envelope data is not an object", raw)
        obj = data
    try:
        return _parse_object(obj, raw)
    except (KeyError, TypeError, ValueError) as exc:
        return _error(f"bad field {exc!s}", raw)


def _parse_object(obj: dict, raw: bytes | str) -> Message | ParseError:
    event = obj.get("e")
    if event == "depthUpdate":
        bids, asks = obj["b"], obj["a"]
        _check_levels(bids)
        _check_levels(asks)
        return DepthUpdate(
            obj["s"],
            _int(obj["E"]),
            _int(obj["U"]),
            _int(obj["u"]),
            bids,
            asks,
            _opt_int(obj.get("T")),
            _opt_int(obj.get("pu")),
            obj.get("ps"),
        )
    if event == "trade":
        return Trade(
            obj["s"],
            _int(obj["E"]),
            _int(obj["T"]),
            _int(obj["t"]),
            _str(obj["p"]),
            _str(obj["q"]),
            _bool(obj["m"]),
            obj.get("M"),
            obj.get("X"),
        )
    if event == "aggTrade":
        return AggTrade(
            obj["s"],
            _int(obj["E"]),
            _int(obj["T"]),
            _int(obj["a"]),
            _str(obj["p"]),
            _str(obj["q"]),
            _int(obj["f"]),
            _int(obj["l"]),
            _bool(obj["m"]),
            obj.get("M"),
        )
    if event == "bookTicker" or (event is None and "u" in obj and "B" in obj and "A" in obj):
        return BookTicker(
            obj["s"],
            _int(obj["u"]),
            _str(obj["b"]),
            _str(obj["B"]),
            _str(obj["a"]),
            _str(obj["A"]),
            _opt_int(obj.get("E")),
            _opt_int(obj.get("T")),
            obj.get("ps"),
        )
    if event == "serverShutdown":
        return ServerShutdown(_opt_int(obj.get("E")))
    if event is None:
        if "result" in obj and "id" in obj:
            return SubscribeAck(obj["id"], obj["result"])
        error = obj.get("error")
        if type(error) is dict:
            return ErrorPayload(_opt_int(error.get("code")), str(error.get("msg", "")), obj.get("id"))
        if "code" in obj and "msg" in obj:
            return ErrorPayload(_opt_int(obj["code"]), str(obj["msg"]), obj.get("id"))
        if "lastUpdateId" in obj:
            return _snapshot(obj)
    return _error(f"unknown frame type {event!r}", raw)


def parse_snapshot(raw: bytes | str, symbol: str | None = None) -> DepthSnapshot | ErrorPayload | ParseError:
    """Parse a REST depth response (or the error payload Binance sent instead)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(f"invalid JSON: {exc}", raw)
    if type(obj) is not dict:
        return _error("snapshot is not a JSON object", raw)
    if "lastUpdateId" not in obj:
        if "code" in obj and "msg" in obj:
            return ErrorPayload(_opt_int(obj["code"]), str(obj["msg"]))
        return _error("snapshot has no lastUpdateId", raw)
    try:
        snapshot = _snapshot(obj)
    except (KeyError, TypeError, ValueError) as exc:
        return _error(f"bad field {exc!s}", raw)
    if snapshot.symbol is None:
        snapshot.symbol = symbol
    return snapshot


def _snapshot(obj: dict) -> DepthSnapshot:
    bids, asks = obj["bids"], obj["asks"]
    _check_levels(bids)
    _check_levels(asks)
    return DepthSnapshot(
        _int(obj["lastUpdateId"]),
        bids,
        asks,
        obj.get("symbol"),
        _opt_int(obj.get("E")),
        _opt_int(obj.get("T")),
    )


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _str(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a decimal string, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected a boolean, got {value!r}")
    return value


def _check_levels(levels: Any) -> None:
    """Only the container is checked here, to keep the hot path per frame, not per level: each level is
    checked where it is converted (`OrderBook.apply` resyncs on a bad level; the writers cast whole
    columns at flush and set aside, with an event, any message whose levels do not convert)."""
    if type(levels) is not list:
        raise TypeError("levels are not a list")


# ---- exchangeInfo -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instrument:
    """Per-symbol trading rules from exchangeInfo (filters looked up by type, never by position)."""

    symbol: str
    status: str
    tick_size: str
    step_size: str
    min_qty: str | None
    min_notional: str | None
    price_precision: int | None
    quantity_precision: int | None
    filters_json: str
    pair: str | None = None


def parse_exchange_info(raw: bytes | str) -> dict[str, Instrument] | ErrorPayload | ParseError:
    """Map symbol -> Instrument from an exchangeInfo response."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(f"invalid JSON: {exc}", raw)
    if type(obj) is not dict:
        return _error("exchangeInfo is not a JSON object", raw)
    if "symbols" not in obj:
        if "code" in obj and "msg" in obj:
            return ErrorPayload(_opt_int(obj["code"]), str(obj["msg"]))
        return _error("exchangeInfo has no symbols", raw)
    instruments: dict[str, Instrument] = {}
    try:
        for entry in obj["symbols"]:
            filters = {f["filterType"]: f for f in entry.get("filters", [])}
            price_filter = filters.get("PRICE_FILTER")
            lot_size = filters.get("LOT_SIZE")
            if price_filter is None or lot_size is None:
                continue  # not tradable as an order book (no price/lot rules)
            notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
            instruments[entry["symbol"]] = Instrument(
                symbol=entry["symbol"],
                status=entry.get("status") or entry.get("contractStatus") or "",
                tick_size=_str(price_filter["tickSize"]),
                step_size=_str(lot_size["stepSize"]),
                min_qty=lot_size.get("minQty"),
                min_notional=notional.get("minNotional") or notional.get("notional"),
                price_precision=entry.get("pricePrecision"),
                quantity_precision=entry.get("quantityPrecision"),
                filters_json=orjson.dumps(entry.get("filters", [])).decode(),
                pair=entry.get("pair"),
            )
    except (KeyError, TypeError, ValueError) as exc:
        return _error(f"bad exchangeInfo entry: {exc!s}", raw)
    return instruments
