"""Snakemake adapter: train one model (see matfuse.train.train_model)."""

import os

# Idle OpenMP threads spin by default; on shared CPUs that slows training several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from pathlib import Path

from matfuse.config import GraphConfig, TrainingConfig
from matfuse.io import setup_logging
from matfuse.train import train_model

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
train_model(
    entries_path=smk.input.entries,
    splits_path=smk.input.splits,
    graphs_path=smk.input.get("graphs"),
    embeddings_path=smk.input.get("embeddings"),
    out_dir=Path(smk.output.model).parent,
    model_name=smk.wildcards.model,
    target=smk.wildcards.target,
    seed=int(smk.wildcards.seed),
    training=TrainingConfig.model_validate(smk.params.training),
    graph=GraphConfig.model_validate(smk.params.graph),
    threads=smk.threads,
)
