"""Simulator parameters: one dataclass, read from the `simulator:` section of a YAML file and from flags.

Units (stated once, used everywhere): prices and spreads in the quote currency (USDT for BTCUSDT),
time in seconds, σ in price per √second, A in fills per second, k per unit of price, inventory q in
multiples of `order_size`, γ per (price unit × q) as in Avellaneda & Stoikov. Every bad value is a
`SimConfigError` whose one-line message names the parameter.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from recorder.config import parse_duration

FILL_MODELS = ("queue", "cross", "poisson")
BUILTIN_STRATEGIES = ("as", "glft", "join", "fixed")
HORIZONS = ("window", "span")
AUTO = "auto"


class SimConfigError(ValueError):
    """A simulator parameter that cannot be used; one line naming the parameter."""


@dataclass
class SimParams:
    strategy: str = "as"  # as | glft | join | fixed | module:Class | path/to/file.py:Class
    gamma: float = 0.1
    sigma: float | str = AUTO  # price/√s, or auto: EWMA of mid changes
    A: float | str = AUTO  # fills/s at the mid, or auto: fitted from trades
    k: float | str = AUTO  # 1/price, or auto
    horizon: str = "window"  # A–S terminal time T: the Berlin window end, or the end of the replayed span
    half_spread: float = 5.0  # fixed strategy: distance of each quote from the mid
    order_size: str | None = None  # base quantity per quote (decimal text); default one lot
    min_spread: float = 0.0  # total spread floor (price)
    max_spread: float | None = None  # total spread cap (price)
    fee_aware: bool = True  # with a positive maker fee the spread covers a round trip's fees
    maker_fee: float | None = None  # fraction of notional; negative = rebate; default per market
    taker_fee: float | None = None
    soft_limit: float = 5.0  # |q| above which the growing side's size shrinks linearly to zero at the hard limit
    hard_limit: float = 10.0  # |q| at which only the reducing side is quoted
    requote_interval: float = 0.1  # s of data time between quoting decisions
    tolerance_ticks: int = 0  # keep a live order while the new price is within this many ticks of it
    fill_lockout: float = 0.0  # s a side stays unquoted after a fill on it
    reject_lockout: float = 1.0  # s a side stays unquoted after a post-only reject
    max_loss: float | None = None  # kill switch: total PnL below −max_loss
    max_drawdown: float | None = None  # kill switch: PnL drawdown from its peak above this
    flatten_on_kill: bool = False  # on a kill, close the inventory against the book as a taker
    pause_vol_ratio: float | None = None  # regime pause while fast σ / slow σ exceeds this
    fill_model: str = "queue"
    queue_power: float = 3.0  # n of the power-probability queue rule f(x) = x^n
    partial_fills: bool = False
    entry_latency: str = "10ms"  # constant ("10ms") or scaled from the feed latency ("feed", "feed*2")
    response_latency: str = "10ms"
    sigma_halflife: float = 300.0  # s, EWMA of squared 1-s mid changes
    fast_sigma_halflife: float = 30.0  # s, for the regime pause
    intensity_window: float = 600.0  # s of trades in each A, k fit
    refit_interval: float = 60.0  # s between A, k re-fits
    sample_interval: float = 1.0  # s between points of the equity/inventory series
    seed: int = 1  # random fills of the poisson model
    tick_size: str | None = None  # default: the day's instruments table, else inferred from the book
    strategy_options: dict[str, Any] = field(default_factory=dict)  # passed to a user strategy

    def check(self) -> SimParams:
        """Validate every value; raise SimConfigError naming the first bad parameter."""
        def positive(name: str, allow_auto: bool = False) -> None:
            value = getattr(self, name)
            if allow_auto and value == AUTO:
                return
            if not _finite(value) or value <= 0:
                raise SimConfigError(f"{name} must be a number > 0{' or auto' if allow_auto else ''}, got {value!r}")

        def non_negative(name: str, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if not _finite(value) or value < 0:
                raise SimConfigError(f"{name} must be a number >= 0, got {value!r}")

        if self.strategy not in BUILTIN_STRATEGIES and ":" not in str(self.strategy):
            raise SimConfigError(f"strategy must be one of {', '.join(BUILTIN_STRATEGIES)} or module:Class, "
                                 f"got {self.strategy!r}")
        positive("gamma")
        for name in ("sigma", "A", "k"):
            positive(name, allow_auto=True)
        if self.horizon not in HORIZONS:
            raise SimConfigError(f"horizon must be one of {', '.join(HORIZONS)}, got {self.horizon!r}")
        positive("half_spread")
        if self.order_size is not None:
            size = _decimal(self.order_size, "order_size")
            if size <= 0:
                raise SimConfigError(f"order_size must be > 0, got {self.order_size!r}")
        non_negative("min_spread")
        non_negative("max_spread", optional=True)
        if self.max_spread is not None and self.max_spread < self.min_spread:
            raise SimConfigError(f"max_spread {self.max_spread} is below min_spread {self.min_spread}")
        for name in ("maker_fee", "taker_fee"):
            value = getattr(self, name)
            if value is not None and (not _finite(value) or abs(value) >= 0.1):
                raise SimConfigError(f"{name} must be a fraction of notional such as 0.0002 or -0.00005, got {value!r}")
        positive("soft_limit")
        positive("hard_limit")
        if self.hard_limit < self.soft_limit:
            raise SimConfigError(f"hard_limit {self.hard_limit} is below soft_limit {self.soft_limit}")
        positive("requote_interval")
        if not isinstance(self.tolerance_ticks, int) or isinstance(self.tolerance_ticks, bool) or self.tolerance_ticks < 0:
            raise SimConfigError(f"tolerance_ticks must be a whole number >= 0, got {self.tolerance_ticks!r}")
        for name in ("fill_lockout", "reject_lockout"):
            non_negative(name)
        for name in ("max_loss", "max_drawdown"):
            value = getattr(self, name)
            if value is not None and (not _finite(value) or value <= 0):
                raise SimConfigError(f"{name} must be a number > 0, got {value!r}")
        if self.pause_vol_ratio is not None:
            positive("pause_vol_ratio")
        if self.fill_model not in FILL_MODELS:
            raise SimConfigError(f"fill_model must be one of {', '.join(FILL_MODELS)}, got {self.fill_model!r}")
        positive("queue_power")
        for name in ("entry_latency", "response_latency"):
            parse_latency(getattr(self, name), name)
        for name in ("sigma_halflife", "fast_sigma_halflife", "intensity_window", "refit_interval", "sample_interval"):
            positive(name)
        if self.tick_size is not None and _decimal(self.tick_size, "tick_size") <= 0:
            raise SimConfigError(f"tick_size must be > 0, got {self.tick_size!r}")
        if not isinstance(self.strategy_options, dict):
            raise SimConfigError("strategy_options must be a mapping")
        return self


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _decimal(text: Any, name: str) -> Decimal:
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise SimConfigError(f"{name} must be a decimal number such as 0.001, got {text!r}") from None
    if not value.is_finite():
        raise SimConfigError(f"{name} must be finite, got {text!r}")
    return value


_BARE_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?")


def parse_latency(text: str, name: str = "latency") -> tuple[float, float]:
    """'10ms' -> (0.01 s constant, 0 × feed); 'feed' -> (0, 1); 'feed*2' -> (0, 2)."""
    spec = str(text).strip().lower().replace(" ", "")
    if _BARE_NUMBER.fullmatch(spec):
        raise SimConfigError(f"{name} {text!r} has no unit: write e.g. {spec}ms or {spec}s")
    try:
        if spec.startswith("feed"):
            factor = float(spec[5:]) if spec.startswith("feed*") else 1.0 if spec == "feed" else float("nan")
            if not math.isfinite(factor) or factor <= 0:
                raise ValueError
            return 0.0, factor
        return parse_duration(spec), 0.0
    except (ValueError, TypeError):
        raise SimConfigError(f"{name} must be a duration such as 10ms, or feed / feed*2 (scaled from the "
                             f"feed latency), got {text!r}") from None


_FIELDS = {f.name: f for f in dataclasses.fields(SimParams)}
_DURATIONS = {"requote_interval", "fill_lockout", "reject_lockout", "sigma_halflife", "fast_sigma_halflife",
              "intensity_window", "refit_interval", "sample_interval"}


def _coerce(name: str, value: Any) -> Any:
    """A value from YAML or a flag, in the field's type (durations accept '100ms', '5m')."""
    if value is None:
        return None
    if name in _DURATIONS:
        try:
            return parse_duration(value)
        except (ValueError, TypeError) as exc:
            raise SimConfigError(f"{name}: {exc}") from None
    if name in ("order_size", "tick_size", "strategy", "horizon", "fill_model", "entry_latency", "response_latency"):
        return str(value)
    if name in ("fee_aware", "flatten_on_kill", "partial_fills"):
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off"):
            return False
        raise SimConfigError(f"{name} must be true or false, got {value!r}")
    if name == "strategy_options":
        if isinstance(value, str):  # from --param strategy_options='{"skew_ticks": 2}'
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise SimConfigError(f"strategy_options must be a mapping such as {{\"x\": 1}}, got {value!r}") from None
        return value
    if name in ("tolerance_ticks", "seed"):
        try:
            return int(value)
        except (ValueError, TypeError):
            raise SimConfigError(f"{name} must be a whole number, got {value!r}") from None
    if name in ("sigma", "A", "k") and str(value).lower() == AUTO:
        return AUTO
    try:
        return float(value)
    except (ValueError, TypeError):
        raise SimConfigError(f"{name} must be a number, got {value!r}") from None


