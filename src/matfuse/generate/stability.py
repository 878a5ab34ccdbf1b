"""Stability of crystals: CHGNet relaxation and energy above a local, self-consistent hull.

Two E_hull columns, each on one consistent energy scale:

* ``e_hull_chgnet`` (eV/atom): the structure is relaxed with CHGNet (pretrained 0.3.0 weights that
  ship in the ``chgnet`` wheel, FIRE + FrechetCellFilter, one torch thread per job) and compared
  with the hull of the *reference phases*: the <= 20-site MP entries of the training split only
  (never test entries), themselves relaxed by the same CHGNet with the same settings, in every
  sub-system of the structure's chemical system. Reference energies are cached per CHGNet version,
  checkpoint hash and relaxation settings (:class:`ReferenceCache`, Parquet). An element without a
  local unary phase gets a *fitted chemical potential*: a least-squares fit of
  ``E_CHGNet(ref) - Ef_DFT(ref) = sum_el x_el mu_el`` over the references that contain it (``x`` the
  atomic fractions, ``Ef_DFT`` the reference's MP formation energy per atom, the other elements'
  ``mu`` fixed at their lowest local unary energy), added to the hull as a pseudo-unary entry.
  Negative values (below the reference hull) are kept.
* ``e_hull_model`` (eV/atom): the project's own formation-energy model (shipped CGCNN
  ``mp20-formation-energy-cgcnn``, mean over its seeds) predicts Ef of the relaxed structure,
  compared with the hull of the training split's DFT formation energies + the elements at 0 eV/atom
  (the collection's hull of :mod:`matfuse.hull`, training entries only).

Neither is Materials Project's DFT hull (FlowLLM/FlowMM use DFT with MP2020 corrections against the
Matbench-Discovery hull): both are proxies; :func:`matfuse.generate.evaluate.calibrate` measures how
far they are from DFT ``e_above_hull`` on real MP-20 test structures.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from matfuse.io import write_parquet

log = logging.getLogger(__name__)

CHGNET_MODEL = "0.3.0"
ISOLATED_CUTOFF = 6.0  # Å, CHGNet's atom-graph cut-off
#: Å^3 per atom below which a structure is not given to CHGNet: its 6 Å neighbour graph would hold
#: ~900 / (V/atom) edges per atom (memory blows up); real crystals have > 5 Å^3 per atom.
MIN_VOLUME_PER_ATOM = 1.0


# --------------------------------------------------------------------------- CHGNet
@lru_cache(maxsize=1)
def chgnet_info() -> dict[str, str]:
    """Version of the chgnet package and path + sha256 of the 0.3.0 checkpoint it ships."""
    import chgnet

    root = Path(chgnet.__file__).parent / "pretrained" / CHGNET_MODEL
    files = sorted(root.glob("*.pth.tar"))
    if not files:
        raise FileNotFoundError(f"chgnet {chgnet.__version__}: no {CHGNET_MODEL} checkpoint under {root}")
    sha = hashlib.sha256(files[0].read_bytes()).hexdigest()
    return {"chgnet_version": str(chgnet.__version__), "model": CHGNET_MODEL, "checkpoint": files[0].name,
            "checkpoint_sha256": sha}


@lru_cache(maxsize=1)
def load_chgnet():
    from chgnet.model import CHGNet

    info = chgnet_info()
    log.info("CHGNet %s (package %s), checkpoint %s sha256 %s", info["model"], info["chgnet_version"],
             info["checkpoint"], info["checkpoint_sha256"])
    return CHGNet.load(model_name=CHGNET_MODEL, use_device="cpu", verbose=False)


@lru_cache(maxsize=1)
def _optimizer():
    import contextlib
    import io

    from chgnet.model import StructOptimizer

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the device
        # isolated atoms are recorded per structure (relax_one), not warned at every step
        return StructOptimizer(model=load_chgnet(), optimizer_class="FIRE", use_device="cpu", on_isolated_atoms="ignore")


@dataclass(frozen=True)
class RelaxSettings:
    steps: int = 500
    fmax: float = 0.1
    relax_cell: bool = True
    threads: int = 1

    def key(self) -> str:
        return f"steps{self.steps}-fmax{self.fmax:g}-cell{int(self.relax_cell)}"


def relax_one(structure: Any, settings: RelaxSettings) -> dict[str, Any]:
    """Relax one pymatgen Structure with CHGNet. Returns a record (never raises for a bad structure).

    Keys: ``energy_per_atom`` (eV/atom, CHGNet of the final structure; NaN on failure),
    ``relaxed`` (the final Structure or None), ``n_steps``, ``converged`` (max force <= fmax at the
    end), ``relax_time_s``, ``relax_reason`` (None or why it failed).
    """
    import torch

    torch.set_num_threads(settings.threads)
    out: dict[str, Any] = {"energy_per_atom": math.nan, "relaxed": None, "n_steps": 0, "converged": False,
                           "isolated_atoms": False, "relax_time_s": 0.0, "relax_reason": None}
    if structure is None:
        out["relax_reason"] = "no structure"
        return out
    vpa = structure.volume / max(len(structure), 1)
    if not math.isfinite(vpa) or vpa < MIN_VOLUME_PER_ATOM:
        out["relax_reason"] = f"not relaxed: {vpa:.3g} Å^3 per atom (< {MIN_VOLUME_PER_ATOM} Å^3: CHGNet's graph would explode)"
        return out
    t0 = time.perf_counter()
    try:
        out["isolated_atoms"] = bool(any(len(n) == 0 for n in structure.get_all_neighbors(ISOLATED_CUTOFF)))
        opt = _optimizer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if settings.steps > 0:
                res = opt.relax(structure.copy(), fmax=settings.fmax, steps=settings.steps,
                                relax_cell=settings.relax_cell, verbose=False)
                final = res["final_structure"]
                traj = res["trajectory"]
                n_steps = len(traj.energies)
            else:
                final, n_steps = structure.copy(), 0
            pred = load_chgnet().predict_structure(final)
        e = float(pred["e"])
        if not math.isfinite(e):
            raise ValueError(f"non-finite CHGNet energy {e}")
        # FIRE stops before the step cap only when its (cell-filter) forces are <= fmax
        out.update(energy_per_atom=e, relaxed=final, n_steps=int(n_steps),
                   converged=bool(settings.steps > 0 and n_steps < settings.steps))
    except Exception as exc:  # CHGNet/ASE raise many types on exploding or degenerate cells
        out["relax_reason"] = f"CHGNet relaxation failed: {type(exc).__name__}: {str(exc)[:200]}"
    out["relax_time_s"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- reference phases
def _structure_key(structure: Any) -> str:
    from matfuse.structures import structure_hash

    return structure_hash(structure)


class ReferenceCache:
    """CHGNet energies of reference phases, one Parquet per CHGNet version / checkpoint / settings.

    Columns: ``material_id, structure_hash, formula, energy_per_atom, n_steps, converged,
    relax_time_s, relax_reason``. A row is reused only when id *and* input structure hash match.
    """

    COLUMNS = ["material_id", "structure_hash", "formula", "energy_per_atom", "n_steps", "converged",
               "relax_time_s", "relax_reason"]

    def __init__(self, cache_dir: str | Path, settings: RelaxSettings):
        info = chgnet_info()
        self.settings = settings
        self.path = (Path(cache_dir) / f"chgnet-{info['chgnet_version']}-{info['model']}-"
                     f"{info['checkpoint_sha256'][:12]}" / f"references-{settings.key()}.parquet")

    def read(self) -> pd.DataFrame:
        if self.path.exists():
            return pd.read_parquet(self.path)
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("energy_per_atom", "relax_time_s") else object)
                             for c in self.COLUMNS})

    def _merge(self, new: list[dict[str, Any]]) -> pd.DataFrame:
        """Append ``new`` rows to the cache file under a lock (parallel jobs share one cache):
        re-read, add, drop repeats, atomic rewrite. Returns the merged table."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            have = self.read()
            add = pd.DataFrame(new, columns=self.COLUMNS)
            merged = pd.concat([have, add], ignore_index=True) if len(have) else add
            merged = merged.drop_duplicates(["material_id", "structure_hash"], keep="first").reset_index(drop=True)
            merged = merged.astype({"material_id": str, "structure_hash": str, "formula": str,
                                    "energy_per_atom": float, "relax_time_s": float})
            write_parquet(merged, self.path)
        return merged

    def energies(self, refs: pd.DataFrame, flush_every: int = 100) -> tuple[pd.DataFrame, dict[str, Any]]:
        """CHGNet energies of ``refs`` (columns material_id, formula, structure: pymatgen Structures).

        Computes the ones not cached yet, adds them to the cache every ``flush_every`` structures
        (a crash loses at most that many) and returns (rows for ``refs`` in cache format, cost:
        n_cached, n_computed, seconds).
        """
        have = self.read()
        hashes = [_structure_key(s) for s in refs["structure"]]
        known = {(str(m), h) for m, h in zip(have["material_id"], have["structure_hash"])}
        todo = [k for k, (m, h) in enumerate(zip(refs["material_id"], hashes)) if (str(m), h) not in known]
        t0 = time.perf_counter()
        new: list[dict[str, Any]] = []
        n_new = 0
        for k in todo:
            r = relax_one(refs["structure"].iloc[k], self.settings)
            new.append({"material_id": str(refs["material_id"].iloc[k]), "structure_hash": hashes[k],
                        "formula": str(refs["formula"].iloc[k]), "energy_per_atom": r["energy_per_atom"],
                        "n_steps": r["n_steps"], "converged": r["converged"], "relax_time_s": r["relax_time_s"],
                        "relax_reason": r["relax_reason"]})
            if len(new) >= flush_every:
                have, n_new = self._merge(new), n_new + len(new)
                new = []
        if new:
            have, n_new = self._merge(new), n_new + len(new)
        seconds = time.perf_counter() - t0
        if n_new:
            log.info("reference cache %s: %d computed in %.1f s, %d reused", self.path, n_new, seconds,
                     len(refs) - n_new)
        key = {(str(m), h): i for i, (m, h) in enumerate(zip(have["material_id"], have["structure_hash"]))}
        rows = have.iloc[[key[(str(m), h)] for m, h in zip(refs["material_id"], hashes)]].reset_index(drop=True)
        return rows, {"n_references": len(refs), "n_cached": len(refs) - n_new, "n_computed": n_new,
                      "seconds": seconds, "cache": str(self.path)}


