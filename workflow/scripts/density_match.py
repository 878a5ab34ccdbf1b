"""Snakemake: local densities labelled by structure matching -> table.csv, manifest.csv, rejects."""

from matfuse.density.config import MatchConfig
from matfuse.density.match import match_stage
from matfuse.io import setup_logging

snakemake = globals()["snakemake"]
setup_logging(snakemake.log[0])
match_stage(
    MatchConfig.model_validate(snakemake.params["match"]),
    table_path=snakemake.output["table"],
    manifest_path=snakemake.output["manifest"],
    rejects_path=snakemake.output["rejects"],
)
