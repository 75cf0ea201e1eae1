"""Per-frame decode of only the fields the recorder keeps, never a depth diff's levels.

The hot path needs, per frame, the symbol and the ids the sync engine and the rollover takeover decide
on (`U`, `u`, `pu`, `t`, `a`) and the times (`E`, `T`). `msgspec` decodes named fields into one Struct,
validating the whole frame as JSON but skipping everything else: a depth diff's levels stay in the
frame's bytes until the flush decodes them column-wise (`recorder.columnar`), where nearly all of a
frame's bytes and values are. Trades, aggTrades and bookTickers are a few scalars each, decoded here as
the exact strings Binance sent (cheaper than a second JSON pass at flush, measured).

The result has the types `parse_frame` returns (DepthUpdate, Trade, AggTrade, BookTicker); a depth
diff's `bids`/`asks` and every `pair` are None. Whatever this decode does not recognise as a well-formed
stream event (acks, errors, shutdown notices, unknown types, wrong field types, truncated JSON) goes to
`parse_frame`, the full decode, so those frames get exactly the message or `ParseError` they always got.
"""

from __future__ import annotations

import msgspec

from recorder.protocol import AggTrade, BookTicker, DepthUpdate, Message, ParseError, Trade, parse_frame

_NONE = msgspec.Raw()


class _Event(msgspec.Struct):
    e: str | None = None
    s: str | None = None
    E: int | None = None
    T: int | None = None
    U: int | None = None
    u: int | None = None
    pu: int | None = None
    t: int | None = None
    f: int | None = None
    l: int | None = None
    p: str | None = None
    q: str | None = None
    m: bool | None = None
    M: bool | None = None
    X: str | None = None
    A: str | None = None
    B: str | None = None
    a: msgspec.Raw = _NONE  # depth: levels; aggTrade: id; bookTicker: ask price
    b: msgspec.Raw = _NONE  # depth: levels; bookTicker: bid price


class _Frame(_Event):
    """A raw-stream event, or the combined-stream envelope {"stream":..,"data":{event}}."""

    stream: msgspec.Raw = _NONE
    data: _Event | None = None


_decode = msgspec.json.Decoder(_Frame).decode
_decode_str = msgspec.json.Decoder(str).decode
_LIST = ord("[")


def decode_frame(raw: bytes) -> Message | ParseError:
    """The frame's stream event with ids and times only, or what `parse_frame` makes of anything else."""
    try:
        frame = _decode(raw)
    except msgspec.DecodeError:
        return parse_frame(raw)
    event = frame.data
    if event is None:
        event = frame
    elif not frame.stream:
        return parse_frame(raw)
    e = event.e
    s = event.s
    if s is None:
        return parse_frame(raw)
    if e == "depthUpdate":
        b, a = event.b, event.a
        if event.E is None or event.U is None or event.u is None or not (
                b and a and memoryview(b)[0] == _LIST and memoryview(a)[0] == _LIST):
            return parse_frame(raw)
        return DepthUpdate(s, event.E, event.U, event.u, None, None, event.T, event.pu)
    if e == "trade":
        if event.E is None or event.T is None or event.t is None or event.p is None or event.q is None \
                or event.m is None:
            return parse_frame(raw)
        return Trade(s, event.E, event.T, event.t, event.p, event.q, event.m, event.M, event.X)
    if e == "aggTrade":
        a = event.a
        if event.E is None or event.T is None or not a or event.p is None or event.q is None \
                or event.f is None or event.l is None or event.m is None:
            return parse_frame(raw)
        try:
            agg_id = int(bytes(a))
        except ValueError:
            return parse_frame(raw)
        return AggTrade(s, event.E, event.T, agg_id, event.p, event.q, event.f, event.l, event.m, event.M)
    if e == "bookTicker" or (e is None and event.B is not None and event.A is not None):
        if event.u is None or event.B is None or event.A is None:
            return parse_frame(raw)
        try:
            bid, ask = _decode_str(event.b), _decode_str(event.a)
        except msgspec.DecodeError:  # absent or not a string
            return parse_frame(raw)
        return BookTicker(s, event.u, bid, event.B, ask, event.A, event.E, event.T)
    return parse_frame(raw)
