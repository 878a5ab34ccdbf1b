"""Snakemake adapter: the calibration row, real MP-20 test structures with DFT e_above_hull through
the identical pipeline (matfuse.generate.evaluate.calibrate)."""

from pathlib import Path

from matfuse.generate.evaluate import EvalConfig, calibrate
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
calibrate(smk.input.subset, smk.input.train, EvalConfig.model_validate(smk.params.cfg["evaluation"]),
          Path(smk.output.summary).parent)
