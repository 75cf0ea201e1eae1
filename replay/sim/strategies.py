"""Quoting rules: Avellaneda–Stoikov (finite horizon), GLFT (infinite horizon), and simple references.

A strategy is any object with `quote(state: MarketState) -> Quote`: it sees the market as of the
decision (mid, touch, σ, A, k, inventory q in order sizes, time left to the horizon) and answers the
raw prices it wants, or None for a side it does not want to quote. Rounding to ticks, spread limits,
inventory limits, lockouts and the rest of the practical layer are applied afterwards by the engine, the
same for every strategy. A researcher's own class is loaded with `--strategy mymodule:MyQuoter` or
`--strategy path/to/file.py:MyQuoter` and built as `MyQuoter(params, **strategy_options)`.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from replay.sim.params import SimConfigError, SimParams


class StrategyError(RuntimeError):
    """The researcher's strategy raised or answered nonsense; the run stops with a partial report."""


@dataclass(slots=True)
class MarketState:
    ts: int  # ns, data time of the decision
    mid: float
    best_bid: float
    best_ask: float
    tick: float
    q: float  # inventory in multiples of order_size, as known to the strategy (after response latency)
    sigma: float  # price / √s
    A: float  # fills / s
    k: float  # 1 / price
    time_left: float  # s to the horizon (A–S T − t), >= 0


@dataclass(slots=True)
class Quote:
    bid: float | None
    ask: float | None
    reason: str = ""  # why, for the decision log


class Strategy(Protocol):
    def quote(self, state: MarketState) -> Quote: ...


class AvellanedaStoikov:
    """Finite horizon: r = s − qγσ²(T−t); spread = γσ²(T−t) + (2/γ)ln(1+γ/k); quotes r ∓ spread/2."""

    def __init__(self, params: SimParams) -> None:
        self.gamma = params.gamma

    def reservation_and_spread(self, state: MarketState) -> tuple[float, float]:
        g, var = self.gamma, state.sigma * state.sigma * state.time_left
        return state.mid - state.q * g * var, g * var + (2.0 / g) * math.log1p(g / state.k)

    def quote(self, state: MarketState) -> Quote:
        r, spread = self.reservation_and_spread(state)
        return Quote(r - spread / 2, r + spread / 2, f"A-S r={r:.6g} spread={spread:.6g}")


class GLFT:
    """Guéant–Lehalle–Fernandez-Tapia closed-form approximation (infinite horizon, ξ = γ, Δ = 1 order size).

    c1 = (1/(ξΔ))·ln(1 + ξΔ/k); c2 = √(γ/(2AΔk)·(1 + ξΔ/k)^(k/(ξΔ)+1));
    bid depth = c1 + (2q+1)/2·σ·c2, ask depth = c1 − (2q−1)/2·σ·c2.
    """

    def __init__(self, params: SimParams) -> None:
        self.gamma = params.gamma

    def coefficients(self, state: MarketState) -> tuple[float, float]:
        g, k, a = self.gamma, state.k, state.A
        c1 = math.log1p(g / k) / g
        c2 = math.sqrt(g / (2 * a * k) * (1 + g / k) ** (k / g + 1))
        return c1, c2

    def quote(self, state: MarketState) -> Quote:
        c1, c2 = self.coefficients(state)
        half, skew = c1 + 0.5 * state.sigma * c2, state.sigma * c2
        bid_depth, ask_depth = half + skew * state.q, half - skew * state.q
        return Quote(state.mid - bid_depth, state.mid + ask_depth, f"GLFT half={half:.6g} skew={skew:.6g}")


class JoinTouch:
    """Reference: bid at the best bid, ask at the best ask (the queue model decides the fills)."""

    def __init__(self, params: SimParams) -> None:
        pass

    def quote(self, state: MarketState) -> Quote:
        return Quote(state.best_bid, state.best_ask, "join touch")


class FixedSpread:
    """Reference: a fixed half-spread around the mid, no inventory skew."""

    def __init__(self, params: SimParams) -> None:
        self.half = params.half_spread

    def quote(self, state: MarketState) -> Quote:
        return Quote(state.mid - self.half, state.mid + self.half, f"fixed ±{self.half:g}")


def ask_strategy(strategy: Strategy, name: str, state: MarketState) -> Quote:
    """The strategy's quote for `state`, or a `StrategyError` when it raises or answers something other than a
    `Quote` with finite prices (or None)."""
    try:
        quote = strategy.quote(state)
    except Exception as exc:
        raise StrategyError(f"strategy {name!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(quote, Quote) or not all(v is None or (isinstance(v, int | float) and math.isfinite(v))
                                               for v in (quote.bid, quote.ask)):
        raise StrategyError(f"strategy {name!r} returned {quote!r}; expected Quote(bid, ask) "
                            f"with finite prices or None")
    return quote


BUILTIN = {"as": AvellanedaStoikov, "glft": GLFT, "join": JoinTouch, "fixed": FixedSpread}


def load_strategy(params: SimParams) -> Strategy:
    """The strategy named in params: a built-in, `module:Class`, or `path/to/file.py:Class`."""
    name = params.strategy
    if name in BUILTIN:
        return BUILTIN[name](params)
    where, _, attr = name.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise SimConfigError(f"strategy {name!r}: no file {where}")
            spec = importlib.util.spec_from_file_location(f"user_strategy_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        cls = getattr(module, attr)
    except SimConfigError:
        raise
    except AttributeError:
        raise SimConfigError(f"strategy {name!r}: {where} has no {attr!r}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to import the user's code is a bad parameter
        raise SimConfigError(f"strategy {name!r} cannot be loaded: {type(exc).__name__}: {exc}") from None
    try:
        strategy = cls(params, **params.strategy_options)
    except Exception as exc:  # noqa: BLE001
        raise SimConfigError(f"strategy {name!r} failed to start: {type(exc).__name__}: {exc}") from None
    if not callable(getattr(strategy, "quote", None)):
        raise SimConfigError(f"strategy {name!r} has no quote(state) method")
    return strategy
