"""Ingest: any source -> one canonical, validated entry table + a rejects table.

Rejected entries are recorded with the stage and reason (never dropped silently):
unparseable structures, partial occupancies (unless allowed), duplicate ids, structures above
``max_sites``, overlapping atoms, chemistry filters. Non-finite target values are set to null
(the entry stays for the other targets) and recorded with stage ``ingest:target``.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from tqdm import tqdm

from matfuse.config import ChemistryFilter, DatasetConfig
from matfuse.io import rejects_frame, write_parquet
from matfuse.structures import (
    StructureError,
    dump_structure,
    parse_structure,
    structure_hash,
    validate_structure,
)

log = logging.getLogger(__name__)

RAW_FIXED = {"material_id", "structure", "structure_format", "provenance"}


def fetch_raw(cfg: DatasetConfig) -> pd.DataFrame:
    """Dispatch to the configured source and return its raw records."""
    kind = cfg.source.kind
    if kind == "table":
        from matfuse.sources import table

        return table.fetch(cfg.source)
    if kind == "mp":
        from matfuse.sources import mp

        return mp.fetch(cfg.source)
    if kind == "jarvis":
        from matfuse.sources import jarvis

        return jarvis.fetch(cfg.source)
    raise ValueError(f"unknown source kind {kind!r}")


def _matches(elements: set[str], flt: ChemistryFilter) -> bool:
    if flt.any_of and not elements.intersection(flt.any_of):
        return False
    if flt.none_of and elements.intersection(flt.none_of):
        return False
    return True


def _spacegroup(structure) -> tuple[int | None, str | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = SpacegroupAnalyzer(structure, symprec=0.1)
            return int(sga.get_space_group_number()), str(sga.get_space_group_symbol())
    except Exception:  # spglib can fail on odd cells; symmetry is descriptive only
        return None, None


def canonicalise(raw: pd.DataFrame, cfg: DatasetConfig, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate raw records into (entries, rejects).

    With ``cfg.subset`` the raw rows are shuffled with ``cfg.subset_seed`` and examined in that
    order until ``subset`` valid entries are collected, so a small subset of a large table is
    cheap; rows never examined are neither entries nor rejects (the log says how many).
    """
    targets = [c for c in raw.columns if c not in RAW_FIXED]
    per_atom = set(raw.attrs.get("per_atom", []))
    rejects: list[dict[str, Any]] = []
    order = np.arange(len(raw))
    if cfg.subset is not None:
        order = np.random.default_rng(cfg.subset_seed).permutation(len(raw))
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    want = cfg.subset if cfg.subset is not None else len(raw)
    examined = 0
    ids = raw["material_id"].astype(str).to_numpy()
    counts = pd.Series(ids).value_counts()
    dup_ids = set(counts[counts > 1].index)
    for i in tqdm(order, desc=f"ingest {dataset}", unit="entry", mininterval=5):
        if len(rows) >= want:
            break
        examined += 1
        rec = raw.iloc[int(i)]
        mid = str(rec["material_id"]).strip()
        if not mid or mid.lower() in ("nan", "none"):
            rejects.append({"material_id": f"<row {int(i)}>", "stage": "ingest", "reason": "missing material_id"})
            continue
        if mid in dup_ids:
            if mid in seen:
                rejects.append(
                    {"material_id": mid, "stage": "ingest", "reason": "duplicate material_id (first occurrence kept)"}
                )
                continue
        try:
            structure = parse_structure(rec["structure"], rec.get("structure_format", "auto") or "auto")
            validate_structure(
                structure, max_sites=cfg.max_sites, allow_partial_occupancy=cfg.allow_partial_occupancy
            )
        except StructureError as exc:
            rejects.append({"material_id": mid, "stage": "ingest", "reason": str(exc)})
            seen.add(mid)
            continue
        elements = sorted({el.symbol for el in structure.composition.elements})
        if cfg.include is not None and not _matches(set(elements), cfg.include):
            rejects.append({"material_id": mid, "stage": "filter", "reason": f"not in include filter ({'-'.join(elements)})"})
            seen.add(mid)
            continue
        if cfg.exclude is not None and _matches(set(elements), cfg.exclude):
            rejects.append({"material_id": mid, "stage": "filter", "reason": f"excluded by chemistry filter ({'-'.join(elements)})"})
            seen.add(mid)
            continue
        seen.add(mid)
        row: dict[str, Any] = {"material_id": mid}
        for t in targets:
            v = rec[t]
            try:
                v = float(v)
            except (TypeError, ValueError):
                v = math.nan
            if not math.isfinite(v):
                what = "missing" if (v != v) else f"not finite ({v})"
                rejects.append({"material_id": mid, "stage": "ingest:target", "reason": f"{t}: {what}; entry kept for other targets"})
                v = None
            elif t in per_atom:
                v = v / len(structure)
            row[t] = v
        sg_num, sg_sym = _spacegroup(structure)
        row.update(
            source=json.loads(rec["provenance"]).get("source", "unknown") if isinstance(rec["provenance"], str) else "unknown",
            formula=structure.composition.reduced_formula,
            nsites=len(structure),
            spacegroup_number=sg_num,
            spacegroup_symbol=sg_sym,
            elements=elements,
            structure=dump_structure(structure),
            structure_hash=structure_hash(structure),
            provenance=rec["provenance"],
        )
        rows.append(row)
    columns = [
        "material_id", "source", "formula", "nsites", "spacegroup_number", "spacegroup_symbol",
        "elements", "structure", "structure_hash", *targets, "provenance",
    ]
    entries = pd.DataFrame(rows, columns=columns)
    entries = entries.astype({"nsites": "int32", "spacegroup_number": "Int32", **{t: "float64" for t in targets}})
    rej = rejects_frame(rejects)
    if examined < len(raw):
        log.info(
            "subset: collected %d valid entries after examining %d of %d rows (seed %d); %d rows not examined",
            len(entries), examined, len(raw), cfg.subset_seed, len(raw) - examined,
        )
    log.info("%s: %d entries, %d reject rows (%s)", dataset, len(entries), len(rej),
             rej.groupby("stage").size().to_dict() if len(rej) else {})
    return entries, rej


def ingest(cfg: DatasetConfig, dataset: str, entries_path: str | Path, rejects_path: str | Path) -> pd.DataFrame:
    """Stage function: fetch, validate and write the entry and rejects tables."""
    raw = fetch_raw(cfg)
    if raw.empty:
        raise ValueError(f"dataset {dataset!r}: the source returned no records")
    entries, rejects = canonicalise(raw, cfg, dataset)
    if entries.empty:
        raise ValueError(f"dataset {dataset!r}: no valid entries; see {rejects_path} for the reasons")
    write_parquet(rejects, rejects_path)
    write_parquet(entries, entries_path)
    return entries
