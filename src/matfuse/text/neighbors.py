"""Memoised CrystalNN neighbour data (no robocrys import; see :mod:`matfuse.text.fastpaths`).

:class:`CachedCrystalNN` memoises ``CrystalNN.get_nn_data`` per (CrystalNN parameters, structure
content, site, length) in a :class:`NeighborCache`. Callers mutate the returned entries
(``CrystalNN.get_nn_info`` sets ``weight = 1``), so every call gets fresh entry dicts (sharing
the ``PeriodicSite`` objects, which no caller modifies) with the entry sharing between
``all_nninfo`` and ``cn_nninfo`` preserved, and fresh ``cn_weights``.

A structure's content key (:func:`structure_content_key`) holds its type, lattice matrix,
fractional and Cartesian coordinates (exact bytes), and per site the species (type, string,
repr, occupancy), label and properties: everything the neighbour search reads.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pymatgen.analysis.local_env import CrystalNN
from pymatgen.core import Structure

log = logging.getLogger(__name__)


def structure_content_key(structure: Structure) -> tuple[Any, ...]:
    """Hashable key equal for two structures exactly when neighbour analysis sees them alike."""
    sites = tuple(
        (
            tuple((type(sp).__name__, str(sp), repr(sp), amt) for sp, amt in site.species.items()),
            getattr(site, "label", None),
            repr(site.properties),
        )
        for site in structure
    )
    return (
        type(structure).__name__,
        structure.lattice.matrix.tobytes(),
        np.ascontiguousarray(structure.frac_coords).tobytes(),
        np.ascontiguousarray(structure.cart_coords).tobytes(),
        sites,
    )


def _copy_nndata(data: Any) -> Any:
    """Fresh entry dicts (same sharing between ``all_nninfo`` and ``cn_nninfo``) and weights."""
    copies: dict[int, dict[str, Any]] = {}

    def cp(entry: dict[str, Any]) -> dict[str, Any]:
        new = copies.get(id(entry))
        if new is None:
            new = copies[id(entry)] = dict(entry)
        return new

    return type(data)(
        [cp(e) for e in data.all_nninfo],
        dict(data.cn_weights),
        {cn: [cp(e) for e in entries] for cn, entries in data.cn_nninfo.items()},
    )


class NeighborCache:
    """Per-structure memo shared by the cached neighbour finder and fingerprint featuriser."""

    def __init__(self) -> None:
        self._keys: dict[int, tuple[Structure, tuple[Any, ...]]] = {}
        self.nn: dict[tuple[Any, ...], Any] = {}
        self.fp: dict[tuple[Any, ...], list[Any]] = {}
        self.hits = 0
        self.misses = 0

    def key(self, structure: Structure) -> tuple[Any, ...]:
        """Content key of ``structure`` (computed once per object while the memo lives)."""
        ent = self._keys.get(id(structure))
        if ent is not None and ent[0] is structure:
            return ent[1]
        key = structure_content_key(structure)
        self._keys[id(structure)] = (structure, key)  # the reference keeps id() unique
        return key

    def clear(self) -> None:
        """Forget everything (call between structures)."""
        self._keys.clear()
        self.nn.clear()
        self.fp.clear()


class CachedCrystalNN(CrystalNN):
    """``CrystalNN`` whose ``get_nn_data`` is memoised in a :class:`NeighborCache`."""

    def __init__(self, cache: NeighborCache, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cache = cache

    def _params(self) -> tuple[Any, ...]:
        dc = self.distance_cutoffs
        return (
            self.cation_anion,
            tuple(dc) if dc is not None else None,
            self.x_diff_weight,
            self.porous_adjustment,
            self.search_cutoff,
        )

    def get_nn_data(self, structure: Structure, n: int, length: int | None = None) -> Any:
        length = length or self.fingerprint_length
        key = (self._params(), length, self._cache.key(structure), n)
        hit = self._cache.nn.get(key)
        if hit is None:
            self._cache.misses += 1
            hit = self._cache.nn[key] = _copy_nndata(super().get_nn_data(structure, n, length))
        else:
            self._cache.hits += 1
        return _copy_nndata(hit)
