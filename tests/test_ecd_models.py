"""ECD image models (CNN, InceptionV3, image+text) and a tiny training run on real densities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from matfuse.density.config import DensityConfig, EcdModelConfig, EcdTrainConfig, LocalDensitySource, SliceConfig
from matfuse.density.io import scan_vasp_folder
from matfuse.density.stage import density_stage, read_slices
from matfuse.density.train import augment_batch, kfold_splits, predict_checkpoint, train_ecd_stage
from matfuse.kit import load_checkpoint
from matfuse.io import write_parquet
from matfuse.models.ecd_cnn import EcdCNN, EcdCNNConfig
from matfuse.models.ecd_inception import EcdInception, EcdInceptionConfig
from matfuse.models.ecd_text import EcdText, EcdTextConfig
from matfuse.structures import load_structure


def test_cnn_shapes() -> None:
    m = EcdCNN(EcdCNNConfig(image_size=(75, 75), channels=[8, 16], dense=24))
    x = torch.randn(3, 1, 75, 75)
    assert m(x).shape == (3,)
    assert m.features(x).shape == (3, 24)
    with pytest.raises(ValueError, match="too small"):
        EcdCNN(EcdCNNConfig(image_size=(4, 4), channels=[8, 8, 8]))


@pytest.mark.slow  # builds 3 InceptionV3 (21.8 M params) on CPU
def test_inception_matches_torchvision_layout(tmp_path: Path) -> None:
    m = EcdInception()
    trunk = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("head."))
    # torchvision inception_v3 (aux_logits=True, 1000 classes) has 27,161,264 parameters; minus its
    # fc (2048*1000+1000) and AuxLogits (conv0 768->128 1x1 + BN, conv1 128->768 5x5 + BN, fc 768->1000)
    aux = 768 * 128 + 2 * 128 + 128 * 768 * 25 + 2 * 768 + 768 * 1000 + 1000
    assert trunk == 27_161_264 - (2048 * 1000 + 1000) - aux
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, 75, 75)).shape == (2,)
        with pytest.raises(ValueError, match="75x75"):
            m(torch.randn(1, 1, 64, 64))
    # absent weights file -> random init, flagged
    assert EcdInception(EcdInceptionConfig(weights_path=str(tmp_path / "none.pth"))).pretrained is False
    # a torchvision-format state dict (trunk + fc + AuxLogits keys) loads; fc/AuxLogits are skipped
    state = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("head.")}
    state["fc.weight"] = torch.zeros(1000, 2048)
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    path = tmp_path / "inception_v3_imagenet.pth"
    torch.save(state, path)
    m2 = EcdInception(EcdInceptionConfig(weights_path=str(path)))
    assert m2.pretrained is True
    assert torch.equal(m2.Mixed_7c.branch_pool.conv.weight, m.Mixed_7c.branch_pool.conv.weight)
    torch.save({"foo.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a torchvision"):
        EcdInception(EcdInceptionConfig(weights_path=str(path)))


def test_text_fusion_head() -> None:
    m = EcdText(EcdTextConfig(text_dim=10, image_cfg={"image_size": [32, 32], "channels": [4, 8], "dense": 16}, hidden=32))
    out = m(torch.randn(4, 1, 32, 32), torch.randn(4, 10))
    assert out.shape == (4,)
    assert m.head[0].in_features == 16 + 10 and m.head[0].out_features == 32
    assert isinstance(m.head[2], torch.nn.Dropout) and m.head[3].out_features == 1
    with pytest.raises(ValueError, match="width"):
        m(torch.randn(4, 1, 32, 32), torch.randn(4, 9))


def test_augment_keeps_pixels() -> None:
    x = torch.arange(2 * 25, dtype=torch.float32).reshape(2, 1, 5, 5)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        y = augment_batch(x, gen)
        assert y.shape == x.shape
        for a, b in zip(x, y):
            assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)
        seen.add(tuple(y[0].flatten()[:3].tolist()))
    assert len(seen) > 1  # it does transform


def test_kfold_splits() -> None:
    ids = [f"m{i}" for i in range(11)]
    folds = kfold_splits(ids, 3, seed=1)
    vals = [m for f in folds for m in f["val"]]
    assert sorted(vals) == sorted(ids)
    for f in folds:
        assert not set(f["train"]) & set(f["val"]) and len(f["train"]) + len(f["val"]) == len(ids)
    with pytest.raises(ValueError):
        kfold_splits(ids, 1)


@pytest.fixture(scope="module")
def real_slices(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """(111) slices of the real CHGCAR totals (Si, Al x3, LiH x2) at 75x75."""
    tmp = tmp_path_factory.mktemp("ecd")
    manifest = tmp / "manifest.csv"
    scan_vasp_folder(shared_data / "chgdens_atomate").to_csv(manifest, index=False)
    cfg = DensityConfig(datasets={"atomate": LocalDensitySource(manifest=str(manifest))}, previews=False, store_cubes=False,
                        slice=SliceConfig(size=(75, 75)))
    density_stage("atomate", "total", cfg, tmp / "total")
    return tmp / "total" / "slices.parquet"


@pytest.mark.parametrize("model_name", ["ecd_cnn", "ecd_text", pytest.param("ecd_inception", marks=pytest.mark.slow)])
def test_tiny_training_run(real_slices: Path, tmp_path: Path, model_name: str) -> None:
    meta, images = read_slices(real_slices)
    ids = meta["material_id"].tolist()
    assert len(ids) == 6
    # target: volume per atom of the real structure (a property the density image carries)
    vpa = [load_structure(s).volume / len(load_structure(s)) for s in meta["structure"]]
    entries = tmp_path / "entries.parquet"
    write_parquet(pd.DataFrame({"material_id": ids, "volume_per_atom": vpa}), entries)
    splits = {"train": ["Al_PBEsol_preopt", "Al_nscf_uniform", "LiH_PBEsol_preopt", "Si_static"], "val": ["LiH_SCAN_opt"], "test": ["Al_SCAN_opt"]}
    sp = tmp_path / "splits.json"
    sp.write_text(json.dumps(splits))
    emb = None
    if model_name == "ecd_text":
        # stand-in "text" vector per material (element one-hot); the real pipeline passes MiniLM embeddings
        elements = ["Al", "Li", "H", "Si"]
        vec = [[float(e in load_structure(s).composition) for e in elements] for s in meta["structure"]]
        emb = tmp_path / "emb.parquet"
        import pyarrow as pa

        flat = pa.array(np.asarray(vec, np.float32).ravel(), pa.float32())
        write_parquet(pa.table({"material_id": ids, "embedding": pa.FixedSizeListArray.from_arrays(flat, 4)}), emb)
    mcfg = EcdModelConfig(cnn_channels=[8, 16], cnn_dense=16, inception_weights=str(tmp_path / "absent.pth"))
    tcfg = EcdTrainConfig(epochs=3 if model_name != "ecd_inception" else 1, batch_size=4, patience=5, device="cpu")
    ck, pr, me = tmp_path / "model.pt", tmp_path / "pred.parquet", tmp_path / "metrics.json"
    metrics = train_ecd_stage(real_slices, entries, sp, "volume_per_atom", model_name, mcfg, tcfg, ck, pr, me, emb)
    pred = pd.read_parquet(pr)
    assert sorted(pred["material_id"]) == sorted(ids)
    assert dict(zip(pred["material_id"], pred["split"]))["Al_SCAN_opt"] == "test"
    assert np.isfinite(pred["y_pred"]).all()
    np.testing.assert_allclose(pred.set_index("material_id").loc[ids, "y_true"], vpa)
    assert metrics["pretrained"] is False and json.loads(me.read_text())["pretrained"] is False
    # model selection on validation: the kept epoch is the best validation epoch
    hist = metrics["history"]
    assert metrics["best_epoch"] == hist[int(np.argmin([h["val_mae"] for h in hist]))]["epoch"]
    # normalisation from the training split only
    tr = [ids.index(m) for m in splits["train"]]
    assert metrics["norm"]["x_mean"] == pytest.approx(float(images[tr].mean()), rel=1e-5)
    assert metrics["norm"]["y_mean"] == pytest.approx(float(np.mean([vpa[i] for i in tr])), rel=1e-9)
    # checkpoint: weights_only load, rebuilt from stored constructor args, same predictions
    ckpt = torch.load(ck, map_location="cpu", weights_only=True)
    assert ckpt["format"] == "matfuse-model-1" and ckpt["model"]["name"] == model_name
    assert ckpt["metadata"]["target"] == "volume_per_atom" and ckpt["normalizer"] == metrics["norm"]
    model, _ = load_checkpoint(ck)
    assert sum(p.numel() for p in model.parameters()) == metrics["n_params"]
    if model_name != "ecd_text":
        again = predict_checkpoint(ck, images)
        np.testing.assert_allclose(again, pred.set_index("material_id").loc[ids, "y_pred"], rtol=1e-4, atol=1e-6)
