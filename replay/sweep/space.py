"""What a sweep runs: parameter axes (lists and ranges), the parameter sets they span, and the tasks.

An axis is `NAME=v1,v2,...` (a list), `NAME=LOW:HIGH:linN|logN` (N values, evenly or log-evenly spaced, both
ends included) or `NAME=LOW:HIGH:STEP` (LOW, LOW+STEP, ... up to HIGH). `--search optuna` reads a range as a
continuous distribution (`LOW:HIGH:log` or `LOW:HIGH`, no count needed) and a list as a choice. A task is one
(parameter set, day, symbol); its id and its seed are hashes of what decides its result, so the same sweep
gives the same tasks, ids and seeds on any machine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from replay.sim.params import SimConfigError, SimParams, _coerce, read_config

FIELDS = {f.name for f in dataclasses.fields(SimParams)}
INTEGERS = {"tolerance_ticks", "seed"}
DECIMAL_TEXT = {"order_size", "tick_size"}
NOT_SWEPT = {"strategy_options"}
MAX_SETS = 100_000
_RANGE = re.compile(r"^([^:]+):([^:]+)(?::(lin|log)(\d*)|:([^:]+))?$")


class SweepSpaceError(ValueError):
    """An axis, a config section or a parameter set that cannot be swept; one line naming it."""


@dataclass(frozen=True)
class Axis:
    """One swept parameter: its grid values, and for a search its range (None: a choice of `values`)."""

    name: str
    values: tuple
    low: float | None = None
    high: float | None = None
    log: bool = False


def parse_axis(text: str, search: bool = False) -> Axis:
    """`gamma=0.01,0.05,0.1`, `gamma=0.01:0.2:log5`, `order_size=0.001:0.004:0.001` (see the module)."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise SweepSpaceError(f"--grid {text!r} is not NAME=VALUES (e.g. gamma=0.01,0.05 or gamma=0.01:0.2:log5)")
    return axis_of(name, spec, search)


def axis_of(name: str, spec: Any, search: bool = False) -> Axis:
    """An axis from a flag's text or a config value (a YAML list or the same text)."""
    if name not in FIELDS or name in NOT_SWEPT:
        raise SweepSpaceError(f"cannot sweep {name!r}: not a simulator parameter; known: {', '.join(sorted(FIELDS))}")
    if isinstance(spec, list | tuple):
        items = list(spec)
    else:
        text = str(spec).strip()
        found = _RANGE.match(text) if "," not in text else None
        if found:
            return _range_axis(name, found, text, search)
        items = [item.strip() for item in text.split(",")]
    if not items or any(item == "" or item is None for item in items):
        raise SweepSpaceError(f"{name}: empty value in {spec!r}")
    values = tuple(_value(name, item) for item in items)
    if len(set(map(repr, values))) != len(values):
        raise SweepSpaceError(f"{name}: a value is given twice in {spec!r}")
    return Axis(name, values)


def _value(name: str, item: Any) -> Any:
    try:
        return _coerce(name, item)
    except SimConfigError as exc:
        raise SweepSpaceError(str(exc)) from None


