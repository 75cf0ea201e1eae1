"""Raw-frame journal: what was received but is not yet in a Parquet segment survives `kill -9`.

Every frame, snapshot body and event is appended (with its seq and receive time) to the journal of the
current segment; every ~200 ms what was appended is written and fsynced, in a thread (`take`, `run`).
When the segment's Parquet files are durable, its journal is deleted. On start, any journal left behind is replayed through the same parsing
and writers into segment files of the same name, so recovery is idempotent: a crash during recovery, or
between writing a segment and deleting its journal, only rewrites identical files.

Record: header `<qqBiHII` (seq, recv_ts, kind, limit, symbol length, payload length, crc32), symbol,
payload. A torn record at the tail (the process died mid-write) ends the replay there.

A batch of frames (`Pipeline.frames`) is one `FRAMES` record: its header's `limit` is the frame count n,
its payload n int64 seqs, n int64 receive times, n uint32 lengths, then the frames back to back, all under
one crc32. `read_journal` hands it out as the n `FRAME` records it stands for, so readers never see it.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HEADER = struct.Struct("<qqBiHII")
_UINT32 = struct.Struct("<I")  # the header's last two fields: payload length, crc

FRAME = 1  # a WebSocket frame, raw
SNAPSHOT = 2  # a REST depth response body, with symbol and requested limit
EVENT = 3  # a recorder event: JSON {"kind":..,"detail":..}, symbol in the symbol field
INSTRUMENTS = 4  # an exchangeInfo response body
FRAMES = 5  # a batch of WebSocket frames, read back as FRAME records (never yielded as itself)


@dataclass(slots=True)
class JournalRecord:
    seq: int
    recv_ts: int
    kind: int
    limit: int
    symbol: str | None
    payload: bytes


class Journal:
    """Append-only file per segment; `sync()` makes everything appended so far durable.

    What is appended is kept as the parts it came in (a batch's frames stay the buffer `Pipeline.frames`
    joined them into), written with one writev per 1,024 parts: the receiving thread copies nothing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._pending: list = []  # bytes-like parts, in order
        self._pending_size = 0
        self._small: bytearray | None = None  # the last part, where single records are copied together
        self._fd: int | None = None
        self._in_flight: PendingWrite | None = None
        self._unsealed: list[tuple[bytearray, tuple]] = []  # batch records' headers without their crc yet
        self.path: Path | None = None

    def open(self, segment_id: str) -> None:
        path = self.directory / f"{segment_id}.jnl"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.path = path

    def append(self, seq: int, recv_ts: int, kind: int, payload: bytes, symbol: str | None = None,
               limit: int = 0) -> None:
        sym = symbol.encode() if symbol else b""
        small = self._small
        if small is None:
            small = self._small = bytearray()
            self._pending.append(small)
        small += HEADER.pack(seq, recv_ts, kind, limit, len(sym), len(payload), zlib.crc32(payload))
        small += sym
        small += payload
        self._pending_size += HEADER.size + len(sym) + len(payload)

    def append_frames(self, seqs: np.ndarray, recv_ts: np.ndarray, lengths: np.ndarray, joined: bytes) -> None:
        """A batch of frames as one record: one header, no per-frame packing. `joined`: the frames back to
        back (kept, not copied: bytes never change), `lengths` their sizes; seqs and receive times as
        int64 arrays. Its crc is computed by `run`, in the writing thread."""
        n = len(lengths)
        if not n:
            return
        payload = (seqs.astype(np.int64, copy=False).tobytes(), recv_ts.astype(np.int64, copy=False).tobytes(),
                   lengths.astype(np.uint32).tobytes(), joined)
        size = sum(map(len, payload))
        header = bytearray(HEADER.pack(int(seqs[0]), int(recv_ts[0]), FRAMES, n, 0, size, 0))
        self._unsealed.append((header, payload))
        self._small = None
        self._pending.append(header)
        self._pending.extend(payload)
        self._pending_size += HEADER.size + size

    @property
    def backlog(self) -> int:
        """Bytes appended but not yet written: grows only while writing fails (a full disk)."""
        job = self._in_flight
        return self._pending_size + (job.size - job.written if job is not None else 0)

    def sync(self) -> None:
        """Write what was appended and fsync it: after this returns, a crash loses none of it."""
        job = self.take()
        if job is not None:
            run(job)

    def take(self) -> PendingWrite | None:
        """What was appended, handed over to be written and fsynced by `run` in another thread while appends
        go on (None when closed). Waits for the previous one to finish, so the file keeps the order.

        Bytes a failed write (ENOSPC) did not write go first, so the file stays a sequence of whole records
        once the disk takes writes again (until then its tail is torn, which `read_journal` stops at)."""
        if self._fd is None:
            return None
        job = self._in_flight
        if job is not None:
            with job.lock:  # held by `run` while it writes; a job never run is abandoned here
                job.abandoned = True
                if not job.closed:
                    os.close(job.fd)
                    job.closed = True
            rest = job.unwritten()
            if rest:  # still unsealed if it never ran (then nothing of it was written)
                self._pending[:0] = rest
                self._pending_size += job.size - job.written
                self._unsealed[:0] = job.unsealed
        parts, self._pending, size, self._pending_size = self._pending, [], self._pending_size, 0
        self._small = None
        unsealed, self._unsealed = self._unsealed, []
        self._in_flight = PendingWrite(os.dup(self._fd), parts, size, unsealed)
        return self._in_flight

    def rotate(self, segment_id: str) -> Path | None:
        """Make the current journal durable, close it and start the next one; returns the closed path.

        On an error nothing changes: the current journal stays open with its pending bytes."""
        old, old_fd = self.path, self._fd
        if old_fd is not None:
            self.sync()
        self.open(segment_id)
        if old_fd is not None:
            os.close(old_fd)
        return old

    def close(self) -> Path | None:
        """Make the journal durable and close it; the file is closed even if the last write fails."""
        old = self.path
        if self._fd is not None:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = None
        self.path = None
        return old


