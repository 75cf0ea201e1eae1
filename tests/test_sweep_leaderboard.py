"""The sweep leaderboard (issue 13): the page and the terminal table from hand-made rows of the contract."""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics

from rich.console import Console

from replay.sweep.leaderboard import print_leaderboard, render_leaderboard

DAYS = ("2026-03-01", "2026-03-02", "2026-03-03")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
GRID = {"gamma": [0.1, 2.0, 10.0], "order_size": ["0.002", "0.001"]}  # 10 sorts after 2 only as numbers
ERROR = "kernel failed: <script>alert(1)</script>"
FAILED = {"gamma": 10.0, "order_size": "0.001", "day": DAYS[1], "symbol": "ETHUSDT"}


def pnl_of(params: dict, day: int, symbol: int) -> float:
    """Best near gamma 2 and order size 0.002, the more so on later days; ETHUSDT a little worse."""
    size = {"0.002": 6.0, "0.001": 0.0}.get(params.get("order_size"), 3.0)
    gamma = 20 * abs(math.log10(params["gamma"]) - 0.3)
    return 4.0 - gamma + size + 1.5 * params.get("k", 0) + day - 2 * symbol


def sweep(grid: dict, strategy: str = "as") -> tuple[list[dict], list[dict]]:
    """Result rows (the task at FAILED fails) and set rows aggregated as the contract says; objective pnl."""
    tasks, sets = [], []
    for n, values in enumerate(itertools.product(*grid.values())):
        params = dict(zip(grid, values))
        swept = {f"p.{name}": value for name, value in params.items()}
        set_id, daily = f"{n:08x}", {}
        for (d, day), (s, symbol) in itertools.product(enumerate(DAYS), enumerate(SYMBOLS)):
            failed = all(params.get(k, v) == v for k, v in FAILED.items() if k in grid) and (
                day, symbol) == (FAILED["day"], FAILED["symbol"])
            pnl = None if failed else pnl_of(params, d, s)
            tasks.append({"task_id": f"{len(tasks):016x}", "set_id": set_id, "day": day, "symbol": symbol,
                          "market": "spot", "strategy": strategy, **swept, "seed": 7, "pnl": pnl,
                          "params": json.dumps(params, sort_keys=True), "fills": None if failed else 10,
                          "error": ERROR if failed else None})
            if not failed:
                daily[day] = daily.get(day, 0.0) + pnl
        failures = sum(t["error"] is not None for t in tasks if t["set_id"] == set_id)
        day_pnl = list(daily.values())
        sets.append({"set_id": set_id, **swept, "params": json.dumps(params, sort_keys=True), "tasks": 6,
                     "failed": failures, "days": len(day_pnl), "pnl_mean": statistics.mean(day_pnl),
                     "pnl_std": statistics.pstdev(day_pnl), "pnl_worst": min(day_pnl),
                     "win_share": sum(v > 0 for v in day_pnl) / len(day_pnl), "pnl_total": sum(day_pnl),
                     "fills": 10 * (6 - failures), "pnl_per_fill": sum(day_pnl) / (10 * (6 - failures)),
                     "sharpe_mean": 1.5, "max_drawdown_worst": 3.0, "fill_ratio": 0.2,
                     "objective": statistics.mean(day_pnl)})
    for rank, row in enumerate(sorted(sets, key=lambda r: -r["objective"]), 1):
        row["rank"] = rank
    return tasks, sets


CALIBRATION = [{"date": day, "symbol": symbol, "seconds": 3600.0, "trades": 100, "sigma": 0.5 + d, "A": 1.2,
                "k": 3.0, "r2": 0.9, "fits": 5, "A_median": 1.1, "k_median": 2.9}
               for d, day in enumerate(DAYS) for symbol in SYMBOLS]


def page(grid: dict = GRID, calibration: list[dict] = (), strategy: str = "as") -> tuple[str, list[dict]]:
    tasks, sets = sweep(grid, strategy)
    return render_leaderboard(tasks, sets, list(calibration), title="sweep spot", objective="pnl",
                              swept=list(grid)), sets


def svg(html: str, label: str) -> str:
    found = re.findall(rf'<svg [^>]*aria-label="{re.escape(label)}">(.*?)</svg>', html, re.DOTALL)
    assert len(found) == 1, f"{len(found)} plots {label!r}"
    return found[0]


