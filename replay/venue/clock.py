"""Replay/venue speed strings: '10x', '0.25x', '1' -> float factor; 'max' -> None (as fast as possible)."""

from __future__ import annotations

import math


def parse_speed(text: str | float | None) -> float | None:
    """Parse a speed: '10x' -> 10.0, '0.25x' -> 0.25, '3' -> 3.0, 'max' -> None. ValueError (one line) otherwise."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower()
        if s in ("max", "inf", "unlimited"):
            return None
        s = s.removesuffix("x")
        try:
            value = float(s)
        except ValueError:
            raise ValueError(f"bad speed {text!r}; use e.g. 1x, 10x, 0.25x or max") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"bad speed {text!r}; it must be a positive factor such as 1x, 10x, 0.25x, or max")
    return value


def format_speed(speed: float | None) -> str:
    return "max" if speed is None else f"{speed:g}x"
