"""Ingest: any source -> one canonical, validated entry table + a rejects table.

Rejected entries are recorded with the stage and reason (never dropped silently): missing or
duplicate ids, unparseable structures, non-finite numbers, unknown elements, a parsed structure
that disagrees with the formula / site count its input declares (a CIF cut short), partial
occupancies (unless allowed), structures above ``max_sites``, overlapping atoms, chemistry
filters, and a crash of a native library on one entry (structures are examined in worker
processes, :mod:`matfuse.isolation`). Missing or non-numeric target values are set to null (the
entry stays for the other targets) and recorded with stage ``ingest:target``; ids whose
structures are identical are kept and noted with stage ``ingest:shared-structure``.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from tqdm import tqdm

from matfuse.config import ChemistryFilter, DatasetConfig
from matfuse.io import rejects_frame, write_parquet
from matfuse.isolation import WorkerCrash, map_isolated
from matfuse.structures import (
    StructureError,
    check_declared,
    check_finite,
    declared_in_cif,
    dump_structure,
    looks_like_cif,
    parse_structure,
    structure_hash,
    validate_structure,
)

log = logging.getLogger(__name__)

#: Raw columns every source provides (``declared_*`` are optional: what the input says the
#: structure is, checked against what was parsed).
RAW_FIXED = {"material_id", "structure", "structure_format", "provenance", "declared_formula", "declared_nsites"}


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


@dataclass(frozen=True)
class _Checks:
    """What :func:`examine` needs of the dataset config (small, picklable)."""

    max_sites: int
    allow_partial_occupancy: bool
    include: ChemistryFilter | None
    exclude: ChemistryFilter | None


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def examine(checks: _Checks, task: tuple[Any, str, Any, Any]) -> dict[str, Any]:
    """Parse, validate and describe one raw structure (runs in a worker process; never raises).

    Returns either ``{"reject": (stage, reason)}`` or the entry's structure columns.
    """
    value, fmt, declared_formula, declared_nsites = task
    try:
        structure = parse_structure(value, fmt or "auto")
        validate_structure(
            structure, max_sites=checks.max_sites, allow_partial_occupancy=checks.allow_partial_occupancy
        )
        if isinstance(value, str) and looks_like_cif(value):
            formula, z = declared_in_cif(value)
            check_declared(structure, formula=formula, formula_units_z=z, where="the CIF")
        if not _missing(declared_formula) or not _missing(declared_nsites):
            check_declared(
                structure,
                formula=None if _missing(declared_formula) else str(declared_formula),
                nsites=None if _missing(declared_nsites) else _as_count(declared_nsites),
                where="the table",
            )
    except StructureError as exc:
        return {"reject": ("ingest", str(exc))}
    except Exception as exc:  # anything unforeseen in pymatgen is this entry's problem only
        return {"reject": ("ingest", f"structure check failed: {type(exc).__name__}: {exc}")}
    elements = sorted({el.symbol for el in structure.composition.elements})
    if checks.include is not None and not _matches(set(elements), checks.include):
        return {"reject": ("filter", f"not in include filter ({'-'.join(elements)})")}
    if checks.exclude is not None and _matches(set(elements), checks.exclude):
        return {"reject": ("filter", f"excluded by chemistry filter ({'-'.join(elements)})")}
    sg_num, sg_sym = _spacegroup(structure)
    return {
        "formula": structure.composition.reduced_formula,
        "nsites": len(structure),
        "spacegroup_number": sg_num,
        "spacegroup_symbol": sg_sym,
        "elements": elements,
        "structure": dump_structure(structure),
        "structure_hash": structure_hash(structure),
    }


def _as_count(value: Any) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise StructureError(f"the table's nsites value {value!r} is not a number") from None
    if not math.isfinite(f) or f != int(f):
        raise StructureError(f"the table's nsites value {value!r} is not a whole number")
    return int(f)


def parse_target(value: Any) -> tuple[float | None, str | None]:
    """A raw target value as a float, or ``(None, why)`` ("missing", "not a number: 'abc'", ...)."""
    if isinstance(value, (list, tuple)) or (hasattr(value, "ndim") and getattr(value, "ndim", 0) == 1):
        values = list(value)
        if len(values) != 1:
            return None, (f"a list of {len(values)} values, not one number: map one element in the config, "
                          "e.g. targets: {name: 'column[0]'}")
        value = values[0]
    if _missing(value):
        return None, "missing"
    if isinstance(value, bool):
        return None, f"not a number: {value!r}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        text = str(value)
        return None, f"not a number: {text[:40]!r}" + ("..." if len(text) > 40 else "")
    if not math.isfinite(v):
        return None, f"not finite ({v})"
    return v, None


def _structure_key(value: Any, fmt: str) -> str | None:
    """structure_hash of a raw value, or None if it does not parse (no C library is called)."""
    try:
        structure = parse_structure(value, fmt or "auto")
        check_finite(structure)
        return structure_hash(structure)
    except Exception:
        return None


def _duplicate_rejects(raw: pd.DataFrame, ids: list[str | None], targets: list[str]) -> tuple[set[int], list[dict[str, Any]]]:
    """Rows whose id repeats an earlier file row: the first file row is kept, always.

    Each later row is a reject saying whether its structure and targets agree with the kept row.
    """
    first: dict[str, int] = {}
    later: list[int] = []
    for i, mid in enumerate(ids):
        if mid is None:
            continue
        if mid in first:
            later.append(i)
        else:
            first[mid] = i
    rejects = []
    for i in later:
        mid = ids[i]
        j = first[mid]
        a, b = raw.iloc[j], raw.iloc[i]
        if isinstance(a["structure"], str) and isinstance(b["structure"], str) and a["structure"].strip() == b["structure"].strip():
            same_structure: bool | None = True
        else:
            ka = _structure_key(a["structure"], a.get("structure_format", "auto"))
            kb = _structure_key(b["structure"], b.get("structure_format", "auto"))
            same_structure = None if ka is None or kb is None else ka == kb
        differing = [t for t in targets if parse_target(a[t])[0] != parse_target(b[t])[0]]
        agree = {True: "same structure", False: "DIFFERENT structure", None: "structure not comparable"}[same_structure]
        agree += "; same targets" if not differing else f"; different {', '.join(differing)}"
        rejects.append(
            {"material_id": mid, "stage": "ingest",
             "reason": f"duplicate material_id: file row {i} repeats row {j}, the first file row is kept ({agree})"}
        )
    return set(later), rejects


def _clean_id(value: Any) -> str | None:
    if _missing(value):
        return None
    mid = str(value).strip()
    return None if not mid or mid.lower() in ("nan", "none", "<na>") else mid


def canonicalise(
    raw: pd.DataFrame, cfg: DatasetConfig, dataset: str, workers: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate raw records into (entries, rejects).

    Id problems are recorded for every row: a missing id is a reject, and of rows sharing an id the
    first file row is kept (the others are rejects saying whether they agree with it). With
    ``cfg.subset`` the remaining rows are shuffled with ``cfg.subset_seed`` and examined in that
    order until ``subset`` valid entries are collected, so a small subset of a large table is
    cheap; rows never examined are neither entries nor rejects (the log says how many).

    Structures are examined in ``workers`` worker processes (:mod:`matfuse.isolation`): a native
    crash (e.g. a spglib segfault) rejects that one entry with the reason.
    """
    targets = [c for c in raw.columns if c not in RAW_FIXED and not c.startswith("_")]
    per_atom = set(raw.attrs.get("per_atom", []))
    rejects: list[dict[str, Any]] = []
    ids = [_clean_id(v) for v in raw["material_id"].tolist()]
    for i, mid in enumerate(ids):
        if mid is None:
            rejects.append({"material_id": f"<row {i}>", "stage": "ingest", "reason": "missing material_id (empty cell)"})
    skip, dup_rejects = _duplicate_rejects(raw, ids, targets)
    rejects.extend(dup_rejects)
    order = np.arange(len(raw))
    if cfg.subset is not None:
        order = np.random.default_rng(cfg.subset_seed).permutation(len(raw))
    candidates = [int(i) for i in order if ids[int(i)] is not None and int(i) not in skip]
    want = cfg.subset if cfg.subset is not None else len(raw)
    checks = _Checks(cfg.max_sites, cfg.allow_partial_occupancy, cfg.include, cfg.exclude)
    column = {c: raw[c].tolist() if c in raw.columns else [None] * len(raw)
              for c in ("structure", "structure_format", "declared_formula", "declared_nsites")}
    tasks = (
        (column["structure"][i], column["structure_format"][i] or "auto", column["declared_formula"][i], column["declared_nsites"][i])
        for i in candidates
    )
    rows: list[dict[str, Any]] = []
    examined = 0
    progress = tqdm(total=min(want, len(candidates)), desc=f"ingest {dataset}", unit="entry", mininterval=5)
    stream = map_isolated(partial(examine, checks), tasks, workers=max(1, workers))
    for k, result in stream:
        if len(rows) >= want:
            break
        examined += 1
        i = candidates[k]
        mid = ids[i]
        if isinstance(result, WorkerCrash):
            rejects.append({"material_id": mid, "stage": "ingest", "reason": result.reason})
            continue
        if "reject" in result:
            stage, reason = result["reject"]
            rejects.append({"material_id": mid, "stage": stage, "reason": reason})
            continue
        rec = raw.iloc[i]
        row: dict[str, Any] = {"material_id": mid}
        for t in targets:
            v, why = parse_target(rec[t])
            if why is not None:
                rejects.append({"material_id": mid, "stage": "ingest:target", "reason": f"{t}: {why}; entry kept for other targets"})
            elif t in per_atom:
                v = v / result["nsites"]
            row[t] = v
        prov = rec["provenance"]
        row.update(result, source=json.loads(prov).get("source", "unknown") if isinstance(prov, str) else "unknown", provenance=prov)
        rows.append(row)
        progress.update(1)
    stream.close()  # stops the worker pool now, not when the generator is collected
    progress.close()
    columns = [
        "material_id", "source", "formula", "nsites", "spacegroup_number", "spacegroup_symbol",
        "elements", "structure", "structure_hash", *targets, "provenance",
    ]
    entries = pd.DataFrame(rows, columns=columns)
    entries = entries.astype({"nsites": "int32", "spacegroup_number": "Int32", **{t: "float64" for t in targets}})
    rejects.extend(shared_structure_notes(entries))
    rej = rejects_frame(rejects)
    if examined < len(candidates):
        log.info(
            "subset: collected %d valid entries after examining %d of %d rows (seed %d); %d rows not examined",
            len(entries), examined, len(raw), cfg.subset_seed, len(candidates) - examined,
        )
    log.info("%s: %d entries, %d reject rows (%s)", dataset, len(entries), len(rej),
             rej.groupby("stage").size().to_dict() if len(rej) else {})
    return entries, rej


