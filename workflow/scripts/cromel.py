"""Snakemake script: CroMEL pretraining on the train split + CV on experimental enthalpies.

input:  entries (results/data/{dataset}/entries.parquet), splits (results/splits/{dataset}/splits.json)
output: metrics (<out_dir>/metrics.csv; the other files of run_cromel go beside it)
params: cfg (the `cromel` section of the config without `seeds` and `dataset`, a dict or None), seed (int)
log:    one file
"""

from pathlib import Path

from matfuse.cromel import CromelConfig, run_cromel
from matfuse.io import setup_logging

setup_logging(snakemake.log[0])  # type: ignore[name-defined]  # noqa: F821
_cfg = snakemake.params.cfg  # type: ignore[name-defined]  # noqa: F821
_seed = int(snakemake.params.seed)  # type: ignore[name-defined]  # noqa: F821
if not isinstance(_cfg, CromelConfig):
    # this run's own dataset and seed (the config's lists are not params: see tables.smk)
    _ds = snakemake.wildcards.dataset  # type: ignore[name-defined]  # noqa: F821
    _cfg = CromelConfig.model_validate({**(_cfg or {}), "dataset": _ds, "seeds": [_seed]})
run_cromel(
    entries_path=snakemake.input.entries,  # type: ignore[name-defined]  # noqa: F821
    splits_path=snakemake.input.splits,  # type: ignore[name-defined]  # noqa: F821
    out_dir=Path(snakemake.output.metrics).parent,  # type: ignore[name-defined]  # noqa: F821
    cfg=_cfg,
    seed=_seed,
)
