"""CroMEL: composition featurisation, WGAN-GP pieces, alignment, CV folds, end-to-end stage."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from matfuse.cromel import (
    MODELS,
    CromelConfig,
    align_composition_encoder,
    embed_structures,
    load_exp_formation_enthalpy,
    make_folds,
    run_cromel,
    train_structure_model,
)
from matfuse.kit import load_checkpoint
from matfuse.models.composition import (
    CompositionEncoder,
    element_property_table,
    featurize_compositions,
)
from matfuse.models.cromel import empirical_wasserstein, gradient_penalty, sliced_wasserstein, structure_graph

KJ_PER_MOL_PER_EV = 96.485  # 1 eV/particle = 96.485 kJ/mol


def _structures(csv_path: Path, n: int) -> tuple[pd.DataFrame, list]:
    from pymatgen.core import Structure

    df = pd.read_csv(csv_path, nrows=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structs = [Structure.from_str(c, fmt="cif") for c in df["cif"]]
    return df, structs


@pytest.fixture(scope="module")
def exp_table() -> pd.DataFrame:
    table, rejects = load_exp_formation_enthalpy()
    assert rejects.empty, rejects
    return table


# --------------------------------------------------------------------------- data
def test_exp_enthalpies_are_per_atom(exp_table: pd.DataFrame) -> None:
    """eV/f.u. -> eV/atom: compare with NIST-JANAF standard enthalpies of formation."""
    assert len(exp_table) == 2135
    assert exp_table["formula"].is_unique
    by = exp_table.set_index("formula")["formation_enthalpy"]
    # JANAF: Al2O3 (corundum) -1675.7 kJ/mol (5 atoms); Ag2O -31.05 kJ/mol (3 atoms)
    assert by["Al2O3"] == pytest.approx(-1675.7 / KJ_PER_MOL_PER_EV / 5, abs=0.02)
    assert by["Ag2O"] == pytest.approx(-31.05 / KJ_PER_MOL_PER_EV / 3, abs=0.01)
    assert np.isfinite(exp_table["formation_enthalpy"]).all()


# --------------------------------------------------------------------------- composition
def test_featurisation_permutation_invariant_and_fraction_weighted(exp_table: pd.DataFrame, mp_rows) -> None:
    from pymatgen.core import Composition

    formulas = exp_table["formula"].tolist()[:40] + mp_rows["formula"].tolist()[:40]
    # same compositions written with elements in reverse order and all amounts doubled
    permuted = [
        "".join(f"{el}{2 * amt:g}" for el, amt in reversed(list(Composition(f).get_el_amt_dict().items())))
        for f in formulas
    ]
    assert permuted != formulas
    a, b = featurize_compositions(formulas), featurize_compositions(permuted)
    assert torch.equal(a.index, b.index)
    assert torch.allclose(a.fraction, b.fraction)
    enc = CompositionEncoder(element_dim=24, seed=3).eval()
    with torch.no_grad():
        assert torch.allclose(enc(a), enc(b), atol=1e-6)
        pooled = enc.pooled(a).numpy()
    table = enc.elements.weight.detach().numpy()
    d = table.shape[1]
    for i, f in enumerate(formulas):
        comp = Composition(f)
        vecs = np.array([table[el.Z] for el in comp.elements])
        fracs = np.array([comp.get_atomic_fraction(el) for el in comp.elements])
        np.testing.assert_allclose(pooled[i, :d], fracs @ vecs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pooled[i, d : 2 * d], vecs.min(0), rtol=1e-6)
        np.testing.assert_allclose(pooled[i, 2 * d :], vecs.max(0), rtol=1e-6)


def test_element_table_from_pymatgen() -> None:
    from pymatgen.core import Element

    table = element_property_table()
    assert table.shape[0] == 104 and np.isfinite(table).all() and not table[0].any()
    # electronegativity column (first) is monotone with pymatgen's X for some elements
    xs = {z: Element.from_Z(z).X for z in (3, 6, 8, 9)}
    order = sorted(xs, key=xs.get)
    assert list(np.argsort([table[z, 0] for z in order])) == [0, 1, 2, 3]


def test_bad_formula_is_named() -> None:
    with pytest.raises(ValueError, match="Xx2O"):
        featurize_compositions(["Fe2O3", "Xx2O"])


# --------------------------------------------------------------------------- critic
def test_gradient_penalty_matches_hand_computation() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(7, 5), torch.randn(7, 5)
    alpha = torch.rand(7, 1)
    # linear critic D(x) = w.x + b: grad = w everywhere -> GP = (|w| - 1)^2
    lin = torch.nn.Linear(5, 1)
    gp = gradient_penalty(lambda x: lin(x).squeeze(-1), real, fake, alpha)
    w = lin.weight.detach()[0]
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    gp.backward()
    expected = 2 * (w.norm() - 1) * w / w.norm()
    assert torch.allclose(lin.weight.grad[0], expected, atol=1e-6)
    # quadratic critic D(x) = 0.5 |x|^2: grad at x_hat is x_hat
    x_hat = alpha * real + (1 - alpha) * fake
    gp_q = gradient_penalty(lambda x: 0.5 * (x**2).sum(-1), real, fake, alpha)
    assert gp_q.item() == pytest.approx(((x_hat.norm(dim=1) - 1) ** 2).mean().item(), rel=1e-5)


def test_sliced_wasserstein_matches_scipy_in_1d() -> None:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 1)), rng.normal(0.5, 2.0, size=(65, 1))
    assert sliced_wasserstein(a, b, n_projections=3) == pytest.approx(wasserstein_distance(a[:, 0], b[:, 0]), rel=1e-9)
    assert sliced_wasserstein(a, a) == pytest.approx(0.0, abs=1e-12)


def test_empirical_wasserstein_matches_scipy_in_1d_and_translation() -> None:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 1)), rng.exponential(size=(50, 1))
    assert empirical_wasserstein(a, b) == pytest.approx(wasserstein_distance(a[:, 0], b[:, 0]), rel=1e-9)
    x = rng.normal(size=(60, 8))
    shift = np.zeros(8)
    shift[3] = 0.7
    # a pure translation moves every point by |shift|, and no matching does better
    assert empirical_wasserstein(x, x + shift) == pytest.approx(0.7, rel=1e-9)


@pytest.mark.slow
def test_alignment_shrinks_distance_on_real_structures(mp_csv: Path) -> None:
    """Structure embeddings of real MP crystals; the critic pulls composition embeddings onto them."""
    torch.set_num_threads(1)
    df, structs = _structures(mp_csv, 300)
    graphs = [structure_graph(s) for s in structs]
    cfg = CromelConfig(struct_epochs=3, align_steps=400, pred_weight=0.0, batch_size=64)
    model, *_ = train_structure_model(graphs, df["formation_energy_per_atom"].to_numpy(), cfg, 0, torch.device("cpu"))
    emb = embed_structures(model, graphs, torch.device("cpu"))
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(graphs)), atol=1e-5)
    enc = CompositionEncoder(latent_dim=cfg.latent_dim, seed=0)
    comps = featurize_compositions([s.composition.formula for s in structs])
    _, hist = align_composition_encoder(enc, comps, emb, cfg, 0, torch.device("cpu"))
    w_exact = [h["w_exact"] for h in hist]  # critic-free: optimal-matching W1 on all 300 pairs
    assert w_exact[-1] < 0.5 * w_exact[0], w_exact
    w = [h["w_estimate"] for h in hist[1:]]
    assert max(w) > 0 and np.mean(w[-3:]) < 0.5 * max(w), w  # critic finds a gap, then the encoder closes it


# --------------------------------------------------------------------------- folds + stage
def test_folds_disjoint_and_covering() -> None:
    folds = make_folds(2135, 5, seed=7)
    allidx = np.concatenate(folds)
    assert len(allidx) == 2135 and len(np.unique(allidx)) == 2135
    assert {len(f) for f in folds} <= {427, 428}
    assert all(np.array_equal(f, g) for f, g in zip(folds, make_folds(2135, 5, seed=7)))
    assert not all(np.array_equal(f, g) for f, g in zip(folds, make_folds(2135, 5, seed=8)))


def test_end_to_end_tiny(tmp_path: Path, mp_rows, exp_table: pd.DataFrame) -> None:
    from pymatgen.core import Structure

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structs = [Structure.from_str(c, fmt="cif") for c in mp_rows["cif"]]
    entries = pd.DataFrame(
        {
            "material_id": mp_rows["material_id"].astype(str),
            "formula": [s.composition.reduced_formula for s in structs],
            "structure": [s.to_json() for s in structs],
            "formation_energy_per_atom": mp_rows["formation_energy_per_atom"],
        }
    )
    entries.loc[3, "formation_energy_per_atom"] = np.nan  # must be rejected with a reason
    entries.to_parquet(tmp_path / "entries.parquet")
    ids = entries["material_id"].tolist()
    splits = {"train": ids[:48], "val": ids[48:54], "test": ids[54:]}
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    cfg = CromelConfig(
        n_source=None, struct_epochs=2, align_steps=20, finetune_epochs=3, n_folds=3, batch_size=16, num_threads=1
    )
    out = tmp_path / "out"
    metrics = run_cromel(tmp_path / "entries.parquet", tmp_path / "splits.json", out, cfg, seed=1)

    assert set(metrics["model"]) == set(MODELS)
    assert len(metrics) == 2 * cfg.n_folds
    assert np.isfinite(metrics[["mae", "rmse", "r2"]].to_numpy()).all()
    assert (metrics["dataset"] == "exp_formation_enthalpy").all() and (metrics["target"] == "formation_enthalpy").all()
    for _, grp in metrics.groupby("model"):
        assert grp["n"].sum() == len(exp_table)
    assert pd.read_csv(out / "metrics.csv").shape == metrics.shape

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["source_ids"]) <= set(splits["train"])  # never trains on val/test ids
    assert ids[3] not in summary["source_ids"]
    rejects = pd.read_parquet(out / "rejects.parquet")
    assert ids[3] in set(rejects["material_id"]) and "formation_energy_per_atom" in rejects.set_index("material_id").loc[ids[3], "reason"]

    folds = json.loads((out / "folds.json").read_text())
    tests = [set(folds["test"][str(k)]) for k in range(cfg.n_folds)]
    assert sum(map(len, tests)) == len(set().union(*tests)) == len(exp_table)
    for k in range(cfg.n_folds):
        assert not set(folds["inner_val"][str(k)]) & tests[k]

    # checkpoints reload (weights_only) and reproduce the stored test predictions
    preds = pd.read_parquet(out / "predictions.parquet")
    model, ckpt = load_checkpoint(out / "checkpoints" / "composition_cromel_fold0.pt")
    assert ckpt["model"]["name"] == "cromel_composition" and ckpt["metadata"]["fold"] == 0
    p0 = preds[(preds["model"] == "composition+cromel") & (preds["fold"] == 0)]
    with torch.no_grad():
        again = model(featurize_compositions(p0["formula"].tolist())).numpy()
    np.testing.assert_allclose(again, p0["y_pred"].to_numpy(), rtol=1e-5, atol=1e-5)
    assert load_checkpoint(out / "checkpoints" / "composition_cromel.pt")[0].latent_dim == cfg.latent_dim
    smodel, sck = load_checkpoint(out / "checkpoints" / "structure_model.pt")
    assert sck["model"]["name"] == "cromel_structure" and set(sck["normalizer"]) == {"mean", "std"}


# --------------------------------------------------------------------------- CroMEL's own target set and CV protocols
def test_efe_target_set_is_cromel_own_table(shared_data):
    from matfuse.cromel import load_efe

    table, rejects = load_efe(shared_data / "cromel_efe" / "efe_intermetallics_1196.csv")
    raw = pd.read_csv(shared_data / "cromel_efe" / "efe_intermetallics_1196.csv")
    assert len(table) + len(rejects) == len(raw) == 1196
    assert len(table) == raw["form_eng_exp"].notna().sum()
    assert table["formation_enthalpy"].min() == pytest.approx(-1.262, abs=1e-3)  # published.md: -1.262 .. -0.002
    assert table["formation_enthalpy"].max() == pytest.approx(-0.002, abs=1e-3)
    assert list(table["formula"][:2]) == ["HoPt", "PtTm"]  # file order (the authors' folds index it)


def test_authors_folds_are_exec_tl_folds():
    n = 1196
    np.random.seed(0)
    theirs = np.array_split(np.random.permutation(n), 5)
    ours = make_folds(n, 5, 0, protocol="authors")
    assert [sorted(t) for t in theirs] == [list(o) for o in ours]
    assert [list(o) for o in make_folds(n, 5, 0)] != [list(o) for o in ours]  # leakfree: default_rng


def test_authors_protocol_carries_one_encoder_across_folds_leakfree_does_not(shared_data, monkeypatch):
    """The released script fine-tunes one generator object fold after fold: fold k starts from the
    weights fold k-1 ended with (they saw fold k's test compounds). Leak-free starts every fold from
    the pretrained weights."""
    import matfuse.cromel as cromel

    table, _ = cromel.load_efe(shared_data / "cromel_efe" / "efe_intermetallics_1196.csv")
    table = table.head(60)
    cfg = CromelConfig(n_folds=3, finetune_epochs=1, element_dim=8, comp_hidden=8, latent_dim=4)
    pretrained = cromel.new_encoder(cfg, 0)
    start = pretrained.mlp[0].weight.detach().clone()
    seen: dict[str, list] = {"leakfree": [], "authors": []}
    protocol = {"now": ""}

    def fake_finetune(model, *args, **kwargs):
        seen[protocol["now"]].append((id(model.encoder), model.encoder.mlp[0].weight.detach().clone()))
        with torch.no_grad():
            model.encoder.mlp[0].weight.add_(1.0)  # "fine-tuning" moves the weights
        return model, {"best_epoch": 1.0, "val_mae": 0.0, "epochs_run": 1.0}

    monkeypatch.setattr(cromel, "finetune_composition_model", fake_finetune)
    for p in ("leakfree", "authors"):
        protocol["now"] = p
        metrics, _, folds = cromel.cross_validate(table, pretrained, cfg, 0, torch.device("cpu"), protocol=p,
                                                  dataset="efe_intermetallics")
        assert set(metrics["protocol"]) == {p} and set(metrics["model"]) == {"composition", "composition+cromel"}
    cro = {p: [w for k, (i, w) in enumerate(v) if k % 2 == 1] for p, v in seen.items()}  # every 2nd: the CroMEL model
    assert all(torch.equal(w, start) for w in cro["leakfree"])  # every fold from the pretrained weights
    assert [float((w - start).mean()) for w in cro["authors"]] == pytest.approx([0.0, 1.0, 2.0])  # carried over
    assert torch.equal(pretrained.mlp[0].weight, start)  # the pretrained encoder itself is never touched


def test_matscholar_element_embeddings_are_fixed_200d():
    from matfuse.models.composition import matscholar_table

    table = matscholar_table()
    assert table.shape[1] == 200 and not table[0].any() and table[26].any()  # Fe
    enc = CompositionEncoder(element_dim=200, element_init="matscholar", freeze_elements=True)
    assert torch.equal(enc.elements.weight[26], torch.from_numpy(table[26])) and not enc.elements.weight.requires_grad
    with pytest.raises(ValueError, match="200-wide"):
        CompositionEncoder(element_dim=32, element_init="matscholar")
