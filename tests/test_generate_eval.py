"""Generation metrics on real MP structures: SMACT14 validity, distance validity, StructureMatcher
uniqueness/novelty, bootstrap rates, CHGNet E_hull of reference phases, fitted chemical potentials,
pyxtal baselines, and one small end-to-end ``evaluate_method`` / ``calibrate`` run."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.core.operations import SymmOp

from matfuse.generate import evaluate as ev
from matfuse.generate import stability as st
from matfuse.generate.baselines import pyxtal_samples, random_symmetric

ROOT = Path(__file__).resolve().parents[1]
MTCGCNN = ROOT.parent / "shared" / "data" / "mp_mtcgcnn" / "mp_mtcgcnn_33064.csv.gz"
OPRYAN = ROOT.parent / "shared" / "data" / "mp20_subset_opryan90" / "test.csv"
if not MTCGCNN.exists():  # worktrees beside /work/main
    MTCGCNN = Path("/work/shared/data/mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz")
    OPRYAN = Path("/work/shared/data/mp20_subset_opryan90/test.csv")


@pytest.fixture(scope="module")
def mp() -> pd.DataFrame:
    """The <= 20-site MP entries (real data), with their chemical system."""
    df = pd.read_csv(MTCGCNN)
    df = df[df["nsites"] <= 20].reset_index(drop=True)
    df["system"] = ["-".join(sorted(e.symbol for e in Composition(f).elements)) for f in df["formula"]]
    return df


def _structure(df: pd.DataFrame, mid: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(df.loc[df["material_id"] == mid, "cif"].iloc[0], fmt="cif")


def _in_system(df: pd.DataFrame, elements: set[str]) -> pd.DataFrame:
    return df[[set(s.split("-")) <= elements for s in df["system"]]].reset_index(drop=True)


# --------------------------------------------------------------------------- validity
def test_smact14_validity_on_real_formulas(mp):
    assert ev.composition_validity("NaCl")
    assert not ev.composition_validity("NaCl2")
    assert ev.composition_validity("CaF2") and not ev.composition_validity("KF2")
    # CDVAE's alloy rule: an all-metal composition is valid although no charge balance exists
    assert ev.composition_validity("Cu3Au")
    assert not ev.composition_validity("Cu3Au", include_alloys=False)
    # smact has no SMACT14 oxidation states for He (it returns None): guarded, the compound is invalid
    assert ev.smact14_states("He") == []
    assert not ev.composition_validity("NaHe")
    assert ev.composition_validity("He")  # one element: valid by definition
    # the SMACT14 list is not smact 4's default list (Fe: -2 and -1 only in SMACT14)
    assert -2 in ev.smact14_states("Fe")
    # same answers as smact's own screening with the SMACT14 set on 400 real MP formulas
    from smact.screening import smact_validity

    formulas = mp["formula"].iloc[:400]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = [bool(smact_validity(f, oxidation_states_set="smact14")) for f in formulas]
    ours = [ev.composition_validity(f) for f in formulas]
    assert ours == theirs
    assert 0.5 < np.mean(ours) < 1.0  # real MP compounds: mostly valid, not all


def test_structure_validity_distances_and_volume(mp):
    s = _structure(mp, mp["material_id"].iloc[0])
    assert ev.structure_validity(s)
    s2 = _structure(mp, mp.loc[mp["nsites"] >= 4, "material_id"].iloc[0])
    assert ev.structure_validity(s2)
    squeezed = s2.copy()
    # move site 1 to 0.3 Å from site 0
    v = squeezed.lattice.get_cartesian_coords(squeezed[1].frac_coords - squeezed[0].frac_coords)
    squeezed.replace(1, squeezed[1].species, coords=squeezed[0].coords + 0.3 * np.array([1.0, 0, 0]),
                     coords_are_cartesian=True)
    assert np.linalg.norm(v) > 0.5
    assert not ev.structure_validity(squeezed)
    assert ev.structure_validity(squeezed, min_distance=0.25)
    tiny = Structure(Lattice.cubic(0.4), ["Na"], [[0, 0, 0]])
    assert not ev.structure_validity(tiny)  # one site 0.4 Å from its image, volume 0.064 Å^3


# --------------------------------------------------------------------------- matching
def test_uniqueness_and_novelty_with_structure_matcher(mp):
    cfg = ev.EvalConfig()
    assert (cfg.ltol, cfg.stol, cfg.angle_tol) == (0.2, 0.3, 5.0)  # pymatgen's defaults
    sm = ev.matcher(cfg)
    ids = mp.loc[mp["nsites"].between(2, 6), "material_id"].iloc[:3].tolist()
    a, b, c = (_structure(mp, i) for i in ids)
    supercell = a.copy()
    supercell.make_supercell([2, 1, 1])
    rotated = a.copy()
    rotated.apply_operation(SymmOp.from_axis_angle_and_translation([0, 0, 1], 37.0))
    perturbed = a.copy()
    perturbed.perturb(0.05, min_distance=0.01)
    structs = [a, b, supercell, None, rotated, c, perturbed]
    assert ev.unique_mask(structs, sm).tolist() == [True, True, False, False, False, True, False]
    train = {a.composition.reduced_formula: [a], b.composition.reduced_formula: [b]}
    assert ev.novel_mask([rotated, supercell, c, None], train, sm).tolist() == [False, False, True, False]


def test_bootstrap_intervals_contain_the_rate():
    rng = np.random.default_rng(3)
    for p, n in ((0.05, 40), (0.3, 200), (0.0, 30), (1.0, 25)):
        x = rng.random(n) < p
        r = ev.bootstrap_rate(x, n_bootstrap=500, seed=1)
        assert r["count"] == int(x.sum()) and r["n"] == n
        assert r["lo"] <= r["rate"] <= r["hi"]
        assert r["rate"] == pytest.approx(x.mean())
    wide = ev.bootstrap_rate(rng.random(20) < 0.5, n_bootstrap=500)
    narrow = ev.bootstrap_rate(rng.random(2000) < 0.5, n_bootstrap=500)
    assert narrow["hi"] - narrow["lo"] < wide["hi"] - wide["lo"]


# --------------------------------------------------------------------------- pyxtal
def test_pyxtal_structures_have_the_requested_composition(mp):
    comps = [_structure(mp, i).composition for i in mp["material_id"].iloc[:4]] + [Composition("Na4Cl4")]
    df = pyxtal_samples(comps, seed=7)
    assert len(df) == len(comps)
    for comp, row in zip(comps, df.itertuples()):
        if row.structure is None:
            assert row.reason
            continue
        s = Structure.from_dict(json.loads(row.structure))
        assert s.composition == comp
        assert 1 <= row.space_group <= 230
    assert df["structure"].notna().sum() >= 4
    again = pyxtal_samples(comps, seed=7)
    assert again["structure"].tolist() == df["structure"].tolist()  # seeded
    s, sg, why = random_symmetric(Composition({"Na": 1.5, "Cl": 1.5}), np.random.default_rng(0))
    assert s is None and "integers" in why


# --------------------------------------------------------------------------- CHGNet stability
def test_chgnet_checkpoint_hash_and_isolated_atoms(mp):
    info = st.chgnet_info()
    assert info["model"] == "0.3.0" and len(info["checkpoint_sha256"]) == 64
    real = st.relax_one(_structure(mp, "mp-127"), st.RelaxSettings(steps=0))  # bcc Na, static energy
    assert not real["isolated_atoms"] and math.isfinite(real["energy_per_atom"]) and real["n_steps"] == 0
    lone = st.relax_one(Structure(Lattice.cubic(7.0), ["Na"], [[0, 0, 0]]), st.RelaxSettings(steps=0))
    assert lone["isolated_atoms"]  # no neighbour within CHGNet's 6 Å cut-off: flagged, not hidden
    assert st.relax_one(None, st.RelaxSettings())["relax_reason"] == "no structure"
    dense = st.relax_one(Structure(Lattice.cubic(1.0), ["Na"] * 4, np.random.default_rng(0).random((4, 3))), st.RelaxSettings())
    assert "not relaxed" in dense["relax_reason"] and math.isnan(dense["energy_per_atom"])  # refused, not crashed


def test_reference_phase_is_on_its_own_chgnet_hull(mp, tmp_path):
    refs = _in_system(mp, {"Ca", "O"})  # 3 Ca, 2 CaO, 1 O2 entries <= 20 sites
    assert 4 <= len(refs) <= 10
    train = pd.DataFrame({"material_id": refs["material_id"], "formula": refs["formula"],
                          "structure": [_structure(mp, m) for m in refs["material_id"]],
                          "formation_energy_per_atom": refs["formation_energy_per_atom"]})
    settings = st.RelaxSettings(steps=200)
    cache = st.ReferenceCache(tmp_path, settings)
    hull, cost = st.chgnet_reference_hull(train, [Composition("CaO")], cache)
    assert cost["n_computed"] == len(refs) and cost["fitted_mu"] == {}
    assert hull.coverage(Composition("CaO")) == (int(sum(refs["system"] == "Ca-O")), False)
    # the most stable CaO relaxed again by the same pipeline: on the hull
    energies = cache.read().set_index("material_id")["energy_per_atom"]
    cao = [m for m, f in zip(refs["material_id"], refs["formula"]) if Composition(f).reduced_formula == "CaO"]
    best = min(cao, key=lambda m: energies[m])
    r = st.relax_one(_structure(mp, best), settings)
    e, why = hull.e_above_hull(Composition("CaO"), r["energy_per_atom"])
    assert why is None and abs(e) < 2e-3
    # a CHGNet energy 0.05 eV/atom higher sits 0.05 above; the cache is reused the second time
    assert hull.e_above_hull(Composition("CaO"), r["energy_per_atom"] + 0.05)[0] == pytest.approx(e + 0.05, abs=1e-6)
    _, cost2 = st.chgnet_reference_hull(train, [Composition("CaO")], cache)
    assert cost2["n_computed"] == 0 and cost2["n_cached"] == len(refs)


def test_fitted_chemical_potential_matches_the_unary_it_replaces(mp, tmp_path):
    refs = _in_system(mp, {"Al", "Ni"})  # Al, 3 Al-Ni compounds, Ni
    structs = [_structure(mp, m) for m in refs["material_id"]]
    cache = st.ReferenceCache(tmp_path, st.RelaxSettings(steps=200))
    rows, _ = cache.energies(pd.DataFrame({"material_id": refs["material_id"], "formula": refs["formula"],
                                           "structure": structs}))
    comps = [Composition(f) for f in refs["formula"]]
    e = rows["energy_per_atom"].to_numpy(float)
    unary = {el: min(x for c, x in zip(comps, e) if c.reduced_formula == el) for el in ("Al", "Ni")}
    binaries = [k for k, c in enumerate(comps) if len(c.elements) == 2]
    assert len(binaries) >= 2
    mu = st.fit_chemical_potentials([comps[k] for k in binaries], e[binaries],
                                    refs["formation_energy_per_atom"].to_numpy(float)[binaries],
                                    {"Al": unary["Al"]}, ["Ni"])
    assert set(mu) == {"Ni"}
    assert mu["Ni"] == pytest.approx(unary["Ni"], abs=0.15)


def test_element_without_any_local_phase_gets_a_chemical_potential_from_elsewhere(mp, tmp_path):
    # KBr as the sample; training: K, Li, Cs unaries, LiBr and CsBr compounds - no Br unary and no K-Br phase
    ids = ["mp-972981", "mp-23259", "mp-976280", "mp-22906", "mp-571222", "mp-1"]
    ids += mp.loc[mp["formula"] == "Li", "material_id"].tolist()
    rows = mp[mp["material_id"].isin(ids)]
    train = pd.DataFrame({"material_id": rows["material_id"], "formula": rows["formula"],
                          "structure": [_structure(mp, m) for m in rows["material_id"]],
                          "formation_energy_per_atom": rows["formation_energy_per_atom"]}).reset_index(drop=True)
    cache = st.ReferenceCache(tmp_path, st.RelaxSettings(steps=200))
    hull, cost = st.chgnet_reference_hull(train, [Composition("KBr")], cache)
    assert set(cost["fitted_mu"]) == {"Br"} and cost["unfitted"] == []
    assert cost["mu_fit_extra_references"] >= 4  # LiBr, CsBr + the Li and Cs unaries
    kbr = mp[mp["material_id"] == "mp-23251"]
    r = st.relax_one(_structure(mp, "mp-23251"), st.RelaxSettings(steps=200))
    e, why = hull.e_above_hull(Composition("KBr"), r["energy_per_atom"])
    # the only K-Br compound: its E_hull is its formation energy on this scale, close to DFT's
    assert why is None
    assert e == pytest.approx(float(kbr["formation_energy_per_atom"].iloc[0]), abs=0.25)
    assert hull.coverage(Composition("KBr")) == (0, True)  # elements-only hull, fitted Br: flagged


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_evaluate_method_and_calibration_on_real_structures(mp, tmp_path):
    pool = mp.sample(n=400, random_state=1).reset_index(drop=True)
    cal = pd.read_csv(OPRYAN).head(4)
    systems = {frozenset(Composition(f).elements) for f in cal["pretty_formula"]}
    # training references: the pool + every entry in the calibration rows' systems (hull complete enough)
    extra = mp[[any(frozenset(Composition(f).elements) <= s for s in systems) for f in mp["formula"]]]
    extra = extra[~extra["material_id"].isin(cal["material_id"])]
    # two compounds of those systems held out of training: their references are in the training table
    held = extra[extra["system"].str.contains("-")].iloc[:2]
    train = pd.concat([pool.iloc[:360], extra]).drop_duplicates("material_id")
    train = train[~train["material_id"].isin(set(cal["material_id"]) | set(held["material_id"]))]
    test = pool.iloc[360:]
    train.rename(columns={"cif": "structure"}).to_parquet(tmp_path / "train.parquet")
    test.rename(columns={"cif": "structure"}).to_parquet(tmp_path / "test.parquet")
    # samples: two real training structures (not novel), two held-out compounds, one parse failure
    in_train = extra[~extra["material_id"].isin(held["material_id"])].iloc[:2]
    samp = ev.samples_from_entries(pd.concat([in_train, held]).rename(columns={"cif": "structure"}), prefix="s")
    samp = pd.concat([samp, pd.DataFrame([{"sample_id": "broken", "structure": None, "reason": "parse: no lattice line"}])],
                     ignore_index=True)
    samp.to_parquet(tmp_path / "samples.parquet")
    cfg = ev.EvalConfig(cache_dir=str(tmp_path / "cache"), relax_steps=60, coverage_max_reference=20,
                        comp_scaler_max=100, n_bootstrap=100)
    out = tmp_path / "out"
    summary = ev.evaluate_method(tmp_path / "samples.parquet", "real", tmp_path / "train.parquet",
                                 tmp_path / "test.parquet", cfg, out)
    df = pd.read_parquet(out / "samples.parquet")
    assert len(df) == 5 and summary["n_drawn"] == 5 and summary["n_parsed"] == 4
    assert summary["rates"]["parsed"]["count"] == 4 and summary["rates"]["parsed"]["n"] == 5
    assert summary["parse_failures"] == {"parse": 1}
    assert df.loc[df["sample_id"] == "broken", "reason"].iloc[0] == "parse: no lattice line"
    assert df["novel"].tolist()[:2] == [False, False]  # training structures are not novel
    assert df["e_hull_chgnet"].iloc[:4].notna().all() and df["e_hull_model"].iloc[:4].notna().all()
    assert (df["hull_compounds"].iloc[2:4] >= 1).all()  # the held-out compounds' systems have compound references
    assert summary["hull_coverage"]["no_compound_reference"] == 0
    # training structures relaxed by the same pipeline sit on (or within numerical noise of) the hull
    assert (df["e_hull_chgnet"].iloc[:2] > -0.02).all()
    assert 0 <= summary["coverage"]["cov_recall"] <= 1 and summary["coverage"]["n_reference"] > 0
    assert json.loads((out / "summary.json").read_text())["chgnet"]["model"] == "0.3.0"
    cal.to_csv(tmp_path / "cal.csv", index=False)
    c = ev.calibrate(tmp_path / "cal.csv", tmp_path / "train.parquet", cfg, tmp_path / "cal")
    assert c["n_drawn"] == 4 and c["n_in_references"] == 0
    assert c["all"]["e_hull_chgnet"]["n"] >= 3 and "median_diff" in c["all"]["e_hull_chgnet"]
    table = ev.summary_table([summary], calibration=c, out_path=tmp_path / "table.md")
    assert "FlowLLM (published" in table and "not comparable" in table.lower() and "calibration" in table
    ev.plot_ehull_histograms({"real": out / "samples.parquet", "cal": tmp_path / "cal" / "samples.parquet"},
                             tmp_path / "hist.png")
    assert (tmp_path / "hist.png").stat().st_size > 1000
