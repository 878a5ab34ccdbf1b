# Configuration validation, typed config and the helpers that list each stage's outputs.

import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import matfuse.density.workflow as dwf
from matfuse.config import GRAPH_MODELS, TEXT_MODELS, check_training_targets, load_config
from matfuse.embed.encoder import EncoderUnavailableError, check_encoder_available

# Defaults come from the typed config (set_default would merge every source kind's defaults).
validate(config, schema="../schemas/config.schema.json", set_default=False)
CFG = load_config(config)

# Offline by default: Hugging Face loads only from local paths/caches unless the user says otherwise.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATASETS = list(CFG.datasets)
TRAIN_DATASETS = CFG.train_datasets()
SHARDS = list(range(CFG.text.n_shards))
NONE = "none"


def used_encoders():
    """Keys of `embeddings` some job will embed with (training text models, ecd_text)."""
    names = set()
    if set(CFG.training.models) & TEXT_MODELS and TRAIN_DATASETS:
        names.update(CFG.training.encoders)
    d = CFG.density
    if d is not None and "ecd_text" in d.models and d.datasets:
        names.update(e for e in d.encoders if e in CFG.embeddings)
    return sorted(names)


def check_inputs_at_start():
    """Fail fast, before any job runs: a training target that a training dataset lacks, and text
    encoders that are not on this machine (no weights are loaded; hub names: local cache only)."""
    try:
        check_training_targets(CFG)
    except ValueError as exc:
        raise WorkflowError(f"config error: {exc}") from None
    problems = []
    for name in used_encoders():
        enc = CFG.embeddings[name]
        try:
            check_encoder_available(enc.model, enc.allow_download)
        except EncoderUnavailableError as exc:
            problems.append(f"embeddings.{name} (model: {enc.model}): {exc}")
    if problems:
        raise WorkflowError("text encoder not available:\n" + "\n".join(problems))


# Only where the DAG is built (not again inside every job of a cluster run).
if workflow.is_main_process:
    check_inputs_at_start()


# The Materials Project key is passed through to jobs (also cluster jobs) only when a dataset
# uses the `mp` source; it is never written to logs or outputs.
MP_KEY_VARS = sorted({ds.source.api_key_env for ds in CFG.datasets.values() if ds.source.kind == "mp"})
if MP_KEY_VARS:

    envvars:
        *MP_KEY_VARS,



wildcard_constraints:
    dataset="|".join(DATASETS),
    shard=r"\d+",
    encoder=r"[A-Za-z0-9_.]+",
    variant="all|key|single|none",
    pooling="cls|mean",
    target=r"[A-Za-z0-9_]+",
    model=r"[A-Za-z0-9_]+",
    seed=r"\d+",


def dataset_cfg(wildcards):
    # `train` (trained on or evaluation-only) does not change the entry table
    return CFG.datasets[wildcards.dataset].model_dump(exclude={"train"})


def pooling_of(encoder):
    return CFG.embeddings[encoder].pooling


def experiments():
    """Every (dataset, target, model, encoder, variant, seed) the config asks for."""
    out = []
    for ds in TRAIN_DATASETS:
        for target in CFG.training.targets:
            for model in CFG.training.models:
                if model in TEXT_MODELS:
                    texts = [(e, v) for e in CFG.training.encoders for v in CFG.training.text_variants]
                else:
                    texts = [(NONE, NONE)]
                for enc, var in texts:
                    for seed in CFG.training.seeds:
                        out.append(dict(dataset=ds, target=target, model=model, encoder=enc, variant=var, seed=seed))
    return out


EXP = "{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}"


def prediction_files():
    files = [f"results/predictions/{EXP}.parquet".format(**e) for e in experiments()]
    for e in experiments():
        if zeroshot_sets(e["dataset"], e["target"]):
            files.append(f"results/predictions/zeroshot/{EXP}.parquet".format(**e))
    return files


def zeroshot_sets(train_dataset, target):
    """Evaluation datasets that score models of `train_dataset` and provide `target`."""
    return [
        ev
        for ev, tr in CFG.evaluation.zero_shot.items()
        if tr == train_dataset and target in CFG.datasets[ev].target_names()
    ]


def zeroshot_inputs(wildcards):
    inputs = {}
    for ev in zeroshot_sets(wildcards.dataset, wildcards.target):
        for kind, path in model_inputs(wildcards, dataset=ev).items():
            inputs[f"{ev}__{kind}"] = path
    return inputs


def parity_plots():
    if not CFG.evaluation.parity_plots:
        return []
    out = set()
    for e in experiments():
        out.add("results/plots/parity/{dataset}/{target}/{model}.png".format(**e))
    return sorted(out)


#: Keys of one experiment in results/experiments.json (the metrics.csv columns that name it).
EXPERIMENT_KEYS = ("dataset", "train_dataset", "target", "model", "text_encoder", "text_variant", "seed", "kind")


