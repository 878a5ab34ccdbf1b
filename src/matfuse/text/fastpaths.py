"""Result-identical memoisation of robocrys' repeated neighbour and fingerprint work.

Within one ``StructureCondenser.condense_structure`` call, stock robocrys (0.2.x) runs the same
CrystalNN neighbour search (a Voronoi tessellation per site, its most expensive step) up to three
times per site of the conventional cell, all with CrystalNN's default parameters:

1. ``CrystalNN().get_bonded_structure`` (the bonding graph),
2. ``get_site_fingerprints`` in ``SiteAnalyzer`` (``CrystalNNFingerprint`` "ops" preset,
   whose own ``CrystalNN(cation_anion=False)`` has the same parameters), and
3. ``get_structure_fingerprint`` in ``MineralMatcher._set_distance_matrix`` (same featuriser, so
   the very same per-site fingerprint vectors, then mean/std) and, per component, in
   ``get_structure_inequiv_components``;

and ``SiteAnalyzer`` asks ``StructureGraph.get_connected_sites`` for the same ``(site, image)``
hundreds of times. All of these are deterministic functions of their inputs, so
:class:`NeighborCache` computes each once per structure and hands out copies:

* :class:`~matfuse.text.neighbors.CachedCrystalNN` memoises ``CrystalNN.get_nn_data`` per
  (CrystalNN parameters, structure content, site, length), handing out fresh copies.
* :class:`_CachedSiteFingerprint` memoises ``CrystalNNFingerprint.featurize`` (the "ops" preset)
  per (structure content, site); :meth:`FastFingerprints.site_fingerprints` /
  :meth:`FastFingerprints.structure_fingerprint` feed it
  to matminer's own ``SiteStatsFingerprint`` exactly as robocrys does.
* :class:`MemoSiteAnalyzer` memoises ``get_connected_sites`` of its (never modified) graph and
  reads coordinates from one ``frac_coords`` array instead of rebuilding it per site pair.
* The order-parameter settings are plain dicts instead of ruamel ``CommentedMap``s.
* Inside ``pymatgen.core.local_env`` (Voronoi solid angles, order parameters), ``np.cross`` and
  ``np.linalg.norm`` on single float64 vectors take a short path doing the very same IEEE
  operations as numpy (:func:`~matfuse.text.fastnumpy.fast_cross`, :func:`~matfuse.text.fastnumpy.fast_norm`); any
  other call goes to numpy.

Structures are keyed by content (:func:`matfuse.text.neighbors.structure_content_key`), and the
memo is emptied after every structure.

:func:`fast_paths` installs the cached functions in robocrys' module namespaces only for the
duration of one description (this process describes one structure at a time), so stock
robocrys called from the same process afterwards (tests, benchmarks) is untouched.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import numpy as np
import pymatgen.core.local_env as pmg_local_env
import robocrys.condense.component as rc_component
import robocrys.condense.condenser as rc_condenser
import robocrys.condense.site as rc_site
from matminer.featurizers.site import CrystalNNFingerprint
from matminer.featurizers.structure import SiteStatsFingerprint
from pymatgen.analysis.local_env import LocalStructOrderParams
from pymatgen.core import Structure
from robocrys.condense.fingerprint import get_site_fingerprints as _stock_site_fingerprints
from robocrys.condense.fingerprint import get_structure_fingerprint as _stock_structure_fingerprint
from robocrys.condense.site import SiteAnalyzer

from matfuse.text.fastnumpy import NUMPY_VIEW, fast_cross, fast_norm
from matfuse.text.neighbors import CachedCrystalNN, NeighborCache

__all__ = [
    "CachedCrystalNN",
    "FastFingerprints",
    "MemoSiteAnalyzer",
    "NeighborCache",
    "fast_cross",
    "fast_norm",
    "fast_paths",
]

log = logging.getLogger(__name__)

_DEFAULT_SITE_PRESET = "CrystalNNFingerprint_ops"
_DEFAULT_STRUCTURE_PRESET = "CrystalNNFingerprint_ops"


class _CachedSiteFingerprint:
    """``CrystalNNFingerprint.from_preset("ops", cation_anion=False)`` with a per-site memo.

    Only ``featurize(structure, idx)`` and ``feature_labels()`` are used by
    ``SiteStatsFingerprint``; both delegate to the stock featuriser, whose ``CrystalNN`` is a
    :class:`CachedCrystalNN` with identical parameters.
    """

    def __init__(self, cache: NeighborCache) -> None:
        self._cache = cache
        self._fp = CrystalNNFingerprint.from_preset("ops", cation_anion=False)
        stock_cnn = self._fp.cnn
        self._fp.cnn = CachedCrystalNN(
            cache,
            weighted_cn=stock_cnn.weighted_cn,
            cation_anion=stock_cnn.cation_anion,
            distance_cutoffs=stock_cnn.distance_cutoffs,
            x_diff_weight=stock_cnn.x_diff_weight,
            porous_adjustment=stock_cnn.porous_adjustment,
            search_cutoff=stock_cnn.search_cutoff,
            fingerprint_length=stock_cnn.fingerprint_length,
        )
        # The op parameters come from YAML as ruamel ``CommentedMap``s (slow ``__getitem__`` in
        # the hot loop of ``get_order_parameters``); plain dicts with the same keys and values.
        for ops in self._fp.ops.values():
            for op in ops:
                if isinstance(op, LocalStructOrderParams):
                    op._params = [None if p is None else dict(p) for p in op._params]

    def featurize(self, struct: Structure, idx: int) -> list[Any]:
        key = ("ops", self._cache.key(struct), idx)
        hit = self._cache.fp.get(key)
        if hit is None:
            hit = self._cache.fp[key] = list(self._fp.featurize(struct, idx))
        return list(hit)

    def feature_labels(self) -> list[str]:
        return self._fp.feature_labels()


class FastFingerprints:
    """Drop-in replacements of robocrys' two fingerprint functions, backed by one memo."""

    def __init__(self, cache: NeighborCache) -> None:
        self.cache = cache
        self.site_featurizer = _CachedSiteFingerprint(cache)

    def site_fingerprints(
        self, structure: Structure, as_dict: bool = True, preset: str = _DEFAULT_SITE_PRESET
    ) -> Any:
        """Same result as ``robocrys.condense.fingerprint.get_site_fingerprints``."""
        if preset != _DEFAULT_SITE_PRESET:
            return _stock_site_fingerprints(structure, as_dict=as_dict, preset=preset)
        # robocrys: SiteStatsFingerprint.from_preset("CrystalNNFingerprint_ops", stats=None)
        ssf = SiteStatsFingerprint(self.site_featurizer, stats=None)
        site_fingerprints = np.array(ssf.featurize(structure)).T
        if as_dict:
            labels = ssf.feature_labels()
            return [dict(zip(labels, x)) for x in site_fingerprints]
        return site_fingerprints

    def structure_fingerprint(
        self,
        structure: Structure,
        preset: str = _DEFAULT_STRUCTURE_PRESET,
        stats: tuple[str, ...] | None = ("mean", "std_dev"),
        prototype_match: bool = False,
    ) -> np.ndarray:
        """Same result as ``robocrys.condense.fingerprint.get_structure_fingerprint``."""
        if prototype_match:  # other CrystalNN settings: not memoised (robocrys never asks)
            return _stock_structure_fingerprint(structure, preset, stats, prototype_match)
        # robocrys (preset is ignored there): SiteStatsFingerprint(CrystalNNFingerprint
        #   .from_preset("ops", cation_anion=False), stats=stats)
        ssf = SiteStatsFingerprint(self.site_featurizer, stats=stats)
        return np.array(ssf.featurize(structure))


