"""`recorder validate`: is a recorded day right? Checks per symbol, a JSON report, a terminal table, HTML.

One streaming pass per symbol walks the day as replay and the exports do (`recorder.daywalk.walk`: the live
sync engine decides again, its validity edges are the synced intervals) and, merged by `seq`, walks
bookTicker and trades alongside it; the other tables are streamed batch by batch. Memory is
bounded by a row group plus small per-bucket series, whatever the size of the day.

Checks (each pass / warn / fail / skip, with figures and worst examples; docs/validation.md lists the keys):
coverage, channels, continuity, snapshots, book_sanity, book_ticker, trades, time, files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import typer

from recorder.daywalk import walk
from recorder.markets import Market, SequenceRule, get_market
from recorder.protocol import DepthUpdate
from recorder.rebuild import book_streams, files_in_seq_order
from recorder.sync import Action, LocalBook, State
from recorder.watchdog import CHANNELS, DEFAULT_SILENT_AFTER_S
from recorder.window import TradingWindow
from schemas import (
    TABLES,
    DatasetError,
    available,
    check_file,
    decimal_units,
    decimal_units64,
    list_files,
    read_table,
)
from schemas.layout import parse_date

REPORT_VERSION = 1
BERLIN = ZoneInfo("Europe/Berlin")
NS = 1_000_000_000
MS = 1_000_000
STATUS_ORDER = {"pass": 0, "skip": 0, "warn": 1, "fail": 2}
CHECKS = ("coverage", "channels", "continuity", "snapshots", "book_sanity", "book_ticker", "trades", "time", "files")
MAX_EXAMPLES = 10
LAT_MIN_MS, LAT_MAX_MS = -60_000, 60_000  # latency histogram range, 1 ms bins (clamped at the ends)
EXPLAINING_KINDS = {"gap", "need_snapshot", "resync", "buffer_overflow"}
CHANNEL_TABLES = {"depth": "depth", "trade": "trades", "agg_trade": "agg_trades", "book_ticker": "book_ticker"}
CONNECTION_KINDS = {"connect", "disconnect", "rollover", "window_start", "window_end", "journal_recovered",
                    "server_shutdown"}


@dataclass(frozen=True)
class Thresholds:
    """Limits of `recorder validate`; the `validate:` section of the recorder YAML overrides them by name."""

    max_gap_seconds: float = 10.0  # a silence in the depth stream longer than this is listed (warn)
    max_gap_fail_seconds: float = 300.0  # ... and fails the day when longer than this (live days only)
    min_window_coverage: float = 0.95  # recorded span / trading window (not for imports or off-window data)
    min_synced_fraction: float = 0.95  # share of the recorded span with a valid book: fail below
    warn_synced_fraction: float = 0.99  # warn below
    sync_grace_seconds: float = 30.0  # the first sync after the start is not counted as unsynced up to this
    explain_seq_slack: int = 10  # a break is explained by a gap/need_snapshot event up to this many seq after it
    max_unexplained_breaks: int = 0
    max_snapshot_mismatch_levels: int = 0  # summed over all compared snapshots
    max_crossed_books: int = 0  # crossed or locked valid books
    max_off_tick_levels: int = 0  # depth/snapshot levels off tickSize or stepSize
    min_book_ticker_agreement: float = 0.999  # bookTicker equal to the rebuilt top at the same update id: warn below
    fail_book_ticker_agreement: float = 0.98  # ... and fail below this
    max_trade_price_deviation_bps: float = 25.0  # a trade this far outside the valid book is an outlier
    max_trade_outlier_fraction: float = 0.001
    max_missing_trade_ids: int = 0  # trade ids missing while connected (disconnects excuse theirs)
    max_duplicate_trade_ids: int = 0
    max_latency_p99_ms: float = 2000.0  # p99 of recv - E above the day's minimum (clock offset removed)
    max_clock_offset_ms: float = 5000.0  # |median recv - E| above this: warn (clock badly off)
    max_recv_ts_backsteps: int = 0  # recv_ts going backwards in seq order: warn above
    max_silent_fraction: float = 0.05  # share of the recorded span a recorded channel may be silent: fail above

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Thresholds:
        """Thresholds from the config's `validate:` section; ValueError (one line) on unknown keys or types."""
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"validate: unknown threshold(s) {', '.join(unknown)}; known: {', '.join(known)}")
        parsed = {}
        for name, value in values.items():
            kind = type(getattr(cls, name))
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"validate.{name}: expected a number, got {value!r}")  # noqa: TRY004 (a config value error, reported as usage)
            if kind is int and float(value) != int(value):
                raise ValueError(f"validate.{name}: expected an integer, got {value!r}")
            parsed[name] = kind(value)
        return cls(**parsed)


# ---- small helpers ------------------------------------------------------------------------------------


def when(ns: int | None) -> dict[str, Any] | None:
    """A timestamp as {ns, utc, berlin} (ISO 8601, ms precision)."""
    if ns is None:
        return None
    moment = dt.datetime.fromtimestamp(ns / NS, tz=dt.UTC)
    return {"ns": int(ns), "utc": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "berlin": moment.astimezone(BERLIN).isoformat(timespec="milliseconds")}


def _worst(*statuses: str) -> str:
    return max(statuses, key=lambda s: STATUS_ORDER[s]) if statuses else "pass"


def _check(status: str, summary: str, figures: dict, examples: list | None = None, notes: list | None = None) -> dict:
    return {"status": status, "summary": summary, "figures": figures, "examples": examples or [],
            "notes": notes or []}


def _units64(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """decimal128(38, 8) -> int64 1e-8 units, vectorised; object array of exact ints when some overflow."""
    values = decimal_units64(column)
    if values is None:
        return np.array([0 if v is None else v for v in decimal_units(column)], dtype=object)
    return values


def _batches(paths: Sequence[Path], columns: list[str], batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    for path in files_in_seq_order(list(paths)):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)


def _files(root: Path, exchange: str, table: str, date: dt.date, symbol: str | None) -> list[Path]:
    try:
        return list_files(root, exchange, table, date=date, symbols=[symbol])
    except DatasetError:
        return []


class LatencyHistogram:
    """recv - E in 1 ms bins (bounded memory); quantiles from the cumulative counts."""

    def __init__(self) -> None:
        self.counts = np.zeros(LAT_MAX_MS - LAT_MIN_MS + 1, dtype=np.int64)
        self.n = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, latency_ms: np.ndarray) -> None:
        if len(latency_ms) == 0:
            return
        latency_ms = np.asarray(latency_ms, dtype=np.int64)
        self.n += len(latency_ms)
        self.min = min(self.min, int(latency_ms.min()))
        self.max = max(self.max, int(latency_ms.max()))
        idx = np.clip(latency_ms, LAT_MIN_MS, LAT_MAX_MS) - LAT_MIN_MS
        self.counts += np.bincount(idx, minlength=len(self.counts))

    def quantile(self, q: float) -> float | None:
        if not self.n:
            return None
        cum = np.cumsum(self.counts)
        return float(int(np.searchsorted(cum, q * self.n, side="left")) + LAT_MIN_MS)

    def figures(self) -> dict[str, Any]:
        if not self.n:
            return {"count": 0, "min_ms": None, "p50_ms": None, "p99_ms": None, "max_ms": None}
        return {"count": self.n, "min_ms": self.min, "p50_ms": self.quantile(0.5),
                "p99_ms": self.quantile(0.99), "max_ms": self.max}

    def count_above(self, threshold_ms: float) -> int:
        """Samples strictly above `threshold_ms` (1 ms bins; clamped ends included)."""
        start = math.floor(threshold_ms) + 1 - LAT_MIN_MS
        return int(self.counts[max(start, 0):].sum()) if start < len(self.counts) else 0

    def compact(self, bins: int = 60) -> dict[str, list]:
        """Histogram over [p0.1, p99.9] in at most `bins` bins, for plots."""
        if not self.n:
            return {"edges_ms": [], "counts": []}
        lo, hi = self.quantile(0.001), self.quantile(0.999)
        width = max(1, math.ceil((hi - lo + 1) / bins))
        start = int(lo) - LAT_MIN_MS
        nb = math.ceil((hi - lo + 1) / width)
        counts = [int(self.counts[start + i * width: start + (i + 1) * width].sum()) for i in range(nb)]
        edges = [int(lo) + i * width for i in range(nb + 1)]
        return {"edges_ms": edges, "counts": counts}


