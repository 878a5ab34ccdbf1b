"""Robocrystallographer descriptions in three variants, from one condensed structure.

Variants (after Massa et al., arXiv 2401.09301), all derived from a single
``StructureCondenser.condense_structure`` call and a single ``StructureDescriber.describe`` pass
(``return_parts=True``, robocrys default describer flags otherwise):

``all``
    The full robocrys description, byte-identical to
    ``StructureDescriber().describe(StructureCondenser().condense_structure(s))``:
    the parts ``mineral``, ``component_makeup`` and ``components`` joined by one space (empty
    parts skipped), exactly as robocrys joins them when ``return_parts=False``.
``key``
    The composition sentence followed by every bond-length sentence, in the order they occur in
    ``all`` (the non-empty return values of ``StructureDescriber.get_bond_length_description``,
    with robocrys' default ``only_describe_bonds_once=True`` and 2 decimal places), e.g.
    ``"BaTe is Halite, Rock Salt structured and crystallizes in the cubic Fm-3m space group.
    All Ba(1)-Te(1) bond lengths are 3.53 Å."`` Every sentence of ``key`` is a sentence of ``all``.
``single``
    The composition sentence only: robocrys' ``mineral`` part (``describe_mineral=True``, the
    other parts off), i.e. reduced/common formula, mineral prototype when one matches, crystal
    system and space group: ``"BaTe is Halite, Rock Salt structured and crystallizes in the cubic
    Fm-3m space group."`` It is the first sentence of both ``key`` and ``all``.

Network: robocrys' ``StructureCondenser`` builds a ``MoleculeNamer()`` (PubChem look-ups enabled,
~0.5-3 s to load its JSON DB) for *every* structure. :class:`RobocrysTexts` instead uses one
:class:`OfflineMoleculeNamer` per process whose PubChem path is disabled, so no network call can
happen. (openbabel is not installed in this environment, so SMILES conversion returns ``None``
and no molecule is named, exactly as in stock robocrys.)

Speed (same texts): :class:`RobocrysTexts` runs the condenser with the exact memoisation of
:mod:`matfuse.text.fastpaths` (CrystalNN neighbours and site fingerprints computed once per site
instead of up to three times, memoised bonding-graph look-ups), the prefiltered mineral matcher of
:mod:`matfuse.text.mineral`, and defers pymatgen's unused AFLOW prototype library
(:mod:`matfuse.text.lazy_prototypes`, imported before robocrys).
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache
from typing import Any

from matfuse.text.lazy_prototypes import LazyLoadedList
from matfuse.text.lazy_prototypes import install as _install_lazy_prototypes

_install_lazy_prototypes()  # before robocrys imports pymatgen.analysis.prototypes (~2.5 s saved)

from pymatgen.core import Structure  # noqa: E402
from robocrys import StructureCondenser, StructureDescriber  # noqa: E402
from robocrys.condense.component import (  # noqa: E402
    get_component_formula,
    get_structure_inequiv_components,
    get_sym_inequiv_components,
)
from robocrys.condense.molecule import MoleculeNamer  # noqa: E402

from matfuse.text.fastpaths import CachedCrystalNN, FastFingerprints, NeighborCache, fast_paths  # noqa: E402
from matfuse.text.mineral import FastMineralMatcher  # noqa: E402
from matfuse.text.settings import TEXT_SETTINGS, VARIANTS, text_versions  # noqa: E402,F401  (re-exported)

log = logging.getLogger(__name__)


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


class _SharedNamerCondenser(StructureCondenser):
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


class _VariantDescriber(StructureDescriber):
    """Describer that also records the bond-length sentences as it writes them."""

    def __init__(self) -> None:
        super().__init__(return_parts=True)
        self._bond_sentences: list[str] = []

    def get_bond_length_description(self, from_site: int, to_sites: list[int]) -> str:
        desc = super().get_bond_length_description(from_site, to_sites)
        if desc:
            self._bond_sentences.append(desc)
        return desc

    def describe_variants(self, condensed: dict[str, Any]) -> dict[str, str]:
        self._bond_sentences = []
        parts = self.describe(condensed)
        assert isinstance(parts, dict)
        full = " ".join(
            parts[p] for p in ("mineral", "component_makeup", "components") if p in parts and parts[p] != ""
        )
        single = parts["mineral"]
        key = " ".join([single, *self._bond_sentences])
        return {"all": full, "key": key, "single": single}


class RobocrysTexts:
    """One condenser + describer per process; :meth:`describe` gives all three variants.

    With ``fast_mineral_matching`` (the default) the condenser also uses the exact memoisation
    of :mod:`matfuse.text.fastpaths` (one CrystalNN pass and one fingerprint per site instead of
    up to three, memoised graph look-ups) and the prefiltered :class:`FastMineralMatcher`.
    ``False`` runs robocrys' own condenser code (only the offline molecule namer is shared).
    """

    def __init__(self, fast_mineral_matching: bool = True) -> None:
        self.fast_mineral_matching = fast_mineral_matching
        if fast_mineral_matching:
            self.neighbor_cache: NeighborCache | None = NeighborCache()
            self.fingerprints: FastFingerprints | None = FastFingerprints(self.neighbor_cache)
            self.mineral_matcher: FastMineralMatcher | None = FastMineralMatcher(fingerprints=self.fingerprints)
            near_neighbors = CachedCrystalNN(self.neighbor_cache)  # CrystalNN() defaults
        else:
            self.neighbor_cache = self.fingerprints = self.mineral_matcher = None
            near_neighbors = None
        self.condenser = _SharedNamerCondenser(
            OfflineMoleculeNamer(), mineral_matcher=self.mineral_matcher, near_neighbors=near_neighbors
        )
        self.describer = _VariantDescriber()

    def describe(self, structure: Structure) -> dict[str, str]:
        """``{"all": ..., "key": ..., "single": ...}`` for one structure (robocrys errors propagate)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.fingerprints is None:
                condensed = self.condenser.condense_structure(structure)
            else:
                assert self.mineral_matcher is not None
                self.mineral_matcher.reset()
                with fast_paths(self.fingerprints):
                    condensed = self.condenser.condense_structure(structure)
            return self.describer.describe_variants(condensed)


