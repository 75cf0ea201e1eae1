"""Many days, many symbols: the backtest of each day in order, and one report over them all.

Each day is one call of `run.backtest` for all its symbols (the same per-day files as a single-day run),
with that day's own A–S horizon (its window end). Inventory is reset each day, or carried: a symbol opens
the day with the inventory it closed the previous one with, marked at that close's mid, so a day's PnL is the
change in value from the previous close and the days' PnLs add up to the run's. The combined report
(`days-<strategy>-<run id>.json` / `.html`) has a row per (day, symbol) and totals by day, by symbol and
overall; PnL is summed per quote currency, never across currencies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
from rich.console import Console

from replay.engine import DayReplay, Pacer, paced
from replay.sim.engine import UNIT
from replay.sim.params import SimParams
from replay.sim.report import render_days_html
from replay.sim.run import BacktestOutcome, backtest, result_path, strategy_name


@dataclass
class Day:
    """One day to simulate: its replay, the data time it ends at, and where its own files go."""

    replay: DayReplay
    last_ns: int
    out_dir: Path


@dataclass
class DaysOutcome:
    run_id: str
    outcomes: list[BacktestOutcome]  # per day run, in order (fewer than the days when one stopped the run)
    report: dict
    files: list[Path] = field(default_factory=list)  # the combined report, when written
    stopped: str | None = None

    @property
    def events(self) -> int:
        return sum(o.events for o in self.outcomes)


def run_days(days: list[Day], params: SimParams, run: str, pacer: Pacer, *, carry: bool = False,
             exchange_time: bool = False, out: Path | None = None, console: Console | None = None,
             progress: bool = True, simulate: Callable[..., BacktestOutcome] = backtest) -> DaysOutcome:
    """Backtest each day in order; stop after a day that stopped (strategy error, Ctrl-C). With `out`, write
    the combined report there (also when stopped: the partial report)."""
    carried: dict[str, tuple[int, int]] = {}
    outcomes, openings = [], []
    stopped = None
    for i, day in enumerate(days):
        if i:
            pacer.restart()  # the next day starts on schedule, not after the night in between
        opening = dict(carried) if carry else {}
        outcome = simulate(paced(day.replay.events(), pacer, exchange_time), day.replay, params, day.out_dir,
                           day.last_ns, console, progress, run=run, opening=opening)
        outcomes.append(outcome)
        openings.append(opening)
        carried.update(outcome.closing)
        if outcome.stopped:
            stopped = outcome.stopped
            break
    report = combine(outcomes, openings, days, params, run, carry, out)
    report["stopped"] = stopped
    result = DaysOutcome(run, outcomes, report, stopped=stopped)
    if out is not None:
        result.files = write_report(report, out, params, run)
    return result


def combine(outcomes: list[BacktestOutcome], openings: list[dict[str, tuple[int, int]]], days: list[Day],
            params: SimParams, run: str, carry: bool, out: Path | None) -> dict:
    """The combined report: a row per (day, symbol), totals by day, by symbol and overall (per currency)."""
    rows = []
    for outcome, opening, day in zip(outcomes, openings, days):
        for summary in outcome.summaries:
            pnl, fills = summary["pnl"], summary["fills"]
            path = result_path(day.out_dir, summary["symbol"], params, run)
            rows.append({
                "date": summary["date"], "symbol": summary["symbol"], "currency": summary["currency"],
                "pnl": pnl["total"], "spread_capture": pnl["spread_capture"], "inventory_pnl": pnl["inventory"],
                "fees": pnl["fees"], "fills": fills["count"], "buys": fills["buys"], "sells": fills["sells"],
                "volume": fills["volume"], "orders": fills["orders"],
                "inventory_open": opening.get(summary["symbol"], (0, 0))[0] / UNIT,
                "inventory_close": summary["inventory"]["final"], "max_drawdown": summary["risk"]["max_drawdown"],
                "stopped": summary["stopped"],
                "report": str(path.relative_to(out) if out is not None and path.is_relative_to(out) else path),
            })
    first = days[0].replay
    return {
        "run_id": run, "market": first.market.name, "strategy": params.strategy, "fill_model": params.fill_model,
        "inventory": "carry" if carry else "reset", "days": [d.replay.date.isoformat() for d in days],
        "symbols": sorted({s for d in days for s in d.replay.symbols}), "params": asdict(params),
        "rows": rows,
        "by_day": _totals(rows, "date"),
        "by_symbol": _totals(rows, "symbol"),
        "total": _totals(rows),
    }


def _totals(rows: list[dict], key: str | None = None) -> list[dict]:
    """Sums of PnL, fills and volume per (`key`, currency), in the rows' order."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        group = (row[key] if key else None, row["currency"])
        total = groups.setdefault(group, {**({key: row[key]} if key else {}), "currency": row["currency"], "pnl": 0.0,
                                          "fills": 0, "volume": 0.0, "rows": 0})
        total["pnl"] += row["pnl"]
        total["fills"] += row["fills"]
        total["volume"] += row["volume"]
        total["rows"] += 1
    return list(groups.values())


def write_report(report: dict, out: Path, params: SimParams, run: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"days-{strategy_name(params)}-{run}.json"
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    html_path = json_path.with_suffix(".html")
    days = report["days"]
    span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]} ({len(days)} days)"
    html_path.write_text(render_days_html(report, f"Backtest {report['market']} {span} · {params.strategy} · "
                                                  f"run {run}"))
    return [json_path, html_path]
