"""Snakemake: densities of one dataset and kind -> slices.parquet, cubes.npz, previews/, rejects."""

from pathlib import Path

from matfuse.density.config import load_density_config
from matfuse.density.stage import density_stage
from matfuse.io import setup_logging

snakemake = globals()["snakemake"]
setup_logging(snakemake.log[0])
density_stage(
    dataset=snakemake.wildcards["dataset"],
    kind=snakemake.wildcards["kind"],
    cfg=load_density_config(snakemake.params["density"]),
    out_dir=Path(snakemake.output["slices"]).parent,
    ids_path=snakemake.input.get("ids"),
)