@lru_cache(maxsize=2)
def get_robocrys_texts(fast_mineral_matching: bool = True) -> RobocrysTexts:
    """The process-wide :class:`RobocrysTexts` (built once per setting)."""
    return RobocrysTexts(fast_mineral_matching)


def stock_description(structure: Structure) -> str:
    """Reference: untouched robocrys defaults (for tests and benchmarks; slow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(StructureDescriber().describe(StructureCondenser().condense_structure(structure)))


def mineral_prefilter_stats() -> dict[str, int]:
    """Counters of this process's fast mineral matcher (pairs seen, skipped by the prefilter)."""
    m = get_robocrys_texts(True).mineral_matcher
    assert m is not None
    return {"pairs": m.n_pairs, "skipped": m.n_skipped, "fallback": m.n_fallback}


def fast_path_stats() -> dict[str, Any]:
    """This process's fast-path counters: neighbour-memo hits/misses, mineral prefilter, and
    whether pymatgen's AFLOW prototype library was loaded (robocrys never needs it)."""
    import sys

    texts = get_robocrys_texts(True)
    assert texts.neighbor_cache is not None
    lib = getattr(sys.modules.get("pymatgen.analysis.prototypes._data"), "AFLOW_PROTOTYPE_LIBRARY", None)
    return {
        "nn_hits": texts.neighbor_cache.hits,
        "nn_misses": texts.neighbor_cache.misses,
        **mineral_prefilter_stats(),
        "aflow_library_lazy": isinstance(lib, LazyLoadedList),
        "aflow_library_loaded": not isinstance(lib, LazyLoadedList) or lib._data is not None,
    }
