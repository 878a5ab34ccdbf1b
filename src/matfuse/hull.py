"""Energy above the convex hull of a collection, from its formation energies.

The hull is built with pymatgen's :class:`~pymatgen.analysis.phase_diagram.PhaseDiagram`, one per
chemical system of the collection from every entry inside it (all its sub-systems), over *every*
row of the collection (all sizes, whatever the dataset keeps), plus each element at 0 eV/atom (the
formation-energy reference). That is the exact hull of each entry's system; pymatgen's
``PatchedPhaseDiagram`` gives the same values but falls back to an approximate SLSQP
decomposition for hundreds of these entries and takes ~5 min here. ``e_above_hull`` is then "the hull of this
collection, with its own (for MT-CGCNN: legacy MP, pre-MP2020) energies" -- not Materials
Project's current value, which uses more phases and corrected energies. :func:`compare` measures
how far apart the two are on the entries that carry MP's own value.

Rows with a missing/non-numeric energy or an unreadable formula cannot enter the hull: they get
no ``e_above_hull`` and a reason (the ingest records it as a target reject).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

HULL_COLUMNS = ["material_id", "formula", "formation_energy_per_atom", "e_above_hull", "reason"]


def _composition(formula: Any):
    from pymatgen.core import Composition

    comp = Composition(str(formula))
    if comp.num_atoms <= 0:
        raise ValueError("empty composition")
    return comp


def _by_chemical_system(entries: list) -> dict[frozenset, list]:
    out: dict[frozenset, list] = {}
    for e in entries:
        out.setdefault(frozenset(e.composition.chemical_system.split("-")), []).append(e)
    return out


def _subsystems(system: frozenset) -> list[frozenset]:
    from itertools import combinations

    els = sorted(system)
    return [frozenset(c) for r in range(1, len(els) + 1) for c in combinations(els, r)]


def collection_hull(ids: list[str], formulas: list[Any], energies: list[Any]) -> pd.DataFrame:
    """``e_above_hull`` (eV/atom) of every row against the hull of all rows + the elements at 0.

    ``energies`` are formation energies per atom (eV/atom). Returns one row per input row
    (columns :data:`HULL_COLUMNS`); rows that cannot enter the hull have ``e_above_hull`` NaN and
    a ``reason``.
    """
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    if not (len(ids) == len(formulas) == len(energies)):
        raise ValueError("ids, formulas and energies differ in length")
    entries: list[PDEntry | None] = []
    reasons: list[str | None] = []
    elements: set[str] = set()
    for mid, formula, energy in zip(ids, formulas, energies):
        try:
            e = float(energy)
            if not math.isfinite(e):
                raise ValueError
        except (TypeError, ValueError):
            entries.append(None)
            reasons.append(f"no formation energy ({energy!r}): not in the hull")
            continue
        try:
            comp = _composition(formula)
        except Exception as exc:  # pymatgen raises several types for bad formulas
            entries.append(None)
            reasons.append(f"formula {formula!r} not readable ({exc}): not in the hull")
            continue
        elements.update(el.symbol for el in comp.elements)
        entries.append(PDEntry(comp, e * comp.num_atoms, name=str(mid)))
        reasons.append(None)
    refs = [PDEntry(Composition(el), 0.0, name=f"{el} (element, 0 eV/atom)") for el in sorted(elements)]
    usable = [e for e in entries if e is not None]
    log.info("hull of %d entries + %d elemental references (%d rows without one)",
             len(usable), len(refs), len(entries) - len(usable))
    by_system = _by_chemical_system(usable + refs)
    ehull = np.full(len(entries), np.nan)
    # one diagram per maximal chemical system (not inside another one of the collection); every
    # entry is scored on the first maximal system that contains it
    systems = sorted({frozenset(e.composition.chemical_system.split("-")) for e in usable}, key=lambda s: (-len(s), sorted(s)))
    owner: dict[frozenset, frozenset] = {}
    for system in systems:
        if system not in owner:
            for sub in _subsystems(system):
                owner.setdefault(sub, system)
    index = {id(e): k for k, e in enumerate(entries) if e is not None}
    for system in [s for s in systems if owner[s] == s]:
        subs = _subsystems(system)
        diagram = PhaseDiagram([e for sub in subs for e in by_system.get(sub, ())])
        for sub in subs:
            if owner.get(sub) != system:
                continue
            for entry in by_system.get(sub, ()):
                if id(entry) in index:
                    ehull[index[id(entry)]] = max(0.0, float(diagram.get_e_above_hull(entry, allow_negative=False)))
    return pd.DataFrame({
        "material_id": [str(i) for i in ids],
        "formula": [str(f) for f in formulas],
        "formation_energy_per_atom": pd.to_numeric(pd.Series(energies), errors="coerce").to_numpy(),
        "e_above_hull": ehull,
        "reason": reasons,
    })


def compare(ours: pd.DataFrame, reference: pd.DataFrame, within: float = 0.05) -> dict[str, Any]:
    """Agreement of our ``e_above_hull`` with a reference table (``material_id``, ``e_above_hull``).

    MAE, median absolute difference, share within ``within`` eV/atom, share of entries both call
    on the hull (< 1 meV), Spearman rank correlation; over the ids in both with a value.
    """
    ref = reference[["material_id", "e_above_hull"]].dropna().drop_duplicates("material_id")
    both = ours[["material_id", "e_above_hull"]].dropna().merge(ref, on="material_id", suffixes=("_ours", "_ref"))
    n = len(both)
    out: dict[str, Any] = {"n_reference": int(len(ref)), "n_compared": int(n)}
    if n == 0:
        return out
    diff = both["e_above_hull_ours"] - both["e_above_hull_ref"]
    on_ours, on_ref = both["e_above_hull_ours"] < 1e-3, both["e_above_hull_ref"] < 1e-3
    out.update(
        mae=float(diff.abs().mean()),
        median_abs_diff=float(diff.abs().median()),
        mean_diff=float(diff.mean()),
        within=float(within),
        share_within=float((diff.abs() <= within).mean()),
        share_within_0_1=float((diff.abs() <= 0.1).mean()),
        on_hull_both=int((on_ours & on_ref).sum()),
        on_hull_ours_only=int((on_ours & ~on_ref).sum()),
        on_hull_ref_only=int((~on_ours & on_ref).sum()),
        spearman=float(both["e_above_hull_ours"].rank().corr(both["e_above_hull_ref"].rank())),
    )
    return out


def read_reference(paths: list[str | Path]) -> pd.DataFrame:
    """``material_id``/``e_above_hull`` rows of CSV files that carry MP's own value (e.g. MP-20 splits)."""
    frames = []
    for p in paths:
        df = pd.read_csv(p, usecols=lambda c: c in {"material_id", "e_above_hull"})
        missing = {"material_id", "e_above_hull"} - set(df.columns)
        if missing:
            raise ValueError(f"{p}: hull reference table lacks column(s) {sorted(missing)}")
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["material_id", "e_above_hull"])


def build_hull(source, energy_target: str, check_paths: list[str], out_path: str | Path,
               check_path: str | Path) -> pd.DataFrame:
    """Stage function: the hull table of a table source's whole collection, and its check.

    ``source`` is a :class:`matfuse.config.TableSource`; every row of its table enters the hull
    (ids with the source's ``id_prefix``, the formula from ``formula_column``).
    """
    from matfuse.io import write_json, write_parquet
    from matfuse.sources.table import collection_formulas

    ids, formulas, energies = collection_formulas(source, energy_target)
    table = collection_hull(ids, formulas, energies)
    write_parquet(table, out_path)
    report = {"collection": str(source.path), "n_rows": int(len(table)),
              "n_in_hull": int(table["e_above_hull"].notna().sum()),
              "n_on_hull": int((table["e_above_hull"] < 1e-3).sum()),
              "energies": f"{energy_target} of the collection (per atom), elements at 0 eV/atom",
              "checks": {}}
    if check_paths:
        report["checks"] = {"reference": [str(p) for p in check_paths],
                            **compare(table, read_reference(check_paths))}
    write_json(report, check_path)
    log.info("hull check: %s", report["checks"])
    return table
