"""Snakemake adapter: metrics table, rejects summary and parity plots (see matfuse.evaluate).

input:  experiments (results/experiments.json: the config's experiment set), predictions, rejects
output: metrics, rejects, plots
The inputs and outputs must be exactly those the manifest lists, and every metrics row must belong
to one of its experiments: metrics.csv never holds rows of experiments no longer in the config.
"""

import json

import pandas as pd

from matfuse.evaluate import write_metrics
from matfuse.io import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
with open(smk.input.experiments) as fh:
    manifest = json.load(fh)


def _same(what, got, listed):
    got, listed = set(map(str, got)), set(map(str, listed))
    if got != listed:
        raise RuntimeError(
            f"{what} of the metrics job differ from {smk.input.experiments}: "
            f"not listed there {sorted(got - listed)[:5]}, missing {sorted(listed - got)[:5]}; "
            "rerun snakemake (the experiments rule rewrites the manifest from the config)"
        )


_same("prediction files", smk.input.predictions, manifest["predictions"])
_same("rejects tables", smk.input.rejects, manifest["rejects"])
_same("parity plots", smk.output.plots, manifest["parity_plots"])

metrics = write_metrics(
    prediction_paths=list(smk.input.predictions),
    reject_paths=list(smk.input.rejects),
    metrics_path=smk.output.metrics,
    rejects_path=smk.output.rejects,
    plot_paths=list(smk.output.plots),
    positive_only=list(smk.params.positive_only),
)

# Trained rows are named by their model (dataset column = split dataset); zero-shot rows also by
# the evaluation set in their dataset column.
_MODEL = ("train_dataset", "target", "model", "text_encoder", "text_variant", "n_train", "seed")


def _key(row):
    return tuple("None" if (k == "n_train" and (row[k] is None or pd.isna(row[k]))) else str(row[k]) for k in _MODEL)


trained = {_key(e) for e in manifest["experiments"] if e["kind"] == "trained"}
zeroshot = {(str(e["dataset"]),) + _key(e) for e in manifest["experiments"] if e["kind"] == "zeroshot"}
stray = []
for row in metrics.to_dict("records"):
    key = _key(row)
    if row["split"] == "zeroshot" and (str(row["dataset"]),) + key not in zeroshot:
        stray.append((row["dataset"], *key, row["split"]))
    elif row["split"] != "zeroshot" and key not in trained:
        stray.append((*key, row["split"]))
if stray:
    raise RuntimeError(f"{len(stray)} metrics rows of experiments not in the config, e.g. {stray[:3]}")
