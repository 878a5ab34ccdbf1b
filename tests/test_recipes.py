"""Published training recipes as named models: cgcnn_paper (CGCNN's own settings) beside our cgcnn."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from matfuse.config import GraphConfig, TrainingConfig, load_config
from matfuse.graphs import build_graphs
from matfuse.io import write_json
from matfuse.kit import lr_schedule, make_optimizer
from matfuse.predict import predict
from matfuse.train import train_model
from matfuse.workflow import Plan

TARGET = "formation_energy_per_atom"


def test_cgcnn_paper_recipe_resolves_per_target_and_user_overrides_win():
    t = TrainingConfig(epochs=30, lr=1e-3, recipes={"cgcnn_paper": {"epochs": 1000}})
    ef, eg = t.for_model("cgcnn_paper", TARGET), t.for_model("cgcnn_paper", "band_gap")
    assert (ef.optimizer, ef.momentum, ef.lr, ef.batch_size, ef.schedule, ef.milestones) == ("sgd", 0.9, 0.02, 256, "multistep", [0.8])
    assert eg.lr == 0.05 and ef.epochs == eg.epochs == 1000
    assert (ef.hyper.n_conv, ef.hyper.h_fea_len, ef.hyper.atom_fea_len) == (4, 32, 64)
    ours = t.for_model("cgcnn", TARGET)
    assert (ours.optimizer, ours.lr, ours.epochs, ours.hyper.n_conv) == ("adamw", 1e-3, 30, 3)
    with pytest.raises(ValueError, match="not a crystal model"):
        TrainingConfig(recipes={"nope": {}})
    with pytest.raises(ValueError, match="experiment list"):
        TrainingConfig(recipes={"cgcnn": {"seeds": [1]}})


def test_training_params_of_existing_models_are_unchanged():
    """Settings added for the recipes stay out of a job's params at their defaults (no re-runs)."""
    plan = Plan(load_config("config/tiny.yaml"))
    wc = type("W", (), {"model": "cgcnn", "target": TARGET})()
    params = plan.training_params(wc)
    assert not {"optimizer", "momentum", "milestones", "gamma", "lr_by_target", "recipes"} & set(params)
    assert "atom_features" not in params["hyper"]
    paper = plan.training_params(type("W", (), {"model": "cgcnn_paper", "target": "band_gap"})())
    assert paper["optimizer"] == "sgd" and paper["lr"] == 0.05 and paper["hyper"]["n_conv"] == 4
    assert paper["hyper"]["atom_features"] == "cgcnn"


def test_cgcnn_atom_init_is_the_92_wide_published_table():
    import json as _json
    from importlib.resources import files

    from matfuse.graphs import atom_feature_table, cgcnn_atom_init_table
    from matfuse.models import build_model

    ref = _json.loads(files("matminer.utils.data_files").joinpath("cgcnn_atom_feature.json").read_text())
    table = cgcnn_atom_init_table()
    assert table.shape[1] == 92 and atom_feature_table().shape[1] == 91
    for z in ("1", "8", "26", "83"):
        assert table[int(z)].tolist() == [float(v) for v in ref[z]]
    assert not table[0].any()
    m = build_model("cgcnn_paper", atom_features="cgcnn", n_conv=4, h_fea_len=32)
    assert m.atom_table.shape[1] == 92 and m.embedding.in_features == 92


def test_multistep_drops_the_lr_at_the_milestone_and_sgd_has_momentum():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = make_optimizer([w], "sgd", lr=0.02, momentum=0.9)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    step = lr_schedule(opt, "multistep", total_steps=100, milestones=[0.8], gamma=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        step()
    assert lrs[79] == pytest.approx(0.02) and lrs[80] == pytest.approx(0.002) and lrs[-1] == pytest.approx(0.002)


def test_cgcnn_paper_trains_and_predicts_on_real_structures(mp_csv, tmp_path):
    df = pd.read_csv(mp_csv, nrows=120)
    from pymatgen.core import Structure

    entries = pd.DataFrame({"material_id": df["material_id"],
                            "structure": [json.dumps(Structure.from_str(c, fmt="cif").as_dict()) for c in df["cif"]],
                            TARGET: df[TARGET]})
    entries.to_parquet(tmp_path / "entries.parquet")
    ids = list(df["material_id"])
    write_json({"train": ids[:90], "val": ids[90:105], "test": ids[105:]}, tmp_path / "splits.json")
    build_graphs(tmp_path / "entries.parquet", tmp_path / "graphs.parquet", GraphConfig(), tmp_path / "rej.parquet")
    training = TrainingConfig(epochs=5, patience=5, device="cpu").for_model("cgcnn_paper", TARGET)
    summary = train_model(tmp_path / "entries.parquet", tmp_path / "splits.json", tmp_path / "graphs.parquet", None,
                          tmp_path / "m", "cgcnn_paper", TARGET, 0, training, GraphConfig())
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["training"]["optimizer"] == "sgd" and cfg["model"]["n_conv"] == 4 and cfg["model"]["h_fea_len"] == 32
    assert cfg["model"]["name"] == "cgcnn_paper" and cfg["model"]["atom_features"] == "cgcnn"
    assert summary["model"] == "cgcnn_paper" and summary["epochs_run"] == 5
    p = predict(tmp_path / "m", tmp_path / "entries.parquet", tmp_path / "splits.json", tmp_path / "graphs.parquet",
                None, tmp_path / "p.parquet", device="cpu")
    test = p[p.split == "test"]
    assert len(test) == 15 and test["y_pred"].notna().all()