class _CoordsView:
    """Stand-in for a structure that only ``SiteAnalyzer.get_next_nearest_neighbors`` reads.

    That method reads ``structure.lattice`` and ``structure.frac_coords[i]`` for every pair of
    sites; ``Structure.frac_coords`` rebuilds the whole (N, 3) array from the sites each time.
    The array is built once here (same values; nothing writes to it), everything else delegates.
    """

    def __init__(self, structure: Structure) -> None:
        self._structure = structure
        self.lattice = structure.lattice
        self.frac_coords = structure.frac_coords

    def __getattr__(self, name: str) -> Any:
        return getattr(self._structure, name)

    def __getitem__(self, index: Any) -> Any:
        return self._structure[index]

    def __len__(self) -> int:
        return len(self._structure)

    def __iter__(self) -> Any:
        return iter(self._structure)


class _MemoGraph:
    """Read-only view of a ``StructureGraph`` with memoised ``get_connected_sites``."""

    def __init__(self, graph: Any) -> None:
        self._graph = graph
        self._connected: dict[tuple[int, tuple[int, ...]], list[Any]] = {}
        self._coords_view: _MemoGraph | None = None

    def coords_view(self) -> "_MemoGraph":
        """This graph (same memo) whose ``.structure`` is a :class:`_CoordsView`."""
        if self._coords_view is None:
            view = _MemoGraph.__new__(_MemoGraph)
            view._graph = self._graph
            view._connected = self._connected
            view._coords_view = view
            view.__dict__["structure"] = _CoordsView(self._graph.structure)
            self._coords_view = view
        return self._coords_view

    def get_connected_sites(self, n: int, jimage: tuple[int, int, int] = (0, 0, 0)) -> list[Any]:
        key = (int(n), tuple(int(x) for x in jimage))
        hit = self._connected.get(key)
        if hit is None:
            hit = self._connected[key] = self._graph.get_connected_sites(n, jimage=jimage)
        return list(hit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._graph, name)


