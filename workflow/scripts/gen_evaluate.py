"""Snakemake adapter: every metric of one method's samples (matfuse.generate.evaluate.evaluate_method)."""

from pathlib import Path

from matfuse.generate.evaluate import EvalConfig, evaluate_method
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = EvalConfig.model_validate(smk.params.cfg["evaluation"])
evaluate_method(smk.input.samples, smk.wildcards.method, smk.input.train, smk.input.test, cfg,
                Path(smk.output.summary).parent)
