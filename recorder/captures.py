"""Streaming readers for third-party Binance capture files.

Turns the capture formats found in public repositories into one uniform sequence of `CaptureRecord`s, in
local-receive-time order. Every reader is a generator that holds one line at a time (constant memory), and
JSON payloads are never parsed on the hot path: a record carries the raw bytes exactly as captured.

Formats
-------
hftbacktest collector (gzip, or the same text uncompressed)::

    <local_recv_ts> <raw json>

    The timestamp is nanoseconds (19 digits) in current files and microseconds (16 digits) in older ones
    (`history/*.dat.gz`); the unit is detected per line by magnitude (ms, µs or ns) and converted to ns.
    `{"stream":..,"data":..}` envelopes are kind "ws"; a raw REST depth snapshot (`{"lastUpdateId"...`) is
    kind "rest", its symbol taken from the file name (`spot_btcusdt_20240808.gz` -> BTCUSDT,
    `cm_btcusd_perp_20240808.gz` -> BTCUSD_PERP), else from the streams seen so far in the file, else from a
    `"symbol":"..."` field of the snapshot itself; its limit is unknown (None).

cryptofeed raw dumps (text; one parser handles `*.ws.*`, `*.http.*`, `<EXCH>.<n>` exchangeInfo dumps and the
older combined `BINANCE-xxxx.0@...` files, by the shape of each line)::

    wss://<combined-stream url> <-> <ts>     -> kind "connect", payload = the URL bytes (one per connection)
    <ts>: <json>                             -> kind "ws"
    http(s)://.../depth?symbol=X&limit=N -> <ts>: <json>   -> kind "rest", symbol X (upper-case), limit N
    http(s)://.../exchangeInfo -> <ts>: <json>            -> kind "exchange_info"
    configuration: <json>                    -> skipped (cryptofeed's feed configuration, no timestamp)
    <empty line>                             -> skipped (cryptofeed files end with one or two)

    `<ts>` is Python's repr of a float of Unix seconds (`1633998512.0633569`); it is converted to integer
    nanoseconds by string arithmetic (`seconds_to_ns`), never through a float.

Any other line, a non-JSON payload, or a truncated/corrupt gzip stream raises `CaptureError` (a ValueError)
whose one-line message reads `<path>:<line>: <reason>`. Records yielded before the error remain valid.

Sessions
--------
`iter_capture(paths)` reads several files of one recording session and merges them by `recv_ts` with
`heapq.merge` (stable: equal timestamps keep the order of `paths`, then file order).
`sessions_in_realdata(root)` groups the files of the shared real-data directory into such sessions.
"""

from __future__ import annotations

import gzip
import heapq
import itertools
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "KIND_CONNECT",
    "KIND_EXCHANGE_INFO",
    "KIND_REST",
    "KIND_WS",
    "CaptureError",
    "CaptureRecord",
    "CaptureSession",
    "iter_capture",
    "iter_cryptofeed",
    "iter_file",
    "iter_hftbacktest",
    "market_of_cryptofeed_file",
    "market_of_hftbacktest_file",
    "market_of_url",
    "seconds_to_ns",
    "sessions_in_realdata",
    "to_ns",
]

KIND_WS = "ws"
KIND_REST = "rest"
KIND_EXCHANGE_INFO = "exchange_info"
KIND_CONNECT = "connect"

_GZIP_MAGIC = b"\x1f\x8b"
_NS_PER_S = 1_000_000_000
# Magnitude bounds for epoch timestamps: values below 1e14 are milliseconds, below 1e17 microseconds,
# otherwise nanoseconds. The ranges are disjoint for every date between 1973 and 5138.
_MS_BELOW = 10**14
_US_BELOW = 10**17


class CaptureError(ValueError):
    """A capture file does not match its format. The message is one line: `<path>:<line>: <reason>`."""

    def __init__(self, path: Path | str, lineno: int, reason: str) -> None:
        self.path = Path(path)
        self.lineno = lineno
        self.reason = reason
        super().__init__(f"{path}:{lineno}: {reason}")


@dataclass(slots=True)
class CaptureRecord:
    recv_ts: int  # local receive time, int64 nanoseconds UTC
    kind: str  # "ws" | "rest" | "exchange_info" | "connect"
    payload: bytes  # raw JSON text exactly as captured (envelope included for ws frames); URL for "connect"
    symbol: str | None  # "rest": symbol of the snapshot (upper-case); None otherwise
    limit: int | None  # "rest": requested limit from the URL, if known
    source: str  # "path:line"


