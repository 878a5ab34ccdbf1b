"""Snakemake: results/metrics.csv (+ ECD predictions) -> results/tables/massa_table6.md."""

import pandas as pd

from matfuse.density.stage import annotate_ecd_metrics
from matfuse.io import setup_logging, write_text
from matfuse.tables import massa_table6

snakemake = globals()["snakemake"]
setup_logging(snakemake.log[0])
metrics = annotate_ecd_metrics(pd.read_csv(snakemake.input["metrics"]), list(snakemake.input["predictions"]))
write_text(massa_table6(metrics), snakemake.output["table"])
