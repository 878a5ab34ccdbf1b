"""Snakemake adapter: train the crystal-text LM (matfuse.generate.pipeline.train_lm_stage)."""

from matfuse.config import GenerationConfig
from matfuse.generate.pipeline import train_lm_stage
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = GenerationConfig.model_validate(smk.params.cfg)
train_lm_stage(smk.input.train, smk.input.val, cfg, smk.output.model, smk.output.summary)
