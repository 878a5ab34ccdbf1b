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
~3 s to load its JSON DB) for *every* structure. :class:`RobocrysTexts` instead uses one
:class:`OfflineMoleculeNamer` per process whose PubChem path is disabled, so no network call can
happen. (openbabel is not installed in this environment, so SMILES conversion returns ``None``
and no molecule is named, exactly as in stock robocrys.)
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache
from typing import Any

from pymatgen.core import Structure
from robocrys import StructureCondenser, StructureDescriber
from robocrys.condense.component import (
    get_component_formula,
    get_structure_inequiv_components,
    get_sym_inequiv_components,
)
from robocrys.condense.molecule import MoleculeNamer

from matfuse.text.mineral import FastMineralMatcher
from matfuse.text.settings import TEXT_SETTINGS, VARIANTS, text_versions  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


class OfflineMoleculeNamer(MoleculeNamer):
    """``MoleculeNamer`` that never queries PubChem (offline DB only)."""

    def __init__(self) -> None:
        super().__init__(use_online_pubchem=False)

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
    """One condenser + describer per process; :meth:`describe` gives all three variants."""

    def __init__(self, fast_mineral_matching: bool = True) -> None:
        self.fast_mineral_matching = fast_mineral_matching
        self.mineral_matcher = FastMineralMatcher() if fast_mineral_matching else None
        self.condenser = _SharedNamerCondenser(OfflineMoleculeNamer(), mineral_matcher=self.mineral_matcher)
        self.describer = _VariantDescriber()

    def describe(self, structure: Structure) -> dict[str, str]:
        """``{"all": ..., "key": ..., "single": ...}`` for one structure (robocrys errors propagate)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
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