def table_rows(html: str, heading: str) -> list[list[str]]:
    table = html.split(f"<h2>{heading}")[1].split("</table>")[0]
    return [re.findall(r"<t[hd]>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]


def test_the_best_sets_are_listed_by_rank_with_their_parameters():
    html, sets = page()
    head, *rows = table_rows(html, "Best parameter sets")
    assert head[:5] == ["rank", "gamma", "order_size", "pnl (objective)", "pnl_mean"]
    assert "win_share" in head and "failed" in head
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    best = next(row for row in sets if row["rank"] == 1)
    assert rows[0][1:4] == ["2", "0.002", f"{best['objective']:,.2f}"]
    assert rows[0][head.index("win_share")] == "100%"
    assert "6 sets · 36 tasks ·\n1 failed · 3 days · 2 symbols" in html


def test_the_heatmap_has_a_cell_per_gamma_and_order_size_with_its_objective_and_numeric_axes():
    html, sets = page()
    heatmap = svg(html, "heatmap gamma × order_size")
    assert heatmap.count("<title>") == 6
    for row in sets:
        value = f"{row['objective']:,.2f}"
        cell = f"gamma={row['p.gamma']:g}, order_size={row['p.order_size']}: {value}"
        assert f"<title>{cell}</title>" in heatmap
        assert f">{value}</text>" in heatmap
    assert heatmap.index(">0.1</text>") < heatmap.index(">2</text>") < heatmap.index(">10</text>")
    assert "Other parameters vary" not in html


def test_with_more_parameters_three_pairs_show_the_best_set_over_the_others():
    grid = {**GRID, "k": [0, 1], "horizon": ["1h", "2h"]}
    html, sets = page(grid)
    assert [svg(html, f"heatmap {a} × {b}") for a, b in (("gamma", "order_size"), ("gamma", "k"),
                                                          ("gamma", "horizon"))]
    assert "heatmap order_size × k" not in html
    assert "each cell shows the best pnl of the sets at that pair" in html
    best = max(r["objective"] for r in sets if (r["p.gamma"], r["p.order_size"]) == (2.0, "0.002"))
    assert f"<title>gamma=2, order_size=0.002: {best:,.2f}</title>" in svg(html, "heatmap gamma × order_size")


def test_one_line_of_pnl_by_day_per_top_set():
    html, _ = page()
    chart = svg(html, "PnL by day of the top sets")
    lines = re.findall(r'<polyline points="([^"]*)"', chart)
    assert len(lines) == 5 and all(len(points.split()) == len(DAYS) for points in lines)
    assert "#1 gamma=2, order_size=0.002" in html and "#5 gamma=" in html and "#6 gamma=" not in html


def test_failed_tasks_are_listed_with_their_error_escaped():
    html, _ = page()
    head, *rows = table_rows(html, "Failed tasks")
    assert head == ["day", "symbol", "params", "error"]
    params = "{&quot;gamma&quot;: 10.0, &quot;order_size&quot;: &quot;0.001&quot;}"
    error = "kernel failed: &lt;script&gt;alert(1)&lt;/script&gt;"
    assert rows == [[FAILED["day"], FAILED["symbol"], params, error]]
    assert "<script" not in html


def test_a_strategy_name_is_escaped():
    html, _ = page(strategy="<script>x</script>")
    assert "strategy &lt;script&gt;x&lt;/script&gt;" in html and "<script" not in html


def test_the_calibration_series_are_shown_when_given():
    html, _ = page(calibration=CALIBRATION)
    assert html.count('aria-label="σ (price/√s)"') == len(SYMBOLS)  # a chart per symbol, a dot per day
    assert "<title>2026-03-03: 2.5</title>" in html
    assert "<h2>BTCUSDT</h2>" in html and 'aria-label="k (per price unit)"' in html
    assert "σ (price/√s)" not in page()[0]


def test_one_swept_parameter_gives_a_bar_chart_and_no_heatmap():
    html, sets = page({"gamma": GRID["gamma"]})
    bars = svg(html, "objective by gamma")
    assert bars.count("<rect") == 3 and "heatmap" not in html
    for row in sets:
        assert f"<title>gamma={row['p.gamma']:g}: {row['objective']:,.2f}</title>" in bars


def test_the_terminal_table_lists_the_top_sets_by_rank():
    _, sets = sweep(GRID)
    console = Console(record=True, width=200)
    print_leaderboard(sets, "pnl", list(GRID), console, top=3)
    rows = [line.split("│")[1:4] for line in console.export_text().splitlines() if line.count("│") > 4]
    best = sorted(sets, key=lambda r: r["rank"])[:3]
    assert [[cell.strip() for cell in row] for row in rows] == [
        [str(r["rank"]), f"{r['p.gamma']:g}", r["p.order_size"]] for r in best]


def test_a_set_without_a_successful_task_ranks_last_with_no_figures_and_no_cell():
    tasks, sets = sweep(GRID)
    lost = next(row for row in sets if row["rank"] == 6)
    for t in (t for t in tasks if t["set_id"] == lost["set_id"]):
        t.update(pnl=None, error="no data")
    lost.update(objective=math.nan, pnl_mean=math.nan, days=0, failed=6)  # NaN as pandas reads a null
    html = render_leaderboard(tasks, sets, [], title="sweep", objective="pnl", swept=list(GRID))
    _, *rows = table_rows(html, "Best parameter sets")
    assert rows[-1][:5] == ["6", f"{lost['p.gamma']:g}", lost["p.order_size"], "–", "–"]
    assert svg(html, "heatmap gamma × order_size").count("<title>") == 5
    assert "#5 gamma=" in html and "#6 gamma=" not in html and "Failed tasks (7)" in html


def test_a_search_with_many_distinct_values_is_drawn_as_a_scatter():
    grid_values = [(0.1 * 1.3 ** n, 0.5 + 0.37 * n % 3) for n in range(20)]
    tasks, sets = sweep({"gamma": [0.1]})
    sets = [{**sets[0], "set_id": f"{n:08x}", "p.gamma": gamma, "p.k": k, "objective": gamma - k, "rank": n + 1}
            for n, (gamma, k) in enumerate(grid_values)]
    html = render_leaderboard(tasks, sets, [], title="search", objective="pnl", swept=["gamma", "k"])
    assert svg(html, "scatter gamma × k").count("<circle") == 20 and "heatmap" not in html
