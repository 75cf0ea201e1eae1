"""The one exception readers raise for a dataset they cannot trust."""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """A file or partition that is missing, not Parquet, or written under an unsupported schema.

    str() is always one line that starts with the offending path, so logs and CLI errors stay greppable.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")
