"""Snakemake adapter: matbench MAEs of every model beside the leaderboard (see matfuse.matbench.write_summary)."""

from matfuse.io import setup_logging
from matfuse.matbench import write_summary

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
write_summary(smk.params.task, list(smk.input.records), smk.output.summary)
