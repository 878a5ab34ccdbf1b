"""Snakemake adapter: embed one text variant of one dataset (see matfuse.embed.text.embed_dataset)."""

import os

# Idle OpenMP threads spin by default; on shared CPUs that slows training several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from matfuse.config import EncoderConfig
from matfuse.embed.text import embed_dataset
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
# the {pooling} wildcard of the output path decides the pooling
cfg = EncoderConfig.model_validate({**smk.params.encoder_cfg, "pooling": smk.wildcards.pooling})
embed_dataset(
    smk.input.texts,
    smk.output.embeddings,
    variant=smk.wildcards.variant,
    encoder_name=smk.wildcards.encoder,
    cfg=cfg,
    device=smk.params.get("device", "auto"),
    threads=smk.threads,
    rejects_path=smk.output.get("rejects"),
)
