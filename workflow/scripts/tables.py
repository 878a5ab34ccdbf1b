"""Snakemake adapter: paper-style Markdown tables (see matfuse.tables.write_tables)."""

from pathlib import Path

from matfuse.io import setup_logging
from matfuse.tables import write_tables

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
write_tables(smk.input.metrics, Path(smk.output.all).parent, cromel_paths=list(smk.input.cromel))
