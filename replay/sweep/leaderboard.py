"""The sweep's leaderboard: ONE self-contained HTML page (inline CSS and SVG, no script) and a terminal table.

A pure function of the result rows (one per task), the set rows (one per parameter set, ranked) and the
calibration rows of the sweep contract; the page style and the SVG canvas are the backtest report's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable

from rich.console import Console
from rich.table import Table

from recorder.report_html import CSS, Plot, _e, _legend
from replay.sim.report import _day_axis, _money, _num, calibration_cards

TOP_TABLE, TOP_LINES, MORE_PAIRS = 20, 5, 2
LINE_COLORS = ("#0969da", "#1a7f37", "#cf222e", "#8250df", "#b58100")
GREEN, RED = (26, 127, 55), (207, 34, 46)
SEQUENTIAL_OBJECTIVES = ("fill_ratio",)  # never negative: white (lowest) to green (highest), not around zero
MAX_GRID = 16  # distinct values per heatmap axis; more (a search rather than a grid) is drawn as a scatter


def _known(value: object) -> float | None:
    """A number, or None for a missing or NaN figure (a set without a successful task)."""
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def _param(value: object) -> str:
    return "–" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _figure(value: float | None) -> str:
    return _money(value) if value is not None and abs(value) >= 1 else _num(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _count(value: float | None) -> str:
    return "–" if value is None else f"{int(value):,}"


METRICS = (  # (set row column, its format) in the table's order
    ("objective", _figure), ("pnl_mean", _money), ("pnl_std", _money), ("pnl_worst", _money),
    ("win_share", _pct), ("fills", _count), ("pnl_per_fill", _money), ("sharpe_mean", _num),
    ("max_drawdown_worst", _money), ("days", _count), ("failed", _count))
TERMINAL_METRICS = ("objective", "pnl_mean", "pnl_worst", "win_share", "fills", "sharpe_mean", "failed")


def _columns(objective: str, swept: list[str], metrics: Iterable[str]) -> list[tuple[str, str, Callable]]:
    """(set row column, heading, format of a row's value) of the best sets' table."""
    return ([("rank", "rank", lambda v: _count(_known(v)))]
            + [(f"p.{name}", name, _param) for name in swept]
            + [(key, f"{objective} (objective)" if key == "objective" else key, lambda v, f=fmt: f(_known(v)))
               for key, fmt in METRICS if key in metrics])


def _cells(row: dict, columns: list[tuple[str, str, Callable]]) -> list[str]:
    return [fmt(row.get(key)) for key, _, fmt in columns]


def _ranked(sets: list[dict]) -> list[dict]:
    return sorted(sets, key=lambda s: _known(s.get("rank")) or math.inf)


def _label(row: dict, swept: list[str]) -> str:
    return ", ".join(f"{name}={_param(row.get(f'p.{name}'))}" for name in swept)


def _axis(values: Iterable[object]) -> list:
    """Distinct values, sorted numerically when they all parse as numbers, else as text."""
    distinct = set(values)
    try:
        return sorted(distinct, key=float)
    except (TypeError, ValueError):
        return sorted(distinct, key=str)


def _best(sets: list[dict], names: tuple[str, ...]) -> dict[tuple, float]:
    """The best objective of the sets at each combination of these parameters' values (over all others)."""
    best: dict[tuple, float] = {}
    for row in sets:
        value, at = _known(row.get("objective")), tuple(row.get(f"p.{name}") for name in names)
        if value is not None and (at not in best or value > best[at]):
            best[at] = value
    return best


def _colour(value: float, lo: float, hi: float, diverging: bool) -> tuple[str, str]:
    """(fill, text colour): red (negative), white, green (positive) around zero; or white to green lo..hi."""
    if diverging:
        share, target = abs(value) / (max(abs(lo), abs(hi)) or 1.0), GREEN if value >= 0 else RED
    else:
        share, target = (value - lo) / ((hi - lo) or 1.0), GREEN
    fill = _rgb(tuple(round(255 + share * (c - 255)) for c in target))
    return fill, "#ffffff" if share > 0.55 else "#24292f"


def _rgb(colour: tuple[int, ...]) -> str:
    return "#" + "".join(f"{c:02x}" for c in colour)


def _text(p: Plot, x: float, y: float, text: str, ink: str = "#57606a", anchor: str = "middle",
          extra: str = "") -> None:
    p.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" text-anchor="{anchor}" fill="{ink}"{extra}>'
          f'{_e(text)}</text>')


