"""JARVIS-DFT source through jarvis-tools' ``jarvis.db.figshare.data(dataset, store_dir=...)``.

jarvis-tools looks for ``<store_dir>/<figshare file name>.zip`` (for ``dft_3d`` with
jarvis-tools 2026.6: ``jdft_3d-9-24-2025.json.zip``) holding one JSON member named
``<figshare file name>`` (a list of records), and reads it offline when present; otherwise it
downloads it from figshare. :func:`fetch` keeps that behaviour but downloads into a temporary
folder first, so a failed download never leaves a corrupt zip in the store.

:func:`build_figshare_zip` writes such a zip from a list of records, and
:func:`prepare_local_store` turns the shared JARVIS subset
(``jarvis_dft3d_subset_with_structures.json.gz``) into a store usable offline.

Records carry ``jid``, ``atoms`` (JARVIS ``Atoms`` dict: ``lattice_mat``, ``coords``,
``elements``, ``cartesian``...) and property keys, where JARVIS writes ``"na"`` for a missing
value (read here as NaN).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
import zipfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from tqdm import tqdm

from matfuse.config import JarvisSource
from matfuse.io import atomic_path

log = logging.getLogger(__name__)

#: JARVIS' marker of a missing value.
MISSING = "na"
#: Extra zip member written by :func:`build_figshare_zip` (jarvis-tools ignores it): says the
#: store was built locally and from what, so provenance never passes a subset off as figshare's file.
LOCAL_STORE_MEMBER = "matfuse_local_store.json"


class JarvisSourceError(RuntimeError):
    """The JARVIS dataset cannot be loaded as configured."""


def figshare_info(dataset: str) -> dict[str, str]:
    """jarvis-tools' figshare entry of ``dataset``: url, file (JSON member) name, zip name, reference."""
    from jarvis.db.figshare import get_db_info

    info = get_db_info()
    if dataset not in info:
        raise JarvisSourceError(
            f"unknown JARVIS dataset {dataset!r} (source.dataset); jarvis-tools knows "
            f"{sorted(info)[:60]}{' ...' if len(info) > 60 else ''}"
        )
    url, js_tag, _message, reference = info[dataset][:4]
    return {"url": url, "json_name": js_tag, "zip_name": js_tag + ".zip", "reference": reference}


def store_zip_path(store_dir: str | os.PathLike[str], dataset: str = "dft_3d") -> Path:
    """Where ``figshare.data(dataset, store_dir)`` looks for (and stores) the dataset zip."""
    return Path(store_dir) / figshare_info(dataset)["zip_name"]


# ----------------------------------------------------------------------------- writing a store
def _full_atoms(atoms: dict[str, Any], jid: str) -> dict[str, Any]:
    """The atoms dict as figshare stores it (``Atoms.to_dict()``: adds abc, angles, props)."""
    from jarvis.core.atoms import Atoms

    try:
        return dict(
            Atoms(
                lattice_mat=atoms["lattice_mat"],
                coords=atoms["coords"],
                elements=atoms["elements"],
                cartesian=bool(atoms.get("cartesian", False)),
                props=atoms.get("props"),
            ).to_dict()
        )
    except KeyError as exc:
        raise JarvisSourceError(f"record {jid}: atoms dict lacks key {exc.args[0]!r}") from None


