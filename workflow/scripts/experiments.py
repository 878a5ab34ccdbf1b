"""Snakemake adapter: write results/experiments.json, the experiment set of the config.

params: manifest (experiments, prediction/rejects files and parity plots of the metrics rule;
        built by experiment_manifest() in workflow/rules/common.smk)
output: manifest (JSON)
log:    one file
"""

import logging

from matfuse.io import setup_logging, write_json

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
manifest = dict(smk.params.manifest)
write_json(manifest, smk.output.manifest)
logging.getLogger(__name__).info(
    "%d experiments, %d prediction files, %d parity plots",
    len(manifest["experiments"]), len(manifest["predictions"]), len(manifest["parity_plots"]),
)
