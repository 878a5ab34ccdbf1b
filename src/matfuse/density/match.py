"""Labelling local densities: match each density's structure to a reference table (e.g. MP rows).

Local VASP densities (``chgdens_atomate``: Si, Al, LiH, Y/Mg phosphates) carry no material id
and no property labels. :func:`match_to_entries` compares each density's structure with the
reference rows of the same reduced formula using pymatgen's ``StructureMatcher``; a match gives
the density the reference's targets and id (``ref_id``), no match is a recorded reject. The
labels are the reference's: the density was computed with other DFT settings (functional, U,
k-points, relaxation), so label and image come from different calculations of the same crystal.
"""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar
from tqdm import tqdm

from matfuse.density.config import MatchConfig
from matfuse.density.io import MANIFEST_COLUMNS, scan_vasp_folder
from matfuse.io import atomic_path, rejects_frame, write_json, write_parquet

log = logging.getLogger(__name__)

STAGE = "density_match"
_FORMULA_SUM = re.compile(r"^_chemical_formula_sum\s+'?([^'\n]+)'?\s*$", re.MULTILINE)


def read_structure_header(path: str | Path) -> Structure:
    """The structure at the top of a CHGCAR/AECCAR (plain or .gz) without reading the grid.

    Raises ``ValueError`` naming the file when the POSCAR block cannot be parsed.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    lines: list[str] = []
    try:
        with opener(path, "rt") as fh:  # type: ignore[operator]
            for line in fh:
                if not line.strip() and len(lines) > 8:
                    break  # the blank line after the coordinates ends the POSCAR block
                lines.append(line)
                if len(lines) > 100_000:
                    raise ValueError("no blank line after the structure block")
        return Poscar.from_str("".join(lines)).structure
    except Exception as exc:
        raise ValueError(f"{path}: cannot read the structure header ({type(exc).__name__}: {exc})") from exc


def _reduced(formula: str) -> str | None:
    try:
        return Composition(formula).reduced_formula
    except Exception:
        return None


def reference_formulas(reference: pd.DataFrame, cif_column: str) -> pd.Series:
    """Reduced formula of every reference row (from a ``formula`` column, else the CIF's formula sum)."""
    if "formula" in reference.columns:
        src = reference["formula"].astype(str)
    else:
        src = reference[cif_column].astype(str).map(lambda c: (m.group(1) if (m := _FORMULA_SUM.search(c)) else ""))
    reduced = {f: _reduced(f) for f in src.unique()}
    return src.map(reduced)


def match_to_entries(
    manifest: pd.DataFrame, reference: pd.DataFrame, cfg: MatchConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Label the densities listed in ``manifest`` with the reference row their structure matches.

    Args:
        manifest: material_id, path, kind (as :func:`matfuse.density.io.scan_vasp_folder` gives).
        reference: rows with ``cfg.id_column``, ``cfg.cif_column`` and the ``cfg.targets`` columns.
        cfg: tolerances and column names.

    Returns:
        (table, matched manifest, rejects). ``table`` has one row per matched density:
        material_id (the density's id), cif (the density's own structure), ref_id, ref_formula,
        rms_dist, n_candidates and the targets (the reference's values). Among several matching
        rows the one with the smallest RMS displacement is taken (ties: first in the file).
    """
    missing = [c for c in (cfg.id_column, cfg.cif_column, *cfg.targets) if c not in reference.columns]
    if missing:
        raise KeyError(f"reference table lacks columns {missing} (has {list(reference.columns)})")
    formulas = reference_formulas(reference, cfg.cif_column)
    by_formula = {f: idx.to_numpy() for f, idx in reference.groupby(formulas).groups.items()}
    matcher = StructureMatcher(ltol=cfg.ltol, stol=cfg.stol, angle_tol=cfg.angle_tol, primitive_cell=True, scale=True)
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for mid, files in tqdm(manifest.groupby("material_id", sort=True), desc="match densities", mininterval=5):
        try:
            structure = read_structure_header(files["path"].iloc[0])
        except ValueError as exc:
            rejects.append({"material_id": mid, "stage": STAGE, "reason": str(exc)})
            continue
        formula = structure.composition.reduced_formula
        cands = by_formula.get(formula, np.zeros(0, dtype=int))
        best: tuple[float, int] | None = None
        for i in cands:
            ref = Structure.from_str(str(reference.loc[i, cfg.cif_column]), fmt="cif")
            rms = matcher.get_rms_dist(structure, ref)
            if rms is not None and (best is None or rms[0] < best[0] - 1e-12):
                best = (float(rms[0]), int(i))
        if best is None:
            why = (
                f"no reference entry with formula {formula}"
                if len(cands) == 0
                else f"{len(cands)} reference entries with formula {formula}, none matches the structure "
                f"(StructureMatcher ltol={cfg.ltol}, stol={cfg.stol}, angle_tol={cfg.angle_tol})"
            )
            rejects.append({"material_id": mid, "stage": STAGE, "reason": why})
            continue
        ref = reference.loc[best[1]]
        row = {
            "material_id": str(mid),
            "cif": str(CifWriter(structure)),
            "ref_id": str(ref[cfg.id_column]),
            "ref_formula": formula,
            "rms_dist": best[0],
            "n_candidates": int(len(cands)),
        }
        row.update({t: pd.to_numeric(ref[t], errors="coerce") for t in cfg.targets})
        rows.append(row)
        log.info("%s (%s) -> %s (rms %.3g, %d candidates)", mid, formula, row["ref_id"], best[0], len(cands))
    table = pd.DataFrame(rows, columns=["material_id", "cif", "ref_id", "ref_formula", "rms_dist", "n_candidates", *cfg.targets])
    matched = manifest[manifest["material_id"].isin(set(table["material_id"]))][MANIFEST_COLUMNS].reset_index(drop=True)
    return table, matched, rejects_frame(rejects)


def match_stage(
    cfg: MatchConfig, table_path: str | Path, manifest_path: str | Path, rejects_path: str | Path
) -> dict[str, Any]:
    """Stage: scan ``cfg.scan_dir``, match against ``cfg.reference``; write table.csv, manifest.csv, rejects.

    ``table.csv`` is the input of a ``table`` ingest source (CIF column ``cif``); ``manifest.csv``
    (absolute paths) the input of a ``local`` density source. Returns a summary (also written as
    ``summary.json`` beside the table).
    """
    manifest = scan_vasp_folder(cfg.scan_dir)
    if manifest.empty:
        raise ValueError(f"{cfg.scan_dir}: no <name>/CHGCAR|AECCAR0|AECCAR2[.gz] files found")
    manifest["path"] = [str(Path(p).resolve()) for p in manifest["path"]]
    usecols = [cfg.id_column, cfg.cif_column, *cfg.targets]
    header = pd.read_csv(cfg.reference, nrows=0).columns
    if "formula" in header:
        usecols.append("formula")
    reference = pd.read_csv(cfg.reference, usecols=lambda c: c in set(usecols), dtype={cfg.id_column: str})
    table, matched, rejects = match_to_entries(manifest, reference, cfg)
    with atomic_path(table_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(manifest_path) as tmp:
        matched.to_csv(tmp, index=False)
    write_parquet(rejects, rejects_path)
    summary = {
        "scan_dir": str(cfg.scan_dir),
        "reference": str(cfg.reference),
        "n_densities": int(manifest["material_id"].nunique()),
        "n_matched": int(len(table)),
        "n_rejected": int(len(rejects)),
        "matches": dict(zip(table["material_id"], table["ref_id"])),
        "note": "targets are the reference's values; the densities come from other DFT calculations",
    }
    write_json(summary, Path(table_path).with_name("summary.json"))
    log.info("matched %d of %d densities to reference entries", len(table), summary["n_densities"])
    return summary


__all__ = ["match_stage", "match_to_entries", "read_structure_header", "reference_formulas"]
