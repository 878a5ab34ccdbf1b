"""Workflow state across config changes, fail-fast checks and hard-killed runs (issue 11: 4, 12, 13, 14).

One small real run (cgcnn only, 20 MP entries + an 8-entry zero-shot set, 1 epoch) is shared by
the tests of config changes (module fixture); each test that runs jobs works on a copy of it
(mtimes and Snakemake metadata kept), the others use dry-runs (`-n`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from conftest import REPO, shared_dir

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
slow = pytest.mark.slow
# Dry-runs asking "what would this config change re-run" leave out the `code` trigger: edits of
# workflow/scripts/ in a shared working tree would otherwise show up as extra jobs. What these
# tests check is the params / input / mtime logic.
NO_CODE_TRIGGER = ["--rerun-triggers", "mtime", "params", "input", "software-env"]


def _run(work: Path, *args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args],
        cwd=work,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _ok(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def base_config() -> dict:
    data = shared_dir() / "data"
    return {
        "datasets": {
            "mp": {
                "source": {
                    "kind": "table",
                    "path": str(data / "mp_mtcgcnn/mp_mtcgcnn_33064.csv.gz"),
                    "targets": {"formation_energy_per_atom": "formation_energy_per_atom", "band_gap": "band_gap"},
                },
                "max_sites": 8,
                "subset": 20,
                "subset_seed": 1,
            },
            "perovskites": {
                "source": {
                    "kind": "table",
                    "path": str(data / "perov_5_cdvae/perov_5.zip"),
                    "members": ["perov_5/test.csv"],
                    "id_prefix": "perov5-",
                    "targets": {"formation_energy_per_atom": "heat_all"},
                    "per_atom": ["formation_energy_per_atom"],
                },
                "subset": 8,
                "train": False,
            },
        },
        "text": {"n_shards": 1},
        "training": {
            "models": ["cgcnn"],
            "targets": ["formation_energy_per_atom"],
            "seeds": [0],
            "epochs": 1,
            "batch_size": 16,
            "patience": 1,
            "device": "cpu",
        },
        "evaluation": {"zero_shot": {"perovskites": "mp"}},
    }


def _write(work: Path, cfg: dict, name: str = "config.yaml") -> str:
    # sort_keys=False: the order of mappings is kept, as a user editing the file would keep it
    (work / name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return name


def planned_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, first output file) of every job a dry-run lists."""
    jobs, rule = [], None
    for line in output.splitlines():
        m = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("output:"):
            jobs.append((rule, line.split(":", 1)[1].split(",")[0].strip()))
            rule = None
    return jobs


def dry_run(work: Path, cfg: dict, *targets: str) -> list[tuple[str, str]]:
    name = _write(work, cfg, "changed.yaml")
    out = _ok(_run(work, *(targets or ("results/metrics.csv",)), "--cores", "2", "-n", *NO_CODE_TRIGGER, "--configfile", name))
    return planned_jobs(out)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("state")
    name = _write(work, base_config())
    _ok(_run(work, "results/metrics.csv", "--cores", "2", "--configfile", name))
    return work