def chemical_system(comp: Any) -> frozenset[str]:
    return frozenset(el.symbol for el in comp.elements)


def _subsystems(system: frozenset[str]) -> list[frozenset[str]]:
    els = sorted(system)
    return [frozenset(c) for r in range(1, len(els) + 1) for c in combinations(els, r)]


def needed_references(ref_systems: Sequence[frozenset[str]], sample_systems: Sequence[frozenset[str]]) -> np.ndarray:
    """Mask of the references whose chemical system lies inside one of the samples' systems."""
    subs: set[frozenset[str]] = set()
    for s in set(sample_systems):
        subs.update(_subsystems(s))
    return np.array([s in subs for s in ref_systems], dtype=bool)


def fit_chemical_potentials(comps: Sequence[Any], chgnet_e: Sequence[float], dft_ef: Sequence[float],
                            known: dict[str, float], missing: Sequence[str]) -> dict[str, float]:
    """Chemical potentials (eV/atom, CHGNet scale) of elements without a unary reference phase.

    Least squares of ``E_CHGNet - Ef_DFT - sum_known x_el mu_el = sum_missing x_el mu_el`` over the
    references that contain a missing element and whose other elements are known (``x`` atomic
    fractions). Elements no such reference determines are left out of the result.
    """
    missing = sorted(set(missing))
    if not missing:
        return {}
    rows, ys = [], []
    for comp, e, ef in zip(comps, chgnet_e, dft_ef):
        if not (math.isfinite(e) and math.isfinite(ef)):
            continue
        frac = {el.symbol: comp.get_atomic_fraction(el) for el in comp.elements}
        if not any(m in frac for m in missing) or any(el not in known and el not in missing for el in frac):
            continue
        rows.append([frac.get(m, 0.0) for m in missing])
        ys.append(e - ef - sum(x * known[el] for el, x in frac.items() if el in known))
    if not rows:
        return {}
    a, y = np.asarray(rows), np.asarray(ys)
    determined = [j for j in range(len(missing)) if np.any(a[:, j] > 0)]
    sol, *_ = np.linalg.lstsq(a[:, determined], y, rcond=None)
    return {missing[j]: float(v) for j, v in zip(determined, sol)}


