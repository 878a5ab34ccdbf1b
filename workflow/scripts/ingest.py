"""Snakemake adapter: ingest one dataset (see matfuse.ingest.ingest)."""

from matfuse.config import DatasetConfig
from matfuse.ingest import ingest
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821  (injected by Snakemake)
setup_logging(smk.log[0])
ingest(
    DatasetConfig.model_validate(smk.params.dataset_cfg),
    smk.wildcards.dataset,
    smk.output.entries,
    smk.output.rejects,
    workers=smk.threads,
    hull_path=smk.input.get("hull"),
)
