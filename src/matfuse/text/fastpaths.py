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

:class:`SharedNamerCondenser` (a copy of robocrys 0.2.13's private
``StructureCondenser._condense_components``) reuses one :class:`OfflineMoleculeNamer` per process
instead of loading ``MoleculeNamer``'s DB for every structure.

Version gate: this module copies private robocrys code and patches robocrys/pymatgen globals, so
it is only imported when :func:`matfuse.text.settings.fast_paths_verified` holds (the installed
robocrys, pymatgen, matminer, spglib and numpy are the verified ones); :func:`fast_paths` refuses
to patch otherwise.

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
from robocrys import StructureCondenser
from robocrys.condense.component import (
    get_component_formula,
    get_structure_inequiv_components,
    get_sym_inequiv_components,
)
from robocrys.condense.fingerprint import get_site_fingerprints as _stock_site_fingerprints
from robocrys.condense.fingerprint import get_structure_fingerprint as _stock_structure_fingerprint
from robocrys.condense.molecule import MoleculeNamer
from robocrys.condense.site import SiteAnalyzer

from matfuse.text import settings as _settings
from matfuse.text.fastnumpy import NUMPY_VIEW, fast_cross, fast_norm
from matfuse.text.neighbors import CachedCrystalNN, NeighborCache

__all__ = [
    "CachedCrystalNN",
    "FastFingerprints",
    "MemoSiteAnalyzer",
    "NeighborCache",
    "OfflineMoleculeNamer",
    "SharedNamerCondenser",
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


class OfflineMoleculeNamer(MoleculeNamer):
    """``MoleculeNamer`` that never queries PubChem (offline DB only), loading its DB on first use.

    Same attributes as ``MoleculeNamer(use_online_pubchem=False)``; ``molecule_db`` (0.5 s to
    load) is only read for molecules that have a SMILES string, which needs openbabel.
    """

    def __init__(self) -> None:  # noqa: D107 - MoleculeNamer.__init__ minus the eager DB load
        self._molecule_db: dict[str, dict[str, str]] | None = None
        self.matched_molecules: dict[str, str] = {}
        self.use_online_pubchem = False
        self.name_preference = tuple(list(self.name_sources) + list(self.name_sources))

    @property
    def molecule_db(self) -> dict[str, dict[str, str]]:  # type: ignore[override]
        if self._molecule_db is None:
            from importlib.resources import files
            from monty.serialization import loadfn

            self._molecule_db = loadfn(str(files("robocrys.condense") / "molecule_db.json.gz"))
        return self._molecule_db

    def get_name_from_pubchem(self, smiles: str) -> str | None:  # pragma: no cover - never called
        return None


class SharedNamerCondenser(StructureCondenser):
    """``StructureCondenser`` that reuses one offline ``MoleculeNamer`` for every structure."""

    def __init__(self, molecule_namer: MoleculeNamer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.molecule_namer = molecule_namer

    # Same body as robocrys 0.2.13 StructureCondenser._condense_components, except the namer.
    def _condense_components(self, components, spacegroup_analyzer, site_analyzer):  # type: ignore[no-untyped-def]
        if self.use_symmetry_equivalent_sites:
            inequiv_components = get_sym_inequiv_components(components, spacegroup_analyzer)
        else:
            inequiv_components = get_structure_inequiv_components(components)

        new_components: dict[int, dict[str, Any]] = {}
        component_makeup = []
        for i, component in enumerate(inequiv_components):
            formula = get_component_formula(
                component,
                use_iupac_formula=self.use_iupac_formula,
                use_common_formulas=self.use_common_formulas,
            )
            sites = site_analyzer.get_inequivalent_site_indices(component["site_ids"])
            if component["dimensionality"] == 0:
                molecule_name = self.molecule_namer.get_name_from_molecule_graph(component["molecule_graph"])
            else:
                molecule_name = None
            new_components[i] = {
                "formula": formula,
                "dimensionality": component["dimensionality"],
                "orientation": component["orientation"],
                "molecule_name": molecule_name,
                "sites": sites,
            }
            component_makeup.extend([i] * component["count"])
        return new_components, component_makeup


@contextlib.contextmanager
def fast_paths(fingerprints: FastFingerprints) -> Iterator[None]:
    """Route robocrys' fingerprint functions and ``SiteAnalyzer`` through the memo, then restore.

    Patched names (module globals, looked up at call time):
    ``robocrys.condense.site.get_site_fingerprints``,
    ``robocrys.condense.component.get_structure_fingerprint``,
    ``robocrys.condense.condenser.SiteAnalyzer`` and ``pymatgen.core.local_env.np`` (numpy with
    :func:`fast_cross` / :func:`fast_norm`). The memo is emptied on exit.

    Raises ``RuntimeError`` (before patching anything) unless the installed versions are the
    verified ones (:func:`matfuse.text.settings.fast_paths_verified`).
    """
    if not _settings.fast_paths_verified(warn=False):
        diff = _settings.unverified_versions()
        raise RuntimeError(f"robocrys fast paths are not verified for the installed versions {diff}; use stock robocrys")
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
