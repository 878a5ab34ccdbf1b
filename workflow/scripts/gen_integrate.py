"""Snakemake adapter: integrate the flow, the flowllm / rfm_simple rows (matfuse.generate.pipeline.integrate_stage)."""

from matfuse.config import GenerationConfig
from matfuse.generate.pipeline import integrate_stage
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = GenerationConfig.model_validate(smk.params.cfg)
integrate_stage(smk.input.model, smk.input.lm_samples, smk.params.base, cfg, smk.output.samples, smk.output.summary)
