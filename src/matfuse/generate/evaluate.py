"""Metrics of generated crystals: validity, coverage, property distances, stability and S.U.N.

Definitions (validity, coverage, Wasserstein distances) follow CDVAE (Xie et al., ICLR 2022,
github txie-93/cdvae ``scripts/eval_utils.py`` / ``compute_metrics.py``, MIT licence, Copyright
2021 Tian Xie, Xiang Fu), which FlowMM and FlowLLM use; the code here is our own.

* **Composition validity**: SMACT charge neutrality with the SMACT 2014 oxidation states
  (``Element.oxidation_states_smact14``; smact >= 3 changed the default list) and the Pauling
  electronegativity test; one element, or only metals (``smact.metals``: CDVAE's alloy rule), is
  valid. Elements SMACT has no SMACT14 states for (noble gases He, Ne, Ar) have none; an element
  without Pauling electronegativity passes the electronegativity test (CDVAE catches the
  ``TypeError``); counts are the cell's atom counts divided by their gcd, as CDVAE.
* **Structure validity**: every interatomic distance >= 0.5 Å and cell volume >= 0.1 Å^3.
  A sample is valid when both hold.
* **Coverage** (COV-R, COV-P): structure fingerprint = mean over sites of matminer's
  ``CrystalNNFingerprint.from_preset("ops")``; composition fingerprint = matminer's Magpie
  ``ElementProperty``, standardised (CDVAE uses fixed MP-20 training means/stds; we fit them on up to
  ``comp_scaler_max`` training compositions). A test structure is recalled when some valid sample is
  within ``cov_struct_cutoff`` (Euclidean) in structure *and* ``cov_comp_cutoff`` in composition
  fingerprint (MP-20: 0.4 / 10; CDVAE's carbon-24: 0.2 / 12, perov-5: 0.2 / 4); COV-P is the share
  of *all* samples drawn within both cut-offs of some test structure. The test set is subsampled to
  ``coverage_max_reference`` structures (seeded) and its fingerprints cached.
* **Wasserstein distances** (scipy) of density (g/cm^3) and number of elements, valid samples vs the
  test split.
* **Stability** (:mod:`matfuse.generate.stability`): CHGNet relaxation, E_hull against the CHGNet
  energies of the training split's reference phases (``e_hull_chgnet``), and the shipped CGCNN's
  Ef against the training collection's DFT hull (``e_hull_model``). Stable at E_hull <= 0 and <= 0.1
  eV/atom (``stability_thresholds``). The reference set is small (<= 20-site training entries of a
  2018 MP snapshot), so a system without any compound reference has a hull of the elements only and
  E_hull there is a formation energy: ``hull_compounds`` (compound references in the system) and
  ``hull_fitted_mu`` flag such samples and the summary counts the stable ones among them.
* **S.U.N.** (per threshold): stable, >= 2 elements, unique among the stable samples (the first of
  each group of matching relaxed structures), and novel (matches no training structure of the same
  reduced formula), with pymatgen ``StructureMatcher`` at its defaults ltol 0.2, stol 0.3,
  angle_tol 5° (primitive cell, scaled volumes: a supercell or a rotated copy matches).

Every rate is per sample *drawn* (parse failures count in the denominator), with a percentile
bootstrap interval over the samples (``n_bootstrap`` resamples). The uniqueness of a resample is
taken from the full set (an approximation that keeps the bootstrap cheap).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections import Counter
from functools import reduce
from math import gcd
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from matfuse.io import write_json, write_parquet, write_text

log = logging.getLogger(__name__)


class EvalConfig(BaseModel):
    """Settings of the generation metrics (defaults: CDVAE/FlowMM's MP-20 protocol where one exists)."""

    model_config = ConfigDict(extra="forbid")

    # validity (CDVAE)
    min_distance: float = Field(0.5, gt=0, description="structure validity: every interatomic distance >= this (Å)")
    min_volume: float = Field(0.1, ge=0, description="structure validity: cell volume >= this (Å^3)")
    oxidation_states: Literal["smact14"] = "smact14"
    pauling_test: bool = True
    include_alloys: bool = True
    # StructureMatcher (pymatgen defaults)
    ltol: float = Field(0.2, gt=0, description="StructureMatcher fractional length tolerance")
    stol: float = Field(0.3, gt=0, description="StructureMatcher site tolerance (fraction of (V/n)^(1/3))")
    angle_tol: float = Field(5.0, gt=0, description="StructureMatcher angle tolerance (degrees)")
    # stability
    stability_thresholds: list[float] = Field(default_factory=lambda: [0.0, 0.1], min_length=1,
                                              description="E_hull thresholds (eV/atom) of 'stable'")
    min_elements_sun: int = Field(2, ge=1, description="S.U.N. counts structures with at least this many elements")
    relax: Literal["parsed", "valid", "none"] = Field(
        "parsed", description="which samples CHGNet relaxes: every parsed one, only valid ones, none (static energy)")
    relax_steps: int = Field(500, ge=0, description="FIRE steps at most (0: static CHGNet energy)")
    relax_fmax: float = Field(0.1, gt=0, description="force convergence (eV/Å)")
    relax_cell: bool = True
    chgnet_threads: int = Field(1, ge=1, description="torch threads of one CHGNet job")
    formation_model: str | None = Field("mp20-formation-energy-cgcnn",
                                        description="shipped/trained Ef model of the second E_hull column (None: skip)")
    # coverage / distributions (CDVAE MP-20 cut-offs)
    cov_struct_cutoff: float = Field(0.4, gt=0)
    cov_comp_cutoff: float = Field(10.0, gt=0)
    coverage_max_reference: int = Field(500, ge=1, description="test structures fingerprinted for coverage (seeded subsample)")
    comp_scaler_max: int = Field(2000, ge=2, description="training compositions that fit the Magpie standardiser")
    # rates
    n_bootstrap: int = Field(1000, ge=10)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    cache_dir: str = Field("results/cache/generate", description="reference energies and test fingerprints")


# --------------------------------------------------------------------------- validity
_SMACT: dict[str, Any] = {}


def _smact_element(symbol: str):
    if symbol not in _SMACT:
        import smact

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                _SMACT[symbol] = smact.Element(symbol)
            except Exception:  # smact raises for elements it does not tabulate
                _SMACT[symbol] = None
    return _SMACT[symbol]


def smact14_states(symbol: str) -> list[int]:
    """SMACT 2014 oxidation states of an element ([] where SMACT has none: it returns None)."""
    el = _smact_element(symbol)
    states = getattr(el, "oxidation_states_smact14", None) if el is not None else None
    return [int(s) for s in states] if states else []


def composition_validity(comp: Any, pauling_test: bool = True, include_alloys: bool = True) -> bool:
    """CDVAE's ``smact_validity`` with the SMACT14 oxidation states (see the module docstring)."""
    import smact
    from pymatgen.core import Composition
    from smact.screening import pauling_test as pauling

    comp = Composition(comp)
    amounts = comp.get_el_amt_dict()
    symbols = sorted(amounts)
    if len(symbols) == 1:
        return True
    if include_alloys and all(s in smact.metals for s in symbols):
        return True
    counts = [int(round(amounts[s])) for s in symbols]
    if any(abs(amounts[s] - c) > 1e-6 or c < 1 for s, c in zip(symbols, counts)):
        return False  # fractional occupancy: no integer charge balance
    g = reduce(gcd, counts)
    counts = [c // g for c in counts]
    states = [smact14_states(s) for s in symbols]
    if any(not st for st in states):
        return False
    enegs = [getattr(_smact_element(s), "pauling_eneg", None) for s in symbols]
    from itertools import product

    threshold = max(counts)
    stoichs = [(c,) for c in counts]
    for ox in product(*states):
        ratios = smact.neutral_ratios(ox, stoichs=stoichs, threshold=threshold)
        if isinstance(ratios, tuple) and len(ratios) == 2 and isinstance(ratios[0], bool):
            ratios = ratios[1] if ratios[0] else []  # smact < 3 returned (exists, ratios)
        if not ratios:
            continue
        if not pauling_test or any(e is None for e in enegs):
            return True
        try:
            if pauling(ox, enegs):
                return True
        except TypeError:
            return True
    return False


def structure_validity(structure: Any, min_distance: float = 0.5, min_volume: float = 0.1) -> bool:
    """Every interatomic distance (periodic, between distinct sites) >= ``min_distance`` Å, volume >= ``min_volume``."""
    if structure is None or not math.isfinite(structure.volume) or structure.volume < min_volume:
        return False
    if len(structure) < 2:
        # one site: its nearest image is one lattice vector away
        return min(structure.lattice.abc) >= min_distance
    d = structure.distance_matrix
    if not np.isfinite(d).all():
        return False
    np.fill_diagonal(d, np.inf)
    return bool(d.min() >= min_distance)


# --------------------------------------------------------------------------- fingerprints, coverage
_FP: dict[str, Any] = {}


def structure_fingerprint(structure: Any) -> np.ndarray | None:
    """Mean over sites of CrystalNN "ops" fingerprints (None when CrystalNN fails)."""
    if "cnn" not in _FP:
        from matminer.featurizers.site import CrystalNNFingerprint

        _FP["cnn"] = CrystalNNFingerprint.from_preset("ops")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fps = [_FP["cnn"].featurize(structure, i) for i in range(len(structure))]
        out = np.asarray(fps, dtype=float).mean(axis=0)
        return out if np.isfinite(out).all() else None
    except Exception:  # CrystalNN raises on degenerate neighbourhoods
        return None


def composition_fingerprint(comp: Any) -> np.ndarray | None:
    """Magpie ``ElementProperty`` of a composition (None when it fails)."""
    if "magpie" not in _FP:
        from matminer.featurizers.composition import ElementProperty

        _FP["magpie"] = ElementProperty.from_preset("magpie", impute_nan=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(_FP["magpie"].featurize(comp), dtype=float)
    except Exception:
        return None


def _standardiser(comp_fps: Sequence[np.ndarray]):
    a = np.asarray(comp_fps, dtype=float)
    mean, std = np.nanmean(a, axis=0), np.nanstd(a, axis=0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)

    def transform(x):
        z = (np.asarray(x, dtype=float) - mean) / std
        return np.where(np.isfinite(z), z, 0.0)  # CDVAE: replace_nan_token 0

    return transform


def coverage(gen_struct: Sequence[np.ndarray | None], gen_comp: Sequence[np.ndarray | None],
             ref_struct: np.ndarray, ref_comp: np.ndarray, n_drawn: int, struct_cutoff: float,
             comp_cutoff: float, transform) -> dict[str, float]:
    """COV-R / COV-P (CDVAE ``compute_cov``) plus the mean minimum distances (AMSD/AMCD)."""
    from scipy.spatial.distance import cdist

    keep = [k for k, (s, c) in enumerate(zip(gen_struct, gen_comp)) if s is not None and c is not None]
    out = {"cov_recall": 0.0, "cov_precision": 0.0, "amsd_recall": math.nan, "amsd_precision": math.nan,
           "n_fingerprinted": len(keep), "n_reference": int(len(ref_struct))}
    if not keep or not len(ref_struct) or n_drawn == 0:
        return out
    gs = np.asarray([gen_struct[k] for k in keep])
    gc = transform(np.asarray([gen_comp[k] for k in keep]))
    ds, dc = cdist(gs, ref_struct), cdist(gc, transform(ref_comp))
    recall = (ds.min(axis=0) <= struct_cutoff) & (dc.min(axis=0) <= comp_cutoff)
    precision = (ds.min(axis=1) <= struct_cutoff) & (dc.min(axis=1) <= comp_cutoff)
    out.update(cov_recall=float(recall.mean()), cov_precision=float(precision.sum() / n_drawn),
               amsd_recall=float(ds.min(axis=0).mean()), amsd_precision=float(ds.min(axis=1).mean()))
    return out


# --------------------------------------------------------------------------- matching, bootstrap
def matcher(cfg: EvalConfig):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(ltol=cfg.ltol, stol=cfg.stol, angle_tol=cfg.angle_tol)


def unique_mask(structures: Sequence[Any], sm) -> np.ndarray:
    """True for the first structure of each group of matching ones (None entries: False)."""
    reps: dict[str, list[Any]] = {}
    out = np.zeros(len(structures), dtype=bool)
    for k, s in enumerate(structures):
        if s is None:
            continue
        group = reps.setdefault(s.composition.reduced_formula, [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not any(sm.fit(s, r) for r in group):
                group.append(s)
                out[k] = True
    return out


def novel_mask(structures: Sequence[Any], train_by_formula: dict[str, list[Any]], sm) -> np.ndarray:
    """True where no training structure of the same reduced formula matches (None entries: False)."""
    out = np.zeros(len(structures), dtype=bool)
    for k, s in enumerate(structures):
        if s is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[k] = not any(sm.fit(s, t) for t in train_by_formula.get(s.composition.reduced_formula, ()))
    return out


def bootstrap_rate(indicator: Sequence[bool], n_bootstrap: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> dict[str, float | int]:
    """Rate (mean of a 0/1 vector over samples drawn), count, and a percentile bootstrap interval."""
    x = np.asarray(indicator, dtype=float)
    n = len(x)
    if n == 0:
        return {"count": 0, "n": 0, "rate": math.nan, "lo": math.nan, "hi": math.nan}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_bootstrap, n))].mean(axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    rate = float(x.mean())
    return {"count": int(x.sum()), "n": int(n), "rate": rate, "lo": float(min(lo, rate)), "hi": float(max(hi, rate))}


# --------------------------------------------------------------------------- inputs
def read_structures_table(path: str | Path | pd.DataFrame, id_column: str | None = None) -> pd.DataFrame:
    """A table (Parquet/CSV/DataFrame) of structures -> DataFrame with ``id``, ``structure``
    (pymatgen Structure or None) and ``reason`` (why it is None).

    Structures are read from a ``structure`` column (pymatgen JSON or CIF/POSCAR text) or a ``cif``
    column; ids from ``id_column``, else ``sample_id`` or ``material_id``.
    """
    from matfuse.structures import StructureError, parse_structure

    if isinstance(path, pd.DataFrame):
        df = path.reset_index(drop=True).copy()
    else:
        p = Path(path)
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    col = "structure" if "structure" in df.columns else "cif" if "cif" in df.columns else None
    if col is None:
        raise ValueError(f"{path}: no 'structure' or 'cif' column (has {list(df.columns)})")
    idc = id_column or next((c for c in ("sample_id", "material_id") if c in df.columns), None)
    if idc is None:
        raise ValueError(f"{path}: no 'sample_id' or 'material_id' column")
    given = df["reason"] if "reason" in df.columns else pd.Series([None] * len(df))
    structures, reasons = [], []
    for value, why in zip(df[col], given):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            structures.append(None)
            reasons.append(str(why) if isinstance(why, str) and why else "no structure (no reason given)")
            continue
        try:
            structures.append(parse_structure(value))
            reasons.append(None)
        except StructureError as exc:
            structures.append(None)
            reasons.append(f"unreadable structure: {exc}")
    out = df.drop(columns=[c for c in (col, "reason") if c in df.columns]).copy()
    out.insert(0, "id", df[idc].astype(str))
    out["structure"] = structures
    out["reason"] = reasons
    if out["id"].duplicated().any():
        raise ValueError(f"{path}: duplicate ids, e.g. {out['id'][out['id'].duplicated()].iloc[0]!r}")
    return out


def samples_from_entries(entries: str | Path | pd.DataFrame, ids: Sequence[str] | None = None, n: int | None = None,
                         seed: int = 0, prefix: str = "test") -> pd.DataFrame:
    """Real structures as a samples table (the test split as the ceiling row): ``sample_id``
    (``<prefix>:<material_id>``), ``structure``, ``reason``, ``material_id``; ``n`` seeded draws of ``ids``."""
    df = pd.read_parquet(entries) if not isinstance(entries, pd.DataFrame) else entries
    if ids is not None:
        want = set(map(str, ids))
        df = df[df["material_id"].astype(str).isin(want)]
    if n is not None and n < len(df):
        df = df.sample(n=n, random_state=seed)
    col = "structure" if "structure" in df.columns else "cif"
    return pd.DataFrame({"sample_id": [f"{prefix}:{m}" for m in df["material_id"]], "structure": df[col].tolist(),
                         "reason": None, "material_id": df["material_id"].astype(str).tolist()})


def _train_table(train: pd.DataFrame | str | Path) -> pd.DataFrame:
    t = read_structures_table(train, "material_id" if not isinstance(train, pd.DataFrame) or "material_id" in train else None)
    bad = t[t["structure"].isna()]
    if len(bad):
        log.warning("%d training structures unreadable, left out of references/novelty, e.g. %s: %s",
                    len(bad), bad["id"].iloc[0], bad["reason"].iloc[0])
    t = t[t["structure"].notna()].reset_index(drop=True)
    t["material_id"] = t["id"]
    t["formula"] = [s.composition.formula.replace(" ", "") for s in t["structure"]]
    return t


# --------------------------------------------------------------------------- per-sample scoring
PER_SAMPLE_COLUMNS = [
    "sample_id", "method", "parsed", "reason", "formula", "reduced_formula", "nsites", "n_elements", "density",
    "comp_valid", "struct_valid", "valid", "relaxed", "relax_steps", "relax_converged", "isolated_atoms", "relax_time_s",
    "relax_reason", "chgnet_energy_per_atom", "e_hull_chgnet", "e_hull_chgnet_reason", "hull_compounds", "hull_fitted_mu", "ef_model",
    "e_hull_model", "e_hull_model_reason", "novel", "relaxed_structure",
]


def _thr_tag(t: float) -> str:
    return f"{t:g}".replace(".", "_").replace("-", "m")


def score_samples(samples: pd.DataFrame, method: str, train: pd.DataFrame, cfg: EvalConfig,
                  timings: dict[str, float] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-sample validity, relaxation, both E_hull columns, stability, uniqueness, novelty, S.U.N.

    ``samples``: :func:`read_structures_table` output; ``train``: :func:`_train_table` output (with
    ``formation_energy_per_atom``). Returns (per-sample frame, extra info: reference costs etc.).
    """
    from matfuse.generate import stability as st
    from matfuse.structures import dump_structure

    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    structs = list(samples["structure"])
    n = len(structs)
    parsed = np.array([s is not None for s in structs])
    comps = [s.composition if s is not None else None for s in structs]
    comp_valid = np.array([composition_validity(c, cfg.pauling_test, cfg.include_alloys) if c is not None else False
                           for c in comps])
    struct_valid = np.array([structure_validity(s, cfg.min_distance, cfg.min_volume) if s is not None else False
                             for s in structs])
    valid = comp_valid & struct_valid
    timings["validity_s"] = time.perf_counter() - t0

    # relaxation
    t0 = time.perf_counter()
    settings = st.RelaxSettings(steps=cfg.relax_steps if cfg.relax != "none" else 0, fmax=cfg.relax_fmax,
                                relax_cell=cfg.relax_cell, threads=cfg.chgnet_threads)
    relax_sel = parsed & (valid if cfg.relax == "valid" else True)
    recs = []
    for k, s in enumerate(structs):
        if relax_sel[k]:
            recs.append(st.relax_one(s, settings))
        else:
            recs.append({"energy_per_atom": math.nan, "relaxed": None, "n_steps": 0, "converged": False,
                         "isolated_atoms": False, "relax_time_s": 0.0, "relax_reason": "not parsed" if s is None else "not relaxed (invalid)"})
    relaxed = [r["relaxed"] for r in recs]
    timings["relax_s"] = time.perf_counter() - t0

    # CHGNet hull of training references
    t0 = time.perf_counter()
    cache = st.ReferenceCache(cfg.cache_dir, settings)
    rcomps = [r.composition if r is not None else None for r in relaxed]
    hull, ref_cost = st.chgnet_reference_hull(train, [c for c in rcomps if c is not None], cache)
    eh_chg, eh_chg_reason, hull_compounds, fitted_mu = [], [], [], []
    for c, r in zip(rcomps, recs):
        if c is None:
            eh_chg.append(math.nan)
            eh_chg_reason.append(r["relax_reason"] or "no relaxed structure")
            hull_compounds.append(None)
            fitted_mu.append(False)
        else:
            e, why = hull.e_above_hull(c, r["energy_per_atom"])
            eh_chg.append(e)
            eh_chg_reason.append(why)
            nc, fm = hull.coverage(c)
            hull_compounds.append(nc)
            fitted_mu.append(fm)
    timings["reference_hull_s"] = time.perf_counter() - t0

    # own formation-energy model vs the training collection's DFT hull
    t0 = time.perf_counter()
    ids = samples["id"].astype(str).tolist()
    ef = np.full(n, np.nan)
    eh_mod, eh_mod_reason = [math.nan] * n, ["no formation model"] * n
    if cfg.formation_model:
        ef = st.predict_formation_energy(relaxed, ids, cfg.formation_model).reindex(ids).to_numpy(dtype=float)
        chull = st.collection_hull(train)
        for k, c in enumerate(rcomps):
            if c is None:
                eh_mod_reason[k] = "no relaxed structure"
            elif not math.isfinite(ef[k]):
                eh_mod_reason[k] = "the model gave no prediction (rejected by the ingest/graph checks)"
            else:
                eh_mod[k], eh_mod_reason[k] = chull.e_above_hull(c, float(ef[k]))
    timings["formation_model_s"] = time.perf_counter() - t0

    # novelty against the training split (relaxed structures), uniqueness among the stable ones
    t0 = time.perf_counter()
    sm = matcher(cfg)
    need = {c.reduced_formula for c in rcomps if c is not None}
    by_formula: dict[str, list[Any]] = {}
    for s in train["structure"]:
        f = s.composition.reduced_formula
        if f in need:
            by_formula.setdefault(f, []).append(s)
    novel = novel_mask(relaxed, by_formula, sm)
    df = pd.DataFrame({
        "sample_id": ids, "method": method, "parsed": parsed,
        "reason": [r if r is not None else None for r in samples["reason"]],
        "formula": [c.formula.replace(" ", "") if c is not None else None for c in comps],
        "reduced_formula": [c.reduced_formula if c is not None else None for c in comps],
        "nsites": pd.array([len(s) if s is not None else None for s in structs], dtype="Int64"),
        "n_elements": pd.array([len(c.elements) if c is not None else None for c in comps], dtype="Int64"),
        "density": [float(s.density) if s is not None and s.volume > 0 else math.nan for s in structs],
        "comp_valid": comp_valid, "struct_valid": struct_valid, "valid": valid,
        "relaxed": np.array([r is not None for r in relaxed]),
        "relax_steps": np.array([r["n_steps"] for r in recs], dtype=np.int32),
        "relax_converged": np.array([r["converged"] for r in recs], dtype=bool),
        "isolated_atoms": np.array([r["isolated_atoms"] for r in recs], dtype=bool),
        "relax_time_s": np.array([r["relax_time_s"] for r in recs], dtype=float),
        "relax_reason": [r["relax_reason"] for r in recs],
        "chgnet_energy_per_atom": np.array([r["energy_per_atom"] for r in recs], dtype=float),
        "e_hull_chgnet": np.array(eh_chg, dtype=float), "e_hull_chgnet_reason": eh_chg_reason,
        "hull_compounds": pd.array(hull_compounds, dtype="Int64"), "hull_fitted_mu": np.array(fitted_mu, dtype=bool),
        "ef_model": ef, "e_hull_model": np.array(eh_mod, dtype=float), "e_hull_model_reason": eh_mod_reason,
        "novel": novel,
        "relaxed_structure": [dump_structure(r) if r is not None else None for r in relaxed],
    })
    nary = (df["n_elements"].fillna(0).to_numpy() >= cfg.min_elements_sun)
    for col in ("e_hull_chgnet", "e_hull_model"):
        e = df[col].to_numpy()
        for t in cfg.stability_thresholds:
            tag = f"{col.replace('e_hull_', '')}_{_thr_tag(t)}"
            stable = np.isfinite(e) & (e <= t)
            uniq = unique_mask([r if s else None for r, s in zip(relaxed, stable)], sm)
            df[f"stable_{tag}"] = stable
            df[f"unique_stable_{tag}"] = uniq
            df[f"sun_{tag}"] = stable & uniq & novel & nary
    timings["sun_s"] = time.perf_counter() - t0
    return df, {"references": ref_cost, "relax_settings": settings.key()}


def _rates(df: pd.DataFrame, cfg: EvalConfig) -> dict[str, Any]:
    cols = ["parsed", "comp_valid", "struct_valid", "valid", "novel"]
    cols += [c for c in df.columns if c.startswith(("stable_", "sun_", "unique_stable_"))]
    return {c: bootstrap_rate(df[c].to_numpy(dtype=bool), cfg.n_bootstrap, cfg.confidence, cfg.seed) for c in cols}


def _reference_fingerprints(test: pd.DataFrame, cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray, list[float], list[int], dict]:
    """Fingerprints of (a seeded subsample of) the test structures, cached by their ids and hashes."""
    import hashlib

    from matfuse.structures import structure_hash

    ok = test[test["structure"].notna()].reset_index(drop=True)
    if len(ok) > cfg.coverage_max_reference:
        ok = ok.sample(n=cfg.coverage_max_reference, random_state=cfg.seed).reset_index(drop=True)
    key = hashlib.sha256("".join(f"{i}:{structure_hash(s)};" for i, s in zip(ok["id"], ok["structure"])).encode()).hexdigest()[:16]
    path = Path(cfg.cache_dir) / "fingerprints" / f"test-{key}.parquet"
    t0 = time.perf_counter()
    if path.exists():
        fp = pd.read_parquet(path)
        cached = True
    else:
        sfp = [structure_fingerprint(s) for s in ok["structure"]]
        cfp = [composition_fingerprint(s.composition) for s in ok["structure"]]
        fp = pd.DataFrame({"id": ok["id"], "struct_fp": [x.tolist() if x is not None else None for x in sfp],
                           "comp_fp": [x.tolist() if x is not None else None for x in cfp]})
        write_parquet(fp, path)
        cached = False
    good = fp["struct_fp"].notna() & fp["comp_fp"].notna()
    rs = np.asarray([np.asarray(v, float) for v in fp.loc[good, "struct_fp"]])
    rc = np.asarray([np.asarray(v, float) for v in fp.loc[good, "comp_fp"]])
    dens = [float(s.density) for s in test["structure"] if s is not None]
    nel = [len(s.composition.elements) for s in test["structure"] if s is not None]
    return rs, rc, dens, nel, {"n_test_fingerprinted": int(good.sum()), "cached": cached,
                               "seconds": time.perf_counter() - t0, "path": str(path)}


def _comp_transform(train: pd.DataFrame, cfg: EvalConfig):
    comps = train["structure"].map(lambda s: s.composition)
    if len(comps) > cfg.comp_scaler_max:
        comps = comps.sample(n=cfg.comp_scaler_max, random_state=cfg.seed)
    fps = [f for f in (composition_fingerprint(c) for c in comps) if f is not None]
    return _standardiser(fps)


def evaluate_method(samples_path: str | Path, method: str, train_path: str | Path, test_path: str | Path,
                    cfg: EvalConfig, out_dir: str | Path) -> dict[str, Any]:
    """Stage function: every metric of one method's samples; writes ``out_dir/samples.parquet``
    (one row per sample drawn, columns :data:`PER_SAMPLE_COLUMNS` + stable/unique/sun flags per
    threshold and E_hull column) and ``out_dir/summary.json`` (rates with counts and bootstrap
    intervals, coverage, Wasserstein distances, E_hull statistics, timings, CHGNet checkpoint).

    ``samples_path``: Parquet/CSV with ``sample_id``, ``structure`` (pymatgen JSON or CIF text;
    null = parse failure) and ``reason``. ``train_path`` / ``test_path``: entry tables
    (``material_id``, ``structure``; the training table also ``formation_energy_per_atom``) of the
    training split (references, novelty, Magpie standardiser, DFT hull) and the test split
    (coverage, Wasserstein). Returns the summary.
    """
    from scipy.stats import wasserstein_distance

    from matfuse.generate import stability as st

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    samples = read_structures_table(samples_path)
    train = _train_table(train_path)
    test = read_structures_table(test_path, "material_id")
    timings["read_s"] = time.perf_counter() - t0
    log.info("%s: %d samples (%d parse failures); %d training, %d test structures", method, len(samples),
             int(samples["structure"].isna().sum()), len(train), len(test))

    df, info = score_samples(samples, method, train, cfg, timings)

    # coverage and distributions (as generated, not relaxed: CDVAE)
    t0 = time.perf_counter()
    vmask = df["valid"].to_numpy()
    vstructs = [s for s, v in zip(samples["structure"], vmask) if v]
    gen_s = [structure_fingerprint(s) for s in vstructs]
    gen_c = [composition_fingerprint(s.composition) for s in vstructs]
    rs, rc, dens, nel, fpinfo = _reference_fingerprints(test, cfg)
    cov = coverage(gen_s, gen_c, rs, rc, len(df), cfg.cov_struct_cutoff, cfg.cov_comp_cutoff, _comp_transform(train, cfg))
    wdist = {
        "wdist_density": float(wasserstein_distance([s.density for s in vstructs], dens)) if vstructs else math.nan,
        "wdist_n_elements": float(wasserstein_distance([len(s.composition.elements) for s in vstructs], nel)) if vstructs else math.nan,
    }
    timings["coverage_s"] = time.perf_counter() - t0

    failures = Counter(str(r).split(":")[0] for r in df.loc[~df["parsed"], "reason"])
    ehull_stats = {}
    for col in ("e_hull_chgnet", "e_hull_model"):
        e = df[col].dropna()
        ehull_stats[col] = {"n": int(len(e)), "median": float(e.median()) if len(e) else math.nan,
                            "mean": float(e.mean()) if len(e) else math.nan,
                            "q10": float(e.quantile(0.1)) if len(e) else math.nan,
                            "q90": float(e.quantile(0.9)) if len(e) else math.nan}
    relaxed_times = df.loc[df["relax_steps"] > 0, "relax_time_s"]
    hull_cov = _hull_coverage(df, cfg)
    timings["total_s"] = time.perf_counter() - t_start
    summary = {
        "method": method, "n_drawn": int(len(df)), "n_parsed": int(df["parsed"].sum()),
        "parse_failures": dict(failures),
        "rates": _rates(df, cfg), "coverage": cov, "wasserstein": wdist, "e_hull": ehull_stats,
        "relax": {"n": int(len(relaxed_times)), "mean_time_s": float(relaxed_times.mean()) if len(relaxed_times) else math.nan,
                  "converged": int(df["relax_converged"].sum()), "isolated_atoms": int(df["isolated_atoms"].sum()), "failed": int(df["relax_reason"].str.startswith("CHGNet", na=False).sum())},
        "hull_coverage": hull_cov, "references": info["references"], "test_fingerprints": fpinfo,
        "timings": timings, "chgnet": st.chgnet_info(), "relax_settings": info["relax_settings"],
        "config": cfg.model_dump(),
        "n_train": int(len(train)), "n_test": int(len(test)),
    }
    out = Path(out_dir)
    write_parquet(df, out / "samples.parquet")
    write_json(_finite(summary), out / "summary.json")
    log.info("%s: valid %.3f, stable(CHGNet, <=0) %.3f, S.U.N.(<=0) %.3f, %.0f s", method,
             summary["rates"]["valid"]["rate"], summary["rates"]["stable_chgnet_0"]["rate"],
             summary["rates"]["sun_chgnet_0"]["rate"], timings["total_s"])
    return summary


def _hull_coverage(df: pd.DataFrame, cfg: EvalConfig) -> dict[str, int]:
    """How many compound samples have a hull of elements only (no compound reference in their system) or a
    fitted chemical potential, and how many of the stable ones (CHGNet, each threshold) are such."""
    no_comp = ((df["hull_compounds"].fillna(-1) == 0) & (df["n_elements"].fillna(0) >= 2)).to_numpy()
    fit = df["hull_fitted_mu"].to_numpy(dtype=bool)
    out = {"no_compound_reference": int(no_comp.sum()), "fitted_chemical_potential": int(fit.sum())}
    for t in cfg.stability_thresholds:
        stable = df[f"stable_chgnet_{_thr_tag(t)}"].to_numpy(dtype=bool)
        out[f"stable_chgnet_{_thr_tag(t)}_no_compound_reference"] = int((stable & no_comp).sum())
        out[f"stable_chgnet_{_thr_tag(t)}_fitted_chemical_potential"] = int((stable & fit).sum())
    return out


def _finite(obj: Any) -> Any:
    """NaN/inf -> None for JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# --------------------------------------------------------------------------- calibration row
def calibrate(reference_path: str | Path, train_path: str | Path, cfg: EvalConfig, out_dir: str | Path,
              method: str = "calibration: MP-20 test (DFT e_above_hull)") -> dict[str, Any]:
    """The identical pipeline on real structures with DFT ``e_above_hull`` (CDVAE MP-20 test.csv rows:
    ``material_id``, ``cif``, ``e_above_hull``): correlation and MAE of our E_hull columns against
    DFT, and agreement of the stable calls at each threshold. Rows whose id is a training reference
    are reported apart (their own CHGNet energy is in the hull). Writes ``out_dir/samples.parquet``
    and ``out_dir/summary.json``; returns the summary.
    """
    from scipy.stats import pearsonr, spearmanr

    from matfuse.generate.stability import chgnet_info

    t0 = time.perf_counter()
    raw = pd.read_parquet(reference_path) if str(reference_path).endswith(".parquet") else pd.read_csv(reference_path)
    samples = read_structures_table(raw, "material_id")
    train = _train_table(train_path)
    df, info = score_samples(samples, method, train, cfg)
    dft = pd.to_numeric(raw["e_above_hull"], errors="coerce").to_numpy(dtype=float)
    df["e_above_hull_dft"] = dft
    df["in_references"] = df["sample_id"].isin(set(train["material_id"]))
    out: dict[str, Any] = {"method": method, "n_drawn": int(len(df)), "n_in_references": int(df["in_references"].sum())}
    covered = ((df["hull_compounds"].fillna(0) > 0) | (df["n_elements"].fillna(0) == 1)).to_numpy()
    subsets = (("all", np.ones(len(df), bool)), ("not_in_references", ~df["in_references"].to_numpy()),
               ("not_in_references_with_compound_reference", ~df["in_references"].to_numpy() & covered))
    for subset, mask in subsets:
        block: dict[str, Any] = {}
        for col in ("e_hull_chgnet", "e_hull_model"):
            ours = df[col].to_numpy(dtype=float)
            ok = mask & np.isfinite(ours) & np.isfinite(dft)
            b: dict[str, Any] = {"n": int(ok.sum())}
            if ok.sum() >= 3:
                diff = ours[ok] - dft[ok]
                b.update(mae=float(np.abs(diff).mean()), mean_diff=float(diff.mean()),
                         median_diff=float(np.median(diff)), median_abs_diff=float(np.median(np.abs(diff))),
                         pearson=float(pearsonr(ours[ok], dft[ok])[0]), spearman=float(spearmanr(ours[ok], dft[ok])[0]))
            for t in cfg.stability_thresholds:
                so, sd = ours[ok] <= t, dft[ok] <= t
                b[f"threshold_{t:g}"] = {"stable_rate_ours": float(so.mean()) if ok.any() else None,
                                         "stable_rate_dft": float(sd.mean()) if ok.any() else None,
                                         "agreement": float((so == sd).mean()) if ok.any() else None,
                                         "both": int((so & sd).sum()), "ours_only": int((so & ~sd).sum()),
                                         "dft_only": int((~so & sd).sum())}
            block[col] = b
        out[subset] = block
    out.update(rates=_rates(df, cfg), hull_coverage=_hull_coverage(df, cfg), references=info["references"], chgnet=chgnet_info(),
               relax_settings=info["relax_settings"], seconds=time.perf_counter() - t0, config=cfg.model_dump())
    write_parquet(df, Path(out_dir) / "samples.parquet")
    write_json(_finite(out), Path(out_dir) / "summary.json")
    return out


# --------------------------------------------------------------------------- pictures and tables
def plot_ehull_histograms(sample_paths: dict[str, str | Path], out_path: str | Path, column: str = "e_hull_chgnet",
                          bins: int = 40, clip: tuple[float, float] = (-0.5, 2.0)) -> None:
    """One E_hull histogram per method (rows), values clipped to ``clip`` eV/atom, stability thresholds marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matfuse.io import atomic_path

    names = list(sample_paths)
    fig, axes = plt.subplots(len(names), 1, figsize=(6, 1.8 * len(names) + 0.6), sharex=True, squeeze=False)
    edges = np.linspace(clip[0], clip[1], bins + 1)
    for ax, name in zip(axes[:, 0], names):
        e = pd.read_parquet(sample_paths[name], columns=[column])[column].dropna().to_numpy()
        ax.hist(np.clip(e, *clip), bins=edges, color="tab:blue", alpha=0.8)
        for t, ls in ((0.0, "-"), (0.1, "--")):
            ax.axvline(t, color="k", lw=0.8, ls=ls)
        ax.set_ylabel("samples")
        ax.set_title(f"{name} (n = {len(e)})", fontsize=9)
    axes[-1, 0].set_xlabel(f"{column} (eV/atom, clipped to [{clip[0]}, {clip[1]}])")
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(out_path).suffix.lstrip(".") or "png")
    plt.close(fig)


#: FlowLLM's own MP-20 figures, from ../shared/papers/published.md only (with the source it names).
PUBLISHED_FLOWLLM = {
    "stable_rate": (0.1782, "seed article (press summary of Sriram et al., NeurIPS 2024, arXiv 2410.23405)"),
    "sun_rate": (0.0492, "seed article (press summary of Sriram et al., NeurIPS 2024, arXiv 2410.23405)"),
}

NOT_COMPARABLE = ("Not comparable with the published figures: a CPU-sized LM, a proxy hull (CHGNet energies of local "
                  "MP-20-training reference phases; the published protocol is DFT with MP2020 corrections against the "
                  "Matbench-Discovery MP hull) and no DFT, on far fewer samples (the paper draws 10,000).")


def _pct(r: dict[str, Any] | None) -> str:
    if not r or r.get("rate") is None or (isinstance(r.get("rate"), float) and math.isnan(r["rate"])):
        return "–"
    return f"{100 * r['rate']:.1f} [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}] ({r['count']}/{r['n']})"


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def summary_table(summaries: Sequence[dict[str, Any] | str | Path], out_path: str | Path | None = None,
                  calibration: dict[str, Any] | str | Path | None = None) -> str:
    """Markdown table of per-method summaries (rates in % with 95 % bootstrap intervals and counts),
    the calibration row beside them, and FlowLLM's published figures with their source."""
    rows = [json.loads(Path(s).read_text()) if not isinstance(s, dict) else s for s in summaries]
    cal = json.loads(Path(calibration).read_text()) if calibration is not None and not isinstance(calibration, dict) else calibration
    head = ["method", "n", "parsed %", "valid %", "COV-R", "COV-P", "w(density)", "w(#elem)",
            "stable ≤0 % (CHGNet)", "stable ≤0.1 % (CHGNet)", "S.U.N. ≤0 % (CHGNet)", "S.U.N. ≤0.1 % (CHGNet)",
            "stable ≤0 % (own Ef)", "S.U.N. ≤0 % (own Ef)", "median E_hull CHGNet", "time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in rows:
        r = s.get("rates", {})
        cov, w = s.get("coverage", {}), s.get("wasserstein", {})
        lines.append("| " + " | ".join([
            str(s["method"]), str(s.get("n_drawn")), _pct(r.get("parsed")), _pct(r.get("valid")),
            _num(cov.get("cov_recall")), _num(cov.get("cov_precision")), _num(w.get("wdist_density")),
            _num(w.get("wdist_n_elements")), _pct(r.get("stable_chgnet_0")), _pct(r.get("stable_chgnet_0_1")),
            _pct(r.get("sun_chgnet_0")), _pct(r.get("sun_chgnet_0_1")), _pct(r.get("stable_model_0")),
            _pct(r.get("sun_model_0")), _num(s.get("e_hull", {}).get("e_hull_chgnet", {}).get("median")),
            _num(s.get("timings", {}).get("total_s"), "{:.0f}")]) + " |")
    if cal is not None:
        r = cal.get("rates", {})
        lines.append("| " + " | ".join([
            str(cal["method"]), str(cal.get("n_drawn")), _pct(r.get("parsed")), _pct(r.get("valid")), "–", "–", "–", "–",
            _pct(r.get("stable_chgnet_0")), _pct(r.get("stable_chgnet_0_1")), "–", "–", _pct(r.get("stable_model_0")), "–",
            "–", _num(cal.get("seconds"), "{:.0f}")]) + " |")
    pub = PUBLISHED_FLOWLLM
    lines.append("| FlowLLM (published, MP-20, DFT) | 10,000 | – | – | – | – | – | – | "
                 f"{100 * pub['stable_rate'][0]:.2f} | – | {100 * pub['sun_rate'][0]:.2f} | – | – | – | – | – |")
    text = "\n".join(lines) + "\n\n"
    text += ("Rates in % of samples drawn with 95 % bootstrap intervals and (count/n). Published FlowLLM figures: "
             f"{pub['stable_rate'][1]} (from ../shared/papers/published.md). {NOT_COMPARABLE}\n")
    if cal is not None:
        text += "\nCalibration (our E_hull vs DFT e_above_hull on real MP-20 test structures):\n\n"
        text += ("| subset | column | n | MAE | median diff | Pearson | Spearman | stable ≤0: ours / DFT / agreement "
                 "| stable ≤0.1: ours / DFT / agreement |\n")
        text += "|---|---|---|---|---|---|---|---|---|\n"
        for subset in ("all", "not_in_references", "not_in_references_with_compound_reference"):
            for col, b in cal.get(subset, {}).items():
                cells = []
                for t in ("0", "0.1"):
                    x = b.get(f"threshold_{t}", {})
                    cells.append(" / ".join(_num(x.get(k), "{:.2f}") for k in ("stable_rate_ours", "stable_rate_dft", "agreement")))
                text += (f"| {subset} | {col} | {b.get('n')} | {_num(b.get('mae'))} | {_num(b.get('median_diff'))} | "
                         f"{_num(b.get('pearson'), '{:.2f}')} | "
                         f"{_num(b.get('spearman'), '{:.2f}')} | {cells[0]} | {cells[1]} |\n")
    if out_path is not None:
        write_text(text, out_path)
    return text


def split_table(entries_path: str | Path, splits_path: str | Path, split: str, out_path: str | Path,
                max_sites: int | None = None) -> pd.DataFrame:
    """Stage helper: the entries of one split of ``splits.json`` (optionally <= ``max_sites`` sites),
    written to ``out_path`` (the train/test tables :func:`evaluate_method` reads)."""
    from matfuse.data import read_splits

    entries = pd.read_parquet(entries_path)
    ids = read_splits(splits_path)[split]
    missing = set(map(str, ids)) - set(entries["material_id"].astype(str))
    if missing:
        raise ValueError(f"{len(missing)} ids of split {split!r} are not in {entries_path}, e.g. {sorted(missing)[0]!r}")
    out = entries[entries["material_id"].astype(str).isin(set(map(str, ids)))].reset_index(drop=True)
    if max_sites is not None and "nsites" in out.columns:
        out = out[out["nsites"] <= max_sites].reset_index(drop=True)
    write_parquet(out, out_path)
    return out


def reference_stage(samples_paths: Sequence[str | Path], train_path: str | Path, cfg: EvalConfig,
                    shard: int = 0, n_shards: int = 1) -> dict[str, Any]:
    """Stage function (optional, before :func:`evaluate_method`): fill the CHGNet reference cache for
    the union of the chemical systems of several methods' samples, shard ``shard`` of ``n_shards``
    (references ``shard::n_shards`` of the needed ones, so jobs on several cores share the work;
    the cache merges under a file lock). Returns the cost (references, computed, seconds)."""
    from matfuse.generate import stability as st

    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}")
    systems = set()
    for p in samples_paths:
        for s in read_structures_table(p)["structure"]:
            if s is not None:
                systems.add(st.chemical_system(s.composition))
    train = _train_table(train_path)
    ref_systems = [st.chemical_system(s.composition) for s in train["structure"]]
    mask = st.needed_references(ref_systems, list(systems))
    refs = train.loc[mask].reset_index(drop=True).iloc[shard::n_shards]
    settings = st.RelaxSettings(steps=cfg.relax_steps if cfg.relax != "none" else 0, fmax=cfg.relax_fmax,
                                relax_cell=cfg.relax_cell, threads=cfg.chgnet_threads)
    _, cost = st.ReferenceCache(cfg.cache_dir, settings).energies(refs)
    cost.update(n_sample_systems=len(systems), shard=shard, n_shards=n_shards, n_needed_total=int(mask.sum()))
    log.info("references shard %d/%d: %d of %d needed, %d computed in %.0f s", shard, n_shards, len(refs),
             int(mask.sum()), cost["n_computed"], cost["seconds"])
    return cost
