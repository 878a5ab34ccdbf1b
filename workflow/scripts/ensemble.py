"""Snakemake adapter: seed ensemble of one experiment (see matfuse.predict.write_ensemble)."""

from matfuse.io import setup_logging
from matfuse.predict import write_ensemble

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
write_ensemble(list(smk.input.predictions), smk.output.ensemble)
