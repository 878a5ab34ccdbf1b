"""Snakemake adapter: merge robocrys shards into texts + rejects (see matfuse.text.describe)."""

from matfuse.io import setup_logging
from matfuse.text.describe import merge_texts

smk = snakemake  # noqa: F821  (injected by Snakemake)
setup_logging(smk.log[0])
merge_texts(list(smk.input.shards), smk.output.texts, smk.output.rejects)