# --------------------------------------------------------------------------------------------------------
# Timestamps


def to_ns(ts: int) -> int:
    """Epoch timestamp in ms, µs or ns (detected by magnitude) -> ns."""
    if ts < _MS_BELOW:
        return ts * 1_000_000
    if ts < _US_BELOW:
        return ts * 1_000
    return ts


def seconds_to_ns(text: str | bytes) -> int:
    """Exact decimal Unix seconds -> int ns: '1633998512.0633569' -> 1633998512063356900.

    The fraction is padded or truncated to 9 digits; no float is involved. Raises ValueError on anything but
    digits with at most one '.'.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    whole, dot, frac = text.partition(".")
    if not (whole.isascii() and whole.isdigit() and (not dot or (frac.isascii() and frac.isdigit()))):
        raise ValueError(f"not a decimal number of seconds: {text!r}")
    return int(whole) * _NS_PER_S + (int(frac[:9].ljust(9, "0")) if frac else 0)


# --------------------------------------------------------------------------------------------------------
# Markets and file names

_HFT_NAME = re.compile(r"^(spot|usdm|cm|coinm)_(.+)_(\d{8})(?:\.dat)?(?:\.gz)?$")
_HFT_MARKETS = {"spot": "spot", "usdm": "usdm", "cm": "coinm", "coinm": "coinm"}
_CF_EXCHANGES = {
    "BINANCE": "spot",
    "BINANCE_US": "spot",  # binance.us speaks the spot protocol
    "BINANCE_FUTURES": "usdm",
    "BINANCE_DELIVERY": "coinm",
}
# <EXCH>.ws.<n>.0[@commit] / <EXCH>.http.<n>.0[@commit]
_CF_WS_HTTP = re.compile(r"^([A-Z][A-Z_]*)\.(ws|http)\.(\d+)\.(\d+)(@[0-9A-Za-z]+)?$")
# <EXCH>-<hash>.<n>[@commit]: ws and http lines interleaved in one file
_CF_COMBINED = re.compile(r"^([A-Z][A-Z_]*)-([0-9a-f]+)\.(\d+)(@[0-9A-Za-z]+)?$")
# <EXCH>.<n>[@commit]: exchangeInfo dump
_CF_INFO = re.compile(r"^([A-Z][A-Z_]*)\.(\d+)(@[0-9A-Za-z]+)?$")


def market_of_hftbacktest_file(path: Path | str) -> str:
    """'spot_btcusdt_20240808.gz' -> 'spot'; 'usdm_...' -> 'usdm'; 'cm_...' -> 'coinm'. ValueError otherwise."""
    name = Path(path).name
    prefix = name.split("_", 1)[0]
    market = _HFT_MARKETS.get(prefix) if "_" in name else None
    if market is None:
        raise ValueError(f"{name}: not an hftbacktest file name (expected spot_/usdm_/cm_ prefix)")
    return market


def _hftbacktest_symbol(path: Path) -> str | None:
    m = _HFT_NAME.match(path.name)
    return m.group(2).upper() if m else None


def market_of_url(url: str | bytes) -> str | None:
    """Market of a Binance URL by host: stream/api.binance.com, binance.us -> spot; fstream/fapi -> usdm;
    dstream/dapi -> coinm. The path decides for hosts shared by all (www.binance.com/fapi/...)."""
    if isinstance(url, bytes):
        url = url.decode("ascii", "replace")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host.startswith(("fstream", "fapi")) or parts.path.startswith("/fapi/"):
        return "usdm"
    if host.startswith(("dstream", "dapi")) or parts.path.startswith("/dapi/"):
        return "coinm"
    if host.endswith(("binance.com", "binance.us")):
        return "spot"
    return None


def _cryptofeed_exchange(name: str) -> str | None:
    for pattern in (_CF_WS_HTTP, _CF_COMBINED, _CF_INFO):
        m = pattern.match(name)
        if m:
            return m.group(1)
    return None


def market_of_cryptofeed_file(path: Path | str) -> str | None:
    """Market of a cryptofeed dump from its exchange prefix (BINANCE, BINANCE_US -> spot, BINANCE_FUTURES ->
    usdm, BINANCE_DELIVERY -> coinm); failing that, from the host of the first URL in the file; else None."""
    path = Path(path)
    exchange = _cryptofeed_exchange(path.name)
    if exchange in _CF_EXCHANGES:
        return _CF_EXCHANGES[exchange]
    try:
        with open(path, "rb") as f:
            for line in itertools.islice(f, 5):
                if line.startswith((b"wss://", b"ws://", b"http")):
                    return market_of_url(line.split(b" ", 1)[0])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------------------------------------
# Line sources


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _lines(f: BinaryIO, path: Path) -> Iterator[bytes]:
    """Lines of `f` without their line ending (LF or CRLF); decompression failures become CaptureError
    naming the line that could not be read."""
    lineno = 0
    try:
        for line in f:
            lineno += 1
            if line[-1:] == b"\n":
                line = line[:-2] if line[-2:-1] == b"\r" else line[:-1]
            yield line
    except (EOFError, OSError, zlib.error) as exc:
        reason = "truncated gzip stream" if isinstance(exc, EOFError) else f"unreadable data ({exc})"
        raise CaptureError(path, lineno + 1, reason) from exc


# --------------------------------------------------------------------------------------------------------
# hftbacktest


def iter_hftbacktest(path: Path | str, *, symbol: str | None = None) -> Iterator[CaptureRecord]:
    """Records of one hftbacktest collector file (gzip or plain). `symbol` overrides the snapshot symbol."""
    path = Path(path)
    with _open(path) as f:
        yield from _parse_hftbacktest(_lines(f, path), path, symbol)


def _parse_hftbacktest(lines: Iterable[bytes], path: Path, symbol: str | None) -> Iterator[CaptureRecord]:
    file_symbol = symbol or _hftbacktest_symbol(path)
    stream_symbol: str | None = None
    prefix = f"{path}:"
    for lineno, line in enumerate(lines, 1):
        sp = line.find(b" ")
        ts = line[:sp]
        payload = line[sp + 1 :]
        if sp <= 0 or not ts.isdigit() or payload[:1] != b"{":
            if not line.strip():
                continue
            raise CaptureError(path, lineno, "expected '<recv_ts> <json>'")
        recv_ts = int(ts)
        if recv_ts < _US_BELOW:
            recv_ts = recv_ts * 1_000 if recv_ts >= _MS_BELOW else recv_ts * 1_000_000
        if payload.startswith(b'{"stream"'):
            if file_symbol is None and stream_symbol is None:
                stream_symbol = _stream_symbol(payload)
            yield CaptureRecord(recv_ts, KIND_WS, payload, None, None, prefix + str(lineno))
        elif payload.startswith(b'{"lastUpdateId"'):
            snap_symbol = file_symbol or stream_symbol or _payload_symbol(payload)
            yield CaptureRecord(recv_ts, KIND_REST, payload, snap_symbol, None, prefix + str(lineno))
        else:
            raise CaptureError(
                path, lineno, "expected a stream envelope or a depth snapshot after the timestamp"
            )


_STREAM_NAME = re.compile(rb'^\{"stream"\s*:\s*"([^"@]+)@')
_SYMBOL_FIELD = re.compile(rb'"symbol"\s*:\s*"([^"]+)"')


def _stream_symbol(payload: bytes) -> str | None:
    m = _STREAM_NAME.match(payload)
    return m.group(1).decode("ascii", "replace").upper() if m else None


def _payload_symbol(payload: bytes) -> str | None:
    m = _SYMBOL_FIELD.search(payload, 0, 4096)
    return m.group(1).decode("ascii", "replace").upper() if m else None


# --------------------------------------------------------------------------------------------------------
# cryptofeed


def iter_cryptofeed(path: Path | str) -> Iterator[CaptureRecord]:
    """Records of one cryptofeed raw dump (ws, http, combined or exchangeInfo; plain text or gzip)."""
    path = Path(path)
    with _open(path) as f:
        yield from _parse_cryptofeed(_lines(f, path), path)


def _parse_cryptofeed(lines: Iterable[bytes], path: Path) -> Iterator[CaptureRecord]:
    prefix = f"{path}:"
    for lineno, line in enumerate(lines, 1):
        first = line[:1]
        if first.isdigit():  # "<ts>: <json>"
            colon = line.find(b": ")
            payload = line[colon + 2 :]
            if colon <= 0 or payload[:1] != b"{":
                raise CaptureError(path, lineno, "expected '<unix_ts>: <json>'")
            yield CaptureRecord(
                _seconds(line[:colon], path, lineno), KIND_WS, payload, None, None, prefix + str(lineno)
            )
        elif line.startswith(b"http"):  # "<url> -> <ts>: <json>"
            yield _cryptofeed_http(line, path, lineno, prefix + str(lineno))
        elif line.startswith((b"wss://", b"ws://")):  # "<url> <-> <ts>"
            url, sep, ts = line.rpartition(b" <-> ")
            if not sep or not url:
                raise CaptureError(path, lineno, "expected '<ws url> <-> <unix_ts>'")
            yield CaptureRecord(
                _seconds(ts, path, lineno), KIND_CONNECT, url, None, None, prefix + str(lineno)
            )
        elif line.startswith(b"configuration: ") or not line.strip():
            continue
        else:
            raise CaptureError(
                path,
                lineno,
                "expected '<unix_ts>: <json>', '<url> -> <unix_ts>: <json>' or '<ws url> <-> <unix_ts>'",
            )


def _seconds(text: bytes, path: Path, lineno: int) -> int:
    try:
        return seconds_to_ns(text)
    except ValueError:
        raise CaptureError(path, lineno, f"bad timestamp {text[:40]!r}") from None


def _cryptofeed_http(line: bytes, path: Path, lineno: int, source: str) -> CaptureRecord:
    url, sep, rest = line.partition(b" -> ")
    ts, sep2, payload = rest.partition(b": ")
    if not sep or not sep2 or payload[:1] != b"{":
        raise CaptureError(path, lineno, "expected '<url> -> <unix_ts>: <json>'")
    recv_ts = _seconds(ts, path, lineno)
    parts = urlsplit(url.decode("ascii", "replace"))
    endpoint = parts.path.rsplit("/", 1)[-1]
    if endpoint == "depth":
        query = parse_qs(parts.query)
        symbol = query.get("symbol", [None])[0]
        limit_text = query.get("limit", [None])[0]
        try:
            limit = int(limit_text) if limit_text is not None else None
        except ValueError:
            raise CaptureError(path, lineno, f"bad limit in depth url {limit_text!r}") from None
        return CaptureRecord(recv_ts, KIND_REST, payload, symbol.upper() if symbol else None, limit, source)
    if endpoint == "exchangeInfo":
        return CaptureRecord(recv_ts, KIND_EXCHANGE_INFO, payload, None, None, source)
    raise CaptureError(path, lineno, f"unexpected REST endpoint {parts.path!r}")


# --------------------------------------------------------------------------------------------------------
# Dispatch and merge


def iter_file(path: Path | str) -> Iterator[CaptureRecord]:
    """Records of one capture file of any supported format, detected from its first non-empty line."""
    path = Path(path)
    with _open(path) as f:
        lines = _lines(f, path)
        head: list[bytes] = []
        for line in lines:
            head.append(line)
            if line.strip():
                break
        if not head or not head[-1].strip():
            return
        first = head[-1]
        token = first.split(b" ", 1)[0]
        chained = itertools.chain(head, lines)
        if token.isdigit():
            yield from _parse_hftbacktest(chained, path, None)
        elif token.endswith(b":") or first.startswith((b"http", b"wss://", b"ws://")):
            yield from _parse_cryptofeed(chained, path)
        else:
            raise CaptureError(path, len(head), "unrecognised capture format")


def iter_capture(paths: Iterable[Path | str] | Path | str) -> Iterator[CaptureRecord]:
    """Records of the files of one session, merged into recv_ts order (ties keep the order of `paths`)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    streams = [iter_file(p) for p in paths]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=_recv_ts)