class LocalHull:
    """Hulls over reference entries (composition, energy per atom), one PhaseDiagram per system."""

    def __init__(self, comps: Sequence[Any], energies: Sequence[float], names: Sequence[str],
                 mu: dict[str, float] | None = None):
        from pymatgen.analysis.phase_diagram import PDEntry
        from pymatgen.core import Composition

        self.by_system: dict[frozenset[str], list] = {}
        for comp, e, name in zip(comps, energies, names):
            if math.isfinite(e):
                self.by_system.setdefault(chemical_system(comp), []).append(PDEntry(comp, e * comp.num_atoms, name=name))
        self.mu = dict(mu or {})
        for el, m in self.mu.items():
            self.by_system.setdefault(frozenset([el]), []).append(
                PDEntry(Composition(el), m, name=f"{el} (fitted chemical potential)"))
        self._diagrams: dict[frozenset[str], Any] = {}

    def diagram(self, system: frozenset[str]):
        from pymatgen.analysis.phase_diagram import PhaseDiagram

        if system not in self._diagrams:
            lacking = [el for el in sorted(system) if not self.by_system.get(frozenset([el]))]
            if lacking:
                self._diagrams[system] = f"no unary reference or fitted chemical potential for {', '.join(lacking)}"
            else:
                entries = [e for sub in _subsystems(system) for e in self.by_system.get(sub, ())]
                self._diagrams[system] = PhaseDiagram(entries)
        return self._diagrams[system]

    def coverage(self, comp: Any) -> tuple[int, bool]:
        """(number of compound references, >= 2 elements, in the sub-systems of ``comp``'s system;
        whether one of its elements has a fitted chemical potential). With no compound reference
        the hull is the elements alone and E_hull is a formation energy: 'stable' says little."""
        system = chemical_system(comp)
        n = sum(len(self.by_system.get(sub, ())) for sub in _subsystems(system) if len(sub) > 1)
        return n, any(el in self.mu for el in system)

    def e_above_hull(self, comp: Any, energy_per_atom: float) -> tuple[float, str | None]:
        """(E - E_hull at comp) in eV/atom, negative below the hull; (NaN, reason) when impossible."""
        from pymatgen.analysis.phase_diagram import PDEntry

        if not math.isfinite(energy_per_atom):
            return math.nan, "no energy"
        d = self.diagram(chemical_system(comp))
        if isinstance(d, str):
            return math.nan, d
        entry = PDEntry(comp, energy_per_atom * comp.num_atoms)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, e = d.get_decomp_and_e_above_hull(entry, allow_negative=True)
        return float(e), None


