"""Small I/O helpers shared by every stage: atomic writes, Parquet tables, logging set-up."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("matfuse")

REJECT_COLUMNS = ["material_id", "stage", "reason"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash mid-write therefore never leaves a truncated or corrupt output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give outputs normal permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(df: pd.DataFrame | pa.Table, path: str | os.PathLike[str]) -> None:
    """Write a DataFrame/Table to Parquet atomically (zstd-compressed, no pandas index)."""
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def rejects_frame(rows: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """A rejects table (material_id, stage, reason) with the canonical column order."""
    df = pd.DataFrame(rows or [], columns=REJECT_COLUMNS)
    return df.astype({c: "string" for c in REJECT_COLUMNS})


def setup_logging(log_file: str | os.PathLike[str] | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log to ``log_file`` (Snakemake's ``log[0]``) and stderr; return the package logger."""
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    logging.captureWarnings(True)
    return log
