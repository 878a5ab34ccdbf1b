"""Regridding VASP densities onto a fixed grid with pyrho, in e/Å^3.

Units (read from pyrho's source): VASP volumetric data hold rho x V_cell, so that
``sum(data) / N_grid`` is the electron count. pyrho's ``ChargeDensity.normalized_data`` divides by
the cell volume (``normalization="vasp"``), giving e/Å^3; ``get_transformed`` interpolates those
normalised values (Fourier up-sampling + linear interpolation) and rescales back. We return
``normalized_data`` of the transformed object, i.e. e/Å^3, so that
``cube.mean() * V_cell`` = electrons in the cell.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure
from pymatgen.io.vasp import Chgcar

from matfuse.density.config import KIND_BLOCK

log = logging.getLogger(__name__)


@dataclass
class RegriddedDensity:
    """A density on a regular grid of the (unchanged) cell, in e/Å^3."""

    cube: np.ndarray  # (n1, n2, n3) float64, e/Å^3, grid point (i,j,k) at fractional (i/n1, j/n2, k/n3)
    structure: Structure
    kind: str  # total | spin | valence
    electrons_in: float  # integral of the source block (electrons, or µB for spin)
    electrons_out: float  # integral of the regridded cube

    @property
    def lattice(self) -> np.ndarray:
        return self.structure.lattice.matrix


class KindUnavailable(ValueError):
    """The requested density kind is not present in the file (message says why)."""


def density_block(chg: Chgcar, kind: str) -> str:
    """Key of ``chg.data`` for ``kind``; raises :class:`KindUnavailable` (e.g. spin without ISPIN=2)."""
    if kind not in KIND_BLOCK:
        raise KindUnavailable(f"unknown density kind {kind!r}")
    block = KIND_BLOCK[kind]
    if block not in chg.data:
        raise KindUnavailable(f"kind {kind!r} needs the {block!r} block (ISPIN=2 for spin); file has {sorted(chg.data)}")
    return block


def integrate(cube: np.ndarray, volume: float) -> float:
    """Integral of a density (e/Å^3) sampled uniformly over a cell of ``volume`` Å^3."""
    return float(np.mean(cube, dtype=np.float64) * volume)


def regrid(chg: Chgcar, kind: str, grid: tuple[int, int, int] | list[int] = (60, 60, 60)) -> RegriddedDensity:
    """Regrid one block of ``chg`` to ``grid`` points of the same cell with pyrho.

    Args:
        chg: VASP volumetric data (CHGCAR or AECCAR), VASP-normalised.
        kind: ``total`` / ``valence`` (the 'total' block) or ``spin`` (the 'diff' block).
        grid: output points per lattice vector (a list: pyrho treats an int as a total count).

    Returns:
        :class:`RegriddedDensity` with the cube in e/Å^3 and integrals before/after.
    """
    from pyrho.charge_density import ChargeDensity, PGrid

    block = density_block(chg, kind)
    grid_out = [int(g) for g in grid]
    structure = chg.structure
    # Only the wanted block is transformed (pyrho would otherwise interpolate every block).
    cd = ChargeDensity(
        pgrids={"total": PGrid(np.asarray(chg.data[block], dtype=np.float64), structure.lattice.matrix)},
        structure=structure,
        normalization="vasp",
    )
    n_in = float(chg.data[block].sum() / chg.data[block].size)
    if tuple(grid_out) == tuple(chg.data[block].shape):
        cube = cd.normalized_data["total"]
    else:
        out = cd.get_transformed(sc_mat=np.eye(3, dtype=int), grid_out=grid_out)
        cube = out.normalized_data["total"]
    n_out = integrate(cube, structure.volume)
    return RegriddedDensity(cube=cube, structure=structure, kind=kind, electrons_in=n_in, electrons_out=n_out)
