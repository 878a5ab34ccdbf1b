"""Cluster execution: the SLURM profile on a REAL single-node SLURM started on this machine.

``tests/slurm_cluster.py`` starts munged + slurmctld + slurmd (private config, ports and munge
socket under a scratch folder; root needed), then Snakemake runs with
``--profile profiles/slurm``:

* a toy 3-rule workflow (fast smoke test): every non-local job must go through ``sbatch`` (its
  output records $SLURM_JOB_ID, which must appear COMPLETED in SLURM's job-completion log), the
  declared threads / mem_mb / runtime must reach SLURM, a rule with ``gpu=1`` must get a GPU
  (``--gpus``; the cluster declares one fake GPU) in the partition named by
  MATFUSE_SLURM_GPU_PARTITION, and a ``localrule`` must run outside SLURM;
* the real workflow on ``config/tiny.yaml`` up to ``results/metrics.csv``.

Skipped when not root or SLURM is not installed -- except under CI (env CI set), where a missing
SLURM fails (CI runs scripts/install-slurm.sh first).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, shared_dir
from slurm_cluster import SlurmCluster, require_slurm, slurm_cluster

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE = REPO / "profiles" / "slurm"
# Poll SLURM every few seconds instead of the profile's 40 s: the toy jobs take a second.
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "2"]
# Settings a developer may have exported must not change what the tests check.
SITE_VARS = ("MATFUSE_SLURM_PARTITION", "MATFUSE_SLURM_GPU_PARTITION", "MATFUSE_SLURM_ACCOUNT",
             "MATFUSE_SLURM_QOS", "SNAKEMAKE_SLURM_PARTITIONS", "SNAKEMAKE_PROFILE")

TOY_SNAKEFILE = r'''
# Toy workflow for the SLURM tests: two parallel CPU jobs, one GPU-capable "train" job, one local.
GPU = int(config.get("gpu", 0))

rule all:
    input: "report.txt"

rule part:
    output: "parts/{i}.txt"
    threads: 1
    resources: mem_mb=300, runtime=3, gpu=0
    shell: 'echo "${{SLURM_JOB_ID:-none}} ${{SLURM_JOB_PARTITION:-none}}" > {output}'

rule train:
    input: expand("parts/{i}.txt", i=[1, 2])
    output: "model.txt"
    threads: 2
    resources: mem_mb=500, runtime=7, gpu=GPU
    shell:
        'echo "${{SLURM_JOB_ID:-none}} ${{SLURM_JOB_PARTITION:-none}} '
        '${{CUDA_VISIBLE_DEVICES:-none}} ${{SLURM_CPUS_PER_TASK:-none}}" > {output}'

rule report:
    input: "model.txt"
    output: "report.txt"
    shell: 'echo "${{SLURM_JOB_ID:-none}}" > {output}'

localrules: all, report
'''


def _clean_env(base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in SITE_VARS}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_snakemake(args: list[str], cwd: Path, env: dict[str, str], timeout: float):
    """Run Snakemake; returns (CompletedProcess, wall seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run([SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.monotonic() - t0


def job_headers(log: str) -> tuple[list[str], list[str]]:
    """Rule names of the jobs Snakemake started: (submitted 'rule X:', local 'localrule X:')."""
    remote = re.findall(r"^rule (\w+):$", log, flags=re.M)
    local = re.findall(r"^localrule (\w+):$", log, flags=re.M)
    return remote, local


def our_jobs(cluster: SlurmCluster) -> list[dict[str, str]]:
    """Completed-job records of jobs submitted by the profile (named matfuse_<run uuid>)."""
    return [r for r in cluster.completed_jobs() if r.get("Name", "").startswith("matfuse_")]


def slurm_logs(work: Path) -> list[Path]:
    return sorted((work / ".snakemake" / "slurm_logs").rglob("*.log"))


@pytest.fixture(scope="module")
def cluster():
    require_slurm()
    with slurm_cluster(fake_gpus=1) as c:
        yield c


# --------------------------------------------------------------------------------------------
# Profile only (no cluster needed): site settings reach the right rules.
# --------------------------------------------------------------------------------------------
def test_profile_maps_site_settings_to_rules(tmp_path):
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    env = _clean_env(os.environ)
    env.update(MATFUSE_SLURM_PARTITION="cpuq", MATFUSE_SLURM_GPU_PARTITION="gpuq",
               MATFUSE_SLURM_ACCOUNT="proj42")
    proc, _ = run_snakemake(["--profile", str(PROFILE), "-n", "--verbose", "--config", "gpu=1"],
                            tmp_path, env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", out)
    res = {}
    for b in blocks:
        m = re.match(r"(?:local)?rule (\w+):", b)
        r = re.search(r"resources: (.*)", b)
        if m and r:
            res[m.group(1)] = dict(kv.split("=", 1) for kv in r.group(1).split(", ") if "=" in kv)
    assert res["train"]["slurm_partition"] == "gpuq" and res["train"]["gpu"] == "1"
    assert res["part"]["slurm_partition"] == "cpuq" and res["part"]["gpu"] == "0"
    assert res["part"]["mem_mb"] == "300" and res["part"]["runtime"] == "3"
    assert {r["slurm_account"] for r in res.values()} == {"proj42"}

    # nothing exported -> no partition/account: the plugin uses the cluster's defaults
    proc, _ = run_snakemake(["--profile", str(PROFILE), "-n", "--verbose"], tmp_path,
                            _clean_env(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "slurm_partition" not in proc.stdout + proc.stderr
    assert "slurm_account" not in proc.stdout + proc.stderr


def test_profile_gpu_rules_cover_every_rule_with_a_gpu_resource(monkeypatch):
    """Rules that declare `gpu=` must be routed to MATFUSE_SLURM_GPU_PARTITION by the profile."""
    import yte

    declared = set()
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            m = re.match(r"\s*rule (\w+):", line)
            if m:
                rule = m.group(1)
            elif rule and re.match(r"\s*gpu\s*=", line):
                declared.add(rule)
    assert {"train", "embed"} <= declared  # the parser sees the known GPU rules

    monkeypatch.setenv("MATFUSE_SLURM_GPU_PARTITION", "gpuq")
    with open(PROFILE / "config.yaml") as fh:
        prof = yte.process_yaml(fh, require_use_yte=True)
    routed = {r for r, res in prof["set-resources"].items() if res.get("slurm_partition") == "gpuq"}
    assert declared <= routed, f"add {sorted(declared - routed)} to GPU_RULES in profiles/slurm"
    assert prof["slurm-status-command"] == "squeue" and prof["executor"] == "slurm"


# --------------------------------------------------------------------------------------------
# Real cluster
# --------------------------------------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.slow
def test_toy_workflow_runs_through_sbatch(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    env = cluster.env(_clean_env(os.environ))
    env["MATFUSE_SLURM_GPU_PARTITION"] = "gpu"  # the fake-GPU partition of the test cluster
    before = {r["JobId"] for r in our_jobs(cluster)}
    proc, wall = run_snakemake(["--profile", str(PROFILE), *FAST_POLL, "--config", "gpu=1"],
                               tmp_path, env, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{log[-6000:]}\n{cluster.logs_tail()}"

    remote, local = job_headers(log)
    assert sorted(remote) == ["part", "part", "train"]
    assert sorted(local) == ["all", "report"]
    jobs = {r["JobId"]: r for r in our_jobs(cluster) if r["JobId"] not in before}
    assert len(jobs) == 3 and all(r["JobState"] == "COMPLETED" for r in jobs.values()), jobs
    assert {r["WorkDir"] for r in jobs.values()} == {str(tmp_path)}

    # each cluster job really ran inside its SLURM allocation
    part_ids = []
    for i in (1, 2):
        job_id, partition = (tmp_path / f"parts/{i}.txt").read_text().split()
        assert job_id in jobs and partition == "debug"  # the cluster's default partition
        part_ids.append(job_id)
    job_id, partition, cuda, cpus = (tmp_path / "model.txt").read_text().split()
    assert job_id in jobs and job_id not in part_ids
    assert partition == "gpu" and cuda != "none"  # gpu=1 -> --gpus=1 in the GPU partition
    assert cpus == "2"  # threads -> --cpus-per-task
    assert (tmp_path / "report.txt").read_text().strip() == "none"  # localrule: not in SLURM

    # declared resources reached SLURM: threads, mem_mb, runtime (minutes)
    train = jobs[job_id]
    assert "cpu=2" in train["Tres"] and "mem=500M" in train["Tres"]
    assert train["TimeLimit"] in ("7", "00:07:00"), train["TimeLimit"]
    for jid in part_ids:
        assert "cpu=1" in jobs[jid]["Tres"] and "mem=300M" in jobs[jid]["Tres"]
        assert jobs[jid]["TimeLimit"] in ("3", "00:03:00")

    # one kept SLURM log per submitted job, named by rule and SLURM job id
    logs = slurm_logs(tmp_path)
    assert sorted(p.stem for p in logs) == sorted(jobs)
    assert {p.relative_to(tmp_path / ".snakemake/slurm_logs").parts[0] for p in logs} == {
        "rule_part", "rule_train"}
    print(f"\ntoy workflow under SLURM: {len(jobs)} sbatch jobs + {len(local)} local, "
          f"wall {wall:.1f} s")


# Override (comma-separated) to try an earlier stage, e.g. results/text/mp/texts.parquet.
REAL_TARGETS = os.environ.get("MATFUSE_SLURM_TARGETS", "results/metrics.csv").split(",")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("target", REAL_TARGETS)
def test_real_workflow_tiny_config_under_slurm(cluster, tmp_path, target):
    """The real workflow (config/tiny.yaml) through the SLURM profile, up to ``target``."""
    snakefile, tiny = REPO / "Snakefile", REPO / "config" / "tiny.yaml"
    assert snakefile.is_file() and tiny.is_file(), "the real workflow is missing"
    cfg = yaml.safe_load(tiny.read_text())
    for ds in cfg["datasets"].values():  # data paths are relative to the checkout
        src = ds.get("source", {})
        path = src.get("path")
        if path and not os.path.isabs(path):
            rel = Path(path)
            if rel.parts[:2] == ("..", "shared"):
                src["path"] = str(shared_dir().joinpath(*rel.parts[2:]))
            else:
                src["path"] = str((REPO / rel).resolve())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = cluster.env(_clean_env(os.environ))
    env.setdefault("MATFUSE_SHARED", str(shared_dir()))
    before = {r["JobId"] for r in our_jobs(cluster)}
    # target first: --configfile takes several values and would swallow it
    proc, wall = run_snakemake([target, "-s", str(snakefile), "--profile", str(PROFILE),
                                *FAST_POLL, "--configfile", "config.yaml"],
                               tmp_path, env, timeout=1800)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{log[-8000:]}\n{cluster.logs_tail()}"

    out = tmp_path / target
    assert out.is_file() and out.stat().st_size > 0
    if target.endswith("metrics.csv"):
        m = pd.read_csv(out)
        assert len(m) > 0 and {"model", "target"} <= set(m.columns)

    remote, local = job_headers(log)
    jobs = {r["JobId"]: r for r in our_jobs(cluster) if r["JobId"] not in before}
    # every non-local job went through sbatch and completed; heavy stages are not local
    assert len(remote) > 0 and len(jobs) == len(remote), (len(jobs), remote)
    assert all(r["JobState"] == "COMPLETED" for r in jobs.values())
    heavy = {"ingest", "train", "predict"} if target.endswith("metrics.csv") else {"ingest"}
    assert heavy <= set(remote) and not heavy & set(local), (remote, local)
    assert len(slurm_logs(tmp_path)) == len(jobs)
    print(f"\nreal workflow ({target}, config/tiny.yaml) under SLURM: {len(jobs)} sbatch jobs "
          f"+ {len(local)} local, wall {wall:.1f} s")
