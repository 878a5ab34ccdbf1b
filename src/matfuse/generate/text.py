"""Crystals as text, for a causal language model (FlowLLM's base distribution).

A crystal is written as (the layout of Gruver et al.'s crystal-text-llm, which FlowLLM uses)::

    5.7 5.7 5.7          <- lattice lengths a b c (Å), ``length_decimals`` decimals
    90 90 90             <- angles alpha beta gamma (degrees), ``angle_decimals`` decimals
    Na 0.00 0.00 0.00    <- one line per site: element, fractional coordinates in [0, 1)
    Cl 0.50 0.50 0.50       with ``coord_decimals`` decimals
    ...

The cell is Niggli-reduced first (angles in [60°, 120°]) and, when augmenting, every site is
shifted by one random translation (the same crystal, another origin). :class:`CrystalTokenizer`
has one token per digit, sign, decimal point, space, newline and element, plus specials; a
formula-conditioned sequence starts with a prompt of the cell's composition::

    <bos> <formula> Na 4 Cl 4 </formula> 5.7 5.7 5.7 \\n 90 90 90 \\n Na 0.00 ... <eos>

:func:`parse_crystal` turns generated text back into a pymatgen ``Structure`` or a
:class:`ParseFailure` naming the reason (every sample is one or the other).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pymatgen.core import Composition, Element, Lattice, Structure

#: Special tokens (ids 0..5, in this order).
PAD, BOS, EOS, UNK, FSTART, FEND = "<pad>", "<bos>", "<eos>", "<unk>", "<formula>", "</formula>"
SPECIALS = (PAD, BOS, EOS, UNK, FSTART, FEND)
CHARS = tuple("0123456789") + ("-", ".", " ", "\n")
#: Every element pymatgen knows (H .. Og), in atomic-number order.
ELEMENTS = tuple(e.symbol for e in Element)
_ELEMENT_SET = frozenset(ELEMENTS)
_TOKEN_RE = re.compile(r"[A-Z][a-z]?|[0-9]|-|\.| |\n|\S")


@dataclass(frozen=True)
class TextFormat:
    """How numbers are written (decimals) and the bounds a parsed crystal must respect."""

    length_decimals: int = 1
    angle_decimals: int = 0
    coord_decimals: int = 2
    max_sites: int = 20

    def to_dict(self) -> dict[str, int]:
        return {"length_decimals": self.length_decimals, "angle_decimals": self.angle_decimals,
                "coord_decimals": self.coord_decimals, "max_sites": self.max_sites}


@dataclass(frozen=True)
class ParseFailure:
    """Why a generated text is not a crystal (``reason`` is a short category, ``detail`` the specifics)."""

    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def reduce_cell(structure: Structure) -> Structure:
    """The Niggli-reduced cell with coordinates wrapped into [0, 1) (angles within [60°, 120°])."""
    s = structure.get_reduced_structure(reduction_algo="niggli")
    return Structure(s.lattice, s.species, np.mod(s.frac_coords, 1.0), coords_are_cartesian=False)


def _fmt(x: float, decimals: int) -> str:
    text = f"{x:.{decimals}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text  # no "-0.00"


def crystal_to_text(
    structure: Structure,
    fmt: TextFormat = TextFormat(),
    rng: np.random.Generator | None = None,
    translate: bool = False,
    reduce: bool = True,
) -> str:
    """The text of ``structure`` (see the module docstring).

    ``translate``: shift every site by one uniform random vector of ``rng`` first (augmentation).
    Partial occupancies are refused (``ValueError``): one element per site line.
    """
    if not structure.is_ordered:
        raise ValueError("disordered structure (partial occupancy): one element per site is needed")
    s = reduce_cell(structure) if reduce else structure
    frac = np.asarray(s.frac_coords, dtype=float)
    if translate:
        rng = rng if rng is not None else np.random.default_rng()
        frac = frac + rng.random(3)
    scale = 10 ** fmt.coord_decimals
    # round, then wrap (a coordinate that rounds to 1.00 is written as 0.00)
    frac = np.mod(np.round(np.mod(frac, 1.0) * scale), scale) / scale
    a, b, c = s.lattice.abc
    al, be, ga = s.lattice.angles
    lines = [
        " ".join(_fmt(v, fmt.length_decimals) for v in (a, b, c)),
        " ".join(_fmt(v, fmt.angle_decimals) for v in (al, be, ga)),
    ]
    for site, xyz in zip(s, frac):
        lines.append(site.specie.symbol + " " + " ".join(_fmt(v, fmt.coord_decimals) for v in xyz))
    return "\n".join(lines)


def cell_formula(structure_or_composition: Structure | Composition | dict[str, int]) -> list[tuple[str, int]]:
    """The cell's composition as (element, count) pairs, sorted by element symbol."""
    if isinstance(structure_or_composition, Structure):
        comp: dict[str, float] = structure_or_composition.composition.get_el_amt_dict()
    elif isinstance(structure_or_composition, Composition):
        comp = structure_or_composition.get_el_amt_dict()
    else:
        comp = dict(structure_or_composition)
    out = []
    for el, n in sorted(comp.items()):
        if abs(n - round(n)) > 1e-6:
            raise ValueError(f"non-integer count {n} of {el} in the cell")
        out.append((str(el), int(round(n))))
    return out