def _copy(base: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "work"
    shutil.copytree(base, dst, symlinks=True)  # copy2: mtimes kept; .snakemake/metadata comes along
    return dst


# --------------------------------------------------------------------------- 4: stale metrics.csv
@slow
def test_metrics_follow_a_renamed_dataset(base_run, tmp_path):
    """Issue 11.4: renaming the training dataset used to leave the old metrics ("Nothing to be done")."""
    work = _copy(base_run, tmp_path)
    cfg = base_config()
    cfg["datasets"] = {("mp2" if k == "mp" else k): v for k, v in cfg["datasets"].items()}
    cfg["evaluation"]["zero_shot"] = {}  # and the zero-shot set dropped: its rows must go too
    name = _write(work, cfg)
    _ok(_run(work, "results/metrics.csv", "--cores", "2", "--configfile", name))
    m = pd.read_csv(work / "results/metrics.csv")
    assert set(m.train_dataset) == {"mp2"} and set(m.dataset) == {"mp2"}, m
    assert sorted(m.split) == ["test", "train", "val"]
    manifest = json.loads((work / "results/experiments.json").read_text())
    assert [(e["dataset"], e["kind"]) for e in manifest["experiments"]] == [("mp2", "trained")]
    assert (work / "results/plots/parity/mp2/formation_energy_per_atom/cgcnn.png").exists()
    # and the new state is stable
    out = _ok(_run(work, "results/metrics.csv", "--cores", "2", "-n", *NO_CODE_TRIGGER, "--configfile", name))
    assert "Nothing to be done" in out


_MODEL = "results/models/{ds}/{t}/cgcnn/none/none/seed{s}/model.pt"


@slow
@pytest.mark.parametrize(
    "change, needed",
    [
        ("add_target", ("train", _MODEL.format(ds="mp", t="band_gap", s=0))),
        ("remove_zero_shot", None),
        ("add_dataset", ("ingest", "results/data/perov_extra/entries.parquet")),
        ("rename_dataset", ("train", _MODEL.format(ds="mp2", t="formation_energy_per_atom", s=0))),
    ],
)
def test_any_change_of_the_experiment_set_rebuilds_metrics(base_run, change, needed):
    """Issue 11.4: every change of the experiment set schedules the metrics job and what it needs
    (adding a target or renaming the dataset used to give "Nothing to be done")."""
    cfg = base_config()
    if change == "add_target":
        cfg["training"]["targets"].append("band_gap")
    elif change == "remove_zero_shot":
        cfg["evaluation"]["zero_shot"] = {}
    elif change == "add_dataset":
        cfg["datasets"]["perov_extra"] = copy.deepcopy(cfg["datasets"]["perovskites"])
        cfg["evaluation"]["zero_shot"]["perov_extra"] = "mp"
    elif change == "rename_dataset":
        cfg["datasets"] = {("mp2" if k == "mp" else k): v for k, v in cfg["datasets"].items()}
        cfg["evaluation"]["zero_shot"] = {"perovskites": "mp2"}
    jobs = dry_run(base_run, cfg)
    assert ("metrics", "results/metrics.csv") in jobs, jobs
    if needed:
        assert needed in jobs, jobs
    assert ("experiments", "results/experiments.json") in jobs, jobs


@slow
def test_metrics_rows_are_the_config_experiments(base_run):
    """Issue 11.4: the manifest lists exactly the config's experiments, and metrics.csv holds nothing else."""
    manifest = json.loads((base_run / "results/experiments.json").read_text())
    key = dict(train_dataset="mp", target="formation_energy_per_atom", model="cgcnn",
               text_encoder="none", text_variant="none", fold=None, n_train=None, seed=0)
    assert manifest["experiments"] == [
        {"dataset": "mp", **key, "kind": "trained"},
        {"dataset": "perovskites", **key, "kind": "zeroshot"},
    ]
    m = pd.read_csv(base_run / "results/metrics.csv")
    assert set(zip(m.dataset, m.split)) == {("mp", "train"), ("mp", "val"), ("mp", "test"), ("perovskites", "zeroshot")}
    assert len(m) == 4


# --------------------------------------------------------------------------- 13: params per job
@slow
def test_adding_a_model_runs_only_its_jobs(base_run):
    """Issue 11.13: adding a model used to re-train every model (the whole `training` dict was params)."""
    cfg = base_config()
    cfg["training"]["models"].append("text")
    jobs = dry_run(base_run, cfg)
    rules = {r for r, _ in jobs}
    assert rules <= {"describe", "merge_texts", "embed", "train", "predict", "predict_zeroshot", "experiments", "metrics"}, jobs
    assert {"train", "predict", "predict_zeroshot", "metrics"} <= rules
    for rule, out in jobs:
        if rule in {"train", "predict", "predict_zeroshot"}:
            assert "/text/minilm/all/" in out, (rule, out)


@slow
def test_adding_a_seed_or_target_runs_only_the_new_experiments(base_run):
    cfg = base_config()
    cfg["training"]["seeds"].append(1)
    cfg["training"]["targets"].append("band_gap")
    jobs = dry_run(base_run, cfg)
    assert {r for r, _ in jobs} == {"train", "predict", "predict_zeroshot", "experiments", "metrics"}, jobs
    trained = sorted(out for r, out in jobs if r == "train")
    assert trained == sorted(
        f"results/models/mp/{t}/cgcnn/none/none/seed{s}/model.pt"
        for t, s in [("formation_energy_per_atom", 1), ("band_gap", 0), ("band_gap", 1)]
    )
    # band gap has no zero-shot set (the zero-shot perovskites lack it, which is no error, unlike a
    # training dataset lacking it): only the new formation-energy seed
    assert [out for r, out in jobs if r == "predict_zeroshot"] == [
        "results/predictions/zeroshot/mp/formation_energy_per_atom/cgcnn/none/none/seed1.parquet"
    ]


@slow
def test_hyper_parameters_still_retrain(base_run):
    cfg = base_config()
    cfg["training"]["epochs"] = 2
    jobs = dry_run(base_run, cfg)
    assert ("train", "results/models/mp/formation_energy_per_atom/cgcnn/none/none/seed0/model.pt") in jobs
    assert not {r for r, _ in jobs} & {"ingest", "graphs", "split"}


@slow
def test_training_on_an_eval_only_set_does_not_reingest_it(base_run):
    """`train` (trained on, or evaluation-only) does not change a dataset's entry table."""
    cfg = base_config()
    cfg["datasets"]["perovskites"]["train"] = True
    cfg["evaluation"]["zero_shot"] = {}
    jobs = dry_run(base_run, cfg)
    assert {r for r, _ in jobs} == {"split", "train", "predict", "experiments", "metrics"}, jobs
    assert all("perovskites" in out for r, out in jobs if r in {"split", "train", "predict"}), jobs


@slow
def test_model_config_records_its_own_experiment(base_run):
    rec = json.loads((base_run / "results/models/mp/formation_energy_per_atom/cgcnn/none/none/seed0/config.json").read_text())
    tr = rec["training"]
    assert (tr["models"], tr["targets"], tr["datasets"], tr["seeds"]) == (["cgcnn"], ["formation_energy_per_atom"], ["mp"], [0])
    assert (tr["encoders"], tr["text_variants"]) == ([], [])
    assert tr["epochs"] == 1 and tr["batch_size"] == 16


# --------------------------------------------------------------------------- 12: fail fast
def _fails_at_start(tmp_path: Path, cfg: dict, env: dict | None = None) -> str:
    name = _write(tmp_path, cfg)
    proc = _run(tmp_path, "results/metrics.csv", "--cores", "1", "-n", "--configfile", name, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "Job stats" not in out and not (tmp_path / "results").exists()
    return out


def test_training_target_missing_from_a_training_dataset_fails_at_start(tmp_path):
    """Issue 11.12: `efermi` in training.targets but not in the table's `targets:` failed only after ingest."""
    cfg = base_config()
    cfg["training"]["targets"].append("efermi")
    out = _fails_at_start(tmp_path, cfg)
    assert "training target 'efermi'" in out and "training dataset 'mp'" in out
    assert "datasets.mp.source.targets" in out


def test_target_check_for_mp_and_jarvis_sources():
    """The check lives in the typed config: load_config refuses what Snakemake would refuse."""
    from pydantic import ValidationError

    from matfuse.config import load_config, missing_training_targets

    raw = {
        "datasets": {
            "mp": {"source": {"kind": "mp", "targets": ["band_gap"]}},
            "jv": {"source": {"kind": "jarvis"}},  # maps formation energy, band gap, e_above_hull
            "ev": {"source": {"kind": "jarvis", "targets": {}}, "train": False},
        },
        "training": {"targets": ["band_gap", "e_above_hull"]},
    }
    with pytest.raises(ValidationError, match=r"'e_above_hull' is not provided by training dataset 'mp' \(mp source"):
        load_config(raw)
    cfg = load_config({**raw, "training": {**raw["training"], "datasets": ["jv"]}})
    assert missing_training_targets(cfg) == []
    cfg.training.datasets = None
    assert missing_training_targets(cfg) == [("mp", "e_above_hull")]


def _text_config(*models: str) -> dict:
    cfg = base_config()
    cfg["embeddings"] = {f"enc{i}": {"model": m} for i, m in enumerate(models)}
    cfg["training"]["models"] = ["text"]
    cfg["training"]["encoders"] = list(cfg["embeddings"])
    return cfg


def _empty_hub(tmp_path: Path) -> dict:
    hub = tmp_path / "hf"
    hub.mkdir(exist_ok=True)
    return {"HF_HOME": str(hub), "HF_HUB_CACHE": str(hub / "hub"), "HF_HUB_OFFLINE": "1"}


def test_uncached_hub_encoder_fails_at_start(tmp_path):
    """Issue 11.12: a hub encoder missing from the local cache failed only after ingest and robocrys."""
    out = _fails_at_start(tmp_path, _text_config("allenai/scibert_scivocab_uncased"), env=_empty_hub(tmp_path))
    assert "embeddings.enc0" in out and "allenai/scibert_scivocab_uncased" in out
    assert "huggingface-cli download allenai/scibert_scivocab_uncased" in out


def test_missing_local_encoder_folder_fails_at_start(tmp_path):
    out = _fails_at_start(tmp_path, _text_config(str(tmp_path / "no/such/checkpoint")))
    assert "does not exist" in out and "no/such/checkpoint" in out


def test_available_encoders_pass(tmp_path):
    from matfuse.embed.encoder import packaged_path

    env = _empty_hub(tmp_path)
    # a cached hub snapshot (the layout huggingface_hub writes): refs/main -> snapshots/<commit>/
    repo = Path(env["HF_HUB_CACHE"]) / "models--someorg--somemodel"
    (repo / "snapshots/abc123").mkdir(parents=True)
    (repo / "snapshots/abc123/config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("abc123")
    name = _write(tmp_path, _text_config("packaged:minilm", str(packaged_path("minilm")), "someorg/somemodel"))
    out = _ok(_run(tmp_path, "results/metrics.csv", "--cores", "1", "-n", "--configfile", name, env=env, timeout=300))
    assert "embeddings/mp/enc2/all-mean.parquet" in out


def test_check_encoder_available_resolves_without_loading(tmp_path, monkeypatch):
    from matfuse.embed.encoder import EncoderUnavailableError, check_encoder_available, packaged_path

    assert check_encoder_available("packaged:minilm") == "packaged"
    assert check_encoder_available(str(packaged_path("minilm"))) == "local"
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        check_encoder_available(str(tmp_path / "missing"))
    (tmp_path / "notackpt").mkdir()
    with pytest.raises(EncoderUnavailableError, match="no config.json"):
        check_encoder_available(str(tmp_path / "notackpt"))
    with pytest.raises(EncoderUnavailableError, match="packaged:nope"):
        check_encoder_available("packaged:nope")

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderUnavailableError, match="huggingface-cli download org/model"):
        check_encoder_available("org/model")
    with pytest.raises(EncoderUnavailableError, match="HF_HUB_OFFLINE=0"):
        check_encoder_available("org/model", allow_download=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert check_encoder_available("org/model", allow_download=True) == "download"


# --------------------------------------------------------------------------- 14: kill -9
def _wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _kill_9_during(work: Path, target: str, configfile: str, jobs_too: bool) -> None:
    """Start snakemake on `target`, SIGKILL it once its job runs (and the job too, if `jobs_too`).

    Without `jobs_too` (plain `kill -9 <snakemake pid>`) the orphaned job runs on: wait for it.
    """
    def job_started() -> bool:
        for proc in psutil.Process(sm.pid).children(recursive=True):
            try:
                if any(".snakemake/scripts/" in arg for arg in proc.cmdline()):
                    return True
            except psutil.Error:  # gone meanwhile
                pass
        return False

    with open(work / "killed.log", "a") as log:
        sm = subprocess.Popen([SNAKEMAKE, "-s", str(REPO / "Snakefile"), target, "--cores", "1",
                               "--configfile", configfile], cwd=work, stdout=log, stderr=log)
        jobs: list[psutil.Process] = []
        try:
            _wait(job_started, 120, f"the job of {target} to start")
            jobs = psutil.Process(sm.pid).children(recursive=True)
        finally:
            sm.send_signal(signal.SIGKILL)
            sm.wait()
            for job in jobs if jobs_too else []:
                try:
                    job.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
        psutil.wait_procs(jobs, timeout=180)


@slow
def test_kill_9_needs_unlock_as_the_readme_says(base_run, tmp_path):
    """Issue 11.14: after `kill -9` of snakemake the next run stops on the stale lock; the README says
    what the message looks like and what to do (--unlock, rerun, --rerun-incomplete), as observed here."""
    readme = (REPO / "README.md").read_text()
    for phrase in ("Directory cannot be locked", "It can be removed with the --unlock argument",
                   "snakemake --unlock", "IncompleteFilesException", "--rerun-incomplete", "Finished outputs are kept"):
        assert phrase in readme, phrase

    work = _copy(base_run, tmp_path)
    name = "config.yaml"
    target = "results/graphs/perovskites/graphs.parquet"
    graphs = work / target
    for f in graphs.parent.iterdir():
        f.unlink()
    finished = [work / "results/data/perovskites/entries.parquet", work / "results/metrics.csv"]
    mtimes = [f.stat().st_mtime_ns for f in finished]

    def run(*extra: str) -> tuple[int, str]:
        proc = _run(work, target, "--cores", "1", *extra, "--configfile", name)
        return proc.returncode, proc.stdout + proc.stderr

    def locked(rc: int, text: str) -> bool:
        return rc != 0 and "LockException" in text and "Directory cannot be locked" in text and "--unlock" in text

    # 1. snakemake and its job killed (power loss, OOM killer, a killed process group): the lock
    # stays; the job's output was never written (outputs are atomic)
    _kill_9_during(work, target, name, jobs_too=True)
    assert not graphs.exists()
    rc, text = run()
    assert locked(rc, text), text[-3000:]
    assert "Unlocked working directory" in _ok(_run(work, "--unlock", "--configfile", name))

    # 2. `kill -9 <snakemake pid>` only. The run starts without --rerun-incomplete: the incomplete
    # but never-written outputs of run 1 are simply made again. The orphaned job of this run
    # finishes and writes its output after snakemake died.
    _kill_9_during(work, target, name, jobs_too=False)
    assert graphs.exists()
    rc, text = run()
    assert rc != 0 and "IncompleteFilesException" in text and "--rerun-incomplete" in text, text[-3000:]
    assert target in text
    rc, text = run("--rerun-incomplete")
    assert locked(rc, text), text[-3000:]
    assert "Unlocked working directory" in _ok(_run(work, "--unlock", "--configfile", name))
    rc, text = run("--rerun-incomplete")
    assert rc == 0 and "Finished jobid" in text, text[-3000:]

    # finished outputs were kept throughout
    assert [f.stat().st_mtime_ns for f in finished] == mtimes