def _unary_energies(comps: Sequence[Any], e: Sequence[float]) -> dict[str, float]:
    known: dict[str, float] = {}
    for c, en in zip(comps, e):
        if len(c.elements) == 1 and math.isfinite(en):
            el = c.elements[0].symbol
            known[el] = min(known.get(el, math.inf), float(en))
    return known


def chgnet_reference_hull(train: pd.DataFrame, sample_comps: Sequence[Any], cache: ReferenceCache,
                          energy_column: str = "formation_energy_per_atom",
                          mu_fit_refs: int = 20) -> tuple[LocalHull, dict[str, Any]]:
    """The CHGNet hull of the training references in the samples' chemical systems.

    ``train``: material_id, formula, structure (Structures), and ``energy_column`` (DFT Ef, used
    only to fit chemical potentials of elements without a local unary phase). An element that the
    references inside the samples' systems cannot fit gets a second fit from up to ``mu_fit_refs``
    training compounds elsewhere that contain it (smallest cells first) whose other elements have a
    unary phase (those unaries are computed too); still none: E_hull NaN with the reason.
    """
    from pymatgen.core import Composition

    comps = [Composition(str(f)) for f in train["formula"]]
    systems = [chemical_system(c) for c in comps]
    sample_systems = [chemical_system(c) for c in sample_comps if c is not None]
    mask = needed_references(systems, sample_systems)
    refs = train.loc[mask].reset_index(drop=True)
    rcomps = [c for c, m in zip(comps, mask) if m]
    rows, cost = cache.energies(refs)
    e = rows["energy_per_atom"].astype(float).to_numpy()
    known = _unary_energies(rcomps, e)
    elements = set().union(*sample_systems) if sample_systems else set()
    missing = sorted(elements - set(known))
    ef_all = (pd.to_numeric(train[energy_column], errors="coerce").to_numpy(dtype=float) if energy_column in train
              else np.full(len(train), np.nan))
    ef = ef_all[mask]
    mu = fit_chemical_potentials(rcomps, e, ef, known, missing)
    extra_cost = {"n_references": 0, "n_computed": 0, "seconds": 0.0}
    still = [m for m in missing if m not in mu]
    if still and mu_fit_refs > 0:
        unary_els = {c.elements[0].symbol for c in comps if len(c.elements) == 1}
        nsites = np.array([len(s) for s in train["structure"]])
        pick: set[int] = set()
        for el in still:
            cand = [k for k, c in enumerate(comps) if el in systems[k] and len(systems[k]) > 1 and not mask[k]
                    and all(o in unary_els for o in systems[k] - {el}) and math.isfinite(ef_all[k])]
            cand.sort(key=lambda k: (nsites[k], str(train["material_id"].iloc[k])))
            pick.update(cand[:mu_fit_refs])
        others = {o for k in pick for o in systems[k]} - set(known)
        pick.update(k for k, c in enumerate(comps) if len(c.elements) == 1 and c.elements[0].symbol in others and not mask[k])
        if pick:
            idx = sorted(pick)
            xrows, extra_cost = cache.energies(train.iloc[idx].reset_index(drop=True))
            xe = xrows["energy_per_atom"].astype(float).to_numpy()
            xcomps = [comps[k] for k in idx]
            known2 = {**_unary_energies(xcomps, xe), **known}
            mu.update(fit_chemical_potentials(rcomps + xcomps, np.concatenate([e, xe]),
                                              np.concatenate([ef, ef_all[idx]]), known2, still))
    cost.update(n_sample_systems=len(set(sample_systems)), fitted_mu=mu,
                unfitted=[m for m in missing if m not in mu], relax_failures=int((~np.isfinite(e)).sum()),
                mu_fit_extra_references=extra_cost["n_references"], mu_fit_extra_computed=extra_cost["n_computed"],
                mu_fit_extra_seconds=extra_cost["seconds"])
    cost["seconds"] += extra_cost["seconds"]
    log.info("CHGNet reference hull: %d references in %d sample systems; fitted chemical potentials %s%s",
             len(refs), len(set(sample_systems)), {k: round(v, 3) for k, v in mu.items()} or "none",
             f"; none for {cost['unfitted']}" if cost["unfitted"] else "")
    return LocalHull(rcomps, e, refs["material_id"].astype(str).tolist(), mu), cost


