"""Per-frame decode of only what the live decisions need: symbol, event type, update/trade ids and times.

The recorder's hot path needs, per frame, the symbol and the ids the sync engine and the rollover
takeover decide on (`U`, `u`, `pu`, `t`, `a`) and the times for the watchdog and latency (`E`, `T`).
`msgspec` decodes exactly those into a Struct, validating the whole frame as JSON but skipping the
levels, which stay in the frame's bytes until the flush decodes them column-wise (`recorder.columnar`).

The result has the types `parse_frame` returns (DepthUpdate, Trade, AggTrade, BookTicker) with the
undecoded fields None (`bids`, `asks`, `bid_price`, `ask_price`, `pair`). Whatever this decode does not
recognise as a well-formed stream event (acks, errors, shutdown notices, unknown types, wrong field
types, truncated JSON) goes to `parse_frame`, the full decode, so those frames get exactly the message
or `ParseError` they always got.
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
    A: str | None = None
    B: str | None = None
    a: msgspec.Raw = _NONE  # depth: levels; aggTrade: id; bookTicker: ask price
    b: msgspec.Raw = _NONE  # depth: levels; bookTicker: bid price


class _Frame(_Event):
    """A raw-stream event, or the combined-stream envelope {"stream":..,"data":{event}}."""

    stream: msgspec.Raw = _NONE
    data: _Event | None = None


_decode = msgspec.json.Decoder(_Frame).decode
_LIST = ord("[")
_STRING = ord('"')


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
        return Trade(s, event.E, event.T, event.t, event.p, event.q, event.m)
    if e == "aggTrade":
        a = event.a
        if event.E is None or event.T is None or not a or event.p is None or event.q is None \
                or event.f is None or event.l is None or event.m is None:
            return parse_frame(raw)
        try:
            agg_id = int(bytes(a))
        except ValueError:
            return parse_frame(raw)
        return AggTrade(s, event.E, event.T, agg_id, event.p, event.q, event.f, event.l, event.m)
    if e == "bookTicker" or (e is None and event.B is not None and event.A is not None):
        b, a = event.b, event.a
        if event.u is None or event.B is None or event.A is None or not (
                b and a and memoryview(b)[0] == _STRING and memoryview(a)[0] == _STRING):
            return parse_frame(raw)
        return BookTicker(s, event.u, None, event.B, None, event.A, event.E, event.T)
    return parse_frame(raw)
