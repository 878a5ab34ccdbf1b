"""ALIGNN and CrysMMNet-on-ALIGNN on real MP structures: line-graph angles, invariances, training."""

from __future__ import annotations

import gzip
import json
import math
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError
from pymatgen.core import Lattice, Structure
from torch_geometric.data import Batch

from matfuse.config import GraphConfig, TrainingConfig
from matfuse.data import build_data
from matfuse.graphs import build_graphs, neighbor_graph
from matfuse.io import write_parquet
from matfuse.kit import load_checkpoint
from matfuse.models import build_model, model_from_config, model_kwargs
from matfuse.models.alignn import ALIGNN, EdgeGatedGraphConv, bond_cosines, line_graph
from matfuse.models.crysmmnet import CrysMMNetConfig
from matfuse.predict import predict
from matfuse.train import train_model
from test_train import _minilm_embed, _write_split

TARGET = "formation_energy_per_atom"
#: A smaller ALIGNN for the invariance tests (the property holds for any width); the training
#: tests use the published widths through the one training path.
SMALL = {"hidden_features": 32, "embedding_features": 16, "alignn_layers": 2, "gcn_layers": 2}


def _structures(mp_rows, n, max_sites=20):
    rows = mp_rows[mp_rows["nsites"] <= max_sites].head(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Structure.from_str(c, fmt="cif") for c in rows["cif"]]


def _batch(structures, with_vec=True):
    ids = [f"s{i}" for i in range(len(structures))]
    graphs = {i: neighbor_graph(s, GraphConfig()) for i, s in zip(ids, structures)}
    if not with_vec:
        graphs = {i: {k: v for k, v in g.items() if k != "edge_vec"} for i, g in graphs.items()}
    data, missing = build_data(ids, np.zeros(len(ids)), {"graph"}, graphs)
    assert not missing
    return Batch.from_data_list(data)


# --------------------------------------------------------------------------- line graph
def _reference_cosines(s: Structure, i: int, k: int) -> np.ndarray | None:
    """All k² cosines between the bonds of site i to its k nearest neighbours (None at a distance tie)."""
    nbrs = sorted((n for n in s.get_neighbors(s[i], 8.0) if n.nn_distance > 1e-8), key=lambda n: n.nn_distance)
    if len(nbrs) > k and nbrs[k].nn_distance - nbrs[k - 1].nn_distance < 1e-3:
        return None  # which of the tied neighbours is the k-th is a convention: skip
    v = np.array([n.coords - s[i].coords for n in nbrs[:k]])
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    return np.clip(u @ u.T, -1, 1).ravel()


def test_line_graph_angles_equal_numpy_angles_on_real_structures(mp_rows):
    structures = _structures(mp_rows, 6)
    checked = 0
    for s in structures:
        g = neighbor_graph(s, GraphConfig())
        edge_index = torch.from_numpy(np.stack([g["edge_src"], g["edge_dst"]]).astype(np.int64))
        vec = torch.from_numpy(g["edge_vec"])
        # the edge order must not matter: shuffle the edges first
        perm = torch.from_numpy(np.random.default_rng(0).permutation(edge_index.shape[1]))
        edge_index, vec = edge_index[:, perm], vec[perm]
        lg = line_graph(edge_index, len(s))
        cos = bond_cosines(vec, lg).double().numpy()
        deg = np.bincount(g["edge_dst"], minlength=len(s))
        assert lg.shape == (2, int((deg**2).sum()))
        centre = edge_index[1]
        assert torch.equal(centre[lg[0]], centre[lg[1]])  # both bonds at the same atom
        # every ordered pair once, self-pairs (cosine 1) included
        pairs = set(map(tuple, lg.T.tolist()))
        assert len(pairs) == lg.shape[1] and all((e, e) in pairs for e in range(edge_index.shape[1]))
        for i in range(len(s)):
            ref = _reference_cosines(s, i, int(deg[i]))
            if ref is None:
                continue
            mine = cos[(centre[lg[1]] == i).numpy()]
            np.testing.assert_allclose(np.sort(mine), np.sort(ref), atol=2e-5)
            checked += 1
    assert checked >= 10


