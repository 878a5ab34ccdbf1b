"""Snakemake adapter: unconditional LM samples, the lm row (matfuse.generate.pipeline.sample_lm_stage)."""

from matfuse.config import GenerationConfig
from matfuse.generate.pipeline import sample_lm_stage
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = GenerationConfig.model_validate(smk.params.cfg)
sample_lm_stage(smk.input.model, cfg, smk.output.samples, smk.output.summary)
