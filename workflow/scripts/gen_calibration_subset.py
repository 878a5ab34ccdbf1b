"""Snakemake adapter: a seeded subset of the calibration table (matfuse.generate.pipeline.calibration_subset)."""

from matfuse.config import GenerationConfig
from matfuse.generate.pipeline import calibration_subset
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = GenerationConfig.model_validate(smk.params.cfg)
calibration_subset(smk.input.table, cfg.n_calibration, cfg.seed, smk.output.subset)
