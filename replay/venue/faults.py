"""Fault injection: spec parsing and per-connection decisions.

Grammar (comma separated `key=value`, whitespace ignored, empty string or `none` = no faults):

    drop=P  duplicate=P  reorder=P  malformed=P      per depth diff frame, per WS connection
    delay=P:DUR                                      per depth diff frame: deliver it DUR later
    stale_snapshot=P  http5xx=P                      per REST depth (stale) / REST request
    ahead_snapshot=P                                 per REST depth: lastUpdateId far ahead of the stream
                                                     (as from another server or market), never bridged
    http429=P[:DUR]  http418=P[:DUR]                 per REST request, DUR = Retry-After (2s / 120s)
    slow_rest=P:DUR                                  per REST request: answer DUR later
    disconnect=DUR                                   drop every WS connection after DUR of wall time
    lifetime=DUR                                     WS connection lifetime (normal close at the end)
    silence=CHANNEL:SYMBOL[:FROM[:UNTIL]]            stop sending stream <symbol>@<CHANNEL> (depth,
                                                     trade, aggTrade, bookTicker) to every client from
                                                     FROM (default 0) until UNTIL (default: for good),
                                                     in wall time since the venue started
    seed=N                                           seed of the fault decisions

P is a probability in [0, 1]; DUR is a duration such as 300ms, 1.5s, 2m, 1h (bare number = seconds).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, fields

from recorder.config import parse_duration

PROB_KEYS = ("drop", "duplicate", "reorder", "malformed", "stale_snapshot", "ahead_snapshot", "http5xx")
PROB_DUR_KEYS = ("delay", "slow_rest", "http429", "http418")  # http429/418: DUR is Retry-After, optional
RETRY_AFTER_DEFAULT_S = {"http429": 2.0, "http418": 120.0}
DUR_KEYS = ("disconnect", "lifetime")
SILENCE_CHANNELS = ("depth", "trade", "aggTrade", "bookTicker")

def _prob(key: str, text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise ValueError(f"fault {key}: bad probability {text!r}") from None
    if not 0.0 <= p <= 1.0:  # also rejects nan
        raise ValueError(f"fault {key}: probability {text} must be within 0..1")
    return p


def _silence(text: str) -> tuple[str, str, float, float | None]:
    channel, _, rest = text.partition(":")
    symbol, _, times = rest.partition(":")
    if channel not in SILENCE_CHANNELS or not symbol:
        raise ValueError(f"fault silence: use CHANNEL:SYMBOL[:FROM[:UNTIL]] with CHANNEL one of "
                         f"{', '.join(SILENCE_CHANNELS)}, got {text!r}")
    start, _, until = times.partition(":")
    try:
        start_s = parse_duration(start) if start else 0.0
        until_s = parse_duration(until) if until else None
    except ValueError as e:
        raise ValueError(f"fault silence: {e}") from None
    if until_s is not None and until_s <= start_s:
        raise ValueError(f"fault silence: UNTIL {until} must be after FROM {start or 0}")
    return channel, symbol.upper(), start_s, until_s


@dataclass(frozen=True)
class FaultSpec:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    malformed: float = 0.0
    delay: float = 0.0
    delay_s: float = 0.0
    stale_snapshot: float = 0.0
    ahead_snapshot: float = 0.0
    http429: float = 0.0
    http429_s: float = RETRY_AFTER_DEFAULT_S["http429"]
    http418: float = 0.0
    http418_s: float = RETRY_AFTER_DEFAULT_S["http418"]
    http5xx: float = 0.0
    slow_rest: float = 0.0
    slow_rest_s: float = 0.0
    disconnect_s: float | None = None
    lifetime_s: float | None = None
    silence: tuple[str, str, float, float | None] | None = None  # (channel, SYMBOL, from_s, until_s)
    seed: int = 0

    @classmethod
    def parse(cls, text: str | None) -> FaultSpec:
        """Parse a spec string; ValueError with a one-line message on any problem."""
        if text is None:
            return cls()
        text = text.strip()
        if not text or text.lower() == "none":
            return cls()
        values: dict[str, object] = {}
        seen: set[str] = set()
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep or not value:
                raise ValueError(f"fault spec item {item!r} must be key=value")
            if key in seen:
                raise ValueError(f"fault {key} given twice")
            seen.add(key)
            if key in PROB_KEYS:
                values[key] = _prob(key, value)
            elif key in PROB_DUR_KEYS:
                p, colon, dur = value.partition(":")
                if not colon and key in RETRY_AFTER_DEFAULT_S:
                    colon, dur = ":", f"{RETRY_AFTER_DEFAULT_S[key]}s"
                if not colon:
                    raise ValueError(f"fault {key} needs probability:duration, e.g. {key}=0.01:300ms")
                values[key] = _prob(key, p)
                try:
                    values[f"{key}_s"] = parse_duration(dur)
                except ValueError as e:
                    raise ValueError(f"fault {key}: {e}") from None
            elif key in DUR_KEYS:
                try:
                    d = parse_duration(value)
                except ValueError as e:
                    raise ValueError(f"fault {key}: {e}") from None
                if d <= 0:
                    raise ValueError(f"fault {key}: duration must be positive")
                values[f"{key}_s"] = d
            elif key == "silence":
                values["silence"] = _silence(value)
            elif key == "seed":
                try:
                    values["seed"] = int(value)
                except ValueError:
                    raise ValueError(f"fault seed: bad integer {value!r}") from None
            else:
                known = ", ".join(PROB_KEYS + PROB_DUR_KEYS + DUR_KEYS + ("silence", "seed"))
                raise ValueError(f"unknown fault {key!r}; known: {known}")
        return cls(**values)  # type: ignore[arg-type]

    @property
    def active(self) -> bool:
        return self != FaultSpec(seed=self.seed)

    def __str__(self) -> str:
        parts = []
        for k in PROB_KEYS:
            if getattr(self, k):
                parts.append(f"{k}={getattr(self, k):g}")
        for k in PROB_DUR_KEYS:
            if getattr(self, k):
                parts.append(f"{k}={getattr(self, k):g}:{getattr(self, k + '_s') * 1000:g}ms")
        for k in DUR_KEYS:
            if getattr(self, k + "_s"):
                parts.append(f"{k}={getattr(self, k + '_s'):g}s")
        if self.silence:
            channel, symbol, start, until = self.silence
            parts.append(f"silence={channel}:{symbol}:{start:g}s" + ("" if until is None else f":{until:g}s"))
        if self.seed:
            parts.append(f"seed={self.seed}")
        return ",".join(parts) or "none"


FAULT_NAMES = tuple(f.name for f in fields(FaultSpec) if not f.name.endswith("_s") and f.name != "seed") + (
    "disconnect",
    "lifetime",
)


class FaultDecider:
    """Random decisions for one client connection (WS) or for the REST side, counted in `counters`."""

    def __init__(self, spec: FaultSpec, stream_id: str, counters: Counter[str]):
        self.spec = spec
        self.rng = random.Random(f"{spec.seed}:{stream_id}")
        self.counters = counters
        self.local: Counter[str] = Counter()

    def hit(self, name: str) -> bool:
        p = getattr(self.spec, name)
        if p and self.rng.random() < p:
            self.count(name)
            return True
        return False

    def count(self, name: str) -> None:
        self.counters[name] += 1
        self.local[name] += 1

    def malformed_frame(self) -> str:
        """A broken frame: truncated JSON or a valid object of an unknown shape."""
        if self.rng.random() < 0.5:
            return '{"e":"depthUpdate","E":17'
        return '{"code":-1,"unexpected":[1,2,3]}'