def build_figshare_zip(
    records: Iterable[dict[str, Any]],
    store_dir: str | os.PathLike[str],
    dataset: str = "dft_3d",
    built_from: str | None = None,
) -> Path:
    """Write ``records`` as the figshare zip of ``dataset`` into ``store_dir``; return its path.

    Like the published files, every record gets every key seen in any record (``"na"`` where it
    had none) and its ``atoms`` as ``jarvis.core.atoms.Atoms.to_dict()``. The zip holds one
    member read by jarvis-tools, the JSON list named as it expects, plus a small
    ``matfuse_local_store.json`` note (records count, ``built_from``, time) that :func:`fetch`
    copies into provenance. Written atomically.
    """
    records = list(records)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "jid" not in rec or "atoms" not in rec:
            raise JarvisSourceError(f"record #{i} is not a JARVIS record (needs 'jid' and 'atoms')")
    keys: list[str] = list(dict.fromkeys(k for rec in records for k in rec))
    out = []
    for rec in records:
        full = {k: (rec[k] if k in rec and rec[k] is not None else MISSING) for k in keys}
        full["atoms"] = _full_atoms(rec["atoms"], str(rec["jid"]))
        out.append(full)
    info = figshare_info(dataset)
    path = Path(store_dir) / info["zip_name"]
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(info["json_name"], json.dumps(out))
            note = {
                "built_by": "matfuse.sources.jarvis.build_figshare_zip",
                "built_from": built_from,
                "n_records": len(out),
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            zf.writestr(LOCAL_STORE_MEMBER, json.dumps(note))
    log.info("jarvis: wrote %d records (%d keys) to %s", len(out), len(keys), path)
    return path


def prepare_local_store(
    subset_json_gz: str | os.PathLike[str], store_dir: str | os.PathLike[str], dataset: str = "dft_3d"
) -> Path:
    """Make a JSON(.gz) list of JARVIS records (e.g. the shared dft_3d subset) readable offline.

    Writes ``<store_dir>/<figshare file name>.zip`` so ``figshare.data(dataset, store_dir)`` (and
    :func:`fetch` with ``source.store_dir = store_dir``) reads it without network. Returns the zip.
    """
    path = Path(subset_json_gz)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            records = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise JarvisSourceError(f"{path}: cannot read JARVIS records: {type(exc).__name__}: {exc}") from None
    if not isinstance(records, list):
        raise JarvisSourceError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    log.info("jarvis: building local %s store from %d records of %s", dataset, len(records), path)
    return build_figshare_zip(records, store_dir, dataset, built_from=str(path))


# ----------------------------------------------------------------------------- reading
def _check_zip(path: Path, json_name: str) -> None:
    """The zip must be readable and hold the JSON member (member names are only read, never extracted)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise JarvisSourceError(f"{path} is not a valid zip ({exc}); delete it and fetch again") from None
    if json_name not in names:
        raise JarvisSourceError(
            f"{path} does not hold {json_name!r} (it holds {names[:5]}); it is not the figshare file "
            f"jarvis-tools expects for this dataset"
        )


def local_store_note(path: Path) -> dict[str, Any] | None:
    """The note :func:`build_figshare_zip` leaves in a locally built zip (None for figshare's own)."""
    try:
        with zipfile.ZipFile(path) as zf:
            if LOCAL_STORE_MEMBER not in zf.namelist():
                return None
            note = json.loads(zf.read(LOCAL_STORE_MEMBER))
    except (zipfile.BadZipFile, json.JSONDecodeError, OSError):
        return None
    return note if isinstance(note, dict) else None


def _call_figshare(dataset: str, store_dir: Path) -> list[dict[str, Any]]:
    """``figshare.data`` with its prints sent to the log."""
    from jarvis.db import figshare

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            data = figshare.data(dataset, store_dir=str(store_dir))
    finally:
        for line in buf.getvalue().splitlines():
            if line.strip():
                log.info("jarvis-tools: %s", line.strip())
    return data


def load_records(dataset: str, store_dir: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], Path]:
    """Records of ``dataset`` via ``figshare.data``; offline when the zip is in ``store_dir``.

    When it is absent, jarvis-tools downloads it into a temporary folder beside the store, and
    the checked zip is then moved into place (no partial file is ever left in the store).
    """
    info = figshare_info(dataset)
    store = Path(store_dir)
    path = store / info["zip_name"]
    if not path.is_file():
        log.info("jarvis: %s not found; downloading %s (%s)", path, info["url"], info["json_name"])
        store.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=".download-", dir=store))
        try:
            try:
                data = _call_figshare(dataset, tmp_dir)
            except Exception as exc:
                if (tmp_dir / info["zip_name"]).is_file():  # something came back, but not the zip
                    raise JarvisSourceError(
                        f"JARVIS {dataset}: the download from {info['url']} is not the expected file "
                        f"({type(exc).__name__}: {exc}); nothing was stored in {store}"
                    ) from None
                raise JarvisSourceError(
                    f"JARVIS {dataset}: {path} is absent and the download from {info['url']} failed "
                    f"({type(exc).__name__}: {exc}). Without network, place the figshare file there "
                    f"(same name), or build a local store with "
                    f"matfuse.sources.jarvis.prepare_local_store(records.json.gz, {str(store)!r})."
                ) from None
            try:
                _check_zip(tmp_dir / info["zip_name"], info["json_name"])
            except JarvisSourceError as exc:
                raise JarvisSourceError(
                    f"JARVIS {dataset}: the download from {info['url']} is not the expected file ({exc})"
                ) from None
            os.replace(tmp_dir / info["zip_name"], path)
            log.info("jarvis: stored %s", path)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    else:
        _check_zip(path, info["json_name"])
        try:
            data = _call_figshare(dataset, store)
        except (json.JSONDecodeError, zipfile.BadZipFile, KeyError, OSError) as exc:
            raise JarvisSourceError(
                f"{path}: cannot read {info['json_name']}: {type(exc).__name__}: {exc}"
            ) from None
    if not isinstance(data, list):
        raise JarvisSourceError(f"{path}: {info['json_name']} is not a list of records")
    return data, path


