"""Synthetic market source: per symbol a true L2 book driven by a mid-price random walk and Poisson flow.

Deterministic from a seed (and `start_ms`). Every book change gets an update id: contiguous on spot,
with gaps on futures (as on Binance futures, where U of the next diff is not pu + 1). Market orders
consume the touch and produce trades (grouped into aggTrades per price level). Prices and quantities are
exact ints in 1e-8 units; the ladder stays below `max_levels` (< 1000) per side so that a limit=1000
snapshot is the complete book.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from recorder.markets import Market, SequenceRule
from recorder.numbers import SCALE, UNIT, format_units, parse_units

from .source import BookState, BookTicker, DepthChange, Level, MarketEvent, SymbolSpec, Trade


def _u(text: str) -> int:
    return parse_units(text)


def _spec(
    symbol, base, quote, tick, step, mid, lot, *, market: str, pd=None, qd=None, pair=None
) -> SymbolSpec:
    tick_u, step_u = _u(tick), _u(step)
    if market == "spot":
        pd_, qd_ = SCALE, SCALE
    else:
        pd_ = pd if pd is not None else len(tick.split(".")[1]) if "." in tick else 0
        qd_ = qd if qd is not None else len(step.split(".")[1]) if "." in step else 0
    return SymbolSpec(
        symbol=symbol,
        base=base,
        quote=quote,
        tick=tick_u,
        step=step_u,
        price_decimals=pd_,
        qty_decimals=qd_,
        mid=_u(mid),
        lot=_u(lot),
        pair=pair,
        contract_type=None if market == "spot" else "PERPETUAL",
    )


CATALOGUE: dict[str, dict[str, SymbolSpec]] = {
    "spot": {
        s.symbol: s
        for s in (
            _spec("BTCUSDT", "BTC", "USDT", "0.01", "0.00001", "61737.63", "0.05", market="spot"),
            _spec("ETHUSDT", "ETH", "USDT", "0.01", "0.0001", "3412.57", "0.8", market="spot"),
            _spec("BNBUSDT", "BNB", "USDT", "0.01", "0.001", "583.20", "3", market="spot"),
            _spec("SOLUSDT", "SOL", "USDT", "0.01", "0.001", "147.31", "12", market="spot"),
            _spec("DOGEUSDT", "DOGE", "USDT", "0.00001", "1", "0.16234", "9000", market="spot"),
            _spec("PEPEUSDT", "PEPE", "USDT", "0.00000001", "1", "0.00001234", "2000000000", market="spot"),
        )
    },
    "usdm": {
        s.symbol: s
        for s in (
            _spec("BTCUSDT", "BTC", "USDT", "0.10", "0.001", "61800.30", "0.4", market="usdm", pd=2, qd=3),
            _spec("ETHUSDT", "ETH", "USDT", "0.01", "0.001", "3412.57", "4", market="usdm", pd=2, qd=3),
            _spec("SOLUSDT", "SOL", "USDT", "0.0100", "1", "147.3100", "40", market="usdm", pd=4, qd=0),
            _spec(
                "DOGEUSDT", "DOGE", "USDT", "0.000010", "1", "0.162340", "20000", market="usdm", pd=6, qd=0
            ),
            _spec(
                "1000PEPEUSDT", "1000PEPE", "USDT", "0.0000001", "1", "0.0123400", "2000000", market="usdm"
            ),
        )
    },
    "coinm": {
        s.symbol: s
        for s in (
            _spec("BTCUSD_PERP", "BTC", "USD", "0.1", "1", "61800.3", "60", market="coinm", pair="BTCUSD"),
            _spec("ETHUSD_PERP", "ETH", "USD", "0.01", "1", "3412.57", "200", market="coinm", pair="ETHUSD"),
            _spec(
                "SOLUSD_PERP",
                "SOL",
                "USD",
                "0.010",
                "1",
                "147.310",
                "300",
                market="coinm",
                pd=3,
                pair="SOLUSD",
            ),
            _spec(
                "DOGEUSD_PERP",
                "DOGE",
                "USD",
                "0.000010",
                "1",
                "0.162340",
                "400",
                market="coinm",
                pair="DOGEUSD",
            ),
        )
    },
}


def known_symbols(market: Market | str) -> list[str]:
    name = market if isinstance(market, str) else market.name
    return list(CATALOGUE[name])


def check_symbols(
    market: Market, symbols: list[str], extra: Mapping[str, SymbolSpec] | None = None
) -> list[str]:
    """Uppercase and validate against the catalogue (and `extra` specs); ValueError (one line) listing the
    catalogue's symbols."""
    out = []
    for s in symbols:
        s = s.strip().upper()
        if not s:
            continue
        if s not in CATALOGUE[market.name] and s not in (extra or {}):
            raise ValueError(
                f"unknown symbol {s!r} for the synthetic {market.name} venue; known: {', '.join(CATALOGUE[market.name])}"
            )
        if s not in out:
            out.append(s)
    if not out:
        raise ValueError("no symbols given")
    return out


