"""`recorder import`: captures -> dataset through the live recorder's pipeline and sync engine.

Synthetic tests always run. The real-data tests import every session of ../shared/realdata (read-only,
never copied into the repo) and skip cleanly when that directory is absent.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from recorder.captures import CaptureSession, sessions_in_realdata
from recorder.importer import ImportResult, detect_market, import_captures, import_command, import_shard_tag
from recorder.markets import get_market
from recorder.protocol import AggTrade, BookTicker, DepthUpdate, Trade, parse_frame, parse_snapshot
from recorder.rebuild import rebuild
from recorder.sync import Action, LocalBook
from schemas import EVENT_KINDS, berlin_date, list_files, read_table

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
SESSIONS = sessions_in_realdata(REALDATA) if REALDATA.is_dir() else []
TABLE_OF = {DepthUpdate: "depth", Trade: "trades", AggTrade: "agg_trades", BookTicker: "book_ticker"}


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("import")(import_command)

    @app.command("noop")  # a second command, so "import" is a subcommand as in recorder.cli
    def noop() -> None:
        pass

    return app


def _invoke(*args: str):
    return CliRunner().invoke(_app(), ["import", *map(str, args)])


def _tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


# ---- synthetic captures ---------------------------------------------------------------------------

T0 = 1_723_161_253_000_000_000  # 2024-08-08 23:54:13 UTC = 2024-08-09 01:54:13 Berlin


def _env(stream: str, data: dict) -> bytes:
    return orjson.dumps({"stream": stream, "data": data})


def _spot_lines(symbol: str = "BTCUSDT", t0: int = T0, n: int = 50) -> list[bytes]:
    """A snapshot at 100, then n chained diffs, a trade and a ticker each, and some kline frames."""
    s = symbol.lower()
    lines = []
    ts = t0
    for i in range(n):
        ts += 10_000_000
        U, u = 101 + 2 * i, 102 + 2 * i
        bid = f"{60000 + i % 5}.00"
        lines.append(b"%d " % ts + _env(f"{s}@depth@100ms", {
            "e": "depthUpdate", "E": ts // 1_000_000, "s": symbol, "U": U, "u": u,
            "b": [[bid, f"{1 + i % 3}.5"]], "a": [[f"{60010 + i % 4}.00", "0.25"]] if i % 7 else []}))
        lines.append(b"%d " % (ts + 1) + _env(f"{s}@trade", {
            "e": "trade", "E": ts // 1_000_000, "s": symbol, "t": 1000 + i, "p": bid, "q": "0.001",
            "T": ts // 1_000_000, "m": bool(i % 2), "M": True}))
        lines.append(b"%d " % (ts + 2) + _env(f"{s}@bookTicker", {
            "u": u, "s": symbol, "b": bid, "B": "1.0", "a": "60010.00", "A": "2.0"}))
        if i % 10 == 0:
            lines.append(b"%d " % (ts + 3) + _env(f"{s}@kline_1m", {"e": "kline", "E": ts // 1_000_000, "s": symbol}))
        if i == 3:  # the snapshot arrives after a few diffs, as in the real captures
            lines.append(b"%d " % (ts + 4) + orjson.dumps({
                "lastUpdateId": 104, "bids": [["59990.00", "3.0"], ["60000.00", "1.0"]],
                "asks": [["60010.00", "1.0"], ["60020.00", "4.0"]]}))
    return lines


def _write_gz(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines))
    return path


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    return _write_gz(tmp_path / "captures" / "spot_btcusdt_20240808.gz", _spot_lines())


def test_synthetic_import_counts_dates_events_and_book(synthetic: Path, tmp_path: Path):
    out = tmp_path / "data"
    result = import_captures([synthetic], get_market("spot"), out)
    day = dt.date(2024, 8, 9)  # 23:54 UTC is already the next Berlin day
    assert result.dates == [day]
    assert result.shard_tag == import_shard_tag([synthetic]) and result.shard_tag.startswith("import-")
    assert result.messages[("depth", day, "BTCUSDT")] == 50
    assert result.messages[("trades", day, "BTCUSDT")] == 50
    assert result.messages[("book_ticker", day, "BTCUSDT")] == 50
    assert result.messages[("snapshots", day, "BTCUSDT")] == 1
    assert result.skipped == Counter({"kline_1m": 5})
    assert result.synced == {"BTCUSDT"}
    assert len(result.sessions) == 1
    assert not (out / ".import-tmp").exists()
    # one compacted day file per partition, named by the import's shard tag
    assert {p.name for p in result.written} == {f"day-{result.shard_tag}.parquet"}
    assert all(p.is_file() and out in p.parents for p in result.written)
    depth = read_table(out, "binance-spot", "depth", date=day, symbols=["BTCUSDT"])
    assert depth.num_rows == result.rows[("depth", day, "BTCUSDT")] == 50 + 50 - 8  # 8 diffs without asks
    events = read_table(out, "binance-spot", "events", date=day).sort_by("seq").to_pylist()
    kinds = [e["kind"] for e in events]
    assert set(kinds) <= set(EVENT_KINDS)
    assert kinds[0] == "window_start" and kinds[-1] == "window_end"
    assert orjson.loads(events[0]["detail"])["import"] == [synthetic.name]
    assert events[0]["ts"] == T0 + 10_000_000  # at the first record
    assert "need_snapshot" in kinds and "synced" in kinds and "gap" not in kinds
    # the book rebuilt from the dataset equals the one rebuilt from the capture
    steps = list(rebuild(out, get_market("spot"), day, "BTCUSDT"))
    assert Action.RESYNC not in {a for *_, a, _ in steps}
    local = LocalBook("spot", "BTCUSDT")
    for line in _spot_lines():
        payload = line.split(b" ", 1)[1]
        if payload.startswith(b'{"lastUpdateId"'):
            local.on_snapshot(parse_snapshot(payload, "BTCUSDT"))
        elif isinstance(message := parse_frame(payload), DepthUpdate):
            local.on_diff(message)
    assert steps[-1][-1].valid_book().export() == local.valid_book().export()


def test_flush_size_does_not_change_the_dataset(synthetic: Path, tmp_path: Path):
    one = import_captures([synthetic], "spot", tmp_path / "one")
    many = import_captures([synthetic], "spot", tmp_path / "many", flush_rows=1)  # a segment per 1024 records
    assert one.messages == many.messages and one.rows == many.rows
    for a, b in zip(sorted(one.written), sorted(many.written)):
        assert pq.read_table(a).equals(pq.read_table(b))


def test_two_symbols_of_one_day_and_reimport(tmp_path: Path):
    btc = _write_gz(tmp_path / "c" / "spot_btcusdt_20240808.gz", _spot_lines("BTCUSDT"))
    eth = _write_gz(tmp_path / "c" / "spot_ethusdt_20240808.gz", _spot_lines("ETHUSDT", T0 + 5))
    out = tmp_path / "data"
    first = import_captures([btc], "spot", out)
    before = _tree_hashes(out)
    second = import_captures([eth], "spot", out)
    assert first.shard_tag != second.shard_tag
    after = _tree_hashes(out)
    assert {k: v for k, v in after.items() if k in before} == before  # the BTCUSDT import is untouched
    assert first.seq_range[1] < second.seq_range[0]  # seq stays unique within the day
    day = dt.date(2024, 8, 9)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert read_table(out, "binance-spot", "trades", date=day, symbols=[symbol]).num_rows == 50
    # the connection-wide events of both imports sit side by side
    assert len(list_files(out, "binance-spot", "events", date=day, symbols=[None])) == 2
    # importing the same file again replaces its own day files instead of adding duplicates
    again = import_captures([btc], "spot", out)
    assert again.shard_tag == first.shard_tag
    assert set(_tree_hashes(out)) == set(after)
    assert read_table(out, "binance-spot", "trades", date=day, symbols=["BTCUSDT"]).num_rows == 50


def test_cli_prints_a_summary(synthetic: Path, tmp_path: Path):
    result = _invoke(synthetic, "--out", tmp_path / "data")  # market from the file name
    assert result.exit_code == 0, result.output
    assert "book_ticker" in result.output and "2024-08-09" in result.output and "rows/s" in result.output
    assert list_files(tmp_path / "data", "binance-spot", "depth")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_bad_input_exits_2_and_leaves_the_dataset_unchanged(damage: str, synthetic: Path, tmp_path: Path):
    out = tmp_path / "data"
    assert _invoke(synthetic, "--out", out).exit_code == 0
    before = _tree_hashes(out)
    lines = _spot_lines(t0=T0 + 60_000_000_000)  # same Berlin day, one minute later
    bad = tmp_path / "bad" / "spot_btcusdt_20240808.gz"
    if damage == "truncated":
        _write_gz(bad, lines * 20)
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) * 2 // 3])
    else:
        lines.insert(40, b"this is not a capture line")
        _write_gz(bad, lines)
    result = _invoke(bad, "--out", out)
    assert result.exit_code == 2
    errors = _error_lines(result)
    assert len(errors) == 1, result.output
    assert errors[0].startswith(f"recorder: error: {bad}:")
    line = int(errors[0].split(f"{bad}:", 1)[1].split(":", 1)[0])
    if damage == "garbage":
        assert line == 41 and "expected" in errors[0]
    else:
        assert line > 1 and "truncated gzip" in errors[0]
    assert _tree_hashes(out) == before  # nothing of the failed import, the earlier day unchanged
    assert not (out / ".import-tmp").exists()


def test_cli_input_errors(synthetic: Path, tmp_path: Path):
    out = tmp_path / "data"
    usdm = _write_gz(tmp_path / "c" / "usdm_btcusdt_20240808.gz", [])
    result = _invoke(synthetic, usdm, "--out", out)
    assert result.exit_code == 2 and "different markets" in result.output
    result = _invoke(synthetic, "--market", "usdm", "--out", out)
    assert result.exit_code == 2 and "file names say spot" in result.output
    unknown = tmp_path / "c" / "capture.txt"
    unknown.write_bytes(b"")
    result = _invoke(unknown, "--out", out)
    assert result.exit_code == 2 and "cannot tell the market" in result.output
    result = _invoke(tmp_path / "missing.gz", "--market", "spot", "--out", out)
    assert result.exit_code == 2 and "no such file" in result.output
    result = _invoke(synthetic)  # --out is required
    assert result.exit_code == 2
    assert not out.exists()


def test_detect_market():
    assert detect_market([Path("cm_btcusd_perp_20240808.gz")]) == "coinm"
    assert detect_market([Path("usdm_btcusdt_20240808.gz"), Path("usdm_ethusdt_20240808.gz")]) == "usdm"
    assert detect_market([Path("BINANCE_US.ws.1.0"), Path("BINANCE.http.0.0")]) == "spot"
    assert detect_market([Path("BINANCE_DELIVERY.ws.7.0@3525dc8c")]) == "coinm"


def test_recorder_cli_import_subcommand(synthetic: Path, tmp_path: Path):
    """Through the installed `recorder` entry point, once recorder/cli.py registers the command."""
    probe = subprocess.run([sys.executable, "-m", "recorder.cli", "import", "--help"], check=False,
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("recorder.cli does not register the import command yet")
    run = subprocess.run([sys.executable, "-m", "recorder.cli", "import", str(synthetic), "--out",
                          str(tmp_path / "data")], check=False, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    bad = tmp_path / "garbage" / "spot_btcusdt_20240808.gz"
    _write_gz(bad, [b"garbage"])
    run = subprocess.run([sys.executable, "-m", "recorder.cli", "import", str(bad), "--out",
                          str(tmp_path / "data")], check=False, capture_output=True, text=True)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith(f"recorder: error: {bad}:1: ")


# ---- real captures ----------------------------------------------------------------------------------


class CaptureFacts:
    """What the capture itself says, read directly: message counts and the book rebuilt from it."""

    def __init__(self, session: CaptureSession) -> None:
        rule = get_market(session.market).sequence_rule
        self.counts: Counter = Counter()  # (table, symbol) -> messages
        self.books: dict[str, LocalBook] = {}
        self.first_ts = self.last_ts = None
        self.exchange_info = 0
        for record in session.records():
            self.first_ts = self.first_ts or record.recv_ts
            self.last_ts = record.recv_ts
            if record.kind == "exchange_info":
                self.exchange_info += 1
            elif record.kind == "rest":
                self.counts[("snapshots", record.symbol)] += 1
                local = self.books.setdefault(record.symbol, LocalBook(rule, record.symbol))
                local.on_snapshot(parse_snapshot(record.payload, record.symbol))
            elif record.kind == "ws":
                message = parse_frame(record.payload)
                table = TABLE_OF.get(type(message))
                if table is not None:
                    self.counts[(table, message.symbol)] += 1
                if table == "depth":
                    self.books.setdefault(message.symbol, LocalBook(rule, message.symbol)).on_diff(message)

    @property
    def snapshot_symbols(self) -> set[str]:
        return {s for (t, s) in self.counts if t == "snapshots"}


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, tuple[Path, ImportResult]]:
    if not REALDATA.is_dir():
        pytest.skip(f"real captures not available at {REALDATA}")
    done = {}
    for session in SESSIONS:
        out = tmp_path_factory.mktemp("import")
        done[session.name] = out, import_captures(session.paths, get_market(session.market), out)
    return done


@pytest.mark.parametrize("session", SESSIONS, ids=[s.name for s in SESSIONS])
def test_realdata_session_imports_exactly(session: CaptureSession, imported):
    out, result = imported[session.name]
    market = get_market(session.market)
    facts = CaptureFacts(session)
    # every depth diff, snapshot, trade, aggTrade and bookTicker of the capture is a message in the dataset
    got = Counter()
    for (table, _, symbol), n in result.messages.items():
        if table in ("depth", "snapshots", "trades", "agg_trades", "book_ticker"):
            got[(table, symbol)] += n
    assert got == facts.counts
    assert result.rejected == 0
    # ... and on disk: rows as reported, one distinct seq per message
    for (table, day, symbol), n in result.messages.items():
        if table == "events":
            continue
        stored = read_table(out, market.exchange, table, date=day, symbols=[symbol], columns=["seq"])
        assert stored.num_rows == result.rows[(table, day, symbol)]
        assert len(pc.unique(stored.column("seq"))) == n
    # the Berlin date partition comes from recv_ts
    assert result.dates == sorted({berlin_date(facts.first_ts), berlin_date(facts.last_ts)})
    if "_20240808" in session.name:  # taken just before midnight UTC: the next Berlin day
        assert result.dates == [dt.date(2024, 8, 9)]
    assert len(result.sessions) == 1
    # provenance and the engine's events, as in live recording
    events = read_table(out, market.exchange, "events").sort_by("seq").to_pylist()
    assert {e["kind"] for e in events} <= set(EVENT_KINDS)
    assert events[0]["kind"] == "window_start"
    assert orjson.loads(events[0]["detail"])["import"] == [p.name for p in session.paths]
    assert events[0]["ts"] == facts.first_ts
    # the book rebuilt from the dataset never breaks and ends equal to the one rebuilt from the capture
    for symbol in sorted({s for (t, s) in facts.counts if t == "depth"}):
        local = None
        actions = Counter()
        for day in result.dates:
            for _, _, message, action, local in rebuild(out, market, day, symbol):
                if type(message) is DepthUpdate:
                    actions[action] += 1
        if symbol in facts.snapshot_symbols:
            assert actions[Action.RESYNC] == 0, (symbol, actions)
            assert symbol in result.synced
            assert local.valid_book() is not None
            assert local.valid_book().export() == facts.books[symbol].valid_book().export(), symbol
        else:
            assert local.valid_book() is None and facts.books[symbol].valid_book() is None
    if facts.snapshot_symbols:
        assert result.events["gap"] == 0
    # instruments for the symbols the capture holds, when it carries exchangeInfo
    if facts.exchange_info:
        instruments = read_table(out, market.exchange, "instruments")
        assert set(instruments.column("symbol").to_pylist()) <= set(result.symbols)
        assert instruments.num_rows > 0


def test_realdata_import_speed(imported):
    """Figures for the biggest capture (printed with -s)."""
    name, (_, result) = max(imported.items(), key=lambda item: item[1][1].rows_written)
    print(f"\n{name}: {result.records:,} records, {result.rows_written:,} rows in {result.elapsed_s:.2f} s "
          f"= {result.rows_per_s:,.0f} rows/s, {result.records / result.elapsed_s:,.0f} records/s")
    assert result.rows_per_s > 20_000
