"""Snakemake adapter: write the split manifest (see matfuse.split.write_dataset_splits)."""

from matfuse.io import setup_logging
from matfuse.split import write_dataset_splits

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
write_dataset_splits(smk.input.entries, smk.output.splits, smk.params.split_cfg)