def _recv_ts(record: CaptureRecord) -> int:
    return record.recv_ts


# --------------------------------------------------------------------------------------------------------
# Sessions


@dataclass
class CaptureSession:
    # e.g. "cryptofeed_hist/BINANCE_DELIVERY@3525dc8c", "hftbacktest/spot_btcusdt_20240808-20240809"
    name: str
    market: str  # spot | usdm | coinm
    paths: list[Path] = field(default_factory=list)

    def records(self) -> Iterator[CaptureRecord]:
        return iter_capture(self.paths)


def sessions_in_realdata(root: Path | str) -> list[CaptureSession]:
    """Group the capture files under `root` (e.g. /work/shared/realdata) into recording sessions.

    - cryptofeed `<EXCH>.ws.<n>.0[@c]` with `<EXCH>.http.<n-1>.0[@c]` from the same directory (else the only
      http file of that exchange and suffix), plus the `<EXCH>.<k>[@c]` exchangeInfo dump of that exchange and
      suffix when exactly one session matches it; leftover http files form sessions of their own;
    - each combined `<EXCH>-<hash>.<n>[@c]` file alone;
    - hftbacktest `<market>_<symbol>_<YYYYMMDD>[.dat].gz` files of one directory, market and symbol on
      consecutive days as one session (the later day continues the earlier one).

    The nautilus/ directory (a different format) and other files (README/PROVENANCE) are ignored.
    Sessions are returned sorted by name.
    """
    root = Path(root)
    sessions: list[CaptureSession] = []
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and "nautilus" not in p.relative_to(root).parts[:-1]
    )

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    # hftbacktest
    hft: dict[tuple[Path, str, str, str], list[tuple[date, Path]]] = {}
    for p in files:
        m = _HFT_NAME.match(p.name)
        if not m or not p.name.endswith(".gz"):
            continue
        try:
            day = date(int(m.group(3)[:4]), int(m.group(3)[4:6]), int(m.group(3)[6:]))
        except ValueError:  # not a calendar date
            continue
        ext = p.name[m.end(3) :]
        hft.setdefault((p.parent, m.group(1), m.group(2), ext), []).append((day, p))
    for (parent, prefix, symbol, _ext), days in hft.items():
        days.sort()
        runs: list[list[tuple[date, Path]]] = []
        for day, p in days:
            if runs and runs[-1][-1][0] + timedelta(days=1) == day:
                runs[-1].append((day, p))
            else:
                runs.append([(day, p)])
        for run in runs:
            first, last = run[0][0].strftime("%Y%m%d"), run[-1][0].strftime("%Y%m%d")
            span = first if first == last else f"{first}-{last}"
            base = rel(parent / f"{prefix}_{symbol}_{span}")
            sessions.append(CaptureSession(base, _HFT_MARKETS[prefix], [p for _, p in run]))

    # cryptofeed
    ws_files: list[tuple[Path, str, int, str]] = []
    http_files: dict[tuple[Path, str, str], dict[int, Path]] = {}
    info_files: list[tuple[Path, str, str]] = []
    for p in files:
        if m := _CF_WS_HTTP.match(p.name):
            exch, kind, num, suffix = m.group(1), m.group(2), int(m.group(3)), m.group(5) or ""
            if kind == "ws":
                ws_files.append((p, exch, num, suffix))
            else:
                http_files.setdefault((p.parent, exch, suffix), {})[num] = p
        elif _CF_COMBINED.match(p.name):
            sessions.append(CaptureSession(rel(p), market_of_cryptofeed_file(p) or "spot", [p]))
        elif m := _CF_INFO.match(p.name):
            info_files.append((p, m.group(1), m.group(3) or ""))
    cf_sessions: dict[tuple[Path, str, str], list[CaptureSession]] = {}
    for p, exch, num, suffix in ws_files:
        key = (p.parent, exch, suffix)
        https = http_files.get(key, {})
        partner = https.pop(num - 1, None)
        if partner is None and len(https) == 1:
            partner = https.pop(next(iter(https)))
        name = rel(p.parent / f"{exch}{suffix}")
        paths = [p] if partner is None else [p, partner]
        session = CaptureSession(name, market_of_cryptofeed_file(p) or "spot", paths)
        cf_sessions.setdefault(key, []).append(session)
    for (parent, exch, suffix), left in http_files.items():
        for num, p in sorted(left.items()):
            session = CaptureSession(rel(p), market_of_cryptofeed_file(p) or "spot", [p])
            cf_sessions.setdefault((parent, exch, suffix), []).append(session)
    for p, exch, suffix in info_files:
        matches = cf_sessions.get((p.parent, exch, suffix), [])
        if len(matches) == 1:
            matches[0].paths.insert(0, p)
    for group in cf_sessions.values():
        if len(group) > 1:  # several runs of one exchange: make the names unique
            for s in group:
                s.name = rel(s.paths[-1]) if len(s.paths) == 1 else s.name + "#" + s.paths[0].name
        sessions.extend(group)

    sessions.sort(key=lambda s: s.name)
    return sessions
