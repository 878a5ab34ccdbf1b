"""Structure parsing, validation and hashing.

Every source hands raw structures (CIF text, POSCAR text, pymatgen dicts, JARVIS ``atoms`` dicts,
or pymatgen ``Structure`` objects) to :func:`parse_structure`; the canonical entry table stores
them as pymatgen JSON (:func:`dump_structure` / :func:`load_structure`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from typing import Any, Literal

import numpy as np
from pymatgen.core import Composition, DummySpecies, Element, Lattice, Species, Structure

StructureFormat = Literal["auto", "cif", "poscar", "pymatgen", "jarvis", "positions", "structure"]

#: Keys of a positions record (MatDeepLearn / matbench-like JSON): Cartesian positions (Å), cell rows (Å), Z.
POSITION_KEYS = ("positions", "cell", "atomic_numbers")


class StructureError(ValueError):
    """A structure that cannot be parsed or fails validation; the message is the reason."""


def looks_like_cif(text: str) -> bool:
    return "_cell_length_a" in text or text.lstrip().startswith("data_") or "\ndata_" in text


def _from_jarvis(d: dict[str, Any]) -> Structure:
    try:
        matrix = np.asarray(d["lattice_mat"], dtype=float)
        coords = np.asarray(d["coords"], dtype=float)
        species = list(d["elements"])
    except KeyError as exc:
        raise StructureError(f"JARVIS atoms dict lacks key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise StructureError(f"JARVIS atoms dict holds non-numeric lattice or coordinates: {exc}") from None
    if not np.isfinite(matrix).all():
        raise StructureError("non-finite lattice vector component (NaN or inf)")
    if not np.isfinite(coords).all():
        raise StructureError("non-finite atomic coordinate (NaN or inf)")
    lattice = Lattice(matrix)
    if len(species) != len(coords):
        raise StructureError(f"JARVIS atoms dict has {len(species)} elements but {len(coords)} coordinates")
    cartesian = bool(d.get("cartesian", False))
    return Structure(lattice, species, coords, coords_are_cartesian=cartesian)


def _from_positions(d: dict[str, Any]) -> Structure:
    """A positions record: ``positions`` (Cartesian, Å), ``cell`` (3 row vectors, Å), ``atomic_numbers``."""
    missing = [k for k in POSITION_KEYS if k not in d]
    if missing:
        raise StructureError(f"positions record lacks key(s) {missing}")
    try:
        matrix = np.asarray(d["cell"], dtype=float)
        coords = np.asarray(d["positions"], dtype=float)
        numbers = [int(z) for z in np.asarray(d["atomic_numbers"]).ravel()]
    except (TypeError, ValueError) as exc:
        raise StructureError(f"positions record holds non-numeric values: {exc}") from None
    if matrix.shape != (3, 3):
        raise StructureError(f"cell must be 3 x 3, got shape {matrix.shape}")
    if coords.ndim != 2 or coords.shape[1:] != (3,):
        raise StructureError(f"positions must be N x 3, got shape {coords.shape}")
    if len(numbers) != len(coords):
        raise StructureError(f"{len(numbers)} atomic numbers but {len(coords)} positions")
    if not (np.isfinite(matrix).all() and np.isfinite(coords).all()):
        raise StructureError("non-finite cell or position component (NaN or inf)")
    bad = [z for z in numbers if not 1 <= z <= 118]
    if bad:
        raise StructureError(f"atomic number {bad[0]} is not an element")
    return Structure(Lattice(matrix), numbers, coords, coords_are_cartesian=True)


def parse_structure(value: Any, fmt: StructureFormat = "auto") -> Structure:
    """Parse a raw structure value; raise :class:`StructureError` with a readable reason."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise StructureError("structure is missing (empty cell)")
    if isinstance(value, Structure):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise StructureError("structure is an empty string")
        if fmt in ("auto", "pymatgen", "jarvis", "positions") and text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise StructureError(f"structure looks like JSON but does not parse: {exc}") from None
        else:
            kind = fmt if fmt in ("cif", "poscar") else ("cif" if looks_like_cif(text) else "poscar")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    structure = Structure.from_str(text, fmt=kind)
            except Exception as exc:  # pymatgen raises many types for bad text
                raise StructureError(f"unparseable {kind.upper()}: {type(exc).__name__}: {exc}") from None
            return structure
    if isinstance(value, dict):
        try:
            if fmt == "jarvis" or (fmt == "auto" and "lattice_mat" in value):
                return _from_jarvis(value)
            if fmt == "positions" or (fmt == "auto" and all(k in value for k in POSITION_KEYS)):
                return _from_positions(value)
            return Structure.from_dict(value)
        except StructureError:
            raise
        except Exception as exc:
            raise StructureError(f"unparseable structure dict: {type(exc).__name__}: {exc}") from None
    raise StructureError(f"unsupported structure value of type {type(value).__name__}")


