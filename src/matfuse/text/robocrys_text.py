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
~0.5-3 s to load its JSON DB) for *every* structure. With the fast paths, :class:`RobocrysTexts`
instead uses one :class:`~matfuse.text.fastpaths.OfflineMoleculeNamer` per process whose PubChem
path is disabled, so no network call can happen. (openbabel is not installed in this environment,
so SMILES conversion returns ``None`` and no molecule is named, exactly as in stock robocrys; stock
robocrys only contacts PubChem for a named molecule, i.e. with openbabel installed.)

Speed (same texts, ``text.fast_paths: true``): :class:`RobocrysTexts` runs the condenser with the
exact memoisation of :mod:`matfuse.text.fastpaths` (CrystalNN neighbours and site fingerprints
computed once per site instead of up to three times, memoised bonding-graph look-ups, one offline
molecule namer per process), the prefiltered mineral matcher of :mod:`matfuse.text.mineral`, and
(:func:`matfuse.text.describe.describe_one`) defers pymatgen's unused AFLOW prototype library
(:mod:`matfuse.text.lazy_prototypes`, installed before robocrys is imported).

Version gate: the fast paths are applied only when the installed robocrys / pymatgen / matminer /
spglib / numpy are the verified ones (:func:`matfuse.text.settings.fast_paths_verified`); else,
and with ``fast_paths=False``, every text comes from stock robocrys (:func:`stock_texts`) and
no fast-path module is even imported.
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache
from typing import Any

from pymatgen.core import Structure
from robocrys import StructureCondenser, StructureDescriber

from matfuse.text.settings import TEXT_SETTINGS, VARIANTS, fast_paths_verified, text_versions  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


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

    With ``fast_paths`` (the default) and verified library versions
    (:func:`~matfuse.text.settings.fast_paths_verified`, checked here before anything is patched
    or imported; otherwise one warning per process), the condenser uses the exact memoisation of
    :mod:`matfuse.text.fastpaths` (one CrystalNN pass and one fingerprint per site instead of up
    to three, memoised graph look-ups, one offline molecule namer) and the prefiltered
    :class:`~matfuse.text.mineral.FastMineralMatcher`: byte-identical texts. Otherwise
    (``fast_paths=False`` or unverified versions) every text is :func:`stock_texts`, i.e. stock
    robocrys. :attr:`fast_paths_active` tells which.
    """

    def __init__(self, fast_paths: bool = True) -> None:
        self.fast_paths_requested = fast_paths
        #: whether the fast paths are applied (requested and the installed versions verified)
        self.fast_paths_active = bool(fast_paths) and fast_paths_verified(warn=True)
        self.neighbor_cache: Any = None
        self.fingerprints: Any = None
        self.mineral_matcher: Any = None
        self.condenser: StructureCondenser | None = None
        self.describer: _VariantDescriber | None = None
        self._fast_paths_ctx: Any = None
        if not self.fast_paths_active:
            return
        # Imported only now: these modules copy private robocrys code and patch module globals.
        from matfuse.text.fastpaths import (
            CachedCrystalNN,
            FastFingerprints,
            NeighborCache,
            OfflineMoleculeNamer,
            SharedNamerCondenser,
            fast_paths as fast_paths_ctx,
        )
        from matfuse.text.mineral import FastMineralMatcher

        self.neighbor_cache = NeighborCache()
        self.fingerprints = FastFingerprints(self.neighbor_cache)
        self.mineral_matcher = FastMineralMatcher(fingerprints=self.fingerprints)
        near_neighbors = CachedCrystalNN(self.neighbor_cache)  # CrystalNN() defaults
        self.condenser = SharedNamerCondenser(
            OfflineMoleculeNamer(), mineral_matcher=self.mineral_matcher, near_neighbors=near_neighbors
        )
        self.describer = _VariantDescriber()
        self._fast_paths_ctx = fast_paths_ctx

    def describe(self, structure: Structure) -> dict[str, str]:
        """``{"all": ..., "key": ..., "single": ...}`` for one structure (robocrys errors propagate)."""
        if not self.fast_paths_active:
            return stock_texts(structure)
        assert self.condenser is not None and self.describer is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.mineral_matcher.reset()
            with self._fast_paths_ctx(self.fingerprints):
                condensed = self.condenser.condense_structure(structure)
            return self.describer.describe_variants(condensed)


@lru_cache(maxsize=2)
def get_robocrys_texts(fast_paths: bool = True) -> RobocrysTexts:
    """The process-wide :class:`RobocrysTexts` (built once per setting)."""
    return RobocrysTexts(fast_paths)


def stock_texts(structure: Structure) -> dict[str, str]:
    """The three variants from stock robocrys: a fresh ``StructureCondenser()`` (defaults), ``all`` =
    ``StructureDescriber().describe(condensed)``, ``key`` / ``single`` from the same condensed
    structure (:class:`_VariantDescriber`). Slow (~4 s median per MP structure); the reference of
    the fast paths and what :class:`RobocrysTexts` runs when they are off."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        condensed = StructureCondenser().condense_structure(structure)
        full = StructureDescriber().describe(condensed)
        texts = _VariantDescriber().describe_variants(condensed)
    texts["all"] = str(full)
    return texts


def stock_description(structure: Structure) -> str:
    """Reference: untouched robocrys defaults (for tests and benchmarks; slow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(StructureDescriber().describe(StructureCondenser().condense_structure(structure)))


def mineral_prefilter_stats() -> dict[str, Any]:
    """Counters of this process's fast mineral matcher (pairs seen, skipped by the prefilter);
    ``{"active": False}`` when the fast paths are off in this process (version gate)."""
    m = get_robocrys_texts(True).mineral_matcher
    if m is None:
        return {"active": False}
    return {"active": True, "pairs": m.n_pairs, "skipped": m.n_skipped, "fallback": m.n_fallback}


def fast_path_stats() -> dict[str, Any]:
    """This process's fast-path counters: whether they are active, neighbour-memo hits/misses,
    mineral prefilter, and whether pymatgen's AFLOW prototype library was loaded (robocrys never
    needs it)."""
    import sys

    from matfuse.text.lazy_prototypes import LazyLoadedList

    texts = get_robocrys_texts(True)
    lib = getattr(sys.modules.get("pymatgen.analysis.prototypes._data"), "AFLOW_PROTOTYPE_LIBRARY", None)
    lazy = {
        "aflow_library_lazy": isinstance(lib, LazyLoadedList),
        "aflow_library_loaded": not isinstance(lib, LazyLoadedList) or lib._data is not None,
    }
    if texts.neighbor_cache is None:
        return {"active": False, **lazy}
    return {
        "nn_hits": texts.neighbor_cache.hits,
        "nn_misses": texts.neighbor_cache.misses,
        **mineral_prefilter_stats(),
        **lazy,
    }
