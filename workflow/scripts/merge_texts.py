"""Snakemake adapter: merge robocrys shards into texts + rejects (see matfuse.text.describe).

params.descriptions: the dataset's precomputed descriptions (None = robocrys texts only).
"""

from pydantic import TypeAdapter

from matfuse.config import Descriptions
from matfuse.io import setup_logging
from matfuse.text.describe import merge_texts

smk = snakemake  # noqa: F821  (injected by Snakemake)
setup_logging(smk.log[0])
cfg = smk.params.descriptions
merge_texts(
    list(smk.input.shards),
    smk.output.texts,
    smk.output.rejects,
    descriptions=None if cfg is None else TypeAdapter(Descriptions).validate_python(cfg),
)
