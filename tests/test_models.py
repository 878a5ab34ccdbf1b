"""Model shapes, gradients, invariances and the attention behaviour of the fusion models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from pymatgen.core import Structure
from torch_geometric.data import Batch

from matfuse.config import GraphConfig, ModelHyper, TextEncoderSettings
from matfuse.data import build_data
from matfuse.graphs import neighbor_graph
from matfuse.models import build_model, model_from_config, model_kwargs
from matfuse.registry import names
from matfuse.models.text_encoder import load_tokenizer
from matfuse.models.cgcnn import CGCNN

TEXT_DIM = 24
SMALL = ModelHyper(atom_fea_len=16, n_conv=2, h_fea_len=32, fusion_dim=32, fusion_heads=8, proj_dim=16)


def _structures(mp_rows, n):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Structure.from_str(c, fmt="cif") for c in mp_rows["cif"].head(n)]


ENCODER = TextEncoderSettings(model="packaged:minilm", max_length=32)


def _batch(structures, seed=0, text=None):
    cfg = GraphConfig()
    ids = [f"s{i}" for i in range(len(structures))]
    graphs = {i: neighbor_graph(s, cfg) for i, s in zip(ids, structures)}
    rng = np.random.default_rng(seed)
    # random vectors in the embedding schema: enough for shape / invariance tests
    emb = text if text is not None else {i: rng.normal(size=TEXT_DIM).astype(np.float32) for i in ids}
    tok = load_tokenizer(ENCODER.model)
    words = {i: f"{s.composition.reduced_formula} crystallizes in the {s.get_space_group_info()[0]} space group."
             for i, s in zip(ids, structures)}
    tokens = {i: np.array(tok(w, truncation=True, max_length=ENCODER.max_length)["input_ids"]) for i, w in words.items()}
    data, missing = build_data(ids, rng.normal(size=len(ids)), {"graph", "text", "tokens"}, graphs, emb, tokens)
    assert not missing
    return Batch.from_data_list(data)


def _model(name, seed=0):
    torch.manual_seed(seed)
    return build_model(name, **model_kwargs(name, SMALL, GraphConfig(), TEXT_DIM, ENCODER))


@pytest.fixture(scope="module")
def structures(mp_rows):
    return _structures(mp_rows, 12)


@pytest.mark.parametrize("name", names("crystal"))
def test_forward_backward_and_config_roundtrip(name, structures):
    batch = _batch(structures[:8])
    model = _model(name)
    model.train()
    out = model(batch)
    assert out.shape == (8,)
    loss = ((out - batch.y) ** 2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # rebuilding from to_config + state_dict gives the same function
    model.eval()
    clone = model_from_config(model.to_config())
    clone.load_state_dict(model.state_dict())
    clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(clone(batch), model(batch))
    assert model.to_config()["name"] == name


def test_cgcnn_is_invariant_to_atom_order(structures):
    model = _model("cgcnn").eval()
    s = max(structures, key=len)
    assert len(s) > 3
    perm = np.random.default_rng(1).permutation(len(s))
    shuffled = Structure.from_sites([s[int(i)] for i in perm])
    with torch.no_grad():
        a = model(_batch([s, structures[0]]))
        b = model(_batch([shuffled, structures[0]]))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # ...and to the order of graphs within a batch
    with torch.no_grad():
        c = model(_batch([structures[0], s]))
    torch.testing.assert_close(a, c.flip(0), rtol=1e-5, atol=1e-5)


def _dense_cgcnn_conv(conv, x, nbr_idx, nbr_fea):
    """The convolution of Xie & Grossman (2018) on dense (N, M) neighbour tensors."""
    n, m = nbr_idx.shape
    a = x.shape[1]
    total = torch.cat([x.unsqueeze(1).expand(n, m, a), x[nbr_idx], nbr_fea], dim=2)
    gated = conv.fc_full(total)
    gated = conv.bn1(gated.view(-1, 2 * a)).view(n, m, 2 * a)
    filt, core = gated.chunk(2, dim=2)
    summed = (torch.sigmoid(filt) * F.softplus(core)).sum(dim=1)
    return F.softplus(x + conv.bn2(summed))


def test_cgcnn_conv_matches_dense_reference(structures):
    model = _model("cgcnn")
    model.train()  # batch statistics path
    batch = _batch(structures[:6])
    m = GraphConfig().max_neighbors
    counts = torch.bincount(batch.edge_index[1], minlength=batch.num_nodes)
    assert (counts == m).all(), "reference needs exactly max_neighbors per atom"
    x = model.embedding(model.atom_table[batch.z])
    edge_attr = model.expand_distances(batch.edge_dist)
    conv = model.convs[0]
    ours = conv(x, batch.edge_index, edge_attr)
    nbr_idx = batch.edge_index[0].view(-1, m)
    nbr_fea = edge_attr.view(-1, m, edge_attr.shape[1])
    ref = _dense_cgcnn_conv(conv, x, nbr_idx, nbr_fea)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert edge_attr.shape[1] == 41


def test_published_attention_is_identically_one(structures):
    batch = _batch(structures[:8])
    model = _model("matmmfuse_frozen").eval()
    with torch.no_grad():
        w = model.attention_weights(batch)
    assert w.shape == (8, SMALL.fusion_heads, 1, 1)
    assert torch.equal(w, torch.ones_like(w))


def test_token_attention_spreads_over_atoms_and_masks_padding(structures):
    batch = _batch(structures[:8])
    model = _model("matmmfuse_tokens").eval()
    with torch.no_grad():
        w = model.attention_weights(batch)
    n_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs)
    assert w.shape == (8, SMALL.fusion_heads, 1, int(n_atoms.max()))
    torch.testing.assert_close(w.sum(-1), torch.ones(8, SMALL.fusion_heads, 1))
    for g in range(8):
        assert torch.all(w[g, :, :, n_atoms[g] :] == 0)  # padding keys get no weight
    multi = n_atoms > 1
    assert multi.any()
    assert (w[multi] < 1 - 1e-6).all()  # a real softmax over several atoms
    # text changes the attention pattern (query comes from text)
    other = _batch(structures[:8], seed=5)
    with torch.no_grad():
        w2 = model.attention_weights(other)
    assert not torch.allclose(w, w2)


def test_text_mlp_ignores_graph_and_crysmmnet_uses_both(structures):
    batch = _batch(structures[:4])
    text = _model("text").eval()
    crys = _model("crysmmnet").eval()
    swapped = _batch(structures[4:8], text={f"s{i}": batch.text[i].numpy() for i in range(4)})
    with torch.no_grad():
        torch.testing.assert_close(text(batch), text(swapped))
        assert not torch.allclose(crys(batch), crys(swapped))


def test_registry_rejects_bad_names_and_settings():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope")
    with pytest.raises(ValidationError):
        build_model("cgcnn", atom_fea_lenn=3)
    with pytest.raises(ValueError, match="text"):
        model_kwargs("matmmfuse_frozen", SMALL, GraphConfig(), None)
    with pytest.raises(ValueError, match="divisible"):
        build_model("matmmfuse_frozen", text_dim=8, fusion_dim=30, heads=8)


def test_pyg_cgconv_variant_runs(structures):
    torch.manual_seed(0)
    model = CGCNN(atom_fea_len=16, n_conv=2, h_fea_len=32, conv="pyg")
    out = model(_batch(structures[:3]))
    assert out.shape == (3,)
    out.sum().backward()
