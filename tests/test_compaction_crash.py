"""A crash at any step of compaction or of journal recovery loses and doubles nothing.

A day of real segments (a recording from the synthetic venue, cut into segments) is compacted in a child
process that dies (`os._exit`) at one step: after the temp day file is written, before and after it is
renamed into place, after k of n segments are deleted, during the seed CSV export. Then readers see every
row once, and the recorder's next start (`finish_compactions`) leaves exactly the fault-free day."""

from __future__ import annotations

import collections
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recorder import journal as jr
from recorder.compaction import clean_day, compact_day, finish_compactions
from recorder.pipeline import Pipeline
from recorder.runtime import recover_journals
from schemas import read_table, write_partition
from tests.test_recorder_run import EXCHANGE, SPOT, recorded  # noqa: F401 - `recorded` is a fixture

SHARD = "0of1"
CRASH_CHILD = r"""
import os, pathlib, sys
from recorder import compaction
from schemas import write

crash_at, count = int(sys.argv[2]), [0]


def step(label):
    count[0] += 1
    print(label, flush=True)
    if count[0] == crash_at:
        os._exit(9)


class Os:
    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in ("fsync", "replace"):
            return real
        return lambda *args: (step(f"{name} {' '.join(str(a).rsplit('/', 1)[-1] for a in args)}"), real(*args))[1]


write.os = compaction.os = Os()
real_unlink = pathlib.Path.unlink
pathlib.Path.unlink = lambda self, *args, **kwargs: (step(f"unlink {self.name}"), real_unlink(self, *args, **kwargs))[1]
root = pathlib.Path(sys.argv[1])
date = next((root / "binance-spot" / "depth").glob("date=*")).name.split("=")[1]
import datetime as dt
compaction.compact_day(root, "binance-spot", dt.date.fromisoformat(date), ["BTCUSDT"], "0of1", row_group_rows=500,
                       formats=("parquet", "csv"), events_tag="0of1", pending_dir=root / ".journal" / "binance-spot" / "0of1")
"""


def partitions(root: Path) -> list[Path]:
    return sorted((root / EXCHANGE).glob("*/date=*/symbol=*"))


