"""The workflow with a k-fold split, end to end on real MP entries: every fold trains and tests,
metrics per fold, seed ensembles with mean and std (rule ensemble), and every entry tested once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, shared_dir
from matfuse.data import read_splits

pytestmark = pytest.mark.slow
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TARGET = "formation_energy_per_atom"


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("kfold")
    cfg = {
        "datasets": {"mp": {"source": {"kind": "table", "path": str(shared_dir() / "data/mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz"),
                                       "targets": {TARGET: TARGET}},
                            "max_sites": 8, "subset": 36, "subset_seed": 2}},
        "split": {"kind": "kfold", "n_folds": 3, "random_state": 7, "val": 0.15},
        "training": {"models": ["cgcnn"], "targets": [TARGET], "seeds": [0, 1], "epochs": 2, "batch_size": 8,
                     "encoders": [], "text_variants": []},
        "evaluation": {"parity_plots": False},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "config.yaml"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        pytest.fail(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return work


def test_every_fold_trains_and_tests_every_entry_once(kfold_run):
    work = kfold_run
    m = pd.read_csv(work / "results/metrics.csv")
    test = m[m.split == "test"]
    assert sorted(set(test.fold)) == [0, 1, 2] and len(test) == 6  # 3 folds x 2 seeds
    tested = []
    for k in range(3):
        s = read_splits(work / "results/splits/mp/splits.json", fold=k)
        p = pd.read_parquet(work / f"results/predictions/mp/{TARGET}/cgcnn/none/none/fold{k}-seed0.parquet")
        assert sorted(p.loc[p.split == "test", "material_id"]) == s["test"]
        tested += s["test"]
        cfg = (work / f"results/models/mp/{TARGET}/cgcnn/none/none/fold{k}-seed0/config.json").read_text()
        assert '"fold": ' + str(k) in cfg
    entries = pd.read_parquet(work / "results/data/mp/entries.parquet")
    assert sorted(tested) == sorted(entries.material_id)


def test_seed_ensembles_give_mean_and_std(kfold_run):
    work = kfold_run
    base = work / f"results/predictions/mp/{TARGET}/cgcnn/none/none"
    ens = pd.read_parquet(base / "fold1-ensemble.parquet").set_index("material_id")
    a = pd.read_parquet(base / "fold1-seed0.parquet").set_index("material_id")
    b = pd.read_parquet(base / "fold1-seed1.parquet").set_index("material_id")
    assert (ens["n_members"] == 2).all()
    assert ((ens["y_pred"] - (a["y_pred"] + b["y_pred"]) / 2).abs() < 1e-9).all()
    assert ((ens["y_std"] - (a["y_pred"] - b["y_pred"]).abs() / 2 ** 0.5).abs() < 1e-9).all()
    assert (ens["split"] == a["split"]).all()
