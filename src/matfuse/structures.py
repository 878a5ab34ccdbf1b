"""Structure parsing, validation and hashing.

Every source hands raw structures (CIF text, POSCAR text, pymatgen dicts, JARVIS ``atoms`` dicts,
or pymatgen ``Structure`` objects) to :func:`parse_structure`; the canonical entry table stores
them as pymatgen JSON (:func:`dump_structure` / :func:`load_structure`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any, Literal

import numpy as np
from pymatgen.core import Lattice, Structure

StructureFormat = Literal["auto", "cif", "poscar", "pymatgen", "jarvis", "structure"]


class StructureError(ValueError):
    """A structure that cannot be parsed or fails validation; the message is the reason."""


def _looks_like_cif(text: str) -> bool:
    return "_cell_length_a" in text or text.lstrip().startswith("data_") or "\ndata_" in text


def _from_jarvis(d: dict[str, Any]) -> Structure:
    try:
        lattice = Lattice(np.asarray(d["lattice_mat"], dtype=float))
        coords = np.asarray(d["coords"], dtype=float)
        species = list(d["elements"])
    except KeyError as exc:
        raise StructureError(f"JARVIS atoms dict lacks key {exc.args[0]!r}") from None
    if len(species) != len(coords):
        raise StructureError(f"JARVIS atoms dict has {len(species)} elements but {len(coords)} coordinates")
    cartesian = bool(d.get("cartesian", False))
    return Structure(lattice, species, coords, coords_are_cartesian=cartesian)


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
        if fmt in ("auto", "pymatgen", "jarvis") and text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise StructureError(f"structure looks like JSON but does not parse: {exc}") from None
        else:
            kind = fmt if fmt in ("cif", "poscar") else ("cif" if _looks_like_cif(text) else "poscar")
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
            return Structure.from_dict(value)
        except StructureError:
            raise
        except Exception as exc:
            raise StructureError(f"unparseable structure dict: {type(exc).__name__}: {exc}") from None
    raise StructureError(f"unsupported structure value of type {type(value).__name__}")


def validate_structure(
    structure: Structure, *, max_sites: int, allow_partial_occupancy: bool = False, min_distance: float = 0.5
) -> None:
    """Raise :class:`StructureError` if the structure is unusable for the workflow."""
    n = len(structure)
    if n == 0:
        raise StructureError("structure has no sites")
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
