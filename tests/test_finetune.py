"""Models that fine-tune their text encoder (``matmmfuse`` end to end, ``text_finetune``) on real texts.

Real inputs: 40 MP structures with their robocrys descriptions (``text_matmmfuse_robocrys``),
the packaged MiniLM (``packaged:minilm``, offline) at 64 tokens to keep it quick.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Structure

from matfuse.config import GraphConfig, ModelHyper, TextEncoderSettings, TrainingConfig
from matfuse.data import build_data, read_tokens
from matfuse.graphs import build_graphs, read_graphs
from matfuse.io import write_json, write_parquet
from matfuse.kit import load_checkpoint
from matfuse.models import build_model, model_kwargs
from matfuse.models.text_encoder import HFTextEncoder, load_tokenizer, resolve_path
from matfuse.predict import predict
from matfuse.train import train_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TARGET = "formation_energy_per_atom"
ENC = TextEncoderSettings(model="packaged:minilm", max_length=64)


@pytest.fixture(scope="module")
def text_set(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    rows = []
    with gzip.open(shared_data / "text_matmmfuse_robocrys" / "matmmfuse_sample_1000_cif_robocrys.jsonl.gz", "rt") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) == 40:
                break
    ids = [f"mm-{r['id']}" for r in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [json.dumps(Structure.from_str(r["cif"], fmt="cif").as_dict()) for r in rows]
    write_parquet(pd.DataFrame({"material_id": ids, "structure": structures, TARGET: [r[TARGET] for r in rows]}),
                  root / "entries.parquet")
    texts = [r["robocrys_text"] for r in rows]
    texts[3] = ""  # an empty description: a missing input, counted
    write_parquet(pd.DataFrame({"material_id": ids, "text_all": texts}), root / "texts.parquet")
    perm = list(np.random.default_rng(0).permutation(ids))
    write_json({"train": perm[:28], "val": perm[28:34], "test": perm[34:]}, root / "splits.json")
    build_graphs(root / "entries.parquet", root / "graphs.parquet", GraphConfig())
    return {"root": root, "ids": ids, "texts": texts}


def test_tokens_equal_the_tokenizer_and_empty_texts_are_missing(text_set):
    tokens = read_tokens(text_set["root"] / "texts.parquet", "all", ENC.model, ENC.max_length)
    tok = load_tokenizer(ENC.model)
    for mid, text in zip(text_set["ids"][:6], text_set["texts"][:6]):
        if not text:
            assert mid not in tokens
            continue
        assert tokens[mid].tolist() == tok(text, truncation=True, max_length=64)["input_ids"]
    data, missing = build_data(text_set["ids"], [0.0] * 40, {"tokens"}, tokens=tokens)
    assert len(data) == 39 and missing == [{"material_id": text_set["ids"][3], "reason": "no text (empty or missing description)"}]
    assert data[0].input_ids.shape == data[0].attention_mask.shape == (1, 64)


def test_pooling_unmasked_mean_counts_padding_masked_mean_does_not():
    tok = load_tokenizer(ENC.model)
    enc = HFTextEncoder(encoder=ENC.model, weights=ENC.model, pooling="mean").eval()
    short, long = "NaCl is rock salt.", "CsCl crystallizes in the cubic Pm-3m space group with eight neighbours. " * 3
    batch = tok([short, long], padding=True, return_tensors="pt")
    alone = tok([short], return_tensors="pt")
    with torch.no_grad():
        masked_pair = enc(batch["input_ids"], batch["attention_mask"])[0]
        masked_alone = enc(alone["input_ids"], alone["attention_mask"])[0]
        enc.cfg = enc.cfg.model_copy(update={"pooling": "mean_unmasked"})
        unmasked_pair = enc(batch["input_ids"], batch["attention_mask"])[0]
        unmasked_alone = enc(alone["input_ids"], alone["attention_mask"])[0]
    torch.testing.assert_close(masked_pair, masked_alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unmasked_alone, masked_alone, atol=1e-5, rtol=1e-5)  # no padding: the same
    assert (unmasked_pair - unmasked_alone).abs().max() > 1e-2  # padding positions enter the authors' mean


def test_published_fusion_block(text_set):
    """One LayerNorm on both projections, query text, norm2(attention + normed text)."""
    root = text_set["root"]
    hyper = ModelHyper(backbone="mdl_cgcnn", text_pooling="mean_unmasked")
    model = build_model("matmmfuse", **model_kwargs("matmmfuse", hyper, GraphConfig(), None, ENC)).eval()
    assert model.graph.embed_dim == 150 and len(model.graph.convs) == 4 and model.graph.convs[0].aggr == "mean"
    assert model.attn.dropout == 0.2 and model.text.cfg.pooling == "mean_unmasked"
    tokens = read_tokens(root / "texts.parquet", "all", ENC.model, ENC.max_length)
    from torch_geometric.loader import DataLoader

    data, _ = build_data(text_set["ids"], [0.0] * 40, {"graph", "tokens"}, read_graphs(root / "graphs.parquet"), tokens=tokens)
    batch = next(iter(DataLoader(data, batch_size=8)))
    with torch.no_grad():
        out = model(batch)
        t = model.norm1(model.text_proj(model.text(batch.input_ids, batch.attention_mask)))
        g = model.norm1(model.graph_proj(model.graph.encode(batch)[1]))
        v = torch.nn.functional.linear(g, model.attn.in_proj_weight[1024:], model.attn.in_proj_bias[1024:])
        attn = model.attn.out_proj(v)  # one key: every softmax weight is 1
        manual = model.head(model.norm2(attn + t)).squeeze(-1)
    torch.testing.assert_close(out, manual, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["text_finetune", "matmmfuse"])
def test_fine_tuned_models_train_save_and_predict(text_set, tmp_path, name):
    root = text_set["root"]
    cfg = TrainingConfig(epochs=2, batch_size=8, lr=5e-5, weight_decay=0.01, schedule="cosine", warmup=0.1,
                         patience=2, device="cpu", text_encoder=ENC,
                         hyper=ModelHyper(fusion_dim=64, fusion_heads=4, backbone="mdl_cgcnn", text_pooling="mean"))
    summary = train_model(
        root / "entries.parquet", root / "splits.json", root / "graphs.parquet", None, tmp_path / "m", name, TARGET,
        0, cfg, GraphConfig(), threads=2, texts_path=root / "texts.parquet", variant="all",
    )
    assert math.isfinite(summary["best_val_mae"])
    assert summary["counts"]["train"]["used"] + summary["counts"]["train"]["missing_input"] == 28
    # loads with weights_only=True without the packaged weights (`weights` is dropped on loading) ...
    ckpt = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert ckpt["model"]["text"]["weights"] == ENC.model and ckpt["model"]["text"]["hf_config"]["model_type"] == "bert"
    model, _ = load_checkpoint(tmp_path / "m" / "model.pt")
    assert model.text.cfg.weights is None
    # ... and holds *fine-tuned* encoder weights: they moved away from the packaged checkpoint
    from safetensors.torch import load_file

    start = load_file(str(Path(resolve_path(ENC.model)) / "model.safetensors"))
    key = next(k for k in start if k.endswith("encoder.layer.0.attention.self.query.weight"))
    tuned = model.text.model.state_dict()[key.removeprefix("bert.") if key not in model.text.model.state_dict() else key]
    assert (tuned - start[key]).abs().max() > 1e-6
    df = predict(tmp_path / "m", root / "entries.parquet", root / "splits.json", root / "graphs.parquet", None,
                 tmp_path / "p.parquet", texts_path=root / "texts.parquet", variant="all")
    assert len(df) == 40
    empty = text_set["ids"][3]
    assert df.loc[df["material_id"] == empty, "y_pred"].isna().all()  # no text: no prediction, row kept
    assert df["y_pred"].notna().sum() == 39
    with pytest.raises(ValueError, match="texts table"):
        predict(tmp_path / "m", root / "entries.parquet", root / "splits.json", root / "graphs.parquet", None,
                tmp_path / "q.parquet")