def test_line_graph_angle_is_pymatgens_angle(mp_rows):
    s = max(_structures(mp_rows, 10), key=len)
    g = neighbor_graph(s, GraphConfig())
    edge_index = torch.from_numpy(np.stack([g["edge_src"], g["edge_dst"]]).astype(np.int64))
    lg = line_graph(edge_index, len(s))
    cos = bond_cosines(torch.from_numpy(g["edge_vec"]), lg)
    # pick line-graph edges between bonds to two different atoms inside the cell image (0, 0, 0)
    frac = s.frac_coords
    checked = 0
    for t in range(0, lg.shape[1], 37):
        e1, e2 = int(lg[0, t]), int(lg[1, t])
        i, j, k = int(g["edge_dst"][e1]), int(g["edge_src"][e1]), int(g["edge_src"][e2])
        if len({i, j, k}) < 3:
            continue
        # the image of j / k that each bond points to, from its vector
        pj = s[i].coords + g["edge_vec"][e1]
        pk = s[i].coords + g["edge_vec"][e2]
        img_j = np.round(s.lattice.get_fractional_coords(pj) - frac[j])
        img_k = np.round(s.lattice.get_fractional_coords(pk) - frac[k])
        s2 = s.copy()
        s2.translate_sites([j], img_j, frac_coords=True, to_unit_cell=False)
        s2.translate_sites([k], img_k, frac_coords=True, to_unit_cell=False)
        angle = s2.get_angle(j, i, k)  # from Cartesian coordinates (no minimum image)
        assert float(cos[t]) == pytest.approx(math.cos(math.radians(angle)), abs=1e-5)  # acos is ill-conditioned at 180°
        checked += 1
    assert checked >= 5


# --------------------------------------------------------------------------- the convolution
def test_edge_gated_conv_matches_a_per_atom_loop(mp_rows):
    """Σ_j σ_ij ⊙ W_v h_j / (Σ_j σ_ij + 1e-6) over each atom's incoming edges, written as a loop."""
    batch = _batch(_structures(mp_rows, 3))
    torch.manual_seed(0)
    conv = EdgeGatedGraphConv(8, 8).eval()
    x = torch.randn(batch.num_nodes, 8)
    e = torch.randn(batch.edge_index.shape[1], 8)
    with torch.no_grad():
        x_new, e_new = conv(x, batch.edge_index, e)
        src, dst = batch.edge_index
        m = conv.src_gate(x)[src] + conv.dst_gate(x)[dst] + conv.edge_gate(e)
        rows = []
        for i in range(batch.num_nodes):
            mine = (dst == i).nonzero().squeeze(1)
            sig = torch.sigmoid(m[mine])
            agg = (sig * conv.dst_update(x[src[mine]])).sum(0) / (sig.sum(0) + 1e-6)
            rows.append(conv.src_update(x[i]) + agg)
        ref_x = x + torch.nn.functional.silu(conv.bn_nodes(torch.stack(rows)))
        ref_e = e + torch.nn.functional.silu(conv.bn_edges(m))
    torch.testing.assert_close(x_new, ref_x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e_new, ref_e, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- invariances
def _rotated(s: Structure, seed: int) -> Structure:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    rot = q * np.sign(np.diag(r))
    if np.linalg.det(rot) < 0:
        rot[:, 0] *= -1
    return Structure(Lattice(s.lattice.matrix @ rot.T), s.species, s.frac_coords)


@pytest.mark.parametrize("kwargs", [SMALL, {}], ids=["small", "published"])
def test_alignn_is_invariant_to_rotation_and_atom_order(mp_rows, kwargs):
    structures = _structures(mp_rows, 12)
    s = max(structures, key=len)
    other = structures[0]
    assert len(s) > 3
    torch.manual_seed(0)
    model = ALIGNN(**kwargs).eval()
    rot = _rotated(s, 1)
    perm = np.random.default_rng(2).permutation(len(s))
    shuffled = Structure.from_sites([s[int(i)] for i in perm])
    b0, b_rot = _batch([s, other]), _batch([rot, other])
    assert not torch.allclose(b0.edge_vec, b_rot.edge_vec, atol=1e-2)  # the vectors did rotate
    with torch.no_grad():
        a = model(b0)
        b = model(b_rot)
        c = model(_batch([shuffled, other]))
        d = model(_batch([other, s]))
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a, d.flip(0), rtol=1e-4, atol=1e-4)


def test_graphs_without_bond_vectors_are_a_clear_error_for_alignn_only(mp_rows):
    batch = _batch(_structures(mp_rows, 2), with_vec=False)
    assert "edge_vec" not in batch
    with pytest.raises(ValueError, match="edge_vec.*rebuild"):
        ALIGNN(**SMALL)(batch)
    cgcnn = build_model("cgcnn")  # CGCNN does not need them
    assert torch.isfinite(cgcnn.eval()(batch)).all()


