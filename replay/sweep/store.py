"""A sweep's directory: its definition, one file per finished task, and the tables built from them.

Each task's row is written as it finishes (a temporary file renamed into place, so a crash leaves either the
whole row or none), which is what makes a sweep resumable: `--resume` reads the rows, keeps the successful
ones and runs the rest. `sweep.json` holds the sweep's definition; a directory holding another sweep is
refused rather than mixed. The tables (`results.parquet`, `sets.parquet`, `calibration.parquet`) are
rebuilt from the row files at the end of every run, complete or not.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "sweep.json"


class SweepStoreError(ValueError):
    """The output directory cannot take this sweep; one line saying why and what to do."""


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SweepStore:
    """The files of one sweep under `out`."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.tasks_dir = self.out / "tasks"
        self.calibration_dir = self.out / "calibration"

    def open(self, definition: dict, resume: bool) -> None:
        """Start the sweep here, or (resume) continue the one here if it is the same sweep."""
        manifest = self.out / MANIFEST
        if manifest.exists():
            stored = orjson.loads(manifest.read_bytes())
            if stored.get("id") != definition["id"]:
                raise SweepStoreError(f"{self.out} holds another sweep ({stored.get('id')}); this one is "
                                      f"{definition['id']}: pass another --out")
            if not resume:
                raise SweepStoreError(f"{self.out} already holds this sweep ({len(self.rows())} tasks done): pass "
                                      f"--resume to run the rest, or another --out")
        elif resume and self.out.exists() and any(self.out.iterdir()):
            raise SweepStoreError(f"{self.out} holds no sweep to resume (no {MANIFEST})")
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        self.calibration_dir.mkdir(exist_ok=True)
        if not manifest.exists():
            _write_atomic(manifest, orjson.dumps(definition, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
                                                 default=str))

    def write(self, row: dict) -> None:
        _write_atomic(self.tasks_dir / f"{row['task_id']}.json", orjson.dumps(row))

    def rows(self) -> list[dict]:
        """Every task row written so far (a file that cannot be read is skipped: its task runs again)."""
        out = []
        for path in sorted(self.tasks_dir.glob("*.json")):
            try:
                out.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError):
                continue
        return out

    def done(self) -> dict[str, dict]:
        """task_id -> row of the tasks that succeeded (a failed task is run again on --resume)."""
        return {r["task_id"]: r for r in self.rows() if not r.get("error")}

    def write_calibration(self, row: dict) -> None:
        _write_atomic(self.calibration_dir / f"{row['date']}-{row['symbol']}.json", orjson.dumps(row))

    def calibration(self) -> dict[tuple[str, str], dict]:
        """(day, symbol) -> calibration row, for those calibrated without error."""
        out = {}
        for path in sorted(self.calibration_dir.glob("*.json")):
            row = orjson.loads(path.read_bytes())
            if not row.get("error"):
                out[(row["date"], row["symbol"])] = row
        return out

    def write_table(self, name: str, table: pa.Table) -> Path:
        path = self.out / name
        tmp = path.with_name(f".{name}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.out / name
        _write_atomic(path, text.encode())
        return path