SHARED_STAGE = "ingest:shared-structure"


def shared_structure_notes(entries: pd.DataFrame) -> list[dict[str, Any]]:
    """Warnings (stage ``ingest:shared-structure``, entries kept) for ids whose structures are identical.

    The split keeps every such group on one side (:func:`matfuse.split.make_splits`).
    """
    if entries.empty:
        return []
    notes = []
    for h, ids in entries.groupby("structure_hash", sort=True)["material_id"]:
        ids = sorted(ids)
        if len(ids) < 2:
            continue
        for mid in ids:
            others = [o for o in ids if o != mid]
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            notes.append({"material_id": mid, "stage": SHARED_STAGE,
                          "reason": f"same structure as {shown} (structure_hash {h[:12]}); entry kept, split with them"})
    if notes:
        log.warning("%d entries share their structure with another id (see rejects, stage %s)", len(notes), SHARED_STAGE)
    return notes


def _reason_summary(rejects: pd.DataFrame, top: int = 5) -> str:
    if rejects.empty:
        return "no rejects were recorded"
    counts = rejects.groupby(["stage", "reason"]).size().sort_values(ascending=False)
    parts = [f"{n} x {stage}: {reason}" for (stage, reason), n in counts.head(top).items()]
    more = len(counts) - top
    return "; ".join(parts) + (f"; and {more} other reasons" if more > 0 else "")