class Buckets:
    """Fixed-width time buckets over the timeline of the day, for the per-bucket series."""

    NICE = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)

    def __init__(self, start_ns: int, end_ns: int, target: int = 900) -> None:
        span_s = max((end_ns - start_ns) / NS, 0.1)
        self.seconds = next((s for s in self.NICE if span_s / s <= target), self.NICE[-1])
        self.width = round(self.seconds * NS)
        self.t0 = start_ns // self.width * self.width
        self.n = max(1, math.ceil((end_ns - self.t0) / self.width))

    def index(self, ns: int) -> int:
        return min(max((ns - self.t0) // self.width, 0), self.n - 1)

    def count(self, ns: np.ndarray) -> np.ndarray:
        idx = np.clip((np.asarray(ns, dtype=np.int64) - self.t0) // self.width, 0, self.n - 1)
        return np.bincount(idx, minlength=self.n)

    def coverage(self, intervals: list[tuple[int, int]]) -> list[float]:
        """Fraction of each bucket inside the intervals."""
        out = np.zeros(self.n)
        for a, b in intervals:
            a, b = max(a, self.t0), min(b, self.t0 + self.n * self.width)
            if b <= a:
                continue
            i, j = (a - self.t0) // self.width, (b - 1 - self.t0) // self.width
            for k in range(i, j + 1):
                lo, hi = self.t0 + k * self.width, self.t0 + (k + 1) * self.width
                out[k] += max(0, min(b, hi) - max(a, lo))
        return [round(float(x) / self.width, 4) for x in out]


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else round(value, digits)


# ---- events --------------------------------------------------------------------------------------------


@dataclass
class Events:
    symbol_rows: list[tuple[int, int, str, dict]]  # (seq, ts, kind, detail) of this symbol, seq order
    connection_rows: list[tuple[int, int, str, dict]]  # connection-wide rows

    @property
    def kinds(self) -> Counter:
        return Counter(kind for _, _, kind, _ in self.symbol_rows)

    def explaining_seqs(self) -> np.ndarray:
        return np.array(sorted(s for s, _, k, _ in self.symbol_rows if k in EXPLAINING_KINDS), dtype=np.int64)

    def connection_seqs(self) -> np.ndarray:
        rows = [s for s, _, k, _ in self.connection_rows if k in CONNECTION_KINDS]
        rows += [s for s, _, k, d in self.symbol_rows if k == "need_snapshot"]
        return np.array(sorted(rows), dtype=np.int64)

    def is_import(self) -> bool:
        return any(k == "window_start" and "import" in json.dumps(d).lower() for _, _, k, d in self.connection_rows)

    def ignored_window(self) -> bool:
        """Every run of the day was started with --ignore-window: its span, not the trading window, is the plan."""
        starts = [d for _, _, k, d in self.connection_rows if k == "window_start"]
        return bool(starts) and all(d.get("ignore_window") for d in starts)


def _load_events(root: Path, exchange: str, date: dt.date, symbol: str | None) -> list[tuple[int, int, str, dict]]:
    if not _files(root, exchange, "events", date, symbol):
        return []
    table = read_table(root, exchange, "events", date=date, symbols=[symbol], columns=["seq", "ts", "kind", "detail"])
    rows = []
    for seq, ts, kind, detail in zip(*(table.column(c).to_pylist() for c in ("seq", "ts", "kind", "detail"))):
        try:
            parsed = json.loads(detail) if detail else {}
        except ValueError:
            parsed = {"raw": detail}
        rows.append((seq, ts, kind, parsed if isinstance(parsed, dict) else {"value": parsed}))
    rows.sort(key=lambda r: r[0])
    return rows


# ---- files ----------------------------------------------------------------------------------------------


def _files_check(root: Path, exchange: str, date: dt.date, symbol: str) -> tuple[dict, dict[str, list[Path]]]:
    """Every file of the symbol's partitions checked against the contract; DatasetError on unreadable ones."""
    per_table: dict[str, Any] = {}
    paths: dict[str, list[Path]] = {}
    bad: list[DatasetError] = []
    segments = 0
    versions: Counter = Counter()
    for table in TABLES:
        files = _files(root, exchange, table, date, symbol)
        paths[table] = []
        rows = size = groups = 0
        for path in files:
            try:
                info = check_file(path, table=table, exchange=exchange)
                meta = pq.read_metadata(path)
            except DatasetError as exc:
                bad.append(exc)
                continue
            except (OSError, pa.ArrowException) as exc:
                bad.append(DatasetError(path, f"not a readable Parquet file ({exc})"))
                continue
            paths[table].append(path)
            rows += info.num_rows
            size += path.stat().st_size
            groups += meta.num_row_groups
            versions[info.schema_version] += 1
            segments += path.name.startswith("seg-")
        per_table[table] = {"files": len(files), "rows": rows, "bytes": size, "row_groups": groups,
                            "segments": sum(p.name.startswith("seg-") for p in files)}
    if bad:
        more = f" (and {len(bad) - 1} more unreadable file(s))" if len(bad) > 1 else ""
        raise DatasetError(bad[0].path, f"{bad[0].reason}{more}")
    missing = [t for t in ("depth", "snapshots", "trades", "agg_trades", "book_ticker", "events", "instruments")
               if not per_table[t]["files"]]
    status = "warn" if segments else "pass"  # missing tables are judged in validate_symbol (live vs import)
    total_rows = sum(t["rows"] for t in per_table.values())
    total_bytes = sum(t["bytes"] for t in per_table.values())
    summary = f"{sum(t['files'] for t in per_table.values())} files, {total_rows:,} rows, {total_bytes / 1e6:.1f} MB"
    if segments:
        summary += f", {segments} uncompacted segment(s)"
    if missing:
        summary += f", absent: {', '.join(missing)}"
    figures = {"tables": per_table, "schema_versions": dict(versions), "uncompacted_segments": segments,
               "missing_tables": missing, "unreadable_files": 0, "total_rows": total_rows, "total_bytes": total_bytes}
    return _check(status, summary, figures), paths


# ---- streaming side tables ----------------------------------------------------------------------------


class SideStream:
    """Rows of a seq-ordered table handed out in chunks `until(seq)`: those arriving before `seq`."""

    def __init__(self, batches: Iterator[dict[str, np.ndarray]]) -> None:
        self._it = batches
        self._cur: dict[str, np.ndarray] | None = None
        self._i = self._n = 0
        self.next_seq = -1
        self._load()

    def _load(self) -> None:
        while True:
            nxt = next(self._it, None)
            if nxt is None:
                self._cur, self.next_seq = None, math.inf
                return
            if len(nxt["seq"]):
                self._cur, self._i, self._n = nxt, 0, len(nxt["seq"])
                self.next_seq = int(nxt["seq"][0])
                return

    def until(self, seq: float) -> Iterator[tuple[dict[str, np.ndarray], int, int]]:
        while self.next_seq < seq:
            cur = self._cur
            j = self._n if seq == math.inf else int(np.searchsorted(cur["seq"], seq, side="left"))
            yield cur, self._i, j
            self._i = j
            if j >= self._n:
                self._load()
            else:
                self.next_seq = int(cur["seq"][j])


def _ticker_batches(paths: list[Path]) -> Iterator[dict[str, np.ndarray]]:
    for batch in _batches(paths, ["seq", "recv_ts", "update_id", "bid_price", "bid_qty", "ask_price", "ask_qty"]):
        out = {"seq": batch.column("seq").to_numpy(), "recv_ts": batch.column("recv_ts").to_numpy(),
               "u": batch.column("update_id").to_numpy()}
        for name in ("bid_price", "bid_qty", "ask_price", "ask_qty"):
            out[name] = _units64(batch.column(name))
        yield out


def _trade_batches(paths: list[Path]) -> Iterator[dict[str, np.ndarray]]:
    for batch in _batches(paths, ["seq", "recv_ts", "trade_id", "price"]):
        yield {"seq": batch.column("seq").to_numpy(), "recv_ts": batch.column("recv_ts").to_numpy(),
               "trade_id": batch.column("trade_id").to_numpy(), "price": _units64(batch.column("price"))}


def _table_stats(paths: list[Path], columns: list[str], buckets: Buckets, hist: LatencyHistogram,
                 id_columns: tuple[str, ...], connection_seqs: np.ndarray) -> dict[str, Any]:
    """Latency, rate, E/T inversions and id contiguity of trades / agg_trades / book_ticker."""
    per_bucket = np.zeros(buckets.n, dtype=np.int64)
    n = inversions = e_backsteps = 0
    prev_e = None
    ids: dict[str, Any] = {}
    state = {"prev_id": None, "prev_seq": None, "max_id": None, "prev_last": None}
    missing = explained = dups = 0
    agg_breaks = 0
    examples: list[dict] = []
    for batch in _batches(paths, columns):
        seq = batch.column("seq").to_numpy()
        recv = batch.column("recv_ts").to_numpy()
        n += len(seq)
        per_bucket += buckets.count(recv)
        if "event_ts" in batch.schema.names and batch.column("event_ts").null_count < len(seq):
            ev = batch.column("event_ts").to_numpy(zero_copy_only=False)
            ok = ~np.isnan(ev) if ev.dtype.kind == "f" else np.ones(len(ev), bool)
            e = ev[ok].astype(np.int64)
            hist.add((recv[ok] - e) // MS)
            if len(e):
                steps = np.diff(np.r_[e[:1] if prev_e is None else [prev_e], e])
                e_backsteps += int((steps < 0).sum())
                prev_e = int(e[-1])
            for tcol in ("trade_ts", "transact_ts"):
                if tcol in batch.schema.names and batch.column(tcol).null_count < len(seq):
                    t = batch.column(tcol).to_numpy(zero_copy_only=False)
                    okt = ok & ~np.isnan(t.astype(float)) if t.dtype.kind == "f" else ok
                    inversions += int((t[okt].astype(np.int64) > ev[okt].astype(np.int64)).sum())
        if id_columns:
            idc = batch.column(id_columns[0]).to_numpy()
            prev = state["prev_id"]
            full = np.r_[[prev], idc] if prev is not None else idc
            seqs = np.r_[[state["prev_seq"]], seq] if prev is not None else seq
            d = np.diff(full)
            running = np.maximum.accumulate(np.r_[[state["max_id"]], idc] if prev is not None else idc)
            dups += int((idc <= (running[:-1] if prev is not None else np.r_[[np.iinfo(np.int64).min], running[:-1]])).sum())
            jumps = np.flatnonzero(d > 1)
            for k in jumps.tolist():
                gap = int(d[k] - 1)
                a, b = int(seqs[k]), int(seqs[k + 1])
                lo = int(np.searchsorted(connection_seqs, a, side="left"))
                if lo < len(connection_seqs) and connection_seqs[lo] <= b:
                    explained += gap
                else:
                    missing += gap
                    if len(examples) < MAX_EXAMPLES:
                        examples.append({"after_id": int(full[k]), "next_id": int(full[k + 1]), "missing": gap,
                                         "seq": b, "time": when(int(recv[k + (0 if prev is not None else 1)]))})
            if len(id_columns) == 3:  # agg_trades: first_trade_id == previous last_trade_id + 1
                first = batch.column(id_columns[1]).to_numpy()
                last = batch.column(id_columns[2]).to_numpy()
                prev_last = np.r_[[state["prev_last"]], last[:-1]] if state["prev_last"] is not None else last[:-1]
                cur_first = first if state["prev_last"] is not None else first[1:]
                agg_breaks += int((cur_first != prev_last + 1).sum())
                state["prev_last"] = int(last[-1])
            state["prev_id"], state["prev_seq"] = int(idc[-1]), int(seq[-1])
            state["max_id"] = int(running[-1])
    ids = {"missing_ids": missing, "missing_ids_at_disconnects": explained, "duplicate_ids": dups}
    if len(id_columns) == 3:
        ids["trade_range_breaks"] = agg_breaks
    return {"rows": n, "per_bucket": per_bucket, "event_time_inversions": inversions,
            "event_time_backsteps": e_backsteps, "ids": ids, "examples": examples}


# ---- the per-symbol pass ------------------------------------------------------------------------------


def _compare_snapshot(book, bids: list, asks: list, known: tuple[float, float],
                      excluded: tuple[set, set]) -> tuple[int, int, int, list]:
    """Level mismatches between the book and a snapshot; (mismatches, compared, excluded, examples).

    Compared: every price inside the range the snapshot covers (it holds only `limit` levels a side, so its
    deepest level bounds it) and inside the range the book knows (the sync snapshot's deepest levels: further
    out the book holds only what diffs happened to touch), except the `excluded` prices (levels touched by
    the diff straddling lastUpdateId and later ones: they may be either side of it).
    """
    mismatches = compared = skipped = 0
    diffs: list = []
    for name, levels, side, is_bid, bound, skip in (("bid", bids, book.bids, True, known[0], excluded[0]),
                                                     ("ask", asks, book.asks, False, known[1], excluded[1])):
        snap = {p: q for p, q in levels if q}
        if not snap:
            continue
        if is_bid:
            lo = max(min(snap), bound)
            ours = {p: q for p, q in side.items()[side.bisect_left(lo):]}
            theirs = {p: q for p, q in snap.items() if p >= lo}
        else:
            hi = min(max(snap), bound)
            ours = {p: q for p, q in side.items()[:side.bisect_right(hi)]}
            theirs = {p: q for p, q in snap.items() if p <= hi}
        for price in ours.keys() | theirs.keys():
            if price in skip:
                skipped += 1
                continue
            compared += 1
            if ours.get(price) != theirs.get(price):
                mismatches += 1
                if len(diffs) < 5:
                    diffs.append({"side": name, "price": price, "book_qty": ours.get(price), "snapshot_qty": theirs.get(price)})
    return mismatches, compared, skipped, diffs


def _known_range(snapshot) -> tuple[float, float]:
    """The price range a book synced from this snapshot knows exactly: down to its deepest bid, up to its deepest ask."""
    bids = [p for p, q in snapshot.bids if q]
    asks = [p for p, q in snapshot.asks if q]
    return (min(bids) if bids else -math.inf, max(asks) if asks else math.inf)


SNAPSHOT_HISTORY = 20_000  # applied diffs remembered (their touched prices) to compare late snapshots


def _symbol_pass(root: Path, market: Market, date: dt.date, symbol: str, paths: dict[str, list[Path]],
                 events: Events, thresholds: Thresholds, buckets: Buckets, tick: int | None, step: int | None) -> dict:
    futures = market.sequence_rule is SequenceRule.FUTURES
    gap_ns = int(thresholds.max_gap_seconds * NS)
    hist = LatencyHistogram()
    lat_buf: list[int] = []
    depth_per_bucket = np.zeros(buckets.n, dtype=np.int64)
    bucket_buf: list[int] = []
    mid_last = [None] * buckets.n
    spread_sum = np.zeros(buckets.n)
    spread_n = np.zeros(buckets.n, dtype=np.int64)

    st: dict[str, Any] = dict(diffs=0, snapshots=0, levels=0, first_recv=None, last_recv=None, non_advancing=0,  # noqa: C408
                              recv_backsteps=0, max_backstep_ns=0, crossed=0, locked=0, valid_books=0,
                              e_backsteps=0, t_after_e=0, snap_used_for_sync=0, snap_compared=0,
                              snap_levels_compared=0, snap_mismatch_levels=0, snap_not_aligned=0,
                              snap_while_unsynced=0, snap_stale=0, snap_levels_excluded=0,
                              ticker_compared=0, ticker_agreed=0, ticker_qty_only=0,
                              ticker_unmatched=0, ticker_rows=0, trades_vs_book=0, trade_outliers=0,
                              trades_unsynced=0, max_trade_dev_bps=0.0, off_tick=0, off_step=0)
    gaps: list[dict] = []
    breaks: list[dict] = []
    crossed_ex: list[dict] = []
    snap_ex: list[dict] = []
    ticker_ex: list[dict] = []
    trade_ex: list[dict] = []
    tick_ex: list[dict] = []
    intervals: list[tuple[int, int]] = []
    first_synced_ns = None
    sync_start = None
    synced = False
    prev_u = prev_seq = prev_recv = prev_e = None
    pending_snaps: list[tuple[int, int, int, Any]] = []  # (L, seq, recv, snapshot) arrived while synced
    history: deque[tuple[int, list, list]] = deque(maxlen=SNAPSHOT_HISTORY)  # (u, bids, asks) of applied diffs
    history_start = None  # update id from which every applied diff is in `history`
    known = (-math.inf, math.inf)  # price range the book knows exactly (deepest levels of the sync snapshot)
    held = None  # the snapshot the engine holds while BRIDGING
    tops: OrderedDict[int, tuple[int, int, int, int]] = OrderedDict()
    pending_tickers: dict[int, tuple] = {}
    best = None  # (bid, ask) of the valid book, else None
    book_id = None  # update id of the valid book, else None
    explain = events.explaining_seqs()
    slack = thresholds.explain_seq_slack

    tickers = SideStream(_ticker_batches(paths["book_ticker"])) if paths["book_ticker"] else None
    trades = SideStream(_trade_batches(paths["trades"])) if paths["trades"] else None

    def compare_ticker(u, values, seq, recv):
        top = tops[u]
        st["ticker_compared"] += 1
        if top == values:
            st["ticker_agreed"] += 1
            return
        if (top[0], top[2]) == (values[0], values[2]):
            st["ticker_qty_only"] += 1
        if len(ticker_ex) < MAX_EXAMPLES:
            ticker_ex.append({"update_id": u, "seq": seq, "time": when(recv), "book_ticker": list(values),
                              "rebuilt_top": list(top)})

    def feed_tickers(upto: float, local_id: int | None):
        for cur, i, j in tickers.until(upto):
            us, seqs, recvs = cur["u"], cur["seq"], cur["recv_ts"]
            bp, bq, ap, aq = cur["bid_price"], cur["bid_qty"], cur["ask_price"], cur["ask_qty"]
            st["ticker_rows"] += j - i
            for k in range(i, j):
                u = int(us[k])
                values = (int(bp[k]), int(bq[k]), int(ap[k]), int(aq[k]))
                if u in tops:
                    compare_ticker(u, values, int(seqs[k]), int(recvs[k]))
                elif local_id is not None and u > local_id:
                    pending_tickers[u] = (values, int(seqs[k]), int(recvs[k]))
                else:
                    st["ticker_unmatched"] += 1

    def feed_trades(upto: float):
        for cur, i, j in trades.until(upto):
            if best is None:
                st["trades_unsynced"] += j - i
                continue
            bid, ask = best
            prices = cur["price"][i:j]
            st["trades_vs_book"] += j - i
            mid = (bid + ask) / 2
            outside = np.maximum(prices - ask, bid - prices).astype(float)
            dev = np.maximum(outside, 0) / mid * 1e4
            if len(dev):
                st["max_trade_dev_bps"] = max(st["max_trade_dev_bps"], float(dev.max()))
                bad = np.flatnonzero(dev > thresholds.max_trade_price_deviation_bps)
                st["trade_outliers"] += len(bad)
                for k in bad.tolist()[: MAX_EXAMPLES - len(trade_ex)]:
                    trade_ex.append({"trade_id": int(cur["trade_id"][i + k]), "price": int(prices[k]),
                                     "best_bid": bid, "best_ask": ask, "deviation_bps": round(float(dev[k]), 2),
                                     "seq": int(cur["seq"][i + k]), "time": when(int(cur["recv_ts"][i + k]))})

    def flush_buffers():
        if lat_buf:
            hist.add(np.array(lat_buf, dtype=np.int64))
            lat_buf.clear()
        if bucket_buf:
            nonlocal depth_per_bucket
            depth_per_bucket += buckets.count(np.array(bucket_buf, dtype=np.int64))
            bucket_buf.clear()

    local = LocalBook(market.sequence_rule, symbol, units=True)
    for recv, seq, _, _, message, action, became in walk(book_streams(paths["depth"], paths["snapshots"], symbol),
                                                         {symbol: local}):
        if tickers is not None and tickers.next_seq < seq:
            feed_tickers(seq, book_id)  # the book as it was before this message
        if trades is not None and trades.next_seq < seq:
            feed_trades(seq)
        if st["first_recv"] is None:
            st["first_recv"] = recv
        if prev_recv is not None:
            step_ns = recv - prev_recv
            if step_ns < 0:
                st["recv_backsteps"] += 1
                st["max_backstep_ns"] = max(st["max_backstep_ns"], -step_ns)
        st["last_recv"] = recv if prev_recv is None else max(recv, prev_recv)
        if type(message) is DepthUpdate:
            st["diffs"] += 1
            st["levels"] += len(message.bids) + len(message.asks)
            bucket_buf.append(recv)
            e_ns = message.event_ts * MS
            lat_buf.append((recv - e_ns) // MS)
            if len(lat_buf) >= 65_536:
                flush_buffers()
            if prev_e is not None and e_ns < prev_e:
                st["e_backsteps"] += 1
            prev_e = e_ns if prev_e is None else max(prev_e, e_ns)
            if message.transact_ts is not None and message.transact_ts > message.event_ts:
                st["t_after_e"] += 1
            if prev_recv is not None and recv - prev_recv > gap_ns:
                gaps.append({"start": when(prev_recv), "end": when(recv), "seconds": round((recv - prev_recv) / NS, 3),
                             "seq_before": prev_seq, "seq_after": seq})
            first, final = message.first_update_id, message.final_update_id
            if prev_u is not None:
                ok = message.prev_final_update_id == prev_u if futures else first == prev_u + 1
                if not ok:
                    if final <= prev_u:
                        st["non_advancing"] += 1
                    else:
                        lo = int(np.searchsorted(explain, prev_seq, side="left"))
                        explained = lo < len(explain) and explain[lo] <= seq + slack
                        breaks.append({"seq_before": prev_seq, "seq": seq, "time": when(recv), "prev_u": prev_u,
                                       "U": first, "u": final, "pu": message.prev_final_update_id,
                                       "explained": bool(explained),
                                       "explained_by_seq": int(explain[lo]) if explained else None})
            if prev_u is None or final > prev_u:
                prev_u, prev_seq = final, seq
            prev_recv = recv
        else:
            st["snapshots"] += 1
            prev_recv = recv if prev_recv is None else max(prev_recv, recv)
            L = message.last_update_id
            if action is Action.IGNORED and local.engine.state is State.SYNCED:
                pending_snaps.append((L, seq, recv, message))
            elif action is Action.SYNCED:
                st["snap_used_for_sync"] += 1
                known = _known_range(message)
                if held is not None:  # replaced by this newer one
                    st["snap_while_unsynced"] += 1
                    held = None
            elif action is Action.WAIT and (held is None or L > held.last_update_id):
                if held is not None:
                    st["snap_while_unsynced"] += 1
                held = message
            elif action is Action.STALE:
                st["snap_stale"] += 1
            else:
                st["snap_while_unsynced"] += 1
        if action is Action.SYNCED and type(message) is DepthUpdate and held is not None:
            st["snap_used_for_sync"] += 1  # the held snapshot, bridged by this diff
            known = _known_range(held)
            held = None
        elif held is not None and local.engine.state is State.NEED_SNAPSHOT:
            st["snap_while_unsynced"] += 1
            held = None
        if became is not None:
            if became:
                sync_start = recv
                if first_synced_ns is None:
                    first_synced_ns = recv
                history.clear()
                history_start = local.engine.local_id
            else:
                intervals.append((sync_start, recv))
                st["snap_not_aligned"] += len(pending_snaps)
                pending_snaps.clear()
                pending_tickers.clear()
            synced = became
        if not synced:
            best = book_id = None
            continue
        book = local.book
        local_id = book_id = local.engine.local_id
        if action is Action.APPLY:
            if len(history) == history.maxlen:
                history_start = history[0][0]
            history.append((local_id, message.bids, message.asks))
        if action is Action.APPLY or action is Action.SYNCED:
            st["valid_books"] += 1
            if book.bids and book.asks:
                bb, bq = book.bids.peekitem(-1)
                ba, aq = book.asks.peekitem(0)
                best = (bb, ba)
                if bb >= ba:
                    st["crossed" if bb > ba else "locked"] += 1
                    if len(crossed_ex) < MAX_EXAMPLES:
                        crossed_ex.append({"seq": seq, "time": when(recv), "update_id": local_id, "best_bid": bb,
                                           "best_ask": ba, "kind": "crossed" if bb > ba else "locked"})
                else:
                    k = buckets.index(recv)
                    mid = (bb + ba) / 2
                    mid_last[k] = mid
                    spread_sum[k] += (ba - bb) / mid * 1e4
                    spread_n[k] += 1
                top = (bb, bq, ba, aq)
            else:
                best = None
                top = (0, 0, 0, 0)
            tops[local_id] = top
            if len(tops) > 4096:
                tops.popitem(last=False)
            if pending_tickers:
                hit = pending_tickers.pop(local_id, None)
                if hit is not None:
                    compare_ticker(local_id, hit[0], hit[1], hit[2])
                for u in [u for u in pending_tickers if u < local_id]:
                    del pending_tickers[u]
                    st["ticker_unmatched"] += 1
        if pending_snaps:
            keep = []
            for L, sseq, srecv, snap in pending_snaps:
                if L > local_id:
                    keep.append((L, sseq, srecv, snap))  # the book has not reached it yet
                    continue
                # Binance: the snapshot at L holds every update <= L; the diff straddling L (spot U <= L < u,
                # futures U <= L <= u) and later ones may be either side of it: their levels are left out.
                if L < history_start or (futures and L == history_start):
                    st["snap_not_aligned"] += 1  # older than what the validator remembers of the book
                    continue
                bids_out: set = set()
                asks_out: set = set()
                for u, dbids, dasks in reversed(history):
                    if u < L or (u == L and not futures):
                        break
                    bids_out.update(p for p, _ in dbids)
                    asks_out.update(p for p, _ in dasks)
                mism, compared, skipped, diffs = _compare_snapshot(book, snap.bids, snap.asks, known,
                                                                   (bids_out, asks_out))
                st["snap_compared"] += 1
                st["snap_levels_compared"] += compared
                st["snap_levels_excluded"] += skipped
                st["snap_mismatch_levels"] += mism
                if mism and len(snap_ex) < MAX_EXAMPLES:
                    snap_ex.append({"last_update_id": L, "seq": sseq, "time": when(srecv), "book_update_id": local_id,
                                    "mismatched_levels": mism, "levels_compared": compared,
                                    "levels_excluded": skipped, "differences": diffs})
            pending_snaps[:] = keep
    flush_buffers()
    if synced and sync_start is not None:
        intervals.append((sync_start, st["last_recv"]))
    st["snap_not_aligned"] += len(pending_snaps)
    st["snap_while_unsynced"] += held is not None
    st["ticker_unmatched"] += len(pending_tickers)
    if tickers is not None:
        feed_tickers(math.inf, None)
    if trades is not None:
        best = None
        feed_trades(math.inf)
    return dict(stats=st, gaps=gaps, breaks=breaks, crossed_ex=crossed_ex, snap_ex=snap_ex, ticker_ex=ticker_ex,  # noqa: C408
                trade_ex=trade_ex, tick_ex=tick_ex, intervals=intervals, first_synced_ns=first_synced_ns,
                hist=hist, depth_per_bucket=depth_per_bucket, mid_last=mid_last, spread_sum=spread_sum,
                spread_n=spread_n)


def _snapshot_limit(snapshot) -> int | None:
    return getattr(snapshot, "requested_limit", None)


def _off_grid(paths: list[Path], tick: int | None, step: int | None) -> tuple[int, int, list]:
    """Depth/snapshot levels whose price is off tickSize or quantity off stepSize (vectorised)."""
    off_tick = off_step = 0
    examples: list = []
    if not tick and not step:
        return 0, 0, []
    for batch in _batches(paths, ["seq", "recv_ts", "price", "qty"]):
        valid = batch.column("price").is_valid().to_numpy(zero_copy_only=False)
        price, qty = _units64(batch.column("price")), _units64(batch.column("qty"))
        bad_p = (price % tick != 0) & valid if tick else np.zeros(len(price), bool)
        bad_q = (qty % step != 0) & valid if step else np.zeros(len(qty), bool)
        off_tick += int(bad_p.sum())
        off_step += int(bad_q.sum())
        for k in np.flatnonzero(bad_p | bad_q)[: MAX_EXAMPLES - len(examples)].tolist():
            examples.append({"seq": int(batch.column("seq")[k].as_py()), "time": when(batch.column("recv_ts")[k].as_py()),
                             "price": int(price[k]), "qty": int(qty[k]), "tick_size": tick, "step_size": step})
    return off_tick, off_step, examples


def instrument_steps(root: Path, exchange: str, date: dt.date, symbol: str) -> tuple[int | None, int | None]:
    """(tick size, step size) in 1e-8 units from the day's instruments table; None where unknown."""
    if not _files(root, exchange, "instruments", date, symbol):
        return None, None
    table = read_table(root, exchange, "instruments", date=date, symbols=[symbol], columns=["tick_size", "step_size"])
    if not table.num_rows:
        return None, None
    tick, step = decimal_units(table.column("tick_size"))[-1], decimal_units(table.column("step_size"))[-1]
    return tick or None, step or None


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _depth_span(paths: list[Path]) -> tuple[int, int]:
    lo, hi = math.inf, -math.inf
    for path in paths:
        meta = pq.read_metadata(path)
        index = meta.schema.names.index("recv_ts")
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(index).statistics
            if stats is not None and stats.has_min_max:
                lo, hi = min(lo, stats.min), max(hi, stats.max)
    if lo is math.inf:
        raise DatasetError(paths[0] if paths else Path("."), "no recv_ts statistics in depth files")
    return int(lo), int(hi)


# ---- channel coverage -----------------------------------------------------------------------------------


def subscribed_channels(connection_rows: list) -> set[str] | None:
    """Channels the recorder subscribed (`channels` of its window_start events); None when no event says."""
    lists = [d["channels"] for _, _, k, d in connection_rows if k == "window_start" and isinstance(d.get("channels"), list)]
    return None if not lists else {c for channels in lists for c in channels}


def _event_silences(events: Events, end: int) -> dict[str, list[tuple[int, int]]]:
    """Silent spans per channel from the watchdog's stream_silent / stream_resumed events.

    A span still open ends with its recording run (the next window_end event), else at `end`."""
    run_ends = sorted((seq, ts) for seq, ts, kind, _ in events.connection_rows if kind == "window_end")
    spans: dict[str, list[tuple[int, int]]] = {}
    open_since: dict[str, tuple[int, int]] = {}  # channel -> (seq, silent_since)

    def close_before(seq: int) -> None:
        for channel, (opened, since) in list(open_since.items()):
            ended = next((ts for s, ts in run_ends if opened < s < seq), None)
            if ended is not None:
                spans.setdefault(channel, []).append((since, max(ended, since)))
                del open_since[channel]

    for seq, ts, kind, detail in events.symbol_rows:
        close_before(seq)
        channel = detail.get("channel")
        if kind == "stream_silent" and channel not in open_since:
            open_since[channel] = (seq, int(detail.get("silent_since", ts)))
        elif kind == "stream_resumed" and channel in open_since:
            spans.setdefault(channel, []).append((open_since.pop(channel)[1], int(detail.get("resumed_at", ts))))
    close_before(2**63 - 1)
    for channel, (_, since) in open_since.items():
        spans.setdefault(channel, []).append((since, max(end, since)))
    return spans


def _data_silences(paths: list[Path], start: int, end: int, threshold_ns: int) -> list[tuple[int, int]]:
    """Spans over `threshold_ns` without a row of this table within [start, end], edges included."""
    spans, previous = [], start
    for batch in _batches(paths, ["recv_ts"]):
        recv = batch.column("recv_ts").to_numpy()
        if not len(recv):
            continue
        steps = np.diff(np.r_[[previous], recv])
        for k in np.flatnonzero(steps > threshold_ns).tolist():
            spans.append((int(previous if k == 0 else recv[k - 1]), int(recv[k])))
        previous = max(previous, int(recv[-1]))
    if end - previous > threshold_ns:
        spans.append((previous, end))
    return spans


def _channels_check(paths: dict[str, list[Path]], events: Events, first: int, last: int,
                    silent_after_s: Mapping[str, float], thresholds: Thresholds) -> dict:
    """Every channel subscribed (per the window_start events) or present in the day delivers over the day.

    A channel subscribed but without a row fails; so does one silent (watchdog events, or for days without
    them, gaps in its rows longer than the watchdog's threshold) for over `max_silent_fraction` of the
    recorded span; shorter silences warn. An imported day expects only the channels its capture holds.
    """
    subscribed = subscribed_channels(events.connection_rows)
    present = {c for c in CHANNELS if paths[CHANNEL_TABLES[c]]}
    expected = [c for c in CHANNELS if c in present or subscribed and c in subscribed]
    span_ns = max(last - first, 1)
    silences = _event_silences(events, last) if subscribed is not None else {
        c: _data_silences(paths[CHANNEL_TABLES[c]], first, last, int(silent_after_s[c] * NS)) for c in present}
    status, examples, per_channel = "pass", [], {}
    for channel in expected:
        absent = channel not in present
        spans = silences.get(channel) or ([(first, last)] if absent else [])
        silent_ns = sum(b - a for a, b in spans)
        if absent or silent_ns / span_ns > thresholds.max_silent_fraction:
            status = "fail"
        elif spans:
            status = _worst(status, "warn")
        per_channel[channel] = {"rows": not absent, "silent_spans": len(spans),
                                "silent_seconds": round(silent_ns / NS, 3),
                                "silent_fraction": round(min(silent_ns / span_ns, 1.0), 6)}
        examples += [{"channel": channel, "start": when(a), "end": when(b), "seconds": round((b - a) / NS, 3)}
                     for a, b in spans]
    failing = [c for c in expected if c not in present or per_channel[c]["silent_fraction"] > thresholds.max_silent_fraction]
    summary = f"{len(expected)} channel(s): {', '.join(expected)}"
    if failing:
        summary += "; silent: " + ", ".join(
            f"{c} (no data)" if c not in present else f"{c} ({per_channel[c]['silent_seconds']:g} s)" for c in failing)
    elif examples:
        summary += f"; {len(examples)} silent span(s)"
    notes = [] if subscribed is not None else [
        ("no subscription recorded (an import or an older recording): the channels present are expected, silences "
         "are gaps in their rows longer than the watchdog threshold")]
    figures = {"subscribed": None if subscribed is None else [c for c in CHANNELS if c in subscribed],
               "present": [c for c in CHANNELS if c in present], "expected": expected,
               "silences_from": "events" if subscribed is not None else "data", "channels": per_channel}
    examples.sort(key=lambda e: -e["seconds"])
    return _check(status, summary, figures, examples[:MAX_EXAMPLES], notes)


# ---- one symbol -----------------------------------------------------------------------------------------


def validate_symbol(root: Path, market: Market, date: dt.date, symbol: str, thresholds: Thresholds,
                    window: TradingWindow, connection_rows: list,
                    silent_after_s: Mapping[str, float] = DEFAULT_SILENT_AFTER_S) -> tuple[dict, int]:
    exchange = market.exchange
    files_check, paths = _files_check(root, exchange, date, symbol)
    if not paths["depth"]:
        raise DatasetError(root / exchange / "depth", f"no depth data for {symbol} on {date}")
    events = Events(_load_events(root, exchange, date, symbol), connection_rows)
    missing = files_check["figures"]["missing_tables"]
    if missing:
        # a channel not recorded is no fault of the files (its check skips or warns itself); a live recording
        # always writes snapshots, events and instruments, an import only what the capture holds
        files_check["notes"].append(f"absent: {', '.join(missing)} (channel not recorded or not in the capture)")
        always = [t for t in ("snapshots", "events", "instruments") if t in missing]
        if always and not events.is_import():
            files_check["status"] = _worst(files_check["status"], "warn")
            files_check["notes"].append(f"a live recording always writes {', '.join(always)}")
    w0, w1 = window.bounds_for(date)
    d0, d1 = _depth_span(paths["depth"])
    inside = _overlap(d0, d1 + 1, w0, w1) / max(d1 + 1 - d0, 1)
    imported = events.is_import() or events.ignored_window() or inside < 0.5
    t0, t1 = (d0, d1 + 1) if imported else (min(w0, d0), max(w1, d1 + 1))
    buckets = Buckets(t0, t1)
    tick, step = instrument_steps(root, exchange, date, symbol)
    checks: dict[str, dict] = {}
    rows = sum(t["rows"] for t in files_check["figures"]["tables"].values())

    p = _symbol_pass(root, market, date, symbol, paths, events, thresholds, buckets, tick, step)
    st = p["stats"]
    first, last = st["first_recv"], st["last_recv"]
    span_ns = max(last - first, 1)

    # 1. coverage
    intervals = p["intervals"]
    synced_ns = sum(b - a for a, b in intervals)
    startup_ns = (p["first_synced_ns"] - first) if p["first_synced_ns"] is not None else span_ns
    grace_ns = min(startup_ns, int(thresholds.sync_grace_seconds * NS))
    synced_fraction = min(1.0, synced_ns / max(span_ns - grace_ns, 1))
    window_ns = w1 - w0
    covered_ns = _overlap(first, last, w0, w1)
    window_coverage = covered_ns / window_ns
    ev_synced_ns = _event_synced_ns(events.symbol_rows, first, last)
    reasons = Counter(d.get("reason", "?") for _, _, k, d in events.symbol_rows if k == "need_snapshot")
    conn = Counter(k for _, _, k, _ in events.connection_rows)
    longest_gap = max((g["seconds"] for g in p["gaps"]), default=0.0)
    status = "pass"
    notes = []
    if synced_fraction < thresholds.min_synced_fraction:
        status = "fail"
    elif synced_fraction < thresholds.warn_synced_fraction or p["gaps"]:
        status = "warn"
    if imported:
        notes.append("imported, off-window or --ignore-window data: window coverage reported, not judged")
    else:
        if window_coverage < thresholds.min_window_coverage:
            status = "fail"
        if longest_gap > thresholds.max_gap_fail_seconds:
            status = "fail"
    unsynced_list = _complement(intervals, first, last)
    checks["coverage"] = _check(
        status,
        f"synced {synced_fraction:.1%} of {span_ns / NS:,.1f} s, window {window_coverage:.1%}, "
        f"{len(p['gaps'])} gap(s) > {thresholds.max_gap_seconds:g} s, {conn.get('disconnect', 0)} disconnect(s)",
        {"first_recv": when(first), "last_recv": when(last), "recorded_seconds": round(span_ns / NS, 3),
         "window_start": when(w0), "window_end": when(w1), "window_seconds": window_ns / NS,
         "window_coverage": round(window_coverage, 6), "inside_window_fraction": round(inside, 6),
         "imported_or_off_window": imported, "synced_seconds": round(synced_ns / NS, 3),
         "synced_seconds_from_events": round(ev_synced_ns / NS, 3),
         "unsynced_seconds": round((span_ns - synced_ns) / NS, 3), "startup_seconds": round(startup_ns / NS, 3),
         "synced_fraction": round(synced_fraction, 6), "sync_intervals": len(intervals),
         "gaps": len(p["gaps"]), "longest_gap_seconds": longest_gap,
         "disconnects": conn.get("disconnect", 0), "connects": conn.get("connect", 0),
         "rollovers": conn.get("rollover", 0), "need_snapshot_reasons": dict(reasons),
         "events": dict(events.kinds)},
        sorted(p["gaps"], key=lambda g: -g["seconds"])[:MAX_EXAMPLES]
        + [{"unsynced": True, "start": when(a), "end": when(b), "seconds": round((b - a) / NS, 3)}
           for a, b in sorted(unsynced_list, key=lambda x: x[0] - x[1])[:MAX_EXAMPLES]],
        notes)

    checks["channels"] = _channels_check(paths, events, first, last, silent_after_s, thresholds)

    # 2. continuity
    breaks = p["breaks"]
    unexplained = [b for b in breaks if not b["explained"]]
    status = "fail" if len(unexplained) > thresholds.max_unexplained_breaks else ("warn" if breaks else "pass")
    checks["continuity"] = _check(
        status,
        f"{st['diffs']:,} diffs, {len(breaks)} break(s), {len(unexplained)} unexplained",
        {"rule": "pu == prev u" if market.sequence_rule is SequenceRule.FUTURES else "U == prev u + 1",
         "diffs": st["diffs"], "levels": st["levels"], "breaks": len(breaks), "explained_breaks": len(breaks) - len(unexplained),
         "unexplained_breaks": len(unexplained), "non_advancing_diffs": st["non_advancing"],
         "gap_events": events.kinds.get("gap", 0), "resyncs": reasons.get("gap", 0)},
        (unexplained + [b for b in breaks if b["explained"]])[:MAX_EXAMPLES])

    # 3. snapshots
    stale = max(st["snap_stale"], events.kinds.get("snapshot_stale", 0))
    if not paths["snapshots"]:
        checks["snapshots"] = _check("fail", "no snapshots: the book is never valid", {"snapshots": 0})
    else:
        notes = []
        status = "fail" if st["snap_mismatch_levels"] > thresholds.max_snapshot_mismatch_levels else "pass"
        if st["snap_compared"] == 0:
            if st["snapshots"] == st["snap_used_for_sync"]:
                notes.append("only the sync snapshot(s); nothing to compare")
            else:
                notes.append("no snapshot could be compared with the rebuilt book (none arrived while it was "
                             "synced, or the book never reached their lastUpdateId)")
        if st["snap_not_aligned"]:
            notes.append(f"{st['snap_not_aligned']} snapshot(s) arriving while synced not comparable: older than "
                         "the sync / remembered diffs, or a resync before the book reached their lastUpdateId")
        if stale:
            notes.append(f"{stale} stale snapshot(s) (older than the buffered diffs): the exchange's timing, "
                         "refetched by the engine; not a fault of the day")
        checks["snapshots"] = _check(
            status,
            f"{st['snap_compared']} compared, {st['snap_mismatch_levels']} level mismatch(es), "
            f"{st['snap_used_for_sync']} used to sync, {stale} stale",
            {"snapshots": st["snapshots"], "compared": st["snap_compared"],
             "levels_compared": st["snap_levels_compared"], "levels_excluded": st["snap_levels_excluded"],
             "mismatched_levels": st["snap_mismatch_levels"],
             "used_for_sync": st["snap_used_for_sync"], "stale": st["snap_stale"],
             "stale_events": events.kinds.get("snapshot_stale", 0), "not_aligned": st["snap_not_aligned"],
             "while_unsynced": st["snap_while_unsynced"]},
            p["snap_ex"], notes)

    # 4. book sanity
    off_tick, off_step, tick_ex = _off_grid(paths["depth"] + paths["snapshots"], tick, step)
    bad = st["crossed"] + st["locked"]
    sanity_notes = [] if tick is not None else ["no instruments row: tick/step not checked"]
    off_grid = off_tick + off_step > thresholds.max_off_tick_levels
    status = "fail" if bad > thresholds.max_crossed_books or off_grid else "pass"
    if off_grid and bad <= thresholds.max_crossed_books and events.is_import():
        # an import's exchangeInfo is whatever the capture tool saved, maybe from another day; a tickSize raised
        # since leaves resting orders on the old, finer grid (real levels, not a fault of the rebuild)
        status = "warn"
        sanity_notes.append("imported: levels off the exchangeInfo grid only warn (its tick/step may date from "
                            "another time; orders resting from before a tick change keep their prices)")
    if status == "pass" and tick is None:
        status = "warn"
    checks["book_sanity"] = _check(
        status,
        f"{st['valid_books']:,} valid books, {st['crossed']} crossed, {st['locked']} locked, "
        f"{off_tick} off tick, {off_step} off step",
        {"valid_books": st["valid_books"], "crossed": st["crossed"], "locked": st["locked"],
         "off_tick_levels": off_tick, "off_step_levels": off_step, "tick_size": tick, "step_size": step},
        p["crossed_ex"] + tick_ex, sanity_notes)

    # 5. book ticker
    if not paths["book_ticker"]:
        checks["book_ticker"] = _check("skip", "no bookTicker data", {"rows": 0})
    else:
        agreement = st["ticker_agreed"] / st["ticker_compared"] if st["ticker_compared"] else None
        disagreed = st["ticker_compared"] - st["ticker_agreed"]
        # Binance's own bookTicker sometimes shows a different touch quantity than its depth stream at the
        # same u (seen in real COIN-M captures): only a disagreement in price can fail the day
        price_agreement = (st["ticker_agreed"] + st["ticker_qty_only"]) / st["ticker_compared"] \
            if st["ticker_compared"] else None
        if agreement is None or agreement < thresholds.min_book_ticker_agreement:
            status = "fail" if price_agreement is not None and \
                price_agreement < thresholds.fail_book_ticker_agreement else "warn"
        else:
            status = "pass"
        checks["book_ticker"] = _check(
            status,
            f"{st['ticker_compared']:,} compared at equal update id, agreement "
            + ("n/a" if agreement is None else f"{agreement:.2%}")
            + (f", {disagreed} disagree ({st['ticker_qty_only']} quantity only)" if disagreed else ""),
            {"rows": st["ticker_rows"], "compared": st["ticker_compared"], "agreed": st["ticker_agreed"],
             "agreement": _r(agreement), "disagreed": disagreed, "quantity_only": st["ticker_qty_only"],
             "unmatched": st["ticker_unmatched"]},
            p["ticker_ex"])

    # 6. trades (+ 7. time figures from the same streams)
    hist_other = LatencyHistogram()
    conn_seqs = events.connection_seqs()
    trades_stats = agg_stats = ticker_stats = None
    if paths["trades"]:
        trades_stats = _table_stats(paths["trades"], ["seq", "recv_ts", "event_ts", "trade_ts", "trade_id"], buckets,
                                    hist_other, ("trade_id",), conn_seqs)
    if paths["agg_trades"]:
        agg_stats = _table_stats(paths["agg_trades"], ["seq", "recv_ts", "event_ts", "trade_ts", "agg_trade_id",
                                                       "first_trade_id", "last_trade_id"], buckets, hist_other,
                                 ("agg_trade_id", "first_trade_id", "last_trade_id"), conn_seqs)
    if paths["book_ticker"]:
        ticker_stats = _table_stats(paths["book_ticker"], ["seq", "recv_ts", "event_ts", "transact_ts"], buckets,
                                    hist_other, (), conn_seqs)
    if trades_stats is None:
        checks["trades"] = _check("skip", "no trades data", {"rows": 0})
    else:
        ids = trades_stats["ids"]
        outlier_fraction = st["trade_outliers"] / st["trades_vs_book"] if st["trades_vs_book"] else 0.0
        agg_ids = agg_stats["ids"] if agg_stats else {}
        status = "pass"
        if (ids["missing_ids"] > thresholds.max_missing_trade_ids or ids["duplicate_ids"] > thresholds.max_duplicate_trade_ids
                or outlier_fraction > thresholds.max_trade_outlier_fraction):
            status = "fail"
        elif ids["missing_ids_at_disconnects"] or st["trade_outliers"] or agg_ids.get("trade_range_breaks"):
            status = "warn"
        checks["trades"] = _check(
            status,
            f"{trades_stats['rows']:,} trades, {ids['missing_ids']} missing id(s) "
            f"(+{ids['missing_ids_at_disconnects']} at disconnects), {ids['duplicate_ids']} duplicate(s), "
            f"{st['trade_outliers']} outside book > {thresholds.max_trade_price_deviation_bps:g} bps",
            {"rows": trades_stats["rows"], **ids, "checked_against_book": st["trades_vs_book"],
             "while_unsynced": st["trades_unsynced"], "outliers": st["trade_outliers"],
             "outlier_fraction": _r(outlier_fraction), "max_deviation_bps": round(st["max_trade_dev_bps"], 3),
             "agg_trades": {"rows": agg_stats["rows"], **agg_ids} if agg_stats else None},
            p["trade_ex"] + trades_stats["examples"] + (agg_stats["examples"] if agg_stats else []))

    # 7. time
    dh = p["hist"]
    depth_lat = dh.figures()
    offset = depth_lat["p50_ms"]
    p99_excess = None if depth_lat["p99_ms"] is None else depth_lat["p99_ms"] - depth_lat["min_ms"]
    inversions = st["t_after_e"] + sum(s["event_time_inversions"] for s in (trades_stats, agg_stats, ticker_stats) if s)
    late = dh.count_above(depth_lat["min_ms"] + thresholds.max_latency_p99_ms) if dh.n else 0
    time_notes = []
    status = "pass"
    if p99_excess is not None and p99_excess > thresholds.max_latency_p99_ms:
        if events.is_import():
            # the capture tool stamped its own receive times, after processing: frames queued while its loop
            # was blocked (e.g. a synchronous REST snapshot) come out as a burst with late stamps
            status = "warn"
            time_notes.append("imported: latency judged by the capture tool's receive stamps, which lag when its "
                              "loop blocks (bursts of late frames); warn only")
        else:
            status = "fail"
    if st["recv_backsteps"] > thresholds.max_recv_ts_backsteps:
        time_notes.append(f"{st['recv_backsteps']} recv_ts backstep(s) (the local clock stepped back), more than "
                          f"{thresholds.max_recv_ts_backsteps} allowed")
    if inversions:
        time_notes.append(f"{inversions} message(s) with transaction time T after event time E")
    if offset is not None and offset < 0:
        time_notes.append(f"negative feed latency (median recv - E {offset:g} ms): the local clock is behind the "
                          f"exchange's by at least {-offset:g} ms; sync it (NTP/chrony) - latencies here are shifted by it")
    if offset is not None and abs(offset) > thresholds.max_clock_offset_ms:
        time_notes.append(f"clock offset estimate {offset} ms exceeds {thresholds.max_clock_offset_ms:g} ms")
    if status == "pass" and (st["recv_backsteps"] > thresholds.max_recv_ts_backsteps or inversions
                             or (offset is not None and abs(offset) > thresholds.max_clock_offset_ms)):
        status = "warn"
    checks["time"] = _check(
        status,
        f"latency p50 {depth_lat['p50_ms']} ms, p99 {depth_lat['p99_ms']} ms, max {depth_lat['max_ms']} ms "
        f"(jitter p99 {p99_excess} ms, {late} late diff(s)), "
        f"{st['recv_backsteps']} recv_ts backstep(s), {inversions} E/T inversion(s)",
        {"depth_latency_ms": depth_lat, "other_latency_ms": hist_other.figures(),
         "latency_p99_above_min_ms": p99_excess, "late_depth_messages": late,
         "clock_offset_estimate_ms": offset,
         "clock_offset_note": "median recv - E; negative means the local clock is behind the exchange",
         "recv_ts_backsteps": st["recv_backsteps"], "max_recv_ts_backstep_ms": st["max_backstep_ns"] / MS,
         "event_time_backsteps": st["e_backsteps"] + sum(s["event_time_backsteps"] for s in (trades_stats, agg_stats, ticker_stats) if s),
         "transact_after_event": inversions}, notes=time_notes)

    checks["files"] = files_check

    series = {
        "t0_ns": buckets.t0, "bucket_seconds": buckets.seconds, "n": buckets.n,
        "depth_msgs": p["depth_per_bucket"].tolist(),
        "trades": trades_stats["per_bucket"].tolist() if trades_stats else [0] * buckets.n,
        "book_ticker": ticker_stats["per_bucket"].tolist() if ticker_stats else [0] * buckets.n,
        "synced_fraction": buckets.coverage(intervals),
        "recorded_fraction": buckets.coverage([(first, last)]),
        "mid": [None if m is None else round(m / 1e8, 8) for m in p["mid_last"]],
        "spread_bps": [round(float(s / n), 4) if n else None for s, n in zip(p["spread_sum"], p["spread_n"])],
        "gaps": [[g["start"]["ns"], g["end"]["ns"]] for g in p["gaps"]][:500],
        "breaks": [[b["time"]["ns"], b["explained"]] for b in breaks][:500],
        "disconnects": [ts for _, ts, k, _ in events.connection_rows if k == "disconnect"][:500],
        "unsynced": [[a, b] for a, b in unsynced_list][:1000],
        "window": [w0, w1],
        "latency_hist": dh.compact(),
    }
    status = _worst(*(c["status"] for c in checks.values()))
    return {"status": status, "checks": {name: checks[name] for name in CHECKS}, "series": series}, rows


def _complement(intervals: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    out, cursor = [], start
    for a, b in intervals:
        if a > cursor:
            out.append((cursor, a))
        cursor = max(cursor, b)
    if end > cursor:
        out.append((cursor, end))
    return out


def _event_synced_ns(rows: list, first: int, last: int) -> int:
    total, since = 0, None
    for _, ts, kind, _ in rows:
        if kind == "synced" and since is None:
            since = ts
        elif kind == "need_snapshot" and since is not None:
            total += _overlap(since, ts, first, last)
            since = None
    if since is not None:
        total += _overlap(since, last, first, last)
    return total


# ---- a symbol without data ------------------------------------------------------------------------------


def explain_no_data(symbol_rows: list, connection_rows: list) -> tuple[str, dict]:
    """Why a symbol has no depth data, from the run's events: never connected, no snapshot, never synced."""
    conn = Counter(kind for _, _, kind, _ in connection_rows)
    own = Counter(kind for _, _, kind, _ in symbol_rows)

    def last(rows: list, kind: str, key: str) -> str | None:
        found = [str(d[key]) for _, _, k, d in rows if k == kind and key in d]
        return found[-1][:200] if found else None

    reasons = []
    if not conn["connect"]:
        failed = last(connection_rows, "disconnect", "reason")
        reasons.append(f"never connected ({conn['disconnect']} failed attempt(s)"
                       f"{f', last: {failed}' if failed else ''})")
    else:
        reasons.append(f"connected {conn['connect']} time(s) but no depth diff arrived")
    exchange_info = last(connection_rows, "error", "exchange_info")
    if exchange_info:
        reasons.append(f"exchangeInfo failed: {exchange_info}")
    if not own["snapshot_requested"]:
        reasons.append("no snapshot (none requested: no live stream)")
    else:
        rest = last(symbol_rows, "error", "rest")
        reasons.append(f"no usable snapshot ({own['snapshot_requested']} requested"
                       f"{f', last error: {rest}' if rest else ''})")
    if not own["synced"]:
        reasons.append("never synced")
    figures = {"connects": conn["connect"], "failed_connects": conn["disconnect"],
               "snapshots_requested": own["snapshot_requested"], "synced_events": own["synced"],
               "events": dict(own), "connection_events": dict(conn)}
    return "; ".join(reasons), figures


def no_data_result(reason: str, figures: dict) -> dict:
    """A symbol's result when it has no depth data: coverage fails with the reason, the rest is skipped."""
    checks = {name: _check("skip", "no data", {}) for name in CHECKS}
    checks["coverage"] = _check("fail", f"no depth data: {reason}", figures)
    return {"status": "fail", "checks": checks, "no_data": reason}


# ---- the day ----------------------------------------------------------------------------------------------


def validate_day(root: str | Path, market: str | Market, date: str | dt.date, symbols: Sequence[str] | None = None,
                 thresholds: Thresholds = Thresholds(), window: TradingWindow | None = None,
                 silent_after_s: Mapping[str, float] = DEFAULT_SILENT_AFTER_S, report_missing: bool = False) -> dict:
    """Validate one recorded Berlin day; the JSON report (see docs/validation.md). DatasetError when unreadable.

    A symbol (or the whole day) without depth data is a DatasetError, unless `report_missing` (the end of
    `recorder run`, which knows its symbols): then it fails in the report, with the reason from the events.
    """
    started = time.perf_counter()
    root = Path(root)
    market = get_market(market) if isinstance(market, str) else market
    day = parse_date(date)
    window = window or TradingWindow(dt.time(8), dt.time(22))
    exchange = market.exchange
    have = available(root).get(exchange, {}).get("depth", {})
    if day not in have and not (report_missing and symbols):
        days = ", ".join(str(d) for d in sorted(have)) or "none"
        raise DatasetError(root / exchange / "depth", f"no depth data for {day}; available dates: {days}")
    symbols = list(symbols) if symbols else sorted(have[day])
    missing = [s for s in symbols if s not in have.get(day, ())]
    if missing and not report_missing:
        raise DatasetError(root / exchange / "depth" / f"date={day}",
                           f"no depth data for {', '.join(missing)}; available: {', '.join(have[day])}")
    connection_rows = _load_events(root, exchange, day, None)
    for path in _files(root, exchange, "events", day, None):
        check_file(path, table="events", exchange=exchange)
    per_symbol, rows = {}, 0
    for symbol in symbols:
        if symbol in missing:
            per_symbol[symbol] = no_data_result(*explain_no_data(_load_events(root, exchange, day, symbol),
                                                                 connection_rows))
            continue
        per_symbol[symbol], n = validate_symbol(root, market, day, symbol, thresholds, window, connection_rows,
                                                silent_after_s)
        rows += n
    status = _worst(*(s["status"] for s in per_symbol.values()))
    elapsed = time.perf_counter() - started
    conn = Counter(k for _, _, k, _ in connection_rows)
    return {
        "report_version": REPORT_VERSION,
        "generated_at": when(time.time_ns()),
        "root": str(root),
        "market": market.name,
        "exchange": exchange,
        "date": day.isoformat(),
        "window": {"start": when(window.bounds_for(day)[0]), "end": when(window.bounds_for(day)[1]),
                   "local": f"{window.start:%H:%M}-{window.end:%H:%M}", "timezone": window.tz},
        "status": status,
        "exit_code": 1 if status == "fail" else 0,
        "thresholds": asdict(thresholds),
        "connection": {"events": dict(conn), "disconnects": conn.get("disconnect", 0),
                       "connects": conn.get("connect", 0), "rollovers": conn.get("rollover", 0)},
        "symbols": per_symbol,
        "rows": rows,
        "elapsed_seconds": round(elapsed, 3),
        "rows_per_second": round(rows / elapsed) if elapsed > 0 else None,
    }


# ---- terminal -------------------------------------------------------------------------------------------

STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def print_report(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]recorder validate[/] {report['exchange']} {report['date']} "
                  f"(window {report['window']['local']} {report['window']['timezone']})")
    for symbol, result in report["symbols"].items():
        table = Table(title=f"{symbol}: [{STATUS_STYLE[result['status']]}]{result['status'].upper()}[/]",
                      title_justify="left", show_lines=False)
        table.add_column("check")
        table.add_column("status")
        table.add_column("key figure", overflow="fold")
        for name, check in result["checks"].items():
            style = STATUS_STYLE[check["status"]]
            table.add_row(name, f"[{style}]{check['status']}[/]", check["summary"])
        console.print(table)
        for name, check in result["checks"].items():  # why a check is not a plain pass, in words
            notes = check["notes"] or ([] if check["status"] in ("pass", "skip") else
                                       ["a figure above is past its threshold (see the JSON report's figures)"])
            for note in notes:
                console.print(f"  {name}: [{STATUS_STYLE[check['status']]}]{check['status']}[/] - {note}",
                              highlight=False)
    style = STATUS_STYLE[report["status"]]
    console.print(f"[{style}]{report['status'].upper()}[/] {len(report['symbols'])} symbol(s), "
                  f"{report['rows']:,} rows in {report['elapsed_seconds']:.1f} s "
                  f"({report['rows_per_second'] or 0:,} rows/s)")


# ---- command line ---------------------------------------------------------------------------------------


def resolve_date(text: str, now: dt.datetime | None = None) -> dt.date:
    """'today' / 'yesterday' in Berlin, '20240501' or '2024-05-01'."""
    key = text.strip().lower()
    if key in ("today", "yesterday"):
        today = (now or dt.datetime.now(tz=BERLIN)).astimezone(BERLIN).date()
        return today if key == "today" else today - dt.timedelta(days=1)
    return parse_date(text)


def validate_command(
    date: Annotated[str, typer.Option("--date", help="Berlin date: 20240501, 2024-05-01, today, yesterday.")],
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset root (default: the config's `out` via $CONFIG_PATH, else ./data).")] = None,
    market: Annotated[str | None, typer.Option("--market", help="spot | usdm | coinm")] = None,
    symbols: Annotated[str | None, typer.Option("--symbols", help="Comma-separated (default: all in the data).")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write the HTML report here.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML config (thresholds under `validate:`).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Validate a recorded day: coverage, continuity, snapshots, book, bookTicker, trades, time, files.

    Exit code: 0 every check within its threshold, 1 a check failed, 2 bad usage or unreadable data.
    """
    from recorder.config import ConfigError, load_config

    def fail(message: str, code: int = 2):
        if debug:
            import traceback

            traceback.print_exc()
        typer.echo(f"recorder: error: {message}", err=True)
        return typer.Exit(code)

    try:
        day = resolve_date(date)
        cfg = load_config(config, {"market": market, "out": data})
        thresholds = Thresholds.from_mapping(cfg.validate)
        window = TradingWindow(cfg.window.start, cfg.window.end, cfg.window.timezone)
        wanted = None if symbols is None else [s.strip().upper() for s in symbols.split(",") if s.strip()]
        report = validate_day(cfg.out, cfg.market, day, wanted, thresholds, window, cfg.watchdog.silent_after_s)
    except (ConfigError, ValueError, TypeError) as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    except DatasetError as exc:
        raise fail(str(exc)) from None
    except (OSError, pa.ArrowException) as exc:
        raise fail(f"unreadable data: {exc}".splitlines()[0]) from None
    print_report(report)
    try:
        if json_path is not None:
            json_path.write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
        if html is not None:
            from recorder.report_html import render_html

            html.write_text(render_html(report), encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write report: {exc}") from None
    raise typer.Exit(report["exit_code"])


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
