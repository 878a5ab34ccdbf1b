"""User-supplied tables: CSV, JSON, JSON-lines or Parquet (``.gz``/``.zip`` accepted)."""

from __future__ import annotations

import json
import logging
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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
    if ext in (".extxyz", ".xyz", ".db", ".traj"):
        return "ase"
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
        if fmt == "ase":
            return read_ase(path)
    except Exception as exc:
        raise TableError(f"{path}: cannot read as {fmt}: {type(exc).__name__}: {exc}") from exc
    raise TableError(f"unknown table format {fmt!r}")


def read_ase(path: str | Path) -> pd.DataFrame:
    """Structures of an extxyz / ASE database / trajectory file as rows (``ase.io`` / ``ase.db``).

    Columns: ``structure`` (pymatgen dicts, via pymatgen's ``AseAtomsAdaptor``), ``index`` (0-based),
    the database ``id`` (ASE databases), every ``atoms.info`` / key-value-pair key, and ``energy`` where a
    calculator result is stored.
    """
    from pymatgen.io.ase import AseAtomsAdaptor

    path = Path(path)
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".db":
        import ase.db

        with ase.db.connect(str(path)) as db:
            for k, row in enumerate(db.select()):
                atoms = row.toatoms()
                rec = {"index": k, "id": row.id, **row.key_value_pairs, **dict(row.data or {})}
                rows.append((rec, atoms))  # type: ignore[arg-type]
    else:
        import ase.io

        for k, atoms in enumerate(ase.io.iread(str(path), index=":")):
            rows.append(({"index": k, **atoms.info}, atoms))  # type: ignore[arg-type]
    out = []
    for rec, atoms in rows:  # type: ignore[misc]
        calc = atoms.calc
        if calc is not None and "energy" in getattr(calc, "results", {}) and "energy" not in rec:
            rec["energy"] = float(calc.results["energy"])
        rec["structure"] = AseAtomsAdaptor.get_structure(atoms).as_dict()
        out.append(rec)
    if not out:
        raise TableError(f"{path}: no structures in the file")
    return pd.DataFrame(out)


_ELEMENT = re.compile(r"^(?P<column>.+)\[(?P<index>-?\d+)\]$")


def _target_values(df: pd.DataFrame, spec: str) -> pd.Series:
    """Values of target column ``spec`` ('column' or 'column[i]'); one-element lists are unpacked."""
    m = _ELEMENT.match(spec)
    if spec not in df.columns and m and m.group("column") in df.columns:
        i = int(m.group("index"))

        def pick(v: Any) -> Any:
            if isinstance(v, (list, tuple)) or getattr(v, "ndim", 0) == 1:
                v = list(v)
                return v[i] if -len(v) <= i < len(v) else None
            return v if i in (0, -1) else None

        return df[m.group("column")].map(pick)
    col = df[spec]
    return col.map(lambda v: list(v)[0] if (isinstance(v, (list, tuple)) or getattr(v, "ndim", 0) == 1) and len(v) == 1 else v)


def _column_of(df: pd.DataFrame, spec: str) -> bool:
    m = _ELEMENT.match(spec)
    return spec in df.columns or bool(m and m.group("column") in df.columns)


def _position_records(df: pd.DataFrame) -> pd.Series:
    return pd.Series([{"positions": p, "cell": c, "atomic_numbers": z}
                      for p, c, z in zip(df["positions"], df["cell"], df["atomic_numbers"])], index=df.index, dtype=object)


FORMULA_COLUMNS = ("formula", "pretty_formula", "formula_pretty", "reduced_formula")
NSITES_COLUMNS = ("nsites", "num_sites")


def _declared_column(df: pd.DataFrame, setting: str | None, auto: tuple[str, ...], what: str) -> str | None:
    if setting is None:
        return None
    if setting == "auto":
        return next((c for c in auto if c in df.columns), None)
    if setting not in df.columns:
        raise TableError(f"{what} {setting!r} is not a column of the table; it has {list(df.columns)[:20]}")
    return setting


def _ids(column: pd.Series, prefix: str) -> pd.Series:
    """Ids as strings with the prefix; empty cells stay missing (None), never ``'nan'``.

    A column of whole numbers that pandas read as floats (because a cell is empty) keeps its
    integer spelling (``7``, not ``7.0``).
    """
    values = column.tolist()
    if pd.api.types.is_float_dtype(column) and all(v != v or float(v).is_integer() for v in values):
        values = [v if v != v else int(v) for v in values]
    out = []
    for v in values:
        text = "" if v is None or (isinstance(v, float) and v != v) else str(v).strip()
        out.append(prefix + text if text else None)
    return pd.Series(out, index=column.index, dtype=object)


