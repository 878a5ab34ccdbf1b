"""Small I/O helpers shared by every stage: atomic writes, Parquet tables, logging set-up, ids as file names."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

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


# --------------------------------------------------------------------------- ids as file names
#: Characters an id keeps as they are in a file name (every other one is percent-encoded).
_ID_SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
#: Longest encoded id :func:`id_filename` returns: room for a suffix (``.json.gz``) and the
#: temporary name of :func:`atomic_path` (``.{name}.XXXXXXXX.tmp``) within 255 bytes.
ID_FILENAME_MAX = 200


class UnsafeIdError(ValueError):
    """An id that cannot be turned into a file name (empty, control characters, too long...)."""


def id_filename(material_id: str) -> str:
    """The one file-name form of an id (cache files, previews, archive members): a single, safe
    path component that :func:`id_from_filename` turns back into the id.

    ``[A-Za-z0-9._-]`` stay as they are (``mp-149``, ``JVASP-1002`` are unchanged); every other
    character -- ``/``, ``\\``, ``:``, ``%``, spaces, non-ASCII ... -- becomes ``%XX`` per UTF-8
    byte, as does a leading ``.`` (no hidden files, no ``.`` / ``..``). Since ``%`` itself is
    encoded, distinct ids never share a name (``a/b`` -> ``a%2Fb``, ``a_b`` -> ``a_b``).

    Raises :class:`UnsafeIdError` (a ``ValueError``) naming the id when it is not a string, is
    empty, holds control characters (NUL, newline, DEL, ...) or lone surrogates, or would encode
    to more than :data:`ID_FILENAME_MAX` characters.
    """
    if not isinstance(material_id, str):
        raise UnsafeIdError(f"material id {material_id!r} is a {type(material_id).__name__}, not a string")
    if not material_id:
        raise UnsafeIdError("material id '' is empty: it cannot name a file")
    bad = sorted({c for c in material_id if unicodedata.category(c) in ("Cc", "Cs")})
    if bad:
        raise UnsafeIdError(f"material id {material_id!r} holds control characters or lone surrogates {bad}: it cannot name a file")
    parts = []
    for i, c in enumerate(material_id):
        if c in _ID_SAFE_CHARS and not (i == 0 and c == "."):
            parts.append(c)
        else:
            parts.append("".join(f"%{b:02X}" for b in c.encode("utf-8")))
    name = "".join(parts)
    if len(name) > ID_FILENAME_MAX:
        raise UnsafeIdError(
            f"material id {material_id[:40]!r}... is too long for a file name "
            f"({len(name)} characters encoded, at most {ID_FILENAME_MAX})"
        )
    return name


def id_from_filename(name: str) -> str:
    """The id behind a name made by :func:`id_filename` (its inverse)."""
    return unquote(name, encoding="utf-8", errors="strict")
