"""An example of a researcher's own quoter, run by the same engine as the built-ins:

    replay --date 20240501 --strategy replay.sim.example_strategy:InventorySkewedTouch \
           --param strategy_options='{"skew_ticks": 2}'      # or strategy_options in the YAML config

Any class works if `Class(params, **strategy_options)` builds it and `quote(state)` returns a `Quote`
(prices in the quote currency, None for a side not quoted). The engine rounds to ticks, keeps post-only
quotes off the opposite touch, and applies spread and inventory limits, lockouts and the kill switch.
"""

from __future__ import annotations

from replay.sim.params import SimParams
from replay.sim.strategies import MarketState, Quote


class InventorySkewedTouch:
    """Join the touch, step back `skew_ticks` per order size of inventory on the side that would grow it."""

    def __init__(self, params: SimParams, skew_ticks: float = 1.0) -> None:
        self.skew_ticks = skew_ticks

    def quote(self, state: MarketState) -> Quote:
        back = self.skew_ticks * state.tick * abs(state.q)
        bid = state.best_bid - (back if state.q > 0 else 0.0)
        ask = state.best_ask + (back if state.q < 0 else 0.0)
        return Quote(bid, ask, f"touch, {back:g} back on the growing side (q={state.q:g})")
