"""Snakemake adapter: write the train/val/test manifest (see matfuse.split.write_splits)."""

from matfuse.config import SplitConfig
from matfuse.io import setup_logging
from matfuse.split import write_splits

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
write_splits(smk.input.entries, smk.output.splits, SplitConfig.model_validate(smk.params.split_cfg))
