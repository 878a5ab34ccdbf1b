"""Snakemake: slices + entries + splits (+ text embeddings) -> ECD model checkpoint, predictions, metrics."""

from matfuse.density.config import load_density_config
from matfuse.density.train import train_ecd_stage
from matfuse.io import setup_logging

snakemake = globals()["snakemake"]
setup_logging(snakemake.log[0])
cfg = load_density_config(snakemake.params["density"])
train = cfg.train.model_copy(update={"seed": int(snakemake.wildcards.get("seed", cfg.train.seed))})
train_ecd_stage(
    slices_path=snakemake.input["slices"],
    entries_path=snakemake.input["entries"],
    splits_path=snakemake.input["splits"],
    target=snakemake.wildcards["target"],
    model_name=snakemake.wildcards["model"],
    mcfg=cfg.model,
    tcfg=train,
    checkpoint_path=snakemake.output["checkpoint"],
    predictions_path=snakemake.output["predictions"],
    metrics_path=snakemake.output["metrics"],
    embeddings_path=snakemake.input.get("embeddings"),
)
