"""A sweep's tables: one row per task (a backtest's figures) and one per parameter set (its figures over days).

A set is judged over days: a day's PnL is the sum over the symbols traded that day, and the set's mean, spread,
worst day and share of winning days come from those daily PnLs. The objective, maximised, ranks the sets;
a set with no successful task ranks last.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import orjson
import pyarrow as pa

OBJECTIVES = {
    "pnl": "mean daily PnL",
    "sharpe": "mean Sharpe ratio of the tasks (annualised, 1-minute PnL changes)",
    "pnl_per_fill": "PnL per fill over all days",
    "fill_ratio": "fills per order placed",
    "calmar": "total PnL over the worst drawdown of a task",
}

TASK_COLUMNS = [
    ("task_id", pa.string()), ("set_id", pa.string()), ("day", pa.string()), ("symbol", pa.string()),
    ("market", pa.string()), ("strategy", pa.string()), ("params", pa.string()), ("seed", pa.int64()),
    ("pnl", pa.float64()), ("realized", pa.float64()), ("unrealized", pa.float64()), ("fees", pa.float64()),
    ("spread_capture", pa.float64()), ("inventory_pnl", pa.float64()), ("fills", pa.int64()), ("orders", pa.int64()),
    ("fill_ratio", pa.float64()), ("volume", pa.float64()), ("pnl_per_fill", pa.float64()), ("sharpe", pa.float64()),
    ("max_drawdown", pa.float64()), ("inventory_final", pa.float64()), ("inventory_mean_abs", pa.float64()),
    ("inventory_max_abs", pa.float64()), ("time_above_soft", pa.float64()),
    ("fit_day", pa.string()), ("fit_sigma", pa.float64()), ("fit_A", pa.float64()), ("fit_k", pa.float64()),
    ("runtime_s", pa.float64()), ("rows", pa.int64()), ("error", pa.string()), ("stopped", pa.string()),
]
SET_COLUMNS = [
    ("set_id", pa.string()), ("params", pa.string()), ("tasks", pa.int64()), ("failed", pa.int64()),
    ("days", pa.int64()), ("pnl_mean", pa.float64()), ("pnl_std", pa.float64()), ("pnl_worst", pa.float64()),
    ("win_share", pa.float64()), ("pnl_total", pa.float64()), ("fills", pa.int64()), ("pnl_per_fill", pa.float64()),
    ("sharpe_mean", pa.float64()), ("max_drawdown_worst", pa.float64()), ("fill_ratio", pa.float64()),
    ("objective", pa.float64()), ("rank", pa.int64()),
]
PARAM_PREFIX = "p."
# what a rerun may change in a row (the figures of a task are otherwise the same on every run)
RUN_DEPENDENT = ("runtime_s",)


def metrics(summary: dict) -> dict:
    """The task row's figures from a backtest summary (`replay.sim.results.summarize`)."""
    pnl, fills, inventory = summary["pnl"], summary["fills"], summary["inventory"]
    count = fills["count"]
    return {
        "pnl": pnl["total"], "realized": pnl["realized"], "unrealized": pnl["unrealized"], "fees": pnl["fees"],
        "spread_capture": pnl["spread_capture"], "inventory_pnl": pnl["inventory"], "fills": count,
        "orders": fills["orders"], "fill_ratio": fills["fill_ratio"], "volume": fills["volume"],
        "pnl_per_fill": pnl["total"] / count if count else None,
        "sharpe": summary["risk"]["sharpe"]["annualised"], "max_drawdown": summary["risk"]["max_drawdown"],
        "inventory_final": inventory["final"], "inventory_mean_abs": inventory["mean_abs_q"],
        "inventory_max_abs": inventory["max_abs"], "time_above_soft": inventory["time_above_soft"],
        "stopped": summary["stopped"],
    }


def params_text(values: dict) -> str:
    """A set's parameters as stored in the `params` column: JSON with sorted keys."""
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode()


def _param_type(values: list) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def _with_params(columns: list[tuple[str, pa.DataType]], rows: list[dict], swept: list[str]) -> pa.Schema:
    fields = list(columns[:2])
    for name in swept:
        fields.append((PARAM_PREFIX + name, _param_type([r.get(PARAM_PREFIX + name) for r in rows])))
    return pa.schema(fields + list(columns[2:]))