def fetch(cfg: TableSource) -> pd.DataFrame:
    """Return raw records (material_id, structure, structure_format, targets..., provenance).

    Target cells are passed on as read (ingest turns them into numbers and records each value
    that is not one, with the value); ``declared_formula`` / ``declared_nsites`` carry the table's
    formula and site-count columns when it has them (see ``formula_column`` / ``nsites_column``).
    """
    df = read_table(cfg.path, cfg.format, cfg.members)
    fmt = cfg.format
    if fmt == "auto" and not cfg.members:  # members of an archive: read_table detected each already
        try:
            fmt = _detect_format(Path(cfg.path))
        except TableError:
            fmt = "auto"
    id_column = cfg.id_column
    if fmt == "ase":  # structures come from the file itself; ids from info[id_column] or the index
        structure_column, structure_format = "structure", "pymatgen"
        if id_column not in df.columns:
            log.info("%s: no %r in the structures' info: ids are the 0-based index", cfg.path, id_column)
            id_column = "index"
    elif (cfg.structure_column not in df.columns and cfg.structure_format in ("auto", "positions")
          and all(c in df.columns for c in ("positions", "cell", "atomic_numbers"))):
        df = df.assign(_positions=_position_records(df))
        structure_column, structure_format = "_positions", "positions"
        log.info("%s: structures from the columns positions (Cartesian, Å), cell, atomic_numbers", cfg.path)
    else:
        structure_column, structure_format = cfg.structure_column, cfg.structure_format
    missing = [c for c in [id_column, structure_column] if c not in df.columns]
    missing += [c for c in cfg.targets.values() if not _column_of(df, c)]
    if missing:
        raise TableError(
            f"{cfg.path}: configured column(s) {missing} not in the table; it has {list(df.columns)[:20]}"
        )
    out = pd.DataFrame(
        {
            "material_id": _ids(df[id_column], cfg.id_prefix),
            "structure": df[structure_column],
            "structure_format": structure_format,
        }
    )
    for canonical, column in cfg.targets.items():
        values = _target_values(df, column)
        out[canonical] = values
        bad = values.notna() & pd.to_numeric(values.map(lambda v: v if not isinstance(v, (list, tuple)) else None),
                                             errors="coerce").isna()
        if bad.any():
            log.warning("%d value(s) of column %r are not numbers (recorded per entry in rejects)", int(bad.sum()), column)
    formula_col = _declared_column(df, cfg.formula_column, FORMULA_COLUMNS, "formula_column")
    nsites_col = _declared_column(df, cfg.nsites_column, NSITES_COLUMNS, "nsites_column")
    out["declared_formula"] = df[formula_col] if formula_col else None
    out["declared_nsites"] = df[nsites_col] if nsites_col else None
    if formula_col or nsites_col:
        log.info("checking parsed structures against the table's columns %s",
                 [c for c in (formula_col, nsites_col) if c])
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


def column_by_id(cfg: TableSource, column: str) -> dict[str, Any]:
    """{material_id: cell} of one column of the table (ids as :func:`fetch` makes them).

    Used for split kind ``column`` (e.g. a benchmark's ``split`` column): the table is read again,
    so the ingest and its entries are the same whichever split is configured.
    """
    df = read_table(cfg.path, cfg.format, cfg.members)
    id_column = cfg.id_column
    if id_column not in df.columns and "index" in df.columns:  # ASE files without ids in info: the index
        id_column = "index"
    missing = [c for c in (id_column, column) if c not in df.columns]
    if missing:
        raise TableError(f"{cfg.path}: column(s) {missing} not in the table; it has {list(df.columns)[:20]}")
    ids = _ids(df[id_column], cfg.id_prefix)
    return {i: v for i, v in zip(ids, df[column].tolist()) if i is not None}


def collection_formulas(cfg: TableSource, energy_target: str) -> tuple[list[str], list[Any], list[Any]]:
    """Ids, formulas and ``energy_target`` values of *every* row of the table (for a convex hull).

    The formula comes from ``formula_column`` (``auto``: the usual names); a table without one
    cannot give a hull without parsing every structure, which this refuses to do silently.
    """
    if energy_target not in cfg.targets:
        raise TableError(f"hull energy {energy_target!r} is not a key of `targets` ({sorted(cfg.targets)})")
    df = read_table(cfg.path, cfg.format, cfg.members)
    formula_col = _declared_column(df, cfg.formula_column, FORMULA_COLUMNS, "formula_column")
    if formula_col is None:
        raise TableError(f"{cfg.path}: a hull needs a formula column (set `formula_column`); none of "
                         f"{list(FORMULA_COLUMNS)} is in the table")
    column = cfg.targets[energy_target]
    if column not in df.columns:
        raise TableError(f"{cfg.path}: energy column {column!r} not in the table")
    energies = df[column]
    if energy_target in cfg.per_atom:
        nsites_col = _declared_column(df, cfg.nsites_column, NSITES_COLUMNS, "nsites_column")
        if nsites_col is None:
            raise TableError(f"{cfg.path}: {energy_target} is per cell; a hull needs an nsites column")
        energies = pd.to_numeric(energies, errors="coerce") / pd.to_numeric(df[nsites_col], errors="coerce")
    ids = [i if i is not None else f"<row {n}>" for n, i in enumerate(_ids(df[cfg.id_column], cfg.id_prefix))]
    return ids, df[formula_col].tolist(), energies.tolist()
