"""The generation branch (FlowLLM) end to end through Snakemake on real MP entries
(config/generate_tiny.yaml): every row of the comparison, metrics.csv, the table, the histograms,
and no test entry in any generative training step."""

from __future__ import annotations

import json
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
METHODS = ["lm", "flowllm", "rfm_simple", "pyxtal", "test"]


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("generate")
    cfg = yaml.safe_load((REPO / "config/generate_tiny.yaml").read_text())
    cfg["datasets"]["mp20"]["source"]["path"] = str(shared_dir() / "data/mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz")
    cfg["generation"]["calibration"] = str(shared_dir() / "data/mp20_subset_opryan90/test.csv")
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "results/generation/metrics.csv", "--cores", "2",
                           "--configfile", "config.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return work, cfg["generation"]


def test_every_method_has_its_metrics_and_the_table_its_rows(gen_run):
    work, g = gen_run
    m = pd.read_csv(work / "results/generation/metrics.csv")
    assert set(m["method"]) == set(METHODS) | {"calibration"}
    for method in METHODS:
        rows = m[m.method == method].set_index("metric")
        for metric in ("parsed", "valid", "stable_chgnet_0", "sun_chgnet_0", "novel"):
            assert metric in rows.index, (method, metric)
        # rates per sample drawn; every LM-derived row draws n_samples (rfm_simple: one per parsed LM sample)
        if method != "rfm_simple":
            assert rows.loc["parsed", "n"] == g["n_samples"]
        assert 0 <= rows.loc["valid", "value"] <= 1 and rows.loc["valid", "lo"] <= rows.loc["valid", "value"] <= rows.loc["valid", "hi"]
    test_rows = m[m.method == "test"].set_index("metric")
    assert test_rows.loc["parsed", "value"] == 1.0  # real crystals: the ceiling row
    table = (work / "results/generation/table.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in table
    assert "FlowLLM (published" in table and "calibration" in table and "Wall time per stage" in table
    assert "pair yield" in table and "parse rate" in table
    for png in ("ehull_chgnet.png", "ehull_model.png"):
        assert (work / "results/generation" / png).stat().st_size > 1000


def test_lm_rows_record_parse_failures_and_flowllm_keeps_the_lm_compositions(gen_run):
    work, g = gen_run
    lm = pd.read_parquet(work / "results/generation/samples/lm.parquet")
    assert len(lm) == g["n_samples"]
    assert (lm["structure"].isna() == lm["reason"].notna()).all()  # a structure or a reason, never neither
    summary = json.loads((work / "results/generation/samples/lm_summary.json").read_text())
    assert summary["parse_rate"] == pytest.approx(lm["structure"].notna().mean())
    flow = pd.read_parquet(work / "results/generation/samples/flowllm.parquet")
    simple = pd.read_parquet(work / "results/generation/samples/rfm_simple.parquet")
    assert len(flow) == len(lm) and len(simple) == int(lm["structure"].notna().sum())
    from matfuse.structures import load_structure

    by_id = dict(zip(lm["sample_id"], lm["structure"]))
    for frame in (flow, simple):
        for base_id, s in zip(frame["base_sample"], frame["structure"]):
            if s is not None and by_id[base_id] is not None:
                assert load_structure(s).composition == load_structure(by_id[base_id]).composition


def test_no_test_entry_enters_generative_training(gen_run):
    work, _ = gen_run
    data = work / "results/generation/data"
    train = set(pd.read_parquet(data / "train.parquet")["material_id"])
    val = set(pd.read_parquet(data / "val.parquet")["material_id"])
    test = set(pd.read_parquet(data / "test.parquet")["material_id"])
    assert train and test and not (train & test) and not (val & test)
    pairs = pd.read_parquet(work / "results/generation/pairs/pairs.parquet")
    assert set(pairs["target_id"]) <= train
    lm = json.loads((work / "results/generation/lm/summary.json").read_text())
    assert lm["n_train"] == len(train)
    splits = json.loads((work / "results/splits/mp20/splits.json").read_text())
    assert test <= set(splits["test"])


def test_generation_checkpoints_load_with_weights_only(gen_run):
    import torch

    from matfuse import kit

    work, _ = gen_run
    for path, name in (("lm/model.pt", "flowllm_lm"), ("rfm/lm/model.pt", "flowllm_rfm"), ("rfm/simple/model.pt", "flowllm_rfm")):
        ckpt = torch.load(work / "results/generation" / path, weights_only=True)
        assert ckpt["model"]["name"] == name
        model, _ = kit.load_checkpoint(work / "results/generation" / path)
        assert sum(p.numel() for p in model.parameters()) > 0
    rfm = json.loads((work / "results/generation/rfm/lm/summary.json").read_text())
    simple = json.loads((work / "results/generation/rfm/simple/summary.json").read_text())
    # the same targets, network and epochs for both bases
    assert rfm["n_targets"] == simple["n_targets"] and rfm["n_parameters"] == simple["n_parameters"]
    assert rfm["epochs_run"] == simple["epochs_run"]
