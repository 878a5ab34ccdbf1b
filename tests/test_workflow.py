"""The real workflow, end to end, on the tiny real config (config/tiny.yaml).

Runs `snakemake --cores 2 results/metrics.csv` in a scratch directory (ingest -> robocrys ->
MiniLM embeddings -> graphs -> CGCNN / text / MatMMFuse training -> predictions -> metrics),
then checks the outputs and that a rerun with nothing changed does no work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, shared_dir

pytestmark = pytest.mark.slow
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _run(args, cwd, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, **kw)
    return proc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    cfg["datasets"]["mp"]["source"]["path"] = str(shared_dir() / "data/mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz")
    cfg["datasets"]["perovskites"]["source"]["path"] = str(shared_dir() / "data/perov_5_cdvae/perov_5.zip")
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = _run(["results/tables/all.md", "--cores", "2", "--configfile", "config.yaml"], work, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return work, cfg


def test_metrics_have_every_model_and_target(tiny_run):
    work, cfg = tiny_run
    m = pd.read_csv(work / "results/metrics.csv")
    m = m[(m.subset == "all") & m.n_train.isna()]
    tr = cfg["training"]
    for target in tr["targets"]:
        for model in tr["models"]:
            rows = m[(m.target == target) & (m.model == model) & (m.split == "test")]
            assert len(rows) == 1, (target, model)
            row = rows.iloc[0]
            assert row.n > 0 and row.mae >= 0 and row.rmse >= row.mae
            if model == "cgcnn":
                assert row.text_encoder == "none" and row.text_variant == "none"
            else:
                assert row.text_encoder == "minilm" and row.text_variant == "all"
    assert set(m.split) == {"train", "val", "test", "zeroshot"}


def test_zero_shot_rows_score_the_unseen_set(tiny_run):
    work, cfg = tiny_run
    m = pd.read_csv(work / "results/metrics.csv")
    zs = m[m.split == "zeroshot"]
    # perovskites provide only formation energy: one row per model for that target, none for band gap
    assert set(zs.dataset) == {"perovskites"} and set(zs.train_dataset) == {"mp"}
    assert set(zs.target) == {"formation_energy_per_atom"}
    extra = {m for g in cfg["training"]["extra"] if not g.get("train_sizes") for m in g["models"]}
    assert set(zs.model) == set(cfg["training"]["models"]) | extra  # incl. the fine-tuned encoders
    assert (zs.n + zs.n_missing == cfg["datasets"]["perovskites"]["subset"]).all()
    train_ids = set(pd.read_parquet(work / "results/data/mp/entries.parquet").material_id)
    perov_ids = set(pd.read_parquet(work / "results/data/perovskites/entries.parquet").material_id)
    assert not train_ids & perov_ids


def test_tables_are_built(tiny_run):
    work, _ = tiny_run
    text = (work / "results/tables/all.md").read_text()
    for title in ("MatMMFuse", "CrysMMNet", "CroMEL"):
        assert title in text
    assert "zero-shot" in (work / "results/tables/matmmfuse.md").read_text()
    cromel = (work / "results/tables/cromel.md").read_text()
    assert "composition+cromel" in cromel and "| composition |" in cromel


def test_outputs_exist_and_are_consistent(tiny_run):
    work, cfg = tiny_run
    entries = pd.read_parquet(work / "results/data/mp/entries.parquet")
    assert len(entries) == cfg["datasets"]["mp"]["subset"]
    texts = pd.read_parquet(work / "results/text/mp/texts.parquet")
    rejects = pd.read_parquet(work / "results/text/mp/rejects.parquet")
    assert set(texts.material_id) | set(rejects.material_id) == set(entries.material_id)
    emb = pd.read_parquet(work / "results/embeddings/mp/minilm/all-mean.parquet")
    assert set(emb.material_id) == set(texts.material_id)
    for target in cfg["training"]["targets"]:
        for model in cfg["training"]["models"]:
            assert (work / f"results/plots/parity/mp/{target}/{model}.png").stat().st_size > 1000
    assert (work / "results/rejects.csv").exists()
    for log in (work / "logs").rglob("*.log"):
        assert "MP_API_KEY" not in log.read_text()


def test_rerun_with_nothing_changed_does_no_work(tiny_run):
    work, _ = tiny_run
    proc = _run(["results/metrics.csv", "--cores", "2", "--configfile", "config.yaml", "-n"], work, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_band_gap_rows_over_positive_gaps_and_learning_curve_rows(tiny_run):
    work, cfg = tiny_run
    m = pd.read_csv(work / "results/metrics.csv")
    pos = m[(m.subset == "y>0") & (m.split == "test")]
    assert set(pos.target) == {"band_gap"} and set(pos.model) == set(cfg["training"]["models"])
    pred = pd.read_parquet(work / "results/predictions/mp/band_gap/cgcnn/none/none/seed0.parquet")
    test = pred[pred.split == "test"]
    row = pos[pos.model == "cgcnn"].iloc[0]
    assert row.n == int((test.y_true > 0).sum()) > 0
    assert row.mae == pytest.approx((test.y_pred - test.y_true)[test.y_true > 0].abs().mean(), rel=1e-5)
    sized = m[m.n_train.notna()]
    assert set(sized.model) == {"cgcnn"} and set(sized.n_train) == {16}
    assert sized.loc[sized.split == "train", "n"].iloc[0] == 16
    full = m[(m.model == "cgcnn") & m.n_train.isna() & (m.split == "test") & (m.subset == "all")
             & (m.target == "formation_energy_per_atom")]
    assert sized.loc[sized.split == "test", "n"].iloc[0] == full["n"].iloc[0]  # same test set


def test_study_report_from_the_run(tiny_run):
    work, cfg = tiny_run
    proc = _run(["results/study/results.md", "--cores", "2", "--configfile", "config.yaml"], work, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (work / "results/study/results.md").read_text()
    m = pd.read_csv(work / "results/metrics.csv")
    cg = m[(m.model == "cgcnn") & (m.split == "test") & (m.subset == "all") & m.n_train.isna()
           & (m.target == "formation_energy_per_atom")].iloc[0]
    assert f"| cgcnn | {cg.mae:.3f} (1 seed) |" in text
    assert "entries with y > 0 only" in text and "0.388 eV (Eg > 0 only)" in text
    assert "Learning curve" in text and "n_train = 16" in text
    assert (work / "results/study/learning_curve.png").stat().st_size > 1000
    assert "### Wall time" in text and "| train |" in text


def test_matfuse_predict_on_cif_files_matches_the_workflow(tiny_run, tmp_path):
    """`matfuse predict` on CIF files of test entries gives the workflow's own test predictions; a seed
    folder group is an ensemble; a broken file is a row with the reason."""
    from pymatgen.core import Structure

    work, cfg = tiny_run
    entries = pd.read_parquet(work / "results/data/mp/entries.parquet").set_index("material_id")
    workflow_pred = {}
    for model, sub in (("cgcnn", "none/none"), ("matmmfuse_frozen", "minilm/all"), ("text_finetune", "minilm/all")):
        p = pd.read_parquet(work / f"results/predictions/mp/formation_energy_per_atom/{model}/{sub}/seed0.parquet")
        workflow_pred[model] = p[p.split == "test"].set_index("material_id")["y_pred"].astype(float)
    ids = list(workflow_pred["cgcnn"].index[:4])
    folder = tmp_path / "cifs"
    folder.mkdir()
    for mid in ids:
        Structure.from_str(entries.loc[mid, "structure"], fmt="json").to(filename=str(folder / f"{mid}.cif"))
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 3.0\n")
    out = tmp_path / "preds.csv"
    models = [work / "results/models/mp/formation_energy_per_atom/cgcnn/none/none/seed0",
              work / "results/models/mp/formation_energy_per_atom/matmmfuse_frozen/minilm/all",
              work / "results/models/mp/formation_energy_per_atom/text_finetune/minilm/all"]  # fine-tuned encoder
    proc = subprocess.run([sys.executable, "-m", "matfuse.cli", "predict", *sum((["--model", str(m)] for m in models), []),
                           "--structures", str(folder), "--out", str(out), "--config", "config.yaml",
                           "--work-dir", str(tmp_path / "work")],
                          cwd=work, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = pd.read_csv(out)
    assert set(got.material_id) == set(ids) | {"broken"}
    for model_dir, name in zip(models, ("cgcnn", "matmmfuse_frozen", "text_finetune")):
        rows = got[got.model == str(model_dir)].set_index("material_id")
        for mid in ids:
            assert rows.loc[mid, "prediction"] == pytest.approx(workflow_pred[name][mid], abs=2e-4)
        assert "unparseable" in rows.loc["broken", "warnings"] or "structure" in rows.loc["broken", "warnings"]
        assert pd.isna(rows.loc["broken", "prediction"])
    # one seed here: no spread; the formula column comes from the parsed structure
    assert got[got.model == str(models[0])]["uncertainty"].isna().all()
    assert got.set_index("material_id").loc[ids[0], "formula"].iloc[0] == entries.loc[ids[0], "formula"]
    # a seed-folder group is an ensemble: two different CGCNNs (full training set, 16 entries) -> mean and std
    import shutil

    group = tmp_path / "ensemble"
    base = work / "results/models/mp/formation_energy_per_atom/cgcnn/none/none"
    shutil.copytree(base / "seed0", group / "seed0")
    shutil.copytree(base / "n16-seed0", group / "seed1")
    out2 = tmp_path / "ens.csv"
    proc = subprocess.run([sys.executable, "-m", "matfuse.cli", "predict", "--model", str(group), "--structures",
                           *[str(folder / f"{mid}.cif") for mid in ids], "--out", str(out2), "--work-dir", str(tmp_path / "work")],
                          cwd=work, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ens = pd.read_csv(out2).set_index("material_id")
    small = pd.read_parquet(work / "results/predictions/mp/formation_energy_per_atom/cgcnn/none/none/n16-seed0.parquet")
    small = small.set_index("material_id")["y_pred"].astype(float)
    for mid in ids:
        a, b = workflow_pred["cgcnn"][mid], small[mid]
        assert ens.loc[mid, "n_models"] == 2
        assert ens.loc[mid, "prediction"] == pytest.approx((a + b) / 2, abs=2e-4)
        assert ens.loc[mid, "uncertainty"] == pytest.approx(abs(a - b) / 2 ** 0.5, abs=2e-4)
    listing = subprocess.run([sys.executable, "-m", "matfuse.cli", "models"], cwd=work, capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0 and "formation_energy_per_atom" in listing.stdout and "matmmfuse" in listing.stdout
