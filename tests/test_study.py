"""The study's pieces: collection hull, experiment groups and training sizes, schedules, y>0 rows,
and the study config's DAG (CI does not run the study itself; it checks that it validates and resolves)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from matfuse.config import load_config
from matfuse.evaluate import metrics_rows, parse_prediction_path
from matfuse.hull import collection_hull, compare
from matfuse.kit import lr_schedule
from matfuse.train import training_subset
from matfuse.workflow import Plan, size_of, size_segment

ROOT = Path(__file__).resolve().parents[1]
MP = ROOT.parent / "shared" / "data" / "mp_mtcgcnn" / "mp_mtcgcnn_33064.csv.gz"
STUDY = ROOT / "config" / "study.yaml"


@pytest.fixture(scope="module")
def mp_rows() -> pd.DataFrame:
    return pd.read_csv(MP, usecols=["material_id", "formula", "formation_energy_per_atom", "nsites"])


def _inside(formula: str, system: set[str]) -> bool:
    import re

    return set(re.findall(r"[A-Z][a-z]?", formula)) <= system


# --------------------------------------------------------------------------- hull
def test_collection_hull_equals_one_pymatgen_phase_diagram_per_system(mp_rows):
    """Li-Fe-O rows of the real collection: our per-system hull = pymatgen's PhaseDiagram of the same entries."""
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    rows = mp_rows[mp_rows["formula"].map(lambda f: _inside(f, {"Li", "Fe", "O"}))].reset_index(drop=True)
    assert len(rows) > 50
    ours = collection_hull(rows["material_id"].tolist(), rows["formula"].tolist(), rows["formation_energy_per_atom"].tolist())
    entries = [PDEntry(Composition(f), e * Composition(f).num_atoms) for f, e in zip(rows["formula"], rows["formation_energy_per_atom"])]
    refs = [PDEntry(Composition(el), 0.0) for el in ("Li", "Fe", "O")]
    pd_ = PhaseDiagram(entries + refs)
    direct = np.array([max(0.0, pd_.get_e_above_hull(e, allow_negative=False)) for e in entries])
    np.testing.assert_allclose(ours["e_above_hull"].to_numpy(), direct, atol=1e-9)
    assert (ours["e_above_hull"] >= 0).all() and (ours["e_above_hull"] < 1e-6).sum() >= 3


def test_hull_rows_without_energy_or_formula_get_a_reason(mp_rows):
    rows = mp_rows[mp_rows["formula"].map(lambda f: _inside(f, {"Na", "Cl"}))].head(5)
    ids = rows["material_id"].tolist() + ["bad-energy", "bad-formula"]
    formulas = rows["formula"].tolist() + ["NaCl", "Na(Cl"]
    energies = rows["formation_energy_per_atom"].tolist() + ["abc", -1.0]
    out = collection_hull(ids, formulas, energies)
    assert out["e_above_hull"].iloc[:5].notna().all()
    bad = out.set_index("material_id").loc[["bad-energy", "bad-formula"]]
    assert bad["e_above_hull"].isna().all()
    assert "no formation energy" in bad.loc["bad-energy", "reason"]
    assert "not readable" in bad.loc["bad-formula", "reason"]


def test_hull_compare_counts_agreement():
    ours = pd.DataFrame({"material_id": ["a", "b", "c", "d"], "e_above_hull": [0.0, 0.10, 0.02, np.nan]})
    ref = pd.DataFrame({"material_id": ["a", "b", "c", "e"], "e_above_hull": [0.0, 0.0, 0.05, 0.3]})
    c = compare(ours, ref)
    assert c["n_compared"] == 3 and c["n_reference"] == 4
    assert c["mae"] == pytest.approx((0 + 0.10 + 0.03) / 3)
    assert c["share_within"] == pytest.approx(2 / 3)
    assert (c["on_hull_both"], c["on_hull_ours_only"], c["on_hull_ref_only"]) == (1, 0, 1)


def test_hull_config_needs_a_table_source_and_a_known_energy():
    cfg = load_config(STUDY).model_dump()
    bad = {**cfg, "datasets": {"mp20": {**cfg["datasets"]["mp20"], "hull": {"energy": "nope"}}}}
    with pytest.raises(ValueError, match="hull.energy 'nope'"):
        load_config(bad)
    assert "e_above_hull" in load_config(STUDY).datasets["mp20"].target_names()


