"""A lattice plane of a periodic density sampled as a 2-D image.

The plane is (hkl) of pymatgen's conventional standard cell, expressed in the density's own
Cartesian frame: spglib's transformation matrix P gives the standardised conventional basis in
the input frame (``(a_s b_s c_s) = (a b c) P^-1``), and ``Lattice.find_mapping`` aligns pymatgen's
conventional standard lattice (which may differ from spglib's by an axis choice) onto it.
Pixels are sampled with ``scipy.ndimage.map_coordinates(..., mode="grid-wrap")``, i.e. periodic
interpolation of the cube whose point (i, j, k) sits at fractional (i/n1, j/n2, k/n3).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from scipy.ndimage import map_coordinates

from matfuse.density.config import SliceConfig

log = logging.getLogger(__name__)


@dataclass
class SliceGeometry:
    """Where the image's pixels lie (Cartesian Å, in the density structure's frame)."""

    normal: np.ndarray  # unit normal of the plane
    center: np.ndarray  # Cartesian centre of the image (on the plane)
    e1: np.ndarray  # unit in-plane vector along image columns (x)
    e2: np.ndarray  # unit in-plane vector along image rows (y)
    extent: float  # side of the sampled square, Å
    d_hkl: float  # interplanar spacing of (hkl) in the conventional cell, Å
    conventional: np.ndarray  # conventional lattice (rows) in the density's frame
    points: np.ndarray  # (H, W, 3) Cartesian pixel positions


def conventional_lattice_in_frame(structure: Structure, symprec: float = 0.01) -> np.ndarray:
    """Conventional standard lattice vectors (rows) expressed in ``structure``'s Cartesian frame."""
    sga = SpacegroupAnalyzer(structure, symprec=symprec)
    ds = sga.get_symmetry_dataset()
    P = np.asarray(ds.transformation_matrix, dtype=float)
    std_in_frame = np.linalg.inv(P).T @ structure.lattice.matrix
    conv = sga.get_conventional_standard_structure()
    mapping = Lattice(std_in_frame).find_mapping(conv.lattice, ltol=1e-3, atol=0.5)
    if mapping is None:
        log.warning("%s: pymatgen conventional cell not mappable onto spglib's; using spglib's", structure.formula)
        return std_in_frame
    return np.asarray(mapping[0].matrix)


def _shortest_in_plane(conv: np.ndarray, miller: tuple[int, int, int], nmax: int = 3) -> np.ndarray:
    best: np.ndarray | None = None
    for uvw in itertools.product(range(-nmax, nmax + 1), repeat=3):
        if uvw == (0, 0, 0) or np.dot(uvw, miller) != 0:
            continue
        v = np.asarray(uvw, dtype=float) @ conv
        if best is None or np.linalg.norm(v) < np.linalg.norm(best) - 1e-9:
            best = v
    if best is None:  # pragma: no cover - impossible for a non-zero miller index
        raise ValueError(f"no in-plane lattice vector for {miller}")
    return best


def slice_geometry(structure: Structure, cfg: SliceConfig) -> SliceGeometry:
    """Pixel positions of the (hkl) image for ``structure`` (see :class:`SliceConfig`)."""
    if cfg.miller == (0, 0, 0):
        raise ValueError("miller index (0, 0, 0) is not a plane")
    conv = conventional_lattice_in_frame(structure)
    recip = np.linalg.inv(conv).T  # rows b_i with a_i . b_j = delta_ij
    g = np.asarray(cfg.miller, dtype=float) @ recip
    d_hkl = 1.0 / float(np.linalg.norm(g))
    normal = g * d_hkl
    v1 = _shortest_in_plane(conv, cfg.miller)
    e1 = v1 / np.linalg.norm(v1)
    e2 = np.cross(normal, e1)
    extent = cfg.extent if cfg.extent is not None else cfg.n_periods * float(np.linalg.norm(v1))
    if cfg.through == "site":
        if cfg.site_index >= len(structure):
            raise ValueError(f"slice.site_index {cfg.site_index} but the structure has {len(structure)} sites")
        center = np.asarray(structure[cfg.site_index].coords, dtype=float)
    else:
        center = np.zeros(3)
    center = center + cfg.offset * d_hkl * normal
    h, w = cfg.size
    sx = (np.arange(w) - (w - 1) / 2.0) * (extent / w)
    sy = (np.arange(h) - (h - 1) / 2.0) * (extent / h)
    points = center[None, None, :] + sx[None, :, None] * e1[None, None, :] + sy[:, None, None] * e2[None, None, :]
    return SliceGeometry(
        normal=normal, center=center, e1=e1, e2=e2, extent=extent, d_hkl=d_hkl, conventional=conv, points=points
    )


def sample_periodic(cube: np.ndarray, lattice: np.ndarray, points: np.ndarray, order: int = 1) -> np.ndarray:
    """Values of a periodic grid ``cube`` (cell ``lattice``, rows) at Cartesian ``points`` (..., 3)."""
    shape = points.shape[:-1]
    frac = points.reshape(-1, 3) @ np.linalg.inv(lattice)
    coords = (frac * np.asarray(cube.shape, dtype=float)).T
    vals = map_coordinates(np.asarray(cube, dtype=np.float64), coords, order=order, mode="grid-wrap")
    return vals.reshape(shape)


def slice_image(cube: np.ndarray, structure: Structure, cfg: SliceConfig) -> tuple[np.ndarray, SliceGeometry]:
    """The (hkl) image (H, W) of ``cube`` (e/Å^3 on ``structure``'s cell) and its geometry."""
    geom = slice_geometry(structure, cfg)
    img = sample_periodic(cube, structure.lattice.matrix, geom.points, order=cfg.order)
    return img, geom
