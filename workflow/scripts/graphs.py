"""Snakemake adapter: CGCNN neighbour graphs of one dataset (see matfuse.graphs.build_graphs)."""

from matfuse.config import GraphConfig
from matfuse.graphs import build_graphs
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
build_graphs(
    smk.input.entries,
    smk.output.graphs,
    GraphConfig.model_validate(smk.params.graph_cfg),
    rejects_path=smk.output.rejects,
    workers=smk.threads,
)
