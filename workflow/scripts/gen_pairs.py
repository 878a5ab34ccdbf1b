"""Snakemake adapter: formula-conditioned LM samples of training crystals, the RFM pairs
(matfuse.generate.pipeline.sample_pairs_stage)."""

from matfuse.config import GenerationConfig
from matfuse.generate.pipeline import sample_pairs_stage
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = GenerationConfig.model_validate(smk.params.cfg)
sample_pairs_stage(smk.input.model, smk.input.train, cfg, smk.output.pairs, smk.output.summary)
