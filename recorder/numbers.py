"""Exact decimal numbers as integers in units of 1e-8.

Binance never sends more than 8 decimals (spot strings always carry exactly 8; futures fewer), so one
fixed scale represents every price and quantity exactly, as a Python int in the book and as an Arrow
`decimal128(38, 8)` on disk, whose unscaled integer is the very same number. Floats never appear.
"""

from __future__ import annotations

import functools

SCALE = 8
UNIT = 10**SCALE
_POW10 = [10**i for i in range(SCALE + 1)]


def parse_units(text: str) -> int:
    """'61737.63000000' -> 6173763000000. Raises ValueError if not a plain decimal or finer than 1e-8."""
    dot = text.find(".")
    if dot > 0:  # fast path: Binance's own form, digits '.' at most 8 decimals
        decimals = len(text) - dot - 1
        if decimals <= SCALE:
            digits = text[:dot] + text[dot + 1 :]
            if digits.isdigit():
                return int(digits) * _POW10[SCALE - decimals]
    if dot < 0:
        digits, decimals = text, 0
    else:
        decimals = len(text) - dot - 1
        digits = text[:dot] + text[dot + 1 :]
        if decimals > SCALE:
            extra = digits[len(digits) - (decimals - SCALE) :]
            if extra.strip("0"):
                raise ValueError(f"{text!r} has more than {SCALE} decimals")
            digits = digits[: len(digits) - (decimals - SCALE)]
            decimals = SCALE
    if not digits or not (digits.isdigit() or (digits[0] == "-" and digits[1:].isdigit())):
        raise ValueError(f"{text!r} is not a decimal number")
    return int(digits) * _POW10[SCALE - decimals]


def format_units(value: int, decimals: int = SCALE) -> str:
    """6173763000000, 2 -> '61737.63' (fixed decimals, as Binance prints). Raises if precision would be lost."""
    if not 0 <= decimals <= SCALE:
        raise ValueError(f"decimals must be within 0..{SCALE}")
    drop = _POW10[SCALE - decimals]
    whole, rest = divmod(abs(value), drop)
    if rest:
        raise ValueError(f"{value} units cannot be printed with {decimals} decimals")
    sign = "-" if value < 0 else ""
    if decimals == 0:
        return f"{sign}{whole}"
    int_part, frac = divmod(whole, _POW10[decimals])
    return f"{sign}{int_part}.{frac:0{decimals}d}"


def decimals_needed(units: int) -> int:
    """Fewest decimals that print a value exactly: 6173763000000 -> 2, 100000000 -> 0."""
    units = abs(units)
    decimals = SCALE
    while decimals > 0 and units % 10 == 0:
        units //= 10
        decimals -= 1
    return decimals


def decimals_of(step: str) -> int:
    """Number of decimals a tick or step size needs: '0.01000000' -> 2, '1.00000000' -> 0."""
    units = parse_units(step)
    if units <= 0:
        raise ValueError(f"step {step!r} must be positive")
    return decimals_needed(units)


# Books see the same price and quantity strings over and over: a bounded cache of conversions makes the
# common case a C-level dict hit. Only successful conversions are cached, so errors still raise.
units_cached = functools.lru_cache(maxsize=1 << 18)(parse_units)
