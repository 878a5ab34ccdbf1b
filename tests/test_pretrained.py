"""Shipped models: found by name offline, load with weights_only=True, cards that match the
checkpoints, and `matfuse predict --model <name>` on a folder of CIFs with a bad one among them."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from matfuse.cli import ensemble_members, list_shipped, main
from matfuse.pretrained import card, export, resolve, shipped

NAMES = ["mp20-formation-energy-cgcnn", "mp20-band-gap-cgcnn"]


def test_shipped_models_have_cards_that_match_their_checkpoints():
    assert set(NAMES) <= set(shipped())
    for name in NAMES:
        c = card(name)
        members = ensemble_members(name)
        assert [m.name for m in members] == ["seed0", "seed1", "seed2"] and len(c["seeds"]) == 3
        for m in members:
            ckpt = torch.load(m / "model.pt", map_location="cpu", weights_only=True)
            assert ckpt["metadata"]["target"] == c["target"] and ckpt["metadata"]["n_train"] == c["n_train"]
            cfg = json.loads((m / "config.json").read_text())
            assert cfg["summary"]["counts"]["train"]["used"] == c["n_train"] == c["data"]["entries"]["train"]
        assert c["data"]["trained_on"].startswith("training split only")
        for key in ("units", "command", "software", "limits", "test"):
            assert c[key], key
        text = (shipped()[name] / "MODEL_CARD.md").read_text()
        assert f"MAE {c['test']['ensemble']['mae']:.4f}" in text and "Known limits" in text
    ship = list_shipped()
    assert set(NAMES) <= set(ship["name"])
    with pytest.raises(SystemExit, match="no shipped model of that name"):
        resolve("no-such-model")


def test_predict_with_a_shipped_model_on_a_folder_of_cifs(shared_data, tmp_path, capsys):
    test = pd.read_csv(shared_data / "mp20_subset_opryan90" / "test.csv").head(4)
    folder = tmp_path / "cifs"
    folder.mkdir()
    for r in test.itertuples():
        (folder / f"{r.material_id}.cif").write_text(r.cif)
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 3.0\n")
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", NAMES[0], "--structures", str(folder), "--out", str(out),
                 "--work-dir", str(tmp_path / "work")]) == 0
    df = pd.read_csv(out).set_index("material_id")
    assert len(df) == 5 and set(df["n_models"]) == {3}
    assert pd.isna(df.loc["broken", "prediction"]) and "unparseable CIF" in df.loc["broken", "warnings"]
    good = df.drop(index="broken")
    assert good["prediction"].notna().all() and (good["uncertainty"] > 0).all()
    err = (good["prediction"] - test.set_index("material_id").loc[good.index, "formation_energy_per_atom"]).abs()
    assert err.mean() < 0.5  # eV/atom: a trained model, not noise (the DFT range here is ~2.5 eV/atom)
    # the entry point a user types
    r = subprocess.run([sys.executable, "-m", "matfuse.cli", "models", "--root", str(tmp_path / "none")],
                       capture_output=True, text=True, check=True)
    assert NAMES[0] in r.stdout and "MODEL_CARD.md" in r.stdout


def test_export_refuses_bad_names(tmp_path):
    with pytest.raises(ValueError, match="model name"):
        export("Bad Name", tmp_path, tmp_path, "cmd", tmp_path)
