"""Snakemake adapter: random symmetric crystals for training compositions, the pyxtal row
(matfuse.generate.pipeline.pyxtal_stage)."""

from matfuse.config import GenerationConfig
from matfuse.generate.pipeline import pyxtal_stage
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = GenerationConfig.model_validate(smk.params.cfg)
pyxtal_stage(smk.input.train, cfg, smk.output.samples)
