"""Snakemake adapter: train the flow from base {base} (matfuse.generate.pipeline.train_rfm_stage)."""

from matfuse.config import GenerationConfig
from matfuse.generate.pipeline import train_rfm_stage
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = GenerationConfig.model_validate(smk.params.cfg)
train_rfm_stage(smk.input.pairs, smk.input.train, smk.wildcards.base, cfg, smk.output.model, smk.output.summary)
