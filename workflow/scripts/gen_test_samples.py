"""Snakemake adapter: the test split as a samples file, the test row (matfuse.generate.pipeline.test_stage)."""

from matfuse.config import GenerationConfig
from matfuse.generate.pipeline import test_stage
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = GenerationConfig.model_validate(smk.params.cfg)
test_stage(smk.input.test, cfg, smk.output.samples)
