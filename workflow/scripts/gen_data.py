"""Snakemake adapter: the split tables of the generation dataset (matfuse.generate.pipeline.split_tables)."""

from pathlib import Path

from matfuse.config import GenerationConfig
from matfuse.generate.pipeline import split_tables
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = GenerationConfig.model_validate(smk.params.cfg)
split_tables(smk.input.entries, smk.input.splits, cfg.max_sites, Path(smk.output.train).parent)
