"""Snakemake adapter: describe one shard of a dataset with robocrys (see matfuse.text.describe)."""

from matfuse.config import TextConfig
from matfuse.io import setup_logging
from matfuse.text.describe import describe_shard

smk = snakemake  # noqa: F821  (injected by Snakemake)
setup_logging(smk.log[0])
cfg = TextConfig.model_validate(smk.params.text_cfg)
describe_shard(
    smk.input.entries,
    smk.output.shard,
    int(smk.wildcards.shard),
    int(smk.params.n_shards),
    cfg.cache_dir,
    cfg,
)