def add_hull_target(raw: pd.DataFrame, cfg: DatasetConfig, hull_path: str | Path) -> pd.DataFrame:
    """The hull target (``cfg.hull.target``) of each raw row, from the collection's hull table."""
    hull = pd.read_parquet(hull_path, columns=["material_id", "e_above_hull"])
    values = hull.drop_duplicates("material_id").set_index("material_id")["e_above_hull"]
    raw = raw.copy()
    raw[cfg.hull.target] = raw["material_id"].map(values)
    log.info("%s from %s: %d of %d rows", cfg.hull.target, hull_path, int(raw[cfg.hull.target].notna().sum()), len(raw))
    return raw


def ingest(
    cfg: DatasetConfig, dataset: str, entries_path: str | Path, rejects_path: str | Path, workers: int = 1,
    hull_path: str | Path | None = None,
) -> pd.DataFrame:
    """Stage function: fetch, validate and write the entry and rejects tables.

    With ``cfg.hull`` the collection's hull table (rule ``hull``, :mod:`matfuse.hull`) adds the
    ``e_above_hull`` target.
    """
    raw = fetch_raw(cfg)
    if raw.empty:
        raise ValueError(f"dataset {dataset!r}: the source returned no records")
    if cfg.hull is not None:
        if hull_path is None:
            raise ValueError(f"dataset {dataset!r} has a hull target but no hull table was given")
        raw = add_hull_target(raw, cfg, hull_path)
    entries, rejects = canonicalise(raw, cfg, dataset, workers=workers)
    if entries.empty:
        # Snakemake deletes the outputs of a failed job, so the reasons go into the log and the error.
        for rec in rejects.head(50).itertuples():
            log.error("reject %s [%s]: %s", rec.material_id, rec.stage, rec.reason)
        raise ValueError(
            f"dataset {dataset!r}: no valid entries among {len(raw)} rows; {_reason_summary(rejects)} "
            f"(the first 50 rejects are in this job's log)"
        )
    write_parquet(rejects, rejects_path)
    write_parquet(entries, entries_path)
    return entries
