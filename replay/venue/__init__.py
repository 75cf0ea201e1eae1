"""Synthetic (and, later, replayed) Binance venue: one local port serving WS market streams and REST."""

from .clock import format_speed, parse_speed
from .faults import FaultSpec, parse_duration
from .server import VenueServer
from .source import (
    BookState,
    BookTicker,
    DepthChange,
    DepthDiff,
    MarketEvent,
    RawEvent,
    SymbolSpec,
    Trade,
    VenueSource,
)
from .synthetic import CATALOGUE, SyntheticSource, check_symbols, known_symbols

__all__ = [
    "CATALOGUE",
    "BookState",
    "BookTicker",
    "DepthChange",
    "DepthDiff",
    "FaultSpec",
    "MarketEvent",
    "RawEvent",
    "SymbolSpec",
    "SyntheticSource",
    "Trade",
    "VenueServer",
    "VenueSource",
    "check_symbols",
    "format_speed",
    "known_symbols",
    "parse_duration",
    "parse_speed",
]