def _to_float(value: Any) -> tuple[float, bool]:
    """(value as float or NaN, whether a non-missing value failed to convert)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in (MISSING, "")):
        return math.nan, False
    if isinstance(value, bool):
        return math.nan, True
    try:
        return float(value), False
    except (TypeError, ValueError):
        return math.nan, True


def _structure(atoms: Any) -> tuple[Any, str]:
    """(pymatgen Structure, "structure") via jarvis-tools; the raw dict with "jarvis" on failure.

    On failure the raw atoms value is handed on, so ingest's parser records why it is rejected.
    """
    from jarvis.core.atoms import Atoms

    if not isinstance(atoms, dict):
        return atoms, "jarvis"
    try:
        full = dict(atoms)
        full.setdefault("props", None)
        full.setdefault("cartesian", False)
        with contextlib.redirect_stdout(io.StringIO()):  # pymatgen_converter prints on failure
            structure = Atoms.from_dict(full).pymatgen_converter()
    except Exception:
        structure = None
    if structure is None:
        return atoms, "jarvis"
    return structure, "structure"


def records_to_frame(records: list[dict[str, Any]], targets: dict[str, str], provenance: str) -> pd.DataFrame:
    """Turn JARVIS records into the source contract's raw table (targets: canonical -> key)."""
    present = {k for rec in records for k in rec}
    absent = [f"{canon} -> {key}" for canon, key in targets.items() if key not in present]
    if records and absent:
        raise JarvisSourceError(
            f"source.targets {absent}: no record has that JARVIS key; keys present include "
            f"{sorted(k for k in present if k not in ('atoms',))[:80]}"
        )
    rows: list[dict[str, Any]] = []
    bad: dict[str, int] = {c: 0 for c in targets}
    n_fallback = 0
    for rec in tqdm(records, desc="jarvis: converting records", unit="rec", mininterval=2.0):
        structure, fmt = _structure(rec.get("atoms"))
        n_fallback += fmt == "jarvis"
        jid = rec.get("jid")
        row: dict[str, Any] = {
            "material_id": None if jid is None else str(jid),
            "structure": structure,
            "structure_format": fmt,
        }
        for canon, key in targets.items():
            row[canon], failed = _to_float(rec.get(key))
            bad[canon] += failed
        rows.append(row)
    for canon, n in bad.items():
        if n:
            log.warning("jarvis: %d value(s) of %r (%s) are not numbers; treated as missing", n, canon, targets[canon])
    if n_fallback:
        log.warning("jarvis: %d record(s) have atoms jarvis-tools cannot convert; passed on raw", n_fallback)
    out = pd.DataFrame(rows, columns=["material_id", "structure", "structure_format", *targets])
    for canon in targets:
        out[canon] = out[canon].astype("float64")
    out["provenance"] = provenance
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(cfg: JarvisSource) -> pd.DataFrame:
    """Load ``cfg.dataset`` through jarvis-tools and return raw records.

    Columns: ``material_id`` (jid), ``structure`` (pymatgen ``Structure``; the raw atoms dict
    with format ``"jarvis"`` if jarvis-tools cannot convert it), ``structure_format``, one float
    column per canonical target (NaN for ``"na"``), ``provenance`` (JSON).
    """
    info = figshare_info(cfg.dataset)
    records, path = load_records(cfg.dataset, cfg.store_dir)
    log.info("jarvis: %d %s records from %s", len(records), cfg.dataset, path)
    try:
        jt_version = version("jarvis-tools")
    except PackageNotFoundError:
        jt_version = None
    note = local_store_note(path)
    if note is not None:
        log.info("jarvis: %s is a local store built from %s", path, note.get("built_from"))
    provenance = json.dumps(
        {
            "source": "jarvis",
            "dataset": cfg.dataset,
            "figshare_url": info["url"],
            "figshare_file": info["json_name"],
            "database_version": info["json_name"] if note is None else None,
            "local_store": note,
            "zip": str(path),
            "zip_sha256": _sha256(path),
            "reference": info["reference"],
            "jarvis_tools_version": jt_version,
            "targets": dict(cfg.targets),
            "retrieved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "n_records": len(records),
        },
        sort_keys=True,
    )
    out = records_to_frame(records, dict(cfg.targets), provenance)
    log.info("jarvis: %d rows; missing per target: %s", len(out), {c: int(out[c].isna().sum()) for c in cfg.targets})
    return out
