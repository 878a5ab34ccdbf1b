"""Snakemake adapter: the study report (see matfuse.study.write_report)."""

from pathlib import Path

from matfuse.io import setup_logging
from matfuse.study import write_report

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
since = Path(smk.params.since_file)
write_report(
    metrics_path=smk.input.metrics,
    splits_paths=list(smk.input.splits),
    hull_checks=list(smk.input.hull_checks),
    out_md=smk.output.report,
    out_png=smk.output.learning_curve,
    since=since.read_text().strip() if since.exists() else None,
    config_path=", ".join(smk.params.configfiles) or None,
    parity_plots=list(smk.input.parity),
    prediction_paths=list(smk.input.get("predictions", [])),
)
