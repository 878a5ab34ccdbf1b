"""Snakemake adapter: the calibration row, real MP-20 test structures with DFT e_above_hull through
the identical pipeline (matfuse.generate.pipeline.calibration_subset + matfuse.generate.evaluate.calibrate)."""

from pathlib import Path

from matfuse.config import GenerationConfig
from matfuse.generate.evaluate import EvalConfig, calibrate
from matfuse.generate.pipeline import calibration_subset
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
cfg = GenerationConfig.model_validate(smk.params.cfg)
calibration_subset(smk.input.table, cfg.n_calibration, cfg.seed, smk.output.subset)
calibrate(smk.output.subset, smk.input.train, EvalConfig.model_validate(smk.params.evaluation["evaluation"]),
          Path(smk.output.summary).parent)
