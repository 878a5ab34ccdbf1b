"""Snakemake adapter: pack local JARVIS records into a figshare-format zip (offline store)."""

from pathlib import Path

from matfuse.io import setup_logging
from matfuse.sources.jarvis import prepare_local_store

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
prepare_local_store(smk.input.subset, Path(smk.output.store).parent, smk.params.jarvis_dataset)
