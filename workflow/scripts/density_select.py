"""Snakemake: entries.parquet -> density selection (stable FCC crystals), rejects, splits over it."""

from matfuse.config import SplitConfig
from matfuse.density.config import load_density_config
from matfuse.density.stage import select_stage
from matfuse.io import setup_logging

snakemake = globals()["snakemake"]
setup_logging(snakemake.log[0])
select_stage(
    snakemake.input["entries"],
    load_density_config(snakemake.params["density"]),
    snakemake.output["selection"],
    snakemake.output["rejects"],
    splits_path=snakemake.output["splits"],
    split_cfg=SplitConfig.model_validate(snakemake.params["split"]),
)