def formula_prompt(formula: Sequence[tuple[str, int]]) -> str:
    """``"Na 4 Cl 4"``: the conditioning text of a cell composition (between <formula> tokens)."""
    return " ".join(f"{el} {n}" for el, n in formula)


class CrystalTokenizer:
    """One token per digit, '-', '.', space, newline and element symbol, plus the specials.

    The vocabulary is fixed by the code (specials, characters, then the elements in atomic-number
    order), so a checkpoint needs only ``vocab_size`` to be used with it.
    """

    def __init__(self) -> None:
        self.tokens: tuple[str, ...] = SPECIALS + CHARS + ELEMENTS
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (self.index[t] for t in (PAD, BOS, EOS, UNK))
        self.fstart_id, self.fend_id = self.index[FSTART], self.index[FEND]

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of ``text``; an unknown piece raises ``ValueError`` naming it."""
        ids = []
        for piece in _TOKEN_RE.findall(text):
            if piece not in self.index:
                # "Xy" that is no element: maybe "X" + "y"? Neither is in the vocabulary either.
                raise ValueError(f"no token for {piece!r} in {text[:40]!r}...")
            ids.append(self.index[piece])
        return ids

    def encode(self, text: str, formula: Sequence[tuple[str, int]] | None = None, eos: bool = True) -> list[int]:
        """``<bos> [<formula> ... </formula>] text [<eos>]``."""
        return self.prompt(formula) + self.encode_text(text) + ([self.eos_id] if eos else [])

    def prompt(self, formula: Sequence[tuple[str, int]] | None = None) -> list[int]:
        """The prompt of a sample: ``<bos>`` (unconditional) or ``<bos> <formula> .. </formula>``."""
        ids = [self.bos_id]
        if formula is not None:
            ids += [self.fstart_id] + self.encode_text(formula_prompt(formula)) + [self.fend_id]
        return ids

    def decode(self, ids: Sequence[int]) -> tuple[str, list[tuple[str, int]] | None, bool]:
        """(crystal text, the formula prompt if the ids hold one, whether an <eos> ended it).

        Decoding stops at the first <eos> or <pad>; the formula part is parsed back.
        """
        ids = list(ids)
        ended = False
        for k, i in enumerate(ids):
            if i in (self.eos_id, self.pad_id):
                ended = i == self.eos_id
                ids = ids[:k]
                break
        if ids and ids[0] == self.bos_id:
            ids = ids[1:]
        formula = None
        if ids and ids[0] == self.fstart_id:
            end = ids.index(self.fend_id) if self.fend_id in ids else len(ids)
            ftext = "".join(self.tokens[i] for i in ids[1:end])
            ids = ids[end + 1:]
            formula = _parse_formula_text(ftext)
        text = "".join(self.tokens[i] for i in ids if i not in (self.bos_id, self.fstart_id, self.fend_id))
        return text, formula, ended


def _parse_formula_text(text: str) -> list[tuple[str, int]] | None:
    parts = text.split()
    if len(parts) % 2:
        return None
    out = []
    for el, n in zip(parts[::2], parts[1::2]):
        if el not in _ELEMENT_SET or not n.isdigit():
            return None
        out.append((el, int(n)))
    return out


def _numbers(line: str, n: int, what: str) -> list[float] | ParseFailure:
    parts = line.split()
    if len(parts) != n:
        return ParseFailure(f"bad {what} line", f"{line!r}: expected {n} numbers")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return ParseFailure(f"bad {what} line", f"{line!r}: not numbers")
    if not all(np.isfinite(values)):
        return ParseFailure(f"bad {what} line", f"{line!r}: non-finite")
    return values


def parse_crystal(
    text: str,
    fmt: TextFormat = TextFormat(),
    formula: Sequence[tuple[str, int]] | None = None,
    ended: bool = True,
) -> Structure | ParseFailure:
    """A ``Structure`` from crystal text, or the reason it is none.

    Reasons: ``truncated`` (no <eos> before the length limit, when ``ended`` is False),
    ``bad lattice line``, ``bad angle line``, ``invalid lattice`` (lengths ≤ 0, angles outside
    (0°, 180°) or a cell without volume), ``bad site line`` (not "El x y z"), ``unknown element``,
    ``no sites``, ``too many sites`` (> ``fmt.max_sites``) and ``formula mismatch`` (the
    composition differs from the ``formula`` prompt, for conditioned samples).
    """
    if not ended:
        return ParseFailure("truncated", "no end token before the length limit")
    lines = [ln for ln in text.strip("\n").split("\n")]
    if len(lines) < 2:
        return ParseFailure("bad lattice line", "fewer than two lines")
    lengths = _numbers(lines[0], 3, "lattice")
    if isinstance(lengths, ParseFailure):
        return lengths
    angles = _numbers(lines[1], 3, "angle")
    if isinstance(angles, ParseFailure):
        return angles
    if min(lengths) <= 0 or min(angles) <= 0 or max(angles) >= 180:
        return ParseFailure("invalid lattice", f"lengths {lengths}, angles {angles}")
    try:
        lattice = Lattice.from_parameters(*lengths, *angles)
        volume = float(lattice.volume)
    except Exception as exc:  # pymatgen raises on impossible angle triples
        return ParseFailure("invalid lattice", f"{type(exc).__name__}: {exc}")
    if not np.isfinite(volume) or volume < 0.1:
        return ParseFailure("invalid lattice", f"volume {volume} Å^3 (lengths {lengths}, angles {angles})")
    species: list[str] = []
    coords: list[list[float]] = []
    for ln in lines[2:]:
        parts = ln.split()
        if len(parts) != 4:
            return ParseFailure("bad site line", f"{ln!r}: expected 'element x y z'")
        el = parts[0]
        if el not in _ELEMENT_SET:
            return ParseFailure("unknown element", repr(el))
        try:
            xyz = [float(p) for p in parts[1:]]
        except ValueError:
            return ParseFailure("bad site line", f"{ln!r}: coordinates are not numbers")
        species.append(el)
        coords.append(xyz)
    if not species:
        return ParseFailure("no sites")
    if len(species) > fmt.max_sites:
        return ParseFailure("too many sites", f"{len(species)} > {fmt.max_sites}")
    if formula is not None:
        want = Counter({el: n for el, n in formula})
        got = Counter(species)
        if want != got:
            return ParseFailure("formula mismatch", f"prompt {dict(want)}, written {dict(got)}")
    return Structure(lattice, species, np.mod(np.asarray(coords), 1.0), coords_are_cartesian=False)
