"""Snakemake adapter: metrics.csv, the markdown table and the E_hull histograms of the generation
branch (matfuse.generate.pipeline.table_stage)."""

from matfuse.generate.pipeline import table_stage
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
inp = smk.input
methods = smk.params.methods
stages = {k[len("stage_"):]: v for k, v in inp.items() if k.startswith("stage_")}
table_stage(
    summaries={m: inp[f"summary_{m}"] for m in methods},
    eval_samples={m: inp[f"samples_{m}"] for m in methods},
    stage_summaries=stages,
    out_csv=smk.output.metrics,
    out_md=smk.output.table,
    hist_chgnet=smk.output.hist_chgnet,
    hist_model=smk.output.hist_model,
    calibration=inp.get("calibration"),
)
