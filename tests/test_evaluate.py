"""Metrics, tables and prediction-path parsing on small prediction files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from matfuse.evaluate import parse_prediction_path, regression_metrics, write_metrics
from matfuse.tables import write_tables


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    p = y + rng.normal(scale=0.3, size=200)
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert m["r2"] == pytest.approx(r2_score(y, p))


def test_prediction_paths():
    k = parse_prediction_path("results/predictions/mp/band_gap/text/minilm/key/seed2.parquet")
    assert k == {"dataset": "mp", "train_dataset": "mp", "target": "band_gap", "model": "text",
                 "text_encoder": "minilm", "text_variant": "key", "fold": None, "n_train": None, "seed": 2,
                 "zero_shot": False}
    f = parse_prediction_path("results/predictions/jdft2d/exfoliation_energy/cgcnn/none/none/fold3-n100-seed1.parquet")
    assert (f["fold"], f["n_train"], f["seed"]) == (3, 100, 1)
    z = parse_prediction_path("results/predictions/zeroshot/mp/band_gap/cgcnn/none/none/seed0.parquet")
    assert z["zero_shot"] and z["model"] == "cgcnn"
    with pytest.raises(ValueError):
        parse_prediction_path("results/other/file.parquet")


def _pred(tmp_path, rel, df):
    path = tmp_path / "results/predictions" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path)
    return str(path)


def test_metrics_rows_missing_counted_and_tables(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for seed in (0, 1, 2):
        y = rng.normal(size=30)
        pred = pd.DataFrame({"material_id": [f"mp-{i}" for i in range(30)],
                             "split": ["train"] * 20 + ["val"] * 5 + ["test"] * 5,
                             "y_true": y, "y_pred": y + rng.normal(scale=0.1 * (seed + 1), size=30)})
        pred.loc[29, "y_pred"] = None  # a test entry without prediction
        paths.append(_pred(tmp_path, f"mp/band_gap/cgcnn/none/none/seed{seed}.parquet", pred))
        zs = pd.DataFrame({"dataset": ["perov"] * 4, "material_id": list("abcd"), "split": ["zeroshot"] * 4,
                           "y_true": [1.0, 2.0, None, 4.0], "y_pred": [1.5, 2.5, 3.0, 3.0]})
        paths.append(_pred(tmp_path, f"zeroshot/mp/band_gap/cgcnn/none/none/seed{seed}.parquet", zs))
    rej = tmp_path / "results/data/mp/rejects.parquet"
    rej.parent.mkdir(parents=True)
    pd.DataFrame({"material_id": ["x"], "stage": ["ingest"], "reason": ["bad"]}).to_parquet(rej)
    plot = tmp_path / "results/plots/parity/mp/band_gap/cgcnn.png"
    m = write_metrics(paths, [str(rej)], tmp_path / "metrics.csv", tmp_path / "rejects.csv", [str(plot)])
    test = m[(m.split == "test")]
    assert len(test) == 3 and (test.n == 4).all() and (test.n_missing == 1).all()
    zs = m[m.split == "zeroshot"]
    assert set(zs.dataset) == {"perov"} and (zs.train_dataset == "mp").all()
    assert (zs.n == 3).all() and zs.mae.iloc[0] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert plot.stat().st_size > 1000
    assert pd.read_csv(tmp_path / "rejects.csv").dataset.tolist() == ["mp"]
    write_tables(tmp_path / "metrics.csv", tmp_path / "tables")
    table = (tmp_path / "tables/matmmfuse.md").read_text()
    expected = test.mae.mean()
    assert f"{expected:.3f} ± {test.mae.std(ddof=1):.3f} (3)" in table
    assert "perov (from mp)" in table
