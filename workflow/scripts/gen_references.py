"""Snakemake adapter: one shard of the CHGNet reference energies all evaluations share
(matfuse.generate.evaluate.reference_stage)."""

from matfuse.generate.evaluate import EvalConfig, reference_stage
from matfuse.io import setup_logging, write_json

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = EvalConfig.model_validate(smk.params.cfg["evaluation"])
samples = [p for k, p in smk.input.items() if k.startswith("samples_")]
cost = reference_stage(samples, smk.input.train, cfg, shard=int(smk.wildcards.shard), n_shards=int(smk.params.n_shards))
write_json(cost, smk.output.cost)