def _heatmap(sets: list[dict], a: str, b: str, diverging: bool) -> str:
    best = _best(sets, (a, b))
    if not best:
        return '<p class="muted">no set with a successful task</p>'
    xs, ys = _axis(x for x, _ in best), _axis(y for _, y in best)
    lo, hi = min(best.values()), max(best.values())
    if max(len(xs), len(ys)) > MAX_GRID and all(isinstance(v, int | float) for v in xs + ys):
        return _scatter(best, a, b, lo, hi, diverging)
    left = 16 + 7 * max(len(_param(y)) for y in ys)  # room for the longest y label at font-size 11
    p = Plot(0, len(xs), 0, len(ys), width=left + 10 + 88 * len(xs), height=32 * len(ys) + 62, left=left,
             right=10, top=22, bottom=40)
    p.rect(0, len(xs), 0, len(ys), "#eaeef2")  # shows between the cells and where no set was run
    for (i, x), (j, y) in itertools.product(enumerate(xs), enumerate(ys)):
        value = best.get((x, y))
        if value is not None:
            fill, ink = _colour(value, lo, hi, diverging)
            p.rect(i + 0.02, i + 0.98, j + 0.04, j + 0.96, fill,
                   title=f"{a}={_param(x)}, {b}={_param(y)}: {_figure(value)}")
            _text(p, p.x(i + 0.5), p.y(j + 0.5) + 4, _figure(value), ink)
    for i, x in enumerate(xs):
        _text(p, p.x(i + 0.5), p.h - p.b + 14, _param(x))
    for j, y in enumerate(ys):
        _text(p, p.l - 6, p.y(j + 0.5) + 4, _param(y), anchor="end")
    _text(p, p.x(len(xs) / 2), p.h - 6, f"{a} →", "#24292f", extra=' font-weight="600"')
    _text(p, 4, 14, f"{b} ↑", "#24292f", "start", ' font-weight="600"')
    return f'<div style="max-width:{p.w}px">{p.svg(f"heatmap {a} × {b}")}</div>'


def _scatter(best: dict[tuple, float], a: str, b: str, lo: float, hi: float, diverging: bool) -> str:
    """A search's sets at their (a, b) values, coloured as the heatmap's cells."""
    xs, ys = [x for x, _ in best], [y for _, y in best]
    pad_x, pad_y = (max(xs) - min(xs)) * 0.05 or 1.0, (max(ys) - min(ys)) * 0.05 or 1.0
    p = Plot(min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y, width=900, height=320)
    for (x, y), value in best.items():
        fill, tip = _colour(value, lo, hi, diverging)[0], _e(f"{a}={x:.6g}, {b}={y:.6g}: {_figure(value)}")
        p.add(f'<circle cx="{p.x(x):.1f}" cy="{p.y(y):.1f}" r="6" fill="{fill}" stroke="#57606a" '
              f'stroke-width="0.6"><title>{tip}</title></circle>')
    p.axes(False, y_label=b, x_label=a)
    return p.svg(f"scatter {a} × {b}")


def _bars(sets: list[dict], name: str) -> str:
    """The objective per value of the one swept parameter."""
    best = _best(sets, (name,))
    if not best:
        return '<p class="muted">no set with a successful task</p>'
    xs = _axis(x for (x,) in best)
    values = [best[(x,)] for x in xs]
    lo, hi = min(0.0, *values), max(0.0, *values)
    pad = (hi - lo) * 0.12 or 1.0
    p = Plot(0, len(xs), lo - pad, hi + pad, width=900, height=240, left=20, bottom=40)
    p.add(f'<line x1="{p.l}" x2="{p.w - p.r}" y1="{p.y(0):.1f}" y2="{p.y(0):.1f}" stroke="#8c959f"/>')
    for i, (x, value) in enumerate(zip(xs, values)):
        p.rect(i + 0.15, i + 0.85, min(0.0, value), max(0.0, value), _rgb(GREEN if value >= 0 else RED),
               title=f"{name}={_param(x)}: {_figure(value)}")
        _text(p, p.x(i + 0.5), p.y(value) + (-5 if value >= 0 else 14), _figure(value), "#24292f")
        _text(p, p.x(i + 0.5), p.h - p.b + 16, _param(x))
    _text(p, p.x(len(xs) / 2), p.h - 6, name, "#24292f", extra=' font-weight="600"')
    return p.svg(f"objective by {name}")


def _pnl_by_day(tasks: list[dict], ranked: list[dict], swept: list[str]) -> str:
    """One line per top set: each day's PnL summed over its symbols' successful tasks."""
    days = sorted({t["day"] for t in tasks})
    daily: dict[tuple[str, str], float] = {}
    for t in tasks:
        if not t.get("error") and _known(t.get("pnl")) is not None:
            daily[t["set_id"], t["day"]] = daily.get((t["set_id"], t["day"]), 0.0) + t["pnl"]
    drawn = [row for row in ranked if any((row["set_id"], d) in daily for d in days)][:TOP_LINES]
    if not drawn:
        return '<p class="muted">no successful task</p>'
    lines = [[daily.get((row["set_id"], d)) for d in days] for row in drawn]
    values = [v for line in lines for v in line if v is not None]
    lo, hi = min(0.0, *values), max(0.0, *values)
    pad = (hi - lo) * 0.08 or 1.0
    p = Plot(0, len(days), lo - pad, hi + pad, width=900, height=240)
    p.add(f'<line x1="{p.l}" x2="{p.w - p.r}" y1="{p.y(0):.1f}" y2="{p.y(0):.1f}" stroke="#8c959f"/>')
    for line, colour in zip(lines, LINE_COLORS):
        p.polyline([(i + 0.5, v) for i, v in enumerate(line)], colour, 2)
    _day_axis(p, days, tuple(sorted({hi, 0.0, lo})), _money)
    legend = _legend([(f"#{_count(_known(row.get('rank')))} {_label(row, swept)}", colour)
                      for row, colour in zip(drawn, LINE_COLORS)])
    return legend + p.svg("PnL by day of the top sets")


