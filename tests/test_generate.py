"""FlowLLM's pieces on real MP structures: the flat torus, the flow-matching loss, crystal text and
its tokenizer, parse failures, the language model (sampling with the KV cache) and the flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher

from matfuse.generate import torus
from matfuse.generate.text import (
    CrystalTokenizer,
    ParseFailure,
    TextFormat,
    cell_formula,
    crystal_to_text,
    parse_crystal,
    reduce_cell,
)
from matfuse.structures import parse_structure

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def structures(mp_rows):
    """Real MP structures (<= 12 sites) of the first 60 rows."""
    out = [parse_structure(c) for c in mp_rows["cif"]]
    out = [s for s in out if len(s) <= 12]
    assert len(out) >= 30
    return out


# --------------------------------------------------------------------------- torus
def test_exp_log_round_trips_on_the_torus():
    rng = np.random.default_rng(0)
    x, y = rng.random((500, 3)), rng.random((500, 3))
    v = torus.log_map(x, y)
    assert np.all(v >= -0.5) and np.all(v < 0.5)
    np.testing.assert_allclose(torus.distance(torus.exp_map(x, v), y), 0, atol=1e-12)
    # log(x, exp(x, v)) == v for tangent vectors shorter than half a period
    w = rng.uniform(-0.49, 0.49, (500, 3))
    np.testing.assert_allclose(torus.log_map(x, torus.exp_map(x, w)), w, atol=1e-12)
    # torch and NumPy agree
    vt = torus.log_map(torch.as_tensor(x), torch.as_tensor(y)).numpy()
    np.testing.assert_allclose(vt, v, atol=1e-12)
    assert np.all((torus.exp_map(x, 3.7 * v) >= 0) & (torus.exp_map(x, 3.7 * v) < 1))


def test_wrapped_geodesic_takes_the_short_way_at_constant_speed():
    x0, x1 = np.array([[0.9, 0.2, 0.5]]), np.array([[0.1, 0.7, 0.5]])
    # 0.9 -> 0.1 crosses 0 (distance 0.2), not 0.5; 0.2 -> 0.7 is a tie at half a period
    mid = torus.geodesic(x0, x1, 0.5)
    assert mid[0, 0] == pytest.approx(0.0, abs=1e-12) or mid[0, 0] == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(1)
    a, b = rng.random((200, 3)), rng.random((200, 3))
    d = torus.distance(a, b)
    np.testing.assert_allclose(torus.geodesic(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(torus.distance(torus.geodesic(a, b, 1.0), b), 0, atol=1e-12)
    for t in (0.25, 0.6):
        xt = torus.geodesic(a, b, t)
        np.testing.assert_allclose(torus.distance(a, xt), t * d, atol=1e-12)
        np.testing.assert_allclose(torus.distance(xt, b), (1 - t) * d, atol=1e-12)
    np.testing.assert_allclose(torus.distance(a, b), torus.distance(b, a), atol=1e-12)
    assert np.all(d <= np.sqrt(3) / 2 + 1e-12)


# --------------------------------------------------------------------------- flow matching
def _pair_batch(structures, seed=0):
    from matfuse.generate.rfm import Crystal, SimpleBase

    data = [Crystal.from_structure(reduce_cell(s)) for s in structures[:6]]
    base = SimpleBase.fit(data)
    rng = np.random.default_rng(seed)
    return [(base.sample(d.z, rng), d) for d in data]


def test_flow_matching_loss_is_zero_at_the_conditional_velocity_which_is_the_log_map(structures):
    from matfuse.generate.rfm import CrystalFlow, collate, conditional_path, flow_matching_loss

    pairs = _pair_batch(structures)
    model = CrystalFlow(hidden=16, n_layers=1)
    fb = collate(pairs, model, torch.device("cpu"))
    t = torch.tensor([0.0, 0.2, 0.5, 0.7, 0.9, 1.0])
    # uncentred: the target velocity is exactly the log map, and x_1 is the data
    xt, yt, u, uy = conditional_path(fb.x0, fb.x1, fb.y0, fb.y1, t, fb.batch, center=False)
    torch.testing.assert_close(u, torus.log_map(fb.x0, fb.x1))
    last = fb.batch == 5
    torch.testing.assert_close(torus.distance(xt[last], fb.x1[last]), torch.zeros(int(last.sum())), atol=1e-5, rtol=0)
    torch.testing.assert_close(yt[5], fb.y1[5])
    # centred (the default): the log map minus its mean per crystal; the end point is the data translated
    xt, yt, u, uy = conditional_path(fb.x0, fb.x1, fb.y0, fb.y1, t, fb.batch)
    for g in range(len(pairs)):
        m = fb.batch == g
        shift = torus.log_map(torus.exp_map(fb.x0[m], u[m]), fb.x1[m])
        torch.testing.assert_close(shift - shift[0], torch.zeros_like(shift), atol=1e-5, rtol=0)
        torch.testing.assert_close(u[m].mean(0), torch.zeros(3), atol=1e-6, rtol=0)
    assert float(flow_matching_loss(u, uy, u, uy, fb.batch)) == pytest.approx(0.0, abs=1e-12)
    wrong = flow_matching_loss(u + 0.1, uy, u, uy, fb.batch)
    assert float(wrong) == pytest.approx(3 * 0.01, rel=1e-5)  # 0.1 in each of 3 coordinates
    assert float(flow_matching_loss(u, uy + 1.0, u, uy, fb.batch, lattice_weight=0.5)) == pytest.approx(3.0)


def test_network_is_translation_invariant_and_permutation_equivariant(structures):
    from matfuse.generate.rfm import CrystalFlow, collate

    pairs = _pair_batch(structures)
    model = CrystalFlow(hidden=16, n_layers=2).eval()
    fb = collate(pairs, model, torch.device("cpu"))
    t = torch.full((len(pairs),), 0.3)
    with torch.no_grad():
        v, vy = model(fb.z, fb.x1, fb.y1, t, fb.batch, fb.edge_index)
        v2, vy2 = model(fb.z, torus.wrap(fb.x1 + torch.tensor([0.37, 0.81, 0.05])), fb.y1, t, fb.batch, fb.edge_index)
    torch.testing.assert_close(v, v2, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(vy, vy2, atol=1e-4, rtol=1e-4)
    # coordinate velocities have no net translation
    for g in range(len(pairs)):
        torch.testing.assert_close(v[fb.batch == g].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    # permuting the atoms of the first crystal permutes its velocities
    n0 = int((fb.batch == 0).sum())
    perm = torch.cat([torch.randperm(n0, generator=torch.Generator().manual_seed(0)), torch.arange(n0, len(fb.z))])
    with torch.no_grad():
        v3, vy3 = model(fb.z[perm], fb.x1[perm], fb.y1, t, fb.batch, fb.edge_index)
    torch.testing.assert_close(v3, v[perm], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(vy3, vy, atol=1e-4, rtol=1e-4)


def test_lattice_parameters_round_trip(structures):
    from matfuse.generate.rfm import Crystal

    for s in structures[:10]:
        r = reduce_cell(s)
        back = Crystal.from_structure(r).to_structure()
        np.testing.assert_allclose(back.lattice.abc, r.lattice.abc, rtol=1e-9)
        np.testing.assert_allclose(back.lattice.angles, r.lattice.angles, atol=1e-6)
        assert all(59.999 <= a <= 120.001 for a in r.lattice.angles)  # Niggli range


def test_match_atoms_pairs_species_and_refuses_other_compositions(structures):
    from matfuse.generate.rfm import Crystal, match_atoms

    data = Crystal.from_structure(reduce_cell(next(s for s in structures if len(s.composition) >= 2 and len(s) >= 4)))
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(data.z))
    shifted = Crystal(data.z[perm], torus.wrap(data.frac[perm] + rng.random(3)), data.lat.copy())
    m = match_atoms(shifted, data)
    assert m is not None and (m.z == data.z).all()
    # the same crystal, permuted and translated, is matched back atom for atom
    np.testing.assert_allclose(torus.distance(m.frac, data.frac), 0, atol=1e-9)
    other = Crystal(np.roll(data.z, 1) + 1, data.frac, data.lat)
    assert match_atoms(other, data) is None


def test_rfm_trains_integrates_and_checkpoints(tmp_path, structures):
    from matfuse import kit
    from matfuse.generate.rfm import Crystal, RFMSettings, SimpleBase, integrate, train_rfm

    data = [Crystal.from_structure(reduce_cell(s)) for s in structures[:24]]
    model, summary = train_rfm(data, "simple", RFMSettings(hidden=16, n_layers=1, epochs=2, batch_size=8))
    assert summary["epochs_run"] == 2 and np.isfinite(summary["best_val_loss"])
    base = SimpleBase(**summary["simple_base"])
    rng = np.random.default_rng(0)
    starts = [base.sample(d.z, rng) for d in data[:5]]
    out = integrate(model, starts, steps=4)
    assert [list(o.z) for o in out] == [list(s.z) for s in starts]
    for o in out:
        s = o.to_structure()
        assert np.all((s.frac_coords >= 0) & (s.frac_coords < 1)) and s.volume > 0
    kit.save_checkpoint(tmp_path / "rfm.pt", model, metadata={"simple_base": summary["simple_base"]})
    again, ckpt = kit.load_checkpoint(tmp_path / "rfm.pt")
    assert ckpt["metadata"]["simple_base"] == summary["simple_base"]
    out2 = integrate(again, starts, steps=4)
    np.testing.assert_allclose(out2[0].frac, out[0].frac, atol=1e-6)


# --------------------------------------------------------------------------- text
def test_text_round_trips_real_structures(structures):
    tok = CrystalTokenizer()
    fmt = TextFormat(length_decimals=3, angle_decimals=2, coord_decimals=4)
    sm = StructureMatcher(ltol=0.05, stol=0.05, angle_tol=1, primitive_cell=False, scale=False)
    for s in structures[:25]:
        text = crystal_to_text(s, fmt)
        ids = tok.encode(text, cell_formula(s))
        assert all(0 <= i < tok.vocab_size for i in ids) and ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        back_text, formula, ended = tok.decode(ids)
        assert back_text == text and formula == cell_formula(s) and ended
        parsed = parse_crystal(back_text, fmt, formula=formula)
        assert not isinstance(parsed, ParseFailure), parsed
        assert parsed.composition == s.composition
        assert sm.fit(parsed, reduce_cell(s)), s.composition.reduced_formula


def test_default_text_is_compact_and_parses(structures):
    """The default decimals (1 / 0 / 2, as crystal-text-llm) give the same crystal within rounding."""
    sm = StructureMatcher()  # pymatgen's defaults: 0.01-Å-scale rounding is far inside them
    s = structures[0]
    text = crystal_to_text(s)
    lines = text.split("\n")
    assert len(lines) == 2 + len(s)
    assert all(len(p.split(".")[1]) == 1 for p in lines[0].split())
    assert all("." not in p for p in lines[1].split())
    assert all(len(p.split(".")[1]) == 2 for ln in lines[2:] for p in ln.split()[1:])
    assert sm.fit(parse_crystal(text), s)


def test_translation_augmentation_changes_the_text_not_the_crystal(structures):
    fmt = TextFormat(coord_decimals=4, length_decimals=3, angle_decimals=2)
    sm = StructureMatcher(ltol=0.05, stol=0.05, angle_tol=1, primitive_cell=False, scale=False)
    rng = np.random.default_rng(7)
    for s in structures[:10]:
        plain = parse_crystal(crystal_to_text(s, fmt), fmt)
        texts = {crystal_to_text(s, fmt, rng=rng, translate=True) for _ in range(3)}
        assert len(texts) == 3  # three origins, three texts
        for t in texts:
            moved = parse_crystal(t, fmt)
            assert sm.fit(moved, plain)
            # the same sites, shifted by one vector (up to the written precision)
            shift = torus.log_map(plain.frac_coords, moved.frac_coords)
            np.testing.assert_allclose(torus.log_map(shift[:1], shift), 0, atol=2e-4)


def test_parse_failures_name_their_reason():
    cases = {
        "truncated": ("5.0 5.0 5.0\n90 90 90\nNa 0.00 0.00 0.00", dict(ended=False)),
        "bad lattice line": ("5.0 5.0\n90 90 90\nNa 0.00 0.00 0.00", {}),
        "bad angle line": ("5.0 5.0 5.0\n90 9.0.0 90\nNa 0.00 0.00 0.00", {}),
        "invalid lattice": ("5.0 5.0 0.0\n90 90 90\nNa 0.00 0.00 0.00", {}),
        "bad site line": ("5.0 5.0 5.0\n90 90 90\nNa 0.00 0.00", {}),
        "unknown element": ("5.0 5.0 5.0\n90 90 90\n0.00 0.00 0.00 0.00", {}),
        "no sites": ("5.0 5.0 5.0\n90 90 90", {}),
        "too many sites": ("5.0 5.0 5.0\n90 90 90\n" + "\n".join(["Na 0.10 0.10 0.10"] * 21), {}),
        "formula mismatch": ("5.0 5.0 5.0\n90 90 90\nNa 0.00 0.00 0.00", dict(formula=[("Cl", 1), ("Na", 1)])),
    }
    for reason, (text, kw) in cases.items():
        res = parse_crystal(text, **kw)
        assert isinstance(res, ParseFailure) and res.reason == reason, (reason, res)
        assert str(res).startswith(reason)
    # impossible angle triple (no cell has these): a lattice failure, not a crash
    res = parse_crystal("5.0 5.0 5.0\n170 10 10\nNa 0.00 0.00 0.00")
    assert isinstance(res, ParseFailure) and res.reason == "invalid lattice"
    ok = parse_crystal("5.0 5.0 5.0\n90 90 90\nNa 0.00 0.00 0.00\nCl 0.50 0.50 0.50", formula=[("Cl", 1), ("Na", 1)])
    assert not isinstance(ok, ParseFailure) and ok.composition.reduced_formula == "NaCl"


# --------------------------------------------------------------------------- language model
@pytest.fixture(scope="module")
def tiny_lm(structures):
    from matfuse.generate.lm import LMSettings, train_lm

    small = [s for s in structures if len(s) <= 8]
    settings = LMSettings(n_embd=64, n_layer=2, n_head=2, epochs=60, batch_size=4, lr=5e-3, dropout=0.0,
                          augment=False, n_positions=256)
    model, summary = train_lm(small[:-4], small[-4:], settings, seed=0)
    return model, summary, small


def test_tiny_lm_learns_and_samples_parseable_crystals(tiny_lm):
    from matfuse.generate.lm import parse_rate, sample_crystals

    model, summary, small = tiny_lm
    hist = summary["history"]
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    assert summary["tokens_per_second"] > 0 and summary["n_parameters"] == model.n_parameters()
    samples = sample_crystals(model, n=48, temperature=0.5, top_p=0.9, batch_size=48, seed=0)
    assert len(samples) == 48
    rate = parse_rate(samples)
    assert 0 < rate <= 1, [s.error for s in samples[:10]]
    for s in samples:
        assert (s.structure is None) != (s.error is None)  # a structure or a reason, never neither
    parsed = [s.structure for s in samples if s.structure is not None]
    assert all(1 <= len(p) <= 20 for p in parsed)
    # formula-conditioned: a parsed sample has exactly the prompt's composition
    formulas = [cell_formula(s) for s in small[:24]]
    cond = sample_crystals(model, formulas=formulas, temperature=0.5, top_p=0.9, seed=1)
    for f, s in zip(formulas, cond):
        assert s.formula == f
        if s.structure is not None:
            assert cell_formula(s.structure) == f
        else:
            assert s.error


def test_constrained_decoding_writes_exactly_the_prompted_species(tiny_lm):
    from matfuse.generate.lm import sample_crystals

    model, _, small = tiny_lm
    formulas = [cell_formula(s) for s in small[:24]]
    cond = sample_crystals(model, formulas=formulas, temperature=0.5, top_p=0.9, seed=2, constrain=True)
    parsed = 0
    for f, s in zip(formulas, cond):
        if s.structure is not None:
            assert cell_formula(s.structure) == f
            parsed += 1
        else:
            assert not s.error.startswith("formula mismatch"), s.error  # the decoding cannot write other species
    assert parsed > 0


def test_kv_cache_sampling_equals_full_recomputation(tiny_lm):
    from matfuse.generate.lm import sample_ids

    model, _, small = tiny_lm
    tok = CrystalTokenizer()
    prompt = tok.prompt(cell_formula(small[0]))
    cached = sample_ids(model, [prompt], temperature=0.0, max_length=len(prompt) + 40)[0]
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(40):
            nxt = int(model(ids)[0, -1].argmax())
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
            if nxt == tok.eos_id:
                break
    assert cached[: ids.shape[1]] == ids[0].tolist()


def test_top_p_keeps_only_the_nucleus():
    from matfuse.generate.lm import _top_p_sample

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {int(_top_p_sample(logits, 1.0, 0.7, gen)) for _ in range(300)}
    assert draws == {0, 1}
    draws = {int(_top_p_sample(logits, 1.0, 1.0, gen)) for _ in range(2000)}
    assert draws == {0, 1, 2, 3}


def test_lm_checkpoint_loads_with_weights_only(tmp_path, tiny_lm):
    from matfuse import kit

    model, _, small = tiny_lm
    kit.save_checkpoint(tmp_path / "lm.pt", model)
    again, ckpt = kit.load_checkpoint(tmp_path / "lm.pt")
    assert ckpt["model"]["name"] == "flowllm_lm"
    ids = torch.tensor([CrystalTokenizer().encode(crystal_to_text(small[0]))])
    with torch.no_grad():
        torch.testing.assert_close(again(ids), model(ids))


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["config/generate.yaml", "config/generate_tiny.yaml"])
def test_generation_configs_validate(name):
    import json

    import jsonschema
    import yaml

    from conftest import REPO
    from matfuse.config import load_config

    raw = yaml.safe_load((REPO / name).read_text())
    cfg = load_config(raw)
    jsonschema.validate(raw, json.loads((REPO / "workflow/schemas/config.schema.json").read_text()))
    assert cfg.generation is not None and cfg.generation.dataset in cfg.datasets
    assert set(cfg.generation.methods) == {"lm", "flowllm", "rfm_simple", "pyxtal", "test"}


def test_generate_yaml_uses_the_study_split():
    import yaml

    from conftest import REPO

    study = yaml.safe_load((REPO / "config/study.yaml").read_text())
    gen = yaml.safe_load((REPO / "config/generate.yaml").read_text())
    assert gen["datasets"] == study["datasets"] and gen["split"] == study["split"]


def test_generation_config_refuses_unknown_keys_and_datasets():
    from pydantic import ValidationError

    from matfuse.config import GenerationConfig, load_config

    with pytest.raises(ValidationError, match="extra"):
        GenerationConfig(dataset="mp", lm={"n_embd": 64, "n_head": 2, "nope": 1})
    with pytest.raises(ValidationError, match="multiple of n_head"):
        GenerationConfig(dataset="mp", lm={"n_embd": 66, "n_head": 4})
    with pytest.raises(ValidationError, match="generation.dataset"):
        load_config({"datasets": {"mp": {"source": {"kind": "table", "path": "x.csv"}}},
                     "training": {"models": [], "targets": []}, "generation": {"dataset": "other"}})