def experiment_manifest():
    """The experiment set of this config, as written to results/experiments.json.

    These are the params of the `experiments` job: Snakemake re-runs it whenever they change (its
    output has its own metadata), and with it `metrics`, which otherwise misses changes of the experiment set
    (new outputs, e.g. parity plots, have no metadata, and then Snakemake checks no params or
    input changes at all). `kind` is "trained" (train/val/test rows) or "zeroshot".
    """
    rows = []
    for e in experiments():
        key = dict(train_dataset=e["dataset"], target=e["target"], model=e["model"],
                   text_encoder=e["encoder"], text_variant=e["variant"], seed=int(e["seed"]))
        rows.append(dict(dataset=e["dataset"], **key, kind="trained"))
        for ev in zeroshot_sets(e["dataset"], e["target"]):
            rows.append(dict(dataset=ev, **key, kind="zeroshot"))
    for e in dwf.experiments(CFG):
        ds = dwf.ECD.format(**e)
        rows.append(dict(dataset=ds, train_dataset=ds, target=e["target"], model=e["model"],
                         text_encoder=e["encoder"], text_variant=e["variant"], seed=int(e["seed"]), kind="trained"))
    rows = [{k: r[k] for k in EXPERIMENT_KEYS} for r in rows]
    rows.sort(key=lambda r: tuple(str(r[k]) for k in EXPERIMENT_KEYS))
    return {
        "experiments": rows,
        "predictions": sorted(prediction_files() + dwf.prediction_files(CFG)),
        "rejects": sorted(reject_files() + dwf.reject_files(CFG)),
        "parity_plots": parity_plots(),
    }


#: TrainingConfig fields that list the experiments (wildcards of each job), not how one is trained.
EXPERIMENT_LISTS = {"models", "targets", "datasets", "encoders", "text_variants", "seeds"}


def training_params():
    """What changes a training job's output: the hyper-parameters, not the experiment lists."""
    return CFG.training.model_dump(exclude=EXPERIMENT_LISTS)


# Params of the density rules hold only the sections that change each job's output (not the
# lists of models, targets, encoders, variants, seeds or the other datasets).
def density_select_params(wildcards):
    return {"selection": CFG.density.selection.model_dump()}


def density_images_params(wildcards):
    keep = {"grid", "cube_dtype", "store_cubes", "previews", "slice"}
    return {**CFG.density.model_dump(include=keep), "datasets": {wildcards.dataset: CFG.density.datasets[wildcards.dataset].model_dump()}}


def density_train_params(wildcards):
    return CFG.density.model_dump(include={"model", "train"})


def embedding_file(dataset, encoder, variant):
    return f"results/embeddings/{dataset}/{encoder}/{variant}-{pooling_of(encoder)}.parquet"


def model_inputs(wildcards, dataset=None):
    """Inputs of train/predict for one experiment (graphs and/or embeddings as the model needs)."""
    ds = dataset or wildcards.dataset
    inputs = {"entries": f"results/data/{ds}/entries.parquet"}
    if wildcards.model in GRAPH_MODELS:
        inputs["graphs"] = f"results/graphs/{ds}/graphs.parquet"
    if wildcards.model in TEXT_MODELS:
        inputs["embeddings"] = embedding_file(ds, wildcards.encoder, wildcards.variant)
    return inputs


def reject_files():
    """Every stage's rejects table, for the summary in results/rejects.csv."""
    models = set(CFG.training.models)
    files = []
    for ds in DATASETS:
        files.append(f"results/data/{ds}/rejects.parquet")
        if models & TEXT_MODELS:
            files.append(f"results/text/{ds}/rejects.parquet")
            for enc in CFG.training.encoders:
                for var in CFG.training.text_variants:
                    files.append(embedding_file(ds, enc, var).replace(".parquet", ".rejects.parquet"))
        if models & GRAPH_MODELS:
            files.append(f"results/graphs/{ds}/rejects.parquet")
    return files


from matfuse.sources.jarvis import store_zip_path

# JARVIS figshare zips packed from local record files: {zip path: records file}.
JARVIS_STORES = {
    str(store_zip_path(ds.source.store_dir, ds.source.dataset)): (ds.source.local_subset, ds.source.dataset)
    for ds in CFG.datasets.values()
    if ds.source.kind == "jarvis" and ds.source.local_subset
}


def ingest_inputs(wildcards):
    """The source's local files, so that a changed table or store re-runs the ingest."""
    src = CFG.datasets[wildcards.dataset].source
    if src.kind == "jarvis" and src.local_subset:
        return {"store": str(store_zip_path(src.store_dir, src.dataset))}
    if src.kind == "table":
        return {"table": src.path}
    return {}


def cromel_files():
    if CFG.cromel is None:
        return []
    return [f"results/cromel/{CFG.cromel.dataset}/seed{s}/metrics.csv" for s in CFG.cromel.seeds]


wildcard_constraints:
    store_zip="|".join(re.escape(p) for p in JARVIS_STORES) or "(?!x)x",
