"""Faster, result-identical mineral matching for Robocrystallographer.

Stock robocrys (``MineralMatcher.get_aflow_matches`` ->
``ReducedAflowPrototypeMatcher._match_prototype``) calls
``StructureMatcher.fit_anonymous(mineral, structure)`` against every one of the 180 mineral
prototypes, and again for every tolerance-tightening round. Each call re-reduces both structures
(Niggli + primitive cell, through an LRU cache whose hits still cost an O(N^2) approximate
structure comparison), which is ~85 % of stock run time.

:class:`FastMineralMatcher` keeps the stock algorithm and adds a prefilter that only skips
pairs ``fit_anonymous`` is *guaranteed* to reject. With the matcher settings robocrys uses
(``SpeciesComparator``, ``allow_subset=False``, ``attempt_supercell=False``, no ignored
species; checked at run time, otherwise no prefilter), ``fit_anonymous(p, s)`` returns ``False``
before any lattice search when, for the reduced structures ``p'``/``s'`` it computes:

1. ``len(p'.elements) != len(s'.elements)`` (first check of ``_anonymous_match``), or
2. no permutation of the species maps ``p'``'s fractional composition onto ``s'``'s (the
   per-permutation ``comparator.get_hash`` test of ``_anonymous_match``; replicated with the same
   code, so Composition's tolerance and pymatgen's quirks are kept), or
3. ``len(p') != len(s')`` (``_strict_match`` returns ``None`` for a non-square site mask when
   ``fu == 1`` and subsets are not allowed; a species relabelling never changes site counts).

These tests are independent of the tolerances, so they also hold in every tightening round.
The reduced structures are computed with the very same ``StructureMatcher._get_reduced_structure``
call as stock (the mineral ones once per process), and the surviving pairs are fitted with
``fit_anonymous(p', s', skip_structure_reduction=True)``, i.e. exactly the arrays stock fits.
Row order (sorted by fingerprint distance) is untouched, so the best match is the same.
The mineral database is loaded once per process (:func:`cached_mineral_db`).
"""

from __future__ import annotations

import itertools
import logging
from functools import lru_cache
from typing import Any

import pandas as pd
from pymatgen.core import Composition, Structure
from pymatgen.core.structure_matcher import SpeciesComparator, StructureMatcher
from robocrys.condense.mineral import (
    MineralMatcher,
    ReducedAflowPrototypeMatcher,
    _get_row_data,
    load_mineral_db_file,
)

log = logging.getLogger(__name__)

_ROW = "_matfuse_row"  # positional row id (the DB index has duplicate labels)


@lru_cache(maxsize=1)
def cached_mineral_db() -> pd.DataFrame:
    """robocrys' packaged mineral database, loaded once per process (with a row-id column)."""
    db = load_mineral_db_file()
    db[_ROW] = range(len(db))
    return db


def _reduce(structure: Structure) -> Structure:
    """The reduced structure ``StructureMatcher.fit_anonymous`` would compute for ``structure``."""
    # fit_anonymous: _process_species -> Structure.from_sites; _preprocess -> _get_reduced_structure
    return StructureMatcher._get_reduced_structure(Structure.from_sites(structure), True, True)


def prefilter_applicable(sm: StructureMatcher) -> bool:
    """Whether the prefilter is provably exact for this matcher's settings."""
    return (
        type(sm._comparator) is SpeciesComparator
        and not sm._subset
        and not sm._supercell
        and not sm._ignored_species
    )


def could_match_anonymous(sm: StructureMatcher, p_red: Structure, s_red: Structure) -> bool:
    """False only if ``sm.fit_anonymous`` on these reduced structures is certain to be False."""
    sp1 = p_red.elements
    sp2 = s_red.elements
    if len(sp1) != len(sp2):
        return False
    if len(p_red) != len(s_red):
        return False
    s1_comp = p_red.composition
    target = sm._comparator.get_hash(s_red.composition)
    for perm in itertools.permutations(sp2):
        mapping = dict(zip(sp1, perm, strict=True))
        mapped = Composition({mapping[k]: v for k, v in s1_comp.items()})
        if sm._comparator.get_hash(mapped) == target:
            return True
    return False


class _PrefilteredAflowMatcher(ReducedAflowPrototypeMatcher):
    """``ReducedAflowPrototypeMatcher`` whose ``_match_prototype`` skips impossible rows."""

    def __init__(self, owner: "FastMineralMatcher", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._owner = owner
        self._query: tuple[int, Structure] | None = None

    def _match_prototype(self, structure_matcher: StructureMatcher, s: Structure) -> list[dict[str, Any]]:
        if not prefilter_applicable(structure_matcher):
            self._owner.n_fallback += 1
            return super()._match_prototype(structure_matcher, s)
        if self._query is None or self._query[0] != id(s):
            self._query = (id(s), _reduce(s))
        s_red = self._query[1]
        tags = []
        for _, row in self._mineral_db.iterrows():
            p_red = self._owner.reduced_mineral(int(row[_ROW]), row["structure"])
            self._owner.n_pairs += 1
            if not could_match_anonymous(structure_matcher, p_red, s_red):
                self._owner.n_skipped += 1
                continue
            if structure_matcher.fit_anonymous(p_red, s_red, skip_structure_reduction=True):
                tags.append(_get_row_data(row))
        return tags


class FastMineralMatcher(MineralMatcher):
    """Drop-in ``MineralMatcher`` with exact prefilters (see module docstring) and a shared DB."""

    def __init__(
        self,
        initial_ltol: float = 0.2,
        initial_stol: float = 0.3,
        initial_angle_tol: float = 5.0,
        use_fingerprint_matching: bool = True,
        fingerprint_distance_cutoff: float = 0.4,
    ) -> None:
        # MineralMatcher.__init__ would re-read the DB (and rejects a DataFrame argument:
        # ``mineral_db or default`` is ambiguous for DataFrames), so set its attributes here.
        self.mineral_db = cached_mineral_db()
        self.initial_ltol = initial_ltol
        self.initial_stol = initial_stol
        self.initial_angle_tol = initial_angle_tol
        self.fingerprint_distance_cutoff = fingerprint_distance_cutoff
        self.use_fingerprint_matching = use_fingerprint_matching
        self._structure = None
        self._mineral_db = None
        self._reduced: dict[int, Structure] = {}
        self.n_pairs = 0
        self.n_skipped = 0
        self.n_fallback = 0

    def reduced_mineral(self, row_id: int, structure: Structure) -> Structure:
        """Reduced cell of mineral ``row_id``, computed once per process."""
        red = self._reduced.get(row_id)
        if red is None:
            red = self._reduced[row_id] = _reduce(structure)
        return red

    def get_aflow_matches(self, structure: Structure) -> list[dict[str, Any]] | None:
        """Same contract and result as :meth:`MineralMatcher.get_aflow_matches`."""
        self._set_distance_matrix(structure)
        matcher = _PrefilteredAflowMatcher(
            self,
            initial_ltol=self.initial_ltol,
            initial_stol=self.initial_stol,
            initial_angle_tol=self.initial_angle_tol,
            mineral_db=self._mineral_db,
        )
        return matcher.get_prototypes(structure)
