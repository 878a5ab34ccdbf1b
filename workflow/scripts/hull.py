"""Snakemake adapter: the convex hull of a table's collection (see matfuse.hull.build_hull)."""

from matfuse.config import HullConfig, TableSource
from matfuse.hull import build_hull
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
hull = HullConfig.model_validate(smk.params.cfg["hull"])
build_hull(
    TableSource.model_validate(smk.params.cfg["source"]),
    energy_target=hull.energy,
    check_paths=hull.check,
    out_path=smk.output.hull,
    check_path=smk.output.check,
)