def _table(head: list[str], rows: list[list[str]]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + f"</tr>{body}</table>"


def _shape(sets: list[dict], objective: str, swept: list[str]) -> str:
    """Heatmaps of the objective over pairs of swept parameters, or its bars over the one swept parameter."""
    if len(swept) == 1:
        return f'<div class="muted">{_e(objective)} per value of {_e(swept[0])}.</div>{_bars(sets, swept[0])}'
    if not swept:
        return '<p class="muted">no swept parameter</p>'
    diverging = objective not in SEQUENTIAL_OBJECTIVES
    scale = "red: negative, white: zero, green: positive" if diverging else "white: lowest, green: highest"
    others = (f" Other parameters vary: each cell shows the best {objective} of the sets at that pair, "
              "over the values of the others." if len(swept) > 2 else "")
    maps = "".join(f"<h3>{_e(a)} × {_e(b)}</h3>{_heatmap(sets, a, b, diverging)}"
                   for a, b in list(itertools.combinations(swept, 2))[:1 + MORE_PAIRS])
    return f'<div class="muted">{_e(objective)} per pair of values ({scale}).{_e(others)}</div>{maps}'


def _failed(failed: list[dict]) -> str:
    rows = [[t["day"], t["symbol"], t.get("params") or "", t["error"]]
            for t in sorted(failed, key=lambda t: (t["day"], t["symbol"]))]
    table = _table(["day", "symbol", "params", "error"], rows)
    return f'<div class="card"><h2>Failed tasks ({len(failed)})</h2>{table}</div>'


def render_leaderboard(tasks: list[dict], sets: list[dict], calibration: list[dict], *, title: str,
                       objective: str, swept: list[str]) -> str:
    """The page: counts, the best sets, the objective over the swept parameters, the top sets' PnL by day,
    the calibration by day and the failed tasks."""
    ranked, failed = _ranked(sets), [t for t in tasks if t.get("error")]
    columns = _columns(objective, swept, [key for key, _ in METRICS])
    days, symbols = sorted({t["day"] for t in tasks}), sorted({t["symbol"] for t in tasks})
    about = " · ".join([f"market {', '.join(sorted({t['market'] for t in tasks}))}",
                        f"strategy {', '.join(sorted({t['strategy'] for t in tasks}))}",
                        f"{days[0]} to {days[-1]}" if days else "no days"])
    partial = ('<div class="muted">A day with a failed task of a set sums its other symbols only (see the '
               'failed tasks).</div>' if failed else "")
    calibrated = ('<h2 style="margin-top:24px">Calibration: σ, A and k by day</h2>'
                  + calibration_cards(calibration) if calibration else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head><body>
<h1>{_e(title)}</h1>
<div class="muted">objective <b>{_e(objective)}</b> (maximised) · {len(sets)} sets · {len(tasks)} tasks ·
{len(failed)} failed · {len(days)} days · {len(symbols)} symbols ({_e(', '.join(symbols))}) · {_e(about)}.
A day's PnL is the sum over its symbols, in the quote currency.</div>
<div class="card"><h2>Best parameter sets</h2>
{_table([heading for _, heading, _ in columns], [_cells(row, columns) for row in ranked[:TOP_TABLE]])}</div>
<div class="card"><h2>The objective ({_e(objective)}) over the swept parameters</h2>
{_shape(sets, objective, swept)}</div>
<div class="card"><h2>PnL by day for the top sets</h2>{partial}{_pnl_by_day(tasks, ranked, swept)}</div>
{calibrated}{_failed(failed) if failed else ""}
</body></html>
"""


def print_leaderboard(sets: list[dict], objective: str, swept: list[str], console: Console,
                      top: int = 10) -> None:
    """The top sets for the terminal: the page's table with fewer figures."""
    columns = _columns(objective, swept, TERMINAL_METRICS)
    table = Table(title=f"best parameter sets by {objective} (of {len(sets)})")
    for _, heading, _ in columns:
        table.add_column(heading, justify="right")
    for row in _ranked(sets)[:top]:
        table.add_row(*_cells(row, columns))
    console.print(table)
