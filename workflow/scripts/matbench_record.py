"""Snakemake adapter: matbench results file of one model (see matfuse.matbench.write_record)."""

from matfuse.evaluate import parse_prediction_path
from matfuse.io import setup_logging
from matfuse.matbench import write_record

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
by_fold: dict[int, list[str]] = {}
for path in smk.input.predictions:
    by_fold.setdefault(parse_prediction_path(path)["fold"], []).append(path)
wc = smk.wildcards
label = wc.model if wc.encoder == "none" else f"{wc.model} ({wc.encoder}, {wc.variant})"
seeds = sorted({parse_prediction_path(p)["seed"] for p in smk.input.predictions})
write_record(
    smk.params.task, smk.input.splits, [by_fold[k] for k in sorted(by_fold)], smk.output.record,
    parameters={"label": label, "model": wc.model, "text_encoder": wc.encoder, "text_variant": wc.variant,
                "seeds": len(seeds), "epochs": smk.params.training.get("epochs"), "lr": smk.params.training.get("lr")},
    user_metadata={"software": "matfuse", "target": wc.target, "dataset": wc.dataset},
)