IOV_MAX = 1024  # parts per writev (Linux's limit)


@dataclass
class PendingWrite:
    """Bytes of a journal on their way to the disk (`Journal.take`, `run`), through a descriptor of their
    own, so the journal may be rotated or closed meanwhile. `unsealed`: the batch records whose crc is
    still to be computed (header, payload parts)."""

    fd: int
    parts: list
    size: int
    unsealed: list[tuple[bytearray, tuple]]
    written: int = 0
    closed: bool = False
    abandoned: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def unwritten(self) -> list:
        """The parts from the first byte not written on (the first one cut there)."""
        skip = self.written
        for index, part in enumerate(self.parts):
            if skip < len(part):
                return ([memoryview(part)[skip:]] if skip else [part]) + self.parts[index + 1:]
            skip -= len(part)
        return []


def run(job: PendingWrite) -> None:
    """Seal `job`'s batch records (their crc), write its bytes and fsync them; thread-safe (zlib, the
    write and the fsync release the GIL). A failure leaves the bytes not written to the next `take`."""
    with job.lock:
        if job.abandoned:
            return
        try:
            for header, payload in job.unsealed:
                crc = 0
                for part in payload:
                    crc = zlib.crc32(part, crc)
                _UINT32.pack_into(header, HEADER.size - 4, crc)
            job.unsealed = []
            while parts := job.unwritten():
                job.written += os.writev(job.fd, parts[:IOV_MAX])
            os.fsync(job.fd)
        finally:
            os.close(job.fd)
            job.closed = True


def read_journal(path: Path) -> Iterator[JournalRecord]:
    """Records in order; stops quietly at a torn or corrupt tail (the crash point)."""
    data = path.read_bytes()
    offset, size = 0, len(data)
    while offset + HEADER.size <= size:
        seq, recv_ts, kind, limit, sym_len, payload_len, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        end = start + sym_len + payload_len
        if end > size:
            return
        payload = data[start + sym_len : end]
        if zlib.crc32(payload) != crc:
            return
        symbol = data[start : start + sym_len].decode() if sym_len else None
        if kind == FRAMES:
            yield from _batch_records(payload, limit)
        else:
            yield JournalRecord(seq, recv_ts, kind, limit, symbol, payload)
        offset = end


def _batch_records(payload: bytes, n: int) -> Iterator[JournalRecord]:
    seqs = np.frombuffer(payload, np.int64, n).tolist()
    recv_ts = np.frombuffer(payload, np.int64, n, 8 * n).tolist()
    lengths = np.frombuffer(payload, np.uint32, n, 16 * n)
    ends = (np.cumsum(lengths, dtype=np.int64) + 20 * n).tolist()
    start = 20 * n
    for seq, ts, end in zip(seqs, recv_ts, ends):
        yield JournalRecord(seq, ts, FRAME, 0, None, payload[start:end])
        start = end


def leftover_journals(directory: Path) -> list[Path]:
    """Journals of segments that never became durable Parquet, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.jnl"))