class MemoSiteAnalyzer(SiteAnalyzer):
    """``SiteAnalyzer`` reading its bonding graph through :class:`_MemoGraph`.

    ``SiteAnalyzer`` only reads the graph (``.structure``, ``get_connected_sites``), and nothing
    modifies it while the analyser is in use inside ``condense_structure``.
    """

    def __init__(self, bonded_structure: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(_MemoGraph(bonded_structure), *args, **kwargs)

    def get_next_nearest_neighbors(self, site_index: int, inc_inequivalent_site_index: bool = True) -> Any:
        """Stock method, reading coordinates through :meth:`_MemoGraph.coords_view`."""
        graph = self.bonded_structure
        self.bonded_structure = graph.coords_view()
        try:
            return super().get_next_nearest_neighbors(site_index, inc_inequivalent_site_index)
        finally:
            self.bonded_structure = graph


@contextlib.contextmanager
def fast_paths(fingerprints: FastFingerprints) -> Iterator[None]:
    """Route robocrys' fingerprint functions and ``SiteAnalyzer`` through the memo, then restore.

    Patched names (module globals, looked up at call time):
    ``robocrys.condense.site.get_site_fingerprints``,
    ``robocrys.condense.component.get_structure_fingerprint``,
    ``robocrys.condense.condenser.SiteAnalyzer`` and ``pymatgen.core.local_env.np`` (numpy with
    :func:`fast_cross` / :func:`fast_norm`). The memo is emptied on exit.
    """
    saved = (
        rc_site.get_site_fingerprints,
        rc_component.get_structure_fingerprint,
        rc_condenser.SiteAnalyzer,
        pmg_local_env.np,
    )
    rc_site.get_site_fingerprints = fingerprints.site_fingerprints
    rc_component.get_structure_fingerprint = fingerprints.structure_fingerprint
    rc_condenser.SiteAnalyzer = MemoSiteAnalyzer
    pmg_local_env.np = NUMPY_VIEW
    fingerprints.cache.clear()
    try:
        yield
    finally:
        (
            rc_site.get_site_fingerprints,
            rc_component.get_structure_fingerprint,
            rc_condenser.SiteAnalyzer,
            pmg_local_env.np,
        ) = saved
        fingerprints.cache.clear()