def _typed(rows: list[dict], schema: pa.Schema) -> list[dict]:
    out = []
    for row in rows:
        values = {}
        for f in schema:
            v = row.get(f.name)
            if v is not None and pa.types.is_string(f.type) and not isinstance(v, str):
                v = str(v)
            elif v is not None and pa.types.is_floating(f.type) and not math.isfinite(float(v)):
                v = None
            values[f.name] = v
        out.append(values)
    return out


def task_table(rows: list[dict], swept: list[str]) -> pa.Table:
    schema = _with_params(TASK_COLUMNS, rows, swept)
    return pa.Table.from_pylist(_typed(rows, schema), schema=schema)


def set_table(rows: list[dict], swept: list[str]) -> pa.Table:
    schema = _with_params(SET_COLUMNS, rows, swept)
    return pa.Table.from_pylist(_typed(rows, schema), schema=schema)


def sort_tasks(rows: list[dict], set_order: list[str]) -> list[dict]:
    """Tasks in the sweep's order (sets as planned, then day, then symbol): the same table on every run."""
    position = {sid: i for i, sid in enumerate(set_order)}
    return sorted(rows, key=lambda r: (position.get(r["set_id"], len(position)), r["set_id"], r["day"], r["symbol"]))


def objective_value(figures: dict, objective: str) -> float | None:
    """The objective of a set's figures (None: not defined, e.g. Sharpe without PnL changes)."""
    if objective == "pnl":
        return figures["pnl_mean"]
    if objective == "sharpe":
        return figures["sharpe_mean"]
    if objective == "pnl_per_fill":
        return figures["pnl_per_fill"]
    if objective == "fill_ratio":
        return figures["fill_ratio"]
    if objective == "calmar":
        if figures["pnl_total"] is None:
            return None
        return figures["pnl_total"] / max(figures["max_drawdown_worst"] or 0.0, 1e-12)
    raise ValueError(f"unknown objective {objective!r}; one of {', '.join(OBJECTIVES)}")


def set_figures(rows: list[dict]) -> dict:
    """A set's figures over its tasks (rows of one set_id); `None` figures when no task succeeded."""
    good = [r for r in rows if not r.get("error")]
    daily: dict[str, float] = defaultdict(float)
    for r in good:
        daily[r["day"]] += r["pnl"]
    pnls = [daily[d] for d in sorted(daily)]
    fills = sum(r["fills"] for r in good)
    orders = sum(r["orders"] for r in good)
    sharpes = [r["sharpe"] for r in good if r["sharpe"] is not None]
    total = sum(pnls) if pnls else None
    return {
        "tasks": len(rows), "failed": len(rows) - len(good), "days": len(pnls),
        "pnl_mean": statistics.fmean(pnls) if pnls else None,
        "pnl_std": statistics.stdev(pnls) if len(pnls) > 1 else None,
        "pnl_worst": min(pnls) if pnls else None,
        "win_share": sum(p > 0 for p in pnls) / len(pnls) if pnls else None,
        "pnl_total": total, "fills": fills,
        "pnl_per_fill": total / fills if fills else None,
        "sharpe_mean": statistics.fmean(sharpes) if sharpes else None,
        "max_drawdown_worst": max((r["max_drawdown"] for r in good), default=None),
        "fill_ratio": fills / orders if orders else None,
    }


def aggregate(rows: list[dict], objective: str, swept: list[str]) -> list[dict]:
    """One row per parameter set, ranked by the objective (best first; sets without a value last)."""
    by_set: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_set[r["set_id"]].append(r)
    sets = []
    for sid, members in by_set.items():
        first = members[0]
        figures = set_figures(members)
        value = objective_value(figures, objective) if figures["days"] else None
        sets.append({"set_id": sid, **{PARAM_PREFIX + n: first.get(PARAM_PREFIX + n) for n in swept},
                     "params": first["params"], **figures, "objective": value})
    sets.sort(key=lambda s: (s["objective"] is None, -(s["objective"] or 0.0), s["set_id"]))
    for rank, s in enumerate(sets, 1):
        s["rank"] = rank
    return sets
