"""The validation report as ONE self-contained HTML file: inline CSS and SVG, no script, no network.

`render_html(report)` is a pure function of the JSON report of `recorder.validate.validate_day`; the plots
come from each symbol's `series` (per-bucket arrays), drawn by the small SVG helpers below.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from zoneinfo import ZoneInfo

from recorder.markets import quote_currency

BERLIN = ZoneInfo("Europe/Berlin")
NS = 1_000_000_000
COLORS = {"pass": "#1a7f37", "warn": "#b58100", "fail": "#cf222e", "skip": "#6e7781"}
SYNCED, UNSYNCED, GAP, EXPLAINED, UNEXPLAINED, DISCONNECT = (
    "#2da44e", "#f85149", "#d29922", "#0969da", "#cf222e", "#24292f")

CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#24292f;margin:24px;background:#f6f8fa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:0 0 8px} h3{font-size:14px;margin:10px 0 4px;color:#57606a}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px 18px;margin:16px 0}
.badge{display:inline-block;padding:1px 9px;border-radius:12px;color:#fff;font-weight:600;font-size:12px;text-transform:uppercase}
table{border-collapse:collapse;width:100%} td,th{padding:4px 8px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{color:#57606a;font-weight:600} .muted{color:#57606a} .grid{display:grid;grid-template-columns:1fr 1fr;gap:8px 20px}
.full{grid-column:1 / span 2} svg{display:block;width:100%;height:auto} .legend span{margin-right:14px;white-space:nowrap}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
details{margin-top:8px} pre{background:#f6f8fa;padding:8px;border-radius:6px;overflow:auto;max-height:320px;font-size:12px}
code{font-size:12px}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{COLORS.get(status, "#6e7781")}">{_e(status)}</span>'


def _clock(ns: int, span_s: float) -> str:
    moment = dt.datetime.fromtimestamp(ns / NS, tz=BERLIN)
    return moment.strftime("%H:%M" if span_s >= 3600 else "%H:%M:%S" if span_s >= 10 else "%H:%M:%S.%f")[
        : 12 if span_s < 10 else None]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:.6g}"


class Plot:
    """A tiny SVG canvas: x is time (ns) or a number, y a number; margins for axes."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, width: int = 560, height: int = 170,
                 left: int = 76, right: int = 12, top: int = 10, bottom: int = 26) -> None:
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1
        self.w, self.h, self.l, self.r, self.t, self.b = width, height, left, right, top, bottom
        self.parts: list[str] = []
        self.extra_height = 0  # grown by axes() when the x label needs a line of its own

    def x(self, v: float) -> float:
        return self.l + (v - self.x0) / (self.x1 - self.x0) * (self.w - self.l - self.r)

    def y(self, v: float) -> float:
        return self.h - self.b - (v - self.y0) / (self.y1 - self.y0) * (self.h - self.t - self.b)

    def add(self, svg: str) -> None:
        self.parts.append(svg)

    def rect(self, xa: float, xb: float, ya: float, yb: float, fill: str, opacity: float = 1.0, title: str = "") -> None:
        x, w = self.x(xa), max(self.x(xb) - self.x(xa), 0.6)
        y, h = self.y(yb), max(self.y(ya) - self.y(yb), 0.0)
        tip = f"<title>{_e(title)}</title>" if title else ""
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{fill}" '
                 f'fill-opacity="{opacity}">{tip}</rect>')

    def vline(self, xv: float, color: str, dash: str = "", width: float = 1.5, title: str = "") -> None:
        x = self.x(xv)
        tip = f"<title>{_e(title)}</title>" if title else ""
        self.add(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.t}" y2="{self.h - self.b}" stroke="{color}" '
                 f'stroke-width="{width}" stroke-dasharray="{dash}">{tip}</line>')

    def polyline(self, points: list[tuple[float, float | None]], color: str, width: float = 1.5) -> None:
        runs, run = [], []
        for xv, yv in points:
            if yv is None:
                if run:
                    runs.append(run)
                run = []
            else:
                run.append(f"{self.x(xv):.1f},{self.y(yv):.1f}")
        if run:
            runs.append(run)
        for r in runs:
            if len(r) == 1:
                cx, cy = r[0].split(",")
                self.add(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            else:
                self.add(f'<polyline points="{" ".join(r)}" fill="none" stroke="{color}" stroke-width="{width}" '
                         'stroke-linejoin="round"/>')

    def axes(self, time_axis: bool = True, y_label: str = "", x_label: str = "", y_ticks: bool = True) -> None:
        span_s = (self.x1 - self.x0) / NS
        base = self.h - self.b
        self.add(f'<line x1="{self.l}" x2="{self.w - self.r}" y1="{base}" y2="{base}" stroke="#8c959f"/>')
        xt = _nice_ticks(self.x0 / NS, self.x1 / NS, 6) if time_axis else _nice_ticks(self.x0, self.x1, 6)
        for v in xt:
            xv = v * NS if time_axis else v
            x = self.x(xv)
            label = _clock(int(xv), span_s) if time_axis else _fmt(v)
            half = len(label) * 3.2  # ~half the label's width at font-size 10: keep it inside the canvas
            anchor = "end" if x + half > self.w else "start" if x - half < 0 else "middle"
            self.add(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#8c959f"/>'
                     f'<text x="{x:.1f}" y="{base + 16}" font-size="10" text-anchor="{anchor}" fill="#57606a">{_e(label)}</text>')
        if y_ticks:
            ticks = _nice_ticks(self.y0, self.y1, 4)
            step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
            decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
            for v in ticks:
                y = self.y(v)
                label = _fmt(v) if abs(v) < 1e4 or decimals == 0 and step >= 1000 else f"{v:,.{decimals}f}"
                self.add(f'<line x1="{self.l}" x2="{self.w - self.r}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>'
                         f'<text x="{self.l - 5}" y="{y + 3:.1f}" font-size="10" text-anchor="end" fill="#57606a">{_e(label)}</text>')
        if y_label:
            self.add(f'<text x="12" y="{self.t + (self.h - self.t - self.b) / 2:.0f}" font-size="10" fill="#57606a" '
                     f'text-anchor="middle" transform="rotate(-90 12 {self.t + (self.h - self.t - self.b) / 2:.0f})">{_e(y_label)}</text>')
        if x_label:  # on its own line below the tick labels, so the last tick label stays readable
            self.add(f'<text x="{self.w - self.r}" y="{base + 29}" font-size="10" text-anchor="end" fill="#57606a">{_e(x_label)}</text>')
            self.extra_height = max(self.extra_height, base + 33 - self.h)

    def svg(self, label: str) -> str:
        body = "".join(self.parts)
        return (f'<svg viewBox="0 0 {self.w} {self.h + self.extra_height}" xmlns="http://www.w3.org/2000/svg" role="img" '
                f'aria-label="{_e(label)}">{body}</svg>')


def _xs(series: dict) -> list[float]:
    width = series["bucket_seconds"] * NS
    return [series["t0_ns"] + (i + 0.5) * width for i in range(series["n"])]


def _range(series: dict) -> tuple[float, float]:
    return series["t0_ns"], series["t0_ns"] + series["n"] * series["bucket_seconds"] * NS


def timeline_svg(series: dict) -> str:
    """Sync/coverage timeline: recorded (grey), synced (green) and unsynced (red) bands, markers above."""
    x0, x1 = _range(series)
    p = Plot(x0, x1, 0, 3, width=1160, height=130, bottom=26)
    width = series["bucket_seconds"] * NS
    w0, w1 = series.get("window") or (None, None)
    if w0 is not None and w0 < x1 and w1 > x0:
        p.rect(max(w0, x0), min(w1, x1), 0, 3, "#ddf4ff", 0.6, "trading window")
    for i, (rec, syn) in enumerate(zip(series["recorded_fraction"], series["synced_fraction"])):
        a = x0 + i * width
        if rec > 0:
            p.rect(a, a + width, 0.15, 0.15 + 1.7 * rec, "#d0d7de", 1.0, f"recorded {rec:.0%}")
        if syn > 0:
            p.rect(a, a + width, 0.15, 0.15 + 1.7 * syn, SYNCED, 1.0, f"synced {syn:.0%}")
    for a, b in series.get("unsynced", []):
        p.rect(a, b, 0.15, 1.85, UNSYNCED, 0.75, f"unsynced {(b - a) / NS:.3f} s")
    for a, b in series.get("gaps", []):
        p.rect(a, b, 2.0, 2.45, GAP, 1.0, f"silent gap {(b - a) / NS:.1f} s")
    for ts in series.get("disconnects", []):
        p.vline(ts, DISCONNECT, "3,3", 1.2, "disconnect")
    for ts, explained in series.get("breaks", []):
        x = p.x(ts)
        color = EXPLAINED if explained else UNEXPLAINED
        p.add(f'<path d="M{x - 5:.1f},{p.y(2.95):.1f} L{x + 5:.1f},{p.y(2.95):.1f} L{x:.1f},{p.y(2.5):.1f} Z" '
              f'fill="{color}"><title>update-id break ({"explained" if explained else "UNEXPLAINED"})</title></path>')
    p.axes(True, y_ticks=False, x_label="Berlin time")
    return p.svg("sync timeline")


def bars_svg(series: dict, keys: list[tuple[str, str, str]]) -> str:
    """Message rate per second per bucket, stacked bars per table."""
    x0, x1 = _range(series)
    width = series["bucket_seconds"] * NS
    per_s = {k: [v / series["bucket_seconds"] for v in series.get(k, [])] for k, _, _ in keys}
    totals = [sum(per_s[k][i] for k, _, _ in keys if i < len(per_s[k])) for i in range(series["n"])]
    p = Plot(x0, x1, 0, max(totals, default=1) * 1.1 or 1)
    for i in range(series["n"]):
        base = 0.0
        a = x0 + i * width
        for k, _, color in keys:
            v = per_s[k][i] if i < len(per_s[k]) else 0
            if v:
                p.rect(a + width * 0.08, a + width * 0.92, base, base + v, color, 1.0, f"{k}: {v:.1f}/s")
            base += v
    p.axes(True, y_label="messages / s", x_label="Berlin time")
    return p.svg("message rate")


def hist_svg(hist: dict) -> str:
    edges, counts = hist.get("edges_ms", []), hist.get("counts", [])
    if not counts:
        return '<p class="muted">no latency data</p>'
    p = Plot(edges[0], edges[-1], 0, max(counts) * 1.1 or 1)
    for a, b, c in zip(edges, edges[1:], counts):
        if c:
            p.rect(a, b, 0, c, "#8250df", 0.85, f"{a}..{b} ms: {c}")
    p.axes(False, y_label="messages", x_label="recv − E (ms)")
    return p.svg("latency histogram")


def line_svg(series: dict, key: str, color: str, label: str) -> str:
    values = series.get(key, [])
    present = [v for v in values if v is not None]
    if not present:
        return f'<p class="muted">no {label} data (book never valid)</p>'
    lo, hi = min(present), max(present)
    pad = (hi - lo) * 0.08 or abs(hi) * 1e-4 or 1
    x0, x1 = _range(series)
    p = Plot(x0, x1, lo - pad, hi + pad)
    p.polyline(list(zip(_xs(series), values)), color)
    p.axes(True, y_label=label, x_label="Berlin time")
    return p.svg(label)


def _legend(items: list[tuple[str, str]]) -> str:
    return '<div class="legend muted">' + "".join(
        f'<span><i class="sw" style="background:{c}"></i>{_e(t)}</span>' for t, c in items) + "</div>"


def _figures_table(figures: dict) -> str:
    rows = []
    for key, value in figures.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict | list) for v in value.values()):
            text = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, dict | list):
            text = json.dumps(value, separators=(", ", ": "))
        else:
            text = value
        rows.append(f"<tr><td><code>{_e(key)}</code></td><td>{_e(text)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _symbol_section(symbol: str, result: dict) -> str:
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{_badge(c['status'])}</td><td>{_e(c['summary'])}</td></tr>"
        for name, c in result["checks"].items())
    details = []
    for name, c in result["checks"].items():
        ex = c.get("examples") or []
        notes = "".join(f"<li>{_e(n)}</li>" for n in c.get("notes") or [])
        body = _figures_table(c["figures"])
        if notes:
            body += f"<ul>{notes}</ul>"
        if ex:
            body += f"<h3>examples ({len(ex)})</h3><pre>{_e(json.dumps(ex, indent=1))}</pre>"
        details.append(f"<details><summary>{_badge(c['status'])} <b>{_e(name)}</b> — {_e(c['summary'])}</summary>{body}</details>")
    if "series" not in result:  # no data: the checks say why, there is nothing to draw
        return f"""
<div class="card"><h2>{_e(symbol)} {_badge(result['status'])}</h2>
<table><tr><th>check</th><th>status</th><th>key figure</th></tr>{rows}</table>
<h3>Details</h3>{''.join(details)}
</div>"""
    s = result["series"]
    cov = result["checks"]["coverage"]["figures"]
    return f"""
<div class="card"><h2>{_e(symbol)} {_badge(result['status'])}</h2>
<table><tr><th>check</th><th>status</th><th>key figure</th></tr>{rows}</table>
<div class="grid" style="margin-top:14px">
<div class="full"><h3>Book validity over the day (synced {cov['synced_fraction']:.2%}, bucket {s['bucket_seconds']:g} s)</h3>
{timeline_svg(s)}
{_legend([("trading window", "#ddf4ff"), ("recorded", "#d0d7de"), ("synced", SYNCED), ("unsynced", UNSYNCED),
          ("silent gap", GAP), ("break, explained", EXPLAINED), ("break, unexplained", UNEXPLAINED),
          ("disconnect", DISCONNECT)])}</div>
<div><h3>Message rate</h3>{bars_svg(s, [("depth_msgs", "depth", "#0969da"), ("book_ticker", "bookTicker", "#8c959f"), ("trades", "trades", "#bf8700")])}
{_legend([("depth", "#0969da"), ("bookTicker", "#8c959f"), ("trades", "#bf8700")])}</div>
<div><h3>Feed latency recv − E (depth)</h3>{hist_svg(s.get('latency_hist', {}))}</div>
<div><h3>Mid price (last valid book per bucket, {_e(quote_currency(symbol) or 'quote currency')})</h3>{line_svg(s, 'mid', '#24292f', f"mid ({quote_currency(symbol) or 'quote currency'})")}</div>
<div><h3>Spread (mean per bucket, bps)</h3>{line_svg(s, 'spread_bps', '#cf222e', 'spread bps')}</div>
</div>
<h3>Details</h3>{''.join(details)}
</div>"""