def test_crysmmnet_graph_settings_follow_the_backbone():
    old = CrysMMNetConfig(text_dim=8, graph={"n_conv": 2})  # an existing crysmmnet config
    assert old.backbone == "cgcnn" and old.graph.n_conv == 2 and old.activation == "silu"
    assert CrysMMNetConfig(text_dim=8).graph.__class__.__name__ == "CGCNNConfig"
    al = CrysMMNetConfig(text_dim=8, backbone="alignn")
    assert al.graph.__class__.__name__ == "ALIGNNConfig" and al.graph.hidden_features == 256
    assert CrysMMNetConfig.model_validate(al.model_dump()) == al
    with pytest.raises(ValidationError, match="n_conv"):
        CrysMMNetConfig(text_dim=8, backbone="alignn", graph={"n_conv": 2})
    with pytest.raises(ValidationError):
        CrysMMNetConfig(text_dim=8, backbone="schnet")
    pub = build_model("crysmmnet_alignn", text_dim=8, graph=SMALL)
    assert pub.cfg.backbone == "alignn" and pub.cfg.activation == "relu"
    assert isinstance(pub.act, torch.nn.ReLU) and isinstance(pub.graph, ALIGNN)
    assert pub.graph_head.projection.in_features == 32
    again = model_from_config(pub.to_config())
    assert again.cfg == pub.cfg and again.name == "crysmmnet_alignn"
    kw = model_kwargs("crysmmnet_alignn", TrainingConfig().hyper, GraphConfig(), 8)
    assert kw["backbone"] == "alignn" and kw["activation"] == "relu" and kw["graph"]["hidden_features"] == 256


# --------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def small_set(shared_data, tmp_path_factory):
    """40 real structures (≤ 8 sites) with robocrys texts embedded by the packaged MiniLM."""
    root = tmp_path_factory.mktemp("alignn")
    rows, structures = [], []
    path = shared_data / "text_matmmfuse_robocrys" / "matmmfuse_sample_1000_cif_robocrys.jsonl.gz"
    with gzip.open(path, "rt") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for line in fh:
            r = json.loads(line)
            s = Structure.from_str(r["cif"], fmt="cif")
            if len(s) <= 8 and len(r["robocrys_text"]) < 4000:
                rows.append(r)
                structures.append(s)
            if len(rows) == 40:
                break
    ids = [f"mm-{r['id']}" for r in rows]
    write_parquet(pd.DataFrame({"material_id": ids, "structure": [json.dumps(s.as_dict()) for s in structures],
                                TARGET: [r[TARGET] for r in rows]}), root / "entries.parquet")
    _write_split(ids, root / "splits.json")
    _, rejects = build_graphs(root / "entries.parquet", root / "graphs.parquet", GraphConfig())
    write_parquet(rejects, root / "graph_rejects.parquet")
    emb, _ = _minilm_embed([r["robocrys_text"] for r in rows])
    table = pa.table({"material_id": ids,
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), emb.shape[1])})
    write_parquet(table, root / "emb.parquet")
    return root


@pytest.mark.parametrize("name", ["alignn", "crysmmnet_alignn"])
def test_alignn_models_train_with_their_recipe_and_round_trip(small_set, tmp_path, name):
    root = small_set
    training = TrainingConfig(epochs=4, patience=4, batch_size=8, device="cpu").for_model(name, TARGET)
    # the published recipe, from the registry
    assert (training.optimizer, training.lr, training.weight_decay, training.schedule, training.warmup) == (
        "adamw", 1e-3, 1e-5, "onecycle", 0.3)
    assert training.batch_size == 64
    training = training.model_copy(update={"batch_size": 8})  # a few steps per epoch on 28 structures
    emb = root / "emb.parquet" if name == "crysmmnet_alignn" else None
    out = tmp_path / "m"
    summary = train_model(root / "entries.parquet", root / "splits.json", root / "graphs.parquet", emb, out,
                          name, TARGET, 0, training, GraphConfig(), threads=1)
    hist = pd.read_csv(out / "history.csv")
    assert len(hist) == 4 and np.isfinite(hist[["train_loss", "val_mae"]].to_numpy()).all()
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["name"] == name and cfg["training"]["schedule"] == "onecycle"
    # checkpoint: primitives + tensors only; the reload reproduces the selected epoch's validation MAE
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert ckpt["model"]["name"] == name
    df = predict(out, root / "entries.parquet", root / "splits.json", root / "graphs.parquet", emb,
                 tmp_path / "p.parquet", device="cpu")
    rejected = set(pq.read_table(root / "graph_rejects.parquet").column("material_id").to_pylist())
    has_graph = ~df["material_id"].isin(rejected)
    assert df.loc[~has_graph, "y_pred"].isna().all()  # a graph reject (recorded) has no prediction
    assert has_graph.sum() >= 35 and np.isfinite(df.loc[has_graph, "y_pred"].to_numpy(float)).all()
    val = df[(df["split"] == "val") & has_graph]
    mae = float(np.mean(np.abs(val["y_pred"].to_numpy(float) - val["y_true"].to_numpy(float))))
    assert mae == pytest.approx(summary["best_val_mae"], rel=1e-5)
    model, _ = load_checkpoint(out / "model.pt")
    graph = model.graph if name == "crysmmnet_alignn" else model
    assert isinstance(graph, ALIGNN) and graph.cfg.hidden_features == 256
