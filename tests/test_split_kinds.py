"""Splits a benchmark or a user fixes: k-fold (matbench's own folds), a source column (JARVIS
leaderboard ``split__<prop>``), a user file (JSON / CSV); validation always from the training part."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from matfuse.config import DatasetConfig, SplitConfig, TableSource, load_config
from matfuse.data import read_splits
from matfuse.ingest import ingest
from matfuse.split import kfold_splits, write_dataset_splits, write_splits
from matfuse.workflow import Plan, fold_of, fold_segment
from matfuse.evaluate import parse_prediction_path

MATBENCH_KFOLD = dict(kind="kfold", n_folds=5, shuffle=True, random_state=18012019, group=False)


@pytest.fixture(scope="module")
def jdft2d(shared_data, tmp_path_factory):
    """All 636 matbench_jdft2d entries ingested (ids jdft2d-<matbench index>)."""
    root = tmp_path_factory.mktemp("jdft2d")
    src = TableSource(path=str(shared_data / "matbench_jdft2d_phonons_matdeeplearn" / "jdft2d_exfoliation_energy.json.gz"),
                      id_column="structure_id", id_prefix="jdft2d-", targets={"exfoliation_energy": "y"})
    entries = ingest(DatasetConfig(source=src), "jdft2d", root / "entries.parquet", root / "rejects.parquet")
    return root, entries


def test_kfold_is_matbench_own_folds(jdft2d, tmp_path):
    """Our kfold over the ingested table in file order equals matbench 0.6's published jdft2d folds."""
    from matbench.task import MatbenchTask

    root, entries = jdft2d
    assert len(entries) == 636
    payload = write_splits(root / "entries.parquet", tmp_path / "splits.json", SplitConfig(**MATBENCH_KFOLD))
    assert payload["kind"] == "kfold" and len(payload["folds"]) == 5
    validation = MatbenchTask("matbench_jdft2d", autoload=False).validation
    for k in range(5):
        fold = read_splits(tmp_path / "splits.json", fold=k)
        mb = lambda ids: sorted(f"mb-jdft2d-{int(i.split('-')[1]) + 1:03d}" for i in ids)  # noqa: E731
        assert mb(fold["test"]) == sorted(validation[f"fold_{k}"].test)
        # validation ids come from matbench's training part only, the test fold is never seen
        assert mb(fold["train"] + fold["val"]) == sorted(validation[f"fold_{k}"].train)
        assert len(fold["val"]) == round(0.1 * len(validation[f"fold_{k}"].train))
        assert not set(fold["val"]) & set(fold["test"]) and not set(fold["train"]) & set(fold["val"])
    with pytest.raises(ValueError, match="holds 5 folds"):
        read_splits(tmp_path / "splits.json")
    with pytest.raises(ValueError, match="no fold 5"):
        read_splits(tmp_path / "splits.json", fold=5)


def test_grouped_kfold_keeps_identical_structures_in_one_fold():
    ids = [f"m{i}" for i in range(40)]
    groups = [f"h{i % 30}" for i in range(40)]  # m0 and m30 share a structure, ... m9 and m39
    folds = kfold_splits(ids, SplitConfig(kind="kfold", n_folds=4), groups)
    for f in folds:
        for i in range(10):
            assert (f"m{i}" in f["test"]) == (f"m{i + 30}" in f["test"])
    assert sorted(i for f in folds for i in f["test"]) == sorted(ids)  # every entry tested once
    ungrouped = kfold_splits(ids, SplitConfig(kind="kfold", n_folds=4, group=False), groups)
    assert ungrouped != folds


