"""Snakemake adapter: predictions of one trained model (see matfuse.predict.predict).

With a ``splits`` input it scores the train/val/test splits; without one (zero-shot rule)
it scores every entry of the evaluation dataset as split "all".
"""

import os

# Idle OpenMP threads spin by default; on shared CPUs that slows training several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from pathlib import Path

import torch

from matfuse.io import setup_logging
from matfuse.predict import predict
from matfuse.workflow import fold_of, size_of

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
torch.set_num_threads(max(1, int(smk.threads)))
predict(
    model_dir=Path(smk.input.model).parent,
    entries_path=smk.input.entries,
    splits_path=smk.input.get("splits"),
    graphs_path=smk.input.get("graphs"),
    embeddings_path=smk.input.get("embeddings"),
    texts_path=smk.input.get("texts"),
    variant=smk.wildcards.variant if "variant" in smk.wildcards.keys() else None,
    out_path=smk.output.predictions,
    device=smk.params.get("device", "auto"),
    n_train=size_of(smk.wildcards.size) if "size" in smk.wildcards.keys() else None,
    fold=fold_of(smk.wildcards.fold) if "fold" in smk.wildcards.keys() else None,
)