def _finite(value: Any) -> bool:
    """False for a NaN/inf number or an array/list holding one (other values pass)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, (int, float, np.number)):
        return math.isfinite(float(value))
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            return all(_finite(v) for v in value)
        return bool(np.isfinite(arr).all())
    return True


def check_finite(structure: Structure) -> None:
    """Reject NaN/inf in the lattice, coordinates, occupancies or numeric site properties.

    Runs before anything hands the structure to a C library: spglib segfaults on a NaN coordinate.
    """
    if not np.isfinite(structure.lattice.matrix).all():
        raise StructureError("non-finite lattice vector component (NaN or inf)")
    if len(structure) and not np.isfinite(structure.frac_coords).all():
        bad = int(np.argwhere(~np.isfinite(structure.frac_coords))[0][0])
        raise StructureError(f"non-finite atomic coordinate (NaN or inf) at site {bad}")
    for i, site in enumerate(structure):
        for sp, occu in site.species.items():
            if not math.isfinite(float(occu)):
                raise StructureError(f"non-finite occupancy of {sp} at site {i}")
        for name, value in site.properties.items():
            if not _finite(value):
                raise StructureError(f"non-finite site property {name!r} at site {i}")


def check_elements(structure: Structure) -> None:
    """Reject dummy or unknown species (pymatgen parses e.g. 'Qq' into a DummySpecies)."""
    for sp in structure.composition:
        if isinstance(sp, Element) or (isinstance(sp, Species) and not isinstance(sp, DummySpecies)):
            continue
        symbol = getattr(sp, "symbol", None) or str(sp)
        raise StructureError(f"unknown element {symbol!r} (not in the periodic table)")


_CIF_FORMULA_SUM = re.compile(r"^[ \t]*_chemical_formula_sum[ \t]+(?:'([^']*)'|\"([^\"]*)\"|(\S+))", re.M)
_CIF_Z = re.compile(r"^[ \t]*_cell_formula_units_Z[ \t]+(\d+)", re.M)


def declared_in_cif(text: str) -> tuple[str | None, int | None]:
    """``(_chemical_formula_sum, _cell_formula_units_Z)`` of a CIF text (``None`` where absent)."""
    m = _CIF_FORMULA_SUM.search(text)
    formula = next((g for g in m.groups() if g is not None), None) if m else None
    if formula is not None and formula.strip() in ("", "?", "."):
        formula = None
    z = _CIF_Z.search(text)
    return formula, (int(z.group(1)) if z else None)


def _composition(formula: str) -> Composition | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            comp = Composition(formula)
    except Exception:
        return None
    if not comp.num_atoms or any(not isinstance(el, Element) for el in comp.elements):
        return None
    return comp


def check_declared(
    structure: Structure,
    *,
    formula: str | None = None,
    nsites: int | None = None,
    formula_units_z: int | None = None,
    where: str = "the table",
) -> None:
    """Reject a parsed structure that disagrees with the formula / site count its input declares.

    ``formula`` may be the cell's formula (pymatgen's ``_chemical_formula_sum``, e.g. ``Hf4 S2``)
    or a reduced/per-formula-unit one (``Hf2S``): the reduced compositions must be equal, and the
    cell must hold ``atoms(formula)`` or ``Z * atoms(formula)`` sites when ``formula_units_z`` is
    given, a whole multiple of ``atoms(formula)`` otherwise. A CIF cut at a line boundary parses with atoms missing and fails here. An unparseable
    declared formula is not checked (it says nothing we can hold the structure to).
    """
    comp = structure.composition
    if nsites is not None and int(nsites) != len(structure):
        raise StructureError(f"parsed {len(structure)} sites but {where} declares nsites={int(nsites)}")
    if formula is None:
        return
    declared = _composition(formula)
    if declared is None:
        return
    if not declared.reduced_composition.almost_equals(comp.reduced_composition, rtol=1e-3, atol=1e-3):
        raise StructureError(
            f"parsed formula {comp.reduced_formula} ({len(structure)} sites) disagrees with the formula "
            f"{formula!r} declared in {where}"
        )
    if not structure.is_ordered:
        return  # site counts of disordered cells say nothing about the formula's atom count
    per, n = declared.num_atoms, len(structure)
    if formula_units_z is not None:
        ok = any(abs(n - k * per) < 1e-6 for k in (1, formula_units_z))
        said = f"{formula!r} with Z={formula_units_z}"
    else:  # a cell formula, or a reduced / per-formula-unit one: the cell holds a whole multiple
        ratio = n / per
        ok = ratio >= 1 - 1e-6 and abs(ratio - round(ratio)) < 1e-6
        said = repr(formula)
    if not ok:
        raise StructureError(f"parsed {n} sites, which does not fit the formula {said} declared in {where}")


def validate_structure(
    structure: Structure, *, max_sites: int, allow_partial_occupancy: bool = False, min_distance: float = 0.5
) -> None:
    """Raise :class:`StructureError` if the structure is unusable for the workflow."""
    n = len(structure)
    if n == 0:
        raise StructureError("structure has no sites")
    check_finite(structure)
    check_elements(structure)
    if n > max_sites:
        raise StructureError(f"{n} sites exceeds max_sites={max_sites}")
    if not allow_partial_occupancy and not structure.is_ordered:
        raise StructureError("partial occupancy (disordered sites) and allow_partial_occupancy is false")
    if structure.volume <= 1e-6 or not np.isfinite(structure.volume):
        raise StructureError(f"degenerate lattice (volume {structure.volume:.3g} Å^3)")
    if n > 1:
        dmat = structure.distance_matrix
        np.fill_diagonal(dmat, np.inf)
        dmin = float(dmat.min())
        if dmin < min_distance:
            raise StructureError(f"atoms overlap: closest pair {dmin:.3f} Å < {min_distance} Å")


def dump_structure(structure: Structure) -> str:
    return json.dumps(structure.as_dict(), separators=(",", ":"))


def load_structure(text: str) -> Structure:
    return Structure.from_dict(json.loads(text))


def structure_hash(structure: Structure, decimals: int = 5) -> str:
    """A content hash of the structure (lattice, species, wrapped fractional coordinates).

    Identical inputs give identical hashes; it keys per-structure caches (texts, graphs).
    """
    lat = np.round(structure.lattice.matrix, decimals) + 0.0
    frac = np.mod(np.round(structure.frac_coords, decimals), 1.0)
    frac = np.round(frac, decimals) % 1.0 + 0.0
    species = [str(sp) for sp in structure.species_and_occu]
    order = sorted(range(len(species)), key=lambda i: (species[i], *frac[i]))
    h = hashlib.sha256()
    h.update(lat.astype("<f8").tobytes())
    for i in order:
        h.update(species[i].encode())
        h.update(frac[i].astype("<f8").tobytes())
    return h.hexdigest()[:32]
