"""The backtest as a terminal summary and ONE self-contained HTML file (inline CSS and SVG, no script).

Plots: equity with its attribution, inventory, and quotes against the mid; the SVG canvas and the page
style are the validation report's, so both reports look alike.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from recorder.report_html import CSS, Plot, _e, _legend
from replay.sim.results import why_few_fills
from replay.view import berlin

MAX_POINTS = 1500  # per plotted line: enough for a 14-hour day at ~30 s resolution


def _thin(ts: list[int], *columns: list[float]) -> tuple[list[int], list[list[float]]]:
    step = max(1, math.ceil(len(ts) / MAX_POINTS))
    return ts[::step], [c[::step] for c in columns]


def _plot(ts: list[int], lines: list[tuple[list[float], str]], label: str, height: int = 190,
          dots: list[tuple[list[int], list[float], str]] = ()) -> str:
    """Lines on the sampled time axis, and optional dots (their own times, e.g. fills) in the same frame."""
    values = [v for column, _ in lines for v in column if v is not None and math.isfinite(v)]
    if not ts or not values:
        return f'<p class="muted">no {_e(label)} data</p>'
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 1e-4 or 1
    p = Plot(ts[0], ts[-1], lo - pad, hi + pad, width=900, height=height)
    for column, color in lines:
        p.polyline([(t, v if v is not None and math.isfinite(v) else None) for t, v in zip(ts, column)], color)
    for times, prices, color in dots:  # a run of one point is drawn as a dot
        p.polyline([point for t, v in zip(times, prices) for point in ((t, v), (t, None))], color)
    p.axes(True, y_label=label, x_label="Berlin time")
    return p.svg(label)


def _fill_dots(result: dict) -> list[tuple[list[int], list[float], str]]:
    """Buy and sell fills (when the quoter knew, on the plots' arrival-time axis; price), ≤ MAX_POINTS each."""
    fills = result.get("fills") or {}
    out = []
    for side, color in ((1, "#1a7f37"), (-1, "#cf222e")):
        picked = [(t, p) for t, p, s in zip(fills.get("known_ts", []), fills.get("price", []), fills.get("side", []))
                  if s == side]
        picked = picked[::max(1, math.ceil(len(picked) / MAX_POINTS))]
        out.append(([t for t, _ in picked], [p for _, p in picked], color))
    return out


def _money(value: float | None) -> str:
    if value is None:
        return "–"
    return "0" if value == 0 else f"{value:,.6g}" if abs(value) < 1 else f"{value:,.2f}"


def _rows(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs)


def key_figures(summary: dict) -> list[tuple[str, str]]:
    pnl, fills, inv, risk = summary["pnl"], summary["fills"], summary["inventory"], summary["risk"]
    model, lat, quotes = summary["model"], summary["latency_ms"], summary["quotes"]
    sharpe = risk["sharpe"]["annualised"]
    currency = summary.get("currency") or "quote currency"
    gamma = summary.get("params", {}).get("gamma")
    return [
        *([(f"γ (risk aversion, {summary['strategy']})", f"{gamma:g} per ({currency} × order size)")]
          if gamma is not None and summary["strategy"] in ("as", "glft") else []),
        (f"PnL total ({currency})", _money(pnl["total"])),
        ("  spread capture", _money(pnl["spread_capture"])),
        ("  inventory mark-to-market", _money(pnl["inventory"])),
        ("  fees (+ rebate)", _money(pnl["fees"])),
        ("realized / unrealized", f"{_money(pnl['realized'])} / {_money(pnl['unrealized'])}"),
        ("fills (buys/sells)", f"{fills['count']} ({fills['buys']}/{fills['sells']})"),
        ("orders / fill ratio", f"{fills['orders']} / {fills['fill_ratio']:.3f}"),
        (f"quote distance from mid bid / ask ({currency})",
         f"{_num(quotes['bid_distance'])} / {_num(quotes['ask_distance'])}"),
        ("time quoted bid / ask", f"{quotes['bid_time']:.1%} / {quotes['ask_time']:.1%}"),
        ("volume / share of market", f"{fills['volume']:g} / {fills['market_share']:.4%}"),
        ("inventory final / max |q|", f"{inv['final']:g} / {inv['max_abs']:g}"),
        ("mean |q| (order sizes)", f"{inv['mean_abs_q']:.2f}"),
        ("time above soft / at hard limit", f"{inv['time_above_soft']:.1%} / {inv['time_at_hard']:.1%}"),
        ("max drawdown", _money(risk["max_drawdown"])),
        ("Sharpe (1-min PnL, annualised)", "–" if sharpe is None else f"{sharpe:.2f}"),
        ("σ / A / k at the end (fits)", (f"{_num(model['sigma_end'])} / {_num(model['A_end'])} / {_num(model['k_end'])} "
                                        f"({model['fits']})")),
        *([("not quoting", "σ or A, k never estimated (too few trades or mid changes): set them or use join/fixed")]
          if not model["warmed_up"] else []),
        ("feed latency p50 / entry / response", f"{_num(lat['feed_p50'])} / {lat['entry']:.1f} / {lat['response']:.1f} ms"),
    ]


def _num(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.4g}"


def print_summary(summary: dict, console: Console) -> None:
    title = (f"backtest {summary['symbol']} · strategy {summary['strategy']} · fills {summary['fill_model']} · "
             f"{summary['span_s']:,.0f} s of data")
    table = Table(title=title, show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in key_figures(summary):
        table.add_row(key, value)
    if summary["stopped"]:
        table.add_row("[red]stopped[/]", f"[red]{summary['stopped']}[/]")
    console.print(table)
    why = why_few_fills(summary)
    if why:
        console.print(f"[bold yellow]why {why[0]}[/]", highlight=False)
        for line in why[1:]:
            console.print(f"  - {line}", highlight=False)
    hours = Table(title="per hour (Berlin)")
    for column in ("hour", "pnl", "fills", "volume", "share", "mean |inventory|"):
        hours.add_column(column, justify="right")
    for row in summary["per_hour"]:
        hours.add_row(row["hour"], _money(row["pnl"]), str(row["fills"]), f"{row['volume']:g}",
                      f"{row['share']:.3%}", f"{row['mean_abs_inventory']:.4g}")
    console.print(hours)


def render_html(results: list[dict], title: str) -> str:
    """`results`: per symbol {"summary": ..., "series": ...} as written to the JSON file."""
    sections = []
    for result in results:
        summary, series = result["summary"], result["series"]
        ts, (pnl, spread, inv_pnl, fees, inventory, mid, bid, ask) = _thin(
            series["ts"], series["pnl"], series["spread_capture"], series["inventory_pnl"], series["fees"],
            series["inventory"], series["mid"], series["bid"], series["ask"])
        hours = "".join(
            f"<tr><td>{_e(r['hour'])}</td><td>{_money(r['pnl'])}</td><td>{r['fills']}</td><td>{r['volume']:g}</td>"
            f"<td>{r['share']:.3%}</td><td>{r['mean_abs_inventory']:.4g}</td></tr>" for r in summary["per_hour"])
        stopped = f'<p style="color:#cf222e"><b>stopped:</b> {_e(summary["stopped"])}</p>' if summary["stopped"] else ""
        why = why_few_fills(summary)
        if why:
            items = "".join(f"<li>{_e(line)}</li>" for line in why[1:])
            stopped += f'<div class="why"><h3>Why {_e(why[0])}</h3><ul>{items}</ul></div>'

        span = ""
        if summary["start_ns"] is not None:
            span = f"{berlin(summary['start_ns'])} – {berlin(summary['end_ns'])} Berlin"
        sections.append(f"""
<div class="card"><h2>{_e(summary['symbol'])} · {_e(summary['strategy'])} · fill model {_e(summary['fill_model'])}</h2>
<div class="muted">{_e(span)} · order size {summary['order_size']:g} · tick {summary['tick']:g}</div>{stopped}
<div class="grid"><div><table>{_rows(key_figures(summary))}</table></div>
<div><table>{_rows([(k, f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in summary['orders'].items()])}</table></div>
<div class="full"><h3>Equity and its attribution (quote currency)</h3>
{_legend([("total", "#0969da"), ("spread capture", "#1a7f37"), ("inventory", "#b58100"), ("fees", "#cf222e")])}
{_plot(ts, [(pnl, "#0969da"), (spread, "#1a7f37"), (inv_pnl, "#b58100"), (fees, "#cf222e")], "PnL")}</div>
<div class="full"><h3>Inventory (base units)</h3>{_plot(ts, [(inventory, "#8250df")], "inventory", 150)}</div>
<div class="full"><h3>Quotes against the mid</h3>
{_legend([("mid", "#24292f"), ("our bid · buy fills", "#1a7f37"), ("our ask · sell fills", "#cf222e")])}
{_plot(ts, [(mid, "#24292f"), (bid, "#1a7f37"), (ask, "#cf222e")], "price", dots=_fill_dots(result))}</div>
<div class="full"><h3>Per hour</h3><table><tr><th>hour</th><th>PnL</th><th>fills</th><th>volume</th><th>share</th>
<th>mean |inventory|</th></tr>{hours}</table></div></div></div>""")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head><body>
<h1>{_e(title)}</h1>
<div class="muted">Sharpe: mean / std of 1-minute PnL changes × √(365·24·60). PnL total = spread capture +
inventory mark-to-market + fees. Lines are sampled on data time (the <code>sample_interval</code>, thinned to
{MAX_POINTS} points).</div>
{''.join(sections)}
</body></html>
"""


# ---- many days: one report over every (day, symbol) ------------------------------------------------------

DAY_COLUMNS = ("day", "symbol", "PnL", "spread", "inventory", "fees", "fills (b/s)", "volume", "position", "max DD")
DAY_LEGEND = ("PnL = spread capture + inventory mark-to-market + fees, in the quote currency (totals per currency); "
              "fills as buys/sells; position: inventory at the open → at the close, base units")


def _all(report: dict, currency: str | None, symbol: str | None = None) -> str:
    """The label of a total row: the one symbol, or all symbols in one quote currency."""
    return symbol if len(report["symbols"]) == 1 and symbol else f"all ({currency or 'quote currency'})"


def days_rows(report: dict) -> list[tuple[str, list[str]]]:
    """The combined report's table as (kind, cells): kind `row` per (day, symbol), `day` per day's total and
    `symbol` per symbol over the days (with several of both), `total` per currency."""
    several_symbols, several_days = len(report["symbols"]) > 1, len(report["days"]) > 1
    out = []

    def total(label: str, symbol: str, t: dict, kind: str) -> tuple[str, list[str]]:
        return kind, [label, symbol, _money(t["pnl"]), "", "", "", str(t["fills"]), f"{t['volume']:g}", "", ""]

    for date in report["days"]:
        for r in (r for r in report["rows"] if r["date"] == date):
            out.append(("row", [
                date, r["symbol"] + (" · stopped" if r["stopped"] else ""), _money(r["pnl"]),
                _money(r["spread_capture"]), _money(r["inventory_pnl"]), _money(r["fees"]),
                f"{r['fills']} ({r['buys']}/{r['sells']})", f"{r['volume']:g}",
                f"{r['inventory_open']:g} → {r['inventory_close']:g}", _money(r["max_drawdown"])]))
        if several_symbols and several_days:  # (one day: the total row says it)
            out += [total(date, _all(report, t["currency"]), t, "day") for t in report["by_day"] if t["date"] == date]
    if several_symbols and several_days:
        out += [total("all days", t["symbol"], t, "symbol") for t in report["by_symbol"]]
    first = report["rows"][0]["symbol"] if report["rows"] else None
    out += [total("total", _all(report, t["currency"], first), t, "total") for t in report["total"]]
    return out


def print_days(report: dict, console: Console) -> None:
    days = report["days"]
    span = f"{days[0]} to {days[-1]} · inventory {report['inventory']}" if len(days) > 1 else days[0]
    table = Table(title=f"backtest {report['market']} {span} · strategy {report['strategy']} · run {report['run_id']}",
                  caption=DAY_LEGEND)
    for column in DAY_COLUMNS:
        table.add_column(column, justify="left" if column in ("day", "symbol") else "right", no_wrap=True)
    rows = days_rows(report)
    for (kind, cells), following in zip(rows, [kind for kind, _ in rows[1:]] + [None]):
        # a line after each day, and before the totals over the days
        table.add_row(*cells, style="bold" if kind == "total" else None,
                      end_section=kind == "day" or following not in (None, kind, "day"))
    console.print(table)
    if report["stopped"]:
        console.print(f"[red]stopped: {report['stopped']}[/]", highlight=False)


def _day_bars(report: dict, currency: str | None) -> str:
    """Bars of each day's PnL (one quote currency, all its symbols) and the running total as a line."""
    days = report["days"]
    pnl = {t["date"]: t["pnl"] for t in report["by_day"] if t["currency"] == currency}
    daily = [pnl.get(d, 0.0) for d in days]
    running = [sum(daily[:i + 1]) for i in range(len(daily))]
    lo, hi = min(0.0, *daily, *running), max(0.0, *daily, *running)
    pad = (hi - lo) * 0.08 or 1.0
    p = Plot(0, len(days), lo - pad, hi + pad, width=900, height=200)
    p.add(f'<line x1="{p.x(0):.1f}" x2="{p.x(len(days)):.1f}" y1="{p.y(0):.1f}" y2="{p.y(0):.1f}" stroke="#8c959f"/>')
    for i, (day, value) in enumerate(zip(days, daily)):
        p.rect(i + 0.15, i + 0.85, min(0.0, value), max(0.0, value), "#1a7f37" if value >= 0 else "#cf222e",
               title=f"{day}: {_money(value)}")
    p.polyline([(i + 0.5, v) for i, v in enumerate(running)], "#0969da")
    _day_axis(p, days, (hi, lo), _money)
    return p.svg(f"PnL by day ({currency})")


def _day_axis(p: Plot, days: list[str], values: tuple[float, ...], fmt) -> None:  # type: ignore[no-untyped-def]
    """Day i spans x i..i+1: its MM-DD under the middle (at most 12 labels), and `values` marked on the y axis."""
    every = max(1, math.ceil(len(days) / 12))
    for i, day in enumerate(days):
        if i % every == 0:
            p.add(f'<text x="{p.x(i + 0.5):.1f}" y="{p.h - 8}" font-size="10" text-anchor="middle" '
                  f'fill="#57606a">{_e(day[5:])}</text>')
    for value in values:
        p.add(f'<text x="{p.l - 5}" y="{p.y(value) + 3:.1f}" font-size="10" text-anchor="end" '
              f'fill="#57606a">{_e(fmt(value))}</text>')


def render_days_html(report: dict, title: str) -> str:
    """The combined report: PnL by day (bars, running total), the table with the totals, links to each day."""
    head = "".join(f"<th>{_e(c)}</th>" for c in DAY_COLUMNS)
    links = {(r["date"], r["symbol"]): r["report"] for r in report["rows"]}
    body = []
    for kind, cells in days_rows(report):
        style = ' style="font-weight:600"' if kind != "row" else ""
        link = links.get((cells[0], cells[1].split(" ")[0])) if kind == "row" else None
        first = f'<a href="{_e(link[:-5])}.html">{_e(cells[1])}</a>' if link else _e(cells[1])
        body.append(f"<tr{style}><td>{_e(cells[0])}</td><td>{first}</td>"
                    + "".join(f"<td>{_e(c)}</td>" for c in cells[2:]) + "</tr>")
    charts = "".join(
        f"<h3>PnL by day ({_e(t['currency'] or 'quote currency')}): each day's PnL, and the running total</h3>"
        f"{_legend([('day', '#1a7f37'), ('running total', '#0969da')])}{_day_bars(report, t['currency'])}"
        for t in report["total"]) if len(report["days"]) > 1 else ""
    stopped = (f'<p style="color:#cf222e"><b>stopped:</b> {_e(report["stopped"])} (partial report)</p>'
               if report["stopped"] else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head><body>
<h1>{_e(title)}</h1>
<div class="muted">Inventory {_e(report['inventory'])} each day{' (each day opens with the previous close, marked at its mid: a day’s PnL is the change from that close)' if report['inventory'] == 'carry' else ''}.
{_e(DAY_LEGEND)}. Each symbol links to that day's full report.</div>{stopped}
<div class="card">{charts}
<table><tr>{head}</tr>{''.join(body)}</table></div>
</body></html>
"""


# ---- calibration over days: σ, A and k by day per symbol -------------------------------------------------

CALIBRATION_SERIES = (("sigma", "σ (price/√s)", "#0969da"), ("A", "A (trades/s)", "#1a7f37"),
                      ("k", "k (per price unit)", "#b58100"))


def _by_day(days: list[str], values: list[float | None], label: str, color: str) -> str:
    """One value per day as a line with a dot per day (a day without a value leaves a gap)."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    if not known:
        return f'<p class="muted">no {_e(label)} fit on any day</p>'
    lo, hi = min(known), max(known)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    p = Plot(0, len(days), lo - pad, hi + pad, width=900, height=150)
    p.polyline([(i + 0.5, v) for i, v in enumerate(values)], color)
    for i, v in enumerate(values):
        if v is not None:
            p.rect(i + 0.45, i + 0.55, v - pad * 0.1, v + pad * 0.1, color, title=f"{days[i]}: {v:.4g}")
    _day_axis(p, days, (hi, lo), lambda v: f"{v:.4g}")
    return p.svg(label)


def _cell(value: str | float | None) -> str:
    return value if isinstance(value, str) else f"{value:,}" if isinstance(value, int) else _num(value)


def calibration_cards(rows: list[dict]) -> str:
    """A card per symbol with σ, A and k by day, from calibration table rows (also the sweep leaderboard's)."""
    days = sorted({r["date"] for r in rows})
    cards = []
    for symbol in sorted({r["symbol"] for r in rows}):
        by_date = {r["date"]: r for r in rows if r["symbol"] == symbol}
        charts = "".join(
            f"<h3>{_e(label)}</h3>{_by_day(days, [by_date.get(d, {}).get(key) for d in days], label, color)}"
            for key, label, color in CALIBRATION_SERIES)
        cards.append(f'<div class="card"><h2>{_e(symbol)}</h2>{charts}</div>')
    return "".join(cards)


def render_calibration_html(rows: list[dict], title: str) -> str:
    """`rows`: the calibration table (`replay.sim.calibrate.table_row`): the cards of `calibration_cards`, and
    the table itself."""
    columns = [name for name in rows[0]] if rows else []
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(_cell(v))}</td>" for v in r.values())
                   + "</tr>" for r in rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head><body>
<h1>{_e(title)}</h1>
<div class="muted">σ: std of 1-s mid changes, price per √s; A (trades/s at the mid) and k (per price unit): the fit of
λ(δ) = A·e^(−kδ) over each day's span; medians over the rolling fits. A gap: no fit that day (too few trades).</div>
{calibration_cards(rows)}
<div class="card"><table><tr>{head}</tr>{body}</table></div>
</body></html>
"""