def test_column_split_per_target_from_the_jarvis_leaderboard_columns(shared_data, tmp_path):
    """split__{target}: one split per target, as the JARVIS leaderboard assigns it; no val -> carved."""
    path = shared_data / "jarvis_dft3d" / "jarvis_dft3d_subset_with_structures.json.gz"
    records = json.load(gzip.open(path))
    ds = DatasetConfig(source=TableSource(path=str(path), id_column="jid", structure_column="atoms",
                                          structure_format="jarvis",
                                          targets={"formation_energy_per_atom": "formation_energy_peratom",
                                                   "band_gap": "optb88vdw_bandgap"}), subset=150, subset_seed=0)
    ingest(ds, "jarvis", tmp_path / "entries.parquet", tmp_path / "rejects.parquet")
    ids = pd.read_parquet(tmp_path / "entries.parquet", columns=["material_id"])["material_id"].tolist()
    cfg = SplitConfig(kind="column", column="split__{target}")
    params = {**cfg.params(), "dataset": ds.model_dump()}
    payload = write_dataset_splits(tmp_path / "entries.parquet", tmp_path / "splits.json", params)
    assert set(payload["targets"]) == {"formation_energy_per_atom", "band_gap"}
    by_id = {r["jid"]: r for r in records}
    for target, key in (("formation_energy_per_atom", "formation_energy_peratom"), ("band_gap", "optb88vdw_bandgap")):
        s = read_splits(tmp_path / "splits.json", target=target)
        for name in ("train", "val", "test"):
            assert s[name], (target, name)
            assert all(by_id[i][f"split__{key}"] == name for i in s[name])
        unlabelled = [i for i in ids if f"split__{key}" not in by_id[i]]
        assert payload["targets"][target]["labels"]["unlabelled"] == len(unlabelled)
        assert not set(unlabelled) & set(s["train"] + s["val"] + s["test"])  # counted, not in a split
    with pytest.raises(ValueError, match="one split per target"):
        read_splits(tmp_path / "splits.json", target="efermi")


def test_file_split_json_and_csv(mp_rows, tmp_path):
    ids = mp_rows["material_id"].tolist()
    pd.DataFrame({"material_id": ids}).to_parquet(tmp_path / "e.parquet")
    user = {"train": ids[:40], "test": ids[40:55] + ["mp-not-an-entry"]}
    (tmp_path / "s.json").write_text(json.dumps(user))
    payload = write_dataset_splits(tmp_path / "e.parquet", tmp_path / "out.json",
                                   SplitConfig(kind="file", path=str(tmp_path / "s.json")).params())
    s = read_splits(tmp_path / "out.json")
    assert s["test"] == sorted(ids[40:55])
    assert sorted(s["train"] + s["val"]) == sorted(ids[:40]) and len(s["val"]) == 4  # val: 10 % of train
    lab = payload["labels"]
    assert lab["val_carved_from_train"] and lab["unlabelled"] == 5 and lab["labelled_ids_not_in_entries"] == 1
    csv = pd.DataFrame({"material_id": ids[:50], "split": ["train"] * 30 + ["validation"] * 10 + ["test"] * 10})
    csv.to_csv(tmp_path / "s.csv", index=False)
    write_dataset_splits(tmp_path / "e.parquet", tmp_path / "out2.json",
                         SplitConfig(kind="file", path=str(tmp_path / "s.csv")).params())
    s2 = read_splits(tmp_path / "out2.json")
    assert s2["val"] == sorted(ids[30:40]) and s2["test"] == sorted(ids[40:50])
    (tmp_path / "bad.json").write_text(json.dumps({"train": ids[:10], "test": ids[5:12]}))
    with pytest.raises(ValueError, match="is in both"):
        write_dataset_splits(tmp_path / "e.parquet", tmp_path / "o3.json",
                             SplitConfig(kind="file", path=str(tmp_path / "bad.json")).params())


def test_split_kind_settings_are_checked():
    with pytest.raises(ValidationError, match="needs `column`"):
        SplitConfig(kind="column")
    with pytest.raises(ValidationError, match="needs `path`"):
        SplitConfig(kind="file")
    # the random split's params (the split rule's) are what they were before the other kinds existed
    assert SplitConfig().params() == {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 42}


def test_kfold_experiments_carry_a_fold_segment(tmp_path):
    cfg = load_config(Path("config/matbench_jdft2d.yaml"))
    plan = Plan(cfg)
    exps = plan.experiments()
    assert {e["fold"] for e in exps} == {f"fold{k}-" for k in range(5)}
    files = plan.prediction_files()
    assert "results/predictions/jdft2d/exfoliation_energy/cgcnn/none/none/fold3-seed1.parquet" in files
    assert parse_prediction_path(files[0])["fold"] is not None
    assert fold_of(fold_segment(4)) == 4 and fold_segment(None) == "" and fold_of("") is None
    assert "results/matbench/jdft2d/summary.md" in plan.final_targets()
    assert "results/predictions/jdft2d/exfoliation_energy/cgcnn/none/none/fold0-ensemble.parquet" in plan.ensemble_files()
    assert {r["fold"] for r in plan.experiment_manifest()["experiments"]} == set(range(5))
    bad = cfg.model_dump()
    bad["split"] = {"kind": "kfold"}
    with pytest.raises(ValidationError, match="matbench's folds"):
        load_config(bad)