# --------------------------------------------------------------------------- experiment groups, sizes
def test_study_experiments_are_the_configured_groups():
    plan = Plan(load_config(STUDY))
    exps = plan.experiments()
    key = lambda e: (e["target"], e["model"], e["variant"], e["size"], e["seed"])  # noqa: E731
    keys = {key(e) for e in exps}
    assert len(keys) == len(exps)  # no duplicates across groups
    for model in ["cgcnn", "text", "matmmfuse_frozen", "matmmfuse_tokens", "crysmmnet"]:
        for target in ["formation_energy_per_atom", "band_gap"]:
            assert {e["seed"] for e in exps if e["model"] == model and e["target"] == target and not e["size"]
                    and e["variant"] in ("all", "none")} == {0, 1, 2}
    assert {e["seed"] for e in exps if e["target"] == "e_above_hull"} == {0}
    sized = {(e["model"], e["size"]) for e in exps if e["size"]}
    assert sized == {(m, s) for m in ("cgcnn", "matmmfuse_frozen") for s in ("n1000-", "n4000-")} | {
        ("matmmfuse", "n1000-"), ("text_finetune", "n1000-")}
    assert {e["variant"] for e in exps if e["model"] == "matmmfuse_frozen"} == {"all", "key", "single"}
    files = plan.prediction_files()
    assert "results/predictions/mp20/formation_energy_per_atom/cgcnn/none/none/n1000-seed2.parquet" in files
    assert "results/predictions/mp20/band_gap/cgcnn/none/none/seed0.parquet" in files
    manifest = plan.experiment_manifest()
    assert {r["n_train"] for r in manifest["experiments"]} == {None, 1000, 4000}
    assert "results/study/results.md" in plan.final_targets()
    assert "results/hull/mp20/check.json" in plan.final_targets()


def test_size_segments_round_trip_through_prediction_paths():
    assert size_segment("all") == "" and size_segment(None) == "" and size_of("") is None
    assert size_of(size_segment(4000)) == 4000
    keys = parse_prediction_path("results/predictions/mp20/band_gap/cgcnn/none/none/n4000-seed1.parquet")
    assert keys["n_train"] == 4000 and keys["seed"] == 1
    assert parse_prediction_path("results/predictions/mp20/band_gap/cgcnn/none/none/seed1.parquet")["n_train"] is None


def test_training_subsets_are_nested_and_do_not_depend_on_order():
    ids = [f"mp-{i}" for i in range(500)]
    small, big = training_subset(ids, 50), training_subset(ids, 200)
    assert set(small) <= set(big) and len(set(big)) == 200
    assert training_subset(list(reversed(ids)), 50) == small
    with pytest.raises(ValueError, match="asks for 501"):
        training_subset(ids, 501)


def test_study_dag_resolves():
    """The study config validates and its whole DAG resolves (a dry run; CI never runs the study)."""
    res = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-n", "--nolock", "--quiet", "rules", "--configfile", str(STUDY)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    counts = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts.get("train", 0) + counts.get("predict", 0) > 0 or "Nothing to be done" in res.stdout, res.stdout[-2000:]


# --------------------------------------------------------------------------- schedules
def _lrs(kind: str, steps: int = 100, warmup: float = 0.1) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-2)
    step = lr_schedule(opt, kind, steps, warmup)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if step is not None:
            step()
    return out


def test_lr_schedules_warm_up_and_decay():
    assert lr_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), "constant", 10) is None
    cos = _lrs("cosine", 100, 0.1)
    assert cos[0] == pytest.approx(1e-3) and cos[9] == pytest.approx(1e-2)  # linear warm-up over 10 steps
    assert max(cos) == pytest.approx(1e-2) and cos[-1] < 1e-4
    one = _lrs("onecycle", 100, 0.3)
    assert int(np.argmax(one)) in (29, 30) and max(one) == pytest.approx(1e-2, rel=1e-3)
    assert one[0] < 1e-3 and one[-1] < 1e-5
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        lr_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), "linear", 10)


# --------------------------------------------------------------------------- y > 0 rows
def test_positive_only_rows_score_the_entries_with_a_positive_target():
    y = np.array([0.0, 0.0, 1.2, 2.5, 0.0, 3.1])
    pred = pd.DataFrame({"split": ["test"] * 6, "y_true": y, "y_pred": y + np.array([0.1, 0.2, 0.3, -0.3, 0.0, 0.6])})
    keys = dict(dataset="mp", train_dataset="mp", target="band_gap", model="cgcnn", text_encoder="none",
                text_variant="none", n_train=None, seed=0, zero_shot=False)
    rows = {r["subset"]: r for r in metrics_rows(pred, keys, positive_only=True)}
    assert rows["all"]["n"] == 6 and rows["y>0"]["n"] == 3
    assert rows["y>0"]["mae"] == pytest.approx((0.3 + 0.3 + 0.6) / 3)
    assert [r["subset"] for r in metrics_rows(pred, keys)] == ["all"]