class _SymbolBook:
    """One symbol's engine: true book, id sequence, history (checkpoints + change log)."""

    CHECKPOINT_EVERY = 500
    MAX_LOG = 30_000

    def __init__(
        self, spec: SymbolSpec, market: Market, seed: int, start_ms: int, rate: float, max_levels: int
    ):
        self.spec = spec
        self.market = market
        self.rng = random.Random(f"{seed}:{market.name}:{spec.symbol}")
        self.rate = rate  # events per second of market time
        self.max_levels = max_levels
        self.target_levels = max(20, int(max_levels * 0.55))
        self.futures = market.sequence_rule is SequenceRule.FUTURES
        rng = self.rng
        self.update_id = (
            rng.randrange(40_000_000_000, 60_000_000_000)
            if not self.futures
            else rng.randrange(4_000_000_000_000, 6_000_000_000_000)
        )
        self.trade_id = rng.randrange(3_000_000_000, 4_000_000_000)
        self.agg_id = rng.randrange(1_000_000_000, 2_000_000_000)
        self.ts = start_ms
        self.next_ts = start_ms + self._gap_ms()
        self.tick = spec.tick
        self.fair = spec.mid // spec.tick  # fair price in ticks
        # chance of a one-tick move per event: ~2e-4 relative volatility per sqrt(second), at most 0.18
        self.p_move = min(0.18, (2e-4 * self.fair) ** 2 / (2 * rate))
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.best_bid: int | None = None
        self.best_ask: int | None = None
        self._build_initial()
        # history
        self.log_ids: list[int] = []
        self.log_changes: list[tuple[list[Level], list[Level]]] = []
        self.log_ts: list[int] = []
        self.log_base = 0  # absolute index of log_ids[0]
        self.checkpoints: deque[tuple[int, int, int, dict[int, int], dict[int, int]]] = deque()
        self._checkpoint()
        self.last_ticker = self._ticker_tuple()

    # -- construction -----------------------------------------------------------------------------
    def _gap_ms(self) -> float:
        return self.rng.expovariate(self.rate) * 1000.0

    def _rand_qty(self, scale: float = 1.0) -> int:
        step = self.spec.step
        mean_steps = max(1.0, self.spec.lot * scale / step)
        steps = max(1, int(self.rng.expovariate(1.0 / mean_steps)) + 1)
        return steps * step

    def _build_initial(self) -> None:
        t = self.tick
        best_bid = self.fair - 1
        best_ask = self.fair + 1
        k = 0
        while len(self.bids) < self.target_levels:
            if k == 0 or self.rng.random() < 0.8:
                self.bids[(best_bid - k) * t] = self._rand_qty(1 + k / 50)
            k += 1
        k = 0
        while len(self.asks) < self.target_levels:
            if k == 0 or self.rng.random() < 0.8:
                self.asks[(best_ask + k) * t] = self._rand_qty(1 + k / 50)
            k += 1
        self.best_bid = max(self.bids)
        self.best_ask = min(self.asks)

    # -- history ----------------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        self.checkpoints.append(
            (self.update_id, self.log_base + len(self.log_ids), self.ts, dict(self.bids), dict(self.asks))
        )
        if len(self.log_ids) > self.MAX_LOG:
            cut = len(self.log_ids) - self.MAX_LOG
            del self.log_ids[:cut], self.log_changes[:cut], self.log_ts[:cut]
            self.log_base += cut
        while self.checkpoints and self.checkpoints[0][1] < self.log_base:
            self.checkpoints.popleft()

    def state_at(self, update_id: int) -> tuple[int, int, dict[int, int], dict[int, int]] | None:
        if update_id >= self.update_id:
            return self.update_id, self.ts, self.bids, self.asks
        cp = None
        for c in reversed(self.checkpoints):
            if c[0] <= update_id:
                cp = c
                break
        if cp is None:
            return None
        uid, start_abs, ts, b, a = cp
        bids, asks = dict(b), dict(a)
        i = start_abs - self.log_base
        n = len(self.log_ids)
        while i < n and self.log_ids[i] <= update_id:
            cb, ca = self.log_changes[i]
            for p, q in cb:
                if q:
                    bids[p] = q
                else:
                    bids.pop(p, None)
            for p, q in ca:
                if q:
                    asks[p] = q
                else:
                    asks.pop(p, None)
            uid, ts = self.log_ids[i], self.log_ts[i]
            i += 1
        return uid, ts, bids, asks

    def stale_update_id(self) -> int:
        n = len(self.log_ids)
        if n == 0:
            return self.update_id
        back = min(n, max(300, int(self.rate * 20)))
        idx = n - back
        return self.log_ids[idx] - 1 if idx > 0 else self.checkpoints[0][0]

    # -- engine -----------------------------------------------------------------------------------
    def _set(self, side: dict[int, int], price: int, qty: int, changes: list[Level]) -> None:
        if qty:
            side[price] = qty
            if side is self.bids and (self.best_bid is None or price > self.best_bid):
                self.best_bid = price
            elif side is self.asks and (self.best_ask is None or price < self.best_ask):
                self.best_ask = price
        else:
            side.pop(price, None)
        changes.append((price, qty))

    def _ticker_tuple(self):
        bb, ba = self.best_bid, self.best_ask
        return (bb, self.bids.get(bb, 0), ba, self.asks.get(ba, 0))

    def _refresh_best(self) -> None:
        if self.best_bid not in self.bids:
            self.best_bid = max(self.bids) if self.bids else None
        if self.best_ask not in self.asks:
            self.best_ask = min(self.asks) if self.asks else None

    def step(self, out: list[MarketEvent]) -> None:
        """Generate the next event (at self.next_ts) and append the resulting market events."""
        rng = self.rng
        ts = int(self.next_ts)
        self.ts = ts
        self.next_ts += self._gap_ms()
        t = self.tick
        # mid-price random walk (ticks)
        r = rng.random()
        if r < self.p_move:
            self.fair += 1
        elif r < 2 * self.p_move and self.fair > 10:
            self.fair -= 1
        fair_p = self.fair * t
        bids, asks = self.bids, self.asks
        cb: list[Level] = []
        ca: list[Level] = []
        trades: list[Trade] = []
        bb, ba = self.best_bid, self.best_ask
        if ba is not None and ba < fair_p and rng.random() < 0.6:
            self._market(True, rng.random() < 0.7, trades, ca, ts)
        elif bb is not None and bb > fair_p and rng.random() < 0.6:
            self._market(False, rng.random() < 0.7, trades, cb, ts)
        else:
            r = rng.random()
            n_b, n_a = len(bids), len(asks)
            side_bid = rng.random() < (0.5 if abs(n_b - n_a) < 20 else (0.75 if n_b < n_a else 0.25))
            if r < 0.45:  # add
                off = int(rng.expovariate(1 / 8.0))
                if side_bid:
                    p = min(fair_p - t - off * t, (ba - t) if ba is not None else fair_p)
                    if p > 0:
                        self._set(bids, p, bids.get(p, 0) + self._rand_qty(), cb)
                else:
                    p = max(fair_p + t + off * t, (bb + t) if bb is not None else fair_p)
                    self._set(asks, p, asks.get(p, 0) + self._rand_qty(), ca)
            elif r < 0.80:  # cancel (part or all) near the touch
                side, ch, best = (bids, cb, bb) if side_bid else (asks, ca, ba)
                if best is not None and len(side) > 5:
                    off = int(rng.expovariate(1 / 6.0))
                    p = best - off * t if side_bid else best + off * t
                    q = side.get(p)
                    if q:
                        if rng.random() < 0.5 or q <= self.spec.step:
                            self._set(side, p, 0, ch)
                        else:
                            steps = q // self.spec.step
                            self._set(side, p, max(1, rng.randrange(1, steps)) * self.spec.step, ch)
            elif r < 0.92:  # quantity change at a level
                side, ch, best = (bids, cb, bb) if side_bid else (asks, ca, ba)
                if best is not None:
                    off = int(rng.expovariate(1 / 4.0))
                    p = best - off * t if side_bid else best + off * t
                    if p in side:
                        nq = self._rand_qty()
                        if nq != side[p]:
                            self._set(side, p, nq, ch)
            else:  # market order at the touch
                buy = rng.random() < 0.5
                self._market(buy, rng.random() < 0.3, trades, ca if buy else cb, ts)
        # keep the ladder bounded
        for side, ch, is_bid in ((bids, cb, True), (asks, ca, False)):
            if len(side) > self.max_levels:
                extra = len(side) - self.max_levels
                far = sorted(side)[:extra] if is_bid else sorted(side)[-extra:]
                for p in far:
                    self._set(side, p, 0, ch)
        if not cb and not ca:
            return
        self._refresh_best()
        self.update_id += 1 if not self.futures else 1 + int(rng.expovariate(1 / 3.0))
        uid = self.update_id
        # trades carry no update id of their own; they happen with this update
        out.extend(trades)
        out.append(DepthChange(self.spec.symbol, ts, uid, cb, ca))
        self.log_ids.append(uid)
        self.log_changes.append((cb, ca))
        self.log_ts.append(ts)
        tk = self._ticker_tuple()
        if tk != self.last_ticker and tk[0] is not None and tk[2] is not None:
            self.last_ticker = tk
            out.append(BookTicker(self.spec.symbol, ts, uid, tk[0], tk[1], tk[2], tk[3]))
        if len(self.log_ids) % self.CHECKPOINT_EVERY == 0:
            self._checkpoint()

    def _market(self, buy: bool, sweep: bool, trades: list[Trade], changes: list[Level], ts: int) -> None:
        """A market order: buy consumes asks from the best, sell consumes bids. Trades per maker fill."""
        side = self.asks if buy else self.bids
        if len(side) < 3:
            return
        best = self.best_ask if buy else self.best_bid
        want = side[best] + (self._rand_qty(0.5) if sweep else 0)
        if not sweep:
            want = max(
                self.spec.step,
                (side[best] * self.rng.randrange(1, 11) // 10) // self.spec.step * self.spec.step,
            )
        prices = sorted(side)[:3] if buy else sorted(side)[-3:][::-1]
        for p in prices:
            if want <= 0:
                break
            q = side[p]
            take = min(q, want)
            want -= take
            # split into 1..3 maker fills, one aggTrade for this price
            n = min(self.rng.randrange(1, 4), take // self.spec.step)
            n = max(1, n)
            parts = []
            rest = take
            for i in range(n - 1):
                part = max(self.spec.step, (rest // (n - i)) // self.spec.step * self.spec.step)
                parts.append(part)
                rest -= part
            parts.append(rest)
            self.agg_id += 1
            first = self.trade_id + 1
            last = self.trade_id + len(parts)
            for j, part in enumerate(parts):
                self.trade_id += 1
                trades.append(
                    Trade(
                        self.spec.symbol,
                        ts,
                        self.trade_id,
                        p,
                        part,
                        not buy,
                        self.agg_id,
                        first,
                        last,
                        take,
                        j == len(parts) - 1,
                    )
                )
            self._set(side, p, q - take, changes)


class SyntheticSource:
    """A deterministic synthetic market for the VenueServer (implements `VenueSource`)."""

    def __init__(
        self,
        market: Market,
        symbols: list[str],
        *,
        seed: int = 1,
        start_ms: int | None = None,
        events_per_second: float | Mapping[str, float] = 40.0,
        max_levels: int = 600,
        specs: Mapping[str, SymbolSpec] | None = None,
    ):
        """`events_per_second`: one rate for every symbol, or a rate per symbol (a whole market mixes a few
        busy symbols with a long quiet tail). `specs`: symbols beyond the catalogue, by name."""
        if max_levels >= 1000:
            raise ValueError("max_levels must stay below 1000 so that a limit=1000 snapshot is complete")
        self.market = market
        self._symbols = check_symbols(market, symbols, specs)
        known = {**CATALOGUE[market.name], **(specs or {})}
        rates = (
            events_per_second
            if isinstance(events_per_second, Mapping)
            else dict.fromkeys(self._symbols, events_per_second)
        )
        missing = [s for s in self._symbols if s not in rates]
        if missing:
            raise ValueError(f"no events_per_second given for {', '.join(missing[:5])}")
        bad = [s for s in self._symbols if not rates[s] > 0]
        if bad:
            raise ValueError(f"events_per_second must be positive: {', '.join(bad[:5])}")
        self.seed = seed
        self._start_ms = int(start_ms if start_ms is not None else time.time() * 1000)
        self.now_ms = self._start_ms
        self.books: dict[str, _SymbolBook] = {
            s: _SymbolBook(known[s], market, seed, self._start_ms, rates[s], max_levels)
            for s in self._symbols
        }
        self._heap = [(b.next_ts, i, s) for i, (s, b) in enumerate(self.books.items())]
        heapq.heapify(self._heap)

    @property
    def start_ms(self) -> int:
        return self._start_ms

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def spec(self, symbol: str) -> SymbolSpec:
        return self.books[symbol].spec

    def advance(self, until_ms: int) -> list[MarketEvent]:
        out: list[MarketEvent] = []
        heap = self._heap
        while heap and heap[0][0] <= until_ms + 0.999:
            if int(heap[0][0]) > until_ms:
                break
            _, i, s = heapq.heappop(heap)
            b = self.books[s]
            b.step(out)
            heapq.heappush(heap, (b.next_ts, i, s))
        self.now_ms = max(self.now_ms, until_ms)
        return out

    @staticmethod
    def _sorted(
        bids: dict[int, int], asks: dict[int, int], limit: int | None
    ) -> tuple[list[Level], list[Level]]:
        b = sorted(bids.items(), reverse=True)
        a = sorted(asks.items())
        if limit is not None:
            b, a = b[:limit], a[:limit]
        return b, a

    def book(self, symbol: str, limit: int | None = None) -> BookState:
        bk = self.books[symbol]
        b, a = self._sorted(bk.bids, bk.asks, limit)
        return BookState(bk.update_id, bk.ts, b, a)

    def book_at(self, symbol: str, update_id: int, limit: int | None = None) -> BookState | None:
        st = self.books[symbol].state_at(update_id)
        if st is None:
            return None
        uid, ts, bids, asks = st
        b, a = self._sorted(bids, asks, limit)
        return BookState(uid, ts, b, a)

    def stale_update_id(self, symbol: str) -> int | None:
        return self.books[symbol].stale_update_id()

    # -- exchangeInfo -----------------------------------------------------------------------------
    def exchange_info_symbol(self, symbol: str) -> dict[str, Any]:
        spec = self.spec(symbol)
        rng = random.Random(f"{self.seed}:filters:{symbol}")
        if self.market.name == "spot":
            return _spot_symbol_info(spec, rng)
        return _futures_symbol_info(spec, self.market, rng)


def _fmt8(units: int) -> str:
    return format_units(units, SCALE)


def _spot_symbol_info(spec: SymbolSpec, rng: random.Random) -> dict[str, Any]:
    max_qty = 9_000_000_000 * UNIT if spec.step >= UNIT else 9000 * UNIT
    filters = [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": _fmt8(spec.tick),
            "maxPrice": _fmt8(spec.mid * 10 // spec.tick * spec.tick),
            "tickSize": _fmt8(spec.tick),
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": _fmt8(spec.step),
            "maxQty": _fmt8(max_qty),
            "stepSize": _fmt8(spec.step),
        },
        {"filterType": "ICEBERG_PARTS", "limit": 10},
        {
            "filterType": "MARKET_LOT_SIZE",
            "minQty": _fmt8(0),
            "maxQty": _fmt8(max_qty // 10),
            "stepSize": _fmt8(0),
        },
        {
            "filterType": "TRAILING_DELTA",
            "minTrailingAboveDelta": 10,
            "maxTrailingAboveDelta": 2000,
            "minTrailingBelowDelta": 10,
            "maxTrailingBelowDelta": 2000,
        },
        {
            "filterType": "PERCENT_PRICE_BY_SIDE",
            "bidMultiplierUp": "5",
            "bidMultiplierDown": "0.2",
            "askMultiplierUp": "5",
            "askMultiplierDown": "0.2",
            "avgPriceMins": 5,
        },
        {
            "filterType": "NOTIONAL",
            "minNotional": "5.00000000",
            "applyMinToMarket": True,
            "maxNotional": "9000000.00000000",
            "applyMaxToMarket": False,
            "avgPriceMins": 5,
        },
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
    ]
    rng.shuffle(filters)
    return {
        "symbol": spec.symbol,
        "status": "TRADING",
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": [
            "LIMIT",
            "LIMIT_MAKER",
            "MARKET",
            "STOP_LOSS",
            "STOP_LOSS_LIMIT",
            "TAKE_PROFIT",
            "TAKE_PROFIT_LIMIT",
        ],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": filters,
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _futures_symbol_info(spec: SymbolSpec, market: Market, rng: random.Random) -> dict[str, Any]:
    pf, qf = spec.price_decimals, spec.qty_decimals
    tick_s = format_units(spec.tick, max(pf, _dec(spec.tick)))
    step_s = format_units(spec.step, max(qf, _dec(spec.step)))
    min_p = spec.mid // 20 // spec.tick * spec.tick or spec.tick
    max_p = spec.mid * 20 // spec.tick * spec.tick
    max_q = 1000 * UNIT if spec.step < UNIT else 10_000_000 * UNIT
    filters = [
        {
            "minPrice": format_units(min_p, _dec(spec.tick)),
            "maxPrice": format_units(max_p, _dec(spec.tick)),
            "filterType": "PRICE_FILTER",
            "tickSize": tick_s,
        },
        {"stepSize": step_s, "filterType": "LOT_SIZE", "maxQty": format_units(max_q, 0), "minQty": step_s},
        {
            "stepSize": step_s,
            "filterType": "MARKET_LOT_SIZE",
            "maxQty": format_units(max_q // 10, 0),
            "minQty": step_s,
        },
        {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
        {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
        {
            "multiplierDown": "0.9500",
            "multiplierUp": "1.0500",
            "multiplierDecimal": "4",
            "filterType": "PERCENT_PRICE",
        },
    ]
    if market.name == "usdm":
        filters.append({"notional": "5", "filterType": "MIN_NOTIONAL"})
    rng.shuffle(filters)
    status_key = "contractStatus" if market.name == "coinm" else "status"
    entry: dict[str, Any] = {
        "symbol": spec.symbol,
        "pair": spec.pair or spec.symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        status_key: "TRADING",
    }
    entry.update(
        {
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": spec.base,
            "quoteAsset": spec.quote,
            "marginAsset": spec.quote if market.name == "usdm" else spec.base,
            "pricePrecision": pf,
            "quantityPrecision": qf,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "triggerProtect": "0.0500",
            "filters": filters,
            "orderTypes": [
                "LIMIT",
                "MARKET",
                "STOP",
                "STOP_MARKET",
                "TAKE_PROFIT",
                "TAKE_PROFIT_MARKET",
                "TRAILING_STOP_MARKET",
            ],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }
    )
    if market.name == "coinm":
        entry["contractSize"] = 100 if spec.base == "BTC" else 10
    return entry


def _dec(units: int) -> int:
    d = SCALE
    while d > 0 and units % 10 == 0:
        units //= 10
        d -= 1
    return d


__all__ = ["CATALOGUE", "SyntheticSource", "check_symbols", "known_symbols"]
