"""Snakemake adapter: metrics table, rejects summary and parity plots (see matfuse.evaluate)."""

from matfuse.evaluate import write_metrics
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
write_metrics(
    prediction_paths=list(smk.input.predictions),
    reject_paths=list(smk.input.rejects),
    metrics_path=smk.output.metrics,
    rejects_path=smk.output.rejects,
    plot_paths=list(smk.output.plots),
)