def _number(name: str, text: str, spec: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except ArithmeticError:
        raise SweepSpaceError(f"{name}: {text!r} in {spec!r} is not a number") from None
    if not value.is_finite():
        raise SweepSpaceError(f"{name}: {text!r} in {spec!r} is not finite")
    return value


def _range_axis(name: str, found: re.Match, spec: str, search: bool) -> Axis:
    low, high = _number(name, found[1], spec), _number(name, found[2], spec)
    kind, count, step = found[3], found[4], found[5]
    if high <= low:
        raise SweepSpaceError(f"{name}: range {spec!r} must go from low to high")
    log = kind == "log"
    if log and low <= 0:
        raise SweepSpaceError(f"{name}: a log range needs low > 0, got {spec!r}")
    if step is not None:
        size = _number(name, step, spec)
        if size <= 0:
            raise SweepSpaceError(f"{name}: step must be > 0 in {spec!r}")
        n = int((high - low) / size) + 1
        if n > MAX_SETS:
            raise SweepSpaceError(f"{name}: {spec!r} gives {n:,} values")
        points = [low + i * size for i in range(n)]
    elif count:
        n = int(count)
        if n < 2:
            raise SweepSpaceError(f"{name}: a range needs at least 2 values, got {spec!r}")
        if log:
            ratio = (float(high) / float(low)) ** (1 / (n - 1))
            points = [Decimal(f"{float(low) * ratio**i:.6g}") for i in range(n - 1)] + [high]
        else:
            points = [low + (high - low) * i / (n - 1) for i in range(n)]
    elif search:
        return Axis(name, (), float(low), float(high), log)
    else:
        raise SweepSpaceError(f"{name}: a grid range needs a count or a step, e.g. {found[1]}:{found[2]}:"
                              f"{kind or 'lin'}5 or {found[1]}:{found[2]}:0.01")
    values = tuple(range_value(name, p) for p in points)
    if name in INTEGERS and len(set(values)) != len(values):
        raise SweepSpaceError(f"{name}: {spec!r} repeats whole numbers; give a step of at least 1")
    return Axis(name, values, float(low), float(high), log)


def range_value(name: str, point: Decimal | float) -> Any:
    """A point of a range (a grid's, or a number a search sampled) as the parameter takes it."""
    return _value(name, _point_text(name, Decimal(str(point))))


def _point_text(name: str, point: Decimal) -> str:
    """A range point as the parameter takes it: a whole number, or decimal text of at most 12 significant
    digits (a third of a step or a log grid point is not written with 28)."""
    if name in INTEGERS:
        return str(int(point.to_integral_value()))
    return format(Decimal(f"{point:.12g}").normalize(), "f")


def expand(axes: list[Axis]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in the order given (the first axis varies slowest)."""
    names = [axis.name for axis in axes]
    if len(set(names)) != len(names):
        raise SweepSpaceError(f"parameter {next(n for n in names if names.count(n) > 1)!r} is swept twice")
    total = math.prod(len(axis.values) for axis in axes)
    if total > MAX_SETS:
        raise SweepSpaceError(f"the grid has {total:,} parameter sets (at most {MAX_SETS:,}); use --search optuna")
    return [dict(zip(names, combo)) for combo in itertools.product(*(axis.values for axis in axes))]


def set_params(base: SimParams, values: dict[str, Any]) -> SimParams:
    """The base parameters with a set's values, checked (a bad combination is bad input, named)."""
    try:
        return dataclasses.replace(base, **values).check()
    except SimConfigError as exc:
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        raise SweepSpaceError(f"parameter set {shown}: {exc}") from None


def digest(value: object, length: int) -> str:
    """`length` hex digits of the SHA-256 of `value` as sorted-key JSON: the ids of sets, tasks and sweeps."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:length]


def set_id(params: SimParams) -> str:
    """8 hex digits naming a parameter set by every parameter that decides its results (the seed aside)."""
    return digest({k: v for k, v in dataclasses.asdict(params).items() if k != "seed"}, 8)


@dataclass(frozen=True)
class Task:
    """One backtest of a sweep: a parameter set on one symbol of one day."""

    task_id: str
    set_id: str
    day: str  # YYYY-MM-DD
    symbol: str
    values: tuple[tuple[str, Any], ...]  # the swept values of the set, in axis order
    seed: int
    fit_day: str | None = None  # walk-forward: σ, A, k from this day's calibration

    def params(self, base: SimParams) -> SimParams:
        return dataclasses.replace(base, **dict(self.values), seed=self.seed)


def make_task(base: SimParams, values: dict[str, Any], market: str, day: str, symbol: str,
              fit_day: str | None = None, *, check: bool = True) -> Task:
    """The task of `values` on (day, symbol): ids and the seed derived from what decides the result.
    `check=False`: a set a search sampled may be invalid (soft_limit above hard_limit); its task is still
    made, and its row carries the error when it runs."""
    params = set_params(base, values) if check else dataclasses.replace(base, **values)
    sid = set_id(params)
    task_id = digest([sid, market, day, symbol, fit_day], 16)
    seed = int(digest([params.seed, sid, market, day, symbol], 8), 16) % 2**31
    return Task(task_id, sid, day, symbol, tuple(values.items()), seed, fit_day)


def plan(base: SimParams, sets: list[dict[str, Any]], market: str, symbols_by_day: dict[dt.date, list[str]],
         fit_days: dict[dt.date, dt.date] | None = None) -> list[Task]:
    """Every (set, day, symbol) task, sets outermost. With `fit_days` (walk-forward) a day is traded only
    when it has a day to take its fits from."""
    tasks = []
    for values in sets:
        for day, fit, symbols in trading_days(symbols_by_day, fit_days):
            tasks += [make_task(base, values, market, day, symbol, fit) for symbol in symbols]
    return tasks


def trading_days(symbols_by_day: dict[dt.date, list[str]], fit_days: dict[dt.date, dt.date] | None
                 ) -> list[tuple[str, str | None, list[str]]]:
    """(day, fit day, symbols) of each day traded, in date order: with `fit_days` (walk-forward) only the days
    that have a day to take their fits from."""
    return [(day.isoformat(), fit_days[day].isoformat() if fit_days is not None else None, symbols)
            for day, symbols in sorted(symbols_by_day.items()) if fit_days is None or day in fit_days]


def previous_days(days: list[dt.date], recorded: list[dt.date]) -> dict[dt.date, dt.date]:
    """Walk-forward: each day of `days` -> the recorded day before it (days with none are left out)."""
    earlier = sorted(recorded)
    out = {}
    for day in days:
        before = [d for d in earlier if d < day]
        if before:
            out[day] = before[-1]
    return out


@dataclass
class SweepConfig:
    """The `sweep:` section of a config file (flags given on the command line take precedence)."""

    grid: list[Axis] = dataclasses.field(default_factory=list)
    objective: str | None = None
    search: str | None = None
    trials: int | None = None


def load_sweep_config(path: Path | None, search: bool) -> SweepConfig:
    """The `sweep:` section of `path` (grid: {name: list or range text}, objective, search, trials)."""
    if path is None:
        return SweepConfig()
    try:
        data = read_config(path)
    except SimConfigError as exc:
        raise SweepSpaceError(str(exc)) from None
    section = data.get("sweep", {}) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise SweepSpaceError(f"{path}: expected a `sweep:` mapping")
    unknown = sorted(set(section) - {"grid", "objective", "search", "trials"})
    if unknown:
        raise SweepSpaceError(f"{path}: unknown key {unknown[0]!r} in `sweep:` (grid, objective, search, trials)")
    grid = section.get("grid") or {}
    if not isinstance(grid, dict):
        raise SweepSpaceError(f"{path}: `sweep: grid:` must map parameter names to values")
    trials = section.get("trials")
    if trials is not None and (not isinstance(trials, int) or isinstance(trials, bool) or trials < 1):
        raise SweepSpaceError(f"{path}: `sweep: trials:` must be a whole number >= 1, got {trials!r}")
    return SweepConfig([axis_of(str(name), spec, search) for name, spec in grid.items()],
                       section.get("objective"), section.get("search"), trials)