def read_config(path: Path) -> Any:
    """The YAML config file (simulator and sweep sections); SimConfigError if it cannot be read or parsed."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise SimConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SimConfigError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None


def load_params(path: Path | None = None, overrides: dict[str, Any] | None = None) -> SimParams:
    """Defaults ← the `simulator:` section of `path` ← `overrides` (flags; None values ignored), checked."""
    values: dict[str, Any] = {}
    if path is not None:
        data = read_config(path)
        if isinstance(data, dict):
            unknown_sections = sorted(str(key) for key in data if key not in ("simulator", "sweep"))
            if unknown_sections:
                raise SimConfigError(f"{path}: unknown top-level section {unknown_sections[0]!r}; "
                                     f"the simulator reads only `simulator:` (and `replay sweep` its `sweep:`)")
        section = data.get("simulator", {}) if isinstance(data, dict) else None
        if not isinstance(section, dict):
            raise SimConfigError(f"{path}: expected a `simulator:` mapping")
        values.update(section)
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise SimConfigError(f"unknown simulator parameter {unknown[0]!r}; known: {', '.join(_FIELDS)}")
    return SimParams(**{name: _coerce(name, value) for name, value in values.items()}).check()


def params_yaml(values: dict[str, Any], comment: str = "") -> str:
    """A `simulator:` section in the config format (e.g. the output of `replay calibrate`)."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return head + yaml.safe_dump({"simulator": values}, sort_keys=False)
