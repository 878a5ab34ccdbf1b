"""User-supplied tables: CSV, JSON, JSON-lines or Parquet (``.gz``/``.zip`` accepted)."""

from __future__ import annotations

import json
import logging
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from matfuse.config import TableSource

log = logging.getLogger(__name__)


class TableError(ValueError):
    """The table cannot be read or lacks a configured column."""


def _detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in (".gz", ".zip", ".bz2", ".xz"):
        suffixes.pop()
    ext = suffixes[-1] if suffixes else ""
    if ext in (".csv", ".tsv"):
        return "csv"
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext == ".json":
        return "json"
    if ext in (".parquet", ".pq"):
        return "parquet"
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
        if len(names) == 1:
            return _detect_format(Path(names[0]))
    raise TableError(f"{path}: cannot tell the table format from the name; set `format:` in the config")


def _read_members(path: Path, patterns: list[str], fmt: str) -> pd.DataFrame:
    """Read several files inside a zip archive (in memory: nothing is extracted to disk)."""
    import fnmatch
    import io

    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        chosen = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
        if not chosen:
            raise TableError(f"{path}: no archive member matches {patterns}; members are {names[:20]}")
        frames = []
        for name in sorted(chosen):
            member_fmt = _detect_format(Path(name)) if fmt == "auto" else fmt
            with zf.open(name) as fh:
                data = io.BytesIO(fh.read())
            if member_fmt == "csv":
                df = pd.read_csv(data, low_memory=False)
            elif member_fmt == "jsonl":
                df = pd.read_json(data, lines=True, dtype=False)
            elif member_fmt == "json":
                df = pd.read_json(data, dtype=False)
            else:
                df = pd.read_parquet(data)
            df["_member"] = name
            frames.append(df)
    log.info("read %s from %s", ", ".join(sorted(chosen)), path)
    return pd.concat(frames, ignore_index=True)


def read_table(path: str | Path, fmt: str = "auto", members: list[str] | None = None) -> pd.DataFrame:
    """Read a user table into a DataFrame (all columns as read, ids as strings later)."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"table file not found: {path} (check `source.path` in the config)")
    if members:
        return _read_members(path, members, fmt)
    fmt = _detect_format(path) if fmt == "auto" else fmt
    try:
        if fmt == "csv":
            sep = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
            return pd.read_csv(path, sep=sep, compression="infer", low_memory=False)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, compression="infer", dtype=False)
        if fmt == "json":
            try:
                return pd.read_json(path, compression="infer", dtype=False)
            except ValueError:
                return pd.read_json(path, lines=True, compression="infer", dtype=False)
        if fmt == "parquet":
            return pd.read_parquet(path)
    except Exception as exc:
        raise TableError(f"{path}: cannot read as {fmt}: {type(exc).__name__}: {exc}") from exc
    raise TableError(f"unknown table format {fmt!r}")


def fetch(cfg: TableSource) -> pd.DataFrame:
    """Return raw records (material_id, structure, structure_format, targets..., provenance)."""
    df = read_table(cfg.path, cfg.format, cfg.members)
    missing = [c for c in [cfg.id_column, cfg.structure_column, *cfg.targets.values()] if c not in df.columns]
    if missing:
        raise TableError(
            f"{cfg.path}: configured column(s) {missing} not in the table; it has {list(df.columns)[:20]}"
        )
    out = pd.DataFrame(
        {
            "material_id": cfg.id_prefix + df[cfg.id_column].astype(str).str.strip(),
            "structure": df[cfg.structure_column],
            "structure_format": cfg.structure_format,
        }
    )
    for canonical, column in cfg.targets.items():
        out[canonical] = pd.to_numeric(df[column], errors="coerce")
        bad = df[column].notna() & out[canonical].isna()
        if bad.any():
            log.warning("%d value(s) of column %r are not numbers; treated as missing", int(bad.sum()), column)
    prov = json.dumps(
        {
            "source": "table",
            "path": str(cfg.path),
            "read_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    out["provenance"] = prov
    unknown = [t for t in cfg.per_atom if t not in cfg.targets]
    if unknown:
        raise TableError(f"per_atom names {unknown}, which are not keys of `targets`")
    out.attrs["per_atom"] = list(cfg.per_atom)
    log.info("read %d rows from %s", len(out), cfg.path)
    return out
