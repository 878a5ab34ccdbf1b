"""Snakemake adapter: train one model (see matfuse.train.train_model)."""

import os

# Idle OpenMP threads spin by default; on shared CPUs that slows training several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from pathlib import Path

from matfuse.config import GraphConfig, TrainingConfig
from matfuse.io import setup_logging
from matfuse.train import train_model
from matfuse.workflow import fold_of, size_of

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
wc = smk.wildcards
# params.training holds the hyper-parameters only; the experiment lists of the config are not
# params (adding a model must not re-run the others): config.json records this one experiment.
texts = wc.encoder != "none"
training = TrainingConfig.model_validate({
    **smk.params.training,
    "models": [wc.model],
    "targets": [wc.target],
    "datasets": [wc.dataset],
    "encoders": [wc.encoder] if texts else [],
    "text_variants": [wc.variant] if texts else [],
    "seeds": [int(wc.seed)],
})
train_model(
    entries_path=smk.input.entries,
    splits_path=smk.input.splits,
    graphs_path=smk.input.get("graphs"),
    embeddings_path=smk.input.get("embeddings"),
    texts_path=smk.input.get("texts"),
    variant=wc.variant,
    out_dir=Path(smk.output.model).parent,
    model_name=smk.wildcards.model,
    target=smk.wildcards.target,
    seed=int(smk.wildcards.seed),
    training=training,
    graph=GraphConfig.model_validate(smk.params.graph),
    threads=smk.threads,
    n_train=size_of(wc.size),
    fold=fold_of(wc.fold),
)
