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
