"""Snakemake adapter: describe one shard of a dataset with robocrys (see matfuse.text.describe).

The ``__main__`` guard matters: describe_shard spawns worker processes, which re-import this
file as ``__mp_main__``; the guard keeps them from re-running the stage.
"""

from matfuse.config import TextConfig
from matfuse.io import setup_logging
from matfuse.text.describe import describe_shard, shutdown_workers


def main(smk) -> None:  # noqa: ANN001
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
    shutdown_workers()


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake)