def render_html(report: dict) -> str:
    """The whole report as one self-contained HTML document (no external resources)."""
    symbols = "".join(_symbol_section(sym, res) for sym, res in report.get("symbols", {}).items())
    thresholds = "".join(f"<tr><td><code>{_e(k)}</code></td><td>{_e(v)}</td></tr>"
                         for k, v in report.get("thresholds", {}).items())
    window = report.get("window", {})
    generated = (report.get("generated_at") or {}).get("berlin", "")
    overview = "".join(
        f"<tr><td>{_e(sym)}</td><td>{_badge(res['status'])}</td>"
        + "".join(f"<td>{_badge(c['status'])}</td>" for c in res["checks"].values()) + "</tr>"
        for sym, res in report.get("symbols", {}).items())
    check_names = next(iter(report.get("symbols", {}).values()), {"checks": {}})["checks"].keys()
    head = "".join(f"<th>{_e(n)}</th>" for n in check_names)
    conn = report.get("connection", {})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>validate {_e(report.get('exchange'))} {_e(report.get('date'))}: {_e(report.get('status'))}</title>
<style>{CSS}</style></head><body>
<h1>Recorded day {_e(report.get('date'))} · {_e(report.get('exchange'))} {_badge(report.get('status', 'skip'))}</h1>
<div class="muted">window {_e(window.get('local'))} {_e(window.get('timezone'))} · {report.get('rows', 0):,} rows in
{report.get('elapsed_seconds', 0)} s · {conn.get('disconnects', 0)} disconnect(s), {conn.get('rollovers', 0)} rollover(s)
· generated {_e(generated)} · data <code>{_e(report.get('root'))}</code></div>
<div class="card"><h2>Overview</h2><table><tr><th>symbol</th><th>day</th>{head}</tr>{overview}</table></div>
{symbols}
<div class="card"><details><summary><b>Thresholds</b> (config <code>validate:</code> section)</summary>
<table>{thresholds}</table></details></div>
</body></html>
"""
