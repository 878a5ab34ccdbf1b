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

The structure fingerprint of ``_set_distance_matrix`` can come from a memo shared with the rest
of the condenser (:class:`matfuse.text.fastpaths.FastFingerprints`, same values as
``get_structure_fingerprint``); :meth:`FastMineralMatcher.reset` forgets the previous structure,
so each description behaves like a freshly built ``MineralMatcher`` (stock robocrys builds one
per ``StructureCondenser()``). Further exact savings: a mineral is only reduced once some query
has its number of species (the reduction keeps the species set; ``tests/test_text.py`` checks
this for every mineral), the prefilter verdict per mineral is computed once per query and reused
in every tightening round, row ``Series`` are only built for matching rows, and the O(N^2)
``Structure.__eq__`` that stock repeats on every ``_set_distance_matrix`` call is memoised per
description.
"""

from __future__ import annotations

import itertools
import logging
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure
from pymatgen.core.structure_matcher import SpeciesComparator, StructureMatcher
from robocrys.condense.mineral import (
    MineralMatcher,
    ReducedAflowPrototypeMatcher,
    _get_row_data,
    get_fingerprint_distance,
    get_structure_fingerprint,
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


class ReducedInfo(NamedTuple):
    """A reduced structure and the invariants the prefilter compares (computed once)."""

    structure: Structure
    n_sites: int
    elements: list[Any]
    composition: Composition


def reduced_info(s_red: Structure) -> ReducedInfo:
    """:class:`ReducedInfo` of an already reduced structure."""
    return ReducedInfo(s_red, len(s_red), s_red.elements, s_red.composition)


def could_match_anonymous(sm: StructureMatcher, p_red: Structure | ReducedInfo, s_red: Structure | ReducedInfo) -> bool:
    """False only if ``sm.fit_anonymous`` on these reduced structures is certain to be False."""
    p = p_red if isinstance(p_red, ReducedInfo) else reduced_info(p_red)
    s = s_red if isinstance(s_red, ReducedInfo) else reduced_info(s_red)
    sp1 = p.elements
    sp2 = s.elements
    if len(sp1) != len(sp2):
        return False
    if p.n_sites != s.n_sites:
        return False
    s1_comp = p.composition
    target = sm._comparator.get_hash(s.composition)
    for perm in itertools.permutations(sp2):
        mapping = dict(zip(sp1, perm, strict=True))
        mapped = Composition({mapping[k]: v for k, v in s1_comp.items()})
        if sm._comparator.get_hash(mapped) == target:
            return True
    return False


class _PrefilteredAflowMatcher(ReducedAflowPrototypeMatcher):
    """``ReducedAflowPrototypeMatcher`` whose ``_match_prototype`` skips impossible rows.

    Rows are visited in the stock order, over the same ``DataFrame.values`` that ``iterrows``
    walks; the row ``Series`` (built exactly as ``iterrows`` builds it) is only made for matches.
    The prefilter verdict per mineral does not depend on the tolerances, so it is computed once
    per query and reused by every tightening round.
    """

    def __init__(self, owner: "FastMineralMatcher", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._owner = owner
        self._query: tuple[Structure, ReducedInfo] | None = None
        self._possible: dict[int, bool] = {}

    def _match_prototype(self, structure_matcher: StructureMatcher, s: Structure) -> list[dict[str, Any]]:
        if not prefilter_applicable(structure_matcher):
            self._owner.n_fallback += 1
            return super()._match_prototype(structure_matcher, s)
        if self._query is None or self._query[0] is not s:
            self._query = (s, reduced_info(_reduce(s)))
            self._possible = {}
        s_info = self._query[1]
        db = self._mineral_db
        columns = db.columns
        row_pos, struct_pos = columns.get_loc(_ROW), columns.get_loc("structure")
        tags = []
        for label, values in zip(db.index, db.values):  # what DataFrame.iterrows iterates
            row_id = int(values[row_pos])
            self._owner.n_pairs += 1
            possible = self._possible.get(row_id)
            if possible is None:
                # reduction keeps the set of species, so compare its size before reducing
                possible = self._owner.mineral_n_elements(row_id, values[struct_pos]) == len(s_info.elements)
                if possible:
                    p_info = self._owner.reduced_mineral_info(row_id, values[struct_pos])
                    possible = could_match_anonymous(structure_matcher, p_info, s_info)
                self._possible[row_id] = possible
            if not possible:
                self._owner.n_skipped += 1
                continue
            p_info = self._owner.reduced_mineral_info(row_id, values[struct_pos])
            if structure_matcher.fit_anonymous(p_info.structure, s_info.structure, skip_structure_reduction=True):
                row = db._constructor_sliced(values, index=columns, name=label).__finalize__(db)
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
        fingerprints: Any = None,
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
        self._reduced: dict[int, ReducedInfo] = {}
        self._n_elements: dict[int, int] = {}
        self.n_pairs = 0
        self.n_skipped = 0
        self.n_fallback = 0
        #: object with ``structure_fingerprint(structure, prototype_match=...)``, or None (stock)
        self.fingerprints = fingerprints
        self._equal: dict[tuple[int, int], tuple[Structure, Structure, bool]] = {}

    def reset(self) -> None:
        """Forget the last structure's fingerprint distances (as a new ``MineralMatcher``)."""
        self._structure = None
        self._mineral_db = None
        self._equal.clear()

    def _same_structure(self, a: Structure | None, b: Structure) -> bool:
        """``a == b`` (``Structure.__eq__``, O(N^2) site look-ups), memoised until :meth:`reset`.

        Stock compares the last structure with the query on every ``_set_distance_matrix`` call
        (4 per ``get_best_mineral_name``); neither structure changes during a description.
        """
        if a is None:
            return bool(a == b)
        key = (id(a), id(b))
        hit = self._equal.get(key)
        if hit is None or hit[0] is not a or hit[1] is not b:
            hit = self._equal[key] = (a, b, bool(a == b))  # references keep the ids unique
        return hit[2]

    def _set_distance_matrix(self, structure: Structure) -> None:
        """Body of robocrys' ``MineralMatcher._set_distance_matrix``, memoised fingerprint."""
        if self._same_structure(self._structure, structure) and self._mineral_db is not None:
            return
        fp = get_structure_fingerprint if self.fingerprints is None else self.fingerprints.structure_fingerprint
        data = self.mineral_db.copy()
        fingerprint = fp(structure)
        if np.linalg.norm(fingerprint) < 0.4:
            # as robocrys (prototype_match=False again, i.e. the same fingerprint)
            fingerprint = fp(structure, prototype_match=False)
        data["distance"] = data["fingerprint"].apply(lambda x: get_fingerprint_distance(x, fingerprint))
        self._mineral_db = data.sort_values(by="distance")
        self._structure = structure

    def mineral_n_elements(self, row_id: int, structure: Structure) -> int:
        """Number of distinct species of mineral ``row_id`` (equal for its reduced cell)."""
        n = self._n_elements.get(row_id)
        if n is None:
            n = self._n_elements[row_id] = len(structure.elements)
        return n

    def reduced_mineral_info(self, row_id: int, structure: Structure) -> ReducedInfo:
        """Reduced cell of mineral ``row_id`` and its invariants, computed once per process."""
        info = self._reduced.get(row_id)
        if info is None:
            info = self._reduced[row_id] = reduced_info(_reduce(structure))
        return info

    def reduced_mineral(self, row_id: int, structure: Structure) -> Structure:
        """Reduced cell of mineral ``row_id``, computed once per process."""
        return self.reduced_mineral_info(row_id, structure).structure

    def get_fingerprint_matches(
        self,
        structure: Structure,
        max_n_matches: int | None = None,
        match_n_sp: bool = True,
        mineral_name_constraint: str | None = None,
    ) -> list[dict[str, Any]] | None:
        """Same result as :meth:`MineralMatcher.get_fingerprint_matches`.

        Stock builds a row ``Series`` for every row and then tests ``distance < cutoff``; here the
        (element-wise identical) comparison selects the rows first, which are then read with
        ``iterrows`` like stock.
        """
        self._set_distance_matrix(structure)
        mineral_db: pd.DataFrame = self._mineral_db  # type: ignore[assignment]
        if mineral_name_constraint:
            mineral_db = mineral_db[mineral_db["mineral"].str.lower() == mineral_name_constraint]
        if match_n_sp:
            mineral_db = mineral_db[mineral_db["n_elems"] == structure.n_elems]
        num_rows = mineral_db.shape[0]
        max_n_matches = max_n_matches or num_rows
        max_n_matches = min(max_n_matches, num_rows)
        head = mineral_db.iloc[:max_n_matches]
        selected = head[head["distance"] < self.fingerprint_distance_cutoff]
        minerals = [_get_row_data(row) for _, row in selected.iterrows()]
        return minerals if minerals else None

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