@pytest.fixture(scope="module")
def day_of_segments(recorded, tmp_path_factory):  # noqa: F811 - the imported fixture
    """The recorded day cut back into 3 segments per partition (at message boundaries), and the
    fault-free result of compacting it: the day tables and the CSV files."""
    out = tmp_path_factory.mktemp("segments") / "data"
    shutil.copytree(recorded[0], out)
    shutil.rmtree(out / "csv")
    for directory in partitions(out):
        day = directory / f"day-{SHARD}.parquet"
        table = pq.read_table(day)
        day.unlink()
        seq = table.column("seq").to_numpy()
        starts = [0, *[int(i) + 1 for i in (seq[1:] != seq[:-1]).nonzero()[0]]]
        cuts = sorted({starts[len(starts) * k // 3] for k in range(3)}) + [table.num_rows]
        table_name, date, symbol = directory.parent.parent.name, directory.parent.name[5:], directory.name[7:]
        for k, (lo, hi) in enumerate(itertools.pairwise(cuts)):
            write_partition(out, EXCHANGE, table_name, date, None if symbol == "_all" else symbol,
                            table.slice(lo, hi - lo), f"seg-{1_700_000_000_000_000_000 + k:020d}-{SHARD}")
    clean = out.parent / "clean"
    shutil.copytree(out, clean)
    date = dt_of(clean)
    compact_day(clean, EXCHANGE, date, ["BTCUSDT"], SHARD, row_group_rows=500, formats=("parquet", "csv"),
                events_tag=SHARD)
    expected = {str(d.relative_to(clean)): pq.read_table(d / f"day-{SHARD}.parquet") for d in partitions(clean)}
    csv_files = {p.name: p.read_bytes() for p in (clean / "csv").rglob("*.csv")}
    assert len(csv_files) == 3 and max(len(list(d.glob("seg-*"))) for d in partitions(out)) == 3
    return out, expected, csv_files


def dt_of(root: Path):
    import datetime as dt

    return dt.date.fromisoformat(next((root / EXCHANGE / "depth").glob("date=*")).name.split("=")[1])


def crash_compaction(root: Path, crash_at: int) -> list[str]:
    """Compact `root` in a child process that dies at its `crash_at`-th step (0: never); its steps."""
    result = subprocess.run([sys.executable, "-c", CRASH_CHILD, str(root), str(crash_at)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == (9 if crash_at else 0), result.stderr
    return result.stdout.splitlines()


def assert_exact(root: Path, expected: dict[str, pa.Table]) -> None:
    """What every reader sees: each partition holds exactly the fault-free day's rows."""
    date = dt_of(root)
    for key, table in expected.items():
        table_name, symbol = key.split("/")[1], key.rsplit("=", 1)[1]
        seen = read_table(root, EXCHANGE, table_name, date=date, symbols=[None if symbol == "_all" else symbol],
                          columns=table.column_names)
        assert seen.num_rows == table.num_rows, (key, seen.num_rows, table.num_rows)
        order = pc.sort_indices(seen, [("seq", "ascending")])  # stable: levels of one message keep their order
        assert seen.take(order).equals(table), key


@pytest.fixture(scope="module")
def steps(day_of_segments, tmp_path_factory):
    """The steps of one fault-free compaction, as the crash child counts them."""
    root = tmp_path_factory.mktemp("dry") / "data"
    shutil.copytree(day_of_segments[0], root)
    return crash_compaction(root, 0)


def crash_points(steps: list[str]) -> dict[str, int]:
    """1-based step numbers at which to die, for the depth partition and the CSV export."""
    rename = next(i for i, s in enumerate(steps) if s.startswith("replace .day-0of1.parquet.")) + 1
    unlinks = [i + 1 for i, s in enumerate(steps) if i + 1 > rename and s.startswith("unlink seg-")]
    manifest = next(i + 1 for i, s in enumerate(steps) if i + 1 > rename and s.startswith("unlink .day-"))
    csv = [i + 1 for i, s in enumerate(steps) if s.startswith("replace .") and s.endswith(".csv")]
    assert steps[rename - 4].startswith("fsync") and len(unlinks) >= 3 and len(csv) == 3, steps
    return {
        "temp written": rename - 3,  # the temp day file is fsynced, the manifest not yet
        "manifest written": rename,  # the manifest is durable, the day file not yet renamed
        "renamed": unlinks[0],  # the day file is in place, no segment deleted
        "1 of 3 deleted": unlinks[1],
        "3 of 3 deleted": manifest,  # only the manifest is left
        "csv export": csv[1],  # the first CSV file written, the second not
    }


@pytest.mark.parametrize("point", ["temp written", "manifest written", "renamed", "1 of 3 deleted", "3 of 3 deleted",
                                   "csv export"])
def test_a_crash_at_any_step_of_compaction_loses_and_doubles_nothing(day_of_segments, steps, tmp_path, point):
    source, expected, csv_files = day_of_segments
    root = tmp_path / "data"
    shutil.copytree(source, root)
    crash_compaction(root, crash_points(steps)[point])
    # right after the crash, before anything is repaired: readers see each row once
    assert_exact(root, expected)
    # the recorder's next start finishes the day it finds marked
    pending = root / ".journal" / EXCHANGE / SHARD
    assert list(pending.glob("compact-*.json"))
    assert finish_compactions(pending, root, EXCHANGE, {"BTCUSDT"}) == [dt_of(root)]
    assert_exact(root, expected)
    for directory in partitions(root):
        assert sorted(p.name for p in directory.iterdir()) == [f"day-{SHARD}.parquet"], directory
    assert not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".replaces.json"))
                or p.name.startswith("compact-")]
    assert {p.name: p.read_bytes() for p in (root / "csv").rglob("*.csv")} == csv_files
    # and compacting again changes nothing
    compact_day(root, EXCHANGE, dt_of(root), ["BTCUSDT"], SHARD, row_group_rows=500, events_tag=SHARD)
    assert_exact(root, expected)


def test_a_crash_between_a_recovered_segment_and_the_journal_unlink(tmp_path, monkeypatch):
    """`recover_journals` writes a journal into segments of the journal's name, then deletes it: dying in
    between, the next recovery rewrites the same files with the same rows (never a second copy)."""
    root = tmp_path / "data"
    journal_dir = root / ".journal" / EXCHANGE / SHARD
    journal = jr.Journal(journal_dir)
    journal.open(f"{1_700_000_000_000_000_000:020d}-{SHARD}")
    pipeline = Pipeline(SPOT, use_engine=False, journal=journal)
    ts = 1_700_000_000_000_000_000
    for i in range(1, 201):
        pipeline.frame(ts + i, (b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000000000,'
                                b'"s":"BTCUSDT","U":%d,"u":%d,"b":[["100.0","1.5"],["99.0","2"]],"a":[["101.0","3"]]}}'
                                % (i, i)))
        pipeline.frame(ts + i, b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1700000000000,"s":"BTCUSDT",'
                               b'"t":%d,"p":"100.0","q":"0.1","T":1700000000000,"m":true,"M":true}}' % i)
    journal.close()

    class Crash(BaseException):
        pass

    real_unlink = Path.unlink

    def unlink(self, *args, **kwargs):
        if self.suffix == ".jnl":
            raise Crash
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(Crash):
        recover_journals(journal_dir, root, SPOT)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    first = {p: p.read_bytes() for p in (root / EXCHANGE).rglob("*.parquet")}
    assert first and jr.leftover_journals(journal_dir)
    assert recover_journals(journal_dir, root, SPOT) == 400
    assert not jr.leftover_journals(journal_dir)
    assert {p: p.read_bytes() for p in (root / EXCHANGE).rglob("*.parquet")} == first  # same names, same rows
    date = dt_of(root)
    compact_day(root, EXCHANGE, date, ["BTCUSDT"], SHARD)
    depth = read_table(root, EXCHANGE, "depth", date=date, symbols=["BTCUSDT"], columns=["seq"])
    trades = read_table(root, EXCHANGE, "trades", date=date, symbols=["BTCUSDT"], columns=["seq"])
    assert collections.Counter(depth.column("seq").to_pylist()) == {2 * i - 1: 3 for i in range(1, 201)}
    assert sorted(trades.column("seq").to_pylist()) == [2 * i for i in range(1, 201)]
    assert os.listdir(journal_dir) == []


def test_temp_files_left_by_a_crash_are_removed_only_if_they_are_this_recorders(tmp_path):
    import datetime as dt

    root, date = tmp_path / "data", dt.date(2026, 12, 1)
    depth = root / EXCHANGE / "depth" / f"date={date}" / "symbol=BTCUSDT"
    events = root / EXCHANGE / "events" / f"date={date}" / "symbol=_all"
    names = {depth: [".seg-01-0of1.parquet.a1.tmp", ".seg-01-0of1-r2.parquet.a2.tmp", ".day-0of1.parquet.a3.tmp"],
             events: [".seg-01-0of1.parquet.b1.tmp", ".seg-01-0of1-r2.parquet.b2.tmp", ".seg-01-1of2.parquet.b3.tmp"]}
    for directory, files in names.items():
        directory.mkdir(parents=True)
        for name in files:
            (directory / name).write_bytes(b"torn")
    clean_day(root, EXCHANGE, date, ["BTCUSDT"], SHARD, SHARD)
    assert os.listdir(depth) == []  # the symbol is locked to this recorder: every slot's temp is a crash's
    # connection-wide events: the other slots and shards may be writing theirs right now
    assert sorted(os.listdir(events)) == [".seg-01-0of1-r2.parquet.b2.tmp", ".seg-01-1of2.parquet.b3.tmp"]