def collection_hull(train: pd.DataFrame, energy_column: str = "formation_energy_per_atom") -> LocalHull:
    """Hull of the training entries' DFT formation energies + every element at 0 eV/atom."""
    from pymatgen.core import Composition

    comps = [Composition(str(f)) for f in train["formula"]]
    e = pd.to_numeric(train[energy_column], errors="coerce").to_numpy(dtype=float)
    elements = sorted({el.symbol for c in comps for el in c.elements})
    return LocalHull(comps, e, train["material_id"].astype(str).tolist(), {el: 0.0 for el in elements})


# --------------------------------------------------------------------------- own formation-energy model
def predict_formation_energy(structures: Sequence[Any], ids: Sequence[str], model: str = "mp20-formation-energy-cgcnn",
                             work_dir: str | Path | None = None) -> pd.Series:
    """Ef (eV/atom, mean over the model's seeds) of Structures with a shipped or trained model.

    Goes through the workflow's own stages (ingest checks, graphs, :func:`matfuse.predict.predict`);
    structures that fail them get NaN. Returns a Series indexed by id.
    """
    import json
    import tempfile

    from matfuse.cli import _model_config, ensemble_members
    from matfuse.config import DatasetConfig, GraphConfig, TableSource
    from matfuse.graphs.build import build_graphs
    from matfuse.ingest import canonicalise
    from matfuse.predict import predict
    from matfuse.structures import dump_structure

    keep = [(str(i), s) for i, s in zip(ids, structures) if s is not None]
    out = pd.Series(np.nan, index=[str(i) for i in ids], dtype=float)
    if not keep:
        return out
    raw = pd.DataFrame({"material_id": [i for i, _ in keep], "structure": [dump_structure(s) for _, s in keep],
                        "structure_format": "pymatgen", "provenance": json.dumps({"source": "generate"})})
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        work = Path(tmp)
        ds_cfg = DatasetConfig(source=TableSource(path="-", formula_column=None, nsites_column=None), max_sites=10_000)
        entries, rejects = canonicalise(raw, ds_cfg, "generate", workers=1)
        for r in rejects.itertuples():
            log.info("own model: %s not predicted (%s: %s)", r.material_id, r.stage, r.reason)
        entries_path = work / "entries.parquet"
        write_parquet(entries, entries_path)
        preds = []
        for member in ensemble_members(model):
            gcfg = GraphConfig.model_validate(_model_config(member)["graph"])
            graphs_path = work / f"graphs-{hashlib.sha256(repr(gcfg.model_dump()).encode()).hexdigest()[:8]}.parquet"
            if not graphs_path.exists():
                build_graphs(entries_path, graphs_path, gcfg, work / "graphs.rejects.parquet")
            p = predict(member, entries_path, None, graphs_path, None, work / f"pred{len(preds)}.parquet", device="cpu")
            preds.append(p.set_index("material_id")["y_pred"].astype(float))
    mean = pd.concat(preds, axis=1).mean(axis=1)
    out.loc[mean.index.astype(str)] = mean.to_numpy()
    return out


