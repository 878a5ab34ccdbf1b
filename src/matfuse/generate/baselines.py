"""No-learning floor: random symmetric crystals from pyxtal for given compositions.

For each requested composition (atom counts per cell, e.g. the compositions of the training or test
structures), space groups are drawn in a seeded random order among those pyxtal accepts for the
counts (``Group.check_compatible``: Wyckoff multiplicities can add up to them), and
``pyxtal.from_random`` places the atoms (its own distance checks, volume factor ``factor``). A
composition for which no space group works in ``max_groups`` tries is a failure with its reason,
recorded in the output, never dropped.

Output rows follow the sample format of :mod:`matfuse.generate.evaluate` (``sample_id``,
``structure`` = pymatgen JSON or null, ``reason``), plus ``requested_formula`` and
``space_group``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from matfuse.io import write_parquet

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ["sample_id", "structure", "reason", "requested_formula", "space_group"]


def random_symmetric(composition: Any, rng: np.random.Generator, max_groups: int = 20, factor: float = 1.1):
    """(Structure, space group number, None) or (None, None, reason) for one composition.

    ``composition``: a pymatgen Composition (or formula) whose amounts are the atom counts of the
    cell to build (integers).
    """
    from pymatgen.core import Composition
    from pyxtal import pyxtal
    from pyxtal.symmetry import Group

    comp = Composition(composition)
    species = [el.symbol for el in comp.elements]
    counts = [comp[el] for el in comp.elements]
    if any(abs(c - round(c)) > 1e-8 or c < 1 for c in counts):
        return None, None, f"{comp.formula}: atom counts must be positive integers"
    counts = [int(round(c)) for c in counts]
    tried = 0
    errors: list[str] = []
    for sg in rng.permutation(np.arange(1, 231)):
        if tried >= max_groups:
            break
        group = Group(int(sg))
        if not group.check_compatible(counts)[0]:
            continue
        tried += 1
        crystal = pyxtal()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                crystal.from_random(3, int(sg), species, counts, factor=factor,
                                    random_state=int(rng.integers(2**31 - 1)))
        except Exception as exc:  # pyxtal raises its own and generic errors
            errors.append(f"sg {sg}: {type(exc).__name__}: {str(exc)[:80]}")
            continue
        if not crystal.valid:
            errors.append(f"sg {sg}: no valid placement")
            continue
        s = crystal.to_pymatgen()
        if s.composition != comp:
            errors.append(f"sg {sg}: got {s.composition.formula}")
            continue
        return s, int(sg), None
    if tried == 0:
        return None, None, f"{comp.formula}: no space group compatible with the counts {counts}"
    return None, None, f"{comp.formula}: {tried} compatible space groups failed ({'; '.join(errors[:3])})"


def pyxtal_samples(compositions: Sequence[Any], seed: int, max_groups: int = 20, factor: float = 1.1,
                   prefix: str = "pyxtal") -> pd.DataFrame:
    """One random symmetric structure per composition (seeded); failures are rows with a reason."""
    from matfuse.structures import dump_structure

    rng = np.random.default_rng(seed)
    rows = []
    for k, comp in enumerate(compositions):
        s, sg, reason = random_symmetric(comp, rng, max_groups=max_groups, factor=factor)
        rows.append({"sample_id": f"{prefix}-{k:05d}", "structure": dump_structure(s) if s is not None else None,
                     "reason": reason, "requested_formula": str(getattr(comp, "formula", comp)),
                     "space_group": sg})
    df = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
    df["space_group"] = df["space_group"].astype("Int64")
    n_fail = int(df["structure"].isna().sum())
    log.info("pyxtal: %d of %d compositions built (%d failures)", len(df) - n_fail, len(df), n_fail)
    return df


def write_pyxtal_samples(compositions: Sequence[Any], out_path: str | Path, seed: int, max_groups: int = 20,
                         factor: float = 1.1) -> pd.DataFrame:
    """Stage function: :func:`pyxtal_samples` written atomically to ``out_path`` (Parquet)."""
    df = pyxtal_samples(compositions, seed, max_groups=max_groups, factor=factor)
    write_parquet(df, out_path)
    return df