def _fold_predictions(root: Path, splits_path: Path, seeds: int, rng) -> list[list[Path]]:
    """Seed prediction files per fold (test rows: the true value + noise), in predict's format."""
    import pyarrow as pa

    from matfuse.io import write_parquet
    from matfuse.predict import PRED_SCHEMA

    y = pd.read_parquet(root / "entries.parquet", columns=["material_id", "exfoliation_energy"])
    y_of = dict(zip(y["material_id"], y["exfoliation_energy"]))
    out = []
    for k in range(5):
        s = read_splits(splits_path, fold=k)
        files = []
        for seed in range(seeds):
            ids = s["train"] + s["val"] + s["test"]
            split = ["train"] * len(s["train"]) + ["val"] * len(s["val"]) + ["test"] * len(s["test"])
            yt = [y_of[i] for i in ids]
            df = pd.DataFrame({"material_id": ids, "split": split, "y_true": yt,
                               "y_pred": [v + rng.normal(0, 30) for v in yt]})
            path = root / f"fold{k}-seed{seed}.parquet"
            write_parquet(pa.Table.from_pandas(df, schema=PRED_SCHEMA, preserve_index=False), path)
            files.append(path)
        out.append(files)
    return out


def test_matbench_record_is_what_matbench_loads_and_scores(jdft2d, tmp_path):
    """The results file passes matbench 0.6's own loader (hash, every test id, scores) and its scores
    are matbench's; an ensemble of 2 seeds gives the mean and the std as uncertainty."""
    import numpy as np
    from matbench.bench import MatbenchBenchmark
    from matbench.data_ops import score_array

    from matfuse.matbench import write_record, write_summary

    root, _ = jdft2d
    write_splits(root / "entries.parquet", tmp_path / "splits.json", SplitConfig(**MATBENCH_KFOLD))
    files = _fold_predictions(root, tmp_path / "splits.json", seeds=2, rng=np.random.default_rng(0))
    scores = write_record("matbench_jdft2d", tmp_path / "splits.json", files, tmp_path / "results.json.gz",
                          parameters={"label": "noise", "seeds": 2})
    d = json.load(gzip.open(tmp_path / "results.json.gz"))
    mb = MatbenchBenchmark.from_dict(json.loads(json.dumps(d)))  # checks the hash and validates every fold
    task = mb.tasks_map["matbench_jdft2d"]
    assert task.all_folds_recorded
    for k in range(5):
        fold = task.results[f"fold_{k}"]
        test = read_splits(tmp_path / "splits.json", fold=k)["test"]
        a, b = (pd.read_parquet(f).set_index("material_id").loc[test] for f in files[k])
        mean = (a["y_pred"] + b["y_pred"]) / 2
        mbids = [f"mb-jdft2d-{int(i.split('-')[1]) + 1:03d}" for i in test]
        assert np.allclose([fold.data[m] for m in mbids], mean.to_numpy(float))
        std = (a["y_pred"] - b["y_pred"]).abs() / np.sqrt(2)
        assert np.allclose([fold.uncertainty[m]["std"] for m in mbids], std.to_numpy(float))
        ref = score_array(a["y_true"].to_numpy(float), mean.to_numpy(float), "regression")
        assert fold.scores["mae"] == pytest.approx(ref["mae"]) and fold.scores["mape"] == pytest.approx(ref["mape"])
        assert scores[f"fold_{k}"]["rmse"] == pytest.approx(ref["rmse"])
    table = write_summary("matbench_jdft2d", [tmp_path / "results.json.gz"], tmp_path / "summary.md")
    assert table["mae_mean"].iloc[0] == pytest.approx(np.mean([scores[f"fold_{k}"]["mae"] for k in range(5)]))
    text = (tmp_path / "summary.md").read_text()
    assert "ALIGNN (leaderboard) | 43.42 ± 8.95" in text and "**noise**" in text
    # folds that are not matbench's are refused, naming the ids
    write_splits(root / "entries.parquet", tmp_path / "other.json", SplitConfig(**{**MATBENCH_KFOLD, "random_state": 1}))
    with pytest.raises(ValueError, match="test fold 0 is not matbench's"):
        write_record("matbench_jdft2d", tmp_path / "other.json", files, tmp_path / "x.json.gz")
    # a test entry without a prediction is refused
    bad = pd.read_parquet(files[0][0])
    bad.loc[bad["split"] == "test", "y_pred"] = None
    bad.to_parquet(files[0][0])
    bad.to_parquet(files[0][1])
    with pytest.raises(ValueError, match="fold 0: 128 test entries have no prediction"):
        write_record("matbench_jdft2d", tmp_path / "splits.json", files, tmp_path / "y.json.gz")