# --------------------------------------------------------------------------- unit costs
def bench(table: str | Path, n: int = 10, seed: int = 0, max_sites: int = 20) -> pd.DataFrame:
    """CHGNet relaxation time (one thread) of ``n`` random <= ``max_sites``-site structures of a
    table with a ``cif`` column (e.g. the MT-CGCNN MP table), and of pyxtal random structures of
    the same compositions (generated-like). Returns one row per relaxation."""
    from pymatgen.core import Structure

    from matfuse.generate.baselines import pyxtal_samples
    from matfuse.structures import load_structure

    df = pd.read_csv(table) if str(table).endswith((".csv", ".csv.gz")) else pd.read_parquet(table)
    df = df[df["nsites"] <= max_sites].sample(n=n, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = [Structure.from_str(c, fmt="cif") for c in df["cif"]]
    fake = pyxtal_samples([s.composition for s in real], seed=seed)
    settings = RelaxSettings()
    load_chgnet()
    rows = []
    for kind, structs, ids in (("mp", real, df["material_id"].tolist()),
                               ("pyxtal", [load_structure(x) if x else None for x in fake["structure"]], fake["sample_id"].tolist())):
        for mid, s in zip(ids, structs):
            if s is None:
                continue
            r = relax_one(s, settings)
            rows.append({"kind": kind, "id": mid, "nsites": len(s), "seconds": r["relax_time_s"], "steps": r["n_steps"],
                         "converged": r["converged"], "reason": r["relax_reason"]})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="CHGNet relaxation unit costs (one thread)")
    p.add_argument("table", help="CSV/Parquet with material_id, nsites, cif (e.g. ../shared/data/mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz)")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    out = bench(a.table, a.n, a.seed)
    print(out.to_string(index=False))
    print(out.groupby("kind")["seconds"].describe().to_string())
    print(chgnet_info())
